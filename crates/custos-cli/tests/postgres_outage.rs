//! PostgreSQL goes away and comes back under a running node: OCSP keeps
//! answering from its pre-signed set, commands fail with a clear error, and
//! the node recovers by itself. Alone in its binary because it stops the
//! shared test cluster.

mod common;

use std::time::{Duration, Instant};

use common::{Env, sh, tools_required};

fn cluster(action: &str) {
    let dir = std::env::var("CUSTOS_TEST_PG_DIR").expect("CUSTOS_TEST_PG_DIR comes with CUSTOS_TEST_POSTGRES");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-throwaway");
    let out = std::process::Command::new(script).args([action, &dir]).output().expect("pg-throwaway");
    assert!(out.status.success(), "{action}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Resumes the cluster even if the test fails half-way.
struct Paused;

impl Drop for Paused {
    fn drop(&mut self) {
        cluster("resume");
    }
}

#[test]
fn a_node_rides_out_a_database_outage_and_recovers_by_itself() {
    let Ok(base) = std::env::var("CUSTOS_TEST_POSTGRES") else {
        assert!(!tools_required(), "CUSTOS_TEST_POSTGRES is not set: run through scripts/test");
        return;
    };
    let name = format!("outage_{}", std::process::id());
    sh("psql", &[&base, "-qc", &format!("CREATE DATABASE {name}")]);
    let db = format!("{}/{name}", base.rsplit_once('/').expect("db").0);
    let env = Env::new();
    let run = |args: &[&str]| {
        let mut all = vec!["--database", db.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    for args in [&["init"][..], &["tenant", "add", "acme-corp"], &["connection", "add", "acme-corp", "mail"]] {
        assert!(run(args).status.success());
    }
    for n in ["one", "two"] {
        let out = env.path(n);
        assert!(run(&["issue", "acme-corp", "mail", "--out", out.to_str().expect("p")]).status.success());
    }
    let (root, issuing) = env.split_chain(&env.path("one").join("chain.pem"));
    let server = common::Server::start_with(&env, &["--database", &db]);
    let ask = |cert: &str| common::ocsp(&server.url("/ocsp"), &issuing, &env.path(cert).join("cert.pem"), &root);
    assert!(ask("one").contains("cert.pem: good"));

    {
        cluster("pause");
        let _resume = Paused;
        // OCSP still answers from the pre-signed set.
        let said = ask("one");
        assert!(said.contains("cert.pem: good") && said.contains("Response verify OK"), "{said}");
        // Commands fail clearly, without a panic.
        let out = run(&["tenant", "add", "beta"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("database") && !err.contains("panicked"), "{err}");
    }
    // The database is back: the node recovers by itself and sees a new revocation.
    let serial =
        sh("openssl", &["x509", "-in", env.path("two").join("cert.pem").to_str().expect("p"), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_string();
    let started = Instant::now();
    loop {
        if run(&["revoke", &serial, "--reason", "key-compromise"]).status.success() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the CLI never reached the database again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = server.url("/ocsp");
    let cert = env.path("two").join("cert.pem");
    common::wait_for_ocsp(&url, &issuing, &cert, &root, "revoked", Duration::from_secs(15));
}
