//! Error-rate evidence: the confidence bound, pooling, and the rates of false and missed
//! verdicts measured on simulated traffic (figures in BENCHMARKS.md, "Error-rate evidence").

use super::*;
use crate::check::Provider;

fn policy(sample_window: Duration) -> Policy {
    Policy {
        sample_window,
        window: Duration::from_secs(3600),
        ..Policy::test()
    }
}

fn sample(secs: u64, requests: f64, errors: f64) -> Observation {
    Observation::complete(
        secs,
        ProbeRound {
            health: None,
            smoke: vec![],
            providers: vec![(
                Provider::Prometheus,
                ProviderSample::Counts { requests, errors },
            )],
        },
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 5e-4
}

#[test]
fn the_wilson_bound_weighs_the_number_of_requests() {
    assert!(close(wilson_lower_bound(1.0, 20.0, Z_99), 0.0069));
    assert!(close(wilson_lower_bound(2.0, 20.0, Z_99), 0.0227));
    assert!(close(wilson_lower_bound(20.0, 20.0, Z_99), 0.7870));
    assert!(close(wilson_lower_bound(68.0, 2000.0, Z_99), 0.0258));
    assert_eq!(wilson_lower_bound(0.0, 100.0, Z_99), 0.0);
    assert_eq!(wilson_lower_bound(0.0, 0.0, Z_99), 0.0);
    // Never above the ratio itself.
    for (e, r) in [(1.0, 1.0), (5.0, 10.0), (3.0, 7.5), (999.0, 1000.0)] {
        let b = wilson_lower_bound(e, r, Z_99);
        assert!((0.0..=e / r).contains(&b), "{e} of {r}: {b}");
    }
}

#[test]
fn twenty_of_twenty_failing_is_a_failure_and_one_of_twenty_is_not() {
    let one = |errors| Evidence {
        requests: 20.0,
        errors,
        samples: 1,
    };
    assert!(failing(&one(20.0), 0.01, None));
    assert!(!failing(&one(1.0), 0.01, None));
    // 3.4 % of 2,000 is above 1 %, and above a 1 % baseline × 2; not above a 2 % one × 2.
    let many = Evidence {
        requests: 2000.0,
        errors: 68.0,
        samples: 1,
    };
    assert!(failing(&many, 0.01, Some((2.0, 0.01))));
    assert!(!failing(&many, 0.01, Some((2.0, 0.02))));
}

#[test]
fn small_samples_pool_until_min_requests_and_then_roll_back() {
    // Five requests a sample at 40 % errors, samples that do not overlap: the fourth has 20
    // requests pooled, and it and the next two fail.
    let p = policy(Duration::from_secs(10));
    let obs: Vec<_> = (1..=10).map(|i| sample(i * 10, 5.0, 2.0)).collect();
    let mut j = Judge::new(p, RolloutFacts::default());
    let verdicts: Vec<_> = obs.iter().map(|o| j.observe(o)).collect();
    let first = verdicts
        .iter()
        .position(|v| *v != Verdict::Continue)
        .expect("a verdict");
    assert_eq!(first, 5, "{verdicts:?}");
    let Verdict::RollBack { reason, message } = &verdicts[5] else {
        panic!("{verdicts:?}")
    };
    assert_eq!(*reason, Reason::ErrorRate);
    assert_eq!(
        message,
        "error rate 40 % (8 of 20 requests in 4 samples of 10s) > 1 % (prometheus) for 3 consecutive samples"
    );
}

#[test]
fn a_handful_of_errors_on_a_handful_of_requests_is_no_verdict() {
    // One error in every fourth sample of five requests: 1 of 20 pooled, never confident.
    let p = policy(Duration::from_secs(10));
    let obs: Vec<_> = (1..=40)
        .map(|i| sample(i * 10, 5.0, if i % 4 == 0 { 1.0 } else { 0.0 }))
        .collect();
    assert!(judge(&p, &RolloutFacts::default(), &obs).is_empty());
}

#[test]
fn overlapping_samples_are_not_counted_twice() {
    // A 60 s sample window every 10 s: the samples overlap, and only those a window apart pool.
    // Five requests each, all failing: 20 disjoint requests exist from the fourth window on
    // (t = 10, 70, 130, 190), and the verdict takes two more samples.
    let p = policy(Duration::from_secs(60));
    let obs: Vec<_> = (1..=30).map(|i| sample(i * 10, 5.0, 5.0)).collect();
    let mut j = Judge::new(p, RolloutFacts::default());
    let at = obs
        .iter()
        .find(|o| j.observe(o) != Verdict::Continue)
        .map(|o| o.at);
    assert_eq!(at, Some(Duration::from_secs(210)));
}

#[test]
fn garbage_is_not_pooled() {
    let p = policy(Duration::from_secs(10));
    let mut obs: Vec<_> = (1..=3).map(|i| sample(i * 10, 5.0, 5.0)).collect();
    // A reset (more errors than requests) would bring the pool to 20 requests.
    obs.push(sample(40, 5.0, 50.0));
    obs.push(sample(50, f64::NAN, 1.0));
    let mut j = Judge::new(p, RolloutFacts::default());
    for o in &obs {
        j.observe(o);
    }
    assert_eq!(j.pools[&Provider::Prometheus].kept.len(), 3);
    let folded = judge(
        &policy(Duration::from_secs(10)),
        &RolloutFacts::default(),
        &obs,
    );
    assert!(folded.is_empty(), "{folded:?}");
}

#[test]
fn the_pool_is_bounded() {
    let p = policy(Duration::from_secs(1));
    let obs: Vec<_> = (1..=1000).map(|i| sample(i, 0.0, 0.0)).collect();
    let mut j = Judge::new(p, RolloutFacts::default());
    for o in &obs {
        j.observe(o);
    }
    assert_eq!(j.pools[&Provider::Prometheus].kept.len(), MAX_POOLED);
}

/// SplitMix64: a deterministic, seedable generator, good enough for Monte Carlo counts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Errors among `n` requests failing independently with probability `p`: the gaps between
    /// failures are geometric, so this takes about n·p steps and is exact.
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        let log_q = (1.0 - p).ln();
        let (mut k, mut at) = (0u64, 0u64);
        loop {
            let gap = (self.unit().ln() / log_q).floor() as u64;
            at = at.saturating_add(gap).saturating_add(1);
            if at > n {
                return k;
            }
            k += 1;
        }
    }
}

/// Simulated watches: `windows` runs of `samples` disjoint samples of `per_sample` requests at a
/// true error ratio `ratio`, each judged from scratch. Returns, per run, the sample (1-based) at
/// which it rolled back, or `None`.
fn simulate(
    ratio: f64,
    per_sample: u64,
    windows: usize,
    samples: u64,
    seed: u64,
) -> Vec<Option<u64>> {
    let p = policy(Duration::from_secs(60));
    let mut rng = Rng(seed);
    (0..windows)
        .map(|_| {
            let mut j = Judge::new(p.clone(), RolloutFacts::default());
            (1..=samples).find(|&i| {
                let errors = rng.binomial(per_sample, ratio) as f64;
                let v = j.observe(&sample(i * 60, per_sample as f64, errors));
                matches!(v, Verdict::RollBack { .. })
            })
        })
        .collect()
}

/// The first sample whose pooled evidence has `min_requests` (20) requests.
fn first_evidence(per_sample: u64) -> u64 {
    20u64.div_ceil(per_sample)
}

const WINDOWS: usize = 10_000;
/// Samples per simulated watch: a 15-minute window sampled every 30 s.
const SAMPLES: u64 = 30;

#[test]
fn half_the_threshold_rolls_back_at_most_once_in_a_thousand_windows() {
    for (per_sample, seed) in [(10, 1), (100, 2), (10_000, 3)] {
        let runs = simulate(0.005, per_sample, WINDOWS, SAMPLES, seed);
        let false_failures = runs.iter().filter(|r| r.is_some()).count();
        eprintln!(
            "error ratio 0.5 % (threshold 1 %), {per_sample} requests a sample: {false_failures} \
             false rollbacks in {WINDOWS} windows of {SAMPLES} samples"
        );
        assert!(
            false_failures * 1000 <= WINDOWS,
            "{per_sample} a sample: {false_failures} of {WINDOWS}"
        );
    }
}

/// Samples to the verdict, counted from the first whose pooled evidence has `min_requests`
/// (1 = that one; `u64::MAX` = none in the window), sorted.
fn samples_to_verdict(ratio: f64, per_sample: u64, seed: u64) -> Vec<u64> {
    let first = first_evidence(per_sample);
    let mut n: Vec<u64> = simulate(ratio, per_sample, WINDOWS, SAMPLES, seed)
        .iter()
        .map(|r| r.map_or(u64::MAX, |at| at + 1 - first))
        .collect();
    n.sort_unstable();
    n
}

#[test]
fn a_clear_breach_is_a_verdict_within_the_minimum_and_five_times_the_threshold_soon() {
    for (ratio, per_sample, seed) in [
        (0.05, 10, 4),
        (0.05, 100, 5),
        (0.05, 10_000, 6),
        (0.4, 10, 7),
    ] {
        let n = samples_to_verdict(ratio, per_sample, seed);
        let quantile = |q: f64| match n[((WINDOWS as f64 * q) as usize).min(WINDOWS - 1)] {
            u64::MAX => "none".to_string(),
            k => k.to_string(),
        };
        let within = |k: u64| n.iter().filter(|&&m| m <= k).count();
        eprintln!(
            "error ratio {} %, {per_sample} requests a sample: verdict within 3 samples of the \
             first with 20 requests in {} of {WINDOWS} windows, within {SAMPLES} samples in {}; \
             median {}, p99 {}",
            ratio * 100.0,
            within(3),
            within(SAMPLES),
            quantile(0.5),
            quantile(0.99),
        );
        match (per_sample, ratio) {
            // Each sample is evidence far above the bound.
            (10_000, _) => assert_eq!(within(3), WINDOWS),
            // 20 pooled requests at 40 %: 8 errors expected, 2 needed; fewer happens in about
            // one pool in 2,000 and only delays the verdict.
            (_, 0.4) => {
                assert!(within(3) * 1000 >= WINDOWS * 995);
                assert_eq!(within(SAMPLES), WINDOWS);
            }
            // 5 errors expected in 100 requests: 4 are needed to be sure of more than 1 %, so
            // one sample in four falls short and resets the count; rarely for a whole window.
            (100, _) => assert!(within(SAMPLES) * 100 >= WINDOWS * 99),
            // One error expected in 20 requests: 2 are needed. Detection takes many samples.
            _ => assert!(within(SAMPLES) * 2 >= WINDOWS),
        }
    }
}
