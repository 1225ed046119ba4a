//! Several custos nodes on one PostgreSQL (the throwaway cluster scripts/test
//! starts): a revocation through the CLI answered by both nodes' OCSP and
//! listed on both nodes' CRLs within a second; two nodes issuing, revoking
//! and signing CRLs at once keep serials, CRL numbers and the audit log sound.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, http, ocsp, sh, tools_required, wait_for_ocsp};

/// A fresh database on the test cluster, or None where PostgreSQL is not required.
pub fn fresh_database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("CUSTOS_TEST_POSTGRES") else {
        assert!(!tools_required(), "CUSTOS_TEST_POSTGRES is not set: run through scripts/test");
        eprintln!("skipping: no PostgreSQL (run scripts/test)");
        return None;
    };
    let db = format!("{name}_{}", std::process::id());
    sh("psql", &[&base, "-qc", &format!("CREATE DATABASE {db}")]);
    let (prefix, _) = base.rsplit_once('/').expect("database in URL");
    Some(format!("{prefix}/{db}"))
}

/// An environment whose every command uses `database`.
fn env_on(database: &str) -> Env {
    let env = Env::new();
    env.ok(&["--database", database, "init"]);
    env
}

fn run(env: &Env, database: &str, args: &[&str]) -> String {
    let mut all = vec!["--database", database];
    all.extend_from_slice(args);
    env.ok(&all)
}

/// Adds acme-corp/mail-sync and issues one certificate through `database`:
/// (root CA file, issuing CA file, certificate file).
fn issue_one(env: &Env, database: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    run(env, database, &["tenant", "add", "acme-corp"]);
    run(env, database, &["connection", "add", "acme-corp", "mail-sync"]);
    let out = env.path("leaf");
    run(env, database, &["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    let (root, issuing) = env.split_chain(&out.join("chain.pem"));
    (root, issuing, out.join("cert.pem"))
}

fn serve(env: &Env, database: &str) -> Server {
    Server::start_with(env, &["--database", database])
}

#[test]
fn a_revocation_on_one_node_is_seen_by_every_node_within_a_second() {
    let Some(db) = fresh_database("two_nodes") else { return };
    let env = env_on(&db);
    let (root, issuing, cert) = issue_one(&env, &db);
    let (a, b) = (serve(&env, &db), serve(&env, &db));
    let ask = |node: &Server| ocsp(&node.url("/ocsp"), &issuing, &cert, &root);
    for node in [&a, &b] {
        assert!(ask(node).contains("cert.pem: good"), "both nodes answer good first");
    }
    let serial = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_string();
    run(&env, &db, &["revoke", &serial, "--reason", "key-compromise"]);
    let revoked_at = Instant::now();
    for node in [&a, &b] {
        wait_for_ocsp(&node.url("/ocsp"), &issuing, &cert, &root, "revoked", Duration::from_secs(3));
    }
    let seen_by_both = revoked_at.elapsed();
    assert!(seen_by_both < Duration::from_millis(1500), "both nodes answered revoked after {seen_by_both:?}");
    // And node B's CRL lists it, within a second of the revoke too.
    let wanted = serial.replace(':', "").to_uppercase();
    let mut text = String::new();
    while revoked_at.elapsed() < Duration::from_secs(3) {
        let (status, _, crl) = http(&b.addr, "GET", "/crl/issuing-1.crl", None, b"");
        assert_eq!(status, 200);
        std::fs::write(env.path("b.crl"), crl).expect("write");
        text =
            sh("openssl", &["crl", "-inform", "DER", "-in", env.path("b.crl").to_str().expect("p"), "-noout", "-text"]);
        if text.to_uppercase().contains(&wanted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1500),
        "node B's CRL listed it after {:?}",
        revoked_at.elapsed()
    );
    assert!(text.to_uppercase().contains(&wanted), "{text}");
}

/// Two API nodes on one PostgreSQL database: a token revoked through one
/// node's API, and an operator revoked from the CLI, are refused by the other
/// node within a second; an expired token likewise.
#[test]
fn tokens_and_operators_revoked_on_one_node_are_refused_on_every_node() {
    let Some(db) = fresh_database("api_two_nodes") else { return };
    let env = env_on(&db);
    run(&env, &db, &["tenant", "add", "acme-corp"]);
    let token = |args: &[&str]| {
        let made = env.json(&[&["--database", db.as_str(), "token", "create"][..], args].concat());
        made["token"].as_str().expect("token").to_string()
    };
    let admin = token(&["--role", "admin"]);
    let tenant = token(&["--role", "tenant", "--tenant", "acme-corp"]);
    let short = token(&["--role", "auditor", "--ttl", "10s"]);
    let short_made = Instant::now();
    let alice = env.path("alice");
    run(&env, &db, &["operator", "add", "alice", "--role", "auditor", "--out", alice.to_str().expect("p")]);
    let a = common::TlsServer::start(&env, &["--database", &db]);
    let b = common::TlsServer::start(&env, &["--database", &db]);
    let (cert, key) = (alice.join("cert.pem"), alice.join("key.pem"));
    let alice_args = ["--cert", cert.to_str().expect("p"), "--key", key.to_str().expect("p")];
    for node in [&a, &b] {
        assert_eq!(node.api("GET", "/api/v1/tenants/acme-corp", Some(&tenant), None).0, 200);
        assert_eq!(node.api("GET", "/api/v1/keys", Some(&short), None).0, 200);
        assert_eq!(node.curl("GET", "/api/v1/keys", None, None, &alice_args).0, 200);
    }
    let id = tenant.split_once('.').expect("id").0;
    let (status, body) = a.api("DELETE", &format!("/api/v1/tokens/{id}"), Some(&admin), None);
    assert_eq!(status, 204, "{body}");
    run(&env, &db, &["operator", "revoke", "alice"]);
    let revoked = Instant::now();
    // Each node reuses what it read of a token for at most custos_ca::FRESH_FOR:
    // poll (bounded) until both refuse, and that within a second.
    for node in [&b, &a] {
        while node.api("GET", "/api/v1/tenants/acme-corp", Some(&tenant), None).0 != 401 {
            assert!(revoked.elapsed() < Duration::from_secs(1), "the token still works after {:?}", revoked.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(node.curl("GET", "/api/v1/keys", None, None, &alice_args).0, 401);
    }
    assert!(revoked.elapsed() < Duration::from_secs(1), "refused on both within {:?}", revoked.elapsed());
    std::thread::sleep(Duration::from_millis(10_500).saturating_sub(short_made.elapsed()));
    for node in [&a, &b] {
        assert_eq!(node.api("GET", "/api/v1/keys", Some(&short), None).0, 401, "expired");
        assert_eq!(node.api("GET", "/api/v1/keys", Some(&admin), None).0, 200);
    }
}

#[test]
fn two_nodes_issuing_revoking_and_signing_at_once_stay_sound() {
    let Some(db) = fresh_database("concurrent") else { return };
    let env = env_on(&db);
    run(&env, &db, &["tenant", "add", "acme-corp"]);
    for c in ["a", "b"] {
        run(&env, &db, &["connection", "add", "acme-corp", c]);
        let lines: String =
            (0..150).map(|_| format!("{{\"tenant\":\"acme-corp\",\"connection\":\"{c}\"}}\n")).collect();
        std::fs::write(env.path(&format!("{c}.jsonl")), lines).expect("write");
    }
    // Two "nodes" (processes) issue and sign CRLs at the same time.
    let work = |c: &str| {
        let (env, db) = (&env, &db);
        let c = c.to_string();
        move || {
            let out = env.path(&format!("{c}.out"));
            let from = env.path(&format!("{c}.jsonl"));
            run(env, db, &["issue", "--from", from.to_str().expect("p"), "--out", out.to_str().expect("p")]);
            let mut numbers = Vec::new();
            for _ in 0..5 {
                let crl = serde_json::from_str::<serde_json::Value>(&run(
                    env,
                    db,
                    &["--json", "crl", "--out", env.path(&format!("{c}.crl")).to_str().expect("p")],
                ))
                .expect("json");
                numbers.push(crl["number"].as_i64().expect("number"));
            }
            let serials: Vec<String> = std::fs::read_to_string(out)
                .expect("out")
                .lines()
                .take(40)
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["serial"]
                        .as_str()
                        .expect("s")
                        .to_string()
                })
                .collect();
            for s in serials {
                run(env, db, &["revoke", &s, "--reason", "superseded"]);
            }
            numbers
        }
    };
    let (na, nb) = std::thread::scope(|s| {
        let a = s.spawn(work("a"));
        let b = s.spawn(work("b"));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let mut all: Vec<i64> = na.iter().chain(nb.iter()).copied().collect();
    assert!(na.windows(2).all(|w| w[0] < w[1]) && nb.windows(2).all(|w| w[0] < w[1]), "each node sees numbers rise");
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(all.len(), before, "no CRL number was handed out twice: {all:?}");
    let q = |sql: &str| sh("psql", &[&db, "-Atc", sql]).trim().to_string();
    assert_eq!(q("SELECT count(*) FROM certificates WHERE tenant = 'acme-corp'"), "300");
    assert_eq!(q("SELECT count(DISTINCT serial) FROM certificates"), "300");
    assert_eq!(q("SELECT count(*) FROM certificates WHERE status = 'revoked'"), "80");
    assert_eq!(q("SELECT count(*) FROM revocations"), "80");
    // The audit log's indexes are gap-free and it verifies, tree and all.
    assert_eq!(q("SELECT max(idx) + 1 = count(*) FROM audit_log"), "t");
    let said = run(&env, &db, &["audit", "verify", "--state"]);
    assert!(said.contains("audit log verified"), "{said}");
}

#[test]
fn a_serving_node_with_the_least_privilege_role_serves_but_cannot_issue_or_rewrite() {
    let Some(db) = fresh_database("roles") else { return };
    let env = env_on(&db);
    let roles = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres-roles.sql");
    sh("psql", &[&db, "-q", "-v", "ON_ERROR_STOP=1", "-f", roles]);
    let as_role = |role: &str| db.replacen("://custos@", &format!("://{role}@"), 1);
    let (issuer, serving) = (as_role("custos_issuer"), as_role("custos_serve"));
    let (root, issuing, cert) = issue_one(&env, &issuer);

    let node = serve(&env, &serving);
    let ask = || ocsp(&node.url("/ocsp"), &issuing, &cert, &root);
    assert!(ask().contains("cert.pem: good"));
    let (status, _, _) = http(&node.addr, "GET", "/crl/issuing-1.crl", None, b"");
    assert_eq!(status, 200, "the serving role signs CRLs (advances CRL numbers)");
    let serial = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"]);
    run(&env, &issuer, &["revoke", serial.trim().trim_start_matches("serial="), "--reason", "key-compromise"]);
    wait_for_ocsp(&node.url("/ocsp"), &issuing, &cert, &root, "revoked", Duration::from_secs(3));

    // The serving role cannot issue, nor touch the audit log's history.
    let said = env.fails(&[
        "--database",
        &serving,
        "issue",
        "acme-corp",
        "mail-sync",
        "--out",
        env.path("x").to_str().expect("p"),
    ]);
    assert!(said.contains("permission denied"), "{said}");
    for (role, sql) in [
        (&serving, "UPDATE audit_log SET actor = 'someone-else'"),
        (&serving, "INSERT INTO certificates (serial) VALUES ('00')"),
        (&issuer, "DELETE FROM audit_log"),
        (&issuer, "UPDATE audit_log SET actor = 'someone-else'"),
    ] {
        let out = std::process::Command::new("psql").args([role.as_str(), "-qc", sql]).output().expect("psql");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("permission denied"), "{sql}: {err}");
    }
    let said = run(&env, &issuer, &["audit", "verify"]);
    assert!(said.contains("audit log verified"), "{said}");
}

/// PostgreSQL is backed up with its own tools: a `pg_dump` of a working
/// custos restored with `psql` into a new database is the same custos — its
/// audit log verifies, its certificates are there, and it keeps working.
/// `custos backup` refuses and says so.
#[test]
fn a_pg_dump_round_trip_restores_a_working_custos() {
    let Some(db) = fresh_database("dumped") else { return };
    let env = env_on(&db);
    let (_, _, cert) = issue_one(&env, &db);
    let serial = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_ascii_lowercase();
    run(&env, &db, &["revoke", &serial, "--reason", "superseded"]);
    let said = env.fails(&["--database", &db, "backup", env.path("x.db").to_str().expect("p")]);
    assert!(said.contains("pg_dump"), "{said}");

    let dump = env.path("custos.sql");
    sh("pg_dump", &["--no-owner", "--no-privileges", "--file", dump.to_str().expect("p"), &db]);
    let Some(copy) = fresh_database("restored") else { return };
    sh("psql", &[&copy, "-q", "-v", "ON_ERROR_STOP=1", "-f", dump.to_str().expect("p")]);

    let verified = run(&env, &copy, &["audit", "verify"]);
    assert!(verified.contains("audit log verified"), "{verified}");
    let original = run(&env, &db, &["list", "--json"]);
    assert_eq!(run(&env, &copy, &["list", "--json"]), original, "the same certificates, statuses and all");
    run(&env, &copy, &["issue", "acme-corp", "mail-sync", "--out", env.path("after").to_str().expect("p")]);
    run(&env, &copy, &["audit", "verify", "--state"]);
    run(&env, &copy, &["doctor"]);
}

/// `audit verify --state` on PostgreSQL: a revocation undone with psql (not
/// our code) passes the plain log check and is named by the replay.
#[test]
fn a_revocation_undone_with_psql_is_caught_by_the_state_check() {
    let Some(db) = fresh_database("tampered") else { return };
    let env = env_on(&db);
    let (_, _, cert) = issue_one(&env, &db);
    let serial = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_ascii_lowercase();
    run(&env, &db, &["revoke", &serial, "--reason", "key-compromise"]);
    run(&env, &db, &["audit", "verify", "--state"]);
    sh(
        "psql",
        &[
            &db,
            "-qc",
            &format!(
                "UPDATE certificates SET status = 'valid', revoked_at = NULL, revocation_reason = NULL WHERE serial = '{serial}'"
            ),
        ],
    );
    run(&env, &db, &["audit", "verify"]);
    let said = env.fails(&["--database", &db, "audit", "verify", "--state"]);
    let out = env.run(&["--database", &db, "audit", "verify", "--state"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("disagrees with its audit log"), "{said}");
    assert!(printed.contains(&format!("cert:{serial}: valid in the database, revoked in the log")), "{printed}");
}
