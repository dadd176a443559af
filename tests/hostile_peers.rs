//! Hostile HTTP peers: health endpoints, Prometheus and the notification sinks answering huge,
//! malformed, slow or no bodies at all. Every call returns within its timeout (plus a generous
//! margin: these bounds are far above the expected times, never tight), no body is read past
//! `probes::MAX_BODY`, and what comes back is a failed health check or an unavailable provider —
//! for the error rate, never evidence either way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deploy_watchdog::check::Provider;
use deploy_watchdog::config::{
    Config, HealthConfig, HttpMethod, HttpStatus, PrometheusConfig, SmokeCheck, Timeout,
};
use deploy_watchdog::judge::{
    self, HealthSample, Observation, Policy, ProbeRound, Progress, ProviderSample, RolloutFacts,
    SmokeSample, Verdict,
};
use deploy_watchdog::notify::slack::{PostError, Slack};
use deploy_watchdog::probes::{self, MAX_BODY, health, prometheus::Prometheus, smoke};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The timeout every probe in these tests is configured with.
const CONFIG_TIMEOUT: Timeout = Timeout::from_millis(500);
const TIMEOUT: Duration = CONFIG_TIMEOUT.get();
/// What "returned within its timeout" means here: far above any expected time, so a loaded
/// machine never makes these tests flaky, yet far below "hung".
const BOUND: Duration = Duration::from_secs(5);

/// How the peer behaves once it has read a request.
#[derive(Clone)]
enum Peer {
    /// Answers at once.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Sends the headers, then the body one byte every `every`.
    Trickle { body: Vec<u8>, every: Duration },
    /// Sends the status line and headers one byte every `every`.
    TrickleHeaders { every: Duration },
    /// A chunked body that never ends.
    Endless,
    /// Accepts the connection and never answers.
    Silent,
}

impl Peer {
    fn json(status: u16, body: impl Into<Vec<u8>>) -> Peer {
        Peer::Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        }
    }
}

async fn serve(peer: Peer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, peer.clone()));
        }
    });
    addr
}

/// Reads one request: headers, then a `content-length` body.
async fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - end;
    while have < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(())
}

async fn answer(mut stream: TcpStream, peer: Peer) {
    if read_request(&mut stream).await.is_none() {
        return;
    }
    let head = |status: u16, headers: &[(&str, String)], length: Option<usize>| {
        let mut h = format!("HTTP/1.1 {status} Whatever\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        match length {
            Some(n) => h.push_str(&format!("content-length: {n}\r\n")),
            None => h.push_str("transfer-encoding: chunked\r\n"),
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    match peer {
        Peer::Answer {
            status,
            headers,
            body,
        } => {
            let _ = stream
                .write_all(&head(status, &headers, Some(body.len())))
                .await;
            let _ = stream.write_all(&body).await;
        }
        Peer::Trickle { body, every } => {
            if stream
                .write_all(&head(200, &[], Some(body.len())))
                .await
                .is_err()
            {
                return;
            }
            for b in body {
                tokio::time::sleep(every).await;
                if stream.write_all(&[b]).await.is_err() {
                    return;
                }
            }
        }
        Peer::TrickleHeaders { every } => {
            for b in head(200, &[], Some(2)).into_iter().chain(*b"{}") {
                tokio::time::sleep(every).await;
                if stream.write_all(&[b]).await.is_err() {
                    return;
                }
            }
        }
        Peer::Endless => {
            if stream.write_all(&head(200, &[], None)).await.is_err() {
                return;
            }
            let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Peer::Silent => tokio::time::sleep(Duration::from_secs(3600)).await,
    }
    let _ = stream.flush().await;
}

fn health_config() -> HealthConfig {
    HealthConfig {
        timeout: CONFIG_TIMEOUT,
        ..HealthConfig::default()
    }
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

async fn health_of(peer: Peer) -> HealthSample {
    let addr = serve(peer).await;
    let client = probes::http_client();
    let (sample, took) = timed(health::probe(
        &client,
        &health_config(),
        &format!("http://{addr}/health"),
    ))
    .await;
    assert!(took < BOUND, "the health probe took {took:?}");
    sample
}

async fn prometheus_of(peer: Peer) -> ProviderSample {
    let addr = serve(peer).await;
    let p = Prometheus::new(
        probes::http_client(),
        PrometheusConfig {
            url: format!("http://{addr}").parse().expect("a URL"),
            timeout: CONFIG_TIMEOUT,
            ..PrometheusConfig::default()
        },
    );
    let (sample, took) = timed(p.sample("prod", "app", Duration::from_secs(60))).await;
    assert!(took < BOUND, "the Prometheus sample took {took:?}");
    sample
}

fn vector(value: &str) -> Vec<u8> {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000.5,{value}]}}]}}}}"#
    )
    .into_bytes()
}

fn nested(depth: usize) -> Vec<u8> {
    format!(
        r#"{{"version":{}1{},"checks":{{}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

/// Every way a peer can misbehave, for both the health endpoint and Prometheus.
fn hostile_peers() -> Vec<(&'static str, Peer)> {
    let ten_mb = vec![b' '; 10 << 20];
    vec![
        ("a 10 MB body", Peer::json(200, ten_mb)),
        ("an endless chunked body", Peer::Endless),
        (
            "a body trickled a byte per 100 ms",
            Peer::Trickle {
                body: br#"{"status":"success","version":"v1","checks":{}}"#.to_vec(),
                every: Duration::from_millis(100),
            },
        ),
        (
            "headers trickled a byte per 100 ms",
            Peer::TrickleHeaders {
                every: Duration::from_millis(100),
            },
        ),
        ("a peer that never answers", Peer::Silent),
        (
            "invalid UTF-8",
            Peer::json(200, b"\xff\xfe\xfd{\"a\":\"\xc3\x28\"}".to_vec()),
        ),
        ("deeply nested JSON", Peer::json(200, nested(100_000))),
        ("an empty body", Peer::json(200, Vec::new())),
        ("HTML", Peer::json(200, b"<html>hi</html>".to_vec())),
        ("a 500", Peer::json(500, b"{}".to_vec())),
        (
            "a 503 with a JSON error",
            Peer::json(
                503,
                br#"{"status":"error","errorType":"unavailable","error":"down"}"#.to_vec(),
            ),
        ),
        ("a 429", Peer::json(429, Vec::new())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_health_endpoints_fail_the_check_within_the_timeout() {
    for (what, peer) in hostile_peers() {
        let sample = health_of(peer).await;
        assert!(
            matches!(sample, HealthSample::Failed(_)),
            "{what}: {sample:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_smoke_endpoints_fail_the_check_within_the_timeout() {
    let check = |url: String| SmokeCheck {
        name: "home".into(),
        url: url.parse().expect("a URL"),
        method: HttpMethod::GET,
        expect_status: HttpStatus::OK,
        expect_body_contains: Some("welcome".into()),
        timeout: CONFIG_TIMEOUT,
    };
    for (what, peer) in hostile_peers() {
        let addr = serve(peer).await;
        let check = check(format!("http://{addr}/"));
        let client = probes::http_client();
        let (sample, took) = timed(smoke::probe(&client, &check, &check.url)).await;
        assert!(took < BOUND, "{what}: the smoke check took {took:?}");
        assert!(
            matches!(sample, SmokeSample::Failed(_)),
            "{what}: {sample:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_at_max_body() {
    let sample = health_of(Peer::json(200, vec![b' '; 10 << 20])).await;
    let HealthSample::Failed(why) = sample else {
        panic!("{sample:?}")
    };
    assert!(why.contains(&MAX_BODY.to_string()), "{why}");
    // Without a length announced, reading stops at the limit too.
    let sample = health_of(Peer::Endless).await;
    let HealthSample::Failed(why) = sample else {
        panic!("{sample:?}")
    };
    assert!(
        why.contains(&MAX_BODY.to_string()) || why.contains("time"),
        "{why}"
    );
}

/// Values no judge may read as evidence: not numbers, not finite, negative, wrong types.
fn garbage_prometheus_answers() -> Vec<(&'static str, Peer)> {
    let mut peers = hostile_peers();
    for (what, value) in [
        ("NaN", r#""NaN""#),
        ("+Inf", r#""+Inf""#),
        ("-Inf", r#""-Inf""#),
        ("-1", r#""-1""#),
        ("a word", r#""lots""#),
        ("a number instead of a string", "150"),
        ("null", "null"),
        ("an object", r#"{"a":1}"#),
        ("a list", r#"["1"]"#),
    ] {
        peers.push((what, Peer::json(200, vector(value))));
    }
    for (what, body) in [
        (
            "an empty result",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        ),
        (
            "a matrix",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        ),
        (
            "a string result",
            r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
        ),
        ("no data", r#"{"status":"success"}"#),
        ("status not a string", r#"{"status":1,"data":null}"#),
        ("a list at the top", r#"[1,2,3]"#),
        (
            "result not a list",
            r#"{"status":"success","data":{"resultType":"vector","result":"x"}}"#,
        ),
        (
            "a value too short",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
        ),
    ] {
        peers.push((what, Peer::json(200, body.as_bytes().to_vec())));
    }
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_prometheus_answers_are_no_evidence_within_the_timeout() {
    let policy = Policy::from_config(&Config::default());
    for (what, peer) in garbage_prometheus_answers() {
        let sample = prometheus_of(peer).await;
        // Unavailable and no data are inconclusive by definition; counts must be ones the judge
        // discards (non-finite or negative).
        if let ProviderSample::Counts { requests, errors } = sample {
            assert!(
                !(requests.is_finite() && errors.is_finite() && requests >= 0.0 && errors >= 0.0),
                "{what}: usable counts {requests} / {errors}"
            );
        }
        // The judge, fed only this sample for a whole window, never passes and never rolls back.
        let verdicts = judge::judge(
            &policy,
            &RolloutFacts::default(),
            &window_of(&policy, &sample),
        );
        for v in &verdicts {
            assert!(
                !matches!(
                    v,
                    Verdict::RollBack { .. } | Verdict::Finish(judge::Finish::Passed)
                ),
                "{what}: {sample:?} gave {v:?}"
            );
        }
    }
}

/// Observations every interval over the whole window, each with `sample` as the only evidence.
fn window_of(policy: &Policy, sample: &ProviderSample) -> Vec<Observation> {
    let step = Duration::from_secs(10);
    let ticks = (policy.window.as_secs() / step.as_secs()) as u32 + 3;
    (0..ticks)
        .map(|i| Observation {
            at: step * i,
            progress: Progress::Complete,
            pod_failure: None,
            pending: None,
            probes: Some(ProbeRound {
                health: None,
                smoke: Vec::new(),
                providers: vec![(Provider::Prometheus, sample.clone())],
            }),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_retry_after_of_years_is_capped() {
    let addr = serve(Peer::Answer {
        status: 429,
        headers: vec![("retry-after", u64::MAX.to_string())],
        body: b"rate_limited".to_vec(),
    })
    .await;
    let slack = Slack::new(
        probes::http_client(),
        format!("http://{addr}/services/T0/B0/secret"),
        TIMEOUT,
    );
    let (result, took) = timed(slack.post("hello")).await;
    assert!(took < BOUND, "{took:?}");
    match result {
        Err(PostError::Retry { after, .. }) => {
            let after = after.expect("a wait");
            assert!(after <= Duration::from_secs(60), "{after:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sinks_answer_within_the_timeout() {
    for (what, peer) in hostile_peers() {
        let addr = serve(peer).await;
        let slack = Slack::new(
            probes::http_client(),
            format!("http://{addr}/services/T0/B0/secret"),
            TIMEOUT,
        );
        let (result, took) = timed(slack.post("hello")).await;
        assert!(took < BOUND, "{what}: the Slack post took {took:?}");
        // A peer answering 200 to anything is a success; otherwise an error that names no URL.
        if let Err(e) = result {
            assert!(!e.to_string().contains("secret"), "{what}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_not_followed() {
    // A POST carrying a secret (the routing key in the body, the webhook in the path) must not
    // be re-sent to a host the config did not name.
    let elsewhere = serve(Peer::json(200, b"ok".to_vec())).await;
    let redirect = serve(Peer::Answer {
        status: 307,
        headers: vec![(
            "location",
            format!("http://localhost:{}/stolen", elsewhere.port()),
        )],
        body: Vec::new(),
    })
    .await;
    let slack = Slack::new(
        probes::http_client(),
        format!("http://{redirect}/services/T0/B0/secret"),
        TIMEOUT,
    );
    let result = slack.post("hello").await;
    assert!(result.is_err(), "the redirect was followed: {result:?}");
}
