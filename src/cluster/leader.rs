//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it:
//! read the Lease, take it when it is free or expired, renew it every `retry_period`, and stop
//! leading when a renewal has not succeeded for `renew_deadline` (shorter than the lease
//! duration, so a leader that cannot renew stops acting before anyone else may start). Each
//! attempt may take up to what is left of `renew_deadline`, not just `retry_period`: a slow API
//! server is no reason to lose the Lease. Failed attempts are logged and counted.
//!
//! Every write is an update guarded by the Lease's resourceVersion: two candidates can never both
//! succeed. Expiry is judged by when *this* process last saw the record change, never by
//! comparing clocks across machines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::telemetry::Metrics;

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
///
/// Timing as client-go's `LeaderElector`: a candidate tries every `retry_period` (jittered by up
/// to 1.2 × as `wait.JitterUntil`); a leader renews every `retry_period`, and a renewal that
/// fails is retried every `retry_period` until `renew_deadline` has passed since the round
/// began, each attempt bounded by what is left of it. Every failed attempt is logged and
/// counted; `health` says when the Lease can never be had (refused by RBAC, no namespace).
pub async fn run(
    api: Api<Lease>,
    e: Election,
    leading: watch::Sender<bool>,
    health: ElectionHealth,
    shutdown: CancellationToken,
) {
    let mut observed = Observed::default();
    let mut jitter = Jitter::new(&e.identity);
    loop {
        let pause = if *leading.borrow() {
            if !renew(&api, &e, &mut observed, &health, &shutdown).await {
                if shutdown.is_cancelled() {
                    break;
                }
                warn!(identity = %e.identity, lease = %e.name, renew_deadline = ?e.renew_deadline,
                    "could not renew the lease within the renew deadline: no longer the leader");
                let _ = leading.send(false);
            }
            e.retry_period
        } else {
            let attempt = tokio::time::timeout(
                e.renew_deadline,
                try_acquire_or_renew(&api, &e, &mut observed),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => {
                    health.succeeded();
                    info!(identity = %e.identity, lease = %e.name, "became the leader");
                    let _ = leading.send(true);
                }
                Ok(Ok(false)) => health.succeeded(),
                Ok(Err(err)) => health.failed(&e, Operation::Acquire, &err),
                Err(_) => health.timed_out(&e, Operation::Acquire),
            }
            jitter.around(e.retry_period)
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if *leading.borrow() {
        let _ = leading.send(false);
        release(&api, &e).await;
    }
}

/// One renewal round: true once renewed, false when `renew_deadline` passed first.
async fn renew(
    api: &Api<Lease>,
    e: &Election,
    observed: &mut Observed,
    health: &ElectionHealth,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = Instant::now() + e.renew_deadline;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, try_acquire_or_renew(api, e, observed)).await {
            Ok(Ok(true)) => {
                health.succeeded();
                return true;
            }
            // Someone else holds it now: not ours to renew, but keep trying to the deadline,
            // as client-go does (a stale read can say so for a moment).
            Ok(Ok(false)) => health.lost(e),
            Ok(Err(err)) => health.failed(e, Operation::Renew, &err),
            Err(_) => {
                health.timed_out(e, Operation::Renew);
                return false;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(e.retry_period.min(left)) => {}
        }
    }
}

/// Which loop an attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Acquire,
    Renew,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Acquire => "acquire",
            Operation::Renew => "renew",
        }
    }
}

/// What the election shows outside: each failed attempt (a log line and a count by operation
/// and category), and whether the Lease can never be had, which makes the replica not ready.
#[derive(Clone)]
pub struct ElectionHealth {
    metrics: Arc<Metrics>,
    cannot_lead: Arc<AtomicBool>,
}

impl ElectionHealth {
    pub fn new(metrics: Arc<Metrics>, cannot_lead: Arc<AtomicBool>) -> Self {
        ElectionHealth {
            metrics,
            cannot_lead,
        }
    }

    /// The API server answered as it should, whoever holds the Lease.
    fn succeeded(&self) {
        if self.cannot_lead.swap(false, Ordering::SeqCst) {
            info!("the lease can be read and written again");
        }
    }

    fn failed(&self, e: &Election, op: Operation, err: &kube::Error) {
        let category = category(err);
        self.metrics.leader_election_failure(op.as_str(), category);
        warn!(identity = %e.identity, lease = %e.name, namespace = %e.namespace,
            operation = op.as_str(), category, error = %err, "leader election attempt failed");
        // No retry fixes a refusal by RBAC or a namespace that does not exist: this replica
        // will never act, and says so by not being ready.
        let never = matches!(category, "forbidden" | "unauthorized" | "not_found");
        if never && !self.cannot_lead.swap(true, Ordering::SeqCst) {
            error!(identity = %e.identity, lease = %e.name, namespace = %e.namespace, error = %err,
                "the lease cannot be had (check the Lease namespace and the RBAC granted there): this replica will never lead and reports not ready");
        }
    }

    fn timed_out(&self, e: &Election, op: Operation) {
        self.metrics.leader_election_failure(op.as_str(), "timeout");
        warn!(identity = %e.identity, lease = %e.name, namespace = %e.namespace,
            operation = op.as_str(), "leader election attempt got no answer in time");
    }

    fn lost(&self, e: &Election) {
        self.succeeded();
        self.metrics
            .leader_election_failure(Operation::Renew.as_str(), "held_by_another");
        warn!(identity = %e.identity, lease = %e.name, namespace = %e.namespace,
            "renewing: the lease is held by another candidate");
    }
}

/// A bounded label for an API error.
fn category(err: &kube::Error) -> &'static str {
    match err {
        kube::Error::Api(s) => match s.code {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid",
            429 => "too_many_requests",
            c if c >= 500 => "server_error",
            _ => "rejected",
        },
        _ => "connection",
    }
}

/// `wait.Jitter(period, 1.2)`: a period stretched by up to 1.2 × at random, so candidates
/// started together do not hit the API server in step.
struct Jitter(u64);

impl Jitter {
    fn new(identity: &str) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = identity
            .bytes()
            .fold(nanos ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Jitter(seed | 1)
    }

    fn around(&mut self, period: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        period + period.mul_f64(1.2 * unit)
    }
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One attempt: true when this process holds the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    e: &Election,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: Some(e.lease_duration.as_secs().max(1) as i32),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return api
            .create(&PostParams::default(), &lease)
            .await
            .map(|_| true);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let renew_time = spec.renew_time.as_ref().map(|t| t.0.to_string());
    if observed.holder != holder || observed.renew_time != renew_time || observed.at.is_none() {
        *observed = Observed {
            holder: holder.clone(),
            renew_time,
            at: Some(Instant::now()),
        };
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(e.lease_duration);
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
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409, a
    // failed attempt like any other (client-go logs it as an error too).
    api.replace(&e.name, &PostParams::default(), &lease)
        .await
        .map(|_| true)
}

async fn release(api: &Api<Lease>, e: &Election) {
    let Ok(Some(mut lease)) = api.get_opt(&e.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now_micro());
    match tokio::time::timeout(
        Duration::from_secs(2),
        api.replace(&e.name, &PostParams::default(), &lease),
    )
    .await
    {
        Ok(Ok(_)) => info!(identity = %e.identity, "lease released"),
        _ => warn!(identity = %e.identity, "lease not released; it will expire"),
    }
}

#[cfg(test)]
mod tests;
