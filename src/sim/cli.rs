//! `simulate` and `demo`: running scenarios and telling what happened.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::runner::{self, Moment, MomentKind, ScenarioReport, Simulation};
use super::scenario::Scenario;

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
/// Scenarios run at once: each has its own simulation and daemon.
const CONCURRENCY: usize = 8;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Scenario files (docs/scenarios.md).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// One JSON object per scenario per line.
    #[arg(long)]
    json: bool,
    /// Serve one scenario's cluster (the script plays; the daemon is not started) until SIGINT/SIGTERM.
    #[arg(long, requires_all = ["write_kubeconfig", "write_config"])]
    serve: bool,
    /// With --serve: where to write a kubeconfig for kubectl and `run --kubeconfig`.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// With --serve: where to write a daemon config pointing at the simulation.
    #[arg(long)]
    write_config: Option<PathBuf>,
}

/// Loads every file first: one invalid file runs nothing.
/// With `serve`, the scenario only describes a cluster and need not expect anything.
fn load_all(files: &[PathBuf], serve: bool) -> Result<Vec<(String, Scenario)>, String> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeMap::new();
    for f in files {
        let file = f.display().to_string();
        let s = Scenario::load(f).map_err(|e| e.to_string())?;
        runner::daemon_config(&s, &file).map_err(|e| e.to_string())?;
        if !serve {
            s.require_expectations(&file).map_err(|e| e.to_string())?;
        }
        if let Some(other) = names.insert(s.name.clone(), file.clone()) {
            return Err(format!(
                "{file}: name: {:?} is also the name of {other}",
                s.name
            ));
        }
        out.push((file, s));
    }
    Ok(out)
}

pub async fn simulate(args: SimulateArgs) -> u8 {
    let scenarios = match load_all(&args.files, args.serve) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_INVALID;
        }
    };
    if args.serve {
        let (Some(kubeconfig), Some(config)) = (args.write_kubeconfig, args.write_config) else {
            return EXIT_INVALID;
        };
        let Some((file, s)) = scenarios.into_iter().next() else {
            return EXIT_INVALID;
        };
        return serve(&file, &s, &kubeconfig, &config).await;
    }
    let json = args.json;
    let mut all_ok = true;
    let mut runs = futures::stream::iter(scenarios.into_iter().map(|(file, s)| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let report = runner::run(&s, &file, Some(tx)).await;
        let mut moments = Vec::new();
        while let Ok(m) = rx.try_recv() {
            moments.push(m);
        }
        (file, s, report, moments)
    }))
    .buffer_unordered(CONCURRENCY);
    while let Some((file, s, report, moments)) = runs.next().await {
        match report {
            Ok(r) => {
                all_ok &= r.ok;
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    print_human(&s, &r, &moments);
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("{file}: {e}");
            }
        }
    }
    if all_ok { 0 } else { EXIT_FAILED }
}

fn print_human(s: &Scenario, r: &ScenarioReport, moments: &[Moment]) {
    println!("▶ {} — {}", s.name, s.description.trim());
    for m in moments {
        if !matches!(m.kind, MomentKind::Expectation { .. }) {
            println!("  {:>8}  {}", seconds(m.at), m.text);
        }
    }
    for ro in &r.rollouts {
        println!("  {}", summary(ro));
    }
    if r.ok {
        println!("  ✓ every expectation met ({} ms)\n", r.duration_ms);
    } else {
        for f in &r.failures {
            println!("  ✗ {f}");
        }
        println!();
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// One rollout in plain words.
fn summary(r: &runner::RolloutReport) -> String {
    let to = r.to_version.as_deref().unwrap_or("?");
    let from = r.from_version.as_deref().unwrap_or("?");
    let reason = r.reason.as_deref().unwrap_or("none");
    let pages = match r.pages {
        0 => "nobody was paged".to_string(),
        1 => "on-call was paged once".to_string(),
        n => format!("on-call was paged {n} times"),
    };
    let pages = if r.triggers > r.pages {
        format!("{pages} ({} trigger events accepted)", r.triggers)
    } else {
        pages
    };
    let when = r
        .first_action_ms
        .map(|ms| format!(" {:.1} s after the deploy", ms as f64 / 1000.0))
        .unwrap_or_default();
    let what = match r.outcome.as_str() {
        "passed" => format!("{to} passed its watch"),
        "rolled_back" => format!("{to} was rolled back to {from}{when} (reason: {reason})"),
        "would_roll_back" => {
            format!("{to} would have been rolled back to {from}{when} (dry run; reason: {reason})")
        }
        "degraded" => format!("{to} is degraded (reason: {reason})"),
        "rollback_failed" => format!("{to}: the rollback to {from} failed (reason: {reason})"),
        "superseded" => format!("{to} was superseded by a newer rollout"),
        "deleted" => format!("{to} was deleted during its watch"),
        "undecided" if r.rollbacks > 0 => format!(
            "{to} was rolled back to {from}{when}, but the rollback was not verified before the run ended"
        ),
        "undecided" => format!("{to} was still undecided when the run ended"),
        other => format!("{to}: {other}"),
    };
    format!(
        "{}: {what}; {pages}. Now running {}.",
        r.deployment,
        r.final_version.as_deref().unwrap_or("nothing")
    )
}

/// `deploy-watchdog demo`.
pub async fn demo() -> u8 {
    let s = match Scenario::parse(include_str!("demo.yaml"), "demo.yaml") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_INVALID;
        }
    };
    println!("deploy-watchdog demo: {}\n", s.description.trim());
    let live = std::io::stdout().is_terminal();
    let (tx, mut rx) = mpsc::unbounded_channel::<Moment>();
    let scenario = s.clone();
    let run = tokio::spawn(async move { runner::run(&scenario, "demo.yaml", Some(tx)).await });
    let mut windows: Vec<(String, Duration, Duration)> = Vec::new();
    let mut redraw = tokio::time::interval(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                if live { let _ = write!(out, "\r\x1b[2K"); }
                match m.kind {
                    MomentKind::WindowStarted { window_ms } => {
                        let who = m.text.split(':').next().unwrap_or_default().to_string();
                        windows.push((who, m.at, Duration::from_millis(window_ms)));
                    }
                    MomentKind::Decision | MomentKind::Action => {
                        let who = m.text.split(':').next().unwrap_or_default();
                        if ["RolloutPassed", "RolledBack", "Degraded", "RollbackFailed"].iter().any(|r| m.text.contains(r)) {
                            windows.retain(|(w, _, _)| w != who);
                        }
                    }
                    _ => {}
                }
                let mark = match m.kind {
                    MomentKind::Script => "▶",
                    MomentKind::Decision | MomentKind::WindowStarted { .. } => "•",
                    MomentKind::Action => "↩",
                    MomentKind::Page => "📟",
                    MomentKind::Slack => "💬",
                    MomentKind::Expectation { met: true } => "✓",
                    MomentKind::Expectation { met: false } => "✗",
                };
                let _ = writeln!(out, "{:>8}  {mark} {}", seconds(m.at), m.text);
            }
            _ = redraw.tick(), if live => {
                let now = started.elapsed();
                let bars: Vec<String> = windows.iter().map(|(who, start, window)| {
                    let frac = ((now.saturating_sub(*start)).as_secs_f64() / window.as_secs_f64().max(0.001)).min(1.0);
                    let filled = (frac * 20.0).round() as usize;
                    format!("{who} [{}{}] {:>3.0}%", "█".repeat(filled), "░".repeat(20 - filled), frac * 100.0)
                }).collect();
                let _ = write!(out, "\r\x1b[2K{}", bars.join("   "));
            }
        }
        let _ = out.flush();
    }
    if live {
        let _ = write!(out, "\r\x1b[2K");
    }
    let report = match run.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("{e}");
            return EXIT_FAILED;
        }
        Err(e) => {
            eprintln!("demo stopped: {e}");
            return EXIT_FAILED;
        }
    };
    println!("\nWhat happened:");
    for r in &report.rollouts {
        println!("  {}", summary(r));
    }
    if report.ok { 0 } else { EXIT_FAILED }
}

/// `simulate --serve`: the cluster and services of a scenario, for kubectl and `run`.
async fn serve(
    file: &str,
    s: &Scenario,
    kubeconfig: &std::path::Path,
    config_path: &std::path::Path,
) -> u8 {
    let shutdown = CancellationToken::new();
    let config = match runner::daemon_config(s, file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_INVALID;
        }
    };
    let started = tokio::time::Instant::now();
    let sim = match Simulation::start(s, config, file, &shutdown).await {
        Ok(sim) => std::sync::Arc::new(sim),
        Err(e) => {
            eprintln!("{e}");
            return EXIT_FAILED;
        }
    };
    let mut config = sim.config.clone();
    let secret_file = |suffix: &str| config_path.with_extension(format!("{suffix}.secret"));
    let written = (|| -> std::io::Result<()> {
        let key = secret_file("pagerduty-routing-key");
        std::fs::write(
            &key,
            sim.secrets
                .pagerduty_routing_key
                .clone()
                .unwrap_or_default(),
        )?;
        let hook = secret_file("slack-webhook-url");
        std::fs::write(
            &hook,
            sim.secrets.slack_webhook_url.clone().unwrap_or_default(),
        )?;
        if config.providers.datadog.is_some() {
            for (suffix, value, field) in [
                (
                    "datadog-api-key",
                    &sim.secrets.datadog_api_key,
                    &mut config.secrets.datadog_api_key_file,
                ),
                (
                    "datadog-app-key",
                    &sim.secrets.datadog_app_key,
                    &mut config.secrets.datadog_app_key_file,
                ),
            ] {
                let file = secret_file(suffix);
                std::fs::write(&file, value.clone().unwrap_or_default())?;
                *field = Some(file);
            }
        }
        config.secrets.pagerduty_routing_key_file = Some(key);
        config.secrets.slack_webhook_url_file = Some(hook);
        let yaml = serde_norway::to_string(&config).map_err(std::io::Error::other)?;
        std::fs::write(config_path, yaml)?;
        std::fs::write(kubeconfig, kubeconfig_yaml(&sim.api_url))
    })();
    if let Err(e) = written {
        eprintln!("cannot write the kubeconfig or config: {e}");
        return EXIT_FAILED;
    }
    println!(
        "Simulated cluster of {:?} serving at {}",
        s.name, sim.api_url
    );
    println!(
        "  kubectl --kubeconfig {} get deploy -A",
        kubeconfig.display()
    );
    println!(
        "  deploy-watchdog run --config {} --kubeconfig {}",
        config_path.display(),
        kubeconfig.display()
    );
    match super::debug::start(sim.clone(), started, shutdown.child_token()).await {
        Ok(addr) => println!("  debug API (benchmark): http://{addr}/debug/state"),
        Err(e) => eprintln!("cannot serve the debug API: {e}"),
    }
    let mut script: Vec<_> = s.script.iter().collect();
    script.sort_by_key(|e| e.at);
    let play = async {
        for ev in script {
            tokio::time::sleep_until(started + ev.at).await;
            sim.play(&ev.action);
            println!("{:>8}  ▶ {:?}", seconds(ev.at), ev.action.name());
        }
        std::future::pending::<()>().await
    };
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return EXIT_FAILED;
    };
    tokio::select! {
        _ = play => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
    0
}

/// A kubeconfig for the simulated API server (plain HTTP on loopback, no credentials).
pub fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: simulated\n  cluster:\n    server: {server}\nusers:\n- name: simulated\n  user: {{}}\ncontexts:\n- name: simulated\n  context:\n    cluster: simulated\n    user: simulated\n    namespace: default\ncurrent-context: simulated\n"
    )
}
