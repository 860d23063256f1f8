//! waba-gateway: receives WhatsApp Business Platform webhooks from Meta and publishes every
//! change to a per-field Kafka topic.
//!
//! - [`signature`] checks `X-Hub-Signature-256` over the raw body (pure);
//! - [`envelope`] splits a verified body into one record per change (pure);
//! - [`routing`] names the topic of each field (pure);
//! - [`config`] is the typed settings tree;
//! - [`publish`] produces records to Kafka (or memory, in tests) and waits for acks;
//! - [`metrics`] holds the Prometheus metrics;
//! - [`tls`] serves HTTPS and checks Meta's mTLS client certificate.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod doctor;
pub mod envelope;
pub mod epoch;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod replay;
pub mod routing;
pub mod shutdown;
pub mod signature;
pub mod spool;
pub mod tail;
pub mod telemetry;
pub mod tls;
pub mod topics;
