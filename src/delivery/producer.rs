//! The producer's tuning for what it delivers: how long librdkafka keeps a record, and how
//! it batches (measured in docs/PERFORMANCE.md).

use std::time::Duration;

use crate::config::{AckMode, Settings};
use crate::publish::kafka::{Batching, KafkaOptions};

/// What a command delivers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `serve`: requests per `delivery.ack`.
    Serve,
    /// `spool drain`: a spool, as the forwarder of `serve` does.
    Drain,
    /// `replay`: one dead letter at a time, each waited for.
    Replay,
}

/// How long `replay` waits for Kafka to take one record.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a record of `ack = "none"` may wait for Kafka: Meta has its 200 already, so
/// only a broker that stays away this long loses it.
const QUEUED_TIMEOUT: Duration = Duration::from_secs(300);

/// The producer's options for `purpose`.
///
/// Where someone waits for each batch (a request in `kafka` and `none` mode, `replay`):
/// `linger.ms` = 1. Measured on tansu, 5 ms gave 2.5k requests/s and a p99 of 8.4 ms at
/// half that rate, 1 ms 8.5k/s and 4.6 ms at lower CPU per request, 0 twice the CPU.
/// Where nobody waits (the forwarder, `spool drain`): large batches
/// (`delivery.forward_*`), and no deadline (0): the spool keeps every entry until Kafka
/// has it, librdkafka retries in order, and the forwarder waits. The queue takes half of
/// `delivery.memory_budget_bytes` in every case.
pub fn options(settings: &Settings, purpose: Purpose) -> KafkaOptions {
    let delivery = &settings.delivery;
    let base = KafkaOptions::from_settings(settings);
    let queue_kbytes = base.batching.queue_kbytes;
    let waited = Batching {
        linger_ms: 1,
        batch_bytes: 1_000_000,
        queue_kbytes,
    };
    let forwarded = Batching {
        linger_ms: delivery.forward_linger_ms,
        batch_bytes: delivery.forward_batch_bytes,
        queue_kbytes,
    };
    let (message_timeout, batching) = match (purpose, delivery.ack) {
        (Purpose::Serve, AckMode::Spool) | (Purpose::Drain, _) => (Duration::ZERO, forwarded),
        (Purpose::Serve, AckMode::Kafka) => {
            (Duration::from_millis(delivery.kafka_ack_timeout_ms), waited)
        }
        (Purpose::Serve, AckMode::Queued) => (QUEUED_TIMEOUT, waited),
        (Purpose::Replay, _) => (REPLAY_TIMEOUT, waited),
    };
    KafkaOptions {
        message_timeout,
        batching,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ack: &str) -> Settings {
        let env = [
            ("WABA_GATEWAY__DELIVERY__ACK", ack),
            ("WABA_GATEWAY__DELIVERY__FORWARD_LINGER_MS", "30"),
            ("WABA_GATEWAY__DELIVERY__KAFKA_ACK_TIMEOUT_MS", "4000"),
        ];
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::load(None, env).expect("valid settings")
    }

    #[test]
    fn each_purpose_gets_its_deadline_and_batching() {
        let cases = [
            ("spool", Purpose::Serve, "0", "30"),
            ("kafka", Purpose::Serve, "4000", "1"),
            ("none", Purpose::Serve, "300000", "1"),
            ("kafka", Purpose::Drain, "0", "30"),
            ("spool", Purpose::Replay, "30000", "1"),
        ];
        for (ack, purpose, timeout, linger) in cases {
            let config = options(&settings(ack), purpose).producer_config();
            assert_eq!(
                (config.get("message.timeout.ms"), config.get("linger.ms")),
                (Some(timeout), Some(linger)),
                "{ack} {purpose:?}"
            );
            assert_eq!(config.get("queue.buffering.max.kbytes"), Some("65536"));
        }
    }
}
