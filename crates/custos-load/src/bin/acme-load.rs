//! `acme-load`: complete ACME orders per second, for scripts/bench-acme.
//!
//! Each of N accounts (one thread, one keep-alive TLS connection) loops
//! newOrder → http-01 (answered by this tool's own listener on a loopback
//! port the CA is configured to dial) → finalize → certificate download,
//! for a fixed time, and the tool reports completed orders per second and
//! latency percentiles as one JSON line. The same client drives custos and
//! Pebble. With `--ari`, each account first holds a certificate and then
//! polls renewalInfo at the Retry-After the CA asks for, renewing when the
//! window is in the past: the tool reports how long until every account
//! holds a replacement, counted from when `--ari-start-file` appears.
//! Loopback only; every loop is bounded in time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use serde_json::{Value, json};

/// ACME order load.
#[derive(Debug, Parser)]
struct Args {
    /// The directory URL (https://127.0.0.1:PORT/...).
    #[arg(long)]
    directory: String,
    /// PEM root the CA's TLS listener chains to.
    #[arg(long)]
    tls_ca: PathBuf,
    /// Accounts (threads).
    #[arg(long, default_value_t = 16)]
    accounts: usize,
    /// How long to run, seconds (at most 120).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Where the http-01 listener binds (the CA dials it).
    #[arg(long)]
    http01: SocketAddr,
    /// The names are `wN-M.{domain}`.
    #[arg(long, default_value = "acme.example")]
    domain: String,
    /// A JSON lines file of EAB keys (`{"kid", "hmac_key"}`), one per account.
    #[arg(long)]
    eab: Option<PathBuf>,
    /// ARI mode: hold a certificate, then poll renewalInfo and renew when told to.
    #[arg(long)]
    ari: bool,
    /// ARI mode: the clock starts when this file appears (the bench writes it right before `incident execute`).
    #[arg(long)]
    ari_start_file: Option<PathBuf>,
    /// ARI mode: write each account's first certificate serial here (hex, one per line), then start polling.
    #[arg(long)]
    ari_serials: Option<PathBuf>,
}

fn fail(msg: &str) -> ! {
    eprintln!("acme-load: {msg}");
    std::process::exit(2)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An HTTP/1.1 answer.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One keep-alive TLS connection to the CA.
struct Http {
    addr: SocketAddr,
    host: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Option<BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>,
}

impl Http {
    fn connect(&mut self) -> std::io::Result<()> {
        let s = TcpStream::connect(self.addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).map_err(std::io::Error::other)?;
        self.conn = Some(BufReader::new(rustls::StreamOwned::new(conn, s)));
        Ok(())
    }

    fn request(&mut self, method: &str, url: &str, body: Option<&[u8]>) -> std::io::Result<Answer> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.connect()?;
            }
            match self.try_request(method, url, body) {
                Ok(a) => return Ok(a),
                Err(e) if attempt == 0 => {
                    self.conn = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("unreachable"))
    }

    fn try_request(&mut self, method: &str, url: &str, body: Option<&[u8]>) -> std::io::Result<Answer> {
        let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
        let conn = self.conn.as_mut().ok_or_else(|| std::io::Error::other("not connected"))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(b) = body {
            head.push_str(&format!("Content-Type: application/jose+json\r\nContent-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let w = conn.get_mut();
        w.write_all(head.as_bytes())?;
        if let Some(b) = body {
            w.write_all(b)?;
        }
        w.flush()?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = HashMap::new();
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut body = Vec::new();
        if method != "HEAD" {
            if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
                body.resize(n, 0);
                conn.read_exact(&mut body)?;
            } else if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                loop {
                    line.clear();
                    conn.read_line(&mut line)?;
                    let n = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
                    let mut chunk = vec![0; n + 2];
                    conn.read_exact(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            }
        }
        if headers.get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.conn = None;
        }
        Ok(Answer { status, headers, body })
    }
}

/// One ACME account.
struct Account {
    http: Http,
    key: EcdsaKeyPair,
    jwk: Value,
    thumbprint: String,
    kid: Option<String>,
    nonce: Option<String>,
    dir: Value,
}

impl Account {
    fn url(&self, name: &str) -> String {
        self.dir[name].as_str().unwrap_or_else(|| fail(&format!("directory has no {name}"))).to_string()
    }

    fn fresh_nonce(&mut self) -> std::io::Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let url = self.url("newNonce");
        let a = self.http.request("HEAD", &url, None)?;
        a.headers.get("replay-nonce").cloned().ok_or_else(|| std::io::Error::other("no nonce"))
    }

    /// POSTs a JWS (`payload` None: POST-as-GET), retrying once on badNonce.
    fn post(&mut self, url: &str, payload: Option<&Value>) -> std::io::Result<Answer> {
        for _ in 0..3 {
            let nonce = self.fresh_nonce()?;
            let mut header = json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(k) => header["kid"] = json!(k),
                None => header["jwk"] = self.jwk.clone(),
            }
            let protected = b64(header.to_string().as_bytes());
            let body = payload.map(|p| b64(p.to_string().as_bytes())).unwrap_or_default();
            let sig = self
                .key
                .sign(&SystemRandom::new(), format!("{protected}.{body}").as_bytes())
                .map_err(|_| std::io::Error::other("sign"))?;
            let jws = json!({"protected": protected, "payload": body, "signature": b64(sig.as_ref())}).to_string();
            let a = self.http.request("POST", url, Some(jws.as_bytes()))?;
            self.nonce = a.headers.get("replay-nonce").cloned();
            if a.status == 400 && a.json()["type"].as_str().is_some_and(|t| t.ends_with("badNonce")) {
                continue;
            }
            return Ok(a);
        }
        Err(std::io::Error::other("badNonce three times"))
    }

    fn register(&mut self, eab: Option<(String, String)>) -> std::io::Result<()> {
        let url = self.url("newAccount");
        let mut payload = json!({"termsOfServiceAgreed": true});
        if let Some((kid, key)) = eab {
            let protected = b64(json!({"alg": "HS256", "kid": kid, "url": url}).to_string().as_bytes());
            let body = b64(self.jwk.to_string().as_bytes());
            let key = URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')).map_err(std::io::Error::other)?;
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
                format!("{protected}.{body}").as_bytes(),
            );
            payload["externalAccountBinding"] =
                json!({"protected": protected, "payload": body, "signature": b64(tag.as_ref())});
        }
        let a = self.post(&url, Some(&payload))?;
        if a.status != 201 && a.status != 200 {
            return Err(std::io::Error::other(format!(
                "newAccount: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )));
        }
        self.kid = a.headers.get("location").cloned();
        Ok(())
    }

    /// One complete order for `name`; returns the certificate PEM.
    fn order(&mut self, name: &str, served: &Served, replaces: Option<&str>) -> std::io::Result<String> {
        let err = |what: &str, a: &Answer| {
            std::io::Error::other(format!("{what}: {} {}", a.status, String::from_utf8_lossy(&a.body)))
        };
        let mut payload = json!({"identifiers": [{"type": "dns", "value": name}]});
        if let Some(r) = replaces {
            payload["replaces"] = json!(r);
        }
        let url = self.url("newOrder");
        let a = self.post(&url, Some(&payload))?;
        if a.status != 201 {
            return Err(err("newOrder", &a));
        }
        let order_url = a.headers.get("location").cloned().ok_or_else(|| std::io::Error::other("no order location"))?;
        let order = a.json();
        let authz_url = order["authorizations"][0].as_str().unwrap_or_default().to_string();
        let finalize_url = order["finalize"].as_str().unwrap_or_default().to_string();
        let a = self.post(&authz_url, None)?;
        let authz = a.json();
        let chall = authz["challenges"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "http-01"))
            .cloned()
            .ok_or_else(|| err("no http-01", &a))?;
        let token = chall["token"].as_str().unwrap_or_default().to_string();
        served
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .insert(token.clone(), format!("{token}.{}", self.thumbprint));
        let a = self.post(chall["url"].as_str().unwrap_or_default(), Some(&json!({})))?;
        if a.status != 200 {
            return Err(err("challenge", &a));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.post(&authz_url, None)?;
            match a.json()["status"].as_str() {
                Some("valid") => break,
                Some("pending") if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => return Err(err("authorization", &a)),
            }
        }
        served.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.remove(&token);
        let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(std::io::Error::other)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(std::io::Error::other)?;
        let a = self.post(&finalize_url, Some(&json!({"csr": b64(csr.der())})))?;
        if a.status != 200 {
            return Err(err("finalize", &a));
        }
        let mut order = a.json();
        while order["status"] != "valid" {
            if Instant::now() > deadline || order["status"] == "invalid" {
                return Err(std::io::Error::other(format!("order: {order}")));
            }
            std::thread::sleep(Duration::from_millis(10));
            order = self.post(&order_url, None)?.json();
        }
        let cert_url = order["certificate"].as_str().unwrap_or_default().to_string();
        let a = self.post(&cert_url, None)?;
        if a.status != 200 {
            return Err(err("certificate", &a));
        }
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }
}

/// Key authorizations the http-01 listener answers with, by token.
#[derive(Default)]
struct Served(Mutex<HashMap<String, String>>);

fn serve_http01(listener: TcpListener, served: Arc<Served>) {
    for stream in listener.incoming().flatten() {
        let served = served.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => return,
            });
            let mut stream = stream;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let token = path.strip_prefix("/.well-known/acme-challenge/").unwrap_or("");
                let answer = served.0.lock().ok().and_then(|m| m.get(token).cloned());
                let response = match answer {
                    Some(a) => {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{a}", a.len())
                    }
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                };
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

fn new_account(args: &Args, tls: &Arc<rustls::ClientConfig>, dir: &Value) -> Account {
    let rest = args.directory.strip_prefix("https://").unwrap_or_else(|| fail("--directory must be https://"));
    let host = rest.split('/').next().unwrap_or_default().to_string();
    let addr: SocketAddr = host.parse().unwrap_or_else(|_| fail("--directory must name an IP:port"));
    if !addr.ip().is_loopback() {
        fail("acme-load only talks to loopback addresses");
    }
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap_or_else(|_| fail("key"));
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap_or_else(|_| fail("key"));
    let p = key.public_key().as_ref().to_vec();
    let (x, y) = (b64(&p[1..33]), b64(&p[33..]));
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let thumbprint = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref());
    Account {
        http: Http { addr, host, tls: tls.clone(), conn: None },
        key,
        jwk: serde_json::from_str(&canonical).unwrap_or(Value::Null),
        thumbprint,
        kid: None,
        nonce: None,
        dir: dir.clone(),
    }
}

fn tls_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(&format!("{}: {e}", ca.display()))) {
        roots.add(c.unwrap_or_else(|e| fail(&e.to_string()))).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| fail(&e.to_string()))
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The ARI certificate id of a PEM certificate's leaf: AKI and serial.
fn cert_id(pem: &str) -> Option<(String, String)> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    use rustls_pki_types::pem::PemObject;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
            a.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    })?;
    let serial = cert.raw_serial().to_vec();
    Some((format!("{}.{}", b64(&aki), b64(&serial)), serial.iter().map(|b| format!("{b:02x}")).collect()))
}

fn main() {
    let args = Args::parse();
    if !args.http01.ip().is_loopback() {
        fail("--http01 must be a loopback address");
    }
    let tls = tls_config(&args.tls_ca);
    let served = Arc::new(Served::default());
    let listener = TcpListener::bind(args.http01).unwrap_or_else(|e| fail(&format!("http-01 listener: {e}")));
    {
        let served = served.clone();
        std::thread::spawn(move || serve_http01(listener, served));
    }
    let mut probe = new_account(&args, &tls, &Value::Null);
    let dir =
        probe.http.request("GET", &args.directory, None).unwrap_or_else(|e| fail(&format!("directory: {e}"))).json();
    let eabs: Vec<(String, String)> = match &args.eab {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())))
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["kid"].as_str().unwrap_or_default().to_string(),
                    v["hmac_key"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    };
    let n = args.accounts.clamp(1, 2000);
    if !eabs.is_empty() && eabs.len() < n {
        fail(&format!("{} EAB keys for {n} accounts", eabs.len()));
    }
    let seconds = args.seconds.clamp(0.5, 120.0);
    if args.ari {
        return ari(&args, &tls, &dir, &served, eabs, n, seconds);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let results: Vec<(Vec<u32>, u64, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|w| {
                let (tls, dir, served, eab) = (&tls, &dir, &served, eabs.get(w).cloned());
                let args = &args;
                s.spawn(move || {
                    let mut account = new_account(args, tls, dir);
                    if let Err(e) = account.register(eab) {
                        return (Vec::new(), 1, Some(e.to_string()));
                    }
                    let (mut latencies, mut errors, mut last) = (Vec::new(), 0u64, None);
                    let mut i = 0;
                    while Instant::now() < deadline && errors < 20 {
                        let t = Instant::now();
                        match account.order(&format!("w{w}-{i}.{}", args.domain), served, None) {
                            Ok(_) => latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                            Err(e) => {
                                errors += 1;
                                last = Some(e.to_string());
                            }
                        }
                        i += 1;
                    }
                    (latencies, errors, last)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u32> = results.iter().flat_map(|(l, _, _)| l.iter().copied()).collect();
    let errors: u64 = results.iter().map(|(_, e, _)| e).sum();
    if let Some(e) = results.iter().find_map(|(_, _, e)| e.clone()) {
        eprintln!("acme-load: last error: {e}");
    }
    latencies.sort_unstable();
    let pct = |p: f64| match latencies.is_empty() {
        true => 0.0,
        false => f64::from(latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]) / 1000.0,
    };
    println!(
        "{{\"orders\": {}, \"errors\": {}, \"seconds\": {:.2}, \"orders_per_s\": {:.1}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}}}",
        latencies.len(),
        errors,
        elapsed,
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// ARI mode: every account holds a certificate, then polls renewalInfo at
/// the CA's Retry-After and renews when the window has begun.
fn ari(
    args: &Args,
    tls: &Arc<rustls::ClientConfig>,
    dir: &Value,
    served: &Arc<Served>,
    eabs: Vec<(String, String)>,
    n: usize,
    seconds: f64,
) {
    let start_file = args.ari_start_file.clone().unwrap_or_else(|| fail("--ari needs --ari-start-file"));
    let serials_file = args.ari_serials.clone().unwrap_or_else(|| fail("--ari needs --ari-serials"));
    let mut accounts = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    // Issue the first certificates with 16 threads; each account then lets its connection go.
    let made: Vec<(Account, String)> = std::thread::scope(|s| {
        let chunks: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(n.div_ceil(16)).map(|c| c.to_vec()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|ids| {
                let eabs = &eabs;
                s.spawn(move || {
                    ids.into_iter()
                        .map(|w| {
                            let mut a = new_account(args, tls, dir);
                            a.register(eabs.get(w).cloned()).unwrap_or_else(|e| fail(&e.to_string()));
                            let pem = a
                                .order(&format!("ari{w}.{}", args.domain), served, None)
                                .unwrap_or_else(|e| fail(&e.to_string()));
                            a.http.conn = None;
                            (a, pem)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut serials = String::new();
    for (a, pem) in made {
        let (id, serial) = cert_id(&pem).unwrap_or_else(|| fail("no certificate id"));
        serials.push_str(&serial);
        serials.push('\n');
        accounts.push(a);
        held.push(id);
    }
    std::fs::write(&serials_file, serials).unwrap_or_else(|e| fail(&e.to_string()));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while !start_file.exists() {
        if Instant::now() > deadline {
            fail("the start file never appeared");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let renewal_info = dir["renewalInfo"].as_str().unwrap_or_else(|| fail("no renewalInfo")).to_string();
    // 16 pollers share the accounts; each polls its accounts at the Retry-After.
    let done: Vec<(usize, f64, u64)> = std::thread::scope(|s| {
        let per = accounts.len().div_ceil(16);
        let mut rest: Vec<(Account, String, usize)> =
            accounts.into_iter().zip(held).enumerate().map(|(w, (a, id))| (a, id, w)).collect();
        let mut handles = Vec::new();
        while !rest.is_empty() {
            let mine: Vec<(Account, String, usize)> = rest.drain(..per.min(rest.len())).collect();
            let (served, renewal_info) = (served.clone(), renewal_info.clone());
            let domain = args.domain.clone();
            handles.push(s.spawn(move || {
                // One connection per poller thread; an account connects only to renew.
                let mut poller = None;
                let mut pending: Vec<(Account, String, usize, Instant)> = mine
                    .into_iter()
                    .map(|(mut a, id, w)| {
                        a.http.conn = None;
                        if poller.is_none() {
                            poller = Some(Http {
                                addr: a.http.addr,
                                host: a.http.host.clone(),
                                tls: a.http.tls.clone(),
                                conn: None,
                            });
                        }
                        (a, id, w, Instant::now())
                    })
                    .collect();
                let Some(mut poller) = poller else { return (0, 0.0, 0) };
                let (mut renewed, mut last, mut polls) = (0usize, 0.0f64, 0u64);
                while !pending.is_empty() && Instant::now() < deadline {
                    let now = Instant::now();
                    let mut i = 0;
                    while i < pending.len() {
                        if pending[i].3 > now {
                            i += 1;
                            continue;
                        }
                        let (a, id, w, _) = &mut pending[i];
                        polls += 1;
                        let answer = poller.request("GET", &format!("{renewal_info}/{id}"), None);
                        let Ok(answer) = answer else {
                            pending[i].3 = now + Duration::from_millis(200);
                            i += 1;
                            continue;
                        };
                        let retry = answer.headers.get("retry-after").and_then(|v| v.parse::<u64>().ok()).unwrap_or(60);
                        let end = answer.json()["suggestedWindow"]["end"].as_str().map(str::to_string);
                        let due = end.as_deref().and_then(time_of).is_some_and(|e| e <= unix_now());
                        if due {
                            let name = format!("ari{w}.{domain}");
                            let replaces = id.clone();
                            match a.order(&name, &served, Some(&replaces)) {
                                Ok(_) => {
                                    a.http.conn = None;
                                    renewed += 1;
                                    last = started.elapsed().as_secs_f64();
                                    pending.swap_remove(i);
                                    continue;
                                }
                                Err(e) => eprintln!("acme-load: renewal of {name} failed: {e}"),
                            }
                        }
                        pending[i].3 = now + Duration::from_secs(retry);
                        i += 1;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (renewed, last, polls)
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let renewed: usize = done.iter().map(|d| d.0).sum();
    let polls: u64 = done.iter().map(|d| d.2).sum();
    let last = done.iter().map(|d| d.1).fold(0.0, f64::max);
    println!(
        "{{\"clients\": {n}, \"renewed\": {renewed}, \"seconds_until_all_renewed\": {last:.2}, \"renewal_info_polls\": {polls}}}"
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SSZ`.
fn time_of(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}
