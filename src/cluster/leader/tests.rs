//! The election's timing on a paused clock, against an in-memory Lease API (no sockets, so the
//! clock moves only when every task waits on a timer): when a Lease is taken, renewed, given up
//! and taken over.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Mutex;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// client-go's defaults.
const LEASE: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Store {
    lease: Option<Value>,
    version: u64,
    /// Every write (create or update) accepted: the holder it wrote, and when.
    writes: Vec<(Option<String>, Instant)>,
    /// Answer 500 to everything.
    failing: bool,
    /// What each answer takes.
    latency: Duration,
}

/// The API server's Lease endpoints, in memory.
#[derive(Clone, Default)]
struct Leases(Arc<Mutex<Store>>);

impl Leases {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap()
    }

    fn api(&self) -> Api<Lease> {
        let leases = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let leases = leases.clone();
            async move { Ok::<_, Infallible>(leases.answer(req).await) }
        });
        Api::namespaced(kube::Client::new(service, "default"), "default")
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let latency = self.store().latency;
        tokio::time::sleep(latency).await;
        let method = req.method().clone();
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let mut s = self.store();
        if s.failing {
            return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        }
        match method {
            Method::GET => match &s.lease {
                Some(l) => json_answer(StatusCode::OK, l),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::POST | Method::PUT => {
                let mut lease: Value = serde_json::from_slice(&body).unwrap();
                if method == Method::POST && s.lease.is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                if method == Method::PUT {
                    let sent = lease["metadata"]["resourceVersion"].as_str();
                    if sent != Some(s.version.to_string().as_str()) {
                        return status(StatusCode::CONFLICT, "Conflict");
                    }
                }
                s.version += 1;
                lease["metadata"]["resourceVersion"] = json!(s.version.to_string());
                let holder = lease["spec"]["holderIdentity"].as_str().map(String::from);
                s.writes.push((holder, Instant::now()));
                s.lease = Some(lease.clone());
                let code = if method == Method::POST {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                json_answer(code, &lease)
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }

    /// When `who` wrote the Lease, in order.
    fn writes_by(&self, who: &str) -> Vec<Instant> {
        self.store()
            .writes
            .iter()
            .filter(|(h, _)| h.as_deref() == Some(who))
            .map(|(_, t)| *t)
            .collect()
    }
}

fn json_answer(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    json_answer(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code.as_u16()}),
    )
}

/// A candidate running against `leases`: whether it leads, and its stop.
struct Candidate {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn stand(leases: &Leases, identity: &str) -> Candidate {
    let election = Election {
        namespace: "default".into(),
        name: "deploy-watchdog".into(),
        identity: identity.into(),
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
    };
    let (tx, leading) = watch::channel(false);
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap());
    let health = ElectionHealth::new(metrics, Arc::new(AtomicBool::new(false)));
    let task = tokio::spawn(run(leases.api(), election, tx, health, stop.clone()));
    Candidate {
        leading,
        stop,
        task,
    }
}

/// Waits until `c` leads (or stops leading, `want` false); how long that took.
async fn until(c: &mut Candidate, want: bool) -> Duration {
    let started = Instant::now();
    c.leading.wait_for(|l| *l == want).await.unwrap();
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_free_lease_is_taken_at_once_and_renewed_every_retry_period() {
    let leases = Leases::default();
    let mut a = stand(&leases, "a");
    assert!(until(&mut a, true).await < Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(*a.leading.borrow());
    let writes = leases.writes_by("a");
    assert!(writes.len() >= 28, "{} writes in a minute", writes.len());
    // The candidate's wait after taking the Lease is jittered (up to 2.2 retry periods), then
    // the leader renews every retry period.
    let gaps: Vec<Duration> = writes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= RETRY && gaps[0] <= RETRY.mul_f64(2.2),
        "{gaps:?}"
    );
    for gap in &gaps[1..] {
        assert!(
            *gap >= RETRY && *gap < RETRY + Duration::from_millis(10),
            "{gaps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_leading_at_the_renew_deadline() {
    let leases = Leases::default();
    let mut a = stand(&leases, "a");
    until(&mut a, true).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let last_renewal = *leases.writes_by("a").last().unwrap();
    leases.store().failing = true;
    until(&mut a, false).await;
    let stopped_at = Instant::now();
    // The round after the last renewal starts a retry period later and fails for the renew
    // deadline: leading ends between `renew_deadline` and one retry period more after it.
    let since = stopped_at - last_renewal;
    assert!(since >= RENEW, "stopped {since:?} after the last renewal");
    assert!(
        since <= RENEW + RETRY,
        "stopped {since:?} after the last renewal"
    );
    // Before anyone else may take the Lease.
    assert!(since < LEASE);
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_a_lease_left_to_expire_only_after_the_lease_duration() {
    let leases = Leases::default();
    let mut a = stand(&leases, "a");
    until(&mut a, true).await;
    let mut b = stand(&leases, "b");
    // While the leader renews, the standby never leads.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!*b.leading.borrow());
    assert!(leases.writes_by("b").is_empty());

    // The leader's process dies: no release, the Lease is left to expire.
    a.task.abort();
    let last_renewal = *leases.writes_by("a").last().unwrap();
    until(&mut b, true).await;
    let after = Instant::now() - last_renewal;
    assert!(after > LEASE, "taken over {after:?} after the last renewal");
    // Seen within one jittered retry of the renewal, expired a lease duration after that,
    // taken at the next jittered retry.
    assert!(
        after <= LEASE + RETRY.mul_f64(2.2) * 2,
        "taken over {after:?} after the last renewal"
    );
    drop(a.stop);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_stops_releases_the_lease_and_a_standby_takes_it_at_its_next_try() {
    let leases = Leases::default();
    let mut a = stand(&leases, "a");
    until(&mut a, true).await;
    let mut b = stand(&leases, "b");
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.stop.cancel();
    a.task.await.unwrap();
    assert!(!*a.leading.borrow());
    let released = Instant::now();
    until(&mut b, true).await;
    // No lease duration to wait: the next attempt, at most 2.2 retry periods later.
    assert!(released.elapsed() <= RETRY.mul_f64(2.2));
}

#[tokio::test(start_paused = true)]
async fn a_slow_api_server_is_no_reason_to_lose_the_lease() {
    let leases = Leases::default();
    let mut a = stand(&leases, "a");
    until(&mut a, true).await;
    // Every answer takes longer than the retry period, well within the renew deadline.
    leases.store().latency = Duration::from_secs(3);
    let mut lost = a.leading.clone();
    let kept = tokio::time::timeout(Duration::from_secs(300), lost.wait_for(|l| !*l)).await;
    assert!(kept.is_err(), "lost the lease to a slow API server");
    // A GET and a PUT of 3 s each, then the retry period: a renewal every 8 s.
    let renewals = leases.writes_by("a").len();
    assert!(
        (35..=39).contains(&renewals),
        "{renewals} renewals in 300 s"
    );
}
