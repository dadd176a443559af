//! The one retry policy: exponential backoff with decorrelated jitter, capped.
//!
//! Each wait is drawn uniformly between the first wait and three times the previous one, never
//! above the cap (the "decorrelated jitter" of AWS's *Exponential Backoff and Jitter*). Waits grow
//! about as fast as doubling, never drop below the first wait, and retries of many callers that
//! failed together (every session's Event when the API server comes back, every page when
//! PagerDuty does) spread out instead of arriving in lockstep.

use std::time::Duration;

/// How waits grow: from `first`, never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub first: Duration,
    pub max: Duration,
}

impl Policy {
    pub const fn new(first: Duration, max: Duration) -> Policy {
        Policy { first, max }
    }

    /// A backoff following this policy, its jitter seeded afresh.
    pub fn start(self) -> Backoff {
        Backoff::seeded(self, random_seed())
    }
}

/// The waits of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    previous: Duration,
    state: u64,
}

impl Backoff {
    /// A backoff whose jitter is drawn from `seed`: the same seed gives the same waits.
    pub fn seeded(policy: Policy, seed: u64) -> Backoff {
        Backoff {
            policy,
            previous: Duration::ZERO,
            state: seed,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let Policy { first, max } = self.policy;
        let first = first.min(max);
        let upper = self.previous.saturating_mul(3).clamp(first, max);
        let span = upper.saturating_sub(first).as_nanos();
        let wait = if span == 0 {
            first
        } else {
            // `span` is at most `max`'s nanoseconds; `u64` holds 584 years of them.
            let span = u64::try_from(span).unwrap_or(u64::MAX);
            first + Duration::from_nanos(self.random() % (span + 1).max(1))
        };
        self.previous = wait;
        wait
    }

    /// The next wait, but at least `floor` (a server's `Retry-After`, bounded by the caller).
    pub fn next_wait_at_least(&mut self, floor: Option<Duration>) -> Duration {
        let wait = self.next_wait();
        floor.map_or(wait, |f| wait.max(f))
    }

    /// Starts over from the first wait (after a success).
    pub fn reset(&mut self) {
        self.previous = Duration::ZERO;
    }

    /// splitmix64: small, fast and good enough to spread retries; not for secrets.
    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A seed that differs between processes and between calls (std's hasher keys are random per
/// process, and each `RandomState` draws new ones).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_stay_between_the_first_wait_and_three_times_the_previous_within_the_cap() {
        let policy = Policy::new(100 * MS, 10_000 * MS);
        for seed in 0..200 {
            let mut b = Backoff::seeded(policy, seed);
            let mut previous = Duration::ZERO;
            for attempt in 0..40 {
                let w = b.next_wait();
                assert!(w >= 100 * MS, "seed {seed} attempt {attempt}: {w:?}");
                assert!(w <= 10_000 * MS, "seed {seed} attempt {attempt}: {w:?}");
                assert!(
                    w <= (previous * 3).max(100 * MS),
                    "seed {seed} attempt {attempt}: {w:?} after {previous:?}"
                );
                previous = w;
            }
        }
    }

    #[test]
    fn waits_grow_to_the_cap_and_are_spread_out() {
        let policy = Policy::new(200 * MS, 30_000 * MS);
        // Over many loops, the tenth wait is far above the first and reaches the cap's range.
        let tenth: Vec<Duration> = (0..500)
            .map(|seed| {
                let mut b = Backoff::seeded(policy, seed);
                (0..9).for_each(|_| {
                    b.next_wait();
                });
                b.next_wait()
            })
            .collect();
        let mean = tenth.iter().sum::<Duration>() / tenth.len() as u32;
        assert!(mean > 5_000 * MS, "mean tenth wait {mean:?}");
        assert!(tenth.iter().any(|w| *w > 20_000 * MS));
        // Jitter: loops that failed together do not retry together.
        let distinct: std::collections::HashSet<_> = tenth.iter().collect();
        assert!(distinct.len() > 450, "{} distinct of 500", distinct.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_waits_and_reset_starts_over() {
        let policy = Policy::new(10 * MS, 1_000 * MS);
        let waits = |seed| {
            let mut b = Backoff::seeded(policy, seed);
            (0..10).map(|_| b.next_wait()).collect::<Vec<_>>()
        };
        assert_eq!(waits(7), waits(7));
        assert_ne!(waits(7), waits(8));
        let mut b = Backoff::seeded(policy, 1);
        (0..20).for_each(|_| {
            b.next_wait();
        });
        b.reset();
        assert!(b.next_wait() <= 30 * MS);
    }

    #[test]
    fn a_retry_after_is_a_floor_and_degenerate_policies_are_constant() {
        let mut b = Backoff::seeded(Policy::new(10 * MS, 100 * MS), 3);
        assert!(b.next_wait_at_least(Some(5_000 * MS)) >= 5_000 * MS);
        assert!(b.next_wait_at_least(None) <= 100 * MS);
        let mut fixed = Backoff::seeded(Policy::new(500 * MS, 500 * MS), 9);
        assert!((0..10).all(|_| fixed.next_wait() == 500 * MS));
        // A first wait above the cap is the cap.
        let mut upside_down = Backoff::seeded(Policy::new(2_000 * MS, 500 * MS), 9);
        assert_eq!(upside_down.next_wait(), 500 * MS);
        // Two fresh seeds differ (processes retrying together spread out).
        assert_ne!(random_seed(), random_seed());
    }
}
