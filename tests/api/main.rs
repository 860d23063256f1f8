//! Black-box tests: the gateway on a loopback port, real HTTP, real signatures. The Kafka
//! tests run the real rdkafka producer against librdkafka's mock cluster over TCP.

mod binary;
mod deploy_artifacts;
mod helpers;
mod kafka;
mod meta_payloads;
mod notify;
mod spool;
mod subscriptions;
mod verify;
