//! Revocation seen by relying parties: openssl's OCSP client and CRL checks
//! against a real `custos serve` on loopback, and pkilint on what it signs.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, http, pkilint, sh};
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, encode_request};

/// An initialized custos with one issued certificate: (env, cert dir, root, issuing).
fn setup() -> (Env, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let out = env.path("leaf");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    let (root, issuing) = env.split_chain(&out.join("chain.pem"));
    (env, out, root, issuing)
}

fn serial_of(cert: &std::path::Path) -> String {
    sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// `openssl ocsp` against the server; returns its combined output.
fn openssl_ocsp(
    server: &Server,
    issuing: &std::path::Path,
    root: &std::path::Path,
    certs: &[&std::path::Path],
    extra: &[&str],
) -> String {
    let mut args = vec!["ocsp", "-issuer", issuing.to_str().expect("p")];
    for c in certs {
        args.extend(["-cert", c.to_str().expect("p")]);
    }
    let url = server.url("/ocsp");
    args.extend(["-url", &url, "-CAfile", root.to_str().expect("p")]);
    args.extend_from_slice(extra);
    sh("openssl", &args)
}

#[test]
fn openssl_ocsp_sees_good_then_revoked_within_a_second_across_processes() {
    let (env, leaf, root, issuing) = setup();
    let server = Server::start(&env);
    let cert = leaf.join("cert.pem");
    let out = openssl_ocsp(&server, &issuing, &root, &[&cert], &[]);
    assert!(out.contains("Response verify OK") && out.contains("cert.pem: good"), "{out}");
    assert!(!out.contains("WARNING"), "the nonce is echoed: {out}");

    // Revoke from another process (the CLI), then ask until openssl says revoked.
    let serial = serial_of(&cert);
    env.ok(&["revoke", &serial, "--reason", "key-compromise", "--invalidity-date", "2026-11-01T10:00:00Z"]);
    let revoked_at = Instant::now();
    let out = loop {
        let out = openssl_ocsp(&server, &issuing, &root, &[&cert], &[]);
        if out.contains("cert.pem: revoked") || revoked_at.elapsed() > Duration::from_secs(5) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = revoked_at.elapsed();
    assert!(out.contains("cert.pem: revoked") && out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(elapsed < Duration::from_secs(1), "revocation took {elapsed:?} to reach OCSP");

    // Responses and the responder certificate pass pkilint.
    let resp = env.path("resp.der");
    let text = openssl_ocsp(&server, &issuing, &root, &[&cert], &["-respout", resp.to_str().expect("p"), "-resp_text"]);
    pkilint("lint_ocsp_response", &[resp.to_str().expect("p")]);
    let responder_pem: String = text
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .take_while(|l| !l.starts_with("-----END CERTIFICATE"))
        .collect::<String>()
        + "-----END CERTIFICATE-----\n";
    let responder = env.path("responder.pem");
    std::fs::write(&responder, &responder_pem).expect("w");
    let rtext = sh("openssl", &["x509", "-in", responder.to_str().expect("p"), "-noout", "-text"]);
    assert!(rtext.contains("OCSP Signing") && rtext.contains("OCSP No Check"), "{rtext}");
    assert!(rtext.contains("Subject: CN = custos Issuing CA 1 OCSP responder"), "{rtext}");
    pkilint("lint_pkix_cert", &[responder.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[issuing.to_str().expect("p"), responder.to_str().expect("p")]);
}

#[test]
fn several_certificates_in_one_request_and_the_get_form() {
    let (env, leaf, root, issuing) = setup();
    let second = env.path("second");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", second.to_str().expect("p")]);
    env.ok(&["revoke", &serial_of(&second.join("cert.pem")), "--reason", "superseded"]);
    let server = Server::start(&env);
    let out = openssl_ocsp(&server, &issuing, &root, &[&leaf.join("cert.pem"), &second.join("cert.pem")], &[]);
    assert!(out.contains("leaf/cert.pem: good"), "{out}");
    assert!(out.contains("second/cert.pem: revoked") && out.contains("Reason: superseded"), "{out}");

    // RFC 5019 GET: base64 of the DER request in the path, percent-encoded.
    let req = env.path("req.der");
    sh(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            issuing.to_str().expect("p"),
            "-cert",
            leaf.join("cert.pem").to_str().expect("p"),
            "-no_nonce",
            "-reqout",
            req.to_str().expect("p"),
        ],
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).expect("r"));
    let path = format!("/ocsp/{}", b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
    let (status, head, body) = http(&server.addr, "GET", &path, None, b"");
    assert_eq!(status, 200);
    let lower = head.to_lowercase();
    assert!(lower.contains("content-type: application/ocsp-response"), "{head}");
    assert!(
        lower.contains("cache-control: public, max-age=")
            && lower.contains("last-modified:")
            && lower.contains("expires:"),
        "{head}"
    );
    let resp = env.path("get.der");
    std::fs::write(&resp, &body).expect("w");
    let out = sh(
        "openssl",
        &[
            "ocsp",
            "-respin",
            resp.to_str().expect("p"),
            "-reqin",
            req.to_str().expect("p"),
            "-issuer",
            issuing.to_str().expect("p"),
            "-CAfile",
            root.to_str().expect("p"),
            "-cert",
            leaf.join("cert.pem").to_str().expect("p"),
        ],
    );
    assert!(out.contains("Response verify OK") && out.contains(": good"), "{out}");
    // The HTTP cache headers state the response's own thisUpdate and nextUpdate.
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.to_lowercase().starts_with(name).then(|| l[name.len()..].trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    let openssl_time = |label: &str| {
        let line = out.lines().find_map(|l| l.trim().strip_prefix(label)).unwrap_or_else(|| panic!("{label}: {out}"));
        // "Nov 24 08:05:39 2026 GMT" -> (year, month, day, time)
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[3].to_string(), f[0].to_string(), format!("{:0>2}", f[1]), f[2].to_string())
    };
    let http_time = |value: String| {
        // "Tue, 24 Nov 2026 08:05:39 GMT" -> (year, month, day, time)
        let f: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        (f[3].clone(), f[2].clone(), f[1].clone(), f[4].clone())
    };
    assert_eq!(http_time(header("last-modified:")), openssl_time("This Update:"), "{head}\n{out}");
    assert_eq!(http_time(header("expires:")), openssl_time("Next Update:"), "{head}\n{out}");
    // The same request, URL-safe base64 without padding, unescaped.
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(std::fs::read(&req).expect("r"));
    let (status, _, body2) = http(&server.addr, "GET", &format!("/ocsp/{url_safe}"), None, b"");
    assert_eq!((status, body2.len() > 100), (200, true));
}

#[test]
fn crls_list_revocations_and_openssl_checks_them() {
    let (env, leaf, root, issuing) = setup();
    let good = env.path("good");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", good.to_str().expect("p")]);
    let serial = serial_of(&leaf.join("cert.pem"));
    env.ok(&[
        "revoke",
        &serial.to_lowercase(),
        "--reason",
        "key-compromise",
        "--invalidity-date",
        "2026-11-20T10:00:00Z",
    ]);
    let crl = env.path("crl.der");
    let v = env.json(&["crl", "--out", crl.to_str().expect("p")]);
    assert_eq!(v["entries"], 1);
    let text = sh("openssl", &["crl", "-inform", "DER", "-in", crl.to_str().expect("p"), "-noout", "-text"]);
    for needle in [
        serial.as_str(),
        "Key Compromise",
        "Invalidity Date",
        "X509v3 CRL Number",
        "Authority Key Identifier",
        "Next Update",
    ] {
        assert!(text.contains(needle), "CRL lacks {needle}: {text}");
    }
    pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX", crl.to_str().expect("p")]);
    let crl_pem = env.path("crl.pem");
    env.ok(&["crl", "--pem", "--out", crl_pem.to_str().expect("p")]);
    let bundle = env.path("bundle.pem");
    std::fs::write(&bundle, [std::fs::read(&root).expect("r"), std::fs::read(&issuing).expect("r")].concat())
        .expect("w");
    let check = |cert: &std::path::Path| {
        std::process::Command::new("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CRLfile",
                crl_pem.to_str().expect("p"),
                "-CAfile",
                bundle.to_str().expect("p"),
                cert.to_str().expect("p"),
            ])
            .output()
            .expect("openssl")
    };
    let revoked = check(&leaf.join("cert.pem"));
    let said = String::from_utf8_lossy(&revoked.stdout).into_owned() + &String::from_utf8_lossy(&revoked.stderr);
    assert!(!revoked.status.success() && said.contains("certificate revoked"), "{said}");
    assert!(check(&good.join("cert.pem")).status.success());

    // The server's CRL: regenerated after a revoke, with a higher number.
    let server = Server::start(&env);
    let fetch = || {
        let (status, head, body) = http(&server.addr, "GET", "/crl/issuing-1.crl", None, b"");
        assert_eq!(status, 200, "{head}");
        let f = env.path("served.crl");
        std::fs::write(&f, body).expect("w");
        sh("openssl", &["crl", "-inform", "DER", "-in", f.to_str().expect("p"), "-noout", "-text"])
    };
    let before = fetch();
    env.ok(&["revoke", &serial_of(&good.join("cert.pem")), "--reason", "cessation-of-operation"]);
    let started = Instant::now();
    let after = loop {
        let t = fetch();
        if t.contains("Cessation Of Operation") || started.elapsed() > Duration::from_secs(5) {
            break t;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(after.contains("Cessation Of Operation"), "{after}");
    assert!(started.elapsed() < Duration::from_secs(1), "CRL was stale for {:?}", started.elapsed());
    let number = |t: &str| t.lines().skip_while(|l| !l.contains("CRL Number")).nth(1).map(|l| l.trim().to_string());
    assert!(
        number(&after).expect("n").parse::<u64>().expect("n") > number(&before).expect("n").parse::<u64>().expect("n")
    );
    // The root's CRL is served too, and lints.
    let (status, _, root_crl) = http(&server.addr, "GET", "/crl/root-1.crl", None, b"");
    assert_eq!(status, 200);
    let rc = env.path("root.crl");
    std::fs::write(&rc, root_crl).expect("w");
    pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX", rc.to_str().expect("p")]);
    assert_eq!(http(&server.addr, "GET", "/crl/nope.crl", None, b"").0, 404);
}

#[test]
fn revoking_a_connection_revokes_all_its_valid_certificates() {
    let (env, _, _, _) = setup();
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path("b").to_str().expect("p")]);
    env.ok(&["connection", "add", "acme-corp", "other"]);
    env.ok(&["issue", "acme-corp", "other", "--out", env.path("c").to_str().expect("p")]);
    let v = env.json(&["revoke", "--connection", "acme-corp/mail-sync", "--reason", "superseded"]);
    assert_eq!(v.as_array().expect("a").len(), 2);
    assert_eq!(env.json(&["list", "--status", "revoked"]).as_array().expect("a").len(), 2);
    assert_eq!(env.json(&["list", "--status", "valid"]).as_array().expect("a")[0]["connection"], "other");
    let again = env.json(&["revoke", "--connection", "acme-corp/mail-sync", "--reason", "superseded"]);
    assert_eq!(again.as_array().expect("a").len(), 0, "nothing left to revoke");
}

#[test]
fn bad_revocations_are_refused_and_change_nothing() {
    let (env, leaf, _, _) = setup();
    let serial = serial_of(&leaf.join("cert.pem"));
    assert!(env.fails(&["revoke", "0badc0de", "--reason", "superseded"]).contains("no certificate with serial"));
    assert!(env.fails(&["revoke", &serial, "--reason", "because"]).contains("unknown revocation reason"));
    assert!(
        env.fails(&["revoke", &serial, "--reason", "superseded", "--invalidity-date", "yesterday"])
            .contains("RFC 3339")
    );
    assert!(
        env.fails(&["revoke", &serial, "--reason", "superseded", "--invalidity-date", "2999-01-01T00:00:00Z"])
            .contains("in the future")
    );
    assert!(
        env.fails(&["revoke", "--connection", "acme-corp", "--reason", "superseded"]).contains("TENANT/CONNECTION")
    );
    assert!(env.fails(&["revoke", "--connection", "nobody/x", "--reason", "superseded"]).contains("unknown tenant"));
    assert_eq!(env.json(&["list", "--status", "revoked"]).as_array().expect("a").len(), 0);
    env.ok(&["revoke", &serial, "--reason", "superseded"]);
    assert!(env.fails(&["revoke", &serial, "--reason", "key-compromise"]).contains("already revoked"));
    let shown = env.json(&["show", &serial]);
    assert_eq!((shown["status"].as_str(), shown["revocation_reason"].as_str()), (Some("revoked"), Some("superseded")));
}

/// The unsigned error statuses of RFC 6960 4.2.1.
fn error_status(body: &[u8]) -> Option<u8> {
    (body.len() == 5 && body[..4] == [0x30, 0x03, 0x0a, 0x01]).then(|| body[4])
}

#[test]
fn bad_ocsp_requests_get_the_right_error_and_never_a_panic() {
    let (env, leaf, _, issuing) = setup();
    let server = Server::start(&env);
    let post = |body: &[u8]| http(&server.addr, "POST", "/ocsp", Some("application/ocsp-request"), body);
    let (status, _, body) = post(b"\x30\x03garbage");
    assert_eq!((status, error_status(&body)), (200, Some(1)), "malformed DER is malformedRequest");
    let req = env.path("req.der");
    sh(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            issuing.to_str().expect("p"),
            "-cert",
            leaf.join("cert.pem").to_str().expect("p"),
            "-reqout",
            req.to_str().expect("p"),
        ],
    );
    let good = std::fs::read(&req).expect("r");
    assert_eq!(error_status(&post(&good[..good.len() - 3]).2), Some(1), "truncated request");
    assert_eq!(error_status(&post(b"").2), Some(1), "empty body");
    let (status, head, body) = post(&vec![0x30; 64 * 1024]);
    assert_eq!(status, 413, "oversized body");
    assert!(head.to_lowercase().contains("content-type: application/problem+json"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("8192 bytes"), "says the limit");
    for path in ["/ocsp/%%%", "/ocsp/!!!!", "/ocsp/AAAA", "/ocsp/%ff%fe"] {
        let (status, _, body) = http(&server.addr, "GET", path, None, b"");
        assert_eq!((status, error_status(&body)), (200, Some(1)), "{path}");
    }
    // Unknown issuer: unauthorized. Unsupported hash: unauthorized.
    let issuing_der = sh_bytes(&["x509", "-in", issuing.to_str().expect("p"), "-outform", "DER"]);
    let hashes = IssuerHashes::from_certificate(&issuing_der).expect("hashes");
    let other_ca = IssuerHashes::from_certificate(&sh_bytes(&[
        "x509",
        "-in",
        leaf.join("cert.pem").to_str().expect("p"),
        "-outform",
        "DER",
    ]))
    .expect("h");
    let unknown_issuer = encode_request(&[other_ca.cert_id(HashAlgorithm::Sha1, &"0102".parse().expect("s"))], None);
    assert_eq!(error_status(&post(&unknown_issuer).2), Some(6));
    let mut sha1_der = hashes.cert_id(HashAlgorithm::Sha1, &"0102".parse().expect("s")).der;
    let at = sha1_der.windows(5).position(|w| w == [0x2b, 0x0e, 0x03, 0x02, 0x1a]).expect("sha1 oid");
    sha1_der[at + 4] = 0x1b; // an OID nobody uses
    let mut weird = hashes.cert_id(HashAlgorithm::Sha1, &"0102".parse().expect("s"));
    weird.der = sha1_der;
    assert_eq!(error_status(&post(&encode_request(&[weird], None)).2), Some(6), "unsupported hash");
    // A serial never issued is `unknown`, signed, never `good`.
    let unknown = encode_request(
        &[hashes.cert_id(HashAlgorithm::Sha256, &"0bad0bad".parse().expect("s"))],
        Some(&[0x04, 0x02, 1, 2]),
    );
    let (status, _, body) = post(&unknown);
    assert_eq!(status, 200);
    let f = env.path("unknown.der");
    std::fs::write(&f, &body).expect("w");
    let text = sh("openssl", &["ocsp", "-respin", f.to_str().expect("p"), "-resp_text", "-noverify"]);
    assert!(text.contains("Cert Status: unknown") && !text.contains("Cert Status: good"), "{text}");
    // The server is still healthy after all of that.
    assert_eq!(http(&server.addr, "GET", "/healthz", None, b"").0, 200);
}

fn sh_bytes(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn a_flood_of_random_serials_is_not_a_signing_oracle() {
    let (env, _, _, issuing) = setup();
    let server = Server::start(&env);
    let issuing_der = sh_bytes(&["x509", "-in", issuing.to_str().expect("p"), "-outform", "DER"]);
    let hashes = IssuerHashes::from_certificate(&issuing_der).expect("hashes");
    let (mut signed, mut try_later) = (0, 0);
    let started = Instant::now();
    for i in 0..1_500u32 {
        let serial: custos_pki::Serial = format!("7e{i:08x}").parse().expect("serial");
        let body = encode_request(&[hashes.cert_id(HashAlgorithm::Sha1, &serial)], None);
        let (status, _, resp) = http(&server.addr, "POST", "/ocsp", Some("application/ocsp-request"), &body);
        assert_eq!(status, 200);
        match error_status(&resp) {
            Some(3) => try_later += 1,
            None => signed += 1,
            other => panic!("unexpected status {other:?}"),
        }
    }
    // The unknown budget is 500 with 500/s refill: the signatures made are
    // bounded by the burst plus the refill over the flood's duration.
    let bound = 500.0 + 500.0 * started.elapsed().as_secs_f64() + 1.0;
    assert!((signed as f64) <= bound, "{signed} signatures for unknown serials exceed the bound {bound}");
    assert!(try_later > 0 || started.elapsed() > Duration::from_secs(2), "the flood met no limit: {signed} signed");
}

#[test]
fn crl_partitions_have_matching_cdp_and_idp_and_openssl_honours_the_scope() {
    let env = Env::new();
    env.ok(&["init", "--crl-partition-size", "2"]);
    env.ok(&["tenant", "add", "t"]);
    env.ok(&["connection", "add", "t", "c"]);
    let mut certs = Vec::new();
    for i in 0..5 {
        let out = env.path(&format!("c{i}"));
        env.ok(&["issue", "t", "c", "--out", out.to_str().expect("p")]);
        certs.push(out.join("cert.pem"));
    }
    let cdp = |cert: &std::path::Path| {
        sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-ext", "crlDistributionPoints"])
    };
    assert!(cdp(&certs[0]).contains("/crl/issuing-1.crl") && cdp(&certs[1]).contains("/crl/issuing-1.crl"));
    assert!(cdp(&certs[2]).contains("/crl/issuing-1/1.crl") && cdp(&certs[3]).contains("/crl/issuing-1/1.crl"));
    assert!(cdp(&certs[4]).contains("/crl/issuing-1/2.crl"), "{}", cdp(&certs[4]));
    env.ok(&["revoke", &serial_of(&certs[4]), "--reason", "key-compromise"]);
    let (root, issuing) = env.split_chain(&env.path("c0/chain.pem"));
    let bundle = env.path("bundle.pem");
    std::fs::write(&bundle, [std::fs::read(&root).expect("r"), std::fs::read(&issuing).expect("r")].concat())
        .expect("w");

    let server = Server::start(&env);
    let fetch = |path: &str, name: &str| {
        let (status, _, body) = http(&server.addr, "GET", path, None, b"");
        assert_eq!(status, 200, "{path}");
        let der = env.path(&format!("{name}.der"));
        std::fs::write(&der, body).expect("w");
        let pem = env.path(&format!("{name}.pem"));
        sh("openssl", &["crl", "-inform", "DER", "-in", der.to_str().expect("p"), "-out", pem.to_str().expect("p")]);
        pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX", der.to_str().expect("p")]);
        (pem.clone(), sh("openssl", &["crl", "-in", pem.to_str().expect("p"), "-noout", "-text"]))
    };
    let (p0, t0) = fetch("/crl/issuing-1.crl", "p0");
    let (p2, t2) = fetch("/crl/issuing-1/2.crl", "p2");
    assert!(
        t0.contains("URI:http://127.0.0.1:8080/crl/issuing-1.crl") && t0.contains("No Revoked Certificates"),
        "{t0}"
    );
    assert!(t2.contains("URI:http://127.0.0.1:8080/crl/issuing-1/2.crl") && t2.contains(&serial_of(&certs[4])), "{t2}");
    assert_eq!(http(&server.addr, "GET", "/crl/issuing-1/9.crl", None, b"").0, 404);
    assert_eq!(http(&server.addr, "GET", "/crl/issuing-1/0.crl", None, b"").0, 404);

    let verify = |cert: &std::path::Path, crl: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CRLfile",
                crl.to_str().expect("p"),
                "-CAfile",
                bundle.to_str().expect("p"),
                cert.to_str().expect("p"),
            ])
            .output()
            .expect("openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = verify(&certs[4], &p2);
    assert!(!ok && said.contains("certificate revoked"), "{said}");
    assert!(verify(&certs[0], &p0).0, "partition 0 certificate against its own CRL");
    // A CRL whose IDP does not match the certificate's CDP is out of scope for it.
    let (ok, said) = verify(&certs[0], &p2);
    assert!(!ok && said.contains("different CRL scope"), "{said}");
    assert!(
        env.fails(&["crl", "--partition", "7", "--out", env.path("x.crl").to_str().expect("p")])
            .contains("no CRL partition 7")
    );
}
