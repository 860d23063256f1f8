//! waba-gateway: receives WhatsApp Business Platform webhooks from Meta and publishes every
//! change to a per-field Kafka topic.
//!
//! The path of a notification, each step a module:
//!
//! - `http` answers Meta: the handshake, and notifications checked by [`signature`]
//!   (`X-Hub-Signature-256` over the raw body, pure);
//! - `delivery` takes each verified body: the intake of its ack mode, the spool's
//!   forwarder, and the deliverer that splits it ([`envelope`], pure, with the topics of
//!   [`routing`]) and publishes the records ([`publish`]);
//! - `spool` keeps bodies durably in `spool` mode (storage only);
//! - [`config`] is the typed settings tree, [`metrics`] the Prometheus metrics, `tls`
//!   HTTPS and Meta's mTLS client check, [`trace`] the OpenTelemetry spans of each
//!   notification;
//! - [`app`] builds the gateway and runs it to shutdown; [`cli`] is the command line, with
//!   `tail`, `replay`, `topics`, `doctor` and `graph` behind its other commands.
//!
//! Only what tests, benches, examples and fuzz targets use is public.

pub mod app;
pub(crate) mod asyncapi;
pub(crate) mod backoff;
pub mod cli;
pub mod config;
pub(crate) mod delivery;
pub(crate) mod doctor;
pub mod envelope;
pub(crate) mod epoch;
pub(crate) mod graph;
pub(crate) mod http;
pub mod metrics;
pub mod publish;
pub(crate) mod replay;
pub mod routing;
pub(crate) mod shutdown;
pub mod signature;
pub(crate) mod spool;
pub(crate) mod tail;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod topics;
pub mod trace;
