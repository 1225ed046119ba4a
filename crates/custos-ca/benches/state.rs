//! What proving the state and copying the database cost at scale: a custos
//! with `CUSTOS_BENCH_CERTS` certificates (default 1,000,000; one in fifty
//! revoked) on a real SQLite file, then, in the same run,
//!
//! - `verify_log` (the log's own proof, the baseline: it reads every entry),
//! - `verify_log_and_state` (the same proof with the log replayed against the
//!   tables in the same read: `audit verify --state`),
//! - `backup` (`custos backup`: a signed checkpoint and `VACUUM INTO`), its size
//!   against the live database's.
//!
//! `cargo bench -p custos-ca --bench state`; with `CUSTOS_BENCH_DIR=D` the
//! populated custos is kept in `D` and reused by the next run (for
//! measuring a change to the check without populating again).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use custos_ca::InitOptions;
use custos_pki::Reason;

fn main() {
    let n: usize = std::env::var("CUSTOS_BENCH_CERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let kept = std::env::var_os("CUSTOS_BENCH_DIR").map(std::path::PathBuf::from);
    let temporary = tempfile::tempdir().expect("tempdir");
    let dir = kept.as_deref().unwrap_or(temporary.path());
    let ca = if dir.join("custos.db").exists() {
        eprintln!("reusing the custos in {}", dir.display());
        common::reopen(dir, PASSPHRASE).await
    } else {
        populate(dir, n).await
    };
    measure(&ca, dir, n).await;
}

const PASSPHRASE: &[u8] = b"bench passphrase";

/// A new custos in `dir` with `n` certificates, one in fifty revoked.
async fn populate(dir: &std::path::Path, n: usize) -> custos_ca::Ca {
    let (ca, _store) = common::init(dir, &InitOptions::default(), PASSPHRASE).await;
    ca.add_tenant(&common::ME, "bench").await.expect("tenant");
    let connections = 100;
    for c in 0..connections {
        common::add_client_connection(&ca, "bench", &format!("c{c}")).await;
    }
    let started = Instant::now();
    let mut issued = 0;
    while issued < n {
        let chunk = (n - issued).min(100_000);
        let requests =
            (0..chunk).map(|i| common::generated("bench", &format!("c{}", (issued + i) % connections))).collect();
        ca.issue_many(&common::ME, requests, drop).await.expect("issue");
        issued += chunk;
    }
    // Two connections in a hundred revoked whole: 2% of the certificates.
    let mut revoked = 0;
    for c in ["c0", "c1"] {
        revoked += ca.revoke_connection(&common::ME, "bench", c, Reason::Superseded, None).await.expect("revoke").len();
    }
    eprintln!("populated {n} certificates ({revoked} revoked) in {:.0} s", started.elapsed().as_secs_f64());
    ca
}

/// The log's proof, the state check and a backup of the custos in `dir`.
async fn measure(ca: &custos_ca::Ca, dir: &std::path::Path, n: usize) {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let log = ca.verify_log(&common::ME, None, None).await.expect("verify log");
    let (log_secs, log_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let (_, state) = ca.verify_log_and_state(&common::ME, None, None).await.expect("verify state");
    let (state_secs, state_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    eprintln!("CPU time (all threads): audit verify {log_cpu:.2} s, audit verify --state {state_cpu:.2} s");
    assert!(state.differences.is_empty(), "{:?}", &state.differences[..state.differences.len().min(5)]);
    let db = std::fs::metadata(dir.join("custos.db")).expect("db").len()
        + std::fs::metadata(dir.join("custos.db-wal")).map(|m| m.len()).unwrap_or(0);
    let copy = dir.join("backup.db");
    let _ = std::fs::remove_file(&copy);
    let t = Instant::now();
    ca.sign_checkpoint(&common::ME).await.expect("checkpoint");
    ca.backup(&common::ME, &copy).await.expect("backup");
    let backup_secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&copy).expect("backup").len();
    std::fs::remove_file(&copy).expect("remove the backup");
    println!(
        "| certificates | log entries | audit verify (baseline) | audit verify --state | ratio | backup | backup size | live db + wal |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {n} | {} | {log_secs:.2} s | {state_secs:.2} s ({} objects) | {:.2} | {backup_secs:.2} s | {:.0} MB | {:.0} MB |",
        log.entries,
        state.objects,
        state_secs / log_secs,
        size as f64 / 1e6,
        db as f64 / 1e6
    );
}

/// User and system CPU time of this process so far, all threads (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0 // USER_HZ: 100 on Linux whatever the kernel tick
}
