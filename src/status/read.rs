//! The picture read from the cluster alone: what `deploy-watchdog status` shows with only a
//! kubeconfig. Deployments carry the record (state and live annotations); their ReplicaSets
//! and Pods say how far the rollout got; the watchdog's Events say what it did.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::live::LiveRecord;
use super::{ActionView, PodsView, Report, VerdictView};
use crate::cluster::record::{self, RolloutState};
use crate::cluster::rollout;

/// Which Deployments.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub deployment: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("listing {what}: {source}")]
    List { what: String, source: kube::Error },
    #[error("deployment {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
}

fn list_error(what: &str, scope: &Scope) -> impl FnOnce(kube::Error) -> ReadError {
    let what = match &scope.namespace {
        Some(ns) => format!("{what} in namespace {ns}"),
        None => format!("{what} in all namespaces"),
    };
    move |source| ReadError::List { what, source }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The rollouts of the Deployments in `scope` that the watchdog recorded, and the last
/// `history` verdicts of each.
pub async fn report(client: &Client, scope: &Scope, history: usize) -> Result<Report, ReadError> {
    let ns = scope.namespace.as_deref();
    let deployments: Vec<Deployment> = match (&scope.deployment, ns) {
        (Some(name), Some(namespace)) => {
            let d = Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(list_error("deployments", scope))?
                .ok_or_else(|| ReadError::NotFound {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                })?;
            vec![d]
        }
        (name, _) => api::<Deployment>(client, ns)
            .list(&ListParams::default())
            .await
            .map_err(list_error("deployments", scope))?
            .items
            .into_iter()
            .filter(|d| name.as_ref().is_none_or(|n| d.name_any() == *n))
            .collect(),
    };
    let recorded: Vec<(Deployment, RolloutState)> = deployments
        .into_iter()
        .filter_map(|d| RolloutState::from_deployment(&d).map(|s| (d, s)))
        .collect();
    if recorded.is_empty() {
        return Ok(Report::default());
    }
    let sets = api::<ReplicaSet>(client, ns)
        .list(&ListParams::default())
        .await
        .map_err(list_error("replicasets", scope))?
        .items;
    let pods = api::<Pod>(client, ns)
        .list(&ListParams::default())
        .await
        .map_err(list_error("pods", scope))?
        .items;
    let events = api::<Event>(client, ns)
        .list(&ListParams::default())
        .await
        .map_err(list_error("events", scope))?
        .items;
    let now = jiff::Timestamp::now();
    let mut by_deployment: BTreeMap<(String, String), Vec<&Event>> = BTreeMap::new();
    for e in &events {
        if e.reporting_controller.as_deref() != Some(record::CONTROLLER) {
            continue;
        }
        let Some(r) = &e.regarding else { continue };
        if r.kind.as_deref() != Some("Deployment") {
            continue;
        }
        let key = (
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        by_deployment.entry(key).or_default().push(e);
    }
    for list in by_deployment.values_mut() {
        list.sort_by_key(|e| event_time(e));
    }
    let mut report = Report::default();
    for (d, state) in &recorded {
        let (namespace, name) = (d.namespace().unwrap_or_default(), d.name_any());
        let mut v = super::view_of_state(&namespace, &name, state);
        v.gitops_owner = super::gitops_owner(&d.metadata);
        if let Some(live) = LiveRecord::read(d.annotations(), state.revision) {
            v.checks = live.checks;
            v.checks_at = Some(live.at);
            v.set_window(std::time::Duration::from_secs(live.window_seconds), now);
        }
        v.pods = Some(pods_view(d, &sets, &pods));
        let events = by_deployment
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        v.last_action = events
            .iter()
            .rev()
            .find(|e| revision_of(e) == Some(state.revision))
            .map(|e| action(e));
        let verdicts: Vec<VerdictView> = events
            .iter()
            .rev()
            .filter_map(|e| verdict(e, &namespace, &name))
            .take(history)
            .collect();
        report.recent.extend(verdicts);
        report.rollouts.push(v);
    }
    // Being watched first, then by name.
    report.rollouts.sort_by_key(|v| {
        (
            !super::is_live(&v.phase),
            v.namespace.clone(),
            v.name.clone(),
        )
    });
    report.recent.sort_by_key(|v| std::cmp::Reverse(v.at));
    Ok(report)
}

fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn annotation<'a>(e: &'a Event, key: &str) -> Option<&'a String> {
    e.metadata.annotations.as_ref()?.get(key)
}

fn revision_of(e: &Event) -> Option<i64> {
    annotation(e, record::EVENT_REVISION)?.parse().ok()
}

fn action(e: &Event) -> ActionView {
    ActionView {
        at: event_time(e),
        reason: e.reason.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
        warning: e.type_.as_deref() == Some("Warning"),
    }
}

fn verdict(e: &Event, namespace: &str, name: &str) -> Option<VerdictView> {
    let outcome = annotation(e, record::EVENT_OUTCOME)?.clone();
    Some(VerdictView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        revision: revision_of(e).unwrap_or(0),
        from_version: annotation(e, record::EVENT_FROM_VERSION).cloned(),
        to_version: annotation(e, record::EVENT_TO_VERSION).cloned(),
        outcome,
        reason: annotation(e, record::EVENT_REASON).cloned(),
        note: e.note.clone().unwrap_or_default(),
        at: event_time(e),
    })
}

/// Ready pods of the new and the old ReplicaSets, and the new ones' container restarts.
fn pods_view(d: &Deployment, sets: &[ReplicaSet], pods: &[Pod]) -> PodsView {
    let owned = rollout::owned(d, sets.iter());
    let new_set = rollout::new_replica_set(d, &owned);
    let ready = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    let new_uid = new_set.and_then(|rs| rs.metadata.uid.clone());
    let restarts = pods
        .iter()
        .filter(|p| {
            new_uid.is_some()
                && p.metadata.owner_references.as_ref().is_some_and(|o| {
                    o.iter()
                        .any(|o| o.controller == Some(true) && Some(&o.uid) == new_uid.as_ref())
                })
        })
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
        })
        .sum();
    PodsView {
        new_ready: new_set.map(ready).unwrap_or(0),
        new_desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        old_ready: owned
            .iter()
            .filter(|rs| rs.metadata.uid != new_uid)
            .map(|rs| ready(rs))
            .sum(),
        restarts,
    }
}
