//! After a rollback: where a paused owner is now, the sync resumed exactly as it was or paused
//! again, and the pause's record on the owner (checked, forgotten, taken up by a new leader).

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::api::{get, patch_target, read_target};
use super::{GitopsConfig, GitopsError, OwnerKind, PauseRecord, Paused, owner};

/// Where an owner is now: whether our pause is still in force, and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Now {
    pub holds: bool,
    pub revision: Option<String>,
    /// Our pause record is still on it (gone: someone resumed by hand).
    pub recorded: bool,
}

/// Reads the pause and the owner's revision.
pub async fn now(client: &Client, p: &Paused) -> Result<Now, GitopsError> {
    let target = read_target(client, p).await?;
    let owner = if p.method.patches_deployment() {
        get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await?
    } else {
        target.clone()
    };
    Ok(Now {
        holds: owner::holds(p.method, &target),
        revision: owner::revision(p.owner.kind, &owner),
        recorded: owner::record_on(&target).is_some(),
    })
}

/// Restores the sync exactly as it was before the pause.
pub async fn resume(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    patch_target(client, p, &owner::resume_patch(p.method, &p.record)).await
}

/// Notes on the record that the held check was done.
pub async fn mark_checked(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    let record = PauseRecord {
        checked: true,
        ..p.record.clone()
    };
    let body = serde_json::json!({"metadata": {"annotations": {
        owner::PAUSED: serde_json::to_string(&record).unwrap_or_default()
    }}});
    patch_target(client, p, &body).await
}

/// Takes our record off a pause that is no longer ours to keep (it was undone), leaving the
/// sync as it is: no later process takes it up again.
pub async fn forget(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    patch_target(client, p, &owner::forget_patch()).await
}

/// Pauses a sync we resumed again, as it is now (at the revision Git moved to): the same method,
/// a new record. `Ok(None)`: the pause did not hold.
pub async fn pause_again(client: &Client, p: &Paused) -> Result<Option<Paused>, GitopsError> {
    let obj = get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await?;
    let again = Paused {
        record: PauseRecord {
            automated: obj.pointer("/spec/syncPolicy/automated").cloned(),
            revision: owner::revision(p.owner.kind, &obj),
            deployment: p.record.deployment.clone(),
            checked: false,
        },
        ..p.clone()
    };
    patch_target(
        client,
        &again,
        &owner::pause_patch(again.method, &again.record),
    )
    .await?;
    let target = read_target(client, &again).await?;
    Ok(owner::holds(again.method, &target).then_some(again))
}

/// The pause recorded on a guarded Deployment's owner, if any: what a process that starts
/// leading takes up. Only a record naming this Deployment counts (an owner may apply several).
pub async fn recorded_pause(
    client: &Client,
    cfg: &GitopsConfig,
    deployment: &Deployment,
) -> Result<Option<Paused>, GitopsError> {
    let (namespace, name) = (
        deployment.namespace().unwrap_or_default(),
        deployment.name_any(),
    );
    let Some(owner) = owner::discover(
        cfg,
        &namespace,
        &name,
        deployment.labels(),
        deployment.annotations(),
    ) else {
        return Ok(None);
    };
    let target = if owner.kind == OwnerKind::Kustomization {
        serde_json::to_value(deployment).unwrap_or(Value::Null)
    } else {
        match get(client, owner.kind, &owner.namespace, &owner.name).await {
            Ok(obj) => obj,
            Err(GitopsError::CrdAbsent { .. } | GitopsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let Some(record) = owner::record_on(&target) else {
        return Ok(None);
    };
    if record.deployment != format!("{namespace}/{name}") {
        return Ok(None);
    }
    Ok(Some(Paused {
        method: owner::method_on(owner.kind, &target),
        record,
        owner,
        namespace,
        name,
    }))
}
