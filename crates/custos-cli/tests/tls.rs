//! The TLS listener, probed with openssl s_client: TLS 1.3 and TLS 1.2 ECDHE
//! only; no static RSA, no finite-field DHE, nothing below TLS 1.2.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{Env, sh};

/// Runs s_client with `args`, sends one HTTP request, returns everything it printed.
fn s_client(addr: &str, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: custos\r\nConnection: close\r\n\r\n")
        .expect("write");
    let out = child.wait_with_output().expect("s_client output");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn tls_listener_offers_only_forward_secret_suites() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "ops", "--profile", "server", "--allow-san", "127.0.0.1"]);
    let out = env.path("tls");
    env.ok(&[
        "issue",
        "acme-corp",
        "ops",
        "--san",
        "127.0.0.1",
        "--key-algorithm",
        "rsa2048",
        "--out",
        out.to_str().expect("p"),
    ]);
    let (root, issuing) = env.split_chain(&out.join("chain.pem"));
    let full = env.path("full.pem");
    std::fs::write(
        &full,
        [std::fs::read(out.join("cert.pem")).expect("r"), std::fs::read(&issuing).expect("r")].concat(),
    )
    .expect("w");

    let mut child = env
        .command()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .args(["--tls-cert", full.to_str().expect("p"), "--tls-key", out.join("key.pem").to_str().expect("p")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let _plain = lines.next().expect("plain line").expect("read");
    let secure = lines.next().expect("tls line").expect("read");
    let addr = secure.trim().strip_prefix("custos listening on https://").expect("https address").to_string();
    let root_arg = root.to_str().expect("p");

    let tls13 = s_client(&addr, &["-tls1_3", "-CAfile", root_arg, "-verify_return_error"]);
    assert!(tls13.contains("TLSv1.3") && tls13.contains("Verify return code: 0 (ok)"), "{tls13}");
    assert!(tls13.contains("HTTP/1.1 200 OK") && tls13.contains("\nok"), "{tls13}");

    let ecdhe = s_client(&addr, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-CAfile", root_arg]);
    assert!(ecdhe.contains("Cipher is ECDHE-RSA-AES128-GCM-SHA256"), "{ecdhe}");

    for (what, args) in [
        ("static RSA key exchange", &["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA"][..]),
        ("finite-field DHE", &["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"][..]),
        ("TLS 1.1", &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..]),
    ] {
        let refused = s_client(&addr, args);
        // The server answers with a handshake_failure alert (40): it refused, not the client.
        assert!(
            refused.contains("alert handshake failure") && refused.contains("Cipher is (NONE)"),
            "{what} was not refused by the server: {refused}"
        );
        assert!(!refused.contains("HTTP/1.1 200 OK"), "{what} got an answer");
    }

    // OCSP over HTTPS with openssl's own client.
    let ocsp = sh(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            issuing.to_str().expect("p"),
            "-cert",
            out.join("cert.pem").to_str().expect("p"),
            "-url",
            &format!("https://{addr}/ocsp"),
            "-CAfile",
            root_arg,
        ],
    );
    assert!(ocsp.contains("Response verify OK") && ocsp.contains(": good"), "{ocsp}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_tls_files_are_refused_at_start() {
    let env = Env::initialized();
    let missing = env.path("missing.pem");
    let empty = env.path("empty.pem");
    std::fs::write(&empty, "").expect("w");
    let err = env.fails(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing.to_str().expect("p"),
        "--tls-key",
        missing.to_str().expect("p"),
    ]);
    assert!(err.contains("TLS certificate chain"), "{err}");
    let err = env.fails(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        empty.to_str().expect("p"),
        "--tls-key",
        empty.to_str().expect("p"),
    ]);
    assert!(err.contains("no CERTIFICATE block"), "{err}");
}
