//! The processes a benchmark run drives: `simulate --serve` (with its debug API) and the daemon.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::BenchError;

/// A served simulation and its debug API.
pub struct Served {
    child: Child,
    debug: String,
    http: reqwest::Client,
    pub kubeconfig: PathBuf,
    pub config: PathBuf,
}

impl Served {
    /// The simulation's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts `exe simulate --serve scenario` and waits for its debug API.
    pub async fn start(exe: &Path, scenario: &Path, dir: &Path) -> Result<Served, BenchError> {
        let kubeconfig = dir.join("kubeconfig.yaml");
        let config = dir.join("watchdog.yaml");
        let mut child = Command::new(exe)
            .arg("simulate")
            .arg("--serve")
            .arg(scenario)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--write-config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn("simulate --serve", e))?;
        let stdout = child.stdout.take().ok_or(BenchError::Protocol(
            "simulate --serve has no stdout".into(),
        ))?;
        let mut lines = BufReader::new(stdout).lines();
        let debug = loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    if let Some(url) = l.split("debug API (benchmark): ").nth(1) {
                        break url.trim().trim_end_matches("/debug/state").to_string();
                    }
                }
                _ => {
                    return Err(BenchError::Protocol(
                        "simulate --serve ended before serving its debug API".into(),
                    ));
                }
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Served {
            child,
            debug,
            http: reqwest::Client::new(),
            kubeconfig,
            config,
        })
    }

    pub async fn state(&self) -> Result<Value, BenchError> {
        let r = self
            .http
            .get(format!("{}/debug/state", self.debug))
            .send()
            .await
            .map_err(|e| BenchError::Protocol(format!("debug state: {e}")))?;
        r.json()
            .await
            .map_err(|e| BenchError::Protocol(format!("debug state: {e}")))
    }

    /// Plays script events at once; the simulation's time (ms) they were played at.
    pub async fn play(&self, events: Vec<Value>) -> Result<f64, BenchError> {
        let events: Vec<Value> = events
            .into_iter()
            .map(|mut e| {
                e["at"] = json!("0s");
                e
            })
            .collect();
        let r = self
            .http
            .post(format!("{}/debug/script", self.debug))
            .json(&events)
            .send()
            .await
            .map_err(|e| BenchError::Protocol(format!("debug script: {e}")))?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| BenchError::Protocol(format!("debug script: {e}")))?;
        Ok(v["at_ms"].as_f64().unwrap_or(0.0))
    }

    /// Waits until every Deployment is rolled out; false when `limit` passed first.
    pub async fn wait_rolled_out(&self, limit: Duration) -> Result<bool, BenchError> {
        let until = Instant::now() + limit;
        loop {
            let s = self.state().await?;
            if s["rolled_out"] == s["deployments"] {
                return Ok(true);
            }
            if Instant::now() > until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}

/// SIGTERM, then SIGKILL after 5 s.
pub async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// The daemon under test, as its own process.
pub struct Daemon {
    pub child: Child,
    pub pid: u32,
    /// From spawn to the "initial sync complete" log line.
    pub ready_after: Duration,
}

impl Daemon {
    pub async fn start(
        exe: &Path,
        served: &Served,
        log: &Path,
        limit: Duration,
    ) -> Result<Daemon, BenchError> {
        let started = Instant::now();
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&served.config)
            .arg("--kubeconfig")
            .arg(&served.kubeconfig)
            // With when each namespace watch came in sync: a latency read beside it.
            .env("RUST_LOG", "info,deploy_watchdog::cluster::caches=debug")
            // The bench reads the daemon from outside; its own endpoints take any free port,
            // so a daemon already on the default one does not stop the run.
            .env("DEPLOY_WATCHDOG__SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn("run", e))?;
        let pid = child
            .id()
            .ok_or(BenchError::Protocol("the daemon has no pid".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or(BenchError::Protocol("the daemon has no stderr".into()))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let log = log.to_path_buf();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut out = Vec::new();
            let mut ready = Some(ready_tx);
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("initial sync complete")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(Instant::now());
                }
                // The first lines tell how start-up went; the rest is decisions, kept short.
                if out.len() < 20_000 {
                    out.push(l);
                }
            }
            let _ = std::fs::write(log, out.join("\n"));
        });
        let ready_at = tokio::time::timeout(limit, ready_rx)
            .await
            .map_err(|_| {
                BenchError::Protocol(format!("the daemon was not ready within {limit:?}"))
            })?
            .map_err(|_| BenchError::Protocol("the daemon exited before it was ready".into()))?;
        Ok(Daemon {
            child,
            pid,
            ready_after: ready_at.duration_since(started),
        })
    }

    pub async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}
