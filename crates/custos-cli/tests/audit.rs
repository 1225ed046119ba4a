//! The Merkle audit log end to end: what the CLI logs, checkpoints, proofs,
//! tiles over HTTP, and verification failing at the first bad index for each
//! kind of tampering done directly in the SQLite file (with Python's sqlite3).

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, http, sh};
use custos_audit::merkle::{self, Hash};
use custos_audit::{Checkpoint, VerifierKey};

/// A custos with a few of every kind of entry and at least two checkpoints.
fn populated() -> Env {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    for i in 0..3 {
        let out = env.path(&format!("leaf{i}"));
        env.ok(&["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    }
    let serial = env.serials()[0].clone();
    env.ok(&["revoke", &serial, "--reason", "key-compromise"]);
    env.ok(&["crl", "--out", env.path("c.crl").to_str().expect("p")]);
    env
}

/// Runs SQL against the database file with Python's sqlite3 (not our code).
fn sql(env: &Env, script: &str) {
    let db = env.data_dir().join("custos.db");
    sh(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit(); c.close()",
            db.to_str().expect("p"),
            script,
        ],
    );
}

/// A copy of `env`'s data directory to tamper with.
fn copy(env: &Env) -> Env {
    let twin = Env::new();
    sh("cp", &["-a", env.data_dir().to_str().expect("p"), twin.data_dir().to_str().expect("p")]);
    twin
}

/// `audit verify` must fail and name `index` as the first bad one.
fn fails_at(env: &Env, args: &[&str], index: u64) -> String {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let said = env.fails(&all);
    assert!(said.contains(&format!("fails verification at index {index}:")), "expected index {index}: {said}");
    said
}

fn size(env: &Env) -> u64 {
    env.json(&["audit", "checkpoint"])["size"].as_u64().expect("size")
}

#[test]
fn every_use_of_a_key_is_logged_and_the_log_verifies() {
    let env = populated();
    let said = env.ok(&["audit", "verify"]);
    assert!(said.contains("audit log verified"), "{said}");

    let entries: Vec<serde_json::Value> = env
        .ok(&["audit", "tail", "-n", "1000", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().expect("action")).collect();
    for wanted in [
        "key.generate",
        "issuer.create",
        "tenant.add",
        "connection.add",
        "certificate.issue",
        "certificate.revoke",
        "crl.sign",
    ] {
        assert!(actions.contains(&wanted), "{wanted} missing from {actions:?}");
    }
    assert_eq!(
        actions.iter().filter(|a| **a == "key.generate").count(),
        4,
        "root, issuing, log and operators' CA keys"
    );
    assert!(entries.windows(2).all(|w| w[1]["index"].as_u64() == w[0]["index"].as_u64().map(|i| i + 1)));

    // Filters: every signature by the issuing CA key, and that key's usage.
    let issuing_key = entries.iter().find(|e| e["action"] == "certificate.issue").expect("issue")["key"]
        .as_str()
        .expect("key")
        .to_string();
    let signs: Vec<serde_json::Value> = env
        .ok(&["audit", "tail", "-n", "100", "--action", "sign", "--key", &issuing_key, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(signs.len(), 3 + 1, "three certificates and one CRL: {signs:?}");
    let usage = env.json(&["audit", "usage", &issuing_key]);
    assert_eq!(usage["total"], 1 + 3 + 1, "its generation, three certificates, one CRL");
    assert!(env.fails(&["audit", "usage", "nope"]).contains("no key"));

    // An inclusion proof, checked here against the checkpoint signed by the pinned key.
    let vkey = VerifierKey::parse(env.ok(&["audit", "key"]).trim()).expect("verifier key");
    let proof = env.json(&["audit", "proof", "5"]);
    let cp = Checkpoint::open(proof["checkpoint"].as_str().expect("note"), &vkey).expect("checkpoint opens");
    let hex32 =
        |v: &serde_json::Value| -> Hash { hex::decode(v.as_str().expect("hex")).expect("hex").try_into().expect("32") };
    let path: Vec<Hash> = proof["path"].as_array().expect("path").iter().map(hex32).collect();
    merkle::verify_inclusion(&hex32(&proof["leaf_hash"]), 5, cp.size, &path, &cp.root).expect("proof verifies");
    assert!(env.fails(&["audit", "proof", "100000"]).contains("not covered"));
}

#[test]
fn tampering_in_the_database_is_caught_at_the_first_bad_index() {
    let env = populated();
    let cp_path = env.path("cp.txt");
    std::fs::write(&cp_path, env.ok(&["audit", "checkpoint"])).expect("save checkpoint");
    let n = size(&env);
    assert!(n >= 12, "{n}");
    env.ok(&["audit", "verify", "--since-checkpoint", cp_path.to_str().expect("p")]);

    // One entry changed.
    let t = copy(&env);
    sql(&t, "UPDATE audit_log SET details = '{\"tenant\":\"evil\"}' WHERE idx = 7");
    fails_at(&t, &[], 7);

    // One entry deleted.
    let t = copy(&env);
    sql(&t, "DELETE FROM audit_log WHERE idx = 9");
    fails_at(&t, &[], 9);

    // The newest entries deleted (truncation), checkpoints left in place.
    let t = copy(&env);
    sql(&t, &format!("DELETE FROM audit_log WHERE idx >= {}", n - 3));
    assert!(fails_at(&t, &[], n - 3).contains("truncated"));

    // Truncation that also removes the checkpoints: the saved one still catches it.
    let t = copy(&env);
    sql(
        &t,
        &format!("DELETE FROM audit_log WHERE idx >= {}; DELETE FROM audit_checkpoints WHERE size > {}", n - 3, n - 3),
    );
    fails_at(&t, &["--since-checkpoint", cp_path.to_str().expect("p")], n - 3);
    // ...and so does the checkpoint custos kept outside the database, with no checkpoint saved by hand.
    let said = t.fails(&["audit", "verify"]);
    assert!(said.contains("fails verification at index"), "{said}");
    let kept = std::fs::read_to_string(t.data_dir().join("checkpoints.jsonl")).expect("checkpoint file");
    assert!(kept.lines().count() >= 2, "every signed checkpoint is appended: {kept}");

    // Two entries reordered.
    let t = copy(&env);
    sql(
        &t,
        "UPDATE audit_log SET idx = -1 WHERE idx = 4; UPDATE audit_log SET idx = 4 WHERE idx = 6; UPDATE audit_log SET idx = 6 WHERE idx = -1",
    );
    fails_at(&t, &[], 4);

    // Two checkpoints' signatures swapped.
    let t = copy(&env);
    let db = t.data_dir().join("custos.db");
    let first_swapped = sh(
        "python3",
        &[
            "-c",
            r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
(s1, n1), (s2, n2) = c.execute("SELECT size, note FROM audit_checkpoints ORDER BY size LIMIT 2").fetchall()
b1, g1 = n1.rsplit("\n\n", 1)
b2, g2 = n2.rsplit("\n\n", 1)
c.execute("UPDATE audit_checkpoints SET note = ? WHERE size = ?", (b1 + "\n\n" + g2, s1))
c.execute("UPDATE audit_checkpoints SET note = ? WHERE size = ?", (b2 + "\n\n" + g1, s2))
c.commit()
print(s1)
"#,
            db.to_str().expect("p"),
        ],
    );
    // The first swapped checkpoint is named, by the tree size it signs.
    let said = t.fails(&["audit", "verify"]);
    let index = format!("fails verification at index {}:", first_swapped.trim());
    assert!(said.contains("does not verify") && said.contains(&index), "{index} in {said}");

    // A different key pinned: nothing verifies.
    let other = Env::initialized();
    let other_key = other.ok(&["audit", "key"]);
    let said = env.fails(&["audit", "verify", "--key", other_key.trim()]);
    assert!(said.contains("no signature by key") || said.contains("does not verify"), "{said}");

    // And the untouched log still verifies.
    env.ok(&["audit", "verify", "--since-checkpoint", cp_path.to_str().expect("p")]);
}

#[test]
fn a_relying_party_verifies_a_remote_log_from_tiles_alone() {
    let env = populated();
    let cp_path = env.path("cp.txt");
    std::fs::write(&cp_path, env.ok(&["audit", "checkpoint"])).expect("save");
    let before = size(&env);
    let vkey = env.ok(&["audit", "key"]).trim().to_string();
    let server = Server::start(&env);

    // A revoke through the CLI (which does not sign checkpoints) is covered by the server within a second or two.
    let serial = env.serials()[1].clone();
    env.ok(&["revoke", &serial, "--reason", "superseded"]);
    let started = Instant::now();
    let note = loop {
        let (status, head, body) = http(&server.addr, "GET", "/audit/checkpoint", None, b"");
        assert_eq!(status, 200);
        assert!(head.to_ascii_lowercase().contains("cache-control: no-cache"), "{head}");
        let note = String::from_utf8(body).expect("utf8");
        let cp = Checkpoint::open(&note, &VerifierKey::parse(&vkey).expect("key")).expect("opens");
        if cp.size > before {
            break note;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no new checkpoint after 5 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(started.elapsed() < Duration::from_secs(3), "checkpoint took {:?}", started.elapsed());

    // Verify over HTTP from an empty directory: no database, only tiles and the pinned key.
    let stranger = Env::new();
    let url = format!("http://{}", server.addr);
    let said = stranger.ok(&[
        "audit",
        "verify",
        "--url",
        &url,
        "--key",
        &vkey,
        "--since-checkpoint",
        cp_path.to_str().expect("p"),
    ]);
    assert!(said.contains("audit log verified"), "{said}");
    assert!(stranger.fails(&["audit", "verify", "--url", &url]).contains("--key"));

    // Tiles: a level-0 hash tile holds 32-byte hashes, bad paths are refused.
    let size = Checkpoint::parse(note.split("\n\n").next().map(|b| format!("{b}\n")).as_deref().expect("body"))
        .expect("cp")
        .size;
    let (status, head, body) = http(&server.addr, "GET", &format!("/audit/tile/0/000.p/{}", size.min(255)), None, b"");
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, 32 * size.min(255));
    assert!(head.contains("immutable"), "{head}");
    for bad in ["/audit/tile/0/5", "/audit/tile/0/x999/000", "/audit/tile/9/000", "/audit/tile/entries/000.p/0"] {
        let (status, head, _) = http(&server.addr, "GET", bad, None, b"");
        assert_eq!(status, 404, "{bad}");
        assert!(head.contains("application/problem+json"), "{head}");
    }

    // Entry bundles are public: they show what was done with which key, and
    // commit to who did it to what without saying (names, SANs, actors).
    let (status, _, bundle) =
        http(&server.addr, "GET", &format!("/audit/tile/entries/000.p/{}", size.min(255)), None, b"");
    assert_eq!(status, 200);
    let entries = custos_audit::entry::split_bundle(&bundle).expect("bundle");
    assert_eq!(entries.len() as u64, size.min(255));
    let text = String::from_utf8_lossy(&bundle);
    for hidden in ["acme-corp", "mail-sync", "local:uid", "\"details\"", "\"actor\""] {
        assert!(!text.contains(hidden), "{hidden} is public in {text}");
    }
    assert!(text.contains("\"action\":\"certificate.issue\"") && text.contains("\"commitment\":"), "{text}");
    // The database side still holds everything, for authenticated readers.
    assert!(env.ok(&["audit", "tail", "-n", "1000"]).contains("acme-corp"));

    // Tampering behind the server's back is caught by the remote verifier.
    sql(&env, "UPDATE audit_log SET actor = 'someone-else' WHERE idx = 2");
    let said = stranger.fails(&["audit", "verify", "--url", &url, "--key", &vkey]);
    assert!(said.contains("fails verification at index 2:"), "{said}");
}

/// Go's reference `note` and `tlog` packages (vendored in GOROOT), copied
/// into a throwaway module: they verify our signed checkpoint, authenticate
/// every hash tile against it and prove every entry. `go` comes from Debian's
/// golang-go (scripts/test installs it).
#[test]
fn go_reference_tlog_verifies_checkpoint_tiles_and_every_entry() {
    let Some(goroot) = go_root() else {
        assert!(!common::tools_required(), "go is required (install golang-go)");
        eprintln!("skipping: go not installed");
        return;
    };
    let env = populated();
    // Past one full tile of entries, so full and partial tiles are both read.
    let lines: String = (0..300).map(|_| "{\"tenant\":\"acme-corp\",\"connection\":\"mail-sync\"}\n").collect();
    let requests = env.path("bulk.jsonl");
    std::fs::write(&requests, lines).expect("write requests");
    env.ok(&["issue", "--from", requests.to_str().expect("p"), "--out", env.path("bulk.out").to_str().expect("p")]);
    let vkey = env.ok(&["audit", "key"]).trim().to_string();
    let server = Server::start(&env);

    let module = env.path("gocheck");
    let vendored = goroot.join("src/cmd/vendor/golang.org/x/mod/sumdb");
    for pkg in ["note", "tlog"] {
        std::fs::create_dir_all(module.join(pkg)).expect("mkdir");
        for f in std::fs::read_dir(vendored.join(pkg)).expect("vendored package") {
            let f = f.expect("entry").path();
            let name = f.file_name().expect("name").to_string_lossy().to_string();
            if !name.ends_with(".go") || name.ends_with("_test.go") {
                continue;
            }
            // The std library has the same ed25519 API as x/crypto's.
            let text = std::fs::read_to_string(&f)
                .expect("read")
                .replace("\"golang.org/x/crypto/ed25519\"", "\"crypto/ed25519\"");
            std::fs::write(module.join(pkg).join(name), text).expect("write");
        }
    }
    std::fs::write(module.join("go.mod"), "module custostlogcheck\n\ngo 1.19\n").expect("go.mod");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-tlog/main.go"), module.join("main.go"))
        .expect("main.go");
    let out = std::process::Command::new("go")
        .args(["run", ".", &format!("http://{}", server.addr), &vkey])
        .current_dir(&module)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOCACHE", env.path("gocache"))
        .output()
        .expect("run go");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Go's tlog refused our log: {said}");
    let checked: u64 = said.trim().strip_prefix("ok ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{said}"));
    assert!(checked >= 300 + 12, "{said}");
}

fn go_root() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("go").args(["env", "GOROOT"]).output().ok()?;
    out.status.success().then(|| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `audit verify --state`: the log replayed against the tables. Each change
/// written around custos with Python's sqlite3 (not our code) passes the
/// plain `audit verify` (the log itself is intact) and is named by `--state`
/// with the object and the log entry that says otherwise.
#[test]
fn tampering_with_the_state_is_caught_by_replaying_the_log() {
    let env = populated();
    let said = env.ok(&["audit", "verify", "--state"]);
    assert!(said.contains("the database says what the log says"), "{said}");
    // A policy changed through custos is in the log, and the replay follows it;
    // a change made on a stale read (a wrong ETag) is refused and changes nothing.
    let listed = env.json(&["connection", "list", "acme-corp"]);
    let etag = listed.as_array().expect("list").iter().find(|c| c["name"] == "mail-sync").expect("mail-sync")["etag"]
        .as_str()
        .expect("etag")
        .to_string();
    let update = |tag: &str| {
        env.run(&["connection", "update", "acme-corp", "mail-sync", "--allow-san", "*.acme.example", "--if-match", tag])
    };
    let stale = update("\"0123\"");
    let said = String::from_utf8_lossy(&stale.stderr).to_string();
    assert!(!stale.status.success() && said.contains("changed since it was read"), "{said}");
    assert!(update(&etag).status.success());
    let again = update(&etag);
    assert!(!again.status.success(), "the old ETag is stale once the policy changed");
    let said = env.ok(&["audit", "verify", "--state"]);
    assert!(said.contains("the database says what the log says"), "{said}");
    let revoked = env.json(&["list", "--status", "revoked"])[0]["serial"].as_str().expect("serial").to_string();
    let valid = env.json(&["list", "--status", "valid"])[0]["serial"].as_str().expect("serial").to_string();
    let revoke_entry = env
        .ok(&["audit", "tail", "-n", "1000", "--action", "certificate.revoke", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|e| e["details"]["serial"] == revoked.as_str())
        .expect("the revocation's entry")["index"]
        .as_u64()
        .expect("index");
    let issue_entry = env
        .ok(&["audit", "tail", "-n", "1000", "--action", "certificate.issue", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|e| e["details"]["serial"] == valid.as_str())
        .expect("the issuance's entry")["index"]
        .as_u64()
        .expect("index");
    let cases: [(&str, String, String, Option<u64>); 7] = [
        (
            "un-revoked",
            format!(
                "UPDATE certificates SET status = 'valid', revoked_at = NULL, revocation_reason = NULL WHERE serial = '{revoked}'"
            ),
            format!("cert:{revoked}: valid in the database, revoked in the log"),
            Some(revoke_entry),
        ),
        (
            "revocation removed from the feed",
            format!("DELETE FROM revocations WHERE serial = '{revoked}'"),
            format!("cert:{revoked}: revoked in the log, missing from the revocation feed"),
            Some(revoke_entry),
        ),
        (
            "certificate with no entry",
            format!(
                "CREATE TEMP TABLE t AS SELECT * FROM certificates WHERE serial = '{valid}'; \
                 UPDATE t SET serial = '7e57ed'; INSERT INTO certificates SELECT * FROM t;"
            ),
            "cert:7e57ed: in the database, but no log entry issued it".to_string(),
            None,
        ),
        (
            "policy widened",
            "UPDATE connections SET allowed_sans = '[\"*.evil.example\"]' WHERE name = 'mail-sync'".to_string(),
            "connection:acme-corp/mail-sync: its policy is".to_string(),
            None,
        ),
        (
            "revoked without an entry",
            format!(
                "UPDATE certificates SET status = 'revoked', revoked_at = 1, revocation_reason = 'superseded' WHERE serial = '{valid}'"
            ),
            format!("cert:{valid}: revoked in the database, but no log entry revoked it"),
            None,
        ),
        (
            "moved to another tenant",
            format!("UPDATE certificates SET tenant = 'globex' WHERE serial = '{valid}'"),
            format!("cert:{valid}: tenant is \"globex\" in the database, \"acme-corp\" in the log"),
            Some(issue_entry),
        ),
        (
            "expiry extended",
            format!("UPDATE certificates SET not_after = not_after + 86400 WHERE serial = '{valid}'"),
            format!("cert:{valid}: expiry "),
            Some(issue_entry),
        ),
    ];
    for (what, script, expected, index) in cases {
        let t = copy(&env);
        sql(&t, &script);
        t.ok(&["audit", "verify"]);
        let out = t.run(&["audit", "verify", "--state"]);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{what}: {said}");
        assert!(said.contains(&expected), "{what}: expected {expected:?} in {said}");
        if let Some(i) = index {
            assert!(said.contains(&format!("(entry {i})")), "{what}: names entry {i}: {said}");
        }
        let report = t.run(&["audit", "verify", "--state", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json");
        assert_eq!(v["verified"], false, "{what}");
        assert!(!v["differences"].as_array().expect("differences").is_empty(), "{what}");
    }
}
