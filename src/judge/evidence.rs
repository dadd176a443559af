//! Error-rate evidence: the Wilson lower bound that decides whether counts show a ratio above
//! the threshold, and the pooling of small samples until they are enough to judge on.

use std::collections::VecDeque;
use std::time::Duration;

use super::Policy;

/// z of the one-sided 99 % confidence bound (the standard normal's 0.99 quantile, 2.3263).
pub const Z_99: f64 = 2.326;

/// A pool reaches back at most this many earlier samples: memory stays bounded for a rollout
/// with no traffic at all.
pub const MAX_POOLED: usize = 64;

/// The lower end of the Wilson score interval for `errors` of `requests` with `z`: the smallest
/// error ratio the counts are consistent with at that confidence (one-sided). Unlike the plain
/// ratio it accounts for the number of requests: 1 error of 20 gives 0.7 % at 99 %, 20 of 20
/// gives 79 %, 68 of 2,000 (3.4 %) gives 2.6 %. Unlike the normal approximation it stays
/// within 0–1 and is sound at a few requests and at ratios near 0 or 1 (Wilson 1927; Brown, Cai
/// and DasGupta 2001).
pub fn wilson_lower_bound(errors: f64, requests: f64, z: f64) -> f64 {
    if requests <= 0.0 {
        return 0.0;
    }
    let p = errors / requests;
    let z2n = z * z / requests;
    let centre = p + z2n / 2.0;
    let spread = z * (p * (1.0 - p) / requests + z2n / (4.0 * requests)).sqrt();
    ((centre - spread) / (1.0 + z2n)).max(0.0)
}

/// Pooled counts of one provider: what one error-rate judgement is made on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    pub requests: f64,
    pub errors: f64,
    /// How many samples were pooled (1: the sample alone).
    pub samples: usize,
}

/// Whether `evidence` shows an error ratio above `threshold` (and above baseline × factor, given
/// `(factor, baseline)`) with 99 % confidence: the Wilson lower bound is above both.
pub fn failing(evidence: &Evidence, threshold: f64, baseline: Option<(f64, f64)>) -> bool {
    let bound = wilson_lower_bound(evidence.errors, evidence.requests, Z_99);
    bound > threshold && baseline.is_none_or(|(factor, base)| bound > base * factor)
}

/// One provider's earlier samples kept for pooling: the first valid one, then each later one
/// whose window does not overlap the last kept (taken at least `sample_window` after it), so no
/// request is counted twice when samples overlap (`interval` shorter than `sample_window`).
#[derive(Debug, Clone, Default)]
pub(super) struct Pool {
    /// (taken at, requests, errors), oldest first.
    pub(super) kept: VecDeque<(Duration, f64, f64)>,
}

impl Pool {
    /// The evidence of a sample taken `at`: the sample alone when it has `min_requests`, else
    /// pooled with the kept samples before it that do not overlap it, newest first, until the
    /// pool has `min_requests`; `None` when even all of them have too few. The sample is then
    /// kept if it does not overlap the last one kept.
    pub(super) fn evidence(
        &mut self,
        at: Duration,
        requests: f64,
        errors: f64,
        policy: &Policy,
    ) -> Option<Evidence> {
        let window = policy.sample_window;
        let enough = |n: f64| n > 0.0 && n >= policy.min_requests as f64;
        let mut pooled = Evidence {
            requests,
            errors,
            samples: 1,
        };
        if !enough(pooled.requests) {
            let earlier = self
                .kept
                .iter()
                .rev()
                .filter(|(taken, ..)| *taken + window <= at);
            for (_, r, e) in earlier {
                pooled.requests += r;
                pooled.errors += e;
                pooled.samples += 1;
                if enough(pooled.requests) {
                    break;
                }
            }
        }
        if self
            .kept
            .back()
            .is_none_or(|(last, ..)| *last + window <= at)
        {
            if self.kept.len() == MAX_POOLED {
                self.kept.pop_front();
            }
            self.kept.push_back((at, requests, errors));
        }
        enough(pooled.requests).then_some(pooled)
    }
}
