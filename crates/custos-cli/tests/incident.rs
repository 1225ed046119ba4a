//! The incident workflow end to end against real parts: the `custos` binary,
//! a running server, openssl's OCSP client and verifier, a webhook receiver
//! on loopback that checks the HMAC itself, SIGKILL mid-execute, and the
//! database read back with Python's sqlite3.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, Server, http, ocsp, openssl_verify, pkilint, sh, wait_for_ocsp};

/// Each POST a receiver saw: its head and body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on loopback: records each POST (headers, body) and answers with `status`.
struct Receiver {
    url: String,
    seen: Seen,
    status: Arc<Mutex<u16>>,
}

/// A test CA and a server certificate for 127.0.0.1 under it, made with openssl.
struct TestPki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl TestPki {
    fn new(dir: &std::path::Path, name: &str) -> TestPki {
        let p = |f: &str| dir.join(format!("{name}-{f}"));
        let s = |path: std::path::PathBuf| path.to_str().expect("path").to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        sh(
            "openssl",
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", &s(p("ca.key")), "-out", &s(p("ca.pem"))],
                &["-subj", &format!("/CN={name} hooks CA"), "-days", "2"],
            ]
            .concat(),
        );
        sh(
            "openssl",
            &[
                &["req", "-new"][..],
                &ec,
                &["-keyout", &s(p("leaf.key")), "-out", &s(p("leaf.csr"))],
                &["-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        );
        std::fs::write(
            p("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        sh(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &s(p("leaf.csr")),
                "-CA",
                &s(p("ca.pem")),
                "-CAkey",
                &s(p("ca.key")),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &s(p("ext")),
                "-out",
                &s(p("leaf.pem")),
            ],
        );
        TestPki { ca: p("ca.pem"), cert: p("leaf.pem"), key: p("leaf.key") }
    }
}

/// Reads one request from `stream`, records it, answers `code` (with a
/// Location header: custos must not follow it) and a body custos must not keep.
fn answer<S: Read + Write>(mut stream: S, seen: &Seen, status: &Arc<Mutex<u16>>) {
    let mut head = String::new();
    let mut body;
    {
        let mut reader = BufReader::new(&mut stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
    }
    seen.lock().expect("lock").push((head, body));
    let code = *status.lock().expect("lock");
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{RECEIVER_BODY}",
        RECEIVER_BODY.len()
    );
    let _ = stream.flush();
}

impl Receiver {
    /// A plain http:// receiver (custos needs --danger-allow-http for it).
    fn start(status: u16) -> Receiver {
        Receiver::spawn(status, None)
    }

    /// An https:// receiver serving `pki`'s certificate with rustls.
    fn start_tls(status: u16, pki: &TestPki) -> Receiver {
        use rustls_pki_types::pem::PemObject;
        use tokio_rustls::rustls;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&pki.cert)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&pki.key).expect("key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        Receiver::spawn(status, Some(Arc::new(config)))
    }

    fn spawn(status: u16, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hooks/custos", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(status));
        let (s, st) = (seen.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(stream) = stream else { continue };
                match &tls {
                    Some(config) => {
                        let Ok(conn) = tokio_rustls::rustls::ServerConnection::new(config.clone()) else { continue };
                        answer(tokio_rustls::rustls::StreamOwned::new(conn, stream), &s, &st);
                    }
                    None => answer(stream, &s, &st),
                }
            }
        });
        Receiver { url, seen, status }
    }
}

/// Adds lines to the data directory's custos.toml (init may have written it).
fn configure(env: &Env, lines: &str) {
    let path = env.data_dir().join("custos.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(lines);
    std::fs::write(&path, text).expect("config");
}

/// Lets `env` deliver to plain-http receivers on loopback (the lab setting).
fn lab_webhooks(env: &Env) {
    configure(env, "[webhooks]\nallow_private_targets = true\ndanger_allow_http = true\n");
}

/// HMAC-SHA256 as the receiver computes it, with aws-lc-rs directly.
/// What the test receiver answers with.
const RECEIVER_BODY: &str = "internal-admin-page secret=hunter2";

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(aws_lc_rs::hmac::sign(&key, message).as_ref())
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
        .unwrap_or("")
}

/// SQL answered by Python's sqlite3 on the data dir's database.
fn sql(env: &Env, query: &str) -> String {
    let db = env.data_dir().join("custos.db");
    sh(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=list(c.execute(sys.argv[2])); c.commit(); print('\\n'.join('|'.join(map(str,x)) for x in r))",
            db.to_str().expect("p"),
            query,
        ],
    )
    .trim()
    .to_string()
}

/// `tenants` tenants with `per` connections each, every connection with one certificate.
fn populated(tenants: usize, per: usize) -> Env {
    let env = Env::new();
    env.ok(&["init"]);
    let mut lines = String::new();
    for t in 0..tenants {
        let tenant = format!("t{t:04}");
        env.ok(&["tenant", "add", &tenant]);
        for c in 0..per {
            env.ok(&["connection", "add", &tenant, &format!("c{c}")]);
            lines += &format!("{{\"tenant\":\"{tenant}\",\"connection\":\"c{c}\"}}\n");
        }
    }
    std::fs::write(env.path("bulk.jsonl"), lines).expect("write");
    env.ok(&[
        "issue",
        "--from",
        env.path("bulk.jsonl").to_str().expect("p"),
        "--out",
        env.path("bulk.out").to_str().expect("p"),
    ]);
    env
}

#[test]
fn an_issuing_ca_compromise_from_declaration_to_close() {
    let env = populated(3, 2);
    let old_cert = env.path("old.pem");
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(env.path("bulk.out")).expect("out").lines().next().expect("line"))
            .expect("json");
    std::fs::write(&old_cert, first["certificate"].as_str().expect("pem")).expect("write");
    let (root_pem, old_issuing_pem) = (env.path("root.pem"), env.path("issuing-1.pem"));
    // The tenant's receiver speaks https with a certificate from its own CA,
    // which custos trusts through webhooks.ca_file (it is on loopback, so the
    // lab setting allows private targets; plain http stays refused).
    let pki = TestPki::new(&env.path("."), "tenant");
    configure(&env, &format!("[webhooks]\nca_file = {:?}\nallow_private_targets = true\n", pki.ca));
    let receiver = Receiver::start_tls(200, &pki);
    let hooked = env.json(&["tenant", "webhook", "t0000", &receiver.url]);
    let secret = hooked["secret"].as_str().expect("secret").to_string();
    // The secret is derived in the key store: neither the database nor its WAL holds it.
    for file in ["custos.db", "custos.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.data_dir().join(file)) {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{file} holds the webhook secret");
        }
    }
    let server = Server::start(&env);
    for (id, path) in [("root-1", &root_pem), ("issuing-1", &old_issuing_pem)] {
        let (status, _, pem) = http(&server.addr, "GET", &format!("/ca/{id}.pem"), None, b"");
        assert_eq!(status, 200);
        std::fs::write(path, pem).expect("write CA");
    }

    // Declare: the blast radius, grouped; nothing changes yet.
    let view = env.json(&[
        "incident",
        "declare",
        "--compromised",
        "issuer:issuing-1",
        "--since",
        "2026-11-01T00:00:00Z",
        "--note",
        "notice from the mail provider",
    ]);
    let id = view["id"].as_str().expect("id").to_string();
    assert_eq!(view["affected_certificates"], 6);
    assert_eq!(view["affected_connections"], 6);
    assert_eq!(view["tenants"].as_array().expect("tenants").len(), 3);
    assert_eq!(view["compromised_issuers"], serde_json::json!(["issuing-1"]));
    assert_eq!(
        env.json(&["list", "--status", "revoked"]).as_array().expect("list").len(),
        0,
        "declare changes nothing"
    );

    // Execute.
    let keys = env.path("replacements.jsonl");
    let done = env.json(&["incident", "execute", &id, "--yes", "--keys-out", keys.to_str().expect("p")]);
    assert_eq!(done["summary"]["revoked"], 6);
    assert_eq!(done["summary"]["replaced"], 6);
    assert_eq!(done["summary"]["new_issuers"], serde_json::json!(["issuing-2"]));

    // openssl: the old certificate is revoked (keyCompromise, with the invalidity date) by OCSP within a second.
    let url = server.url("/ocsp");
    wait_for_ocsp(&url, &old_issuing_pem, &old_cert, &root_pem, "revoked", Duration::from_secs(2));
    let said = ocsp(&url, &old_issuing_pem, &old_cert, &root_pem);
    assert!(said.contains("keyCompromise") && said.contains("Response verify OK"), "{said}");
    // The root revokes the compromised issuing CA: OCSP says so...
    wait_for_ocsp(&url, &root_pem, &old_issuing_pem, &root_pem, "revoked", Duration::from_secs(2));
    // ...and the root's CRL lists it within a second.
    let mut text = String::new();
    for _ in 0..20 {
        let (status, _, crl) = http(&server.addr, "GET", "/crl/root-1.crl", None, b"");
        assert_eq!(status, 200);
        std::fs::write(env.path("root.crl"), crl).expect("write");
        text = sh(
            "openssl",
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                env.path("root.crl").to_str().expect("p"),
                "-noout",
                "-text",
                "-CAfile",
                root_pem.to_str().expect("p"),
            ],
        );
        if text.contains("Key Compromise") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text.contains("Key Compromise") && text.contains("verify OK"), "{text}");

    // Each replacement: its key matches, it chains to the root through the new CA, and lints clean.
    let lines = std::fs::read_to_string(&keys).expect("keys file");
    assert_eq!(lines.lines().count(), 6);
    let line: serde_json::Value = serde_json::from_str(lines.lines().next().expect("line")).expect("json");
    std::fs::write(env.path("new.pem"), line["certificate"].as_str().expect("cert")).expect("write");
    std::fs::write(env.path("new.key"), line["private_key"].as_str().expect("key")).expect("write");
    std::fs::write(env.path("chain.pem"), line["chain"].as_str().expect("chain")).expect("write");
    let (_, new_issuing) = env.split_chain(&env.path("chain.pem"));
    openssl_verify(&root_pem, &new_issuing, &env.path("new.pem"));
    pkilint("lint_pkix_cert", &[new_issuing.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[root_pem.to_str().expect("p"), new_issuing.to_str().expect("p")]);
    pkilint(
        "lint_pkix_signer_signee_cert_chain",
        &[new_issuing.to_str().expect("p"), env.path("new.pem").to_str().expect("p")],
    );
    let a = sh("openssl", &["x509", "-in", env.path("new.pem").to_str().expect("p"), "-noout", "-pubkey"]);
    let b = sh("openssl", &["pkey", "-in", env.path("new.key").to_str().expect("p"), "-pubout"]);
    assert_eq!(a, b, "the private key belongs to the replacement");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&keys).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    // The webhook: one signed message for t0000's two connections.
    let seen = receiver.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one message per tenant and batch");
    let (head, body) = &seen[0];
    let sig = header(head, "x-custos-signature");
    let (t, v1) = sig.split_once(",v1=").expect("t=..,v1=..");
    let t = t.strip_prefix("t=").expect("t=");
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    assert_eq!(v1, hmac_hex(&secret, &signed), "HMAC over timestamp.body with the tenant's secret");
    let payload: serde_json::Value = serde_json::from_slice(body).expect("json body");
    assert_eq!(payload["tenant"], "t0000");
    assert_eq!(payload["connections"].as_array().expect("connections").len(), 2);

    let status = env.json(&["incident", "status", &id]);
    let count = |state: &str| {
        status["states"].as_array().expect("states").iter().find(|s| s["state"] == state).expect("state")["connections"]
            .as_u64()
            .expect("n")
    };
    assert_eq!((count("notified"), count("replacement-issued")), (2, 4));
    assert_eq!(status["notifications"]["tenants_without_webhook"].as_array().expect("list").len(), 2);

    // Close is refused until every connection has acknowledged.
    assert!(env.fails(&["incident", "close", &id]).contains("still depend on a compromised certificate"));
    // Ack over HTTP, signed with the tenant's secret over method, path, incident,
    // connection, time and body; a bad, old-format, overflowing or replayed signature is refused.
    let ack = br#"{"tenant":"t0000","connection":"c0"}"#;
    let path = format!("/incident/{id}/ack");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let v2 = |t: i64, incident: &str, connection: &str| {
        let mut message = format!("custos-ack-v2\nPOST\n{path}\n{incident}\nt0000/{connection}\n{t}\n").into_bytes();
        message.extend_from_slice(ack);
        format!("t={t},v2={}", hmac_hex(&secret, &message))
    };
    let mut v1_message = format!("{now}.").into_bytes();
    v1_message.extend_from_slice(ack);
    let v1 = format!("t={now},v1={}", hmac_hex(&secret, &v1_message));
    for bad in [
        "t=1,v1=00".to_string(),
        v1,                                        // the notification format: an ack for no incident in particular
        v2(now, "INC-9999", "c0"),                 // signed for another incident
        v2(now, &id, "c1"),                        // signed for another connection
        v2(now - 3_600, &id, "c0"),                // too old
        v2(now.wrapping_sub(i64::MIN), &id, "c0"), // t = now - 2^63: the difference overflowed and passed
    ] {
        let (code, _, answer) = http_with(&server.addr, &path, ack, &bad);
        assert_eq!(code, 401, "{bad}: {}", String::from_utf8_lossy(&answer));
    }
    let good = v2(now, &id, "c0");
    let (code, _, answer) = http_with(&server.addr, &path, ack, &good);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("old-certificate-retired"));
    let (code, _, _) = http_with(&server.addr, &path, ack, &good);
    assert_eq!(code, 401, "a signature is good once");
    for t in 0..3 {
        for c in 0..2 {
            env.ok(&["incident", "ack", &id, "--connection", &format!("t{t:04}/c{c}")]);
        }
    }
    env.ok(&["incident", "close", &id]);
    assert!(env.fails(&["incident", "execute", &id, "--yes"]).contains("is closed"), "a closed incident stays closed");
    let report = env.json(&["incident", "report", &id]);
    assert!(report["durations"]["execution_to_all_replaced"].as_i64().is_some(), "{report}");
    assert!(report["timeline"].as_array().expect("timeline").len() >= 6);
    let md = env.ok(&["incident", "report", &id, "--markdown"]);
    assert!(md.starts_with("# Incident") && md.contains("## Timeline") && md.contains("## Notifications"), "{md}");

    // The compromised key is destroyed, and everything is in a log that verifies.
    let keys_list = env.json(&["keys", "list"]);
    let old = keys_list.as_array().expect("keys").iter().find(|k| k["label"] == "issuing-1").expect("old key");
    assert_eq!(old["status"], "destroyed");
    let replacements = env
        .ok(&["audit", "tail", "-n", "1000", "--action", "certificate.issue", "--json"])
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["details"]["incident"] == id.as_str())
        .count();
    assert_eq!(replacements, 6, "each replacement's issuance entry names the incident");
    let actions = env.ok(&["audit", "tail", "-n", "1000"]);
    for a in [
        "incident.declare",
        "incident.execute",
        "issuer.compromise",
        "key.destroy",
        "notification.deliver",
        "incident.ack",
        "incident.close",
    ] {
        assert!(actions.contains(a), "{a} not logged");
    }
    env.ok(&["audit", "verify", "--state"]);
}

/// POST with a signature header.
fn http_with(addr: &str, path: &str, body: &[u8], signature: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nx-custos-signature: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).expect("status").parse().expect("code");
    (status, head, buf[split + 4..].to_vec())
}

#[test]
fn bad_declarations_are_refused_and_write_nothing() {
    let env = populated(1, 1);
    let entries = env.ok(&["audit", "tail", "-n", "100000"]).lines().count();
    for (scope, expected) in [
        ("issuer:issuing-9", "unknown issuer"),
        ("key:0123456789abcdef0123", "no CA key and no valid certificate"),
        ("key:zz", "no key"),
        ("cert:0a0b0c", "no certificate"),
        ("tenant:nobody", "unknown tenant"),
        ("nonsense", "expected issuer:ID"),
        ("planet:earth", "expected issuer:ID"),
    ] {
        let said = env.fails(&["incident", "declare", "--compromised", scope]);
        assert!(said.to_lowercase().contains(&expected.to_lowercase()), "{scope}: {said}");
    }
    let said = env.fails(&["incident", "declare", "--compromised", "tenant:t0000", "--since", "2999-01-01T00:00:00Z"]);
    assert!(said.contains("in the future"), "{said}");
    for (url, expected) in [
        ("http://hooks.example/x", "plain http:// is refused"),
        ("https://127.0.0.1:9/x", "loopback, link-local or private"),
        ("https://localhost/x", "loopback, link-local or private"),
        ("https://169.254.169.254/latest/meta-data", "loopback, link-local or private"),
        ("https://[fd00::1]/x", "loopback, link-local or private"),
        ("https://user:pw@hooks.example/x", "user name or password"),
        ("ftp://x", "must be an https"),
        ("https://", "names no host"),
    ] {
        let said = env.fails(&["tenant", "webhook", "t0000", url]);
        assert!(said.contains(expected), "{url}: {said}");
    }
    assert!(
        env.fails(&["tenant", "webhook", "nobody", "https://hooks.example/x"])
            .to_lowercase()
            .contains("unknown tenant")
    );
    let said = env.fails(&["incident", "declare", "--compromised", "tenant:t0000", "--reason", "stolen"]);
    assert!(said.contains("stolen"), "{said}");
    assert!(env.fails(&["incident", "execute", "INC-0042", "--yes"]).contains("no incident"));
    assert_eq!(env.json(&["incident", "list"]).as_array().expect("list").len(), 0);
    assert_eq!(env.ok(&["audit", "tail", "-n", "100000"]).lines().count(), entries, "nothing was logged");
}

#[test]
fn execute_killed_at_random_points_resumes_and_does_everything_exactly_once() {
    let env = populated(80, 3);
    let view = env.json(&["incident", "declare", "--compromised", "issuer:issuing-1"]);
    let id = view["id"].as_str().expect("id").to_string();
    assert_eq!(view["affected_certificates"], 240);
    let keys = env.path("keys.jsonl");
    // Kill it at several points; each run picks up where the last stopped.
    for delay_ms in [40u64, 120, 250, 400, 700] {
        let mut child = env
            .command()
            .args(["incident", "execute", &id, "--yes", "--keys-out", keys.to_str().expect("p")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", keys.to_str().expect("p")]);

    // Every affected certificate revoked exactly once.
    assert_eq!(sql(&env, "SELECT count(*) FROM certificates WHERE issuer = 'issuing-1' AND status = 'revoked'"), "240");
    assert_eq!(
        sql(&env, "SELECT count(*) FROM (SELECT serial FROM revocations GROUP BY serial HAVING count(*) > 1)"),
        "0"
    );
    // Every connection exactly one replacement, under the new CA, and none skipped.
    assert_eq!(
        sql(
            &env,
            "SELECT count(*) FROM (SELECT tenant, connection FROM certificates WHERE issuer = 'issuing-2' GROUP BY tenant, connection HAVING count(*) = 1)"
        ),
        "240"
    );
    assert_eq!(sql(&env, "SELECT count(*) FROM certificates WHERE issuer = 'issuing-2'"), "240");
    assert_eq!(sql(&env, "SELECT count(*) FROM incident_connections WHERE state = 'replacement-issued'"), "240");
    assert_eq!(sql(&env, "SELECT count(*) FROM issuers"), "3", "one new CA however many runs");
    // Every committed replacement has its key in the file.
    let in_db: std::collections::HashSet<String> =
        sql(&env, "SELECT replacement FROM incident_connections").lines().map(str::to_string).collect();
    let in_file: std::collections::HashSet<String> = std::fs::read_to_string(&keys)
        .expect("keys")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["serial"].as_str().expect("serial").to_string()
        })
        .collect();
    assert!(in_db.is_subset(&in_file), "a replacement without its key");
    env.ok(&["audit", "verify", "--state"]);
}

/// A planned rotation (old certificates revoked only when each connection
/// acknowledges): a crash between the ack and the revocation, or between the
/// revocation and the retirement, is finished by acknowledging again or by
/// closing, and the old certificates end revoked either way.
#[test]
fn an_ack_killed_between_its_steps_is_finished_by_the_next_ack_or_by_close() {
    let env = populated(1, 2);
    let id = env.json(&["incident", "declare", "--compromised", "tenant:t0000", "--reason", "superseded"])["id"]
        .as_str()
        .expect("id")
        .to_string();
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    let valid = |connection: &str| {
        env.json(&["list", "--tenant", "t0000", "--connection", connection, "--status", "valid"])
            .as_array()
            .expect("list")
            .len()
    };
    assert_eq!((valid("c0"), valid("c1")), (2, 2), "old and new both valid until the ack");
    let state = |connection: &str| {
        sql(&env, &format!("SELECT state FROM incident_connections WHERE connection = '{connection}'"))
    };
    for (connection, point) in [("c0", "incident.ack:acknowledged"), ("c1", "incident.ack:revoked")] {
        let killed = env
            .command()
            .env("CUSTOS_CRASHPOINT", point)
            .args(["incident", "ack", &id, "--connection", &format!("t0000/{connection}")])
            .output()
            .expect("run");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(killed.status.signal(), Some(6), "{point}: aborted there: {killed:?}");
        assert!(state(connection).starts_with("acknowledged"), "{point}: {}", state(connection));
    }
    assert_eq!(valid("c0"), 2, "killed before the revocation");
    assert_eq!(valid("c1"), 1, "killed after the revocation");
    // The next ack finishes c0.
    env.ok(&["incident", "ack", &id, "--connection", "t0000/c0"]);
    assert!(state("c0").starts_with("old-certificate-retired"), "{}", state("c0"));
    assert_eq!(valid("c0"), 1, "the old certificate is revoked");
    // Close finishes c1 and closes.
    env.ok(&["incident", "close", &id]);
    assert!(state("c1").starts_with("old-certificate-retired"), "{}", state("c1"));
    assert_eq!(valid("c1"), 1);
    assert_eq!(env.json(&["incident", "status", &id])["incident"]["state"], "closed");
    env.ok(&["audit", "verify", "--state"]);
}

#[test]
fn a_second_execute_is_refused_while_one_holds_the_lock() {
    let env = populated(2, 1);
    let id =
        env.json(&["incident", "declare", "--compromised", "tenant:t0000"])["id"].as_str().expect("id").to_string();
    // Another host is executing it (lock held, fresh).
    let far = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    sql(&env, &format!("UPDATE incidents SET lock_owner = 'other-host:4242', lock_until = {far} WHERE id = '{id}'"));
    let said =
        env.fails(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    assert!(said.contains("being executed by other-host:4242"), "{said}");
    assert_eq!(
        sql(&env, "SELECT count(*) FROM certificates WHERE status = 'revoked'"),
        "0",
        "the refused run changed nothing"
    );
    // Its lock lapses: the next run proceeds.
    sql(&env, &format!("UPDATE incidents SET lock_until = 0 WHERE id = '{id}'"));
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    // Running it again after it finished changes nothing: the tenant scope,
    // evaluated again, does not take the replacements it issued.
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    assert_eq!(sql(&env, "SELECT count(*) FROM certificates WHERE tenant = 't0000' AND status = 'valid'"), "1");
    // Two at once: whatever the interleaving, each connection gets exactly one replacement.
    let id2 =
        env.json(&["incident", "declare", "--compromised", "tenant:t0001"])["id"].as_str().expect("id").to_string();
    let spawn = || {
        env.command()
            .args(["incident", "execute", &id2, "--yes", "--keys-out", env.path("k2.jsonl").to_str().expect("p")])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().expect("a").expect("run a"), b.join().expect("b").expect("run b"))
    });
    assert!(a.status.success() || b.status.success(), "one of them proceeds");
    for out in [&a, &b] {
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(said.contains("being executed by"), "{said}");
        }
    }
    assert_eq!(
        sql(&env, "SELECT count(*) FROM certificates WHERE tenant = 't0001' AND status = 'valid'"),
        "1",
        "a: {}\nb: {}\nconnections: {}\ncertificates: {}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr),
        sql(&env, "SELECT incident, tenant, connection, state, replacement FROM incident_connections"),
        sql(
            &env,
            "SELECT serial, issuer, status, revocation_reason, created_at FROM certificates WHERE tenant = 't0001'"
        )
    );
}

#[test]
fn a_failing_webhook_is_retried_and_never_blocks_revocation() {
    let env = populated(1, 2);
    lab_webhooks(&env);
    let receiver = Receiver::start(500);
    env.ok(&["tenant", "webhook", "t0000", &receiver.url]);
    let id =
        env.json(&["incident", "declare", "--compromised", "tenant:t0000"])["id"].as_str().expect("id").to_string();
    let done = env.json(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    assert_eq!((done["summary"]["revoked"].as_u64(), done["summary"]["replaced"].as_u64()), (Some(2), Some(2)));
    let status = env.json(&["incident", "status", &id]);
    let message = &status["notifications"]["messages"][0];
    assert_eq!(message["state"], "pending");
    assert!(message["attempts"].as_i64().expect("attempts") >= 1);
    assert!(message["last_error"].as_str().expect("error").contains("500"), "{message}");
    // The receiver recovers; the retry (after its backoff) delivers.
    *receiver.status.lock().expect("lock") = 200;
    let mut delivered = false;
    for _ in 0..40 {
        env.ok(&["incident", "notify", &id]);
        if env.json(&["incident", "status", &id])["notifications"]["delivered"] == 1 {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(delivered, "retried delivery succeeded");
    // A receiver that is down altogether: still nothing blocks.
    let env2 = populated(1, 1);
    lab_webhooks(&env2);
    env2.ok(&["tenant", "webhook", "t0000", "http://127.0.0.1:9/nothing-listens"]);
    let id =
        env2.json(&["incident", "declare", "--compromised", "tenant:t0000"])["id"].as_str().expect("id").to_string();
    let done =
        env2.json(&["incident", "execute", &id, "--yes", "--keys-out", env2.path("k.jsonl").to_str().expect("p")]);
    assert_eq!(done["summary"]["revoked"], 1);
    let pending = &env2.json(&["incident", "status", &id])["notifications"]["messages"][0];
    assert!(pending["last_error"].as_str().expect("error").contains("connect"), "{pending}");
}

#[test]
fn failing_deliveries_are_given_up_and_record_no_response_body() {
    let env = populated(1, 1);
    // Give up after one second (the default is a day).
    configure(&env, "[webhooks]\ngive_up_after_s = 1\nallow_private_targets = true\ndanger_allow_http = true\n");
    let receiver = Receiver::start(500);
    env.ok(&["tenant", "webhook", "t0000", &receiver.url]);
    let id =
        env.json(&["incident", "declare", "--compromised", "tenant:t0000"])["id"].as_str().expect("id").to_string();
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    let mut status = serde_json::Value::Null;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        env.ok(&["incident", "notify", &id]);
        status = env.json(&["incident", "status", &id]);
        if status["notifications"]["failed"] == 1 {
            break;
        }
    }
    assert_eq!(status["notifications"]["failed"], 1, "given up: {status}");
    let message = &status["notifications"]["messages"][0];
    assert_eq!(message["state"], "failed");
    assert_eq!(message["last_error"], "HTTP 500", "the status, not what the receiver said");
    // Nothing the receiver answered is in the log, and the give-up is.
    let log = env.ok(&["audit", "tail", "-n", "50", "--action", "notification", "--json"]);
    assert!(log.contains("notification.give-up"), "{log}");
    assert!(!log.contains(RECEIVER_BODY), "the receiver's answer leaked into the log: {log}");
    let attempts = message["attempts"].as_i64().expect("attempts");
    env.ok(&["incident", "notify", &id]);
    assert_eq!(
        env.json(&["incident", "status", &id])["notifications"]["messages"][0]["attempts"],
        attempts,
        "no more tries"
    );
}

#[test]
fn deliveries_go_only_where_the_policy_allows_and_follow_no_redirect() {
    let env = populated(3, 1);
    let trusted = TestPki::new(&env.path("."), "trusted");
    let stranger = TestPki::new(&env.path("."), "stranger");
    // Set while the lab setting allowed loopback; the policy is checked again at delivery.
    configure(&env, &format!("[webhooks]\nca_file = {:?}\nallow_private_targets = true\n", trusted.ca));
    let redirecting = Receiver::start_tls(302, &trusted);
    let untrusted = Receiver::start_tls(200, &stranger);
    let plain = Receiver::start(200);
    env.ok(&["tenant", "webhook", "t0000", &redirecting.url]);
    env.ok(&["tenant", "webhook", "t0001", &untrusted.url]);
    assert!(env.fails(&["tenant", "webhook", "t0002", &plain.url]).contains("--danger-allow-http"));
    env.ok(&["tenant", "webhook", "t0002", &plain.url, "--danger-allow-http"]);
    let id =
        env.json(&["incident", "declare", "--compromised", "issuer:issuing-1"])["id"].as_str().expect("id").to_string();
    env.ok(&["incident", "execute", &id, "--yes", "--keys-out", env.path("k.jsonl").to_str().expect("p")]);
    let status = env.json(&["incident", "status", &id]);
    let error_of = |tenant: &str| {
        status["notifications"]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .find(|m| m["tenant"] == tenant)
            .map(|m| m["last_error"].as_str().unwrap_or("").to_string())
            .expect("a message")
    };
    // A 3xx is a failure; custos does not go where it points.
    assert_eq!(error_of("t0000"), "HTTP 302", "{status}");
    assert_eq!(redirecting.seen.lock().expect("lock").len(), 1, "one request, no redirect followed");
    // A certificate from a CA the configuration does not trust: no request at all.
    assert_eq!(error_of("t0001"), "TLS handshake failed", "{status}");
    assert!(untrusted.seen.lock().expect("lock").is_empty());
    // Plain http without the flag for this command: refused at delivery.
    assert_eq!(error_of("t0002"), "target refused by the webhook policy", "{status}");
    assert!(plain.seen.lock().expect("lock").is_empty());
    // Private targets no longer allowed: the stored loopback URL is refused when it is tried.
    std::fs::write(env.data_dir().join("custos.toml"), format!("[webhooks]\nca_file = {:?}\n", trusted.ca))
        .expect("config");
    *redirecting.status.lock().expect("lock") = 200;
    // The first retry is due two seconds after the first attempt.
    std::thread::sleep(Duration::from_millis(2_200));
    env.ok(&["incident", "notify", &id]);
    let status = env.json(&["incident", "status", &id]);
    let t0 =
        status["notifications"]["messages"].as_array().expect("m").iter().find(|m| m["tenant"] == "t0000").cloned();
    assert_eq!(t0.expect("message")["last_error"], "target refused by the webhook policy", "{status}");
    assert_eq!(redirecting.seen.lock().expect("lock").len(), 1, "nothing reached the loopback receiver");
}

#[test]
fn the_demo_tells_the_whole_story() {
    let env = Env::new();
    let said = env.ok(&["demo", "incident", "--tenants", "20"]);
    assert!(said.contains("40 certificates on 40 connections of 20 tenants affected"), "{said}");
    assert!(said.contains("old.pem: revoked"), "openssl saw the old certificate revoked: {said}");
    assert!(said.contains("new.pem: good"), "openssl saw the replacement good: {said}");
    assert!(said.contains("all 40 affected certificates revoked"), "{said}");
}

#[test]
fn the_custody_demo_switches_keys_without_a_failed_sign_in_and_names_the_targeted_tenants() {
    let env = Env::new();
    let said = env.ok(&["demo", "incident", "--custody", "--tenants", "6"]);
    assert!(said.contains(" 0 failed;"), "the service never failed a sign-in: {said}");
    assert!(!said.contains(" 0 were signed by the standby keys"), "the standbys took over: {said}");
    assert!(said.contains("replacement key file written: no"), "{said}");
    assert!(said.contains(", 2 not; targeted tenants: customer-001, customer-005"), "{said}");
}
