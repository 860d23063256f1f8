//! waba-gateway: receives WhatsApp Business Platform webhooks from Meta and publishes every
//! change to a per-field Kafka topic.
//!
//! - [`signature`] checks `X-Hub-Signature-256` over the raw body (pure);
//! - [`envelope`] splits a verified body into one record per change (pure);
//! - [`routing`] names the topic of each field (pure).

pub mod envelope;
pub mod routing;
pub mod signature;
