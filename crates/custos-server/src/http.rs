//! The HTTP/1.1 connection loop: accepts on any axum listener and serves the
//! router on each connection until shutdown, draining connections gracefully.
//!
//! It replaces `axum::serve` for three reasons. Hyper's request-body channel
//! wakes the connection's own task while that task is polling it (when a
//! handler takes the body); tokio treats such a wake as a yield: the task goes
//! to the back of the queue and an idle worker thread is woken to steal it, so
//! every POST paid a second context switch and a cross-core hand-off (2.1
//! context switches per request against 1.0 for GET, measured with
//! `perf stat`). [`AbsorbSelfWake`] polls such a task again at once instead.
//! `axum::serve` sets no timeouts, so idle and trickling clients could hold
//! connections forever. And a [`HotPath`] (OCSP) answers its requests without
//! the router's per-request work.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

/// How many times in a row a task that woke itself is polled again before
/// it is left to the runtime's queue like any other woken task.
const MAX_IMMEDIATE_REPOLLS: u32 = 4;

/// Serves `router` on every connection `listener` accepts until `shutdown`
/// completes, then lets open connections finish their request and close.
/// A connection whose next request head has not arrived `idle_timeout` after
/// it opened (or after its last response) is closed, and a request whose
/// body and answer are not done `idle_timeout` after its head arrived gets
/// 408 and its connection closed: trickling clients cannot hold one forever.
/// `hot`, if given, sees each request first and may answer it without the router.
/// Past `limits` (connections open in all, or from one client address), a
/// new connection gets one 503 answer and is closed, so that one client
/// cannot take every file descriptor.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    hot: Option<Arc<dyn HotPath>>,
    idle_timeout: Duration,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    L::Io: PeerIdentity,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let open = Arc::new(OpenConnections::default());
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Some(slot) = open.admit(peer.ip(), limits) else {
            tokio::spawn(refuse(io, idle_timeout));
            continue;
        };
        let router = router.clone();
        let hot = hot.clone();
        let peer_certificate = io.peer_certificate();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let tried = match &hot {
                Some(h) => h.answer(req),
                None => Err(req),
            };
            let answer = match tried {
                Ok(answer) => answer,
                // Only what reaches the router learns who is asking: the OCSP hot path stays as it was.
                Err(mut req) => {
                    req.extensions_mut().insert(crate::api::PeerAddress(Some(peer)));
                    if let Some(der) = &peer_certificate {
                        req.extensions_mut().insert(crate::api::PeerCertificate(der.clone()));
                    }
                    Box::pin(router.clone().oneshot(req.map(axum::body::Body::new)).map(|r| match r {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }))
                }
            };
            async move {
                Ok::<_, Infallible>(match tokio::time::timeout(idle_timeout, answer).await {
                    Ok(response) => response,
                    Err(_) => too_slow(idle_timeout),
                })
            }
        });
        let mut stop = stop_rx.clone();
        tokio::spawn(AbsorbSelfWake::new(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle_timeout)
                .serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(result),
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
            }
            // The connection's place is given back when it ends.
            drop(slot);
        }));
    }
    drop(stop_rx);
    // Wakes every connection task; each finishes its request in flight.
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}

/// What a connection says about its client besides its address.
pub trait PeerIdentity {
    /// The DER of the client certificate the TLS handshake verified, if any.
    fn peer_certificate(&self) -> Option<Arc<Vec<u8>>> {
        None
    }
}

impl PeerIdentity for tokio::net::TcpStream {}

impl PeerIdentity for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn peer_certificate(&self) -> Option<Arc<Vec<u8>>> {
        self.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|c| Arc::new(c.to_vec()))
    }
}

/// How many connections a listener keeps open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In all.
    pub total: usize,
    /// From one client IP address.
    pub per_client: usize,
}

/// The connections open now, in all and per client address.
#[derive(Default)]
struct OpenConnections {
    counts: Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// A connection's place among the open ones, given back on drop.
struct Slot {
    open: Arc<OpenConnections>,
    ip: std::net::IpAddr,
}

impl OpenConnections {
    /// A place for a new connection from `ip`, if the limits leave one.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, limits: ConnectionLimits) -> Option<Slot> {
        let mut counts = self.counts.lock().ok()?;
        let (total, per) = &mut *counts;
        let mine = per.get(&ip).copied().unwrap_or(0);
        if *total >= limits.total || mine >= limits.per_client {
            return None;
        }
        *total += 1;
        per.insert(ip, mine + 1);
        Some(Slot { open: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.open.counts.lock() {
            let (total, per) = &mut *counts;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&self.ip);
                }
            }
        }
    }
}

/// Answers a connection over the limits with one 503 and closes it.
async fn refuse<I>(io: I, idle_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
        let mut response = crate::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
            "this client, or all clients together, hold as many connections as custos keeps open; retry later",
        );
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        Ok::<_, Infallible>(response)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(idle_timeout, conn).await;
}

/// Requests answered before, and without, the router: for the few routes
/// that carry nearly all the traffic, where the router's per-request work
/// is a measurable share of the whole.
pub trait HotPath: Send + Sync + 'static {
    /// The answer to `req` if this path serves it; otherwise `req`, untouched, for the router.
    // The request goes back by value: boxing it would allocate on every request.
    #[allow(clippy::result_large_err)]
    fn answer(&self, req: Request<Incoming>) -> Result<BoxFuture<'static, Response>, Request<Incoming>>;
}

/// The answer to a request that did not complete in time.
fn too_slow(limit: Duration) -> Response {
    let mut response = crate::problem(
        StatusCode::REQUEST_TIMEOUT,
        "request timeout",
        &format!("the request was not completed within {} s", limit.as_secs()),
    );
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

fn log_end(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A future wrapper that polls its future again, at once, when the future
/// wakes itself during its own poll, instead of handing the wake to the
/// runtime's scheduler. Wakes from anywhere else pass straight through.
pub struct AbsorbSelfWake<F> {
    inner: Pin<Box<F>>,
    state: Arc<SelfWake>,
    waker: Waker,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const POLLING_WOKEN: u8 = 2;

struct SelfWake {
    /// IDLE, POLLING, or POLLING_WOKEN (woken while being polled).
    state: AtomicU8,
    /// The waker of the task that polls us, for wakes from outside a poll.
    outer: Mutex<Option<Waker>>,
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Either the poller sees POLLING_WOKEN when it ends its poll, or the
        // poll has ended (IDLE) and the task's own waker is used: never lost.
        match self.state.compare_exchange(POLLING, POLLING_WOKEN, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(POLLING_WOKEN) => {}
            Err(_) => {
                let outer = self.outer.lock().ok().and_then(|w| w.clone());
                if let Some(w) = outer {
                    w.wake();
                }
            }
        }
    }
}

impl<F: Future> AbsorbSelfWake<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> AbsorbSelfWake<F> {
        let state = Arc::new(SelfWake { state: AtomicU8::new(IDLE), outer: Mutex::new(None) });
        let waker = Waker::from(state.clone());
        AbsorbSelfWake { inner: Box::pin(inner), state, waker }
    }
}

impl<F: Future> Future for AbsorbSelfWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Ok(mut outer) = this.state.outer.lock()
            && !outer.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            *outer = Some(cx.waker().clone());
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_IMMEDIATE_REPOLLS {
            this.state.state.store(POLLING, Ordering::Release);
            let result = this.inner.as_mut().poll(&mut inner_cx);
            let ended = this.state.state.swap(IDLE, Ordering::AcqRel);
            if result.is_ready() {
                return result;
            }
            if ended != POLLING_WOKEN {
                return Poll::Pending;
            }
        }
        // Still waking itself: yield to the runtime like any woken task.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the wakes it receives.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Wakes itself during each of its first `wakes` polls, then is ready.
    struct SelfWaking {
        wakes: u32,
        polls: u32,
    }

    impl Future for SelfWaking {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls += 1;
            if self.polls > self.wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_self_wake_is_polled_again_at_once_without_the_scheduler() {
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(AbsorbSelfWake::new(SelfWaking { wakes: 2, polls: 0 }));
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "the runtime's waker must not be used");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_is_yielded_to_the_runtime() {
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(AbsorbSelfWake::new(SelfWaking { wakes: 100, polls: 0 }));
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake hands it back to the runtime");
        // Bounded: polled 1 + MAX_IMMEDIATE_REPOLLS times, not until it stops.
        assert_eq!(f.inner.polls, 1 + MAX_IMMEDIATE_REPOLLS);
    }

    #[test]
    fn a_wake_from_outside_a_poll_reaches_the_current_waker() {
        let (first, waker1) = counting_waker();
        let (second, waker2) = counting_waker();
        let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
        let s = slot.clone();
        let mut f = std::pin::pin!(AbsorbSelfWake::new(std::future::poll_fn(move |cx| {
            *s.lock().expect("slot") = Some(cx.waker().clone());
            Poll::<()>::Pending
        })));
        assert!(f.as_mut().poll(&mut Context::from_waker(&waker1)).is_pending());
        assert!(f.as_mut().poll(&mut Context::from_waker(&waker2)).is_pending());
        slot.lock().expect("slot").take().expect("polled once").wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the latest task waker is woken");
    }

    #[test]
    fn wakes_racing_the_end_of_a_poll_are_never_lost() {
        // Every round, another thread wakes the future while it may be
        // finishing its poll; a lost wake would hang the runtime's block_on,
        // which the bounded channel receive below turns into a failure.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            for round in 0..20_000u32 {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<u32>();
                std::thread::spawn(move || {
                    let _ = ready_tx.send(round);
                });
                let got = AbsorbSelfWake::new(ready_rx).await.expect("sent");
                assert_eq!(got, round);
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(120)).expect("a wake was lost");
    }
}
