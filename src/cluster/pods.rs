//! Diagnosis of the new ReplicaSet's pods: the states the runbook's `kubectl get pods` looks for.
//!
//! The diagnosis reads a [`PodRecord`]: what it needs of a pod and nothing else. Every pod of a
//! namespace with a rollout watched is kept, and a decoded `Pod`, even without its spec, is
//! several kilobytes; a record is a few hundred bytes.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use super::rollout::HASH_LABEL;
use crate::judge::{PendingPod, PodFailure, Reason};

/// What the diagnosis and the caches' index read of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub name: String,
    /// The UID of its controller (its ReplicaSet).
    pub controller_uid: Option<String>,
    /// Its `pod-template-hash` label.
    pub template_hash: Option<String>,
    pub created: Option<jiff::Timestamp>,
    /// Being deleted (`deletionTimestamp` set): a pod on its way out is not diagnosed.
    pub deleting: bool,
    /// In phase `Pending` with `PodScheduled=False`: the scheduler's message.
    pub unscheduled: Option<String>,
    /// Init containers first, then the app's, as the kubelet reports them.
    pub containers: Vec<ContainerRecord>,
}

/// What the diagnosis reads of one container's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    /// The reason and message it is waiting with, if waiting.
    pub waiting: Option<(String, Option<String>)>,
    pub restarts: i32,
    /// The exit code of its last termination, if it terminated before.
    pub last_exit: Option<i32>,
}

impl From<&ContainerStatus> for ContainerRecord {
    fn from(c: &ContainerStatus) -> Self {
        ContainerRecord {
            name: c.name.clone(),
            waiting: c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .map(|w| (w.reason.clone().unwrap_or_default(), w.message.clone())),
            restarts: c.restart_count,
            last_exit: c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
        }
    }
}

impl From<&Pod> for PodRecord {
    fn from(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let unscheduled = status
            .filter(|s| s.phase.as_deref() == Some("Pending"))
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
            .map(|c| c.message.clone().unwrap_or_else(|| "Unschedulable".into()));
        let containers = status
            .map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
                    .map(ContainerRecord::from)
                    .collect()
            })
            .unwrap_or_default();
        PodRecord {
            name: pod.name_any(),
            controller_uid: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone()),
            template_hash: pod.labels().get(HASH_LABEL).cloned(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            unscheduled,
            containers,
        }
    }
}

impl From<Pod> for PodRecord {
    fn from(pod: Pod) -> Self {
        PodRecord::from(&pod)
    }
}

/// Waiting reasons a rollback fixes, and how the judge names them.
fn waiting_reason(reason: &str) -> Option<Reason> {
    match reason {
        "CrashLoopBackOff"
        | "CreateContainerConfigError"
        | "CreateContainerError"
        | "RunContainerError" => Some(Reason::Crashloop),
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
            Some(Reason::ImagePull)
        }
        _ => None,
    }
}

fn container_failure(c: &ContainerRecord) -> Option<(Reason, String)> {
    let restarts = c.restarts;
    if let Some((waiting, message)) = &c.waiting
        && let Some(reason) = waiting_reason(waiting)
    {
        let mut detail = format!("container {} {waiting}", c.name);
        if restarts > 0 {
            detail.push_str(&format!(" (restarts: {restarts}"));
            if let Some(code) = c.last_exit {
                detail.push_str(&format!(", last exit code {code}"));
            }
            detail.push(')');
        }
        if let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
            detail.push_str(&format!(": {m}"));
        }
        return Some((reason, detail));
    }
    // Terminated with an error and restarting, caught before the kubelet's back-off shows.
    if restarts > 0
        && let Some(code) = c.last_exit.filter(|c| *c != 0)
    {
        return Some((
            Reason::Crashloop,
            format!(
                "container {} exited with code {code} and is restarting (restarts: {restarts})",
                c.name
            ),
        ));
    }
    None
}

/// The first failing container among the pods, if any.
pub fn failure<'a>(pods: impl IntoIterator<Item = &'a PodRecord>) -> Option<PodFailure> {
    pods.into_iter().filter(|p| !p.deleting).find_map(|pod| {
        pod.containers.iter().find_map(|c| {
            container_failure(c).map(|(reason, detail)| PodFailure {
                pod: pod.name.clone(),
                reason,
                detail,
            })
        })
    })
}

/// The longest-pending unscheduled pod, with the scheduler's message.
pub fn pending<'a>(
    pods: impl IntoIterator<Item = &'a PodRecord>,
    now: jiff::Timestamp,
) -> Option<PendingPod> {
    pods.into_iter()
        .filter(|p| !p.deleting)
        .filter_map(|p| {
            let message = p.unscheduled.clone()?;
            let pending_for = now.duration_since(p.created?).unsigned_abs();
            Some(PendingPod {
                pod: p.name.clone(),
                pending_for,
                message,
            })
        })
        .max_by_key(|p| p.pending_for)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };
    use std::time::Duration;

    fn pod_with(c: ContainerStatus) -> PodRecord {
        PodRecord::from(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("app-abc-12345".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![c]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn waiting(reason: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: "app".into(),
            restart_count: restarts,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: None,
                }),
                ..Default::default()
            }),
            last_state: Some(ContainerState {
                terminated: (restarts > 0).then(|| ContainerStateTerminated {
                    exit_code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_failing_state_is_named() {
        let f = failure([&pod_with(waiting("CrashLoopBackOff", 3))]).expect("failing");
        assert_eq!(f.reason, Reason::Crashloop);
        assert_eq!(
            f.detail,
            "container app CrashLoopBackOff (restarts: 3, last exit code 1)"
        );
        assert_eq!(
            failure([&pod_with(waiting("ImagePullBackOff", 0))]).map(|f| f.reason),
            Some(Reason::ImagePull)
        );
        assert_eq!(
            failure([&pod_with(waiting("ErrImagePull", 0))]).map(|f| f.reason),
            Some(Reason::ImagePull)
        );
        assert_eq!(
            failure([&pod_with(waiting("CreateContainerConfigError", 0))]).map(|f| f.reason),
            Some(Reason::Crashloop)
        );
        assert_eq!(failure([&pod_with(waiting("ContainerCreating", 0))]), None);
    }

    #[test]
    fn an_error_exit_that_restarts_fails_before_the_back_off_shows() {
        let mut c = waiting("ContainerCreating", 1);
        c.state = Some(ContainerState::default());
        assert_eq!(
            failure([&pod_with(c)]).map(|f| f.reason),
            Some(Reason::Crashloop)
        );
    }

    #[test]
    fn pending_reports_the_scheduler_message() {
        let created = jiff::Timestamp::from_second(1_000).expect("valid");
        let pod = PodRecord::from(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("app-x".into()),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    created,
                )),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let now = jiff::Timestamp::from_second(1_150).expect("valid");
        let p = pending([&pod], now).expect("pending");
        assert_eq!(p.pending_for, Duration::from_secs(150));
        assert!(p.message.contains("Insufficient cpu"));
    }
}
