//! `custos-load`: a closed-loop HTTP load generator for OCSP benchmarks.
//!
//! N connections (one thread each) send DER requests from a directory, round
//! robin, by POST or RFC 5019 GET, for a fixed time, and report throughput and
//! latency percentiles as one JSON line. Loopback only, bounded in time and in
//! count, so it stops by itself. It keeps connections alive when the server
//! allows and reconnects when the server closes (openssl's responder closes
//! after every response), and it never opens a connection without sending a
//! request (which sends openssl's responder into a busy loop, openssl #31129).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

/// Closed-loop OCSP load generator.
#[derive(Debug, Parser)]
struct Args {
    /// Server address; must be a loopback address.
    #[arg(long)]
    addr: SocketAddr,
    /// Directory of DER OCSP requests (*.der).
    #[arg(long)]
    requests: PathBuf,
    /// post or get.
    #[arg(long, default_value = "post")]
    method: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// How long to run, in seconds (at most 60).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Request path for POST; GET appends `/` and the base64 request to it.
    #[arg(long, default_value = "/ocsp")]
    path: String,
    /// Open a new connection for every request, as openssl's responder forces.
    #[arg(long)]
    close: bool,
}

fn main() {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("custos-load only sends to loopback addresses");
        std::process::exit(2);
    }
    let mut bodies = Vec::new();
    let entries =
        std::fs::read_dir(&args.requests).unwrap_or_else(|e| fail(&format!("{}: {e}", args.requests.display())));
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "der") {
            bodies.push(std::fs::read(entry.path()).unwrap_or_else(|e| fail(&e.to_string())));
        }
    }
    if bodies.is_empty() {
        fail("no *.der requests found");
    }
    let get = match args.method.as_str() {
        "post" => false,
        "get" => true,
        other => fail(&format!("--method {other}: expected post or get")),
    };
    let requests: Vec<Vec<u8>> = bodies.iter().map(|b| http_request(&args, b, get)).collect();
    let seconds = args.seconds.clamp(0.1, 60.0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.conns.clamp(1, 1024))
            .map(|worker| {
                let requests = &requests;
                s.spawn(move || run(args.addr, requests, worker, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let errors: u64 = results.iter().map(|(_, e)| e).sum();
    latencies.sort_unstable();
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            f64::from(latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]) / 1000.0
        }
    };
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"seconds\": {:.2}, \"rps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
        latencies.len(),
        errors,
        elapsed,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("custos-load: {msg}");
    std::process::exit(2)
}

fn http_request(args: &Args, body: &[u8], get: bool) -> Vec<u8> {
    use base64::Engine;
    let host = args.addr;
    let connection = if args.close { "close" } else { "keep-alive" };
    if get {
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        let escaped = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
        format!("GET {}/{escaped} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n", args.path).into_bytes()
    } else {
        let mut r = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            args.path,
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }
}

/// One connection's loop: (latencies in µs, errors).
fn run(addr: SocketAddr, requests: &[Vec<u8>], worker: usize, deadline: Instant) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0u64;
    let mut conn: Option<BufReader<TcpStream>> = None;
    // Bounded twice: by the deadline and by a request count no run reaches.
    for i in worker..worker + 10_000_000 {
        if Instant::now() >= deadline {
            break;
        }
        let request = &requests[i % requests.len()];
        let started = Instant::now();
        let reader = match conn.take() {
            Some(c) => c,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    BufReader::new(s)
                }
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match exchange(reader, request) {
            Ok((reader, keep)) => {
                latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if keep {
                    conn = Some(reader);
                }
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

/// Sends one request and reads one response; says whether the connection stays open.
fn exchange(mut reader: BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(BufReader<TcpStream>, bool)> {
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.contains(" 200 ") {
        return Err(std::io::Error::other(format!("status line {line:?}")));
    }
    let mut keep = line.starts_with("HTTP/1.1");
    let mut length: Option<usize> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(std::io::Error::other("connection closed in headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        } else if lower.starts_with("connection:") {
            keep = lower.contains("keep-alive");
        }
    }
    match length {
        Some(n) => {
            let mut body = vec![0u8; n];
            reader.read_exact(&mut body)?;
        }
        None => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            keep = false;
        }
    }
    Ok((reader, keep))
}
