//! `kubectl rollout undo` as a person runs it (kubectl's `polymorphichelpers/rollback.go`): the
//! second-highest revision among the Deployment's ReplicaSets, refused on a paused Deployment,
//! skipped when the template already matches, else one replace of the template and of the
//! annotations (the ReplicaSet's, but the Deployment's own revision bookkeeping keys).

use serde_json::{Value, json};

use super::objects::{equal_ignore_hash, strip_hash_label};
use super::revisions::{SKIPPED_ANNOTATIONS, revision};
use super::state::State;
use super::store::{Kind, meta_str};

/// What `kubectl rollout undo` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undone {
    /// The template of the ReplicaSet at this revision is the Deployment's now.
    RolledBack(i64),
    /// "skipped rollback": the template already matched that revision.
    Skipped(i64),
}

/// Runs the undo on the stored Deployment; the error is kubectl's message.
pub fn undo(st: &mut State, ns: &str, name: &str) -> Result<Undone, String> {
    let dep = st
        .store
        .get(Kind::Deployment, ns, name)
        .ok_or_else(|| format!("deployments.apps {name:?} not found"))?;
    let uid = meta_str(&dep, "uid").unwrap_or_default().to_string();
    // Owned ReplicaSets in list (name) order, as kubectl scans them.
    let mut latest: Option<(i64, std::sync::Arc<Value>)> = None;
    let mut previous: Option<(i64, std::sync::Arc<Value>)> = None;
    for rs in st.store.dependents(&uid, Kind::ReplicaSet) {
        // No annotation is revision 0 to kubectl; one that is not a number is skipped.
        let v = match rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(super::revisions::REVISION))
        {
            None => 0,
            Some(r) => match r.as_str().and_then(|r| r.parse::<i64>().ok()) {
                Some(_) => revision(&rs),
                None => continue,
            },
        };
        if latest.as_ref().is_none_or(|(l, _)| *l < v) {
            previous = latest.take();
            latest = Some((v, rs));
        } else if previous.as_ref().is_none_or(|(p, _)| *p < v) {
            previous = Some((v, rs));
        }
    }
    let (target_revision, target) =
        previous.ok_or_else(|| format!("no rollout history found for deployment {name:?}"))?;
    if dep.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        return Err("you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again".into());
    }
    let mut template = target
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let current = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if equal_ignore_hash(&template, &current) {
        return Ok(Undone::Skipped(target_revision));
    }
    strip_hash_label(&mut template);
    let mut annotations = serde_json::Map::new();
    if let Some(own) = dep
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for key in SKIPPED_ANNOTATIONS {
            if let Some(v) = own.get(key) {
                annotations.insert(key.to_string(), v.clone());
            }
        }
    }
    if let Some(theirs) = target
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in theirs {
            if !SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    let mut new = (*dep).clone();
    new["spec"]["template"] = template;
    new["metadata"]["annotations"] = Value::Object(annotations);
    // A spec change: the API server bumps the generation.
    super::write::bump_generation(&dep, &mut new);
    st.write(Kind::Deployment, new);
    Ok(Undone::RolledBack(target_revision))
}
