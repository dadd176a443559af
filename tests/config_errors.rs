//! Bad configs stop start-up: each error names the field's path, and `run` / `check-config`
//! exit with status 2 before touching the cluster.

use std::process::Command;

use deploy_watchdog::config::Config;

/// (YAML, the field path the message must name).
const BAD: &[(&str, &str)] = &[
    // Wrong types.
    ("mode: 3", "mode"),
    ("mode: yolo", "mode"),
    ("cluster_name: [a, b]", "cluster_name"),
    ("watch: {window: soon}", "watch.window"),
    ("watch: {interval: 10}", "watch.interval"),
    ("watch: {namespaces: prod}", "watch.namespaces"),
    ("watch: {selector: {a: b}}", "watch.selector"),
    (
        "judge: {error_rate_threshold: lots}",
        "judge.error_rate_threshold",
    ),
    ("judge: {min_requests: -1}", "judge.min_requests"),
    ("judge: {min_requests: 1.5}", "judge.min_requests"),
    (
        "judge: {failures_before_rollback: 0}",
        "judge.failures_before_rollback",
    ),
    (
        "judge: {inconclusive_limit: -3}",
        "judge.inconclusive_limit",
    ),
    (
        "judge: {baseline: {enabled: maybe}}",
        "judge.baseline.enabled",
    ),
    ("health: {expect_status: ok}", "health.expect_status"),
    ("health: {enabled: 2}", "health.enabled"),
    ("smoke: {name: home}", "smoke"),
    ("smoke: [{url: 'http://x/'}]", "smoke[0]"),
    (
        "smoke: [{name: a, url: 'http://x/', timeout: forever}]",
        "smoke[0].timeout",
    ),
    (
        "providers: {prometheus: {timeout: 5}}",
        "providers.prometheus.timeout",
    ),
    ("notify: {slack: {timeout: []}}", "notify.slack.timeout"),
    (
        "notify: {pagerduty: {enabled: sometimes}}",
        "notify.pagerduty.enabled",
    ),
    ("version: {source: git}", "version.source"),
    (
        "peak_hours: {windows: [{start: '09:00'}]}",
        "peak_hours.windows[0]",
    ),
    (
        "annotations: {allowed_hosts: '*.svc'}",
        "annotations.allowed_hosts",
    ),
    // Unknown fields, at every level.
    ("windw: 4s", "windw"),
    ("watch: {windw: 4s}", "windw"),
    ("judge: {baseline: {factr: 2}}", "factr"),
    ("health: {urls: 'http://x/'}", "urls"),
    (
        "smoke: [{name: a, url: 'http://x/', expect: 200}]",
        "expect",
    ),
    ("providers: {graphite: {}}", "graphite"),
    ("providers: {prometheus: {query: up}}", "query"),
    ("notify: {pagerduty: {routing_key: abc}}", "routing_key"),
    ("notify: {email: {}}", "email"),
    (
        "secrets: {slack_webhook_url: 'http://x/'}",
        "slack_webhook_url",
    ),
    (
        "peak_hours: {windows: [{start: '09:00', end: '11:00', tz: x}]}",
        "tz",
    ),
    ("annotations: {allow: []}", "allow"),
    // Zero durations and impossible relations.
    ("watch: {window: 0s}", "watch.window"),
    ("watch: {interval: 0s}", "watch.interval"),
    ("watch: {rollout_timeout: 0s}", "watch.rollout_timeout"),
    ("watch: {pending_timeout: 0s}", "watch.pending_timeout"),
    ("watch: {window: -5m}", "watch.window"),
    ("judge: {sample_window: 0s}", "judge.sample_window"),
    ("health: {timeout: 0s}", "health.timeout"),
    (
        "smoke: [{name: a, url: 'http://x/', timeout: 0s}]",
        "smoke[0].timeout",
    ),
    (
        "providers: {prometheus: {timeout: 0s}}",
        "providers.prometheus.timeout",
    ),
    (
        "judge: {baseline: {enabled: true, lookback: 0s}}",
        "judge.baseline.lookback",
    ),
    ("watch: {interval: 1h, window: 1m}", "watch.interval"),
    // Ranges.
    (
        "judge: {error_rate_threshold: 5}",
        "judge.error_rate_threshold",
    ),
    (
        "judge: {error_rate_threshold: 0}",
        "judge.error_rate_threshold",
    ),
    (
        "judge: {error_rate_threshold: .nan}",
        "judge.error_rate_threshold",
    ),
    ("judge: {baseline: {factor: 0.5}}", "judge.baseline.factor"),
    ("judge: {baseline: {factor: .inf}}", "judge.baseline.factor"),
    ("health: {expect_status: 42}", "health.expect_status"),
    ("health: {expect_status: 70000}", "health.expect_status"),
    (
        "health: {version_pointer: version}",
        "health.version_pointer",
    ),
    ("cluster_name: '  '", "cluster_name"),
    // URLs.
    ("health: {url: 'not a url'}", "health.url"),
    ("health: {url: 'file:///etc/passwd'}", "health.url"),
    ("smoke: [{name: home, url: 'ftp://x/'}]", "smoke[0].url"),
    (
        "providers: {prometheus: {url: 'prometheus:9090'}}",
        "providers.prometheus.url",
    ),
    (
        "providers: {prometheus: {requests_query: ' '}}",
        "providers.prometheus.requests_query",
    ),
    (
        "notify: {pagerduty: {url: 'events dot pagerduty'}}",
        "notify.pagerduty.url",
    ),
    (
        "notify: {pagerduty: {url: 'https://events.pagerduty.com/v2/enqueue/v2/enqueue'}}",
        "notify.pagerduty.url",
    ),
    (
        "notify: {pagerduty: {url: 'https://events.pagerduty.com/generic/2010-04-15/create_event.json'}}",
        "notify.pagerduty.url",
    ),
    (
        "notify: {pagerduty: {url: 'mailto:oncall@example.com'}}",
        "notify.pagerduty.url",
    ),
    // Selectors, namespaces, smoke checks.
    ("watch: {selector: ''}", "watch.selector"),
    ("watch: {selector: '=true'}", "watch.selector"),
    ("watch: {namespaces: [Prod]}", "watch.namespaces[0]"),
    ("watch: {namespaces: [prod, '-x']}", "watch.namespaces[1]"),
    ("smoke: [{name: '', url: 'http://x/'}]", "smoke[0].name"),
    (
        "smoke: [{name: a, url: 'http://x/'}, {name: a, url: 'http://y/'}]",
        "smoke[1].name",
    ),
    (
        "smoke: [{name: a, url: 'http://x/', method: 'GE T'}]",
        "smoke[0].method",
    ),
    // Peak windows and the version source.
    (
        "peak_hours: {time_zone: Mars/Olympus}",
        "peak_hours.time_zone",
    ),
    (
        "peak_hours: {windows: [{start: '25:00', end: '26:00'}]}",
        "peak_hours.windows[0]",
    ),
    (
        "peak_hours: {windows: [{start: '11:00', end: '09:00'}]}",
        "peak_hours.windows[0].end",
    ),
    (
        "peak_hours: {windows: [{days: [someday], start: '09:00', end: '11:00'}]}",
        "peak_hours.windows[0]",
    ),
    ("version: {source: label, key: ''}", "version.key"),
    // Grouped provider queries.
    (
        "providers: {prometheus: {grouped: {deployment_label: ''}}}",
        "providers.prometheus.grouped.deployment_label",
    ),
    (
        r#"providers: {prometheus: {grouped: {requests_query: 'sum(up{namespace="{namespace}"})'}}}"#,
        "providers.prometheus.grouped.requests_query",
    ),
    (
        "providers: {datadog: {grouped: {enabled: often}}}",
        "providers.datadog.grouped.enabled",
    ),
    ("providers: {datadog: {grouped: {tag: service}}}", "tag"),
    (
        "providers: {datadog: {grouped: {requests_query: ' '}}}",
        "providers.datadog.grouped.requests_query",
    ),
    (
        "providers: {datadog: {grouped: {errors_query: 'sum:trace.x.errors{service:{name}}.as_count()'}}}",
        "providers.datadog.grouped.errors_query",
    ),
    (
        "providers: {datadog: {grouped: {requests_query: 'sum:trace.x.hits{kube_namespace:{namespace} AND service IN ({names})}'}}}",
        "providers.datadog.grouped.requests_query",
    ),
    (
        "providers: {datadog: {service: '{name} x'}}",
        "providers.datadog.service",
    ),
    (
        "providers: {datadog: {grouped: {requests_query: 'sum:trace.x.hits{service:{service_name}} by {service}.as_count()'}}}",
        "providers.datadog.grouped.requests_query",
    ),
    (
        "providers: {prometheus: {scrape_interval: 0s}}",
        "providers.prometheus.scrape_interval",
    ),
    (
        "providers: {datadog: {grouped: {name_tag: ' '}}}",
        "providers.datadog.grouped.name_tag",
    ),
    // Not a mapping at all.
    ("[1, 2, 3]", "config"),
    ("mode: [unclosed", "config"),
];

#[test]
fn every_bad_config_names_its_field() {
    assert!(BAD.len() >= 25);
    let mut wrong = Vec::new();
    for (yaml, field) in BAD {
        match Config::from_yaml(yaml) {
            Ok(_) => wrong.push(format!("{yaml:?} was accepted")),
            Err(e) if !e.to_string().contains(field) => {
                wrong.push(format!("{yaml:?}: {e:?} does not name {field}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn run_and_check_config_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (yaml, field)) in BAD.iter().enumerate().step_by(6) {
        let path = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, yaml).expect("write");
        for args in [vec!["run", "--config"], vec!["check-config"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
                .args(&args)
                .arg(&path)
                // No cluster is reachable: the config must stop start-up before it is looked for.
                .env("KUBECONFIG", dir.path().join("none"))
                .env_remove("DEPLOY_WATCHDOG_CONFIG")
                .output()
                .expect("run the binary");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {yaml:?}: {stderr}");
            assert!(
                stderr.contains(field),
                "{args:?} {yaml:?}: {stderr} does not name {field}"
            );
        }
    }
}

#[test]
fn deeply_nested_yaml_is_refused_without_exhausting_the_stack() {
    for text in [
        format!("mode: {}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!("mode: {}", "{a: ".repeat(5_000)),
        (0..600).map(|i| format!("{}- \n", " ".repeat(i))).collect(),
    ] {
        let err = Config::from_yaml(&text).expect_err("refused");
        assert!(!err.to_string().is_empty());
    }
}
