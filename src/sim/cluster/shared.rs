//! What every clone of the cluster shares: the state lock, the controller's wake-up, and the
//! HTTP side's fault-injection switches; and the controller loop.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::controller;
use super::state::State;
use super::store::Kind;

/// Fault injection and lifecycle of the HTTP side.
#[derive(Default)]
pub struct ApiControl {
    pub addr: Option<SocketAddr>,
    pub shutdown: Option<CancellationToken>,
    /// Cancelled to end the current listener and its connections (`down`).
    pub epoch: Option<CancellationToken>,
    /// Cancelled to end every open watch (`drop_watches`).
    pub drop_watches: CancellationToken,
    /// Cancelled to end every open watch with 410 Gone (`expire`).
    pub expire_watches: CancellationToken,
    pub down: bool,
    /// (resource plural, namespace) pairs the daemon's ServiceAccount may not touch: requests
    /// get 403 Forbidden, as RBAC answers a namespace the chart grants nothing in.
    /// A namespace of `*` forbids the resource everywhere.
    pub forbidden: Vec<(String, String)>,
    /// (verb, resource) pairs RBAC refuses in every namespace (`patch`, `deployments`; a
    /// subresource as `deployments/scale`; a verb of `*` is every verb).
    pub denied: Vec<(String, String)>,
    /// API groups of the custom resources whose CRDs are installed (e.g. `argoproj.io`).
    pub crds: Vec<String>,
    /// (resource plural, delay): every request on that resource is answered that much later.
    pub latency: Vec<(String, std::time::Duration)>,
}

pub struct Shared {
    pub state: Mutex<State>,
    pub notify: Notify,
    pub api: Mutex<ApiControl>,
    /// The next watch request gets 410 Gone.
    pub expire_next: AtomicBool,
    /// The deployment controller is stopped (kube-controller-manager down): writes are stored
    /// but nothing reconciles them until it runs again.
    pub controller_stopped: AtomicBool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn api(&self) -> MutexGuard<'_, ApiControl> {
        self.api.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The controller loop: wakes on writes, on pod and deadline timers, and resyncs everything
/// every 5 min like an informer resync.
/// Like an informer resync: a safety net only, every change and deadline has its own trigger.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn run_controller(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut last_resync = Instant::now();
    loop {
        let next = {
            let mut st = shared.lock();
            let now = Instant::now();
            if now.duration_since(last_resync) > RESYNC {
                last_resync = now;
                let all = st.store.keys(Kind::Deployment);
                st.dirty.extend(all);
            }
            // The kubelet keeps running while the controllers are stopped.
            let controllers = !shared
                .controller_stopped
                .load(std::sync::atomic::Ordering::SeqCst);
            if controller::run_pending(&mut st, now, controllers) {
                Some(now)
            } else {
                controller::next_wakeup(&st, controllers)
            }
        };
        if next.is_some_and(|t| t <= Instant::now()) {
            // More work queued: let API requests take the lock first.
            tokio::task::yield_now().await;
            continue;
        }
        let sleep = next
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = shared.notify.notified() => {}
            _ = tokio::time::sleep_until(sleep) => {}
        }
    }
}
