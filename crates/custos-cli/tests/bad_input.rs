//! Bad input gets a clear error, exit status 1, no panic, and changes nothing.

mod common;

use common::{Env, sh};

/// Row counts of every table, read from the database file by Python's sqlite3
/// (not our code): a refused request must leave all of them unchanged.
fn table_counts(env: &Env) -> Vec<(String, i64)> {
    let db = env.data_dir().join("custos.db");
    let script = "import sqlite3,sys\n\
        c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro',uri=True)\n\
        for t in ['tenants','connections','keys','issuers','certificates','audit_log','meta']:\n\
        \x20print(t, c.execute('select count(*) from '+t).fetchone()[0])";
    let out = sh("python3", &["-c", script, db.to_str().expect("p")]);
    out.lines()
        .map(|l| {
            let (t, n) = l.split_once(' ').expect("table count");
            (t.to_string(), n.trim().parse().expect("count"))
        })
        .collect()
}

fn count(rows: &[(String, i64)], table: &str) -> i64 {
    rows.iter().find(|(t, _)| t == table).map(|(_, n)| *n).expect("table")
}

fn server_env() -> (Env, std::path::PathBuf) {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "*.acme.example"]);
    let csr = env.p256_csr("good");
    (env, csr)
}

fn issue_csr(env: &Env, csr: &std::path::Path) -> String {
    env.fails(&[
        "issue",
        "acme-corp",
        "web",
        "--csr",
        csr.to_str().expect("p"),
        "--san",
        "api.acme.example",
        "--out",
        env.path("out").to_str().expect("p"),
    ])
}

#[test]
fn malformed_and_truncated_csrs_are_refused() {
    let (env, good) = server_env();
    let before = table_counts(&env);
    let garbage = env.path("garbage.csr");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all!\n-----END CERTIFICATE REQUEST-----\n",
    )
    .expect("w");
    assert!(issue_csr(&env, &garbage).contains("malformed CSR"));

    let pem = std::fs::read_to_string(&good).expect("r");
    let truncated_pem = env.path("truncated.pem");
    std::fs::write(&truncated_pem, &pem[..pem.len() / 2]).expect("w");
    assert!(issue_csr(&env, &truncated_pem).contains("malformed CSR"));

    let der = env.path("good.der");
    sh("openssl", &["req", "-in", good.to_str().expect("p"), "-outform", "DER", "-out", der.to_str().expect("p")]);
    let bytes = std::fs::read(&der).expect("r");
    let truncated_der = env.path("truncated.der");
    std::fs::write(&truncated_der, &bytes[..bytes.len() - 7]).expect("w");
    assert!(issue_csr(&env, &truncated_der).contains("malformed CSR"));

    let cert_pem = env.path("not-a-csr.pem");
    std::fs::write(&cert_pem, pem.replace("CERTIFICATE REQUEST", "CERTIFICATE")).expect("w");
    assert!(issue_csr(&env, &cert_pem).contains("expected CERTIFICATE REQUEST"));

    let empty = env.path("empty.csr");
    std::fs::write(&empty, b"").expect("w");
    assert!(issue_csr(&env, &empty).contains("malformed CSR"));

    let huge = env.path("huge.csr");
    std::fs::write(&huge, vec![b'A'; 200_000]).expect("w");
    assert!(issue_csr(&env, &huge).contains("limit"));

    // DER straight from openssl is accepted: the refusals above were about the bytes.
    env.ok(&[
        "issue",
        "acme-corp",
        "web",
        "--csr",
        der.to_str().expect("p"),
        "--san",
        "api.acme.example",
        "--out",
        env.path("der-ok").to_str().expect("p"),
    ]);
    let after = table_counts(&env);
    assert_eq!(count(&after, "certificates"), count(&before, "certificates") + 1);
    assert_eq!(count(&after, "audit_log"), count(&before, "audit_log") + 1, "one issuance, one audit entry");
    assert!(!env.path("out/cert.pem").exists());
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let (env, good) = server_env();
    let der = env.path("good.der");
    sh("openssl", &["req", "-in", good.to_str().expect("p"), "-outform", "DER", "-out", der.to_str().expect("p")]);
    let mut bytes = std::fs::read(&der).expect("r");
    // The CN "x" sits inside the signed info; change it to "y".
    let at = bytes.windows(3).position(|w| w == [0x0c, 0x01, b'x']).expect("CN in CSR");
    bytes[at + 2] = b'y';
    let tampered = env.path("tampered.der");
    std::fs::write(&tampered, &bytes).expect("w");
    let err = issue_csr(&env, &tampered);
    assert!(err.contains("CSR signature does not verify"), "{err}");
    assert!(env.serials().is_empty());
}

#[test]
fn weak_rsa_1024_csr_is_refused() {
    let (env, _) = server_env();
    let csr = env.openssl_csr("rsa1024", "/CN=x", &["-newkey", "rsa:1024"]);
    let err = issue_csr(&env, &csr);
    assert!(err.contains("weak key refused: RSA-1024"), "{err}");
    let sha1 = env.openssl_csr("sha1", "/CN=x", &["-newkey", "rsa:2048", "-sha1"]);
    assert!(issue_csr(&env, &sha1).contains("signature algorithm"), "SHA-1 signed CSRs are refused");
    assert!(env.serials().is_empty());
}

#[test]
fn unknown_tenant_connection_and_disallowed_san_are_refused() {
    let (env, csr) = server_env();
    let before = table_counts(&env);
    let out = env.path("o");
    let o = out.to_str().expect("p");
    assert!(env.fails(&["issue", "nobody", "web", "--out", o]).contains("unknown tenant \"nobody\""));
    assert!(env.fails(&["issue", "acme-corp", "nothing", "--out", o]).contains("unknown connection acme-corp/nothing"));
    let err = env.fails(&[
        "issue",
        "acme-corp",
        "web",
        "--csr",
        csr.to_str().expect("p"),
        "--san",
        "evil.example",
        "--out",
        o,
    ]);
    assert!(err.contains("SAN \"evil.example\" is not allowed for connection acme-corp/web"), "{err}");
    let err = env.fails(&[
        "issue",
        "acme-corp",
        "web",
        "--csr",
        csr.to_str().expect("p"),
        "--san",
        "a.b.acme.example",
        "--out",
        o,
    ]);
    assert!(err.contains("not allowed"), "a wildcard allows one label only: {err}");
    let err = env.fails(&["issue", "acme-corp", "web", "--csr", csr.to_str().expect("p"), "--out", o]);
    assert!(err.contains("needs at least one SAN"), "{err}");
    let err = env.fails(&["issue", "acme-corp", "web", "--san", "api.acme.example", "--validity", "500d", "--out", o]);
    assert!(err.contains("cap of 397 days"), "{err}");
    assert!(
        env.fails(&[
            "issue",
            "acme-corp",
            "web",
            "--key-algorithm",
            "rsa1024",
            "--san",
            "api.acme.example",
            "--out",
            o
        ])
        .contains("unsupported key algorithm")
    );
    assert!(env.fails(&["connection", "add", "nobody", "c"]).contains("unknown tenant"));
    assert!(env.fails(&["connection", "add", "acme-corp", "web"]).contains("already exists"));
    assert!(env.fails(&["tenant", "add", "acme-corp"]).contains("already exists"));
    assert!(env.fails(&["tenant", "add", "Bad Name"]).contains("invalid tenant name"));
    assert!(
        env.fails(&["connection", "add", "acme-corp", "x", "--allow-san", "bad..name"])
            .contains("not a valid DNS name")
    );
    assert!(env.fails(&["show", "zz-not-hex"]).contains("invalid serial"));
    assert!(env.fails(&["show", "01:02:03"]).contains("no certificate with serial 010203"));
    assert!(env.fails(&["list", "--tenant", "nobody"]).contains("unknown tenant"));
    assert!(env.fails(&["list", "--status", "bogus"]).contains("expected valid, revoked or expired"));
    assert_eq!(table_counts(&env), before, "nothing changed");
    assert!(!out.join("cert.pem").exists());
}

#[test]
fn wrong_passphrase_is_clear_and_changes_nothing() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "c"]);
    let before = table_counts(&env);
    let out = env
        .command()
        .env("CUSTOS_PASSPHRASE", "not the passphrase")
        .args(["issue", "acme-corp", "c", "--out", env.path("o").to_str().expect("p")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(env.serials().is_empty());
    assert!(!env.path("o/cert.pem").exists());
    // No passphrase at all, and no terminal to ask on.
    let out = env
        .command()
        .env_remove("CUSTOS_PASSPHRASE")
        .args(["issue", "acme-corp", "c", "--out", env.path("o2").to_str().expect("p")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no passphrase"));
    assert_eq!(table_counts(&env), before, "a wrong or missing passphrase changes nothing");
    // The right one from a file works.
    let pw = env.path("pw");
    std::fs::write(&pw, format!("{}\n", env.passphrase)).expect("w");
    let out = env
        .command()
        .env_remove("CUSTOS_PASSPHRASE")
        .args([
            "--passphrase-file",
            pw.to_str().expect("p"),
            "issue",
            "acme-corp",
            "c",
            "--out",
            env.path("o3").to_str().expect("p"),
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.serials().len(), 1);
}

#[test]
fn init_refuses_to_overwrite_an_existing_store() {
    let env = Env::initialized();
    let before = env.json(&["ca", "list"]);
    let counts = table_counts(&env);
    let err = env.fails(&["init"]);
    assert!(err.contains("already holds an initialized custos"), "{err}");
    let err = env.fails(&["init", "--ca-algorithm", "p384"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(env.json(&["ca", "list"]), before, "the CAs are untouched");
    assert_eq!(table_counts(&env), counts);
    assert_eq!(env.json(&["tenant", "list"]).as_array().expect("a").len(), 1);
}

#[test]
fn commands_on_an_empty_data_dir_say_how_to_start() {
    let env = Env::new();
    assert!(env.fails(&["list"]).contains("run `custos init` first"));
    assert!(!env.data_dir().join("custos.db").exists(), "reading does not create a database");
    assert!(env.fails(&["init", "--base-url", "ftp://x"]).contains("must start with http"));
    assert!(env.fails(&["init", "--ca-algorithm", "rsa1024"]).contains("unsupported key algorithm"));
}

#[test]
fn existing_output_files_are_never_overwritten() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "c"]);
    let out = env.path("o");
    env.ok(&["issue", "acme-corp", "c", "--out", out.to_str().expect("p")]);
    let key = std::fs::read(out.join("key.pem")).expect("key");
    let err = env.fails(&["issue", "acme-corp", "c", "--out", out.to_str().expect("p")]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(out.join("key.pem")).expect("key"), key);
    assert_eq!(env.serials().len(), 1, "refused before issuing");
}
