//! The figures of a run, as JSON and as a table.

use std::collections::BTreeMap;

use serde::Serialize;

/// Steady-state figures over one measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Steady {
    /// Rollouts watched at once.
    pub k: usize,
    pub rss_mib: f64,
    /// VmHWM at the end of the measurement.
    pub peak_rss_mib: f64,
    pub millicores: f64,
    /// API requests per minute by verb (GET, LIST, WATCH, PATCH, POST, …).
    pub requests_per_minute: BTreeMap<String, f64>,
    /// The same by "VERB resource".
    pub requests_per_minute_by_resource: BTreeMap<String, f64>,
    /// Prometheus queries per probe interval.
    pub prometheus_queries_per_interval: f64,
    /// Seconds from the K rollouts completing to the daemon's last API request before the
    /// measurement (its records, Events and watches for them).
    pub quiet_after_s: Option<f64>,
}

/// A latency distribution, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    /// Rollouts that got no action before the limit.
    pub missed: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Every sample, in the order of the rollouts measured (for the JSON output).
    pub all_ms: Vec<f64>,
}

/// The kubectl/curl loop on the same cluster.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reference {
    pub rollouts: usize,
    /// Crash-loop first seen → `kubectl rollout undo`'s PATCH.
    pub detection: Latency,
    /// API requests per rollout per minute while it watches.
    pub requests_per_rollout_minute: f64,
    /// API requests per rollout from the deploy to the undo (the loops ran 3 intervals before).
    pub requests_per_rollout: f64,
    /// Detection p50 of the loop / of the daemon.
    pub detection_ratio_p50: Option<f64>,
    /// Requests per rollout, deploy → rollback: the loop's / the daemon's.
    pub requests_ratio: Option<f64>,
}

/// Everything measured at one size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeReport {
    pub deployments: usize,
    pub pods: usize,
    /// Seeding three ReplicaSets per Deployment in the simulation (not the daemon).
    pub seed_s: f64,
    pub start_to_ready_s: f64,
    pub idle: Steady,
    pub watched: Vec<Steady>,
    pub peak_rss_mib: f64,
    /// Crash-looping pod appears → rollback PATCH arrives.
    pub crashloop_to_rollback: Latency,
    /// Breach visible → first action (rollback PATCH or page).
    pub breach_to_action: Latency,
    /// Breach visible → first action, minus failures_before_rollback × interval.
    pub breach_to_action_overhead: Latency,
    /// CPU of the daemon and of the simulation while the latencies were measured: both share
    /// the machine's cores, so a saturated simulation delays every answer the daemon waits for.
    pub latency_phase_millicores: (f64, f64),
    /// The daemon's API requests per rollout-minute at the largest K (idle subtracted).
    pub daemon_requests_per_rollout_minute: f64,
    /// The daemon's API requests per rollout, deploy → rollback (crash-loop measurement).
    pub daemon_requests_per_rollout: f64,
    pub reference: Reference,
    pub notes: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub machine: String,
    pub interval_ms: u64,
    pub measure_s: f64,
    pub sizes: Vec<SizeReport>,
}

fn verbs(m: &BTreeMap<String, f64>) -> String {
    if m.values().all(|v| *v < 0.05) {
        return "0".into();
    }
    m.iter()
        .filter(|(_, v)| **v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

/// A Markdown table: one row per figure, one column per size.
pub fn table(f: &Figures) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cell: &dyn Fn(&SizeReport) -> String| {
        rows.push((name.to_string(), f.sizes.iter().map(cell).collect()));
    };
    row("Deployments / Pods", &|s| {
        format!("{} / {}", s.deployments, s.pods)
    });
    row("start → ready (s)", &|s| {
        format!("{:.2}", s.start_to_ready_s)
    });
    row("RSS idle (MiB)", &|s| format!("{:.1}", s.idle.rss_mib));
    row("peak RSS, VmHWM (MiB)", &|s| {
        format!("{:.1}", s.peak_rss_mib)
    });
    row("CPU idle (millicores)", &|s| {
        format!("{:.1}", s.idle.millicores)
    });
    row("API requests/min idle", &|s| {
        verbs(&s.idle.requests_per_minute)
    });
    let ks: Vec<usize> = {
        let mut ks: Vec<usize> = f
            .sizes
            .iter()
            .flat_map(|s| s.watched.iter().map(|w| w.k))
            .collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    };
    for k in ks {
        let at = |s: &SizeReport| s.watched.iter().find(|w| w.k == k).cloned();
        row(&format!("RSS, K = {k} watched (MiB)"), &|s| {
            at(s).map_or("–".into(), |w| format!("{:.1}", w.rss_mib))
        });
        row(&format!("CPU, K = {k} watched (millicores)"), &|s| {
            at(s).map_or("–".into(), |w| format!("{:.1}", w.millicores))
        });
        row(
            &format!("API quiet after the rollouts, K = {k} (s)"),
            &|s| {
                at(s).map_or("–".into(), |w| {
                    w.quiet_after_s
                        .map_or("never".into(), |q| format!("{q:.1}"))
                })
            },
        );
        row(&format!("API requests/min, K = {k}"), &|s| {
            at(s).map_or("–".into(), |w| verbs(&w.requests_per_minute))
        });
        row(&format!("Prometheus queries/interval, K = {k}"), &|s| {
            at(s).map_or("–".into(), |w| {
                format!("{:.1}", w.prometheus_queries_per_interval)
            })
        });
    }
    row("crash-loop → rollback PATCH p50 / p99 (ms)", &|s| {
        format!(
            "{} / {} (n={})",
            ms(s.crashloop_to_rollback.p50_ms),
            ms(s.crashloop_to_rollback.p99_ms),
            s.crashloop_to_rollback.samples
        )
    });
    row("breach → first action p50 / p99 (ms)", &|s| {
        format!(
            "{} / {} (n={})",
            ms(s.breach_to_action.p50_ms),
            ms(s.breach_to_action.p99_ms),
            s.breach_to_action.samples
        )
    });
    row(
        "breach → action minus 3 × interval p50 / p99 (ms)",
        &|s| {
            format!(
                "{} / {} (n={})",
                ms(s.breach_to_action_overhead.p50_ms),
                ms(s.breach_to_action_overhead.p99_ms),
                s.breach_to_action_overhead.samples
            )
        },
    );
    row(
        "CPU during the latency phases: daemon / simulation (millicores)",
        &|s| {
            let (daemon, sim) = s.latency_phase_millicores;
            format!("{daemon:.0} / {sim:.0}")
        },
    );
    row(
        "kubectl/curl loop: crash-loop → undo p50 / p99 (ms)",
        &|s| {
            format!(
                "{} / {} (n={})",
                ms(s.reference.detection.p50_ms),
                ms(s.reference.detection.p99_ms),
                s.reference.detection.samples
            )
        },
    );
    row("loop / daemon detection (p50)", &|s| {
        s.reference
            .detection_ratio_p50
            .map_or("–".into(), |r| format!("{r:.1}×"))
    });
    row("API requests per rollout-minute: loop / daemon", &|s| {
        format!(
            "{:.0} / {:.2}",
            s.reference.requests_per_rollout_minute, s.daemon_requests_per_rollout_minute
        )
    });
    row(
        "API requests per rollout, deploy → rollback: loop / daemon",
        &|s| {
            format!(
                "{:.1} / {:.1}",
                s.reference.requests_per_rollout, s.daemon_requests_per_rollout
            )
        },
    );
    row("loop / daemon requests per rollout", &|s| {
        s.reference
            .requests_ratio
            .map_or("–".into(), |r| format!("{r:.0}×"))
    });
    let mut out = String::from("| figure |");
    for s in &f.sizes {
        out.push_str(&format!(" N = {} |", s.deployments));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(f.sizes.len()));
    out.push('\n');
    for (name, cells) in rows {
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out
}
