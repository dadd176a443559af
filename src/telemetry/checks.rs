//! The per-check gauges of the rollouts under watch now: a value, a threshold and a failing
//! flag per check, labelled with the Deployment, their series removed when the watch ends.

use std::collections::BTreeSet;

use prometheus::{GaugeVec, IntGaugeVec};

use super::metrics::Metrics;

impl Metrics {
    /// The per-check gauges of the rollout `namespace/deployment`; its series go when they drop.
    pub fn check_gauges(&self, namespace: &str, deployment: &str) -> CheckGauges {
        CheckGauges {
            value: self.check_value.clone(),
            threshold: self.check_threshold.clone(),
            failing: self.check_failing.clone(),
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            valued: BTreeSet::new(),
            limited: BTreeSet::new(),
        }
    }
}

/// Labels of the per-check gauges. Not `namespace`: a scrape through a ServiceMonitor sets that
/// label to the daemon's own namespace.
pub(super) const CHECK_LABELS: [&str; 3] = ["deployment_namespace", "deployment", "check"];

/// One check's latest reading for the per-check gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReading {
    /// `error_rate_prometheus`, `error_rate_datadog`, `health` or `smoke`: never a user's name.
    pub check: &'static str,
    /// `None`: no value (no data, the provider unavailable, no traffic): the series is removed.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub failing: bool,
}

/// The per-check gauges of one rollout under watch. Each [`CheckGauges::update`] sets the checks
/// read and removes those without a value; dropping it removes every series it set.
pub struct CheckGauges {
    value: GaugeVec,
    threshold: GaugeVec,
    failing: IntGaugeVec,
    namespace: String,
    deployment: String,
    /// Checks with a value (and a failing) series.
    valued: BTreeSet<&'static str>,
    /// Checks with a threshold series.
    limited: BTreeSet<&'static str>,
}

impl CheckGauges {
    pub fn update(&mut self, readings: &[CheckReading]) {
        let (mut valued, mut limited) = (BTreeSet::new(), BTreeSet::new());
        for r in readings {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), r.check];
            let Some(value) = r.value else {
                continue;
            };
            self.value.with_label_values(&labels).set(value);
            self.failing
                .with_label_values(&labels)
                .set(i64::from(r.failing));
            valued.insert(r.check);
            if let Some(t) = r.threshold {
                self.threshold.with_label_values(&labels).set(t);
                limited.insert(r.check);
            }
        }
        for check in self.valued.difference(&valued) {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), check];
            let _ = self.value.remove_label_values(&labels);
            let _ = self.failing.remove_label_values(&labels);
        }
        for check in self.limited.difference(&limited) {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), check];
            let _ = self.threshold.remove_label_values(&labels);
        }
        self.valued = valued;
        self.limited = limited;
    }
}

impl Drop for CheckGauges {
    fn drop(&mut self) {
        self.update(&[]);
    }
}
