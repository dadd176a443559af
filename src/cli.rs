//! The daemon's commands: `run`, `check-config` and `doctor`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Secrets};
use crate::daemon;
use crate::server::{Endpoints, Server};
use crate::systemd::Notify;
use crate::telemetry::Metrics;

/// Exit status for a config that cannot be used.
pub const EXIT_BAD_CONFIG: u8 = 2;

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `deploy-watchdog check-config FILE`.
pub fn check_config(file: &Path) -> u8 {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: valid (mode {:?}, window {}, interval {}, {} smoke checks, prometheus {}, datadog {})",
                file.display(),
                c.mode,
                crate::judge::human(c.watch.window),
                crate::judge::human(c.watch.interval),
                c.smoke.len(),
                on_off(c.providers.prometheus.is_some()),
                on_off(c.providers.datadog.is_some()),
            );
            for warning in c.silent_warning().into_iter().chain(c.warnings()) {
                eprintln!("{}: warning: {warning}", file.display());
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_BAD_CONFIG
        }
    }
}

/// `deploy-watchdog doctor`: the config and secrets as `run` loads them, the cluster as `run`
/// reaches it, every check once; the findings as text or JSON. Exit 0 when nothing blocks the
/// daemon, [`crate::doctor::EXIT_BLOCKING`] when something does (the cluster unreachable
/// included), [`EXIT_BAD_CONFIG`] when `run` would refuse the config.
pub async fn doctor(config_path: &Path, kubeconfig: Option<&Path>, json: bool) -> u8 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_BAD_CONFIG;
        }
    };
    let secrets = match Secrets::load_for(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_BAD_CONFIG;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = crate::probes::try_http_client() {
        eprintln!("cannot build the HTTP client for probes and notifications: {e}");
        return crate::doctor::EXIT_BLOCKING;
    }
    let findings = match kube_client(kubeconfig, None).await {
        Ok(client) => crate::doctor::examine(&config, &secrets, &client).await,
        Err(e) => {
            let mut f = crate::doctor::checks::sinks(&config, &secrets);
            f.push(crate::doctor::unreachable_cluster(e));
            f
        }
    };
    if json {
        println!("{}", serde_json::to_string(&findings).unwrap_or_default());
    } else {
        use std::io::IsTerminal;
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", crate::doctor::render::text(&findings, colour));
    }
    crate::doctor::exit_code(&findings)
}

/// `deploy-watchdog run`: serves `/metrics`, `/healthz` and `/readyz` beside the daemon until
/// SIGINT/SIGTERM, which drains: `/readyz` turns false, rollbacks in flight finish (bounded),
/// then the daemon stops. A second signal exits at once.
pub async fn run(config_path: &Path, kubeconfig: Option<&Path>) -> u8 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            eprintln!("{e}");
            return EXIT_BAD_CONFIG;
        }
    };
    for w in config.warnings() {
        warn!("{w}");
    }
    let secrets = match Secrets::load_for(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_BAD_CONFIG;
        }
    };
    log_sinks(&config, &secrets);
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = crate::probes::try_http_client() {
        eprintln!("cannot build the HTTP client for probes and notifications: {e}");
        return 1;
    }
    let registry = prometheus::Registry::new();
    let metrics = match Metrics::register(&registry) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            error!(error = %e, "metrics");
            return 1;
        }
    };
    let client = match kube_client(kubeconfig, Some(&metrics)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach Kubernetes: {e}");
            return 1;
        }
    };
    let server = match Server::bind(config.server.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_BAD_CONFIG;
        }
    };
    let status = daemon::Status::default().with_metrics(metrics.clone());
    // The doctor's checks, once, beside the daemon: they warn, they never hold it back.
    tokio::spawn(crate::doctor::at_startup(
        config.clone(),
        secrets.clone(),
        client.clone(),
        status.board().clone(),
    ));
    // One root token stops everything. A signal cancels `drain` (`/readyz` turns false); the
    // daemon's `stop` follows once the rollbacks in flight are done; the server stops last.
    let root = CancellationToken::new();
    let drain = root.child_token();
    let stop = root.child_token();
    tokio::spawn(signals(drain.clone()));
    info!(version = env!("CARGO_PKG_VERSION"), listen = %server.local_addr(), "starting");
    let endpoints = Endpoints {
        registry,
        status: status.clone(),
        draining: drain.clone(),
    };
    let server = tokio::spawn(server.serve(endpoints, root.clone()));
    let notify = Notify::from_env();
    tokio::spawn(systemd_notifications(
        notify.clone(),
        status.clone(),
        stop.clone(),
    ));

    let mut daemon = tokio::spawn(daemon::run(
        config,
        secrets,
        client,
        stop.clone(),
        status.clone(),
    ));
    let result = tokio::select! {
        r = &mut daemon => r,
        _ = drain.cancelled() => {
            notify.send("STOPPING=1");
            finish_rollbacks(&status).await;
            stop.cancel();
            (&mut daemon).await
        }
    };
    root.cancel();
    match server.await {
        Ok(Err(e)) => error!(error = %e, "metrics server"),
        Err(e) => error!(error = %e, "metrics server task"),
        Ok(Ok(())) => {}
    }
    match result {
        Ok(Ok(())) => {
            info!("stopped");
            0
        }
        Ok(Err(e)) => {
            error!(error = %e, "stopped");
            1
        }
        Err(e) => {
            error!(error = %e, "the daemon task failed");
            1
        }
    }
}

/// Each notification sink's state, once at start-up: a sink that is off is a warning.
fn log_sinks(config: &Config, secrets: &Secrets) {
    let states = secrets.sink_states(config);
    for s in &states {
        if s.on {
            info!(sink = s.name, state = %s.detail, "notification sink");
        } else {
            warn!(sink = s.name, state = %s.detail, "notification sink");
        }
    }
    if !states.iter().any(|s| s.on) {
        warn!(
            mode = ?config.mode,
            allow_silent = config.notify.allow_silent,
            "no notification sink: decisions are logged, recorded as Events and counted in /metrics only"
        );
    }
}

/// How long a drain waits for rollbacks in flight: under Kubernetes' default 30 s grace period.
const DRAIN_BOUND: Duration = Duration::from_secs(25);

/// Waits until no rollback is being sent or verified, at most [`DRAIN_BOUND`]. A verification
/// cut short is resumed by the next process from the state recorded on the Deployment.
async fn finish_rollbacks(status: &daemon::Status) {
    let n = status.rollbacks_in_flight();
    if n == 0 {
        return;
    }
    info!(rollbacks = n, "draining: waiting for rollbacks in flight");
    if tokio::time::timeout(DRAIN_BOUND, status.rollbacks_done())
        .await
        .is_err()
    {
        warn!(
            rollbacks = status.rollbacks_in_flight(),
            "drain bound reached with rollbacks in flight; the next process resumes them"
        );
    }
}

/// `READY=1` after the initial sync, then `WATCHDOG=1` at half `$WATCHDOG_USEC` while the
/// daemon runs (this task stops with it, so systemd notices a daemon that has stopped).
async fn systemd_notifications(notify: Notify, status: daemon::Status, stop: CancellationToken) {
    let mut tick = tokio::time::interval(
        notify
            .watchdog_interval()
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500)),
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ready_sent = false;
    let mut last_ping = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ready_sent && status.ready() {
            notify.send("READY=1");
            ready_sent = true;
        }
        if let Some(every) = notify.watchdog_interval()
            && last_ping.elapsed() >= every
        {
            notify.send("WATCHDOG=1");
            last_ping = tokio::time::Instant::now();
        }
    }
}

/// A Kubernetes client; with `metrics` (the daemon's), its failed requests are counted there.
async fn kube_client(
    kubeconfig: Option<&Path>,
    metrics: Option<&Arc<Metrics>>,
) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    match metrics {
        Some(m) => crate::telemetry::kube_client(config, m),
        None => kube::Client::try_from(config),
    }
    .map_err(|e| e.to_string())
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    info!("signal received: draining (a second signal exits at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}
