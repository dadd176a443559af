//! Serving a simulated service that can be switched "down": while down its port refuses
//! connections and every open connection is cut, as when the real service's process dies;
//! back "up", it listens on the same port again.
//!
//! Each period of being up is a *generation* with its own cancellation token. Going down cancels
//! it: the listener stops accepting and is closed, handlers in flight return at once, and the
//! connection streams fail their next read or write, so clients see a connection error rather
//! than an HTTP answer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Whether a service accepts connections, shared between `set_state` and its server task.
#[derive(Clone)]
pub struct Switch {
    inner: Arc<Mutex<Generation>>,
    up: watch::Sender<bool>,
}

/// The current generation and whether the service is meant to be up, changed together under
/// one lock: a generation is started only while up, and going down cancels whichever is current,
/// so none can outlive a `down` however the two threads interleave.
struct Generation {
    token: CancellationToken,
    up: bool,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            inner: Arc::new(Mutex::new(Generation {
                token: CancellationToken::new(),
                up: true,
            })),
            up: watch::Sender::new(true),
        }
    }
}

impl Switch {
    /// Takes the service up or down. Going down cuts the current generation at once, so the
    /// change holds for the very next request.
    pub fn set_up(&self, up: bool) {
        {
            let mut generation = self.lock();
            generation.up = up;
            if !up {
                generation.token.cancel();
            }
        }
        self.up.send_replace(up);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> CancellationToken {
        self.lock().token.clone()
    }

    /// A new generation, or `None` when the service is meant to be down.
    fn new_generation(&self, shutdown: &CancellationToken) -> Option<CancellationToken> {
        let mut generation = self.lock();
        if !generation.up {
            return None;
        }
        generation.token = shutdown.child_token();
        Some(generation.token.clone())
    }
}

/// Binds 127.0.0.1 on an ephemeral port and serves `router` until `shutdown`, following the
/// switch. Returns the bound address, which stays the same across down/up cycles.
pub async fn serve(
    router: Router,
    switch: Switch,
    shutdown: CancellationToken,
) -> io::Result<SocketAddr> {
    let listener = bind(SocketAddr::from((crate::sim::loopback(), 0)))?;
    let addr = listener.local_addr()?;
    let router = router.layer(middleware::from_fn_with_state(switch.clone(), cut_on_down));
    tokio::spawn(supervise(listener, addr, router, switch, shutdown));
    Ok(addr)
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Rebinding the same port right after closing it must not fail on TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn supervise(
    first: TcpListener,
    addr: SocketAddr,
    router: Router,
    switch: Switch,
    shutdown: CancellationToken,
) {
    let mut up = switch.up.subscribe();
    let mut listener = Some(first);
    loop {
        // Wait until meant to be up (the first generation starts up unless set down before).
        while !*up.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = up.changed() => if changed.is_err() { return },
            }
        }
        let Some(generation) = switch.new_generation(&shutdown) else {
            // Went down since the check: wait for the change to show.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = up.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let tcp = match listener.take() {
            Some(l) => l,
            None => match rebind(addr, &shutdown).await {
                Some(l) => l,
                None => return,
            },
        };
        let killable = KillableListener {
            inner: Some(tcp),
            addr,
            generation: generation.clone(),
        };
        let ended = generation.clone();
        let served = axum::serve(killable, router.clone())
            .with_graceful_shutdown(async move { ended.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%addr, %error, "simulated service stopped serving");
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

async fn rebind(addr: SocketAddr, shutdown: &CancellationToken) -> Option<TcpListener> {
    loop {
        match bind(addr) {
            Ok(l) => return Some(l),
            Err(error) => {
                tracing::debug!(%addr, %error, "rebinding simulated service, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                }
            }
        }
    }
}

/// Handlers in flight (a slow answer, a health delay) end when the service goes down; the
/// response they return is never delivered because the stream is cut too.
async fn cut_on_down(State(switch): State<Switch>, request: Request, next: Next) -> Response {
    let generation = switch.current();
    tokio::select! {
        response = next.run(request) => response,
        _ = generation.cancelled() => Response::new(axum::body::Body::empty()),
    }
}

struct KillableListener {
    /// Closed as soon as the generation is cut, so the port refuses connections at once (a
    /// listening socket left open would complete handshakes into its backlog) while the
    /// connections already accepted are being cut.
    inner: Option<TcpListener>,
    addr: SocketAddr,
    generation: CancellationToken,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = self.inner.as_ref() else {
                // Down: accept nothing more; graceful shutdown ends the generation.
                return futures::future::pending().await;
            };
            let accepted = tokio::select! {
                biased;
                _ = self.generation.cancelled() => None,
                accepted = listener.accept() => Some(accepted),
            };
            match accepted {
                None => self.inner = None,
                Some(Ok((stream, addr))) => {
                    let _ = stream.set_nodelay(true);
                    let cut = Box::pin(self.generation.clone().cancelled_owned());
                    return (KillableStream { inner: stream, cut }, addr);
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A connection that fails as soon as its generation is cut; polling the cut future registers
/// the waker, so even an idle keep-alive connection is closed promptly.
struct KillableStream {
    inner: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableStream {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.cut.poll_unpin(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated service is down",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A fault state shared between `set_state` and the handlers.
#[derive(Clone, Default)]
pub struct Shared<T: Copy + Default> {
    inner: Arc<Mutex<T>>,
}

impl<T: Copy + Default> Shared<T> {
    pub fn get(&self) -> T {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, value: T) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// How long a `slow` provider takes to answer.
pub const SLOW: std::time::Duration = std::time::Duration::from_secs(30);

/// The form fields of a query string or an `application/x-www-form-urlencoded` body.
pub fn form_fields(encoded: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(encoded).into_owned().collect()
}

/// What every simulated notification sink has: its fault state, the switch that refuses
/// connections while it is `down`, and the log of every request it received.
#[derive(Clone, Default)]
pub(crate) struct Sink {
    pub(crate) log: super::Log,
    pub(crate) state: Shared<crate::sim::scenario::SinkState>,
    switch: Switch,
}

impl Sink {
    /// Serves `router` on a loopback address of its own until `shutdown`.
    pub async fn serve(
        &self,
        router: Router,
        shutdown: CancellationToken,
    ) -> io::Result<SocketAddr> {
        serve(router, self.switch.clone(), shutdown).await
    }

    /// `down` refuses connections, `error` answers 500, `rate_limited` answers 429.
    pub fn set_state(&self, state: crate::sim::scenario::SinkState) {
        self.state.set(state);
        self.switch
            .set_up(state != crate::sim::scenario::SinkState::Down);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn no_generation_starts_while_down() {
        let switch = Switch::default();
        let shutdown = CancellationToken::new();
        let first = switch.new_generation(&shutdown).unwrap();
        switch.set_up(false);
        assert!(
            first.is_cancelled(),
            "going down cuts the current generation"
        );
        // The server task may loop round before it sees the change: it must not serve again.
        assert!(switch.new_generation(&shutdown).is_none());
        switch.set_up(true);
        let second = switch.new_generation(&shutdown).unwrap();
        assert!(!second.is_cancelled());
        switch.set_up(false);
        assert!(second.is_cancelled());
    }

    /// Down and up again, many times, with a kept-alive connection each time: once down, no
    /// request is answered, and a connection attempt is refused rather than left pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_down_refuses_and_every_up_serves_again() {
        let switch = Switch::default();
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let addr = serve(router, switch.clone(), shutdown.clone())
            .await
            .unwrap();
        let client = crate::probes::http_client();
        let url = format!("http://{addr}/");
        for cycle in 0..100 {
            switch.set_up(true);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while client.get(&url).send().await.is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cycle {cycle}: never up again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            // Down from another thread, racing the server task as a scenario's script does.
            let other = switch.clone();
            tokio::task::spawn_blocking(move || other.set_up(false))
                .await
                .unwrap();
            let answer = client.get(&url).send().await;
            assert!(answer.is_err(), "cycle {cycle}: answered while down");
            // The listening socket is closed by the server task: soon, not necessarily yet.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while TcpStream::connect(addr).await.is_ok() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cycle {cycle}: connections still accepted while down"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert!(
                client.get(&url).send().await.is_err(),
                "cycle {cycle}: answered while down"
            );
        }
    }
}
