//! What types cannot check: relations between fields, bounds that depend on another field,
//! URL templates.

use std::time::Duration;

use super::providers::{grouped_ok, site_ok};
use super::{Config, ConfigError, DurationLimit, VersionSource, fill};

impl Config {
    /// Every duration field, by its path, with the range it may take. A field that is off
    /// (the baseline, leader election) is not held to its lower bound. Each value is already
    /// within its type's range; what the check below adds is the lower bound of the Lease's
    /// durations and the baseline's look-back once they are on.
    pub fn durations(&self) -> Vec<(String, Duration, DurationLimit)> {
        use DurationLimit as L;
        let off = |on: bool, limit: DurationLimit| DurationLimit {
            zero: limit.zero || !on,
            ..limit
        };
        let (w, j, le) = (&self.watch, &self.judge, &self.leader_election);
        let mut out: Vec<(String, Duration, DurationLimit)> = [
            ("watch.window", w.window.get(), L::ROLLOUT),
            ("watch.interval", w.interval.get(), L::PERIOD),
            ("watch.rollout_timeout", w.rollout_timeout.get(), L::ROLLOUT),
            ("watch.pending_timeout", w.pending_timeout.get(), L::ROLLOUT),
            ("watch.pod_grace", w.pod_grace.get(), L::DELAY),
            ("judge.sample_window", j.sample_window.get(), L::SAMPLE),
            (
                "judge.baseline.lookback",
                j.baseline.lookback.get(),
                off(j.baseline.enabled, L::ROLLOUT),
            ),
            ("health.timeout", self.health.timeout.get(), L::TIMEOUT),
            (
                "notify.pagerduty.timeout",
                self.notify.pagerduty.timeout.get(),
                L::TIMEOUT,
            ),
            (
                "notify.slack.timeout",
                self.notify.slack.timeout.get(),
                L::TIMEOUT,
            ),
            (
                "leader_election.lease_duration",
                le.lease_duration.get(),
                off(le.enabled, L::LEASE),
            ),
            (
                "leader_election.renew_deadline",
                le.renew_deadline.get(),
                off(le.enabled, L::LEASE),
            ),
            (
                "leader_election.retry_period",
                le.retry_period.get(),
                off(le.enabled, L::LEASE),
            ),
        ]
        .into_iter()
        .map(|(f, d, l)| (f.to_string(), d, l))
        .collect();
        for (i, s) in self.smoke.iter().enumerate() {
            out.push((format!("smoke[{i}].timeout"), s.timeout.get(), L::TIMEOUT));
        }
        if let Some(p) = &self.providers.prometheus {
            out.push((
                "providers.prometheus.timeout".into(),
                p.timeout.get(),
                L::TIMEOUT,
            ));
            out.push((
                "providers.prometheus.scrape_interval".into(),
                p.scrape_interval.get(),
                L::PERIOD,
            ));
        }
        if let Some(d) = &self.providers.datadog {
            out.push((
                "providers.datadog.timeout".into(),
                d.timeout.get(),
                L::TIMEOUT,
            ));
            out.push((
                "providers.datadog.ingestion_delay".into(),
                d.ingestion_delay.get(),
                L::DELAY,
            ));
        }
        out
    }

    /// Checks what types cannot: ranges, relations between fields, URL templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| ConfigError::Invalid {
            field: field.into(),
            problem,
        };
        for (field, d, limit) in self.durations() {
            limit.check(d).map_err(|p| bad(&field, p))?;
        }
        if self.watch.interval.get() > self.watch.window.get() {
            return Err(bad(
                "watch.interval",
                format!(
                    "{} is longer than watch.window ({}): the window would see no sample",
                    humantime::format_duration(self.watch.interval.get()),
                    humantime::format_duration(self.watch.window.get())
                ),
            ));
        }
        let t = self.judge.error_rate_threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(bad(
                "judge.error_rate_threshold",
                format!("{t} is not a ratio between 0 and 1 (0.01 is 1 %)"),
            ));
        }
        if !(self.judge.baseline.factor.is_finite() && self.judge.baseline.factor >= 1.0) {
            return Err(bad(
                "judge.baseline.factor",
                format!("{} must be 1.0 or more", self.judge.baseline.factor),
            ));
        }
        labels_selector_ok(&self.watch.selector).map_err(|p| bad("watch.selector", p))?;
        for (i, ns) in self.watch.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return Err(bad(
                    &format!("watch.namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        if self.cluster_name.trim().is_empty() {
            return Err(bad("cluster_name", "must not be empty".into()));
        }
        if self.health.enabled {
            for (field, pointer) in [
                ("health.version_pointer", &self.health.version_pointer),
                ("health.checks_pointer", &self.health.checks_pointer),
            ] {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(bad(
                        field,
                        format!("{pointer:?} is not a JSON pointer (it starts with /)"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.smoke.iter().enumerate() {
            let field = |f: &str| format!("smoke[{i}].{f}");
            if s.name.trim().is_empty() {
                return Err(bad(&field("name"), "must not be empty".into()));
            }
            if !names.insert(&s.name) {
                return Err(bad(&field("name"), format!("{:?} is used twice", s.name)));
            }
        }
        if let Some(p) = &self.providers.prometheus {
            for (field, q) in [
                ("providers.prometheus.requests_query", &p.requests_query),
                ("providers.prometheus.errors_query", &p.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if p.grouped.enabled {
                grouped_ok(
                    "providers.prometheus.grouped",
                    [&p.grouped.requests_query, &p.grouped.errors_query],
                    &[
                        ("namespace_label", &p.grouped.namespace_label),
                        ("deployment_label", &p.grouped.deployment_label),
                    ],
                )?;
            }
        }
        if let Some(d) = &self.providers.datadog {
            site_ok(&d.site).map_err(|e| bad("providers.datadog.site", e))?;
            let segment = |s: &str| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && !s.ends_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            };
            if !segment(&d.operation) {
                return Err(bad(
                    "providers.datadog.operation",
                    format!(
                        "{:?} is not an APM operation name (e.g. http.request, web.request)",
                        d.operation
                    ),
                ));
            }
            if let Some(env) = &d.env
                && (env.trim().is_empty() || env.contains([',', '{', '}', ' ']))
            {
                return Err(bad(
                    "providers.datadog.env",
                    format!("{env:?} is not a Datadog tag value"),
                ));
            }
            let service = fill(&d.service, "namespace", "name", &[]);
            if service.trim().is_empty()
                || service.contains([',', '{', '}', ' ', '(', ')', '"', '!'])
            {
                return Err(bad(
                    "providers.datadog.service",
                    format!(
                        "{:?} does not make a Datadog tag value of a Deployment's {{name}} and {{namespace}}",
                        d.service
                    ),
                ));
            }
            for (field, q) in [
                ("providers.datadog.requests_query", &d.requests_query),
                ("providers.datadog.errors_query", &d.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if d.grouped.enabled {
                // An empty namespace tag tells the series apart by the name tag alone.
                grouped_ok(
                    "providers.datadog.grouped",
                    [&d.grouped.requests_query, &d.grouped.errors_query],
                    &[("name_tag", &d.grouped.name_tag)],
                )?;
            }
        }
        let le = &self.leader_election;
        if le.enabled {
            if le.renew_deadline.get() >= le.lease_duration.get() {
                return Err(bad(
                    "leader_election.renew_deadline",
                    "must be shorter than lease_duration: a leader must stop before another may start".into(),
                ));
            }
            if le.retry_period.get() >= le.renew_deadline.get() {
                return Err(bad(
                    "leader_election.retry_period",
                    "must be shorter than renew_deadline".into(),
                ));
            }
        }
        crate::peak::PeakHours::from_config(&self.peak_hours).map_err(|(f, p)| bad(&f, p))?;
        if self.version.key.trim().is_empty() && self.version.source != VersionSource::Image {
            return Err(bad("version.key", "must name a label or annotation".into()));
        }
        crate::notify::pagerduty::endpoint(&self.notify.pagerduty.url)
            .map_err(|p| bad("notify.pagerduty.url", p))?;
        Ok(())
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn labels_selector_ok(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("must not be empty: an empty selector would opt in every Deployment".into());
    }
    for term in selector.split(',') {
        let term = term.trim();
        let key = term.split(['=', '!', ' ']).next().unwrap_or_default();
        if key.is_empty() {
            return Err(format!("{term:?} is not a label selector term"));
        }
    }
    Ok(())
}
