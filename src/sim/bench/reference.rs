//! The reference: the runbook done the obvious automated way, one shell loop per rollout running
//! `kubectl rollout status`, `kubectl get pods` and `curl /health` every interval, and
//! `kubectl rollout undo` on a crash-looping pod or three failed health checks.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use super::report::Reference;
use super::serve::Served;
use super::{BenchError, Options, deployment, phases};

const LOOP: &str = r#"kc=$1 ns=$2 name=$3 url=$4 interval=$5 fails=0
while :; do
  kubectl --kubeconfig "$kc" -n "$ns" rollout status "deploy/$name" --timeout=1s >/dev/null 2>&1
  pods=$(kubectl --kubeconfig "$kc" -n "$ns" get pods -l "app=$name" --no-headers 2>/dev/null)
  if grep -qE 'CrashLoopBackOff|ImagePullBackOff|ErrImagePull|CreateContainerConfigError|Error' <<<"$pods"; then
    exec kubectl --kubeconfig "$kc" -n "$ns" rollout undo "deploy/$name" >/dev/null 2>&1
  fi
  if curl -sf --max-time 2 "$url" >/dev/null; then fails=0; else fails=$((fails+1)); fi
  if [ "$fails" -ge 3 ]; then
    exec kubectl --kubeconfig "$kc" -n "$ns" rollout undo "deploy/$name" >/dev/null 2>&1
  fi
  sleep "$interval"
done
"#;

pub async fn run(
    opts: &Options,
    served: &Served,
    set: &[usize],
    dir: &Path,
) -> Result<Reference, BenchError> {
    let mut r = Reference {
        rollouts: set.len(),
        ..Reference::default()
    };
    if which("kubectl").is_none() || which("curl").is_none() {
        return Ok(r);
    }
    let script = dir.join("runbook-loop.sh");
    std::fs::write(&script, LOOP).map_err(|e| BenchError::Write(script.clone(), e))?;
    let health = health_url(&served.config).unwrap_or_default();
    let mut loops = Vec::new();
    for i in set {
        let d = deployment(*i);
        let (ns, name) = d.split_once('/').unwrap_or_default();
        let url = health.replace("{namespace}", ns).replace("{name}", name);
        let child = Command::new("bash")
            .arg(&script)
            .args([
                served.kubeconfig.display().to_string(),
                ns.to_string(),
                name.to_string(),
                url,
                format!("{}", opts.interval.as_secs_f64()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn("runbook loop (bash)", e))?;
        loops.push(child);
    }
    // Let every loop reach its steady rhythm before the rollouts.
    tokio::time::sleep(3 * opts.interval).await;
    let before = total(&served.state().await?);
    let started = Instant::now();
    (r.detection, r.requests_per_rollout) =
        phases::crashloop(served, set, "crash-ref", true).await?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let after = total(&served.state().await?);
    r.requests_per_rollout_minute = (after - before) / set.len().max(1) as f64 / minutes;
    for mut l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(3), l.wait()).await;
        let _ = l.kill().await;
    }
    Ok(r)
}

fn total(state: &serde_json::Value) -> f64 {
    state["requests"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_f64()).sum())
        .unwrap_or(0.0)
}

fn health_url(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: serde_json::Value = serde_norway::from_str(&text).ok()?;
    v.pointer("/health/url")?.as_str().map(str::to_string)
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}
