//! Issuance through the real binary, checked by openssl and pkilint.

mod common;

use common::{Env, openssl_verify, pkilint, sh};

/// Issues with a server-side key and checks every file `issue --out` writes.
fn check_generated(env: &Env, algorithm: &str) {
    let out = env.path(&format!("gen-{algorithm}"));
    let v = env.json(&[
        "issue",
        "acme-corp",
        "mail-sync",
        "--key-algorithm",
        algorithm,
        "--out",
        out.to_str().expect("path"),
    ]);
    assert_eq!(v["profile"], "client");
    let pw = v["p12_password"].as_str().expect("p12 password shown once");
    let cert = out.join("cert.pem");
    let (root, issuing) = env.split_chain(&out.join("chain.pem"));
    openssl_verify(&root, &issuing, &cert);
    sh("openssl", &["verify", "-CAfile", out.join("chain.pem").to_str().expect("p"), cert.to_str().expect("p")]);
    let info = sh(
        "openssl",
        &[
            "pkcs12",
            "-info",
            "-in",
            out.join("bundle.p12").to_str().expect("p"),
            "-passin",
            &format!("pass:{pw}"),
            "-nodes",
        ],
    );
    assert!(info.contains("BEGIN PRIVATE KEY"), "bundle holds the key: {info}");
    assert_eq!(info.matches("BEGIN CERTIFICATE").count(), 3, "bundle holds leaf, issuing and root");
    let wrong = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-info",
            "-noout",
            "-in",
            out.join("bundle.p12").to_str().expect("p"),
            "-passin",
            "pass:wrong",
        ])
        .output()
        .expect("openssl");
    assert!(!wrong.status.success(), "a wrong password must not open the bundle");
    let key_pub = sh("openssl", &["pkey", "-in", out.join("key.pem").to_str().expect("p"), "-pubout"]);
    let cert_pub = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-pubkey", "-noout"]);
    assert_eq!(key_pub, cert_pub, "key.pem belongs to cert.pem");
    let text = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-text"]);
    for needle in [
        "TLS Web Client Authentication",
        "Digital Signature",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "URI:http://127.0.0.1:8080/crl/issuing-1.crl",
        "OCSP - URI:http://127.0.0.1:8080/ocsp",
        "CA Issuers - URI:http://127.0.0.1:8080/ca/issuing-1.der",
    ] {
        assert!(text.contains(needle), "{algorithm} certificate lacks {needle}:\n{text}");
    }
    pkilint("lint_pkix_cert", &[cert.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[issuing.to_str().expect("p"), cert.to_str().expect("p")]);
}

#[test]
fn every_key_algorithm_with_a_server_side_key_verifies_and_lints() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync", "--profile", "client"]);
    for algorithm in ["p256", "p384", "rsa2048", "rsa3072", "rsa4096", "ed25519"] {
        check_generated(&env, algorithm);
    }
    // The CA certificates themselves.
    let (root, issuing) = (env.path("root.pem"), env.path("issuing.pem"));
    pkilint("lint_pkix_cert", &[root.to_str().expect("p")]);
    pkilint("lint_pkix_cert", &[issuing.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[root.to_str().expect("p"), issuing.to_str().expect("p")]);
    pkilint("lint_pkix_signer_signee_cert_chain", &[root.to_str().expect("p"), root.to_str().expect("p")]);
    let root_text = sh("openssl", &["x509", "-in", root.to_str().expect("p"), "-noout", "-text"]);
    assert!(
        root_text.contains("CA:TRUE, pathlen:1") && root_text.contains("Certificate Sign, CRL Sign"),
        "{root_text}"
    );
    let issuing_text = sh("openssl", &["x509", "-in", issuing.to_str().expect("p"), "-noout", "-text"]);
    assert!(issuing_text.contains("CA:TRUE, pathlen:0"), "{issuing_text}");
    assert!(issuing_text.contains("URI:http://127.0.0.1:8080/crl/root-1.crl"), "{issuing_text}");
    assert_eq!(env.serials().len(), 6);
}

#[test]
fn every_csr_key_type_gets_a_server_certificate_that_verifies_and_lints() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "*.acme.example"]);
    let keys: [(&str, &[&str]); 4] = [
        ("p256", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        ("p384", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        ("rsa2048", &["-newkey", "rsa:2048"]),
        ("ed25519", &["-newkey", "ed25519"]),
    ];
    for (name, newkey) in keys {
        let csr = env.openssl_csr(name, "/CN=ignored", newkey);
        let key = env.path(&format!("{name}.key"));
        let out = env.path(&format!("csr-{name}"));
        let v = env.json(&[
            "issue",
            "acme-corp",
            "web",
            "--csr",
            csr.to_str().expect("p"),
            "--profile",
            "server",
            "--san",
            "api.acme.example",
            "--san",
            "API2.acme.example",
            "--out",
            out.to_str().expect("p"),
        ]);
        assert!(v["p12_password"].is_null(), "no key is generated for a CSR");
        assert!(!out.join("key.pem").exists());
        let cert = out.join("cert.pem");
        let (root, issuing) = env.split_chain(&out.join("chain.pem"));
        openssl_verify(&root, &issuing, &cert);
        let text = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-text", "-subject"]);
        assert!(text.contains("DNS:api.acme.example, DNS:api2.acme.example"), "{text}");
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(
            text.contains("CN = api.acme.example") && !text.contains("ignored"),
            "policy, not the CSR, sets the subject: {text}"
        );
        // The certificate carries the CSR's key.
        let key_pub = sh("openssl", &["pkey", "-in", key.to_str().expect("p"), "-pubout"]);
        let cert_pub = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-pubkey", "-noout"]);
        assert_eq!(key_pub, cert_pub);
        pkilint("lint_pkix_cert", &[cert.to_str().expect("p")]);
        pkilint("lint_pkix_signer_signee_cert_chain", &[issuing.to_str().expect("p"), cert.to_str().expect("p")]);
    }
}

#[test]
fn ca_key_algorithms_other_than_p256_make_working_hierarchies() {
    for algorithm in ["p384", "ed25519", "rsa3072"] {
        let env = Env::new();
        env.ok(&["init", "--ca-algorithm", algorithm, "--base-url", "https://pki.example.net/"]);
        env.ok(&["tenant", "add", "t"]);
        env.ok(&["connection", "add", "t", "c"]);
        let out = env.path("o");
        env.ok(&["issue", "t", "c", "--out", out.to_str().expect("p")]);
        let (root, issuing) = env.split_chain(&out.join("chain.pem"));
        openssl_verify(&root, &issuing, &out.join("cert.pem"));
        let text = sh("openssl", &["x509", "-in", out.join("cert.pem").to_str().expect("p"), "-noout", "-text"]);
        assert!(
            text.contains("URI:https://pki.example.net/crl/issuing-1.crl"),
            "base URL without its trailing slash: {text}"
        );
        for pem in [&root, &issuing, &out.join("cert.pem")] {
            pkilint("lint_pkix_cert", &[pem.to_str().expect("p")]);
        }
    }
}

#[test]
fn serials_are_random_positive_and_at_most_twenty_octets() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "c"]);
    for i in 0..3 {
        env.ok(&["issue", "acme-corp", "c", "--out", env.path(&format!("o{i}")).to_str().expect("p")]);
    }
    let serials = env.serials();
    assert_eq!(serials.len(), 3);
    for s in &serials {
        let bytes = hex::decode(s).expect("hex serial");
        assert!(bytes.len() >= 16 && bytes.len() <= 20, "{s}");
        assert!(bytes[0] < 0x80, "positive: {s}");
        let out = sh("openssl", &["x509", "-noout", "-serial", "-in", env.path("o0/cert.pem").to_str().expect("p")]);
        assert!(out.starts_with("serial="));
    }
    let mut unique = serials.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3);
}
