//! Pod lifecycle: what state a pod is in, as a pure function of its app's behaviour and the
//! time since it was created (or since its behaviour last changed), and the status it shows.
//!
//! The simulated kubelet runs [`SCALE`] (50) times faster than a real one: a healthy pod is
//! Ready ~150 ms after creation, and the back-offs are the kubelet's own scaled down. A
//! container that exits is restarted at once the first time and then after a back-off doubling
//! from 10 s (200 ms here) up to 5 min (6 s here), showing `CrashLoopBackOff` while it waits;
//! an image pull that fails is retried after the same back-off, showing `ImagePullBackOff`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::sim::behaviour::{Behaviour, PodMode};

use super::objects::now_rfc3339;

/// How many times faster than a real kubelet the simulated one runs.
pub const SCALE: u32 = 50;
const CREATE: Duration = Duration::from_millis(50);
const READY: Duration = Duration::from_millis(150);
const RUN_BEFORE_CRASH: Duration = Duration::from_millis(100);
const PULL_ATTEMPT: Duration = Duration::from_millis(100);
/// The kubelet's first back-off (10 s), scaled.
const BACKOFF_INITIAL: Duration = Duration::from_millis(10_000 / SCALE as u64);
/// The kubelet's longest back-off (5 min), scaled.
const BACKOFF_MAX: Duration = Duration::from_millis(300_000 / SCALE as u64);
/// How long after it first becomes ready an `oom_once` container is OOMKilled.
const OOM_AFTER_READY: Duration = Duration::from_millis(200);

/// The `k`-th back-off (from 0): doubling from the first, capped.
fn backoff(k: u32) -> Duration {
    (BACKOFF_INITIAL * 2u32.pow(k.min(16))).min(BACKOFF_MAX)
}

/// A duration as Go prints one (`200ms`, `1.6s`, `6s`), as the kubelet's messages show it.
fn go_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// What the simulated kubelet remembers of a pod.
#[derive(Debug, Clone)]
pub struct PodRuntime {
    pub namespace: String,
    pub deployment: String,
    /// The pod's name and UID, as the kubelet's messages name the pod.
    pub pod: String,
    pub uid: String,
    /// The app container's name.
    pub container: String,
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
    /// The pod's other containers: init containers, native sidecars and sidecars.
    pub extras: Vec<Extra>,
}

/// What another container of the pod is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKind {
    /// In `containers` beside the app: starts with it.
    Sidecar,
    /// In `initContainers` with `restartPolicy: Always`: starts before the app, in order, and
    /// keeps running; the next container starts once it has started.
    Native,
    /// In `initContainers`: runs to completion before the next container starts.
    Init,
}

/// Another container of the pod: its image is not the app's, so the app's behaviour does not
/// touch it; it exits with an error on its first `fails` starts (restarted by the kubelet as
/// any container: the first time at once, then after a back-off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub name: String,
    pub image: String,
    pub kind: ExtraKind,
    pub fails: u32,
}

/// What another container shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraState {
    pub container: Container,
    /// An init container that ran to completion.
    pub completed: bool,
    pub ready: bool,
    pub restarts: i64,
    pub last: Option<Termination>,
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

/// How the container's last run ended: `lastState.terminated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    pub reason: &'static str,
    pub exit_code: i32,
    /// When, if the kubelet saw it (a restart carried over a behaviour change has no time).
    pub finished: Option<Instant>,
}

/// The observable state of a pod; a change of it is a status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub scheduled: Result<(), String>,
    pub container: Option<Container>,
    pub ready: bool,
    pub restarts: i64,
    pub crashed_before: bool,
    /// The last termination, when `crashed_before`.
    pub last: Option<Termination>,
    /// The other containers, in `rt.extras`' order.
    pub extras: Vec<ExtraState>,
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

/// The kubelet's message for a pull that fails because the image does not exist.
fn not_found(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{0}\": failed to resolve reference \"{0}\": {0}: not found",
        image
    )
}

/// When the cause of a pod that `recovers_after` goes away, from its mode's start (`None`:
/// never). A failed pull is retried only when its back-off ends: the pod starts at the first
/// attempt after the cause went away.
fn recovery(rt: &PodRuntime, b: &Behaviour) -> Option<Instant> {
    let after = b.recovers_after?;
    match rt.mode {
        PodMode::ConfigError | PodMode::Pending => Some(rt.since + after),
        PodMode::ImagePullError => {
            let start = rt.since + CREATE;
            let mut attempt = Duration::ZERO;
            let mut k = 0;
            while rt.since + after > start + attempt {
                attempt += PULL_ATTEMPT + backoff(k);
                k += 1;
            }
            Some(start + attempt)
        }
        _ => None,
    }
}

/// How long an init container runs when it succeeds.
const INIT_RUN: Duration = Duration::from_millis(100);

/// When run `n` (from 0) of a container that exits `run` after each start begins: the first
/// restart is at once, each later one after the next back-off.
fn run_start(n: u32, run: Duration) -> Duration {
    let mut start = Duration::ZERO;
    for k in 0..n {
        if k == 0 {
            start += run;
            continue;
        }
        let wait = backoff(k - 1);
        if wait == BACKOFF_MAX {
            return start + (run + BACKOFF_MAX) * (n - k);
        }
        start += run + wait;
    }
    start
}

/// Each other container's start (from the pod's containers' creation) and, for init kinds,
/// when the next one may start; and when the app container may start.
fn extra_starts(extras: &[Extra]) -> (Vec<Duration>, Duration) {
    let mut init_done = Duration::ZERO;
    let mut starts = Vec::with_capacity(extras.len());
    for x in extras {
        match x.kind {
            ExtraKind::Init | ExtraKind::Native => {
                starts.push(init_done);
                let ok = run_start(x.fails, RUN_BEFORE_CRASH);
                init_done += if x.kind == ExtraKind::Init {
                    ok + INIT_RUN
                } else {
                    ok
                };
            }
            ExtraKind::Sidecar => starts.push(Duration::MAX),
        }
    }
    for (s, x) in starts.iter_mut().zip(extras) {
        if x.kind == ExtraKind::Sidecar {
            *s = init_done;
        }
    }
    (starts, init_done)
}

/// Another container's state `u` after it first started, and the offset of its next change.
fn extra_state(x: &Extra, u: Duration) -> (ExtraState, Option<Duration>) {
    let run = RUN_BEFORE_CRASH;
    let ok = run_start(x.fails, run);
    let mut st = ExtraState {
        container: Container::Running,
        completed: false,
        ready: false,
        restarts: 0,
        last: None,
    };
    if u >= ok {
        st.restarts = i64::from(x.fails);
        if x.fails > 0 {
            st.last = Some(Termination {
                reason: "Error",
                exit_code: 1,
                finished: None,
            });
        }
        if x.kind == ExtraKind::Init {
            st.completed = u >= ok + INIT_RUN;
            return (st.clone(), (!st.completed).then_some(ok + INIT_RUN));
        }
        st.ready = true;
        return (st, None);
    }
    let (n, offset, start) = crash_cycle(u, run);
    st.restarts = i64::from(n);
    if n > 0 {
        st.last = Some(Termination {
            reason: "Error",
            exit_code: 1,
            finished: None,
        });
    }
    if offset < run {
        return (st, Some(start + run));
    }
    st.container = Container::Waiting {
        reason: "CrashLoopBackOff",
        message: Some(format!(
            "back-off {} restarting failed container={}",
            go_duration(backoff(n - 1)),
            x.name
        )),
    };
    (st, Some(start + run + backoff(n - 1)))
}

/// The state at `now`, and when it next changes (None: it never changes on its own).
pub fn evaluate(rt: &PodRuntime, b: &Behaviour, now: Instant) -> (PodState, Option<Instant>) {
    if rt.extras.is_empty()
        || rt.mode == PodMode::Pending && recovery(rt, b).is_none_or(|at| now < at)
    {
        return evaluate_app(rt, b, now);
    }
    let (starts, init_done) = extra_starts(&rt.extras);
    let begin = rt.since + CREATE;
    let (mut st, mut next) = if now < begin + init_done && !init_done.is_zero() {
        // Init containers and native sidecars first: the app waits.
        let (mut st, _) = evaluate_app(rt, b, rt.since);
        st.container = Some(Container::Waiting {
            reason: "PodInitializing",
            message: None,
        });
        st.ready = false;
        (st, Some(begin + init_done))
    } else {
        let shifted = PodRuntime {
            since: rt.since + init_done,
            ..rt.clone()
        };
        evaluate_app(&shifted, b, now)
    };
    for (x, start) in rt.extras.iter().zip(starts) {
        let at = begin + start;
        if now < at {
            let reason = if now < begin {
                "ContainerCreating"
            } else {
                "PodInitializing"
            };
            st.extras.push(ExtraState {
                container: Container::Waiting {
                    reason,
                    message: None,
                },
                completed: false,
                ready: false,
                restarts: 0,
                last: None,
            });
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let (xs, change) = extra_state(x, now - at);
        st.extras.push(xs);
        if let Some(c) = change {
            next = Some(next.map_or(at + c, |n| n.min(at + c)));
        }
    }
    (st, next)
}

fn evaluate_app(rt: &PodRuntime, b: &Behaviour, now: Instant) -> (PodState, Option<Instant>) {
    if let Some(at) = recovery(rt, b) {
        if now >= at {
            // The image is there now, the Secret exists, capacity arrived: the pod starts.
            let started = PodRuntime {
                mode: PodMode::Running,
                since: at,
                ..rt.clone()
            };
            return evaluate_app(&started, b, now);
        }
        let (st, next) = evaluate_mode(rt, b, now);
        return (st, Some(next.map_or(at, |n| n.min(at))));
    }
    evaluate_mode(rt, b, now)
}

fn evaluate_mode(rt: &PodRuntime, b: &Behaviour, now: Instant) -> (PodState, Option<Instant>) {
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
        last: (rt.restart_base > 0).then_some(Termination {
            reason: "Error",
            exit_code: 1,
            finished: None,
        }),
        extras: Vec::new(),
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
        PodMode::OomOnce => {
            st.container = Some(Container::Running);
            let ready_at = READY - CREATE;
            let killed_at = ready_at + OOM_AFTER_READY;
            if t < killed_at {
                st.ready = t >= ready_at;
                let next = if st.ready { killed_at } else { ready_at };
                return (st, Some(start + next));
            }
            // OOMKilled once; the first restart is immediate, then it runs and turns ready.
            st.restarts += 1;
            st.crashed_before = true;
            st.last = Some(Termination {
                reason: "OOMKilled",
                exit_code: 137,
                finished: Some(start + killed_at),
            });
            let ready_again = killed_at + (READY - CREATE);
            st.ready = t >= ready_again;
            (st.clone(), (!st.ready).then_some(start + ready_again))
        }
        PodMode::ConfigError => {
            st.container = Some(Container::Waiting {
                reason: "CreateContainerConfigError",
                message: Some(format!("configmap \"{}-config\" not found", rt.deployment)),
            });
            (st, None)
        }
        PodMode::Crashloop => {
            let (n, offset, cycle_start) = crash_cycle(t, RUN_BEFORE_CRASH);
            st.restarts += i64::from(n);
            if n > 0 {
                st.crashed_before = true;
                // The previous run ended at this one's start, or a back-off before it.
                let previous_end = if n == 1 {
                    cycle_start
                } else {
                    cycle_start.saturating_sub(backoff(n - 2))
                };
                st.last = Some(Termination {
                    reason: "Error",
                    exit_code: 1,
                    finished: Some(start + previous_end),
                });
            }
            if offset < RUN_BEFORE_CRASH {
                st.container = Some(Container::Running);
                return (st, Some(start + cycle_start + RUN_BEFORE_CRASH));
            }
            // Exited again: from the second exit on, the kubelet backs off.
            let wait = backoff(n - 1);
            st.crashed_before = true;
            st.last = Some(Termination {
                reason: "Error",
                exit_code: 1,
                finished: Some(start + cycle_start + RUN_BEFORE_CRASH),
            });
            st.container = Some(Container::Waiting {
                reason: "CrashLoopBackOff",
                message: Some(format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    go_duration(wait),
                    rt.container,
                    rt.pod,
                    rt.namespace,
                    rt.uid
                )),
            });
            (st, Some(start + cycle_start + RUN_BEFORE_CRASH + wait))
        }
        PodMode::ImagePullError => {
            let (k, offset, cycle_start) = pull_cycle(t, PULL_ATTEMPT);
            let cycle_start = start + cycle_start;
            let error = b
                .image_pull_message
                .clone()
                .unwrap_or_else(|| not_found(&rt.image));
            if offset < PULL_ATTEMPT {
                st.container = Some(Container::Waiting {
                    reason: "ErrImagePull",
                    message: Some(error),
                });
                (st, Some(cycle_start + PULL_ATTEMPT))
            } else {
                // Since 1.32 the back-off message carries the last pull error.
                st.container = Some(Container::Waiting {
                    reason: "ImagePullBackOff",
                    message: Some(format!(
                        "Back-off pulling image \"{}\": ErrImagePull: {error}",
                        rt.image
                    )),
                });
                (st, Some(cycle_start + PULL_ATTEMPT + backoff(k)))
            }
        }
        PodMode::Pending => (st, None),
    }
}

/// Where `t` falls in the life of a container that exits `run` after each start, restarted
/// at once after its first exit and after a back-off after every later one: (the run it is
/// in, counted from 0 = restarts so far; the offset into that run and the back-off after it;
/// the run's start).
fn crash_cycle(t: Duration, run: Duration) -> (u32, Duration, Duration) {
    if t < run {
        return (0, t, Duration::ZERO);
    }
    let mut start = run;
    let mut n = 1;
    loop {
        let len = run + backoff(n - 1);
        if backoff(n - 1) == BACKOFF_MAX {
            // Past the cap every cycle has the same length: skip ahead arithmetically.
            let k = ((t - start).as_nanos() / len.as_nanos()) as u32;
            let cstart = start + len * k;
            return (n + k, t - cstart, cstart);
        }
        if t < start + len {
            return (n, t - start, start);
        }
        start += len;
        n += 1;
    }
}

/// Which pull attempt `t` falls in (an attempt, then its back-off): (attempt index, offset into
/// it, its start).
fn pull_cycle(t: Duration, active: Duration) -> (u32, Duration, Duration) {
    let mut start = Duration::ZERO;
    let mut k = 0;
    loop {
        let len = active + backoff(k);
        if backoff(k) == BACKOFF_MAX {
            let n = ((t - start).as_nanos() / len.as_nanos()) as u32;
            let cstart = start + len * n;
            return (k + n, t - cstart, cstart);
        }
        if t < start + len {
            return (k, t - start, start);
        }
        start += len;
        k += 1;
    }
}

/// `at` on the wall clock, as the API shows times.
fn wall(at: Instant) -> String {
    let ago = Instant::now().saturating_duration_since(at);
    let t = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap_or_default();
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
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
        let last = st.last.unwrap_or(Termination {
            reason: "Error",
            exit_code: 1,
            finished: None,
        });
        let finished = last.finished.map_or_else(|| now.clone(), wall);
        cs["lastState"] = json!({"terminated": {"exitCode": last.exit_code, "reason": last.reason, "startedAt": created, "finishedAt": finished,
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

/// Adds the statuses of the pod's other containers to `status`, as the kubelet reports them:
/// init containers and native sidecars in `initContainerStatuses` in their order, sidecars in
/// `containerStatuses` sorted by name.
pub fn add_extra_statuses(status: &mut Value, rt: &PodRuntime, st: &PodState) {
    if status.get("containerStatuses").is_none() {
        return;
    }
    let now = now_rfc3339();
    let mut init = Vec::new();
    for (x, xs) in rt.extras.iter().zip(&st.extras) {
        let running = matches!(xs.container, Container::Running) && !xs.completed;
        let mut cs = json!({
            "name": x.name, "image": x.image, "imageID": "", "ready": xs.ready,
            "restartCount": xs.restarts, "started": running, "lastState": {},
        });
        match &xs.container {
            _ if xs.completed => {
                cs["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": now, "finishedAt": now}});
            }
            Container::Running => cs["state"] = json!({"running": {"startedAt": now}}),
            Container::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                cs["state"] = json!({"waiting": w});
            }
        }
        if !matches!(
            xs.container,
            Container::Waiting {
                reason: "ContainerCreating" | "PodInitializing",
                ..
            }
        ) {
            cs["imageID"] = json!(format!(
                "{}@sha256:{:064x}",
                x.image
                    .rsplit_once(':')
                    .map_or(x.image.as_str(), |(repo, _)| repo),
                super::objects::fnv1a32(x.image.as_bytes())
            ));
        }
        if let Some(last) = xs.last {
            cs["lastState"] = json!({"terminated": {"exitCode": last.exit_code, "reason": last.reason,
                "startedAt": now, "finishedAt": last.finished.map_or_else(|| now.clone(), wall)}});
        }
        if x.kind == ExtraKind::Sidecar {
            if let Some(list) = status["containerStatuses"].as_array_mut() {
                list.push(cs);
            }
        } else {
            init.push(cs);
        }
    }
    if let Some(list) = status["containerStatuses"].as_array_mut() {
        list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    if !init.is_empty() {
        let initializing = matches!(
            st.container,
            Some(Container::Waiting {
                reason: "PodInitializing",
                ..
            })
        );
        status["initContainerStatuses"] = json!(init);
        if let Some(conds) = status["conditions"].as_array_mut()
            && let Some(c) = conds.iter_mut().find(|c| c["type"] == "Initialized")
        {
            c["status"] = json!(if initializing { "False" } else { "True" });
            if initializing {
                c["reason"] = json!("ContainersNotInitialized");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rt(mode: PodMode, since: Instant) -> PodRuntime {
        PodRuntime {
            namespace: "ns".into(),
            deployment: "app".into(),
            pod: "app-5d8f7c-x1".into(),
            uid: "u1".into(),
            container: "app".into(),
            version: "v1".into(),
            image: "r/app:v1".into(),
            mode,
            since,
            restart_base: 0,
            last: None,
            pod_ip: "10.1.0.1".into(),
            node: "node-1".into(),
            extras: Vec::new(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn waiting_reason(s: &PodState) -> Option<&'static str> {
        match &s.container {
            Some(Container::Waiting { reason, .. }) => Some(reason),
            _ => None,
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
    fn a_first_crash_is_restarted_at_once_and_later_ones_back_off_doubling_to_the_cap() {
        let t0 = Instant::now();
        let b = Behaviour::default();
        let pod = rt(PodMode::Crashloop, t0);
        let at = |t: u64| evaluate(&pod, &b, t0 + ms(t)).0;
        // Created at 50 ms, first run to 150 ms: restarted at once, no back-off.
        let s = at(160);
        assert_eq!((s.restarts, waiting_reason(&s)), (1, None));
        assert_eq!(s.last.map(|l| l.reason), Some("Error"));
        // Second exit at 250 ms: CrashLoopBackOff for 10 s scaled (200 ms).
        let s = at(260);
        assert_eq!(
            (s.restarts, waiting_reason(&s)),
            (1, Some("CrashLoopBackOff"))
        );
        let Some(Container::Waiting {
            message: Some(m), ..
        }) = &s.container
        else {
            panic!("waiting")
        };
        assert_eq!(
            m,
            "back-off 200ms restarting failed container=app pod=app-5d8f7c-x1_ns(u1)"
        );
        // Restarted at 450 ms, exits at 550 ms, backs off 400 ms, then 800 ms.
        assert_eq!(waiting_reason(&at(460)), None);
        assert_eq!(at(460).restarts, 2);
        assert_eq!(waiting_reason(&at(560)), Some("CrashLoopBackOff"));
        assert_eq!(waiting_reason(&at(940)), Some("CrashLoopBackOff"));
        assert_eq!(at(960).restarts, 3);
        // Long after: capped at 5 min scaled (6 s).
        let (s, next) = evaluate(&pod, &b, t0 + Duration::from_secs(120));
        assert!(s.restarts > 10 && !s.ready && next.is_some());
        assert_eq!(s.phase(), "Running");
        assert_eq!(backoff(10), Duration::from_secs(6));
        assert_eq!(go_duration(backoff(3)), "1.6s");
    }

    #[test]
    fn oom_once_restarts_once_and_is_ready_again() {
        let t0 = Instant::now();
        let b = Behaviour::default();
        let pod = rt(PodMode::OomOnce, t0);
        let (s, _) = evaluate(&pod, &b, t0 + ms(200));
        assert!(s.ready && s.restarts == 0);
        let (s, next) = evaluate(&pod, &b, t0 + ms(360));
        assert_eq!((s.restarts, s.ready, waiting_reason(&s)), (1, false, None));
        let last = s.last.expect("terminated before");
        assert_eq!((last.reason, last.exit_code), ("OOMKilled", 137));
        assert!(next.is_some());
        let (s, next) = evaluate(&pod, &b, t0 + Duration::from_secs(5));
        assert!(s.ready && s.restarts == 1 && next.is_none());
    }

    #[test]
    fn a_pull_error_shows_its_message_and_recovers_at_the_next_attempt_after_the_cause_goes() {
        let t0 = Instant::now();
        let b = Behaviour {
            pods: PodMode::ImagePullError,
            image_pull_message: Some("429 Too Many Requests".into()),
            recovers_after: Some(ms(300)),
            ..Behaviour::default()
        };
        let pod = rt(PodMode::ImagePullError, t0);
        let (s, _) = evaluate(&pod, &b, t0 + ms(60));
        assert_eq!(waiting_reason(&s), Some("ErrImagePull"));
        let (s, _) = evaluate(&pod, &b, t0 + ms(200));
        let Some(Container::Waiting {
            message: Some(m), ..
        }) = &s.container
        else {
            panic!("waiting")
        };
        assert_eq!(
            m,
            "Back-off pulling image \"r/app:v1\": ErrImagePull: 429 Too Many Requests"
        );
        // Attempts at 50 ms and 350 ms (after a 200 ms back-off): the second one pulls.
        assert_eq!(
            waiting_reason(&evaluate(&pod, &b, t0 + ms(340)).0),
            Some("ImagePullBackOff")
        );
        let (s, _) = evaluate(&pod, &b, t0 + ms(1_000));
        assert!(s.ready && s.restarts == 0);
        let never = Behaviour {
            recovers_after: None,
            ..b
        };
        assert!(!evaluate(&pod, &never, t0 + Duration::from_secs(60)).0.ready);
    }

    #[test]
    fn a_config_error_and_pending_recover_when_their_cause_goes() {
        let t0 = Instant::now();
        for mode in [PodMode::ConfigError, PodMode::Pending] {
            let b = Behaviour {
                pods: mode,
                recovers_after: Some(ms(500)),
                ..Behaviour::default()
            };
            let pod = rt(mode, t0);
            let (s, next) = evaluate(&pod, &b, t0 + ms(400));
            assert!(!s.ready);
            assert_eq!(next, Some(t0 + ms(500)), "{mode:?}");
            let (s, _) = evaluate(&pod, &b, t0 + ms(800));
            assert!(s.ready && s.scheduled.is_ok(), "{mode:?}");
        }
    }

    #[test]
    fn init_containers_and_native_sidecars_start_first_and_restart_as_containers_do() {
        let t0 = Instant::now();
        let b = Behaviour::default();
        let mut pod = rt(PodMode::Running, t0);
        pod.extras = vec![
            Extra {
                name: "migrate".into(),
                image: "r/m:1".into(),
                kind: ExtraKind::Init,
                fails: 0,
            },
            Extra {
                name: "istio-proxy".into(),
                image: "r/p:1".into(),
                kind: ExtraKind::Native,
                fails: 1,
            },
        ];
        // 50 ms: containers created; migrate runs 100 ms; the proxy starts at 150 ms, exits at
        // 250 ms, is restarted at once and has started: the app starts then.
        let (s, _) = evaluate(&pod, &b, t0 + ms(100));
        assert_eq!(waiting_reason(&s), Some("PodInitializing"));
        assert_eq!(s.phase(), "Pending");
        let (s, _) = evaluate(&pod, &b, t0 + ms(200));
        assert!(s.extras[0].completed);
        assert_eq!(s.extras[1].restarts, 0);
        let (s, _) = evaluate(&pod, &b, t0 + ms(260));
        assert_eq!(s.extras[1].restarts, 1);
        assert!(s.extras[1].ready);
        assert_eq!(
            waiting_reason(&s),
            None,
            "the app runs once the proxy has started"
        );
        assert!(!s.ready);
        let (s, next) = evaluate(&pod, &b, t0 + ms(1_000));
        assert!(s.ready && next.is_none());

        // An init container that keeps failing: CrashLoopBackOff, and the app never starts.
        pod.extras[0].fails = 1_000;
        let (s, next) = evaluate(&pod, &b, t0 + Duration::from_secs(30));
        assert_eq!(waiting_reason(&s), Some("PodInitializing"));
        assert!(
            matches!(
                s.extras[0].container,
                Container::Waiting {
                    reason: "CrashLoopBackOff",
                    ..
                }
            ) || s.extras[0].restarts > 5
        );
        assert!(next.is_some());
        let mut status = render_status(&pod, "app", &s, "2026-01-01T00:00:00Z");
        add_extra_statuses(&mut status, &pod, &s);
        assert_eq!(status["initContainerStatuses"][0]["name"], "migrate");
        assert_eq!(status["conditions"][1]["status"], "False");
    }
}
