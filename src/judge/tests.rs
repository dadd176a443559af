use super::*;
use crate::check::Provider;
use crate::probes::error::ProbeError;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy::test()
}

fn facts() -> RolloutFacts {
    RolloutFacts {
        expected_version: Some("v1.2.3".into()),
        baseline: None,
        checks: Default::default(),
    }
}

fn healthy_health() -> HealthSample {
    HealthSample::Answered {
        version: Some("v1.2.3".into()),
        failing_checks: vec![],
    }
}

fn counts(requests: f64, errors: f64) -> Vec<(Provider, ProviderSample)> {
    vec![(
        Provider::Prometheus,
        ProviderSample::Counts { requests, errors },
    )]
}

/// An observation at `secs` of a complete rollout with the given round.
fn tick(secs: u64, round: ProbeRound) -> Observation {
    Observation::complete(secs, round)
}

fn round(providers: Vec<(Provider, ProviderSample)>) -> ProbeRound {
    ProbeRound {
        health: Some(healthy_health()),
        smoke: vec![],
        providers,
    }
}

fn rollbacks(vs: &[Verdict]) -> Vec<Reason> {
    vs.iter()
        .filter_map(|v| match v {
            Verdict::RollBack { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn error_rate_above_threshold_rolls_back_after_three_consecutive_samples() {
    let obs: Vec<_> = (1..=3)
        .map(|i| tick(i * 10, round(counts(2000.0, 68.0))))
        .collect();
    let mut j = Judge::new(policy(), facts());
    assert_eq!(j.observe(&obs[0]), Verdict::Continue);
    assert_eq!(j.observe(&obs[1]), Verdict::Continue);
    let Verdict::RollBack { reason, message } = j.observe(&obs[2]) else {
        panic!("should roll back")
    };
    assert_eq!(reason, Reason::ErrorRate);
    assert_eq!(
        message,
        "error rate 3.4 % (68 of 2,000 requests in 1m) > 1 % (prometheus) for 3 consecutive samples"
    );
}

#[test]
fn a_passing_sample_resets_the_failure_count() {
    let bad = || round(counts(2000.0, 68.0));
    let good = || round(counts(2000.0, 2.0));
    let obs = vec![
        tick(10, bad()),
        tick(20, bad()),
        tick(30, good()),
        tick(40, bad()),
        tick(50, bad()),
    ];
    assert!(rollbacks(&judge(&policy(), &facts(), &obs)).is_empty());
}

#[test]
fn low_traffic_is_no_evidence_either_way() {
    // 5 of 10 requests is 50 %, but 10 requests are under min_requests.
    let obs: Vec<_> = (1..=20)
        .map(|i| tick(i, round(counts(10.0, 5.0))))
        .collect();
    let vs = judge(&policy(), &facts(), &obs);
    assert!(
        vs.is_empty(),
        "low traffic neither fails nor counts as blind: {vs:?}"
    );
}

#[test]
fn low_traffic_does_not_reset_a_failure_streak() {
    let obs = vec![
        tick(10, round(counts(2000.0, 68.0))),
        tick(20, round(counts(2000.0, 68.0))),
        tick(30, round(counts(5.0, 0.0))),
        tick(40, round(counts(2000.0, 68.0))),
    ];
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &obs)),
        vec![Reason::ErrorRate]
    );
}

#[test]
fn providers_down_page_blind_and_never_roll_back() {
    let down = || {
        round(vec![(
            Provider::Prometheus,
            ProviderSample::Unavailable(ProbeError::Connect("connection refused".into())),
        )])
    };
    let obs: Vec<_> = (1..=10).map(|i| tick(i * 10, down())).collect();
    let vs = judge(&policy(), &facts(), &obs);
    assert_eq!(rollbacks(&vs), vec![]);
    let pages: Vec<_> = vs
        .iter()
        .filter(|v| {
            matches!(
                v,
                Verdict::Page {
                    reason: Reason::ProviderBlind,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(pages.len(), 1, "paged once: {vs:?}");
}

#[test]
fn blind_to_the_end_of_the_window_is_degraded_and_recovery_passes() {
    let down = || round(vec![(Provider::Prometheus, ProviderSample::NoData)]);
    let mut p = policy();
    p.window = Duration::from_secs(100);
    let obs: Vec<_> = (0..=10).map(|i| tick(i * 10, down())).collect();
    let vs = judge(&p, &facts(), &obs);
    assert!(
        matches!(
            vs.last(),
            Some(Verdict::Finish(Finish::Degraded {
                reason: Reason::ProviderBlind,
                ..
            }))
        ),
        "{vs:?}"
    );

    let mut obs: Vec<_> = (0..6).map(|i| tick(i * 10, down())).collect();
    obs.extend((6..=10).map(|i| tick(i * 10, round(counts(1000.0, 1.0)))));
    let vs = judge(&p, &facts(), &obs);
    assert_eq!(vs.last(), Some(&Verdict::Finish(Finish::Passed)), "{vs:?}");
}

#[test]
fn any_provider_with_data_failing_fails_the_check() {
    let providers = vec![
        (
            Provider::Prometheus,
            ProviderSample::Unavailable(ProbeError::status(500, None)),
        ),
        (
            Provider::Datadog,
            ProviderSample::Counts {
                requests: 1000.0,
                errors: 50.0,
            },
        ),
    ];
    let obs: Vec<_> = (1..=3).map(|i| tick(i, round(providers.clone()))).collect();
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &obs)),
        vec![Reason::ErrorRate]
    );

    let split = vec![
        (
            Provider::Prometheus,
            ProviderSample::Counts {
                requests: 1000.0,
                errors: 1.0,
            },
        ),
        (
            Provider::Datadog,
            ProviderSample::Counts {
                requests: 1000.0,
                errors: 50.0,
            },
        ),
    ];
    let obs: Vec<_> = (1..=3).map(|i| tick(i, round(split.clone()))).collect();
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &obs)),
        vec![Reason::ErrorRate]
    );
}

#[test]
fn one_provider_with_passing_data_is_not_blind_even_when_the_other_is_down() {
    let mut p = policy();
    p.window = Duration::from_secs(100);
    let mixed = || {
        round(vec![
            (
                Provider::Prometheus,
                ProviderSample::Unavailable(ProbeError::Connect("connection refused".into())),
            ),
            (
                Provider::Datadog,
                ProviderSample::Counts {
                    requests: 1000.0,
                    errors: 2.0,
                },
            ),
        ])
    };
    let obs: Vec<_> = (0..=10).map(|i| tick(i * 10, mixed())).collect();
    let vs = judge(&p, &facts(), &obs);
    assert!(
        !vs.iter().any(|v| matches!(v, Verdict::Page { .. })),
        "{vs:?}"
    );
    assert_eq!(vs.last(), Some(&Verdict::Finish(Finish::Passed)), "{vs:?}");

    // Both without data (one rate-limited, one empty): blind, never a rollback.
    let none = || {
        round(vec![
            (Provider::Prometheus, ProviderSample::NoData),
            (
                Provider::Datadog,
                ProviderSample::Unavailable(ProbeError::RateLimited(
                    "rate limited by Datadog (HTTP 429)".into(),
                )),
            ),
        ])
    };
    let obs: Vec<_> = (0..=10).map(|i| tick(i * 10, none())).collect();
    let vs = judge(&p, &facts(), &obs);
    assert_eq!(rollbacks(&vs), vec![]);
    assert!(
        matches!(
            vs.last(),
            Some(Verdict::Finish(Finish::Degraded {
                reason: Reason::ProviderBlind,
                ..
            }))
        ),
        "{vs:?}"
    );
}

#[test]
fn the_baseline_tolerates_pre_existing_noise_and_catches_a_regression() {
    let mut p = policy();
    p.baseline_factor = Some(2.0);
    let f = RolloutFacts {
        baseline: Some(0.03),
        ..facts()
    };
    // 4 % against a 3 % baseline: above threshold but not above 2 × baseline.
    let obs: Vec<_> = (1..=5)
        .map(|i| tick(i, round(counts(1000.0, 40.0))))
        .collect();
    assert!(rollbacks(&judge(&p, &f, &obs)).is_empty());
    // 8 % is above both.
    let obs: Vec<_> = (1..=3)
        .map(|i| tick(i, round(counts(1000.0, 80.0))))
        .collect();
    assert_eq!(rollbacks(&judge(&p, &f, &obs)), vec![Reason::ErrorRate]);
}

/// A new pod in `CrashLoopBackOff` 400 ms into the rollout, with `probes` answered.
fn crashlooping(probes: Option<ProbeRound>) -> Observation {
    Observation {
        at: Duration::from_millis(400),
        progress: Progress::Progressing("1 out of 3 new replicas have been updated".into()),
        pod_failure: Some(PodFailure {
            pod: "app-7d9f-abcde".into(),
            reason: Reason::Crashloop,
            detail: "CrashLoopBackOff (restarts: 1, last exit code 1)".into(),
        }),
        pending: None,
        probes,
    }
}

#[test]
fn crashloop_in_new_replicaset_rolls_back_without_waiting() {
    let vs = judge(&policy(), &facts(), &[crashlooping(None)]);
    assert_eq!(rollbacks(&vs), vec![Reason::Crashloop]);
}

#[test]
fn while_the_baseline_is_asked_pods_are_judged_and_health_answers_wait_for_it() {
    let not_found = || ProbeRound {
        health: Some(HealthSample::Failed("HTTP 404, expected 200".into())),
        smoke: vec![("login".into(), SmokeSample::Failed("HTTP 404".into()))],
        providers: vec![],
    };
    // Health and smoke failing while the previous version's answers are not in: not counted.
    let mut j = Judge::new(policy(), facts());
    j.checks_pending();
    for i in 1..=5 {
        assert_eq!(
            j.observe(&tick(i, not_found())),
            Verdict::Continue,
            "round {i}"
        );
    }
    // They failed there too: left out for good.
    j.checks_known(crate::baseline::Baseline::from_answers(
        Some("v1.2.2".into()),
        &[HealthSample::Failed("HTTP 404, expected 200".into())],
        &[("login".into(), SmokeSample::Failed("HTTP 404".into()))],
    ));
    for i in 6..=10 {
        assert_eq!(
            j.observe(&tick(i, not_found())),
            Verdict::Continue,
            "round {i}"
        );
    }
    // They passed there: the release's failures count from the answer on.
    let mut j = Judge::new(policy(), facts());
    j.checks_pending();
    assert_eq!(j.observe(&tick(1, not_found())), Verdict::Continue);
    j.checks_known(crate::baseline::Baseline::from_answers(
        Some("v1.2.2".into()),
        &[healthy_health()],
        &[("login".into(), SmokeSample::Passed)],
    ));
    let vs: Vec<Verdict> = (2..=4).map(|i| j.observe(&tick(i, not_found()))).collect();
    assert_eq!(rollbacks(&vs), vec![Reason::Health], "{vs:?}");
    // A crash loop does not wait for the baseline.
    let mut j = Judge::new(policy(), facts());
    j.checks_pending();
    let crashing = crashlooping(Some(not_found()));
    assert_eq!(rollbacks(&[j.observe(&crashing)]), vec![Reason::Crashloop]);
}

#[test]
fn pending_pods_page_at_the_pending_timeout_and_roll_back_at_the_deadline() {
    let progressing = |secs| Observation {
        at: Duration::from_secs(secs),
        progress: Progress::Progressing("Waiting".into()),
        pod_failure: None,
        pending: None,
        probes: None,
    };
    let vs = judge(&policy(), &facts(), &[progressing(100), progressing(600)]);
    assert_eq!(rollbacks(&vs), vec![Reason::RolloutTimeout]);

    let pending = |secs| Observation {
        pending: Some(PendingPod {
            pod: "app-x".into(),
            pending_for: Duration::from_secs(secs),
            message: "0/3 nodes are available: 3 Insufficient cpu.".into(),
        }),
        ..progressing(secs)
    };
    let vs = judge(
        &policy(),
        &facts(),
        &[pending(60), pending(130), pending(300), pending(600)],
    );
    assert!(
        matches!(&vs[0], Verdict::Page { reason: Reason::Pending, message } if message.contains("Insufficient cpu"))
    );
    assert!(
        matches!(
            &vs[1],
            Verdict::RollBack {
                reason: Reason::Pending,
                message,
            } if message.contains("rollout not complete after 10m") && message.contains("3 Insufficient cpu.")
        ),
        "{vs:?}"
    );
    assert_eq!(vs.len(), 2);

    // Pending at the deadline but not yet for `pending_timeout`: rolled back all the same, the
    // scheduler's message said.
    let late = |secs| Observation {
        pending: Some(PendingPod {
            pod: "app-y".into(),
            pending_for: Duration::from_secs(secs - 590),
            message: "0/3 nodes are available: 3 Insufficient memory.".into(),
        }),
        ..progressing(secs)
    };
    let vs = judge(&policy(), &facts(), &[progressing(100), late(600)]);
    assert!(
        matches!(&vs[..], [Verdict::RollBack { reason: Reason::Pending, message }] if message.contains("Insufficient memory")),
        "{vs:?}"
    );
}

#[test]
fn progress_deadline_exceeded_rolls_back_at_once() {
    let obs = Observation {
        at: Duration::from_secs(5),
        progress: Progress::DeadlineExceeded(
            "deployment \"app\" exceeded its progress deadline".into(),
        ),
        pod_failure: None,
        pending: None,
        probes: None,
    };
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &[obs])),
        vec![Reason::RolloutTimeout]
    );
}

#[test]
fn version_is_only_checked_once_the_rollout_is_complete() {
    let old = || ProbeRound {
        health: Some(HealthSample::Answered {
            version: Some("v1.2.2".into()),
            failing_checks: vec![],
        }),
        ..ProbeRound::default()
    };
    let mut during: Vec<_> = (1..=5)
        .map(|i| Observation {
            progress: Progress::Progressing("…".into()),
            ..tick(i, old())
        })
        .collect();
    assert!(judge(&policy(), &facts(), &during).is_empty());
    during.extend((6..=8).map(|i| tick(i, old())));
    let vs = judge(&policy(), &facts(), &during);
    assert!(
        matches!(&vs[0], Verdict::RollBack { reason: Reason::VersionMismatch, message } if message.contains("v1.2.2 reported, v1.2.3 deployed"))
    );
}

#[test]
fn a_failing_dependency_check_is_its_own_reason() {
    let r = || ProbeRound {
        health: Some(HealthSample::Answered {
            version: Some("v1.2.3".into()),
            failing_checks: vec![("database".into(), "timeout".into())],
        }),
        ..ProbeRound::default()
    };
    let obs: Vec<_> = (1..=3).map(|i| tick(i, r())).collect();
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &obs)),
        vec![Reason::DependencyCheck]
    );
}

#[test]
fn smoke_failures_count_per_check() {
    let r = |ok: bool| ProbeRound {
        smoke: vec![(
            "status".into(),
            if ok {
                SmokeSample::Passed
            } else {
                SmokeSample::Failed("HTTP 503, expected 200".into())
            },
        )],
        ..ProbeRound::default()
    };
    let obs: Vec<_> = (1..=3).map(|i| tick(i, r(false))).collect();
    assert_eq!(
        rollbacks(&judge(&policy(), &facts(), &obs)),
        vec![Reason::Smoke]
    );
}

#[test]
fn a_clean_window_passes_at_its_end() {
    let mut p = policy();
    p.window = Duration::from_secs(60);
    let obs: Vec<_> = (0..=6)
        .map(|i| tick(i * 10, round(counts(1000.0, 1.0))))
        .collect();
    assert_eq!(
        judge(&p, &facts(), &obs),
        vec![Verdict::Finish(Finish::Passed)]
    );
}

#[test]
fn formatting_reads_like_a_person_wrote_it() {
    assert_eq!(percent(0.034), "3.4 %");
    assert_eq!(percent(0.01), "1 %");
    assert_eq!(percent(0.0005), "0.05 %");
    assert_eq!(count(2000.0), "2,000");
    assert_eq!(count(1234567.4), "1,234,567");
    assert_eq!(human(Duration::from_millis(1500)), "1s");
    assert_eq!(human(Duration::from_millis(300)), "300ms");
}

fn any_sample() -> impl Strategy<Value = ProviderSample> {
    prop_oneof![
        (0.0f64..5000.0, 0.0f64..1.0).prop_map(|(r, frac)| ProviderSample::Counts {
            requests: r,
            errors: r * frac
        }),
        // Near the threshold and at low traffic, where the confidence bound and pooling decide.
        (0.0f64..5000.0, 0.0f64..0.04).prop_map(|(r, frac)| ProviderSample::Counts {
            requests: r,
            errors: (r * frac).round()
        }),
        (0.0f64..30.0, 0.0f64..0.3).prop_map(|(r, frac)| ProviderSample::Counts {
            requests: r.round(),
            errors: (r * frac).round()
        }),
        Just(ProviderSample::NoData),
        Just(ProviderSample::Unavailable(ProbeError::Connect(
            "down".into()
        ))),
        // More errors than requests at real traffic: garbage, not a failure rate of 150 %.
        (20.0f64..5000.0, 1.01f64..3.0).prop_map(|(r, k)| ProviderSample::Counts {
            requests: r,
            errors: r * k
        }),
        // Garbage a provider may answer: NaN, infinities, resets.
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-5.0),
            0.0f64..10.0
        ]
        .prop_map(|e| ProviderSample::Counts {
            requests: e,
            errors: e * 2.0
        }),
    ]
}

fn any_round() -> impl Strategy<Value = ProbeRound> {
    (prop::collection::vec(any_sample(), 0..=2), any::<bool>()).prop_map(|(samples, healthy)| {
        ProbeRound {
            health: Some(if healthy {
                healthy_health()
            } else {
                HealthSample::Failed("HTTP 503".into())
            }),
            smoke: vec![],
            providers: samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| (Provider::ALL[i], s))
                .collect(),
        }
    })
}

/// What a verdict decides, without its message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decided {
    Page(Reason),
    RollBack(Reason),
    Passed,
    Degraded(Reason),
}

fn decided(v: &Verdict) -> Option<Decided> {
    match v {
        Verdict::Continue => None,
        Verdict::Page { reason, .. } => Some(Decided::Page(*reason)),
        Verdict::RollBack { reason, .. } => Some(Decided::RollBack(*reason)),
        Verdict::Finish(Finish::Passed) => Some(Decided::Passed),
        Verdict::Finish(Finish::Degraded { reason, .. }) => Some(Decided::Degraded(*reason)),
    }
}

/// A window short enough for generated sequences (one round a second) to reach its end.
fn short_window() -> Policy {
    Policy {
        window: Duration::from_secs(20),
        ..policy()
    }
}

/// The policy written down plainly, for rounds of a complete rollout at one-second ticks from
/// 0 s (health and error-rate providers only), independent of `Judge`'s bookkeeping: counters
/// per check, the blind page once, the verdict at the window's end. Returns (round, decision).
fn model(p: &Policy, rounds: &[ProbeRound]) -> Vec<(usize, Decided)> {
    #[derive(PartialEq)]
    enum Evidence {
        Failing,
        Passing,
        LowTraffic,
        Nothing,
    }
    // The score test behind the Wilson bound: the bound is above `t` exactly when the ratio is
    // above `t` and the squared distance, in requests, exceeds z² t (1 − t).
    let above = |errors: f64, requests: f64, t: f64| {
        let ratio = errors / requests;
        ratio > t && requests * (ratio - t).powi(2) > Z_99 * Z_99 * t * (1.0 - t)
    };
    // Per provider: the valid samples kept for pooling, (second, requests, errors).
    let mut kept: std::collections::HashMap<Provider, Vec<(u64, f64, f64)>> = Default::default();
    let window = p.sample_window.as_secs();
    let mut evidence = |i: u64, name: Provider, s: &ProviderSample| match *s {
        ProviderSample::Counts { requests, errors }
            if requests.is_finite()
                && errors.is_finite()
                && requests >= 0.0
                && (0.0..=requests).contains(&errors) =>
        {
            let kept = kept.entry(name).or_default();
            let (mut r, mut e) = (requests, errors);
            for &(_, kr, ke) in kept.iter().rev().filter(|(at, ..)| at + window <= i) {
                if r > 0.0 && r >= p.min_requests as f64 {
                    break;
                }
                r += kr;
                e += ke;
            }
            if kept.last().is_none_or(|(at, ..)| at + window <= i) {
                kept.push((i, requests, errors));
            }
            if r == 0.0 || r < p.min_requests as f64 {
                Evidence::LowTraffic
            } else if above(e, r, p.error_rate_threshold) {
                Evidence::Failing
            } else {
                Evidence::Passing
            }
        }
        _ => Evidence::Nothing,
    };
    let limit = p.failures_before_rollback;
    let (mut health_failures, mut rate_failures, mut blind_for) = (0u32, 0u32, 0u32);
    let mut blind_paged = false;
    let mut out = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        let healthy = round.health == Some(healthy_health());
        health_failures = if healthy { 0 } else { health_failures + 1 };
        let seen: Vec<Evidence> = round
            .providers
            .iter()
            .map(|(name, s)| evidence(i as u64, *name, s))
            .collect();
        if seen.contains(&Evidence::Failing) {
            rate_failures += 1;
            blind_for = 0;
        } else if seen.contains(&Evidence::Passing) {
            rate_failures = 0;
            blind_for = 0;
        } else if seen.contains(&Evidence::LowTraffic) {
            blind_for = 0;
        } else if !seen.is_empty() {
            blind_for += 1;
        }
        if health_failures >= limit {
            out.push((i, Decided::RollBack(Reason::Health)));
            break;
        }
        if rate_failures >= limit {
            out.push((i, Decided::RollBack(Reason::ErrorRate)));
            break;
        }
        let blind = blind_for >= p.inconclusive_limit;
        if blind && !blind_paged {
            blind_paged = true;
            out.push((i, Decided::Page(Reason::ProviderBlind)));
            continue;
        }
        if Duration::from_secs(i as u64) >= p.window {
            out.push((
                i,
                if blind {
                    Decided::Degraded(Reason::ProviderBlind)
                } else {
                    Decided::Passed
                },
            ));
            break;
        }
    }
    out
}

proptest! {
    #[test]
    fn folding_one_by_one_equals_judging_the_whole_sequence_and_a_plain_model(
        rounds in prop::collection::vec(any_round(), 0..40),
        short in any::<bool>(),
        pooled in any::<bool>(),
    ) {
        let mut p = if short { short_window() } else { policy() };
        if pooled {
            // Every round's sample is disjoint from the one before: small samples pool.
            p.sample_window = Duration::from_secs(1);
        }
        let obs: Vec<_> = rounds.iter().cloned().enumerate().map(|(i, r)| tick(i as u64, r)).collect();
        let batch = judge(&p, &facts(), &obs);
        let mut j = Judge::new(p.clone(), facts());
        let one_by_one: Vec<(usize, Verdict)> = obs
            .iter()
            .enumerate()
            .map(|(i, o)| (i, j.observe(o)))
            .filter(|(_, v)| *v != Verdict::Continue)
            .collect();
        let folded: Vec<Verdict> = one_by_one.iter().map(|(_, v)| v.clone()).collect();
        prop_assert_eq!(batch, folded);
        let judged: Vec<(usize, Decided)> = one_by_one
            .iter()
            .filter_map(|(i, v)| decided(v).map(|d| (*i, d)))
            .collect();
        prop_assert_eq!(judged, model(&p, &rounds));
    }

    #[test]
    fn no_data_garbage_or_low_traffic_never_rolls_back_and_garbage_is_never_a_pass(
        low_traffic_too in any::<bool>(),
        samples in prop::collection::vec(
            prop_oneof![
                Just(ProviderSample::NoData),
                Just(ProviderSample::Unavailable(ProbeError::status(429, None))),
                Just(ProviderSample::Counts { requests: f64::NAN, errors: 1.0 }),
                Just(ProviderSample::Counts { requests: 100.0, errors: f64::INFINITY }),
                Just(ProviderSample::Counts { requests: -100.0, errors: -50.0 }),
                // More errors than requests, at real traffic.
                (20.0f64..5000.0, 1.01f64..3.0)
                    .prop_map(|(r, k)| ProviderSample::Counts { requests: r, errors: r * k }),
                // Low traffic (left out when the case excludes it).
                (0.0f64..19.9).prop_map(|r| ProviderSample::Counts { requests: r, errors: r }),
            ],
            1..60,
        )
    ) {
        let p = short_window();
        let samples: Vec<ProviderSample> = samples
            .into_iter()
            .filter(|s| low_traffic_too || !matches!(s, ProviderSample::Counts { requests, .. } if (0.0..20.0).contains(requests)))
            .collect();
        let obs: Vec<_> = samples.iter().cloned().enumerate()
            .map(|(i, s)| tick(i as u64, round(vec![(Provider::Prometheus, s)])))
            .collect();
        let vs = judge(&p, &facts(), &obs);
        prop_assert!(rollbacks(&vs).is_empty());
        let finishes: Vec<&Verdict> = vs.iter().filter(|v| matches!(v, Verdict::Finish(_))).collect();
        // The window (20 s) ends at the 21st round: the watch ends there, once (a round later
        // when the blind page takes that round).
        prop_assert!(finishes.len() <= 1, "{:?}", vs);
        if obs.len() > 22 {
            prop_assert_eq!(finishes.len(), 1, "{:?}", vs);
        } else if obs.len() <= 20 {
            prop_assert_eq!(finishes.len(), 0, "{:?}", vs);
        }
        if !low_traffic_too && !finishes.is_empty() {
            // Nothing but no data and garbage: blind to the end, never a pass.
            prop_assert!(
                matches!(finishes[0], Verdict::Finish(Finish::Degraded { reason: Reason::ProviderBlind, .. })),
                "{:?}", vs
            );
        }
    }

    #[test]
    fn flapping_never_rolls_back_before_n_consecutive_failures(
        pattern in prop::collection::vec(any::<bool>(), 1..80),
        n in 1u32..6,
    ) {
        let mut p = policy();
        p.failures_before_rollback = n;
        let obs: Vec<_> = pattern.iter().enumerate()
            .map(|(i, bad)| tick(i as u64, round(counts(1000.0, if *bad { 100.0 } else { 0.0 }))))
            .collect();
        let mut longest = 0u32;
        let mut run = 0u32;
        for bad in &pattern {
            run = if *bad { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let rolled = !rollbacks(&judge(&p, &facts(), &obs)).is_empty();
        prop_assert_eq!(rolled, longest >= n);
    }

    #[test]
    fn at_most_one_final_verdict_and_nothing_after_it(rounds in prop::collection::vec(any_round(), 0..60)) {
        let obs: Vec<_> = rounds.into_iter().enumerate().map(|(i, r)| tick(i as u64, r)).collect();
        let vs = judge(&short_window(), &facts(), &obs);
        let finals = vs.iter().filter(|v| matches!(v, Verdict::RollBack { .. } | Verdict::Finish(_))).count();
        prop_assert!(finals <= 1);
        if finals == 1 {
            let last_is_final = matches!(vs.last(), Some(Verdict::RollBack { .. } | Verdict::Finish(_)));
            prop_assert!(last_is_final);
        }
        // A watch that goes past its window's end (20 s, the 21st round; a round later when the
        // blind page takes that round) has ended by then.
        if obs.len() > 22 {
            prop_assert_eq!(finals, 1, "{:?}", vs);
        }
    }
}
