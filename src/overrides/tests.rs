use std::time::Duration;

use super::*;
use crate::config::PrometheusConfig;

fn base() -> Config {
    let mut c = Config::default();
    c.providers.prometheus = Some(PrometheusConfig::default());
    c
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect()
}

#[test]
fn overrides_apply_to_one_deployment() {
    let a = annotations(&[
        ("mode", "dry_run"),
        ("error-rate-threshold", "0.05"),
        ("window", "30m"),
        ("min-requests", "100"),
        ("health-url", "http://{name}.{namespace}.svc:8080/healthz"),
        (
            "smoke",
            r#"[{"name":"status","url":"http://api.payments.svc/v1/status"}]"#,
        ),
    ]);
    let c = effective(&base(), "payments", "api", &a).expect("valid");
    assert_eq!(c.mode, Mode::DryRun);
    assert_eq!(c.judge.error_rate_threshold, 0.05);
    assert_eq!(c.watch.window, Duration::from_secs(1800));
    assert_eq!(c.judge.min_requests, 100);
    assert_eq!(c.smoke.len(), 1);
    assert_eq!(c.smoke[0].expect_status, 200);
}

#[test]
fn datadog_queries_are_overridable_only_when_datadog_is_configured() {
    let a = annotations(&[(
        "datadog-errors-query",
        "sum:trace.web.request.errors{service:{name}}.as_count()",
    )]);
    let bad = effective(&base(), "ns", "app", &a).expect_err("no Datadog");
    assert!(
        bad[0]
            .problem
            .contains("Datadog provider is not configured")
    );
    let mut with = base();
    with.providers.datadog = Some(crate::config::DatadogConfig::default());
    let c = effective(&with, "ns", "app", &a).expect("valid");
    let d = c.providers.datadog.expect("configured");
    assert_eq!(
        d.errors_query,
        "sum:trace.web.request.errors{service:{name}}.as_count()"
    );
    assert_eq!(
        d.requests_query,
        crate::config::DatadogConfig::default().requests_query
    );
}

#[test]
fn our_own_annotations_and_foreign_ones_are_not_overrides() {
    // As a Deployment reads after a paged rollback: its next rollout keeps its overrides.
    let mut a = annotations(&[
        ("state", "{}"),
        ("verdict", "rolled_back: crashloop"),
        ("page-delivered", "3"),
        ("live", r#"{"version":1}"#),
        ("error-rate-threshold", "0.05"),
    ]);
    a.insert("team".into(), "payments".into());
    let mut expected = base();
    expected.judge.error_rate_threshold = 0.05;
    assert_eq!(effective(&base(), "ns", "app", &a), Ok(expected));
}

#[test]
fn every_bad_value_is_named() {
    let a = annotations(&[
        ("error-rate-threshold", "5%"),
        ("window", "forever"),
        ("mode", "yolo"),
        ("failures-before-rollback", "0"),
        ("treshold", "0.1"),
    ]);
    let bad = effective(&base(), "ns", "app", &a).expect_err("bad");
    let named: Vec<&str> = bad.iter().map(|b| b.annotation.as_str()).collect();
    assert_eq!(
        named,
        [
            "deploy-watchdog.io/error-rate-threshold",
            "deploy-watchdog.io/failures-before-rollback",
            "deploy-watchdog.io/mode",
            "deploy-watchdog.io/treshold",
            "deploy-watchdog.io/window",
        ]
    );
    assert!(bad[3].problem.contains("unknown override"));
}

#[test]
fn urls_must_name_an_allowed_host() {
    let cfg = AnnotationsConfig::default();
    for ok in [
        "http://app.production.svc/health",
        "http://app.production.svc.cluster.local:8080/health",
        "http://{name}/health",
        "https://{name}.{namespace}.svc/health",
    ] {
        assert_eq!(allowed_url(&cfg, ok, "production", "app"), Ok(()), "{ok}");
    }
    for refused in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://localhost:9464/metrics",
        "http://127.0.0.1/",
        "http://evil.example.com/health",
        "http://app.production.svc.evil.com/",
        "file:///etc/passwd",
        "http://user:pw@app.production.svc/",
    ] {
        assert!(
            allowed_url(&cfg, refused, "production", "app").is_err(),
            "{refused} should be refused"
        );
    }
    let listed = AnnotationsConfig {
        allowed_hosts: vec!["127.0.0.1".into()],
        ..cfg
    };
    assert_eq!(
        allowed_url(&listed, "http://127.0.0.1:8080/x", "ns", "n"),
        Ok(())
    );
}

#[test]
fn a_refused_url_falls_back_to_the_defaults() {
    let a = annotations(&[("health-url", "http://169.254.169.254/latest/meta-data/iam")]);
    let bad = effective(&base(), "ns", "app", &a).expect_err("refused");
    assert_eq!(bad[0].annotation, "deploy-watchdog.io/health-url");
    assert!(bad[0].problem.contains("169.254.169.254"));
}

/// Every override with values it must refuse: zero where zero means nothing, negative,
/// huge, overflowing, the wrong unit, empty.
const EXTREMES: [(&str, &[&str]); 18] = [
    ("mode", &["", "0", "-1", "ENFORCE", "yolo"]),
    ("gitops", &["", "0", "true", "PAUSE", "paused", "pause,off"]),
    (
        "health-url",
        &[
            "",
            "0",
            "http://",
            "ftp://app.ns.svc/",
            "http://169.254.169.254/",
        ],
    ),
    ("version-source", &["", "0", "git", "IMAGE"]),
    ("version-key", &["", "   "]),
    (
        "version-container",
        &[
            "Main",
            "a b",
            "-app",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ],
    ),
    (
        "error-rate-threshold",
        &["", "0", "-0.5", "1", "1e308", "NaN", "inf", "5%", "0,02"],
    ),
    (
        "min-requests",
        &["", "-1", "1.5", "1e3", "18446744073709551616", "many"],
    ),
    (
        "failures-before-rollback",
        &["", "0", "-1", "4294967296", "1.5", "three"],
    ),
    (
        "window",
        &[
            "",
            "0s",
            "-5m",
            "8d",
            "500000000000y",
            "99999999999999999999999s",
            "30",
            "5 parsecs",
        ],
    ),
    (
        "interval",
        &[
            "",
            "0s",
            "-5m",
            "2h",
            "500000000000y",
            "99999999999999999999999s",
            "10",
            "5 parsecs",
        ],
    ),
    (
        "rollout-timeout",
        &[
            "",
            "0s",
            "-5m",
            "8d",
            "500000000000y",
            "99999999999999999999999s",
            "15",
            "5 parsecs",
        ],
    ),
    (
        "pod-grace",
        &[
            "",
            "-5m",
            "2h",
            "500000000000y",
            "99999999999999999999999s",
            "90",
            "5 parsecs",
        ],
    ),
    ("prometheus-requests-query", &[""]),
    ("prometheus-errors-query", &[""]),
    ("datadog-requests-query", &[""]),
    ("datadog-errors-query", &[""]),
    (
        "smoke",
        &[
            "",
            "0",
            "{}",
            r#"[{"name":"a"}]"#,
            r#"[{"name":"a","url":"http://app.ns.svc/","timeout":"500000000000y"}]"#,
            r#"[{"name":"a","url":"http://app.ns.svc/","timeout":"0s"}]"#,
            r#"[{"name":"a","url":"http://app.ns.svc/","method":"get"}]"#,
            r#"[{"name":"a","url":"http://app.ns.svc/","expect_status":0}]"#,
            r#"[{"name":"a","url":"http://app.ns.svc/","expect_status":70000}]"#,
        ],
    ),
];

#[test]
fn every_annotation_refuses_extreme_values_by_name() {
    let mut with_both = base();
    with_both.providers.datadog = Some(crate::config::DatadogConfig::default());
    let names: Vec<&str> = EXTREMES.iter().map(|(k, _)| *k).collect();
    let known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, known, "every override has its extreme values");
    for (key, values) in EXTREMES {
        for value in values {
            let a = annotations(&[(key, value)]);
            let bad = effective(&with_both, "ns", "app", &a)
                .expect_err(&format!("{key}: {value:?} should be refused"));
            assert_eq!(
                bad.iter()
                    .map(|b| b.annotation.as_str())
                    .collect::<Vec<_>>(),
                [format!("{PREFIX}{key}")],
                "{key}: {value:?}: {bad:?}"
            );
        }
    }
}

#[test]
fn the_largest_values_allowed_are_accepted() {
    let a = annotations(&[
        ("window", "7d"),
        ("rollout-timeout", "7d"),
        ("interval", "1h"),
        ("min-requests", "18446744073709551615"),
        ("failures-before-rollback", "4294967295"),
        ("error-rate-threshold", "0.999"),
        ("version-container", ""),
    ]);
    let c = effective(&base(), "ns", "app", &a).expect("valid");
    assert_eq!(c.watch.rollout_timeout, Duration::from_secs(7 * 86_400));
    assert_eq!(c.judge.min_requests, u64::MAX);
}

#[test]
fn a_rollout_timeout_past_the_clock_is_refused_naming_it() {
    let a = annotations(&[("rollout-timeout", "500000000000y")]);
    let bad = effective(&base(), "ns", "app", &a).expect_err("refused");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].annotation, "deploy-watchdog.io/rollout-timeout");
    assert!(
        bad[0].problem.contains("longer than the maximum, 7days"),
        "{}",
        bad[0].problem
    );
}

#[test]
fn overrides_read_into_typed_fields() {
    let a = annotations(&[
        ("rollout-timeout", "20m"),
        ("mode", "dry-run"),
        (
            "smoke",
            r#"[{"name":"s","url":"http://{name}/s","method":"HEAD"}]"#,
        ),
    ]);
    let o = Overrides::read(&AnnotationsConfig::default(), "ns", "app", &a).expect("valid");
    assert_eq!(
        o.rollout_timeout.map(|d| d.get()),
        Some(Duration::from_secs(1200))
    );
    assert_eq!(o.mode, Some(Mode::DryRun));
    let smoke = o.smoke.as_deref().unwrap_or_default();
    assert_eq!(smoke[0].method.get(), &http::Method::HEAD);
    assert_eq!(o.window, None);
}
