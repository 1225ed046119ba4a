//! Files that hold secrets, from the security review (issue 14): created new,
//! owner-only, never through a planted symlink or an existing file; outputs
//! prepared before the certificate they hold exists; a closed pipe is no panic;
//! data directories custos would have to repair are refused; public-suffix
//! wildcards are refused.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Stdio;

use common::Env;

/// `issue acme-corp other --csr CSR --out OUT` as arguments.
fn issue_by_csr(env: &Env, csr: &str, out: &str) -> Vec<String> {
    let out = env.path(out).display().to_string();
    ["issue", "acme-corp", "other", "--csr", csr, "--out", &out].map(String::from).to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn replacement_keys_never_go_through_a_planted_link_or_file() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let leaf = env.path("leaf");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", leaf.to_str().expect("p")]);
    let declared = env.json(&["incident", "declare", "--compromised", "tenant:acme-corp"]);
    let id = declared["id"].as_str().expect("id").to_string();

    // A symlink planted where the keys would go: refused, its target untouched.
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "unchanged").expect("victim");
    let planted = env.path("planted.jsonl");
    symlink(&victim, &planted).expect("symlink");
    let said = env.fails(&["incident", "execute", &id, "--yes", "--keys-out", planted.to_str().expect("p")]);
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "unchanged");

    // A world-readable file planted there: refused, not reused.
    let open = env.path("open.jsonl");
    std::fs::write(&open, "").expect("file");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let said = env.fails(&["incident", "execute", &id, "--yes", "--keys-out", open.to_str().expect("p")]);
    assert!(said.contains("has mode 666"), "{said}");
    assert_eq!(std::fs::read(&open).expect("file").len(), 0, "no key was written to it");

    // By default the keys go beside the database, owner-only.
    env.ok(&["incident", "execute", &id, "--yes"]);
    let keys = env.data_dir().join(format!("{id}-replacements.jsonl"));
    assert_eq!(mode(&keys), 0o600);
    assert!(std::fs::read_to_string(&keys).expect("keys").contains("PRIVATE KEY"));
}

#[test]
fn bulk_results_are_owner_only_and_never_an_existing_file() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let requests = env.path("requests.jsonl");
    std::fs::write(&requests, "{\"tenant\": \"acme-corp\", \"connection\": \"mail-sync\"}\n").expect("requests");
    let results = env.path("results.jsonl");
    env.ok(&["issue", "--from", requests.to_str().expect("p"), "--out", results.to_str().expect("p")]);
    assert_eq!(mode(&results), 0o600, "the results hold private keys");
    let dangling = env.path("dangling.jsonl");
    symlink(env.path("nowhere"), &dangling).expect("symlink");
    env.fails(&["issue", "--from", requests.to_str().expect("p"), "--out", dangling.to_str().expect("p")]);
    assert!(!env.path("nowhere").exists(), "the link was not followed");
}

#[test]
fn issue_prepares_its_files_first_and_survives_a_closed_pipe() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let before = env.serials().len();
    // key.pem already there as a dangling symlink: refused before anything is issued.
    let out = env.path("out");
    std::fs::create_dir(&out).expect("dir");
    symlink(env.path("elsewhere.pem"), out.join("key.pem")).expect("symlink");
    let said = env.fails(&["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    assert!(said.contains("key.pem exists"), "{said}");
    assert_eq!(env.serials().len(), before, "nothing was issued");
    assert!(!env.path("elsewhere.pem").exists());
    assert!(!out.join("cert.pem").exists(), "the files made before the refusal are gone again");

    // A failing issue (unknown connection) leaves no directory behind.
    let nowhere = env.path("nothing-here");
    env.fails(&["issue", "acme-corp", "no-such-connection", "--out", nowhere.to_str().expect("p")]);
    assert!(!nowhere.exists(), "no empty directory left behind");

    // `| head -1`: the first line is the one-time password, and custos does not panic.
    let piped = env.path("piped");
    let mut child = env
        .command()
        .args(["issue", "acme-corp", "mail-sync", "--out", piped.to_str().expect("p")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 40];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("first bytes");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&first).starts_with("PKCS#12 password"), "{:?}", String::from_utf8_lossy(&first));
    assert_eq!(mode(&piped.join("key.pem")), 0o600);
    assert_eq!(mode(&piped), 0o700, "a directory made for a key is owner-only");
}

#[test]
fn crl_out_replaces_a_link_instead_of_following_it() {
    let env = Env::initialized();
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "unchanged").expect("victim");
    let crl = env.path("issuing.crl");
    symlink(&victim, &crl).expect("symlink");
    env.ok(&["crl", "--out", crl.to_str().expect("p")]);
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "unchanged");
    let meta = std::fs::symlink_metadata(&crl).expect("crl");
    assert!(meta.file_type().is_file(), "the link was replaced by the CRL");
    // Written again in place: the usual cron job.
    env.ok(&["crl", "--out", crl.to_str().expect("p")]);
}

#[test]
fn init_refuses_directories_it_would_have_to_repair_and_keeps_its_files_private() {
    for m in [0o777, 0o1777, 0o755] {
        let env = Env::new();
        std::fs::create_dir(env.data_dir()).expect("dir");
        std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(m)).expect("chmod");
        let said = env.fails(&["init"]);
        assert!(said.contains("has mode") && said.contains("0700"), "{m:o}: {said}");
        assert_eq!(std::fs::metadata(env.data_dir()).expect("dir").permissions().mode() & 0o7777, m, "not chmodded");
        assert!(!env.data_dir().join("custos.db").exists());
    }
    let env = Env::initialized();
    if env.database.is_some() {
        return; // The database files below are SQLite's.
    }
    assert_eq!(mode(&env.data_dir()), 0o700);
    for f in ["custos.db", "custos.db-wal", "custos.db-shm"] {
        let p = env.data_dir().join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert_eq!(mode(&env.data_dir().join("custos.db")), 0o600);
}

#[test]
fn public_suffix_wildcards_are_refused() {
    let env = Env::initialized();
    for pattern in ["*.com", "*.co.uk", "*.github.io"] {
        let said = env.fails(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", pattern]);
        assert!(said.contains("public suffix"), "{pattern}: {said}");
    }
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "*.acme.example"]);
}

#[test]
fn weak_passphrases_are_refused_at_init() {
    for weak in ["x", "   ", "short-pw", "aaaaaaaaaaaaaaaa", "            "] {
        let env = Env::new();
        let out = env.command().env("CUSTOS_PASSPHRASE", weak).arg("init").output().expect("init");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{weak:?}: {said}");
        assert!(said.contains("passphrase refused"), "{weak:?}: {said}");
        assert!(!env.data_dir().join("custos.db").exists(), "nothing created for {weak:?}");
    }
    let env = Env::new();
    let out = env
        .command()
        .env("CUSTOS_PASSPHRASE", "lab")
        .args(["init", "--danger-weak-passphrase"])
        .output()
        .expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn keys_revoked_for_compromise_are_never_certified_again() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    env.ok(&["connection", "add", "acme-corp", "other"]);
    let csr = env.p256_csr("stolen");
    let csr = csr.to_str().expect("p");
    let first =
        env.json(&["issue", "acme-corp", "mail-sync", "--csr", csr, "--out", env.path("a").to_str().expect("p")]);
    let serial = first["serial"].as_str().expect("serial").to_string();
    env.ok(&["revoke", &serial, "--reason", "key-compromise"]);
    for connection in ["mail-sync", "other"] {
        let out = env.path(&format!("again-{connection}"));
        let said = env.fails(&["issue", "acme-corp", connection, "--csr", csr, "--out", out.to_str().expect("p")]);
        assert!(said.contains("is blocked") && said.contains(&format!("cert:{serial}")), "{connection}: {said}");
    }
    // Another reason blocks nothing; a key blocked by hand is refused too; both are listed and audited.
    let csr2 = env.p256_csr("superseded");
    let csr2 = csr2.to_str().expect("p");
    let second = env.json(&strs(&issue_by_csr(&env, csr2, "b")));
    env.ok(&["revoke", second["serial"].as_str().expect("serial"), "--reason", "superseded"]);
    env.ok(&strs(&issue_by_csr(&env, csr2, "c")));
    let shown = env.json(&["show", second["serial"].as_str().expect("serial")]);
    let spki = shown["spki_sha256"].as_str().expect("spki").to_string();
    env.ok(&["keys", "block", &spki, "--reason", "found on a paste site"]);
    let said = env.fails(&strs(&issue_by_csr(&env, csr2, "d")));
    assert!(said.contains("found on a paste site"), "{said}");
    let blocked = env.json(&["keys", "blocked"]);
    assert_eq!(blocked.as_array().expect("list").len(), 2);
    let entry = env.json(&["audit", "tail", "-n", "1", "--action", "key.block"]);
    assert_eq!(entry["object"], format!("spki:{spki}").as_str());
    assert!(env.fails(&["keys", "block", "not-hex"]).contains("64 hex digits"));
}

#[test]
fn a_destroyed_key_leaves_no_sealed_blob_in_the_database_or_its_wal() {
    let env = Env::initialized();
    if env.database.is_some() {
        return; // SQLite's files.
    }
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path("leaf").to_str().expect("p")]);
    let db = env.data_dir().join("custos.db");
    let blob = common::sh(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             print(c.execute(\"SELECT hex(reference) FROM keys WHERE label='issuing-1'\").fetchone()[0])",
            db.to_str().expect("p"),
        ],
    );
    let blob = hex::decode(blob.trim()).expect("hex blob");
    assert!(blob.len() > 32, "a sealed key");
    let contains = |path: &std::path::Path| {
        std::fs::read(path).map(|bytes| bytes.windows(blob.len()).any(|w| w == blob.as_slice())).unwrap_or(false)
    };
    let wal = env.data_dir().join("custos.db-wal");
    assert!(contains(&db) || contains(&wal), "the blob is there before");
    let declared =
        env.json(&["incident", "declare", "--compromised", "issuer:issuing-1", "--reason", "key-compromise"]);
    env.ok(&["incident", "execute", declared["id"].as_str().expect("id"), "--yes"]);
    let keys = env.json(&["keys", "list"]);
    let old = keys.as_array().expect("keys").iter().find(|k| k["label"] == "issuing-1").expect("old key");
    assert_eq!(old["status"], "destroyed");
    assert!(!contains(&db), "the destroyed key's sealed blob is still in custos.db");
    assert!(!contains(&wal), "the destroyed key's sealed blob is still in custos.db-wal");
}

#[test]
fn the_passphrase_changes_in_one_step_and_the_old_one_stops_working() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let new = env.path("new-pass");
    std::fs::write(&new, "a different long passphrase\n").expect("write");
    // A weak new passphrase is refused and changes nothing.
    let weak = env.path("weak-pass");
    std::fs::write(&weak, "short\n").expect("write");
    assert!(
        env.fails(&["keys", "change-passphrase", "--new-passphrase-file", weak.to_str().expect("p")])
            .contains("passphrase refused")
    );
    env.ok(&["crl", "--out", env.path("before.crl").to_str().expect("p")]);
    let said = env.ok(&["keys", "change-passphrase", "--new-passphrase-file", new.to_str().expect("p")]);
    assert!(said.contains("sealed 4 keys"), "root, issuing, log and operators' CA keys: {said}");
    // The old passphrase no longer unseals; the new one signs with the same keys.
    assert!(env.fails(&["crl"]).contains("wrong passphrase"));
    let out = env
        .command()
        .args(["--passphrase-file", new.to_str().expect("p"), "issue", "acme-corp", "mail-sync", "--out"])
        .arg(env.path("leaf"))
        .output()
        .expect("issue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entry = env.json(&["audit", "tail", "-n", "1", "--action", "keystore.reseal"]);
    assert_eq!(entry["action"], "keystore.reseal");
    let out = env
        .command()
        .args(["--passphrase-file", new.to_str().expect("p"), "audit", "verify"])
        .output()
        .expect("verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
