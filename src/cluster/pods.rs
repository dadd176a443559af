//! Diagnosis of the new ReplicaSet's pods: the states the runbook's `kubectl get pods` looks for.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use crate::judge::{PendingPod, PodFailure, Reason};

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

fn container_failure(c: &ContainerStatus) -> Option<(Reason, String)> {
    let last_exit = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    let restarts = c.restart_count;
    if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref())
        && let Some(reason) = w.reason.as_deref().and_then(waiting_reason)
    {
        let mut detail = format!(
            "container {} {}",
            c.name,
            w.reason.as_deref().unwrap_or_default()
        );
        if restarts > 0 {
            detail.push_str(&format!(" (restarts: {restarts}"));
            if let Some(code) = last_exit {
                detail.push_str(&format!(", last exit code {code}"));
            }
            detail.push(')');
        }
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            detail.push_str(&format!(": {m}"));
        }
        return Some((reason, detail));
    }
    // Terminated with an error and restarting, caught before the kubelet's back-off shows.
    if restarts > 0
        && let Some(code) = last_exit.filter(|c| *c != 0)
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
pub fn failure<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodFailure> {
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for c in containers {
            if let Some((reason, detail)) = container_failure(c) {
                return Some(PodFailure {
                    pod: pod.name_any(),
                    reason,
                    detail,
                });
            }
        }
    }
    None
}

/// The longest-pending unscheduled pod, with the scheduler's message.
pub fn pending<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    now: jiff::Timestamp,
) -> Option<PendingPod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
        .filter_map(|p| {
            let unscheduled = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
            let created = p.metadata.creation_timestamp.as_ref()?.0;
            let pending_for = now.duration_since(created).unsigned_abs();
            Some(PendingPod {
                pod: p.name_any(),
                pending_for,
                message: unscheduled
                    .message
                    .clone()
                    .unwrap_or_else(|| "Unschedulable".into()),
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

    fn pod_with(c: ContainerStatus) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("app-abc-12345".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![c]),
                ..Default::default()
            }),
            ..Default::default()
        }
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
        let pod = Pod {
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
        };
        let now = jiff::Timestamp::from_second(1_150).expect("valid");
        let p = pending([&pod], now).expect("pending");
        assert_eq!(p.pending_for, Duration::from_secs(150));
        assert!(p.message.contains("Insufficient cpu"));
    }
}
