//! `custos-load`: a closed-loop HTTP(S) load generator for OCSP and API benchmarks.
//!
//! N connections (one thread each) send requests from a directory, round
//! robin, by POST or RFC 5019 GET (or GET one path), over plain HTTP or TLS
//! (rustls, optionally with a client certificate), with extra headers, for a
//! fixed time, and report throughput and
//! latency percentiles as one JSON line. Loopback only, bounded in time and in
//! count, so it stops by itself. It keeps connections alive when the server
//! allows and reconnects when the server closes (openssl's responder closes
//! after every response), and it never opens a connection without sending a
//! request (which sends openssl's responder into a busy loop, openssl #31129).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::ClientConfig;

/// Closed-loop load generator.
#[derive(Debug, Parser)]
struct Args {
    /// Server address; must be a loopback address.
    #[arg(long)]
    addr: SocketAddr,
    /// Directory of request bodies (*.EXT); with `--method fetch`, not read.
    #[arg(long)]
    requests: Option<PathBuf>,
    /// The request files' extension.
    #[arg(long, default_value = "der")]
    ext: String,
    /// The request bodies' media type.
    #[arg(long, default_value = "application/ocsp-request")]
    content_type: String,
    /// post (a body), get (OCSP: the base64 body appended to the path) or fetch (GET the path as it is).
    #[arg(long, default_value = "post")]
    method: String,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Speak TLS, trusting this PEM root.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// A client certificate chain (PEM) for TLS, with --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
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
    let method = args.method.as_str();
    let mut bodies = Vec::new();
    if method == "fetch" {
        bodies.push(Vec::new());
    } else {
        let dir = args.requests.as_ref().unwrap_or_else(|| fail("--requests DIR is needed to post or get"));
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == args.ext.as_str()) {
                bodies.push(std::fs::read(entry.path()).unwrap_or_else(|e| fail(&e.to_string())));
            }
        }
    }
    if bodies.is_empty() {
        fail(&format!("no *.{} requests found", args.ext));
    }
    if !matches!(method, "post" | "get" | "fetch") {
        fail(&format!("--method {method}: expected post, get or fetch"));
    }
    let requests: Vec<Vec<u8>> = bodies.iter().map(|b| http_request(&args, b)).collect();
    let tls = args.tls_ca.as_ref().map(|ca| tls_config(ca, args.tls_cert.as_deref(), args.tls_key.as_deref()));
    let seconds = args.seconds.clamp(0.1, 60.0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.conns.clamp(1, 1024))
            .map(|worker| {
                let requests = &requests;
                let tls = tls.clone();
                s.spawn(move || run(args.addr, tls, requests, worker, deadline))
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

fn http_request(args: &Args, body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let host = args.addr;
    let connection = if args.close { "close" } else { "keep-alive" };
    let extra: String = args.header.iter().map(|h| format!("{h}\r\n")).collect();
    match args.method.as_str() {
        "get" => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(body);
            let escaped = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
            format!("GET {}/{escaped} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: {connection}\r\n\r\n", args.path)
                .into_bytes()
        }
        "fetch" => format!("GET {} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: {connection}\r\n\r\n", args.path)
            .into_bytes(),
        _ => {
            let mut r = format!(
                "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: {connection}\r\n\r\n",
                args.path,
                args.content_type,
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        }
    }
}

/// A client configuration trusting `ca`, with a client certificate if given.
fn tls_config(
    ca: &std::path::Path,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Arc<ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(&format!("{}: {e}", ca.display()))) {
        roots.add(c.unwrap_or_else(|e| fail(&e.to_string()))).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail(&e.to_string()))
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", cert.display())))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| fail(&e.to_string()));
            let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(&format!("{}: {e}", key.display())));
            builder.with_client_auth_cert(chain, key).unwrap_or_else(|e| fail(&e.to_string()))
        }
        _ => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A connection, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> std::io::Result<BufReader<Box<dyn Stream>>> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(s),
        Some(config) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, s))
        }
    };
    Ok(BufReader::new(stream))
}

/// One connection's loop: (latencies in µs, errors).
fn run(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    requests: &[Vec<u8>],
    worker: usize,
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0u64;
    let mut conn: Option<BufReader<Box<dyn Stream>>> = None;
    // Bounded twice: by the deadline and by a request count no run reaches.
    for i in worker..worker + 10_000_000 {
        if Instant::now() >= deadline {
            break;
        }
        let request = &requests[i % requests.len()];
        let started = Instant::now();
        let reader = match conn.take() {
            Some(c) => c,
            None => match connect(addr, tls.as_ref()) {
                Ok(c) => c,
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
fn exchange(
    mut reader: BufReader<Box<dyn Stream>>,
    request: &[u8],
) -> std::io::Result<(BufReader<Box<dyn Stream>>, bool)> {
    reader.get_mut().write_all(request)?;
    reader.get_mut().flush()?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Any 2xx: 200 for OCSP and reads, 201 for issuance.
    if !line.split(' ').nth(1).is_some_and(|code| code.starts_with('2')) {
        return Err(std::io::Error::other(format!("status line {line:?}")));
    }
    let mut keep = line.starts_with("HTTP/1.1");
    let mut length: Option<usize> = None;
    let mut chunked = false;
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
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        // Go's servers (OpenBao) answer JSON chunked.
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("chunk size {size:?}")))?;
            if n == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                return Ok((reader, keep));
            }
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
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
