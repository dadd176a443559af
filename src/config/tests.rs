use std::time::Duration;

use super::*;

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = Config::from_yaml("").expect("defaults are valid");
    assert_eq!(c, Config::default());
    assert_eq!(c.watch.window, Duration::from_secs(900));
    assert_eq!(c.judge.error_rate_threshold, 0.01);
    assert_eq!(c.judge.failures_before_rollback.get(), 3);
}

#[test]
fn scenario_style_config_merges_over_defaults() {
    let c = Config::from_yaml(
        "mode: dry_run\nwatch: {window: 4s, interval: 100ms}\njudge: {baseline: {enabled: true, lookback: 1s}}\n",
    )
    .expect("valid");
    assert_eq!(c.mode, Mode::DryRun);
    assert_eq!(c.watch.window, Duration::from_secs(4));
    assert_eq!(c.watch.interval, Duration::from_millis(100));
    assert_eq!(c.watch.rollout_timeout, Duration::from_secs(600));
    assert!(c.judge.baseline.enabled);
    assert_eq!(c.judge.baseline.factor, 2.0);
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        ("watch: {window: soon}", "watch.window"),
        ("watch: {windw: 4s}", "watch"),
        (
            "judge: {error_rate_threshold: 5}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {failures_before_rollback: 0}",
            "judge.failures_before_rollback",
        ),
        ("judge: {min_requests: -1}", "judge.min_requests"),
        ("mode: yolo", "mode"),
        ("watch: {interval: 1h, window: 1m}", "watch.interval"),
        ("health: {url: 'not a url'}", "health.url"),
        ("smoke: [{name: home, url: 'ftp://x/'}]", "smoke[0].url"),
        (
            "smoke: [{name: a, url: 'http://x/'}, {name: a, url: 'http://y/'}]",
            "smoke[1].name",
        ),
        ("watch: {namespaces: [Prod]}", "watch.namespaces[0]"),
        ("judge: {baseline: {factor: 0.5}}", "judge.baseline.factor"),
        ("providers: {graphite: {}}", "providers"),
        ("server: {listen: 'localhost'}", "server.listen"),
        ("server: {port: 9464}", "server"),
    ];
    for (yaml, field) in cases {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
    }
}

#[test]
fn a_window_under_four_scrapes_is_warned_about() {
    let warnings = |yaml: &str| Config::from_yaml(yaml).expect("valid").warnings();
    // The defaults: a 4m window over a 1m scrape.
    assert!(warnings("providers: {prometheus: {}}").is_empty());
    assert!(
        warnings("judge: {sample_window: 1m}").is_empty(),
        "no Prometheus"
    );
    let w = warnings("judge: {sample_window: 1m}\nproviders: {prometheus: {}}");
    assert!(
        w.len() == 1 && w[0].contains("judge.sample_window 1m holds fewer than two scrapes"),
        "{w:?}"
    );
    let w = warnings("judge: {sample_window: 2m}\nproviders: {prometheus: {}}");
    assert!(w.len() == 1 && w[0].contains("is under 4 scrapes"), "{w:?}");
    let w = warnings(
        "judge: {sample_window: 1m, baseline: {enabled: true, lookback: 30s}}\nproviders: {prometheus: {scrape_interval: 15s}}",
    );
    assert!(
        w.len() == 1 && w[0].starts_with("judge.baseline.lookback 30s"),
        "{w:?}"
    );
}

#[test]
fn naming_a_provider_enables_it_with_its_defaults() {
    let c = Config::from_yaml("providers: {datadog: {}}").expect("valid");
    assert_eq!(c.providers.datadog, Some(DatadogConfig::default()));
    assert_eq!(c.providers.prometheus, None);
    let c = Config::from_yaml("providers: {prometheus: {}, datadog: {}}").expect("valid");
    assert!(c.providers.prometheus.is_some() && c.providers.datadog.is_some());
}

#[test]
fn datadog_grouping_stands_for_the_per_deployment_queries_only_when_it_asks_the_same() {
    let d = |yaml: &str| {
        Config::from_yaml(yaml)
            .expect("valid")
            .providers
            .datadog
            .expect("datadog")
    };
    let defaults = d("providers: {datadog: {}}");
    assert_eq!(defaults.grouping(), Some(&DatadogGrouped::default()));
    assert_eq!(
        d("providers: {datadog: {grouped: {enabled: false}}}").grouping(),
        None
    );
    // Only the per-Deployment queries changed: the grouped defaults no longer ask the same.
    let own = "requests_query: 'sum:my.hits{service:{name}}.as_count()'";
    assert_eq!(
        d(&format!("providers: {{datadog: {{{own}}}}}")).grouping(),
        None
    );
    let both = d(&format!(
        "providers: {{datadog: {{{own}, grouped: {{requests_query: 'sum:my.hits{{service IN ({{names}})}} by {{kube_namespace,service}}.as_count()'}}}}}}"
    ));
    assert!(
        both.grouping()
            .is_some_and(|g| g.requests_query.starts_with("sum:my.hits"))
    );
    // Off, its queries are not checked.
    assert!(
        Config::from_yaml("providers: {datadog: {grouped: {enabled: false, requests_query: ''}}}")
            .is_ok()
    );
}

#[test]
fn datadog_settings_good_and_bad() {
    let good = [
        ("providers: {datadog: {}}", "https://api.datadoghq.com"),
        (
            "providers: {datadog: {site: datadoghq.eu}}",
            "https://api.datadoghq.eu",
        ),
        (
            "providers: {datadog: {site: us5.datadoghq.com}}",
            "https://api.us5.datadoghq.com",
        ),
        (
            "providers: {datadog: {site: ap2.datadoghq.com}}",
            "https://api.ap2.datadoghq.com",
        ),
        (
            "providers: {datadog: {site: app.ddog-gov.com}}",
            "https://api.ddog-gov.com",
        ),
        (
            "providers: {datadog: {site: datadog.internal.example}}",
            "https://api.datadog.internal.example",
        ),
        (
            "providers: {datadog: {url: 'http://127.0.0.1:8126/', operation: web.request, env: prod, timeout: 2s}}",
            "http://127.0.0.1:8126",
        ),
    ];
    for (yaml, base) in good {
        let c = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        let d = c.providers.datadog.expect("enabled");
        assert_eq!(d.base_url(), base, "{yaml}");
    }
    let bad = [
        (
            "providers: {datadog: {site: 'not a site'}}",
            "providers.datadog.site",
        ),
        (
            "providers: {datadog: {site: localhost}}",
            "providers.datadog.site",
        ),
        (
            "providers: {datadog: {site: 'https://api.datadoghq.com'}}",
            "providers.datadog.site",
        ),
        (
            "providers: {datadog: {url: 'ftp://x'}}",
            "providers.datadog.url",
        ),
        (
            "providers: {datadog: {operation: 'http request'}}",
            "providers.datadog.operation",
        ),
        (
            "providers: {datadog: {operation: ''}}",
            "providers.datadog.operation",
        ),
        (
            "providers: {datadog: {env: 'a,b'}}",
            "providers.datadog.env",
        ),
        (
            "providers: {datadog: {timeout: 0s}}",
            "providers.datadog.timeout",
        ),
        (
            "providers: {datadog: {errors_query: ' '}}",
            "providers.datadog.errors_query",
        ),
        ("providers: {datadog: {api_key: abc}}", "providers.datadog"),
    ];
    for (yaml, field) in bad {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
    }
}

/// A routing key of PagerDuty's form: 32 letters and digits.
const ROUTING_KEY: &str = "R0UTING0KEY0OF0THIRTY0TWO0CHARS0";

#[test]
fn datadog_without_keys_is_a_config_error_naming_the_secret() {
    let c = Config::from_yaml("providers: {datadog: {}}").expect("valid");
    let none = Secrets::default();
    let err = none.check(&c).expect_err("no keys").to_string();
    assert!(err.contains("secrets.datadog_api_key_file") && err.contains("DD_API_KEY"));
    let api_only = Secrets {
        datadog_api_key: Some("k".into()),
        ..Secrets::default()
    };
    let err = api_only.check(&c).expect_err("no app key").to_string();
    assert!(err.contains("secrets.datadog_app_key_file") && err.contains("DD_APP_KEY"));
    let both = Secrets {
        datadog_api_key: Some("k".into()),
        datadog_app_key: Some("a".into()),
        pagerduty_routing_key: Some(ROUTING_KEY.into()),
        ..Secrets::default()
    };
    assert!(both.check(&c).is_ok());
    let dry_run = Config::from_yaml("mode: dry_run").expect("valid");
    assert!(none.check(&dry_run).is_ok());
}

#[test]
fn enforce_without_any_notification_sink_is_refused_unless_allowed() {
    let enforce = Config::default();
    let err = Secrets::default()
        .check(&enforce)
        .expect_err("silent enforce")
        .to_string();
    for needle in [
        "config field `notify`",
        "PagerDuty",
        "DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY",
        "secrets.pagerduty_routing_key_file",
        "Slack",
        "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL",
        "secrets.slack_webhook_url_file",
        "notify.allow_silent: true",
    ] {
        assert!(err.contains(needle), "{err} does not name {needle}");
    }
    // A key for a sink the config disables is no sink either.
    let disabled =
        Config::from_yaml("notify: {pagerduty: {enabled: false}, slack: {enabled: false}}")
            .expect("valid");
    let keys = Secrets {
        pagerduty_routing_key: Some(ROUTING_KEY.into()),
        slack_webhook_url: Some("https://hooks.example/x".into()),
        ..Secrets::default()
    };
    assert!(keys.check(&disabled).is_err());
    assert!(keys.check(&enforce).is_ok());
    for one in [
        Secrets {
            pagerduty_routing_key: Some(ROUTING_KEY.into()),
            ..Secrets::default()
        },
        Secrets {
            slack_webhook_url: Some("https://hooks.example/x".into()),
            ..Secrets::default()
        },
    ] {
        assert!(one.check(&enforce).is_ok(), "{one:?}");
    }
    let allowed = Config::from_yaml("notify: {allow_silent: true}").expect("valid");
    assert!(Secrets::default().check(&allowed).is_ok());
    let dry_run = Config::from_yaml("mode: dry_run").expect("valid");
    assert!(Secrets::default().check(&dry_run).is_ok());
}

#[test]
fn sink_states_say_what_is_missing_and_never_the_secret() {
    let c = Config::from_yaml(
        "notify: {slack: {enabled: false}}\nsecrets: {pagerduty_routing_key_file: /nonexistent/pd-key}",
    )
    .expect("valid");
    let secrets = Secrets::load(&c.secrets).expect("an absent file is an unset secret");
    assert!(secrets.pagerduty_routing_key.is_none());
    let [pd, slack] = secrets.sink_states(&c);
    assert!(
        !pd.on && pd.detail.contains("/nonexistent/pd-key"),
        "{pd:?}"
    );
    assert!(!slack.on && slack.detail.contains("disabled"), "{slack:?}");
    let on = Secrets {
        pagerduty_routing_key: Some("SECRET-KEY".into()),
        ..Secrets::default()
    };
    let [pd, _] = on.sink_states(&c);
    assert!(pd.on && pd.detail == "on", "{pd:?}");
}

#[test]
fn check_config_warns_when_the_file_names_no_sink() {
    let warning = Config::default().silent_warning().expect("a warning");
    assert!(warning.contains("PagerDuty") && warning.contains("notify.allow_silent"));
    for quiet in [
        "mode: dry_run",
        "notify: {allow_silent: true}",
        "secrets: {slack_webhook_url_file: /run/secrets/slack}",
        "secrets: {pagerduty_routing_key_file: /run/secrets/pd}",
    ] {
        let c = Config::from_yaml(quiet).expect(quiet);
        assert_eq!(c.silent_warning(), None, "{quiet}");
    }
    let disabled = Config::from_yaml(
        "notify: {pagerduty: {enabled: false}}\nsecrets: {pagerduty_routing_key_file: /run/secrets/pd}",
    )
    .expect("valid");
    assert!(disabled.silent_warning().is_some());
}

#[test]
fn datadog_keys_come_from_their_files() {
    let dir = std::env::temp_dir().join(format!("dw-dd-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (api, app) = (dir.join("api"), dir.join("app"));
    std::fs::write(&api, "APIKEY\n").expect("write");
    std::fs::write(&app, "APPKEY").expect("write");
    let files = SecretFiles {
        datadog_api_key_file: Some(api),
        datadog_app_key_file: Some(app),
        ..SecretFiles::default()
    };
    let s = Secrets::load(&files).expect("readable");
    assert_eq!(s.datadog_api_key.as_deref(), Some("APIKEY"));
    assert_eq!(s.datadog_app_key.as_deref(), Some("APPKEY"));
    let missing = SecretFiles {
        datadog_api_key_file: Some(dir.join("nope")),
        ..SecretFiles::default()
    };
    // An absent file is an unset key: a provider that needs it is refused, naming the file.
    let absent = Secrets::load(&missing).expect("an absent file is an unset key");
    assert!(absent.datadog_api_key.is_none());
    let mut config = Config::from_yaml("providers: {datadog: {}}").expect("valid");
    config.secrets = missing;
    let err = Secrets::load_for(&config)
        .expect_err("missing key")
        .to_string();
    assert!(
        err.contains("secrets.datadog_api_key_file") && err.contains("nope"),
        "{err}"
    );
    // A file that cannot be read is an error, not an unset key.
    let unreadable = SecretFiles {
        datadog_api_key_file: Some(dir.clone()),
        ..SecretFiles::default()
    };
    let err = Secrets::load(&unreadable)
        .expect_err("a directory")
        .to_string();
    assert!(err.contains("secrets.datadog_api_key_file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fill_replaces_placeholders() {
    assert_eq!(
        fill(
            "http://{name}.{namespace}.svc/{x}",
            "prod",
            "app",
            &[("x", "health")]
        ),
        "http://app.prod.svc/health"
    );
}

#[test]
fn a_routing_key_pagerduty_would_refuse_stops_start_up_without_showing_it() {
    let with = |key: &str| Secrets {
        pagerduty_routing_key: Some(key.into()),
        ..Secrets::default()
    };
    let config = Config::default();
    for key in ["u+REST0API0KEY000000", "R0UTING0KEY0SIMULATED0000000000"] {
        let err = with(key).check(&config).expect_err("refused").to_string();
        assert!(err.contains("secrets.pagerduty_routing_key_file"), "{err}");
        assert!(!err.contains(key), "{err}");
    }
    assert!(
        with("0123456789abcdef0123456789abcdef")
            .check(&config)
            .is_ok()
    );
    let mut off = Config::default();
    off.notify.pagerduty.enabled = false;
    off.notify.allow_silent = true;
    assert!(with("short").check(&off).is_ok(), "not paging: not checked");
}

#[test]
fn secrets_are_not_printed_by_debug() {
    let s = Secrets {
        pagerduty_routing_key: Some("R0UT1NGKEY".into()),
        slack_webhook_url: None,
        datadog_api_key: Some("DDAPIKEY0123".into()),
        datadog_app_key: Some("DDAPPKEY0123".into()),
    };
    let shown = format!("{s:?}");
    assert!(!shown.contains("R0UT1NGKEY"));
    assert!(!shown.contains("DDAPIKEY0123") && !shown.contains("DDAPPKEY0123"));
    assert!(shown.contains("<redacted>"));
}

/// Every duration field's path and a config that sets it to `{}`, with whatever turns the
/// field on.
const DURATION_FIELDS: &[(&str, &str)] = &[
    ("watch.window", "watch: {window: '{}'}"),
    ("watch.interval", "watch: {interval: '{}'}"),
    ("watch.rollout_timeout", "watch: {rollout_timeout: '{}'}"),
    ("watch.pending_timeout", "watch: {pending_timeout: '{}'}"),
    ("judge.sample_window", "judge: {sample_window: '{}'}"),
    (
        "judge.baseline.lookback",
        "judge: {baseline: {enabled: true, lookback: '{}'}}",
    ),
    ("health.timeout", "health: {timeout: '{}'}"),
    (
        "smoke[0].timeout",
        "smoke: [{name: home, url: 'http://x/', timeout: '{}'}]",
    ),
    (
        "providers.prometheus.timeout",
        "providers: {prometheus: {timeout: '{}'}}",
    ),
    (
        "providers.prometheus.scrape_interval",
        "providers: {prometheus: {scrape_interval: '{}'}}",
    ),
    (
        "providers.datadog.timeout",
        "providers: {datadog: {timeout: '{}'}}",
    ),
    (
        "providers.datadog.ingestion_delay",
        "providers: {datadog: {ingestion_delay: '{}'}}",
    ),
    (
        "notify.pagerduty.timeout",
        "notify: {pagerduty: {timeout: '{}'}}",
    ),
    ("notify.slack.timeout", "notify: {slack: {timeout: '{}'}}"),
    (
        "leader_election.lease_duration",
        "leader_election: {enabled: true, lease_duration: '{}'}",
    ),
    (
        "leader_election.renew_deadline",
        "leader_election: {enabled: true, renew_deadline: '{}'}",
    ),
    (
        "leader_election.retry_period",
        "leader_election: {enabled: true, retry_period: '{}'}",
    ),
];

#[test]
fn every_duration_field_refuses_extreme_values_by_name() {
    for (field, template) in DURATION_FIELDS {
        for value in [
            // Longer than any deadline can be: `now + 500000000000y` overflows the clock.
            "500000000000y",
            // Not even a duration: humantime's own overflow.
            "99999999999999999999999999s",
            "8d",
            "-5m",
            "5 parsecs",
            "10",
            "",
        ] {
            let yaml = template.replace("{}", value);
            let err = Config::from_yaml(&yaml).expect_err(&yaml).to_string();
            assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
        }
        let zero = template.replace("{}", "0s");
        let zero_ok = *field == "providers.datadog.ingestion_delay";
        assert_eq!(
            Config::from_yaml(&zero).is_ok(),
            zero_ok,
            "{zero}: 0s allowed only where no delay is a delay"
        );
    }
}

#[test]
fn every_duration_field_has_a_maximum_that_keeps_deadlines_representable() {
    let c = Config::default();
    let fields: Vec<String> = c.durations().into_iter().map(|(f, _, _)| f).collect();
    for (field, _) in DURATION_FIELDS {
        // smoke checks and providers appear only when configured.
        let listed = fields.contains(&field.to_string())
            || field.starts_with("smoke[")
            || field.starts_with("providers.");
        assert!(listed, "{field} is not checked");
    }
    for (field, d, limit) in c.durations() {
        assert_eq!(limit.check(d), Ok(()), "default {field}");
        assert!(
            tokio::time::Instant::now().checked_add(limit.max).is_some(),
            "{field}"
        );
        let over = limit.max + Duration::from_secs(1);
        assert!(limit.check(over).is_err(), "{field} {over:?}");
    }
}

#[test]
fn a_duration_past_the_clock_cannot_exist_and_every_deadline_is_representable() {
    let now = tokio::time::Instant::now();
    let huge = humantime::parse_duration("500000000000y").expect("humantime reads it");
    assert!(now.checked_add(huge).is_none(), "the overflow this guards");
    // Out of bounds is refused however the value comes: text, a Duration, a config field.
    let err = RolloutSpan::parse("500000000000y").expect_err("refused");
    assert!(err.contains("longer than the maximum, 7days"), "{err}");
    assert!(RolloutSpan::try_from(huge).is_err());
    assert!(RolloutSpan::new(Duration::ZERO).is_err());
    assert!(Delay::new(Duration::ZERO).is_ok());
    let err = Config::from_yaml("watch: {rollout_timeout: 500000000000y}")
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("watch.rollout_timeout") && err.contains("7days"),
        "{err}"
    );
    // The longest value of each bounded type still makes a deadline.
    assert_eq!(
        deadline(now, RolloutSpan::MAX),
        now + Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        deadline(now, RolloutSpan::parse("3s").expect("valid")),
        now + Duration::from_secs(3)
    );
    for max in [
        Timeout::MAX.get(),
        Period::MAX.get(),
        Delay::MAX.get(),
        SampleSpan::MAX.get(),
        Lookback::MAX.get(),
        LeaseSpan::MAX.get(),
    ] {
        assert!(now.checked_add(max).is_some() && max <= RolloutSpan::MAX.get());
    }
}

#[test]
fn durations_read_and_write_as_humantime_text() {
    let c = Config::from_yaml("watch: {window: 1h 30m, pod_grace: 0s}").expect("valid");
    assert_eq!(c.watch.window, Duration::from_secs(5400));
    let text = serde_norway::to_string(&c.watch).expect("serialises");
    assert!(text.contains("window: 1h 30m"), "{text}");
    assert!(text.contains("pod_grace: 0s"), "{text}");
    let err = Config::from_yaml("watch: {window: 30}")
        .expect_err("a bare number is no duration")
        .to_string();
    assert!(err.contains("watch.window"), "{err}");
}

#[test]
fn urls_methods_and_statuses_are_checked_while_the_file_is_read() {
    let bad = [
        ("health: {url: ''}", "health.url"),
        ("health: {url: 'ftp://x/health'}", "health.url"),
        ("health: {url: '{name}/health'}", "health.url"),
        ("health: {expect_status: 0}", "health.expect_status"),
        ("health: {expect_status: 99}", "health.expect_status"),
        ("health: {expect_status: 600}", "health.expect_status"),
        ("health: {expect_status: 70000}", "health.expect_status"),
        ("health: {expect_status: -1}", "health.expect_status"),
        (
            "smoke: [{name: a, url: 'http://x/', method: get}]",
            "smoke[0].method",
        ),
        (
            "smoke: [{name: a, url: 'http://x/', method: ''}]",
            "smoke[0].method",
        ),
        (
            "smoke: [{name: a, url: 'http://x/', method: 'GE T'}]",
            "smoke[0].method",
        ),
        (
            "smoke: [{name: a, url: 'http://x/', method: FROB}]",
            "smoke[0].method",
        ),
        (
            "smoke: [{name: a, url: 'http://x/', expect_status: 1000}]",
            "smoke[0].expect_status",
        ),
        ("smoke: [{name: a, url: 'mailto:x@y'}]", "smoke[0].url"),
        (
            "providers: {prometheus: {url: 'prometheus:9090'}}",
            "providers.prometheus.url",
        ),
        (
            "providers: {prometheus: {url: ''}}",
            "providers.prometheus.url",
        ),
        (
            "providers: {datadog: {url: 'file:///etc'}}",
            "providers.datadog.url",
        ),
    ];
    for (yaml, field) in bad {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
    }
    let c = Config::from_yaml(
        "smoke: [{name: a, url: 'https://{name}.{namespace}.svc/x', method: HEAD, expect_status: 204}]",
    )
    .expect("valid");
    assert_eq!(c.smoke[0].method.get(), &http::Method::HEAD);
    assert_eq!(c.smoke[0].expect_status, 204);
    assert_eq!(c.smoke[0].url.fill("prod", "api"), "https://api.prod.svc/x");
    // Written back as they were read.
    let again = serde_norway::to_string(&c).expect("serialises");
    assert_eq!(Config::from_yaml(&again).expect("reads back"), c);
}

#[test]
fn the_defaults_written_in_code_are_valid_values() {
    let c = Config::default();
    assert!(UrlTemplate::parse(c.health.url.as_str()).is_ok());
    let p = PrometheusConfig::default();
    assert!(UrlTemplate::parse(p.url.as_str()).is_ok());
}

#[test]
fn numbers_refuse_extreme_values_by_name() {
    let bad = [
        (
            "judge: {error_rate_threshold: 0}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: -0.1}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: 1}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: 1e308}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: .nan}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: .inf}",
            "judge.error_rate_threshold",
        ),
        (
            "judge: {error_rate_threshold: ''}",
            "judge.error_rate_threshold",
        ),
        ("judge: {min_requests: -1}", "judge.min_requests"),
        ("judge: {min_requests: 1e30}", "judge.min_requests"),
        (
            "judge: {min_requests: 18446744073709551616}",
            "judge.min_requests",
        ),
        (
            "judge: {failures_before_rollback: 0}",
            "judge.failures_before_rollback",
        ),
        (
            "judge: {failures_before_rollback: -1}",
            "judge.failures_before_rollback",
        ),
        (
            "judge: {failures_before_rollback: 4294967296}",
            "judge.failures_before_rollback",
        ),
        ("judge: {inconclusive_limit: 0}", "judge.inconclusive_limit"),
        ("judge: {baseline: {factor: .inf}}", "judge.baseline.factor"),
        ("judge: {baseline: {factor: -2}}", "judge.baseline.factor"),
        ("cluster_name: ''", "cluster_name"),
        ("watch: {selector: ''}", "watch.selector"),
        ("watch: {namespaces: ['']}", "watch.namespaces[0]"),
    ];
    for (yaml, field) in bad {
        let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
        assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
    }
}

#[test]
fn gitops_durations_are_bounded_and_named() {
    for (yaml, field) in [
        (
            "gitops: {reminder_interval: 500000000000y}",
            "reminder_interval",
        ),
        ("gitops: {reminder_interval: 0s}", "reminder_interval"),
        (
            "gitops: {argocd_self_heal_timeout: 1h}",
            "argocd_self_heal_timeout",
        ),
    ] {
        let err = Config::from_yaml(yaml)
            .expect_err("out of its bounds")
            .to_string();
        assert!(err.contains(field), "{yaml}: {err}");
    }
    let c = Config::from_yaml("gitops: {reminder_interval: 2h, argocd_self_heal_timeout: 10s}")
        .expect("valid");
    assert_eq!(c.gitops.reminder_interval, Duration::from_secs(7200));
    assert_eq!(c.gitops.argocd_self_heal_timeout, Duration::from_secs(10));
}
