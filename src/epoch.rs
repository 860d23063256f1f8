//! Milliseconds since the Unix epoch: how the spool keeps when a notification came in, and
//! how Kafka timestamps records.

use std::time::{Duration, SystemTime};

/// `at` in milliseconds since the Unix epoch (0 before it).
pub fn ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Seconds from `ms` (since the epoch) to now; 0 for a time in the future.
pub fn age_secs(ms: u64) -> f64 {
    SystemTime::now()
        .duration_since(at(ms))
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_round_trip_and_ages_are_never_negative() {
        assert_eq!(super::ms(super::at(1_602_782_939_456)), 1_602_782_939_456);
        assert_eq!(super::ms(std::time::SystemTime::UNIX_EPOCH), 0);
        assert_eq!(super::age_secs(u64::MAX / 2), 0.0);
        assert!(super::age_secs(0) > 1.0e9);
    }
}
