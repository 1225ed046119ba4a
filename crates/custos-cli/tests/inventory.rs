//! The inventory (`list`, `show`, `ca list`), bulk issuance and `serve --dev`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::{Env, sh};

#[test]
fn list_filters_and_show_accept_serials_as_openssl_prints_them() {
    let env = Env::initialized();
    env.ok(&["tenant", "add", "globex"]);
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "api.acme.example"]);
    env.ok(&["connection", "add", "globex", "mail-sync", "--validity", "30d"]);
    let o = |n: &str| env.path(n).to_str().expect("p").to_string();
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", &o("a")]);
    env.ok(&["issue", "acme-corp", "web", "--san", "api.acme.example", "--validity", "10d", "--out", &o("b")]);
    env.ok(&["issue", "globex", "mail-sync", "--out", &o("c")]);

    let all = env.json(&["list"]);
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 3);
    for c in all {
        for field in ["serial", "tenant", "connection", "profile", "status", "not_after"] {
            assert!(c.get(field).is_some(), "list entry lacks {field}: {c}");
        }
        assert_eq!(c["status"], "valid");
    }
    assert_eq!(env.json(&["list", "--tenant", "acme-corp"]).as_array().expect("a").len(), 2);
    let web = env.json(&["list", "--tenant", "acme-corp", "--connection", "web"]);
    assert_eq!(web.as_array().expect("a").len(), 1);
    assert_eq!(web[0]["profile"], "server");
    assert_eq!(env.json(&["list", "--expiring", "15d"]).as_array().expect("a").len(), 1, "only the 10-day certificate");
    assert_eq!(env.json(&["list", "--expiring", "31d"]).as_array().expect("a").len(), 2, "and globex's 30-day default");
    assert_eq!(env.json(&["list", "--status", "valid"]).as_array().expect("a").len(), 3);
    assert_eq!(env.json(&["list", "--status", "revoked"]).as_array().expect("a").len(), 0);
    assert_eq!(env.json(&["list", "--status", "expired"]).as_array().expect("a").len(), 0);
    assert_eq!(env.json(&["list", "--issuer", "issuing-1"]).as_array().expect("a").len(), 3);
    assert_eq!(
        env.json(&["list", "--issuer", "root-1"]).as_array().expect("a").len(),
        0,
        "CA certificates are not in list"
    );

    // The serial as openssl prints it, and with colons in lowercase.
    let printed = sh("openssl", &["x509", "-noout", "-serial", "-in", &o("b/cert.pem")]);
    let upper = printed.trim().trim_start_matches("serial=").to_string();
    let colons: String = upper
        .to_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    for form in [upper.clone(), colons, printed.trim().to_string()] {
        let shown = env.json(&["show", &form]);
        assert_eq!(shown["serial"].as_str().expect("s").to_uppercase(), upper);
        assert_eq!(shown["sans"][0], "api.acme.example");
    }
    let pem = env.ok(&["show", &upper, "--pem"]);
    assert_eq!(pem, std::fs::read_to_string(env.path("b/cert.pem")).expect("cert"));
    let human = env.ok(&["show", &upper]);
    assert!(human.contains("api.acme.example") && human.contains("server"));
    let table = env.ok(&["list"]);
    assert!(table.starts_with("SERIAL") && table.lines().count() == 4, "{table}");

    let cas = env.json(&["ca", "list"]);
    let roles: Vec<&str> = cas.as_array().expect("a").iter().map(|c| c["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["root", "issuing"]);
    for c in cas.as_array().expect("a") {
        for field in ["id", "name", "role", "status", "fingerprint"] {
            assert!(c.get(field).is_some(), "ca list entry lacks {field}");
        }
    }
    env.split_chain(&env.path("a/chain.pem"));
    let fp_root =
        sh("openssl", &["x509", "-noout", "-fingerprint", "-sha256", "-in", env.path("root.pem").to_str().expect("p")]);
    assert!(
        fp_root.contains(cas[0]["fingerprint"].as_str().expect("fp")),
        "ca list fingerprint is openssl's: {fp_root}"
    );
}

#[test]
fn bulk_issue_from_jsonl_is_all_or_nothing() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "*.acme.example"]);
    let csr = env.p256_csr("r");
    let csr_pem = std::fs::read_to_string(&csr).expect("csr");
    let mut lines = String::new();
    for i in 0..40 {
        let line = if i % 2 == 0 {
            serde_json::json!({"tenant": "acme-corp", "connection": "web", "csr": csr_pem, "san": [format!("h{i}.acme.example")]})
        } else {
            serde_json::json!({"tenant": "acme-corp", "connection": "mail-sync"})
        };
        lines += &format!("{line}\n");
    }
    let good = env.path("good.jsonl");
    std::fs::write(&good, &lines).expect("w");

    // A bad line anywhere: nothing at all is issued.
    let mut bad_lines: Vec<String> = lines.lines().map(str::to_string).collect();
    bad_lines[2] =
        serde_json::json!({"tenant": "acme-corp", "connection": "web", "csr": csr_pem, "san": ["evil.example"]})
            .to_string();
    let bad = env.path("bad.jsonl");
    std::fs::write(&bad, bad_lines.join("\n")).expect("w");
    let err = env.fails(&["issue", "--from", bad.to_str().expect("p")]);
    assert!(err.contains("line 3") && err.contains("evil.example"), "{err}");
    bad_lines[2] = "{\"tenant\": \"acme-corp\", \"connection\": \"web\", \"unknown_field\": 1}".into();
    std::fs::write(&bad, bad_lines.join("\n")).expect("w");
    let err = env.fails(&["issue", "--from", bad.to_str().expect("p")]);
    assert!(err.contains(":3:") && err.contains("unknown field"), "{err}");
    assert!(env.serials().is_empty());

    let results = env.path("results.jsonl");
    env.ok(&["issue", "--from", good.to_str().expect("p"), "--out", results.to_str().expect("p")]);
    let out = std::fs::read_to_string(&results).expect("results");
    let parsed: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(parsed.len(), 40);
    assert_eq!(parsed.iter().filter(|v| v["private_key"].is_string()).count(), 20, "keys only for lines without a CSR");
    assert_eq!(env.serials().len(), 40);
    // Spot-check one result with openssl.
    let cert = env.path("bulk0.pem");
    std::fs::write(&cert, parsed[0]["certificate"].as_str().expect("pem")).expect("w");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path("single").to_str().expect("p")]);
    let text = sh(
        "openssl",
        &["verify", "-CAfile", env.path("single/chain.pem").to_str().expect("p"), cert.to_str().expect("p")],
    );
    assert!(text.contains("OK"));
}

/// Bulk issuance killed (SIGKILL) at random points, then run again until it
/// completes: every line is issued exactly once, the results file holds
/// exactly the committed certificates, each with its key, and a torn or
/// uncommitted line left by a crash is dropped by the next run.
#[test]
fn bulk_issue_killed_at_random_points_resumes_without_losing_or_repeating_a_key() {
    let env = Env::initialized();
    for c in 0..4 {
        env.ok(&["connection", "add", "acme-corp", &format!("c{c}")]);
    }
    // Enough work that a run outlasts the longest delay below on this machine: a first
    // run that finished before its kill left the later ones nothing to interrupt.
    let n = 8000;
    let lines: String =
        (0..n).map(|i| format!("{{\"tenant\":\"acme-corp\",\"connection\":\"c{}\"}}\n", i % 4)).collect();
    let input = env.path("bulk.jsonl");
    std::fs::write(&input, lines).expect("input");
    let results = env.path("results.jsonl");
    let args = ["issue", "--from", input.to_str().expect("p"), "--out", results.to_str().expect("p")];
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").subsec_nanos();
    let mut x = u64::from(seed) | 1;
    let mut delays = Vec::new();
    let mut interrupted = 0;
    for _ in 0..5 {
        // xorshift: a random delay in [20, 800) ms, the seed printed on failure.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = 20 + x % 780;
        delays.push(delay);
        let mut child = env
            .command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if matches!(child.try_wait(), Ok(None)) {
            interrupted += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let context = format!("seed {seed}, kills after {delays:?} ms");
    assert!(interrupted >= 1, "{context}: no kill landed while a run was going; nothing was tested");
    // Whatever the crashes left, plus a torn line and a line for a certificate
    // that was never committed (as a kill between sync and commit leaves).
    if let Ok(text) = std::fs::read_to_string(&results)
        && let Some(first) = text.lines().next()
    {
        let job =
            serde_json::from_str::<serde_json::Value>(first).expect("json")["job"].as_str().expect("job").to_string();
        let mut f = std::fs::OpenOptions::new().append(true).open(&results).expect("open");
        writeln!(f, "{{\"job\":\"{job}\",\"line\":1,\"serial\":\"00\",\"private_key\":\"lost\"}}").expect("w");
        write!(f, "{{\"job\":\"{job}\",\"li").expect("w");
    }
    let run = env.run(&args);
    assert!(run.status.success(), "{context}: {}", String::from_utf8_lossy(&run.stderr));
    let said = String::from_utf8_lossy(&run.stderr).to_string();

    let serials = env.serials();
    assert_eq!(serials.len(), n, "{context}: every line issued exactly once; {said}");
    let text = std::fs::read_to_string(&results).expect("results");
    let parsed: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("every line is whole JSON")).collect();
    assert_eq!(parsed.len(), n, "{context}: one result per line; {said}");
    let mut numbers: Vec<u64> = parsed.iter().map(|v| v["line"].as_u64().expect("line")).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=n as u64).collect::<Vec<_>>(), "{context}: every input line once");
    let in_file: std::collections::HashSet<&str> = parsed.iter().map(|v| v["serial"].as_str().expect("s")).collect();
    let in_db: std::collections::HashSet<&str> = serials.iter().map(String::as_str).collect();
    assert_eq!(in_file, in_db, "{context}: the file holds exactly the committed certificates");
    assert!(!text.contains("\"lost\""), "the uncommitted line was dropped");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&results).expect("meta").permissions().mode() & 0o777, 0o600);
    }
    // Keys belong to their certificates (openssl, on a spread of lines).
    for v in parsed.iter().step_by(n / 6) {
        let (cert, key) = (env.path("c.pem"), env.path("k.pem"));
        std::fs::write(&cert, v["certificate"].as_str().expect("cert")).expect("w");
        std::fs::write(&key, v["private_key"].as_str().expect("key")).expect("w");
        assert_eq!(
            sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-pubkey"]),
            sh("openssl", &["pkey", "-in", key.to_str().expect("p"), "-pubout"]),
            "{context}"
        );
    }
    // Once more: nothing to do, and it says so.
    let again = env.run(&args);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("skipped {n} lines")), "{again:?}");
    assert_eq!(env.serials().len(), n);
    // Another input into the same results file is refused: it is this input's.
    let other = env.path("other.jsonl");
    std::fs::write(&other, "{\"tenant\":\"acme-corp\",\"connection\":\"c0\"}\n").expect("w");
    let said = env.fails(&["issue", "--from", other.to_str().expect("p"), "--out", results.to_str().expect("p")]);
    assert!(said.contains("another input"), "{said}");
    assert_eq!(env.serials().len(), n);
}

fn http_get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).expect("status").parse().expect("code");
    (status, head, buf[split + 4..].to_vec())
}

#[test]
fn serve_dev_starts_from_nothing_and_serves_ca_certificates() {
    let env = Env::new();
    let mut child = env
        .command()
        .env_remove("CUSTOS_PASSPHRASE")
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let addr = line.trim().strip_prefix("custos listening on http://").expect("listening line").to_string();

    let (status, _, body) = http_get(&addr, "/healthz");
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
    let (status, head, der) = http_get(&addr, "/ca/issuing-1.der");
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("content-type: application/pkix-cert"), "{head}");
    let der_path = env.path("issuing.der");
    std::fs::write(&der_path, &der).expect("w");
    let subject =
        sh("openssl", &["x509", "-inform", "DER", "-in", der_path.to_str().expect("p"), "-noout", "-subject"]);
    assert!(subject.contains("custos Issuing CA 1"), "{subject}");
    let (status, head, body) = http_get(&addr, "/ca/no-such-ca.der");
    assert_eq!(status, 404);
    assert!(head.contains("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem json");
    assert_eq!(problem["status"], 404);
    assert_eq!(http_get(&addr, "/ca/issuing-1.txt").0, 404);
    let (status, head, _) = http_get(&addr, "/ca/%ff%00.der");
    assert_eq!(status, 400, "garbage in the path is a client error");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(http_get(&addr, "/nothing/here").0, 404);

    // The dev store works for the CLI without CUSTOS_PASSPHRASE.
    let run = |args: &[&str]| env.command().env_remove("CUSTOS_PASSPHRASE").args(args).output().expect("run");
    assert!(run(&["tenant", "add", "t"]).status.success());
    assert!(run(&["connection", "add", "t", "c"]).status.success());
    let issued = run(&["issue", "t", "c", "--out", env.path("o").to_str().expect("p")]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let (_, _, served) = http_get(&addr, "/ca/issuing-1.pem");
    let chain = std::fs::read_to_string(env.path("o/chain.pem")).expect("chain");
    assert!(chain.starts_with(std::str::from_utf8(&served).expect("pem")), "served CA is the chain's issuer");

    child.kill().expect("kill");
    let _ = child.wait();
    let dev_pw = env.data_dir().join("dev-passphrase");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dev_pw).expect("dev passphrase").permissions().mode() & 0o777, 0o600);
    }
}
