//! The Grafana dashboards shipped in the chart (`helm/deploy-watchdog/dashboards/*.json`) hold
//! what Grafana's dashboard schema requires at the `schemaVersion` they declare (Grafana's
//! dashboard kind: `editable`, `graphTooltip` and `schemaVersion` on the dashboard; a non-empty
//! `type`, `options`, `fieldConfig.defaults`/`overrides` and `transformations` on each panel; a
//! grid position inside the 24-column grid; `id` and `panels` on rows; `type` and `name` on
//! each variable), plus what this project asks of them: unique panel ids, every query on the
//! `${datasource}` variable (never a data source UID of one Grafana), a PromQL `expr` and a
//! unique `refId` per target, and only metrics the daemon exports.
//!
//! That every query returns data from a real Prometheus scraping the daemon is
//! `tests/dashboard_prometheus.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use deploy_watchdog::check::Provider;
use deploy_watchdog::judge::{ProbeRound, ProviderSample};
use deploy_watchdog::telemetry::{CheckReading, Metrics};
use serde_json::Value;

/// The schema version the dashboards are written for: Grafana 10.3 and later load it as it is
/// (newer Grafanas migrate it forward on load).
const SCHEMA_VERSION: u64 = 39;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/deploy-watchdog/dashboards");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p, v)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no dashboards in {}", dir.display());
    found
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is a list") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

/// The names of the metric families the daemon exports, every labelled one made to appear.
fn exported_metrics() -> BTreeSet<String> {
    let registry = prometheus::Registry::new();
    let m = Metrics::register(&registry).unwrap();
    m.detected();
    m.watch_restart("deployments");
    m.provider_sample("prometheus", Instant::now(), &ProviderSample::NoData);
    m.probe_round(&ProbeRound {
        providers: vec![(Provider::Prometheus, ProviderSample::NoData)],
        ..Default::default()
    });
    m.task_panic("session");
    m.leader_election_failure("renew", "timeout");
    let mut gauges = m.check_gauges("shop", "web");
    gauges.update(&[CheckReading {
        check: "error_rate_prometheus",
        value: Some(0.0),
        threshold: Some(0.01),
        failing: false,
    }]);
    let mut names = BTreeSet::new();
    for f in registry.gather() {
        let name = f.name().to_string();
        if f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for suffix in ["_bucket", "_count", "_sum"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name);
        }
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("deploy_watchdog_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn object<'a>(v: &'a Value, what: &str) -> &'a serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} must be an object: {v}"))
}

#[test]
fn every_dashboard_holds_what_its_schema_version_requires() {
    let exported = exported_metrics();
    for (path, d) in dashboards() {
        let file = path.display().to_string();
        assert_eq!(
            d["schemaVersion"].as_u64(),
            Some(SCHEMA_VERSION),
            "{file}: schemaVersion"
        );
        assert!(d["editable"].is_boolean(), "{file}: editable");
        assert!(
            matches!(d["graphTooltip"].as_u64(), Some(0..=2)),
            "{file}: graphTooltip is 0, 1 or 2"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(
            (1..=40).contains(&uid.len())
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{file}: uid {uid:?} (at most 40 letters, digits, - or _)"
        );
        assert!(
            d["id"].is_null(),
            "{file}: no id: Grafana assigns it on import"
        );
        for k in ["from", "to"] {
            assert!(d["time"][k].is_string(), "{file}: time.{k}");
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            for k in ["name", "iconColor"] {
                assert!(a[k].is_string(), "{file}: annotation {k}: {a}");
            }
            assert!(a["enable"].is_boolean(), "{file}: annotation enable");
            object(&a["datasource"], "an annotation's datasource");
        }

        // Template variables: a datasource variable of Prometheus; the others query through it.
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let mut names = HashSet::new();
        for v in vars {
            let name = v["name"].as_str().expect("a variable has a name");
            assert!(names.insert(name), "{file}: variable {name} twice");
            let kind = v["type"].as_str().unwrap_or_default();
            assert!(
                [
                    "query",
                    "adhoc",
                    "constant",
                    "datasource",
                    "interval",
                    "textbox",
                    "custom"
                ]
                .contains(&kind),
                "{file}: variable {name} has type {kind:?}"
            );
            assert!(
                matches!(v["hide"].as_u64(), Some(0..=2)),
                "{file}: variable {name}: hide"
            );
            if kind == "query" {
                assert_eq!(
                    v["datasource"],
                    serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
                    "{file}: variable {name} queries the chosen data source"
                );
            }
        }
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no `datasource` variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");

        // Panels.
        let mut ids = HashSet::new();
        let mut cells: HashSet<(u64, u64)> = HashSet::new();
        let panels = all_panels(&d);
        assert!(panels.len() > 5, "{file}: {} panels", panels.len());
        for p in panels {
            let id = p["id"]
                .as_u64()
                .filter(|i| u32::try_from(*i).is_ok())
                .unwrap_or_else(|| panic!("{file}: a panel without a uint32 id: {}", p["title"]));
            let title = p["title"].as_str().unwrap_or_default();
            let at = format!("{file}: panel {id} ({title})");
            assert!(ids.insert(id), "{at}: id used twice");
            assert!(!title.is_empty(), "{at}: a title");
            let kind = p["type"].as_str().unwrap_or_default();
            assert!(!kind.is_empty(), "{at}: type may not be empty");
            let g = object(&p["gridPos"], "gridPos");
            let n = |k: &str| {
                g.get(k)
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| panic!("{at}: gridPos.{k}"))
            };
            let (h, w, x, y) = (n("h"), n("w"), n("x"), n("y"));
            assert!(h > 0, "{at}: gridPos.h > 0");
            assert!((1..=24).contains(&w), "{at}: gridPos.w in 1..=24");
            assert!(x < 24 && x + w <= 24, "{at}: inside the 24 columns");
            for row in y..y + h {
                for col in x..x + w {
                    assert!(cells.insert((row, col)), "{at}: overlaps another panel");
                }
            }
            if kind == "row" {
                assert!(p["panels"].is_array(), "{at}: a row lists its panels");
                assert!(p["collapsed"].is_boolean(), "{at}: collapsed");
                continue;
            }
            object(&p["options"], "options");
            object(&p["fieldConfig"]["defaults"], "fieldConfig.defaults");
            assert!(
                p["fieldConfig"]["overrides"].is_array(),
                "{at}: fieldConfig.overrides"
            );
            assert!(p["transformations"].is_array(), "{at}: transformations");
            for t in p["transformations"].as_array().unwrap() {
                assert!(t["id"].is_string(), "{at}: a transformation's id");
                assert!(
                    t.get("options").is_some(),
                    "{at}: a transformation's options"
                );
            }
            assert_eq!(
                p["datasource"],
                serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
                "{at}: the panel's datasource is the variable"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{at}: no query");
            let mut refs = HashSet::new();
            for t in targets {
                let r = t["refId"].as_str().expect("refId");
                assert!(refs.insert(r), "{at}: refId {r} twice");
                assert_eq!(t["datasource"], p["datasource"], "{at} {r}: datasource");
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{at} {r}: an expr");
                let used = metric_names(expr);
                assert!(!used.is_empty(), "{at} {r}: no deploy_watchdog metric");
                for m in used {
                    assert!(
                        exported.contains(&m),
                        "{at} {r}: {m} is not a metric the daemon exports"
                    );
                }
            }
        }
        // No data source UID of one Grafana anywhere.
        let text = serde_json::to_string(&d).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"uid\":\"") {
            let tail = &rest[i + 7..];
            let value = &tail[..tail.find('"').unwrap()];
            assert!(
                ["${datasource}", "-- Grafana --", uid].contains(&value),
                "{file}: a hard-coded uid {value:?}"
            );
            rest = tail;
        }
    }
}

#[test]
fn the_dashboard_shows_what_the_chart_documents() {
    // The panels the chart's README promises, by the metric each needs.
    let (_, d) = dashboards().into_iter().next().unwrap();
    let exprs: Vec<String> = all_panels(&d)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_string())
        .collect();
    for needed in [
        "deploy_watchdog_watches_active",
        "deploy_watchdog_rollout_outcomes_total",
        "deploy_watchdog_time_to_action_seconds_bucket",
        "deploy_watchdog_provider_request_duration_seconds_count",
        "deploy_watchdog_pages_total",
        "deploy_watchdog_notifications_total",
        "deploy_watchdog_kube_api_errors_total",
        "deploy_watchdog_gitops_paused_owners",
        "deploy_watchdog_check_value",
        "deploy_watchdog_check_threshold",
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| metric_names(e).iter().any(|m| m == needed)),
            "no panel shows {needed}"
        );
    }
}
