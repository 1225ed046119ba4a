//! The HTTP/1.1 connection loop on a real loopback listener: keep-alive
//! requests with and without bodies, pipelining, and graceful shutdown that
//! finishes the request in flight and closes idle connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};

/// The idle timeout the tests run with.
const IDLE: Duration = Duration::from_millis(700);
/// Limits no test but the limits test reaches.
const LIMITS: custos_server::http::ConnectionLimits =
    custos_server::http::ConnectionLimits { total: 1024, per_client: 1024 };

type Running = (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

/// Starts the loop on 127.0.0.1:0: its address, the shutdown trigger, the task.
async fn start() -> Running {
    let router = Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow done"
            }),
        )
        .route("/hello", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(custos_server::http::serve(listener, router, None, IDLE, LIMITS, async {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx, task)
}

/// Triggers the shutdown and waits for the loop to end.
async fn shut_down(stop: tokio::sync::oneshot::Sender<()>, task: tokio::task::JoinHandle<std::io::Result<()>>) {
    stop.send(()).expect("server running");
    finished(task).await;
}

/// Waits (bounded) for the loop to end without an error.
async fn finished(task: tokio::task::JoinHandle<std::io::Result<()>>) {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shut down in time")
        .expect("task")
        .expect("serve");
}

/// Reads one response with a Content-Length body: (status line, body).
fn read_response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("body");
    (status.trim().to_string(), body)
}

fn connect(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    BufReader::new(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_bodies_and_pipelining() {
    let (addr, stop, task) = start().await;
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        // Many POSTs with bodies on one connection: each body comes back whole.
        for i in 0..200 {
            let body = format!("request number {i} {}", "x".repeat(i));
            let req = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            c.get_mut().write_all(req.as_bytes()).expect("send");
            let (status, got) = read_response(&mut c);
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(got, body.as_bytes());
        }
        // Three requests in one write are answered in order.
        let pipelined = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n\
                         POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
                         GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
        c.get_mut().write_all(pipelined.as_bytes()).expect("send");
        assert_eq!(read_response(&mut c), ("HTTP/1.1 200 OK".into(), b"hello".to_vec()));
        assert_eq!(read_response(&mut c), ("HTTP/1.1 200 OK".into(), b"abc".to_vec()));
        assert_eq!(read_response(&mut c).0, "HTTP/1.1 404 Not Found");
    })
    .await
    .expect("client thread");
    shut_down(stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections() {
    let (addr, stop, task) = start().await;
    let (idle, slow) = tokio::task::spawn_blocking(move || {
        let mut idle = connect(addr);
        idle.get_mut().write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
        assert_eq!(read_response(&mut idle).1, b"hello");
        let mut slow = connect(addr);
        slow.get_mut().write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
        (idle, slow)
    })
    .await
    .expect("client thread");
    tokio::time::sleep(Duration::from_millis(100)).await; // the slow request is in its handler
    stop.send(()).expect("server running");
    let mut slow = tokio::task::spawn_blocking(move || {
        let mut idle = idle;
        let mut rest = Vec::new();
        // The idle keep-alive connection is closed: end of stream, no bytes.
        assert_eq!(idle.read_to_end(&mut rest).expect("read"), 0);
        let mut slow = slow;
        let (status, body) = read_response(&mut slow);
        assert_eq!((status.as_str(), body.as_slice()), ("HTTP/1.1 200 OK", b"slow done".as_slice()));
        slow
    })
    .await
    .expect("client thread");
    finished(task).await;
    // Nothing listens any more, and the finished connection is closed too.
    assert!(TcpStream::connect(addr).is_err());
    let mut rest = Vec::new();
    assert_eq!(slow.read_to_end(&mut rest).expect("read"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_are_closed_after_the_idle_timeout() {
    let (addr, stop, task) = start().await;
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        // Never sends anything.
        let mut silent = connect(addr);
        // Sends half a request head and stops.
        let mut trickle = connect(addr);
        trickle.get_mut().write_all(b"GET /hello HTTP/1.1\r\nHo").expect("send");
        // Is answered once, then stays idle.
        let mut idle = connect(addr);
        idle.get_mut().write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
        assert_eq!(read_response(&mut idle).1, b"hello");
        for (name, c) in [("silent", &mut silent), ("trickling", &mut trickle), ("idle", &mut idle)] {
            let mut rest = Vec::new();
            // Closed by the server (not by our 10 s read timeout), with nothing more sent.
            let _ = c.read_to_end(&mut rest);
            assert!(rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"), "{name}: {rest:?}");
        }
        let waited = started.elapsed();
        assert!(waited >= IDLE && waited < Duration::from_secs(8), "closed after {waited:?}");
        // A busy connection is not cut: requests keep coming for longer than the timeout.
        let mut busy = connect(addr);
        let until = std::time::Instant::now() + IDLE * 2;
        while std::time::Instant::now() < until {
            busy.get_mut().write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
            assert_eq!(read_response(&mut busy).1, b"hello");
            std::thread::sleep(IDLE / 4);
        }
    })
    .await
    .expect("client thread");
    shut_down(stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    let (addr, stop, task) = start().await;
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        // The head promises 100 bytes of body; 10 arrive, then nothing.
        c.get_mut()
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            .expect("send");
        let started = std::time::Instant::now();
        let (status, body) = read_response(&mut c);
        let waited = started.elapsed();
        assert_eq!(status, "HTTP/1.1 408 Request Timeout");
        assert!(String::from_utf8_lossy(&body).contains("not completed within"), "{body:?}");
        assert!(waited >= IDLE - Duration::from_millis(50) && waited < Duration::from_secs(8), "{waited:?}");
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).expect("read"), 0, "closed after the 408");
        // A new connection is served as usual.
        let mut fresh = connect(addr);
        fresh.get_mut().write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
        assert_eq!(read_response(&mut fresh).1, b"hello");
    })
    .await
    .expect("client thread");
    shut_down(stop, task).await;
}

/// Answers `GET /hot` itself and hands everything else to the router.
struct Hot;

impl custos_server::http::HotPath for Hot {
    fn answer(
        &self,
        req: axum::extract::Request<hyper::body::Incoming>,
    ) -> Result<
        futures_util::future::BoxFuture<'static, axum::response::Response>,
        axum::extract::Request<hyper::body::Incoming>,
    > {
        use axum::response::IntoResponse;
        if req.method() == axum::http::Method::GET && req.uri().path() == "/hot" {
            return Ok(Box::pin(async { "from the hot path".into_response() }));
        }
        Err(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_path_answers_its_requests_and_hands_the_rest_to_the_router() {
    let router = Router::new().route("/hello", get(|| async { "hello" })).route("/hot", post(|| async { "routed" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hot: std::sync::Arc<dyn custos_server::http::HotPath> = std::sync::Arc::new(Hot);
    let task = tokio::spawn(custos_server::http::serve(listener, router, Some(hot), IDLE, LIMITS, async {
        let _ = stop_rx.await;
    }));
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        for (request, answer) in [
            ("GET /hot HTTP/1.1\r\nHost: t\r\n\r\n", "from the hot path"),
            ("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", "hello"),
            ("POST /hot HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", "routed"),
        ] {
            c.get_mut().write_all(request.as_bytes()).expect("send");
            assert_eq!(read_response(&mut c), ("HTTP/1.1 200 OK".into(), answer.as_bytes().to_vec()), "{request}");
        }
    })
    .await
    .expect("client thread");
    shut_down(stop, task).await;
}

/// A connection to `addr` from the loopback address `from` (all of 127/8 is loopback on Linux).
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("address")).expect("bind source");
    let stream = socket.connect(addr).await.expect("connect").into_std().expect("std");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream
}

/// Sends GET /hello on `s` and returns the status line; the connection stays open.
fn hello(s: &TcpStream) -> String {
    let mut w = s.try_clone().expect("clone");
    w.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut status = String::new();
    BufReader::new(s.try_clone().expect("clone")).read_line(&mut status).expect("status");
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_take_every_connection() {
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = custos_server::http::ConnectionLimits { total: 5, per_client: 3 };
    // A long idle timeout: the held connections must stay open during the test.
    let task =
        tokio::spawn(custos_server::http::serve(listener, router, None, Duration::from_secs(10), limits, async {
            let _ = stop_rx.await;
        }));
    // Three idle connections from one client fill its share...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    // (the server counts a connection once it accepted it)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::task::spawn_blocking({
        let s = connect_from("127.0.0.1", addr).await;
        move || hello(&s)
    });
    assert!(refused.await.expect("join").starts_with("HTTP/1.1 503"), "a fourth from the same client is refused");
    // ...while another client is still served, up to the total (its connection
    // kept open, so the count cannot race a close).
    let other = connect_from("127.0.0.2", addr).await;
    let (status, other) = tokio::task::spawn_blocking(move || (hello(&other), other)).await.expect("join");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    held.push(other);
    // The fifth: accepted in order, before the next one.
    held.push(connect_from("127.0.0.3", addr).await);
    let over = connect_from("127.0.0.5", addr).await;
    let status = tokio::task::spawn_blocking(move || hello(&over)).await.expect("join");
    assert!(status.starts_with("HTTP/1.1 503"), "past the total: {status}");
    // Closed connections give their places back.
    held.clear();
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = connect_from("127.0.0.1", addr).await;
        status = tokio::task::spawn_blocking(move || hello(&s)).await.expect("join");
        if status.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    stop_tx.send(()).expect("running");
    finished(task).await;
}
