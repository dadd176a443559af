//! Pod lifecycle: what state a pod is in, as a pure function of its app's behaviour and the
//! time since it was created (or since its behaviour last changed), and the status it shows.
//!
//! Times are short on purpose (a simulated kubelet): a healthy pod is Ready ~150 ms after
//! creation, crash-loop and image-pull back-offs start at 200 ms and double up to 1.6 s.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::sim::behaviour::{Behaviour, PodMode};

use super::objects::now_rfc3339;

const CREATE: Duration = Duration::from_millis(50);
const READY: Duration = Duration::from_millis(150);
const RUN_BEFORE_CRASH: Duration = Duration::from_millis(100);
const PULL_ATTEMPT: Duration = Duration::from_millis(100);
const BACKOFF_CAP_STEP: u32 = 3;

fn backoff(k: u32) -> Duration {
    Duration::from_millis(200) * 2u32.pow(k.min(BACKOFF_CAP_STEP))
}

/// What the simulated kubelet remembers of a pod.
#[derive(Debug, Clone)]
pub struct PodRuntime {
    pub namespace: String,
    pub deployment: String,
    pub version: String,
    pub image: String,
    pub mode: PodMode,
    /// When the current mode began (creation, or the last behaviour change that altered it).
    pub since: Instant,
    /// Restarts counted before the current mode began.
    pub restart_base: i64,
    pub last: Option<PodState>,
    pub pod_ip: String,
    pub node: String,
}

/// The container's state, as `kubectl get pods` summarises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    Waiting {
        reason: &'static str,
        message: Option<String>,
    },
    Running,
}

/// The observable state of a pod; a change of it is a status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub scheduled: Result<(), String>,
    pub container: Option<Container>,
    pub ready: bool,
    pub restarts: i64,
    pub crashed_before: bool,
}

impl PodState {
    pub fn phase(&self) -> &'static str {
        match (&self.scheduled, &self.container) {
            (Err(_), _) | (_, None) => "Pending",
            (_, Some(Container::Running)) => "Running",
            (
                _,
                Some(Container::Waiting {
                    reason: "CrashLoopBackOff",
                    ..
                }),
            ) => "Running",
            (_, Some(Container::Waiting { .. })) => {
                if self.crashed_before {
                    "Running"
                } else {
                    "Pending"
                }
            }
        }
    }
}

/// The state at `now`, and when it next changes (None: it never changes on its own).
pub fn evaluate(rt: &PodRuntime, b: &Behaviour, now: Instant) -> (PodState, Option<Instant>) {
    let t = now.saturating_duration_since(rt.since);
    let mut st = PodState {
        scheduled: Ok(()),
        container: Some(Container::Waiting {
            reason: "ContainerCreating",
            message: None,
        }),
        ready: false,
        restarts: rt.restart_base,
        crashed_before: rt.restart_base > 0,
    };
    if rt.mode == PodMode::Pending {
        st.scheduled = Err(b.pending_reason.clone());
        st.container = None;
        return (st, None);
    }
    if t < CREATE && rt.restart_base == 0 {
        return (st, Some(rt.since + CREATE));
    }
    let t = t.saturating_sub(CREATE);
    let start = rt.since + CREATE;
    match rt.mode {
        PodMode::Running | PodMode::SlowStart => {
            st.container = Some(Container::Running);
            let ready_at = if rt.mode == PodMode::SlowStart {
                b.ready_after.max(READY - CREATE)
            } else {
                READY - CREATE
            };
            st.ready = t >= ready_at;
            (
                st.clone(),
                if st.ready {
                    None
                } else {
                    Some(start + ready_at)
                },
            )
        }
        PodMode::ConfigError => {
            st.container = Some(Container::Waiting {
                reason: "CreateContainerConfigError",
                message: Some(format!("configmap \"{}-config\" not found", rt.deployment)),
            });
            (st, None)
        }
        PodMode::Crashloop | PodMode::ImagePullError => {
            let active = if rt.mode == PodMode::Crashloop {
                RUN_BEFORE_CRASH
            } else {
                PULL_ATTEMPT
            };
            let (k, offset, cycle_start) = cycle(t, active);
            let cycle_start = start + cycle_start;
            if rt.mode == PodMode::Crashloop {
                st.crashed_before = st.crashed_before || k > 0;
                if offset < active {
                    st.container = Some(Container::Running);
                    st.restarts += i64::from(k);
                    (st, Some(cycle_start + active))
                } else {
                    st.crashed_before = true;
                    st.restarts += i64::from(k) + 1;
                    st.container = Some(Container::Waiting {
                        reason: "CrashLoopBackOff",
                        message: Some(format!(
                            "back-off {}ms restarting failed container={} pod={}",
                            backoff(k).as_millis(),
                            rt.deployment,
                            rt.deployment
                        )),
                    });
                    (st, Some(cycle_start + active + backoff(k)))
                }
            } else if offset < active {
                st.container = Some(Container::Waiting {
                    reason: "ErrImagePull",
                    message: Some(format!(
                        "rpc error: code = NotFound desc = failed to pull and unpack image \"{0}\": failed to resolve reference \"{0}\": {0}: not found",
                        rt.image
                    )),
                });
                (st, Some(cycle_start + active))
            } else {
                st.container = Some(Container::Waiting {
                    reason: "ImagePullBackOff",
                    message: Some(format!("Back-off pulling image \"{}\"", rt.image)),
                });
                (st, Some(cycle_start + active + backoff(k)))
            }
        }
        PodMode::Pending => (st, None),
    }
}

/// Which back-off cycle `t` falls in: (cycle index, offset into it, cycle start).
fn cycle(t: Duration, active: Duration) -> (u32, Duration, Duration) {
    let mut start = Duration::ZERO;
    for k in 0..BACKOFF_CAP_STEP {
        let len = active + backoff(k);
        if t < start + len {
            return (k, t - start, start);
        }
        start += len;
    }
    // Past the cap every cycle has the same length: skip ahead arithmetically.
    let len = active + backoff(BACKOFF_CAP_STEP);
    let rest = t - start;
    let n = (rest.as_nanos() / len.as_nanos()) as u32;
    let cstart = start + len * n;
    (BACKOFF_CAP_STEP + n, t - cstart, cstart)
}

/// The pod's `status` for `st`.
pub fn render_status(rt: &PodRuntime, container_name: &str, st: &PodState, created: &str) -> Value {
    let now = now_rfc3339();
    let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
    if let Err(msg) = &st.scheduled {
        return json!({
            "phase": "Pending", "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "False", "lastProbeTime": null,
                "lastTransitionTime": created, "reason": "Unschedulable", "message": msg}],
        });
    }
    let started = matches!(st.container, Some(Container::Running));
    let mut cs = json!({
        "name": container_name, "image": rt.image, "imageID": "", "ready": st.ready,
        "restartCount": st.restarts, "started": started, "lastState": {},
    });
    match &st.container {
        Some(Container::Running) => {
            cs["state"] = json!({"running": {"startedAt": now}});
            cs["imageID"] = json!(format!(
                "{}@sha256:{:064x}",
                rt.image.split(':').next().unwrap_or_default(),
                super::objects::fnv1a32(rt.image.as_bytes())
            ));
            cs["containerID"] = json!(format!(
                "containerd://{:064x}",
                super::objects::fnv1a32(format!("{}{}", rt.pod_ip, st.restarts).as_bytes())
            ));
        }
        Some(Container::Waiting { reason, message }) => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            cs["state"] = json!({"waiting": w});
        }
        None => {}
    }
    if st.crashed_before {
        cs["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": created, "finishedAt": now,
            "containerID": format!("containerd://{:064x}", super::objects::fnv1a32(format!("{}{}", rt.pod_ip, st.restarts - 1).as_bytes()))}});
    }
    let mut status = json!({
        "phase": st.phase(),
        "conditions": [cond("PodReadyToStartContainers", true), cond("Initialized", true), cond("Ready", st.ready),
                       cond("ContainersReady", st.ready), cond("PodScheduled", true)],
        "hostIP": "10.0.0.11", "hostIPs": [{"ip": "10.0.0.11"}],
        "startTime": created, "containerStatuses": [cs], "qosClass": "BestEffort",
    });
    if st.phase() == "Running" {
        status["podIP"] = json!(rt.pod_ip);
        status["podIPs"] = json!([{"ip": rt.pod_ip}]);
    }
    if !st.ready {
        for i in [2, 3] {
            status["conditions"][i]["reason"] = json!("ContainersNotReady");
            status["conditions"][i]["message"] = json!(format!(
                "containers with unready status: [{container_name}]"
            ));
        }
    }
    status
}

/// Adds the statuses of the pod's other containers (sidecars) to `status`, as the kubelet
/// reports them: sorted by name, each running and ready once the pod's containers are created
/// (a sidecar's image is not the app's, so the app's behaviour does not touch it).
pub fn add_sidecar_statuses(status: &mut Value, containers: &Value, main: &str, st: &PodState) {
    let Some(containers) = containers.as_array() else {
        return;
    };
    let Some(statuses) = status
        .get_mut("containerStatuses")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let creating = matches!(
        st.container,
        Some(Container::Waiting {
            reason: "ContainerCreating",
            ..
        })
    );
    let now = now_rfc3339();
    for c in containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name == main {
            continue;
        }
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let mut cs = json!({
            "name": name, "image": image, "imageID": "", "ready": !creating,
            "restartCount": 0, "started": !creating, "lastState": {},
        });
        if creating {
            cs["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
        } else {
            cs["state"] = json!({"running": {"startedAt": now}});
            cs["imageID"] = json!(format!(
                "{}@sha256:{:064x}",
                image.rsplit_once(':').map_or(image, |(repo, _)| repo),
                super::objects::fnv1a32(image.as_bytes())
            ));
        }
        statuses.push(cs);
    }
    statuses.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rt(mode: PodMode, since: Instant) -> PodRuntime {
        PodRuntime {
            namespace: "ns".into(),
            deployment: "app".into(),
            version: "v1".into(),
            image: "r/app:v1".into(),
            mode,
            since,
            restart_base: 0,
            last: None,
            pod_ip: "10.1.0.1".into(),
            node: "node-1".into(),
        }
    }

    #[test]
    fn running_pods_become_ready() {
        let t0 = Instant::now();
        let b = Behaviour::default();
        let (s, next) = evaluate(&rt(PodMode::Running, t0), &b, t0);
        assert_eq!(s.phase(), "Pending");
        assert!(next.is_some());
        let (s, next) = evaluate(&rt(PodMode::Running, t0), &b, t0 + Duration::from_secs(1));
        assert!(s.ready && next.is_none());
    }

    #[test]
    fn crashloop_counts_restarts_with_backoff() {
        let t0 = Instant::now();
        let b = Behaviour::default();
        let (s, _) = evaluate(
            &rt(PodMode::Crashloop, t0),
            &b,
            t0 + Duration::from_millis(200),
        );
        assert_eq!(s.restarts, 1);
        assert!(matches!(
            s.container,
            Some(Container::Waiting {
                reason: "CrashLoopBackOff",
                ..
            })
        ));
        let (s, next) = evaluate(
            &rt(PodMode::Crashloop, t0),
            &b,
            t0 + Duration::from_secs(60),
        );
        assert!(s.restarts > 10 && !s.ready && next.is_some());
        assert_eq!(s.phase(), "Running");
    }
}
