//! The daemon's commands: `run` and `check-config`.

use std::path::Path;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Config, Secrets};
use crate::daemon;

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
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_BAD_CONFIG
        }
    }
}

/// `deploy-watchdog run`: until SIGINT/SIGTERM; a second signal exits at once.
pub async fn run(config_path: &Path, kubeconfig: Option<&Path>) -> u8 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
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
    let client = match kube_client(kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach Kubernetes: {e}");
            return 1;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    info!(version = env!("CARGO_PKG_VERSION"), "starting");
    match daemon::run(config, secrets, client, shutdown, daemon::Status::default()).await {
        Ok(()) => {
            info!("stopped");
            0
        }
        Err(e) => {
            error!(error = %e, "stopped");
            1
        }
    }
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
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
    kube::Client::try_from(config).map_err(|e| e.to_string())
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
