//! Exponential backoff, the one policy behind every retry loop: waiting for Kafka at
//! start-up, the spool's forwarder after a failure, and Graph API throttling.

use std::time::Duration;

/// Delays that double from `first` up to `max`, optionally with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the second attempt.
    pub first: Duration,
    /// No delay is longer.
    pub max: Duration,
    /// Take a random delay in [d/2, d] instead of d, so that many clients retrying at once
    /// spread out.
    pub jitter: bool,
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (1 for the first):
    /// `first × 2^(failures - 1)`, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let ceiling = self.first.saturating_mul(1 << doublings).min(self.max);
        if self.jitter {
            let half = ceiling / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_up_to_the_maximum() {
        let backoff = Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            jitter: false,
        };
        let delays: Vec<u64> = (1..=7)
            .map(|failures| backoff.delay(failures).as_millis() as u64)
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_spreads_delays_between_half_the_cap_and_the_cap() {
        let backoff = Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(4),
            jitter: true,
        };
        let delays: std::collections::BTreeSet<Duration> =
            (0..100).map(|_| backoff.delay(10)).collect();
        let (low, high) = (delays.first(), delays.last());
        assert!(low >= Some(&Duration::from_secs(2)), "{low:?}");
        assert!(high <= Some(&Duration::from_secs(4)), "{high:?}");
        assert!(delays.len() > 1, "100 jittered delays were all {low:?}");
    }
}
