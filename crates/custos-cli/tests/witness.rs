//! Witnesses of the audit log (C2SP tlog-witness), with real processes: a
//! `custos witness serve` cosigns every checkpoint a `custos serve` submits
//! while the log only grows; a copy of the log that forks, and an older copy
//! that was rolled back, are refused; `audit verify --witness` passes on the
//! witnessed log and fails on the others. The witness keeps its state across
//! a restart (kill -9 included).

mod common;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, Server};

const WITNESS_PASSPHRASE: &str = "witness passphrase for the test";

/// A running `custos witness serve`, killed (SIGKILL) on drop.
struct Witness {
    child: std::process::Child,
    url: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_witness(env: &Env, dir: &Path, listen: &str) -> Witness {
    let mut child = env
        .command()
        .env("CUSTOS_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE)
        .args(["witness", "serve", "--dir", dir.to_str().expect("p"), "--listen", listen])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the witness");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let url = line.trim().strip_prefix("custos witness listening on ").expect("witness address").to_string();
    Witness { child, url }
}

/// Waits (bounded) until `env`'s newest checkpoint covers at least `min`
/// entries and carries a cosignature by `name`; returns its size.
fn wait_witnessed(env: &Env, config: &str, name: &str, min: u64) -> u64 {
    let started = Instant::now();
    loop {
        let note = env.ok(&["--config", config, "audit", "checkpoint"]);
        let size: u64 = note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0);
        if size >= min && note.contains(&format!("\u{2014} {name} ")) {
            return size;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no cosignature by {name} at {min}+ entries on:\n{note}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies a stopped custos's data directory into another environment's.
fn copy_data(from: &Path, to: &Env) {
    std::fs::create_dir_all(to.data_dir()).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with("-shm") || entry.path().is_dir() {
            continue;
        }
        std::fs::copy(entry.path(), to.data_dir().join(name)).expect("copy");
    }
}

/// Issues `n` certificates (keys generated) from the CLI; returns the log's size after.
fn issue(env: &Env, n: usize) -> u64 {
    for _ in 0..n {
        let out = env.path(&format!(
            "issued-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("t").as_nanos()
        ));
        env.ok(&["issue", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    }
    // `audit tail --json` prints one JSON object per line.
    let tail = env.ok(&["audit", "tail", "-n", "1", "--json"]);
    let last: serde_json::Value = serde_json::from_str(tail.lines().last().expect("an entry")).expect("json");
    last["index"].as_u64().expect("index") + 1
}

fn witness_config(env: &Env, key: &str, url: &str) -> String {
    let config = env.path("witnessed.toml");
    std::fs::write(&config, format!("[audit]\nwitnesses = [{{ key = \"{key}\", url = \"{url}\" }}]\n"))
        .expect("config");
    config.to_str().expect("p").to_string()
}

#[test]
fn a_witness_cosigns_growth_and_refuses_forks_and_rollbacks() {
    let a = Env::initialized();
    a.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let log_key = a.ok(&["audit", "key"]).trim().to_string();
    let wdir = a.path("witness");
    let made = a
        .command()
        .env("CUSTOS_WITNESS_PASSPHRASE", WITNESS_PASSPHRASE)
        .args(["witness", "init", "--dir", wdir.to_str().expect("p"), "--name", "witness.test/w1", "--log", &log_key])
        .output()
        .expect("witness init");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let witness_key = String::from_utf8(made.stdout).expect("utf8").trim().to_string();
    assert!(witness_key.starts_with("witness.test/w1+"), "{witness_key}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(wdir.join("witness.json")).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the witness state (with its sealed key) is owner-only");

    let witness = start_witness(&a, &wdir, "127.0.0.1:0");
    let config = witness_config(&a, &witness_key, &witness.url);
    // Nothing witnessed yet: verify --witness fails; a log's key is not a witness's.
    let refused = a.fails(&["--config", &config, "audit", "verify", "--witness", &witness_key]);
    assert!(refused.contains("not witnessed"), "{refused}");
    let wrong = a.fails(&["audit", "verify", "--witness", &log_key]);
    assert!(wrong.contains("not a witness"), "{wrong}");
    let unwitnessed = a.run(&["audit", "match", a.path("none.jsonl").to_str().expect("p"), "--witness", &witness_key]);
    assert_ne!(unwitnessed.status.code(), Some(0), "no match against an unwitnessed log");

    // The log grows under serve; every checkpoint goes to the witness.
    let serve = Server::start_with(&a, &["--config", &config]);
    let s1 = wait_witnessed(&a, &config, "witness.test/w1", issue(&a, 3));
    drop(serve);
    let verified = a.ok(&["--config", &config, "audit", "verify", "--witness", &witness_key]);
    assert!(verified.contains("cosigned by witness.test/w1"), "{verified}");
    // `audit match --witness` matches only against a witnessed log (this sign-in is not custos's: exit 1).
    let signins = a.path("signins.jsonl");
    let line = r#"{"time":"2026-11-29T00:00:00Z","thumbprint":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","audience":"https://login.example/t/token","client_ip":"192.0.2.7"}"#;
    std::fs::write(&signins, format!("{line}\n")).expect("signins");
    let matched = a.run(&["audit", "match", signins.to_str().expect("p"), "--witness", &witness_key]);
    let said = String::from_utf8_lossy(&matched.stdout);
    assert!(
        said.contains("cosigned by witness.test/w1") && said.contains("1 sign-ins: 0 signed by custos, 1 not"),
        "{said}"
    );
    assert_eq!(matched.status.code(), Some(1), "an unmatched sign-in");
    // A snapshot of the log at s1, for the fork and the rollback below.
    let snapshot = a.path("snapshot");
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    for entry in std::fs::read_dir(a.data_dir()).expect("read").flatten() {
        if entry.path().is_file() && !entry.file_name().to_string_lossy().ends_with("-shm") {
            std::fs::copy(entry.path(), snapshot.join(entry.file_name())).expect("copy");
        }
    }

    // The witness is killed and restarted: it remembers what it cosigned.
    let addr = witness.url.trim_start_matches("http://").to_string();
    drop(witness);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wdir.join("witness.json")).expect("state")).expect("json");
    assert_eq!(state["logs"][0]["size"].as_u64(), Some(s1), "{state}");
    let witness = start_witness(&a, &wdir, &addr);

    // A grows on: cosigned.
    let serve = Server::start_with(&a, &["--config", &config]);
    let s2 = wait_witnessed(&a, &config, "witness.test/w1", issue(&a, 2));
    drop(serve);
    assert!(s2 > s1);

    // A fork: the snapshot goes its own way, past A's size. The witness
    // refuses it (its consistency proof from s2 cannot verify).
    let b = Env::new();
    copy_data(&snapshot, &b);
    let b_config = witness_config(&b, &witness_key, &witness.url);
    let b_size = issue(&b, (s2 - s1) as usize + 3);
    assert!(b_size > s2);
    // And a rollback: the snapshot carrying on with fewer entries than the witness saw.
    let c = Env::new();
    copy_data(&snapshot, &c);
    let c_config = witness_config(&c, &witness_key, &witness.url);
    let c_size = issue(&c, 1);
    assert!(c_size < s2);
    for (env, config, size) in [(&b, &b_config, b_size), (&c, &c_config, c_size)] {
        let serve = Server::start_with(env, &["--config", config]);
        // Bounded: serve signs and submits every second; give it three.
        let started = Instant::now();
        let note = loop {
            let note = env.ok(&["--config", config, "audit", "checkpoint"]);
            let at: u64 = note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0);
            if at >= size || started.elapsed() > Duration::from_secs(10) {
                break note;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        std::thread::sleep(Duration::from_millis(3000));
        drop(serve);
        assert!(
            !note.contains("\u{2014} witness.test/w1 "),
            "the witness cosigned a log it had not seen grow:\n{note}"
        );
        let said = env.fails(&["--config", config, "audit", "verify", "--witness", &witness_key]);
        assert!(said.contains("not witnessed") && said.contains("newest checkpoint"), "{said}");
    }
    // The witness still stands where A left it.
    drop(witness);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(wdir.join("witness.json")).expect("state")).expect("json");
    assert_eq!(state["logs"][0]["size"].as_u64(), Some(s2), "{state}");
}
