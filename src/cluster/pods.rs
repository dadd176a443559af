//! Diagnosis of the new ReplicaSet's pods: the states the runbook's `kubectl get pods` looks for,
//! told apart from the noise every cluster makes.
//!
//! The diagnosis reads a [`PodRecord`]: what it needs of a pod and nothing else. Every pod of a
//! namespace with a rollout watched is kept, and a decoded `Pod`, even without its spec, is
//! several kilobytes; a record is a few hundred bytes.
//!
//! What rolls back at once: a container in `CrashLoopBackOff` (the kubelet restarts a container
//! at once after its first exit and backs off only from the second, so the back-off means it
//! crashed repeatedly), an image that does not exist or may not be pulled, an invalid image name,
//! and a container restarted twice since the rollout began. What is possibly transient and fails
//! only once it has lasted the grace period: a single restart after which the container has not
//! run again, an image pull failing for another cause (registry 429 or 5xx, a timeout, a
//! registry unreachable), `CreateContainerConfigError` (a Secret or ConfigMap an operator may
//! create a moment later) and the kubelet's other create and start errors. Restarts count only
//! when they happened after the rollout began: a pod that existed before has its restart count
//! at first sight as its baseline.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
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
    /// Its `Ready` condition is `True`: the Service sends it traffic (unless it is deleting).
    pub ready: bool,
    /// In phase `Pending` with `PodScheduled=False`: the scheduler's message.
    pub unscheduled: Option<String>,
    /// Init containers first, then the app's, as the kubelet reports them.
    pub containers: Vec<ContainerRecord>,
}

/// What a container is to its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerKind {
    /// One of the pod's `containers`.
    #[default]
    App,
    /// An init container that runs to completion before the app starts: while it crash-loops
    /// the pod never starts.
    Init,
    /// A native sidecar: an init container with `restartPolicy: Always`, running beside the
    /// app for the pod's life.
    Sidecar,
}

impl ContainerKind {
    fn label(self) -> &'static str {
        match self {
            ContainerKind::App => "container",
            ContainerKind::Init => "init container",
            ContainerKind::Sidecar => "sidecar",
        }
    }
}

/// What the diagnosis reads of one container's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRecord {
    pub name: String,
    pub kind: ContainerKind,
    /// The reason and message it is waiting with, if waiting.
    pub waiting: Option<(String, Option<String>)>,
    /// Running now (or, an init container, completed).
    pub running: bool,
    pub restarts: i32,
    /// The exit code of its last termination, if it terminated before.
    pub last_exit: Option<i32>,
    /// The reason of its last termination (`Error`, `OOMKilled`, `Completed`).
    pub last_reason: Option<String>,
    /// When its last termination happened.
    pub last_finished: Option<jiff::Timestamp>,
}

impl ContainerRecord {
    fn from_status(c: &ContainerStatus, kind: ContainerKind) -> Self {
        let state = c.state.as_ref();
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        ContainerRecord {
            name: c.name.clone(),
            kind,
            waiting: state
                .and_then(|s| s.waiting.as_ref())
                .map(|w| (w.reason.clone().unwrap_or_default(), w.message.clone())),
            running: state.is_some_and(|s| {
                s.running.is_some() || s.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
            }),
            restarts: c.restart_count,
            last_exit: last.map(|t| t.exit_code),
            last_reason: last.and_then(|t| t.reason.clone()),
            last_finished: last.and_then(|t| t.finished_at.as_ref()).map(|t| t.0),
        }
    }
}

impl From<&ContainerStatus> for ContainerRecord {
    fn from(c: &ContainerStatus) -> Self {
        ContainerRecord::from_status(c, ContainerKind::App)
    }
}

/// Whether the init container `name` of `spec` is a native sidecar (`restartPolicy: Always`).
fn is_native_sidecar(init: Option<&Vec<Container>>, name: &str) -> bool {
    init.into_iter()
        .flatten()
        .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
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
        let init_specs = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref());
        let containers = status
            .map(|s| {
                let init = s.init_container_statuses.iter().flatten().map(|c| {
                    let kind = if is_native_sidecar(init_specs, &c.name) {
                        ContainerKind::Sidecar
                    } else {
                        ContainerKind::Init
                    };
                    ContainerRecord::from_status(c, kind)
                });
                let app = s
                    .container_statuses
                    .iter()
                    .flatten()
                    .map(|c| ContainerRecord::from_status(c, ContainerKind::App));
                init.chain(app).collect()
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
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
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

/// Why an image pull failed, as far as the kubelet's message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullCause {
    /// The image does not exist, or the node may not pull it: no retry fixes that.
    Missing,
    /// Rate-limited, a registry error, a timeout, unreachable, or a cause not recognised.
    Transient,
}

/// Reads the runtime's pull error. A transient cause wins over words that look permanent (a
/// 429 answered on the token endpoint still says "token").
fn pull_cause(message: &str) -> PullCause {
    let m = message.to_ascii_lowercase();
    const TRANSIENT: &[&str] = &[
        "too many requests",
        "toomanyrequests",
        "rate limit",
        "internal server error",
        "bad gateway",
        "service unavailable",
        "gateway timeout",
        "timeout",
        "timed out",
        "deadline exceeded",
        "connection refused",
        "connection reset",
        "i/o ",
        ": eof",
        "tls handshake",
        "no such host",
        "registry is unavailable",
        "temporar",
        "try again",
    ];
    const MISSING: &[&str] = &[
        "not found",
        "manifest unknown",
        "name unknown",
        "repository does not exist",
        "unauthorized",
        "denied",
        "forbidden",
        "authentication required",
    ];
    if TRANSIENT.iter().any(|t| m.contains(t)) {
        PullCause::Transient
    } else if MISSING.iter().any(|t| m.contains(t)) {
        PullCause::Missing
    } else {
        PullCause::Transient
    }
}

/// What one container shows.
#[derive(Debug, Clone, PartialEq)]
enum Finding {
    /// Rolls back now.
    Now(Reason, String),
    /// Rolls back once it has lasted the grace period, counted from `since`.
    Lasting {
        since: jiff::Timestamp,
        reason: Reason,
        detail: String,
    },
}

/// The pod diagnosis of one rollout: pure (time arrives as data), with a memory across
/// observations of what a single look cannot tell.
#[derive(Debug, Clone)]
pub struct PodDiagnosis {
    /// When the rollout began: restarts and waits before it are not this release's.
    began: jiff::Timestamp,
    /// How long a possibly transient state may last.
    grace: Duration,
    /// (pod, container) → restart count at first sight, for pods created before `began`.
    baselines: HashMap<(String, String), i32>,
    /// (pod, container) → the last pull error seen: a kubelet older than 1.32 does not repeat
    /// it in its `ImagePullBackOff` message.
    pull_errors: HashMap<(String, String), String>,
}

impl PodDiagnosis {
    pub fn new(began: jiff::Timestamp, grace: Duration) -> Self {
        PodDiagnosis {
            began,
            grace,
            baselines: HashMap::new(),
            pull_errors: HashMap::new(),
        }
    }

    /// The failure that rolls back now, if any: one that needs no waiting first, else a
    /// possibly transient one that has lasted the grace period (the longest lasting).
    pub fn failure<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a PodRecord>,
        now: jiff::Timestamp,
    ) -> Option<PodFailure> {
        let mut lasted: Option<(Duration, PodFailure)> = None;
        for pod in pods.into_iter().filter(|p| !p.deleting) {
            for c in &pod.containers {
                match self.container(pod, c) {
                    Some(Finding::Now(reason, detail)) => {
                        return Some(PodFailure {
                            pod: pod.name.clone(),
                            reason,
                            detail,
                        });
                    }
                    Some(Finding::Lasting {
                        since,
                        reason,
                        detail,
                    }) => {
                        let d = Duration::try_from(now.duration_since(since)).unwrap_or_default();
                        if d >= self.grace && lasted.as_ref().is_none_or(|(l, _)| d > *l) {
                            let detail = format!(
                                "{detail} (for {}, grace {})",
                                crate::judge::human(d),
                                crate::judge::human(self.grace)
                            );
                            lasted = Some((
                                d,
                                PodFailure {
                                    pod: pod.name.clone(),
                                    reason,
                                    detail,
                                },
                            ));
                        }
                    }
                    None => {}
                }
            }
        }
        lasted.map(|(_, f)| f)
    }

    fn container(&mut self, pod: &PodRecord, c: &ContainerRecord) -> Option<Finding> {
        let key = (pod.name.clone(), c.name.clone());
        // A pod created after the rollout began has all its restarts in it; an older one
        // (a ReplicaSet taken up again) counts from the restarts it had when first seen.
        // Creation times have whole seconds: one created in the second the rollout was
        // detected is this rollout's.
        let new_pod = pod
            .created
            .is_some_and(|t| t >= self.began - jiff::SignedDuration::from_secs(1));
        let base = if new_pod {
            0
        } else {
            *self.baselines.entry(key.clone()).or_insert(c.restarts)
        };
        let restarts = (c.restarts - base).max(0);
        let what = format!("{} {}", c.kind.label(), c.name);
        let started = pod.created.map_or(self.began, |t| t.max(self.began));
        let since = c
            .last_finished
            .filter(|t| restarts > 0 && *t >= started)
            .unwrap_or(started);
        let lasting = |reason, detail| {
            Some(Finding::Lasting {
                since,
                reason,
                detail,
            })
        };
        if let Some((waiting, message)) = &c.waiting {
            let message = message.as_deref().filter(|m| !m.is_empty());
            let mut detail = format!("{what} {waiting}");
            if c.restarts > 0 {
                detail.push_str(&format!(" (restarts: {}", c.restarts));
                if let Some(code) = c.last_exit {
                    detail.push_str(&format!(", last exit code {code}"));
                }
                detail.push(')');
            }
            if let Some(m) = message {
                detail.push_str(&format!(": {m}"));
            }
            match waiting.as_str() {
                // The kubelet backs off from a container's second exit on: it crashed
                // repeatedly, and an init container or sidecar doing so keeps the pod from
                // ever serving.
                "CrashLoopBackOff" => return Some(Finding::Now(Reason::Crashloop, detail)),
                "ErrImagePull" | "ImagePullBackOff" => {
                    if waiting == "ErrImagePull"
                        && let Some(m) = message
                    {
                        self.pull_errors.insert(key.clone(), m.to_string());
                    }
                    // Since 1.32 the back-off message carries the last pull error; before,
                    // only the pull attempt said it.
                    let cause = match (message, self.pull_errors.get(&key)) {
                        (Some(m), _) if m.contains(": ") => pull_cause(m),
                        (_, Some(last)) => pull_cause(last),
                        (Some(m), None) => pull_cause(m),
                        (None, None) => PullCause::Transient,
                    };
                    if !message.is_some_and(|m| m.contains(": "))
                        && let Some(last) = self.pull_errors.get(&key)
                    {
                        detail.push_str(&format!(" (last pull error: {last})"));
                    }
                    return match cause {
                        PullCause::Missing => Some(Finding::Now(Reason::ImagePull, detail)),
                        PullCause::Transient => lasting(Reason::ImagePull, detail),
                    };
                }
                // The image reference itself is wrong: no retry fixes it.
                "InvalidImageName" | "ErrImageNeverPull" => {
                    return Some(Finding::Now(Reason::ImagePull, detail));
                }
                "RegistryUnavailable" | "SignatureValidationFailed" | "ImageInspectError" => {
                    return lasting(Reason::ImagePull, detail);
                }
                // A missing Secret or ConfigMap (created a moment later, often), a runtime
                // hiccup: real when it lasts.
                "CreateContainerConfigError"
                | "CreateContainerError"
                | "RunContainerError"
                | "PreStartHookError"
                | "PostStartHookError" => return lasting(Reason::Crashloop, detail),
                _ => {}
            }
        }
        let last = match (&c.last_reason, c.last_exit) {
            (Some(r), Some(code)) => format!("{r}, exit code {code}"),
            (None, Some(code)) => format!("exit code {code}"),
            (Some(r), None) => r.clone(),
            (None, None) => "terminated".into(),
        };
        if restarts >= 2 {
            // Repeated: a crash loop, even when the back-off is not showing right now.
            return Some(Finding::Now(
                Reason::Crashloop,
                format!("{what} restarted {restarts} times since the rollout began (last: {last})"),
            ));
        }
        if restarts == 1 && !c.running {
            // One restart is noise (an OOMKill while warming, a node reboot, a liveness
            // kill) once the container runs again; one that does not is judged as it lasts.
            return lasting(
                Reason::Crashloop,
                format!("{what} has not run again since it restarted ({last})"),
            );
        }
        None
    }
}

/// The failures that roll back at once, judged from one look at pods with no history (every
/// restart counts as this rollout's only from the second; nothing has lasted yet).
pub fn failure<'a>(pods: impl IntoIterator<Item = &'a PodRecord>) -> Option<PodFailure> {
    PodDiagnosis::new(jiff::Timestamp::UNIX_EPOCH, Duration::MAX)
        .failure(pods, jiff::Timestamp::UNIX_EPOCH)
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

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("valid")
    }

    /// A pod of the new ReplicaSet created at `created`, with `c` its one container.
    fn new_pod(created: i64, c: ContainerRecord) -> PodRecord {
        PodRecord {
            name: "app-abc-12345".into(),
            controller_uid: None,
            template_hash: None,
            created: Some(at(created)),
            deleting: false,
            ready: false,
            unscheduled: None,
            containers: vec![c],
        }
    }

    fn container(waiting: Option<(&str, &str)>, restarts: i32) -> ContainerRecord {
        ContainerRecord {
            name: "app".into(),
            kind: ContainerKind::App,
            waiting: waiting.map(|(r, m)| (r.to_string(), (!m.is_empty()).then(|| m.into()))),
            running: waiting.is_none(),
            restarts,
            last_exit: (restarts > 0).then_some(1),
            last_reason: (restarts > 0).then(|| "Error".into()),
            last_finished: (restarts > 0).then(|| at(1_010)),
        }
    }

    const GRACE: Duration = Duration::from_secs(90);

    /// The rollout began at 1,000 s; the verdict at `now`.
    fn verdict(pod: &PodRecord, now: i64) -> Option<PodFailure> {
        PodDiagnosis::new(at(1_000), GRACE).failure([pod], at(now))
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
            failure([&pod_with(waiting("InvalidImageName", 0))]).map(|f| f.reason),
            Some(Reason::ImagePull)
        );
        assert_eq!(failure([&pod_with(waiting("ContainerCreating", 0))]), None);
    }

    #[test]
    fn crashloop_in_new_replicaset_rolls_back_without_waiting() {
        let c = container(
            Some((
                "CrashLoopBackOff",
                "back-off 10s restarting failed container=app pod=app-abc-12345_production(u)",
            )),
            2,
        );
        let f = verdict(&new_pod(1_001, c), 1_011).expect("at once");
        assert_eq!(f.reason, Reason::Crashloop);
        assert!(f.detail.contains("back-off 10s"), "{}", f.detail);
    }

    #[test]
    fn a_missing_or_forbidden_image_rolls_back_without_waiting() {
        for m in [
            "rpc error: code = NotFound desc = failed to pull and unpack image \"r/app:v2\": failed to resolve reference \"r/app:v2\": r/app:v2: not found",
            "failed to pull and unpack image: manifest unknown: manifest unknown",
            "failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized",
            "pull access denied, repository does not exist or may require authorization: server message: insufficient_scope",
        ] {
            let f = verdict(
                &new_pod(1_001, container(Some(("ErrImagePull", m)), 0)),
                1_002,
            );
            assert_eq!(f.map(|f| f.reason), Some(Reason::ImagePull), "{m}");
        }
        // Since 1.32 the back-off message carries the last pull error.
        let backoff = "Back-off pulling image \"r/app:v2\": ErrImagePull: rpc error: code = NotFound desc = r/app:v2: not found";
        let f = verdict(
            &new_pod(1_001, container(Some(("ImagePullBackOff", backoff)), 0)),
            1_002,
        );
        assert_eq!(f.map(|f| f.reason), Some(Reason::ImagePull));
    }

    #[test]
    fn a_transient_pull_error_fails_only_once_it_has_lasted_the_grace() {
        let limited = "failed to pull and unpack image \"docker.io/r/app:v2\": failed to copy: httpReadSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/r/app/manifests/sha256:ab: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit";
        for m in [
            limited,
            "failed to do request: Head \"https://registry.example.com/v2/app/manifests/v2\": dial tcp 10.0.0.1:443: i/o timeout",
            "unexpected status from HEAD request: 503 Service Unavailable",
            "",
        ] {
            let pod = new_pod(1_001, container(Some(("ErrImagePull", m)), 0));
            assert_eq!(verdict(&pod, 1_060), None, "{m}");
            let f = verdict(&pod, 1_092).expect("lasted past the grace");
            assert_eq!(f.reason, Reason::ImagePull);
            assert!(f.detail.contains("grace 1m 30s"), "{}", f.detail);
        }
    }

    #[test]
    fn an_image_pull_back_off_of_an_older_kubelet_is_judged_by_the_pull_error_before_it() {
        let mut d = PodDiagnosis::new(at(1_000), GRACE);
        let pull = new_pod(
            1_001,
            container(Some(("ErrImagePull", "429 Too Many Requests")), 0),
        );
        assert_eq!(d.failure([&pull], at(1_002)), None);
        let backoff = new_pod(
            1_001,
            container(
                Some(("ImagePullBackOff", "Back-off pulling image \"r/app:v2\"")),
                0,
            ),
        );
        assert_eq!(d.failure([&backoff], at(1_012)), None);
        let missing = new_pod(
            1_001,
            container(Some(("ErrImagePull", "r/app:v2: not found")), 0),
        );
        assert!(d.failure([&missing], at(1_030)).is_some());
        let f = d.failure([&backoff], at(1_031)).expect("not found before");
        assert!(
            f.detail.contains("last pull error: r/app:v2: not found"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn a_config_error_fails_only_once_it_has_lasted_the_grace() {
        let pod = new_pod(
            1_001,
            container(
                Some((
                    "CreateContainerConfigError",
                    "secret \"app-credentials\" not found",
                )),
                0,
            ),
        );
        assert_eq!(verdict(&pod, 1_090), None);
        let f = verdict(&pod, 1_100).expect("lasted");
        assert_eq!(f.reason, Reason::Crashloop);
        assert!(
            f.detail
                .starts_with("container app CreateContainerConfigError: secret \"app-credentials\" not found (for 1m 39s"),
            "{}",
            f.detail
        );
    }

    #[test]
    fn one_restart_that_runs_again_is_noise() {
        let mut c = container(None, 1);
        c.last_exit = Some(137);
        c.last_reason = Some("OOMKilled".into());
        let pod = new_pod(1_001, c);
        assert_eq!(verdict(&pod, 1_010), None);
        assert_eq!(verdict(&pod, 2_000), None, "however long it runs after");
    }

    #[test]
    fn one_restart_that_does_not_run_again_fails_after_the_grace() {
        let mut c = container(Some(("ContainerCreating", "")), 1);
        c.running = false;
        let pod = new_pod(1_001, c);
        assert_eq!(verdict(&pod, 1_050), None);
        let f = verdict(&pod, 1_101).expect("from the termination at 1,010 s");
        assert!(f.detail.contains("has not run again"), "{}", f.detail);
    }

    #[test]
    fn a_second_restart_is_a_crash_loop_even_before_the_back_off_shows() {
        let f = verdict(&new_pod(1_001, container(None, 2)), 1_011).expect("repeated");
        assert_eq!(f.reason, Reason::Crashloop);
        assert_eq!(
            f.detail,
            "container app restarted 2 times since the rollout began (last: Error, exit code 1)"
        );
    }

    #[test]
    fn restarts_before_the_rollout_began_do_not_count() {
        let mut d = PodDiagnosis::new(at(1_000), GRACE);
        // A pod of a ReplicaSet taken up again, with 5 restarts from its earlier life.
        let mut old = new_pod(500, container(None, 5));
        assert_eq!(d.failure([&old], at(1_001)), None);
        old.containers[0].restarts = 6;
        assert_eq!(d.failure([&old], at(1_100)), None, "one restart since");
        old.containers[0].restarts = 7;
        assert!(d.failure([&old], at(1_200)).is_some(), "two since");
    }

    #[test]
    fn init_containers_and_sidecars_are_judged_for_what_they_are() {
        let mut init = container(Some(("CrashLoopBackOff", "back-off 20s")), 3);
        init.name = "migrate".into();
        init.kind = ContainerKind::Init;
        let mut app = container(Some(("PodInitializing", "")), 0);
        app.running = false;
        let mut pod = new_pod(1_001, init);
        pod.containers.push(app.clone());
        let f = verdict(&pod, 1_030).expect("an init container crash loop blocks the pod");
        assert!(
            f.detail
                .starts_with("init container migrate CrashLoopBackOff"),
            "{}",
            f.detail
        );

        // A native sidecar that crashed once while starting late, and the app waiting for it.
        let mut sidecar = container(None, 1);
        sidecar.name = "istio-proxy".into();
        sidecar.kind = ContainerKind::Sidecar;
        let mut pod = new_pod(1_001, sidecar);
        pod.containers.push(app);
        assert_eq!(verdict(&pod, 1_030), None);
        assert_eq!(verdict(&pod, 1_300), None);
    }

    #[test]
    fn native_sidecars_are_told_from_init_containers_by_their_restart_policy() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "migrate", "image": "m"},
                    {"name": "istio-proxy", "image": "i", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "app", "image": "a"}]
            },
            "status": {
                "initContainerStatuses": [
                    {"name": "migrate", "image": "m", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "istio-proxy", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                     "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                  "finishedAt": "2026-01-01T00:00:00Z"}}}
                ],
                "containerStatuses": [
                    {"name": "app", "image": "a", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}}
                ]
            }
        }))
        .expect("a pod");
        let r = PodRecord::from(&pod);
        let kinds: Vec<_> = r
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.running))
            .collect();
        assert_eq!(
            kinds,
            [
                ("migrate", ContainerKind::Init, true),
                ("istio-proxy", ContainerKind::Sidecar, true),
                ("app", ContainerKind::App, true)
            ]
        );
        assert_eq!(r.containers[1].last_reason.as_deref(), Some("Error"));
        assert!(r.containers[1].last_finished.is_some());
    }

    #[test]
    fn a_failure_needing_no_wait_wins_over_one_that_lasted() {
        let lasting = new_pod(
            1_001,
            container(Some(("CreateContainerConfigError", "x")), 0),
        );
        let mut now = new_pod(1_001, container(Some(("CrashLoopBackOff", "")), 2));
        now.name = "other".into();
        let f = PodDiagnosis::new(at(1_000), GRACE)
            .failure([&lasting, &now], at(1_200))
            .expect("failing");
        assert_eq!(f.pod, "other");
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
