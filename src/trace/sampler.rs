//! Which traces are recorded: the samplers `OTEL_TRACES_SAMPLER` names.

use super::SpanContext;

/// A sampler of `OTEL_TRACES_SAMPLER` (and `_ARG` for the ratio).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`: this share of traces, decided by the trace id, so that every span
    /// of a trace (and every process that decides the same way) agrees.
    Ratio(f64),
    /// `parentbased_*`: a span with a parent follows the parent's `sampled` flag; a root
    /// span asks the inner sampler.
    ParentBased(Root),
}

/// The sampler of root spans under [`Sampler::ParentBased`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// `parentbased_always_on`: the default.
    AlwaysOn,
    /// `parentbased_always_off`.
    AlwaysOff,
    /// `parentbased_traceidratio`.
    Ratio(f64),
}

impl Sampler {
    /// The sampler called `name`, with `ratio` for the ratio samplers. `None` for a name
    /// it does not know.
    pub fn named(name: &str, ratio: f64) -> Option<Self> {
        Some(match name {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio),
            "parentbased_always_on" => Self::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Self::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Self::ParentBased(Root::Ratio(ratio)),
            _ => return None,
        })
    }

    /// Whether a span of `trace_id` with `parent` is recorded.
    pub fn samples(&self, parent: Option<&SpanContext>, trace_id: &[u8; 16]) -> bool {
        match (self, parent) {
            (Self::AlwaysOn, _) => true,
            (Self::AlwaysOff, _) => false,
            (Self::Ratio(ratio), _) => by_ratio(*ratio, trace_id),
            (Self::ParentBased(_), Some(parent)) => parent.sampled,
            (Self::ParentBased(Root::AlwaysOn), None) => true,
            (Self::ParentBased(Root::AlwaysOff), None) => false,
            (Self::ParentBased(Root::Ratio(ratio)), None) => by_ratio(*ratio, trace_id),
        }
    }
}

/// The trace id's last 8 bytes, read as a number, below `ratio` of their range.
fn by_ratio(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
    (low as f64) < ratio * (u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(sampled: bool) -> SpanContext {
        SpanContext {
            trace_id: [7; 16],
            span_id: [1; 8],
            sampled,
            state: None,
        }
    }

    #[test]
    fn parent_based_samplers_follow_the_parent_and_ask_the_root_sampler_otherwise() {
        let sampler = Sampler::named("parentbased_always_off", 1.0).expect("known");
        assert!(sampler.samples(Some(&parent(true)), &[7; 16]));
        assert!(!sampler.samples(None, &[7; 16]));
        let sampler = Sampler::named("parentbased_always_on", 1.0).expect("known");
        assert!(!sampler.samples(Some(&parent(false)), &[7; 16]));
        assert!(sampler.samples(None, &[7; 16]));
        assert!(
            Sampler::named("always_on", 1.0)
                .expect("known")
                .samples(Some(&parent(false)), &[0; 16])
        );
        assert!(
            !Sampler::named("always_off", 1.0)
                .expect("known")
                .samples(Some(&parent(true)), &[0; 16])
        );
        assert_eq!(Sampler::named("jaeger_remote", 1.0), None);
        for name in crate::config::SAMPLERS {
            assert!(Sampler::named(name, 0.5).is_some(), "{name}");
        }
    }

    #[test]
    fn a_ratio_samples_about_that_share_of_trace_ids_and_always_the_same_ones() {
        let sampler = Sampler::named("traceidratio", 0.1).expect("known");
        let ids: Vec<[u8; 16]> = (0..20_000)
            .map(|_| super::super::context::new_trace_id())
            .collect();
        let sampled = ids.iter().filter(|id| sampler.samples(None, id)).count();
        assert!(
            (1_700..2_300).contains(&sampled),
            "{sampled} of 20000 at 10%"
        );
        let again = ids.iter().filter(|id| sampler.samples(None, id)).count();
        assert_eq!(sampled, again);
        assert!(!Sampler::Ratio(0.0).samples(None, &[0xff; 16]));
        assert!(Sampler::Ratio(1.0).samples(None, &[0xff; 16]));
    }
}
