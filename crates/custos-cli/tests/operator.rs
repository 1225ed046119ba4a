//! What an operator meets first: who the audit log says acted, the effective
//! configuration and where each value came from, the CA certificates to give
//! openssl, and where a (wrong) passphrase came from.

mod common;

use common::Env;

/// The real uid of this test process, as the kernel reports it.
fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("uid")
}

#[test]
fn the_audit_actor_is_the_os_user_not_dollar_user() {
    let env = Env::initialized();
    let out = env.command().env("USER", "alice").args(["tenant", "add", "globex"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `audit tail --json` prints one JSON object per entry.
    let entry = env.json(&["audit", "tail", "-n", "1"]);
    assert_eq!(entry["action"], "tenant.add");
    let actor = entry["actor"].as_str().expect("actor").to_string();
    assert!(actor.starts_with(&format!("local:uid={}", uid())), "{actor}");
    assert!(!actor.contains("alice"), "$USER must not name the actor: {actor}");
    // Without $USER at all, the same.
    let out = env.command().env_remove("USER").args(["tenant", "add", "initech"]).output().expect("run");
    assert!(out.status.success());
    let entry = env.json(&["audit", "tail", "-n", "1"]);
    assert_eq!(entry["actor"], actor.as_str());
}

#[test]
fn config_show_says_where_each_value_came_from() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).expect("data dir");
    std::fs::write(env.data_dir().join("custos.toml"), "[ocsp]\npresign = 10\n[serve]\nlisten = \"127.0.0.1:9000\"\n")
        .expect("write config");
    let shown = {
        let out = env
            .command()
            .env("CUSTOS_LISTEN", "127.0.0.1:9100")
            .env("CUSTOS_DATABASE", "postgres://custos:hunter2@db.example/custos")
            .args(["config", "show", "--json"])
            .output()
            .expect("config show");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert!(!text.contains("hunter2"), "secrets are redacted: {text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("json")
    };
    let setting = |key: &str| {
        shown["settings"].as_array().expect("settings").iter().find(|s| s["key"] == key).cloned().expect(key)
    };
    assert_eq!(setting("ocsp.presign")["value"], "10");
    assert_eq!(setting("ocsp.presign")["origin"]["source"], "file");
    assert_eq!(setting("serve.listen")["value"], "127.0.0.1:9100");
    assert_eq!(setting("serve.listen")["origin"], serde_json::json!({"source": "env", "name": "CUSTOS_LISTEN"}));
    assert_eq!(setting("database")["value"], "postgres://custos:***@db.example/custos");
    assert_eq!(setting("init.organization")["origin"]["source"], "default");
    assert_eq!(setting("data_dir")["origin"], serde_json::json!({"source": "env", "name": "CUSTOS_DATA"}));

    // A flag wins over the environment; an unknown key in the file is refused, naming it.
    let out = env.command().env("CUSTOS_LISTEN", "127.0.0.1:9100").args(["config", "show"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("serve.listen") && text.contains("env CUSTOS_LISTEN"), "{text}");
    std::fs::write(env.data_dir().join("custos.toml"), "[serve]\nlisen = \"x\"\n").expect("write config");
    let said = env.fails(&["config", "show"]);
    assert!(said.contains("lisen") && said.contains("custos.toml"), "{said}");
}

#[test]
fn ca_export_gives_openssl_its_files() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let out = env.path("mail-sync");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    let root = env.path("root.pem");
    let issuing = env.path("issuing.pem");
    env.ok(&["ca", "export", "root-1", "--out", root.to_str().expect("p")]);
    env.ok(&["ca", "export", "issuing-1", "--out", issuing.to_str().expect("p")]);
    common::openssl_verify(&root, &issuing, &out.join("cert.pem"));
    // --chain: issuing CA then root, as chain.pem has them; --der: one certificate in DER.
    let chain = env.ok(&["ca", "export", "issuing-1", "--chain"]);
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(chain, std::fs::read_to_string(out.join("chain.pem")).expect("chain.pem"));
    let der = env.command().args(["ca", "export", "root-1", "--der"]).output().expect("der");
    assert_eq!(der.stdout.first(), Some(&0x30), "DER starts with a SEQUENCE");
    assert!(env.fails(&["ca", "export", "issuing-9"]).contains("unknown issuer"));
    // An existing file is not overwritten.
    assert!(env.fails(&["ca", "export", "root-1", "--out", root.to_str().expect("p")]).contains("root.pem"));
}

#[test]
fn the_passphrase_file_wins_and_a_wrong_passphrase_names_its_source() {
    let env = Env::initialized();
    let good = env.path("good-pass");
    std::fs::write(&good, format!("{}\n", env.passphrase)).expect("write");
    // The file wins over a wrong CUSTOS_PASSPHRASE, as its help says.
    let out = env
        .command()
        .env("CUSTOS_PASSPHRASE", "not the passphrase")
        .args(["--passphrase-file", good.to_str().expect("p"), "crl", "--out"])
        .arg(env.path("a.crl"))
        .output()
        .expect("crl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.command().env("CUSTOS_PASSPHRASE", "not the passphrase").arg("crl").output().expect("crl");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(said.contains("wrong passphrase") && said.contains("CUSTOS_PASSPHRASE"), "{said}");
    let bad = env.path("bad-pass");
    std::fs::write(&bad, "nope\n").expect("write");
    let said = env.fails(&["--passphrase-file", bad.to_str().expect("p"), "crl"]);
    assert!(said.contains(&format!("--passphrase-file {}", bad.display())), "{said}");
}
