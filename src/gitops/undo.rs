//! What the owner's controller does to a pause: how long it takes to re-apply Git, and what
//! undid a pause that was lost, with the exact fix.

use kube::Client;
use serde_json::Value;

use super::api::get;
use super::pause::parent_would_undo;
use super::{GitopsConfig, OwnerKind, Paused, owner};

/// What undid a pause, as far as the API shows, and the exact fix: a parent that puts the sync
/// back (an ApplicationSet, an app-of-apps parent, the Kustomization that applies a
/// HelmRelease), else someone or something that turned it back on.
pub async fn why_lost(client: &Client, cfg: &GitopsConfig, p: &Paused) -> (String, String) {
    let manual = owner::manual_rollback(&p.owner, &p.namespace, &p.name);
    let owner = &p.owner;
    let obj = get(client, owner.kind, &owner.namespace, &owner.name)
        .await
        .ok();
    if owner.kind == OwnerKind::Application
        && let Some(app) = &obj
        && let Ok(Some((why, fix))) = parent_would_undo(client, cfg, owner, app).await
    {
        return (
            why,
            format!("{fix}; then pause and roll back by hand: {manual}"),
        );
    }
    if owner.kind == OwnerKind::HelmRelease
        && let Some(hr) = &obj
        && let (Some(n), Some(ns)) = (
            hr.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1name")
                .and_then(Value::as_str),
            hr.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1namespace")
                .and_then(Value::as_str),
        )
    {
        return (
            format!(
                "the Flux Kustomization {ns}/{n} that applies {owner} from Git put spec.suspend back"
            ),
            format!(
                "flux -n {ns} suspend kustomization {n} && flux -n {} suspend helmrelease {} && kubectl -n {} rollout undo deployment/{}; then revert the release in Git and resume both",
                owner.namespace, owner.name, p.namespace, p.name
            ),
        );
    }
    (
        format!(
            "someone or something turned the sync of {owner} back on while deploy-watchdog held it paused (its record {} is still there)",
            owner::PAUSED
        ),
        format!("revert the release in Git, or pause and roll back by hand: {manual}"),
    )
}

/// How long after a rollback the owner's controller has had its chance to re-apply Git: Argo
/// CD's self-heal timeout, or the Flux object's `spec.interval`.
pub async fn sync_period(client: &Client, cfg: &GitopsConfig, p: &Paused) -> std::time::Duration {
    if p.owner.kind == OwnerKind::Application {
        return cfg.argocd_self_heal_timeout.get();
    }
    let interval = get(client, p.owner.kind, &p.owner.namespace, &p.owner.name)
        .await
        .ok()
        .and_then(|o| {
            o.pointer("/spec/interval")
                .and_then(Value::as_str)
                .and_then(go_duration)
        });
    // Flux's default interval when unreadable; capped so a check is not put off for hours.
    interval
        .unwrap_or(std::time::Duration::from_secs(600))
        .min(std::time::Duration::from_secs(3600))
}

/// A Go duration as Flux writes it (`10m`, `1m30s`, `500ms`, `1h0m0s`).
pub(super) fn go_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += std::time::Duration::try_from_secs_f64(n * secs).ok()?;
    }
    Some(total)
}
