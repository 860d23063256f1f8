//! Black-box tests: the gateway on a loopback port, real HTTP, real signatures. The Kafka
//! tests run the real rdkafka producer against librdkafka's mock cluster over TCP.

mod apps;
mod binary;
mod deploy_artifacts;
mod every_command;
mod helpers;
mod hostile;
mod items;
mod kafka;
mod limits;
mod logs;
mod meta_payloads;
mod notify;
mod properties;
mod sources;
mod spool;
mod stalled;
mod subscriptions;
mod tls;
mod verify;
