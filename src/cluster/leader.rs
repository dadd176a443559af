//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it:
//! read the Lease, take it when it is free or expired, renew it every `retry_period`, and stop
//! leading when a renewal has not succeeded for `renew_deadline` (shorter than the lease
//! duration, so a leader that cannot renew stops acting before anyone else may start).
//!
//! Every write is an update guarded by the Lease's resourceVersion: two candidates can never both
//! succeed. Expiry is judged by when *this* process last saw the record change, never by
//! comparing clocks across machines.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Leader-election timings and names.
#[derive(Debug, Clone, PartialEq)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What a candidate last saw of the Lease and when.
#[derive(Debug, Clone, Default)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<String>,
    at: Option<Instant>,
}

/// Runs the election until `shutdown`; `leading` says whether this process leads now.
/// On shutdown a leader releases the Lease so a standby takes over at once.
pub async fn run(api: Api<Lease>, e: Election, leading: watch::Sender<bool>, shutdown: CancellationToken) {
    let mut observed = Observed::default();
    let mut last_renew: Option<Instant> = None;
    loop {
        let attempt = tokio::time::timeout(e.retry_period.max(Duration::from_millis(100)), try_acquire_or_renew(&api, &e, &mut observed));
        let ok = matches!(attempt.await, Ok(Ok(true)));
        let now = Instant::now();
        if ok {
            last_renew = Some(now);
            if !*leading.borrow() {
                info!(identity = %e.identity, lease = %e.name, "became the leader");
                let _ = leading.send(true);
            }
        } else if *leading.borrow() && last_renew.is_none_or(|t| now - t > e.renew_deadline) {
            warn!(identity = %e.identity, lease = %e.name, "could not renew the lease in time: no longer the leader");
            let _ = leading.send(false);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(e.retry_period) => {}
        }
    }
    if *leading.borrow() {
        let _ = leading.send(false);
        release(&api, &e).await;
    }
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One attempt: true when this process holds the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, e: &Election, observed: &mut Observed) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(e.name.clone()), namespace: Some(e.namespace.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: Some(e.lease_duration.as_secs().max(1) as i32),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let renew_time = spec.renew_time.as_ref().map(|t| t.0.to_string());
    if observed.holder != holder || observed.renew_time != renew_time || observed.at.is_none() {
        *observed = Observed { holder: holder.clone(), renew_time, at: Some(Instant::now()) };
    }
    let duration = spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(1) as u64)).unwrap_or(e.lease_duration);
    let mine = holder.as_deref() == Some(e.identity.as_str());
    let expired = observed.at.is_some_and(|at| at.elapsed() > duration);
    if !mine && holder.is_some() && !expired {
        return Ok(false);
    }
    let mut next = spec;
    if !mine {
        next.acquire_time = Some(now_micro());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        next.holder_identity = Some(e.identity.clone());
    }
    next.renew_time = Some(now_micro());
    next.lease_duration_seconds = Some(e.lease_duration.as_secs().max(1) as i32);
    lease.spec = Some(next);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

async fn release(api: &Api<Lease>, e: &Election) {
    let Ok(Some(mut lease)) = api.get_opt(&e.name).await else { return };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now_micro());
    match tokio::time::timeout(Duration::from_secs(2), api.replace(&e.name, &PostParams::default(), &lease)).await {
        Ok(Ok(_)) => info!(identity = %e.identity, "lease released"),
        _ => warn!(identity = %e.identity, "lease not released; it will expire"),
    }
}
