//! The database as a thing to lose, copy and bring back: a backup taken while
//! custos writes, restored and verified; the database deleted under a running
//! `serve` (health says so, OCSP keeps answering, `init` refuses to start
//! over); its write-ahead log truncated under `serve`; a damaged file named
//! as damaged. Checked with the real binary,
//! openssl's OCSP client and the files themselves.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, http, ocsp};

#[test]
fn a_backup_taken_under_write_load_restores_and_verifies() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    for i in 0..3 {
        env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path(&format!("before{i}")).to_str().expect("p")]);
    }
    let before = env.serials();
    let backup = env.path("custos.backup");
    // Writers keep issuing while the backup runs.
    let (backup_out, _) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..8 {
                env.ok(&[
                    "issue",
                    "acme-corp",
                    "mail-sync",
                    "--out",
                    env.path(&format!("during{i}")).to_str().expect("p"),
                ]);
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        let out = env.ok(&["backup", backup.to_str().expect("p")]);
        (out, writer.join().expect("writer"))
    });
    assert!(backup_out.contains("backup written"), "{backup_out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&backup).expect("backup").permissions().mode() & 0o777, 0o600);
    assert!(env.fails(&["backup", backup.to_str().expect("p")]).contains("exists"), "never overwrites");
    let after = env.serials();

    // Restore into a new, empty data directory and verify.
    let other = Env::new();
    let said = other.ok(&["restore", backup.to_str().expect("p")]);
    assert!(said.contains("audit log verified"), "{said}");
    let restored = other.serials();
    for serial in &before {
        assert!(restored.contains(serial), "{serial}, committed before the backup, is in it");
    }
    for serial in &restored {
        assert!(after.contains(serial), "{serial} in the backup was committed in the original");
    }
    other.ok(&["audit", "verify"]);
    other.ok(&["doctor"]);
    // The restored custos works: it issues and its log keeps verifying.
    other.ok(&["issue", "acme-corp", "mail-sync", "--out", other.path("after-restore").to_str().expect("p")]);
    other.ok(&["audit", "verify", "--state"]);
    // Restore never writes over a database.
    assert!(other.fails(&["restore", backup.to_str().expect("p")]).contains("exists"));
    // Nor into the directory of another custos.
    let stranger = Env::initialized();
    std::fs::remove_file(stranger.data_dir().join("custos.db")).expect("rm");
    let said = stranger.fails(&["restore", backup.to_str().expect("p")]);
    assert!(said.contains("belongs to another custos"), "{said}");
}

/// Waits (at most 5 s) for /healthz to answer 503, checks that /readyz says
/// degraded too, and returns the health answer's body.
fn unhealthy(server: &Server) -> String {
    let started = Instant::now();
    let (status, body) = loop {
        let (status, _, body) = http(&server.addr, "GET", "/healthz", None, b"");
        if status != 200 || started.elapsed() > Duration::from_secs(5) {
            break (status, String::from_utf8_lossy(&body).to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    let (status, _, ready) = http(&server.addr, "GET", "/readyz", None, b"");
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&ready).contains("degraded"), "{}", String::from_utf8_lossy(&ready));
    body
}

#[test]
fn a_database_deleted_under_serve_is_reported_and_init_refuses_to_start_over() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let leaf = env.path("leaf");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", leaf.to_str().expect("p")]);
    let (root, issuing) = env.split_chain(&leaf.join("chain.pem"));
    let backup = env.path("before.db");
    env.ok(&["backup", backup.to_str().expect("p")]);
    // Written after the backup: signed into the checkpoint file, lost with the database.
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path("later").to_str().expect("p")]);
    let server = Server::start(&env);
    assert_eq!(http(&server.addr, "GET", "/healthz", None, b"").0, 200);
    assert_eq!(http(&server.addr, "GET", "/readyz", None, b"").0, 200);
    let cert = leaf.join("cert.pem");
    let url = server.url("/ocsp");
    assert!(ocsp(&url, &issuing, &cert, &root).contains("cert.pem: good"));

    for file in ["custos.db", "custos.db-wal", "custos.db-shm"] {
        let _ = std::fs::remove_file(env.data_dir().join(file));
    }
    let body = unhealthy(&server);
    assert!(body.contains("was deleted") && body.contains("custos.db"), "{body}");
    // OCSP answers from what it pre-signed.
    let said = ocsp(&url, &issuing, &cert, &root);
    assert!(said.contains("cert.pem: good") && said.contains("Response verify OK"), "{said}");
    drop(server);

    // No second, unrelated CA in the same directory: init refuses, and every
    // command says to restore.
    let said = env.fails(&["init"]);
    assert!(said.contains("is missing") && said.contains("custos restore"), "{said}");
    assert!(!env.data_dir().join("custos.db").exists(), "init created nothing");
    let said = env.fails(&["list"]);
    assert!(said.contains("custos restore") && !said.contains("run `custos init`"), "{said}");

    // Restored in place: what was signed after the backup is named as lost,
    // the old checkpoint file is kept aside, and the log verifies again.
    let out = env.run(&["restore", backup.to_str().expect("p")]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("signed after this backup") && said.contains("before-restore"), "{said}");
    env.ok(&["audit", "verify", "--state"]);
    assert_eq!(env.serials().len(), 1, "the certificate issued after the backup is not in it");
}

/// The write-ahead log truncated under a running `serve` (the committed
/// changes not yet copied into the database file are in it): health names the
/// log and says what was lost, OCSP keeps answering from what it pre-signed,
/// and after a restart the log's checkpoint file shows that signed entries
/// are missing.
#[test]
fn a_wal_truncated_under_serve_is_reported() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let leaf = env.path("leaf");
    env.ok(&["issue", "acme-corp", "mail-sync", "--out", leaf.to_str().expect("p")]);
    let (root, issuing) = env.split_chain(&leaf.join("chain.pem"));
    let server = Server::start(&env);
    assert_eq!(http(&server.addr, "GET", "/healthz", None, b"").0, 200);
    for i in 0..5 {
        env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path(&format!("l{i}")).to_str().expect("p")]);
    }
    env.ok(&["audit", "checkpoint"]);
    let cert = leaf.join("cert.pem");
    let url = server.url("/ocsp");
    assert!(ocsp(&url, &issuing, &cert, &root).contains("cert.pem: good"));
    assert_eq!(env.serials().len(), 6);
    let wal = env.data_dir().join("custos.db-wal");
    let length = std::fs::metadata(&wal).expect("wal").len();
    assert!(length > 4096, "the WAL holds the recent commits ({length} bytes)");
    std::fs::OpenOptions::new().write(true).open(&wal).expect("wal").set_len(length / 3).expect("truncate");

    let body = unhealthy(&server);
    assert!(body.contains("custos.db-wal was truncated") && body.contains("restore"), "{body}");
    let said = ocsp(&url, &issuing, &cert, &root);
    assert!(said.contains("cert.pem: good") && said.contains("Response verify OK"), "{said}");
    drop(server);

    // Restarted, SQLite keeps what the file and the log's valid frames hold;
    // the checkpoint recorded outside the database shows entries are gone.
    assert!(env.serials().len() < 6, "the truncated commits are gone");
    let out = env.run(&["doctor"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("DOES NOT VERIFY") && said.contains("missing") && said.contains("custos restore"), "{said}");
    let said = env.fails(&["audit", "verify"]);
    assert!(said.contains("are missing"), "{said}");
}

#[test]
fn a_damaged_database_is_named_damaged() {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    for i in 0..20 {
        env.ok(&["issue", "acme-corp", "mail-sync", "--out", env.path(&format!("l{i}")).to_str().expect("p")]);
    }
    env.ok(&["doctor"]);
    // A copy whose WAL is folded into the file (Python's sqlite3 does it),
    // then the b-tree page headers of every page but the first flipped.
    let copy = Env::new();
    env.ok(&["backup", env.path("b.db").to_str().expect("p")]);
    copy.ok(&["restore", env.path("b.db").to_str().expect("p")]);
    let db = copy.data_dir().join("custos.db");
    common::sh(
        "python3",
        &[
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()",
            db.to_str().expect("p"),
        ],
    );
    let mut bytes = std::fs::read(&db).expect("db");
    let page = 4096;
    assert!(bytes.len() > 8 * page, "{} bytes", bytes.len());
    for start in (page..bytes.len()).step_by(page) {
        for b in &mut bytes[start..start + 8] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&db, &bytes).expect("write");
    let out = copy.run(&["doctor"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("DAMAGED") || said.contains("damaged"), "{said}");
    assert!(said.contains("custos restore"), "{said}");
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` where this process may not mount (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// The disk under the database fills up while `serve` runs: health says so
/// with the reason, OCSP keeps answering, a write fails cleanly and changes
/// nothing, and all is well again once space is freed. A real full file
/// system: a 64 MiB tmpfs (where this process may not mount one, the test
/// says so and does nothing).
#[test]
fn a_full_disk_is_reported_and_a_write_changes_nothing() {
    let Some(disk) = Tmpfs::mount("64m") else {
        eprintln!("skipping: this process may not mount a tmpfs");
        return;
    };
    let env = Env::new();
    let data = disk.0.path().join("data");
    let d = data.to_str().expect("p");
    env.ok(&["--data-dir", d, "init"]);
    env.ok(&["--data-dir", d, "tenant", "add", "acme-corp"]);
    env.ok(&["--data-dir", d, "connection", "add", "acme-corp", "mail-sync"]);
    let leaf = env.path("leaf");
    env.ok(&["--data-dir", d, "issue", "acme-corp", "mail-sync", "--out", leaf.to_str().expect("p")]);
    let (root, issuing) = env.split_chain(&leaf.join("chain.pem"));
    let server = Server::start_with(&env, &["--data-dir", d]);
    let health = |path: &str| {
        let (status, _, body) = http(&server.addr, "GET", path, None, b"");
        (status, String::from_utf8_lossy(&body).to_string())
    };
    assert_eq!(health("/healthz").0, 200);

    // Fill the file system to the last byte.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let wait_for = |path: &str, want: u16| {
        let started = Instant::now();
        loop {
            let (status, body) = health(path);
            if status == want || started.elapsed() > Duration::from_secs(5) {
                return (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (status, body) = wait_for("/healthz", 503);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("bytes free") && body.contains("custos.db"), "{body}");
    let (status, body) = health("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("degraded"), "{body}");
    let said = ocsp(&server.url("/ocsp"), &issuing, &leaf.join("cert.pem"), &root);
    assert!(said.contains("cert.pem: good"), "OCSP still answers: {said}");

    // A write fails with the cause, and nothing of it is left.
    let before = env.json(&["--data-dir", d, "list"]).as_array().expect("list").len();
    let mut failed = None;
    for i in 0..200 {
        let out = env.run(&[
            "--data-dir",
            d,
            "issue",
            "acme-corp",
            "mail-sync",
            "--out",
            env.path(&format!("f{i}")).to_str().expect("p"),
        ]);
        if !out.status.success() {
            failed = Some((i, String::from_utf8_lossy(&out.stderr).to_string()));
            break;
        }
    }
    let (issued, said) = failed.expect("a write fails once the WAL needs space");
    assert!(said.contains("disk is full"), "{said}");
    let after = env.json(&["--data-dir", d, "list"]).as_array().expect("list").len();
    assert_eq!(after, before + issued, "the failed issue left no certificate behind");

    // Space again: healthy, and writes work.
    std::fs::remove_file(&filler).expect("free space");
    let (status, body) = wait_for("/healthz", 200);
    assert_eq!(status, 200, "{body}");
    env.ok(&["--data-dir", d, "issue", "acme-corp", "mail-sync", "--out", env.path("after").to_str().expect("p")]);
    env.ok(&["--data-dir", d, "audit", "verify", "--state"]);
    drop(server);
}
