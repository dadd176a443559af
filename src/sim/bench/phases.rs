//! One size: seed the cluster, start the daemon, measure idle, latencies, K watched rollouts,
//! then the reference loop.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::proc::{self, percentile};
use super::report::{Latency, SizeReport, Steady};
use super::serve::{Daemon, Served};
use super::{BenchError, Options, deployment};

const SETTLE: Duration = Duration::from_secs(2);
const MIB: f64 = 1024.0;

pub async fn size(opts: &Options, n: usize) -> Result<SizeReport, BenchError> {
    let dir = opts.dir.join(format!("n{n}"));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Write(dir.clone(), e))?;
    let file = dir.join("scenario.yaml");
    std::fs::write(
        &file,
        super::scenario(n, opts.interval, opts.window, opts.scrape_interval),
    )
    .map_err(|e| BenchError::Write(file.clone(), e))?;
    let served = Served::start(&opts.exe, &file, &dir).await?;
    let mut r = SizeReport {
        deployments: n,
        pods: n * 10,
        ..SizeReport::default()
    };
    let all: Vec<usize> = (0..n).collect();
    // Revisions 2 and 3, each rolled out: three ReplicaSets per Deployment.
    let seed = Instant::now();
    let limit = Duration::from_secs(60 + n as u64 / 10);
    for v in ["v2", "v3"] {
        served.play(deploys(&all, v)).await?;
        if !served.wait_rolled_out(limit).await? {
            r.notes
                .push(format!("seeding {v} did not finish within {limit:?}"));
        }
    }
    r.seed_s = seed.elapsed().as_secs_f64();
    // The seeded rollouts are history, not rollouts to judge, when the daemon starts.
    eprintln!(
        "bench: N = {n}: waiting out the window ({:?}) after seeding",
        opts.window
    );
    tokio::time::sleep(opts.window + Duration::from_secs(2)).await;

    let ticks = proc::clock_ticks();
    let daemon = Daemon::start(&opts.exe, &served, &dir.join("daemon.log"), limit).await?;
    r.start_to_ready_s = daemon.ready_after.as_secs_f64();
    eprintln!("bench: N = {n}: ready after {:.2}s", r.start_to_ready_s);
    tokio::time::sleep(SETTLE).await;
    r.idle = steady(opts, &served, daemon.pid, 0, ticks).await?;

    // Latencies: disjoint sets of Deployments, each rolled out at once.
    let l = opts.samples.min(n / 2).max(1);
    let crash_set: Vec<usize> = (0..l).collect();
    let breach_set: Vec<usize> = (l..(2 * l).min(n)).collect();
    let sim_pid = served.pid().unwrap_or_default();
    let (daemon_mark, sim_mark) = (proc::cpu_mark(daemon.pid), proc::cpu_mark(sim_pid));
    (r.crashloop_to_rollback, r.daemon_requests_per_rollout) =
        crashloop(&served, &crash_set, "crash", false).await?;
    (r.breach_to_action, r.breach_to_action_overhead) = breach(opts, &served, &breach_set).await?;
    r.latency_phase_millicores = (
        proc::millicores_since(daemon.pid, daemon_mark, ticks),
        proc::millicores_since(sim_pid, sim_mark, ticks),
    );
    eprintln!("bench: N = {n}: latencies measured");

    for &k in opts.ks.iter().filter(|k| **k <= n) {
        let set: Vec<usize> = (0..k).collect();
        served.play(deploys(&set, &format!("w{k}"))).await?;
        if !served.wait_rolled_out(limit).await? {
            r.notes.push(format!("K = {k}: rollouts not complete"));
        }
        // Steady state: once the daemon has done what K new rollouts ask of it (their records,
        // Events and namespace watches), not while it is still doing it.
        let quiet_after = wait_quiet(&served, limit).await?;
        if quiet_after.is_none() {
            r.notes.push(format!(
                "K = {k}: API requests never stopped for {SETTLE:?} within {limit:?}"
            ));
        }
        let mut s = steady(opts, &served, daemon.pid, k, ticks).await?;
        s.quiet_after_s = quiet_after.map(|d| d.as_secs_f64());
        eprintln!(
            "bench: N = {n}, K = {k}: {:.1} MiB, {:.1} m",
            s.rss_mib, s.millicores
        );
        r.watched.push(s);
    }
    r.peak_rss_mib = proc::memory(daemon.pid).hwm_kib as f64 / MIB;
    if let Some(w) = r.watched.last() {
        r.daemon_requests_per_rollout_minute =
            (total(&w.requests_per_minute) - total(&r.idle.requests_per_minute)).max(0.0)
                / w.k as f64;
    }
    daemon.stop().await;

    let rset: Vec<usize> = (2 * l..(2 * l + opts.reference).min(n)).collect();
    let rset = if rset.is_empty() { crash_set } else { rset };
    r.reference = super::reference::run(opts, &served, &rset, &dir).await?;
    r.reference.detection_ratio_p50 = r
        .reference
        .detection
        .p50_ms
        .zip(r.crashloop_to_rollback.p50_ms)
        .map(|(a, b)| a / b.max(1.0));
    r.reference.requests_ratio =
        Some(r.reference.requests_per_rollout / r.daemon_requests_per_rollout.max(1.0));
    served.stop().await;
    Ok(r)
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

pub fn deploys(set: &[usize], version: &str) -> Vec<Value> {
    set.iter()
        .map(|i| json!({"deploy": {"deployment": deployment(*i), "version": version}}))
        .collect()
}

fn behaviour(set: &[usize], version: &str, change: Value) -> Vec<Value> {
    set.iter()
        .map(|i| {
            let mut app = change.clone();
            app["target"] = json!(format!("{}@{version}", deployment(*i)));
            json!({ "app": app })
        })
        .collect()
}

/// Counters of the simulation: requests by "VERB resource" and Prometheus queries.
fn counters(state: &Value) -> (BTreeMap<String, f64>, f64) {
    let requests = state["requests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    (
        requests,
        state["prometheus_queries"].as_f64().unwrap_or(0.0),
    )
}

/// How long after now the API server went `SETTLE` without a request, if within `limit`.
async fn wait_quiet(served: &Served, limit: Duration) -> Result<Option<Duration>, BenchError> {
    let started = Instant::now();
    let mut last = total(&counters(&served.state().await?).0);
    let mut last_change = started;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now_total = total(&counters(&served.state().await?).0);
        let now = Instant::now();
        if now_total != last {
            (last, last_change) = (now_total, now);
        } else if now - last_change >= SETTLE {
            return Ok(Some(last_change - started));
        }
        if now - started > limit {
            return Ok(None);
        }
    }
}

/// Memory, CPU and request rates over `opts.measure`.
async fn steady(
    opts: &Options,
    served: &Served,
    pid: u32,
    k: usize,
    ticks: f64,
) -> Result<Steady, BenchError> {
    let (before, q0) = counters(&served.state().await?);
    let mark = proc::cpu_mark(pid);
    let started = Instant::now();
    tokio::time::sleep(opts.measure).await;
    let millicores = proc::millicores_since(pid, mark, ticks);
    let (after, q1) = counters(&served.state().await?);
    let secs = started.elapsed().as_secs_f64();
    let mem = proc::memory(pid);
    let mut by_resource = BTreeMap::new();
    let mut by_verb: BTreeMap<String, f64> = BTreeMap::new();
    for (key, v) in &after {
        let d = v - before.get(key).copied().unwrap_or(0.0);
        if d > 0.0 {
            let per_min = d * 60.0 / secs;
            by_resource.insert(key.clone(), per_min);
            let verb = key.split(' ').next().unwrap_or_default().to_string();
            *by_verb.entry(verb).or_default() += per_min;
        }
    }
    Ok(Steady {
        k,
        rss_mib: mem.rss_kib as f64 / MIB,
        peak_rss_mib: mem.hwm_kib as f64 / MIB,
        millicores,
        requests_per_minute: by_verb,
        requests_per_minute_by_resource: by_resource,
        prometheus_queries_per_interval: (q1 - q0) / (secs / opts.interval.as_secs_f64()),
        quiet_after_s: None,
    })
}

/// Template changes through the API after `after_ms`, first per Deployment, by whose agent.
fn first_patches(state: &Value, after_ms: f64, kubectl: bool) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for c in state["template_changes"].as_array().into_iter().flatten() {
        let at = c["at_ms"].as_f64().unwrap_or(0.0);
        let ua = c["user_agent"].as_str().unwrap_or_default();
        if at > after_ms && ua.starts_with("kubectl") == kubectl {
            let d = c["deployment"].as_str().unwrap_or_default().to_string();
            out.entry(d).or_insert(at);
        }
    }
    out
}

/// Deploys a crash-looping version to `set`; crash-loop first seen → rollback PATCH.
pub async fn crashloop(
    served: &Served,
    set: &[usize],
    version: &str,
    kubectl: bool,
) -> Result<(Latency, f64), BenchError> {
    served
        .play(behaviour(set, version, json!({"pods": "crashloop"})))
        .await?;
    let (before, _) = counters(&served.state().await?);
    let at = served.play(deploys(set, version)).await?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = served.state().await?;
        let patches = first_patches(&state, at, kubectl);
        if patches.len() >= set.len() || Instant::now() > until {
            let crashes: HashMap<String, f64> = state["crashloops"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["version"] == version)
                .map(|c| {
                    (
                        c["deployment"].as_str().unwrap_or_default().to_string(),
                        c["at_ms"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            let samples: Vec<f64> = set
                .iter()
                .filter_map(|i| {
                    let d = deployment(*i);
                    Some(patches.get(&d)? - crashes.get(&d)?)
                })
                .collect();
            let (after, _) = counters(&state);
            let requests = total(&after) - total(&before);
            // Kept for reading beside the daemon's log: what the simulation recorded, when.
            let mut kept = state.clone();
            kept["deployed_at_ms"] = json!(at);
            let file = served
                .kubeconfig
                .with_file_name(format!("{version}-state.json"));
            std::fs::write(&file, kept.to_string()).map_err(|e| BenchError::Write(file, e))?;
            return Ok((latency(&samples, set.len()), requests / set.len() as f64));
        }
    }
}

fn latency(samples: &[f64], wanted: usize) -> Latency {
    Latency {
        samples: samples.len(),
        missed: wanted.saturating_sub(samples.len()),
        p50_ms: percentile(samples, 50.0),
        p99_ms: percentile(samples, 99.0),
        all_ms: samples.to_vec(),
    }
}

/// Rolls a good version out to `set`, then makes it fail every request: breach → first action
/// (rollback PATCH or page), minus the policy's minimum.
async fn breach(
    opts: &Options,
    served: &Served,
    set: &[usize],
) -> Result<(Latency, Latency), BenchError> {
    served.play(deploys(set, "bad")).await?;
    served.wait_rolled_out(Duration::from_secs(120)).await?;
    // Into the watching phase, with a few good samples behind it.
    tokio::time::sleep(SETTLE).await;
    // Breaches spread evenly over one interval, so every phase of the daemon's sampling is met:
    // one just after a sample waits almost an interval for the next, one just before none.
    let start = Instant::now();
    let mut breached = HashMap::new();
    for (n, i) in set.iter().enumerate() {
        let offset = opts.interval.mul_f64(n as f64 / set.len() as f64);
        tokio::time::sleep_until(start + offset).await;
        let at = served
            .play(behaviour(&[*i], "bad", json!({"error_ratio": 1.0})))
            .await?;
        breached.insert(deployment(*i), at);
    }
    let at = breached.values().copied().fold(f64::INFINITY, f64::min);
    let minimum = 3.0 * opts.interval.as_secs_f64() * 1000.0;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = served.state().await?;
        let mut first = first_patches(&state, at, false);
        for p in state["pages"].as_array().into_iter().flatten() {
            let t = p["at_ms"].as_f64().unwrap_or(0.0);
            // dedup_key: deploy-watchdog/<cluster>/<namespace>/<name>/<revision>
            let key = p["dedup_key"].as_str().unwrap_or_default();
            let parts: Vec<&str> = key.split('/').collect();
            if t > at && parts.len() >= 5 {
                let d = format!("{}/{}", parts[parts.len() - 3], parts[parts.len() - 2]);
                let e = first.entry(d).or_insert(t);
                *e = e.min(t);
            }
        }
        let raw: Vec<f64> = set
            .iter()
            .filter_map(|i| {
                let d = deployment(*i);
                Some(first.get(&d)? - breached.get(&d)?)
            })
            .collect();
        if raw.len() >= set.len() || Instant::now() > until {
            let overhead: Vec<f64> = raw.iter().map(|t| t - minimum).collect();
            return Ok((latency(&raw, set.len()), latency(&overhead, set.len())));
        }
    }
}
