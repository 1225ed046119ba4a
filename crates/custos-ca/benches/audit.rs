//! Audit log speed: durable appends per second at several entries per commit
//! (group commit), next to a same-run baseline of the same rows inserted into
//! a plain SQLite table without the Merkle tree; inclusion proof time; and the
//! time to verify the whole log from its entries.
//!
//! `cargo bench -p custos-ca --bench audit` (`CUSTOS_BENCH_MAX` sets the final
//! log size; the default is 1,000,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use custos_audit::merkle;
use custos_ca::InitOptions;
use custos_store::AuditRecord;
use custos_store::prelude::*;
use sqlx::{AssertSqlSafe, Executor};

fn main() {
    let max: u64 = std::env::var("CUSTOS_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(max));
}

/// A certificate.issue entry of realistic size (about 400 bytes).
fn record(i: u64) -> AuditRecord {
    AuditRecord {
        time: 1_790_000_000 + (i / 1000) as i64,
        actor: "cli:bench".into(),
        action: "certificate.issue".into(),
        object: format!("cert:{i:040x}"),
        key: Some("3f2a9c0d1e4b5a6978877665".into()),
        details: serde_json::json!({
            "serial": format!("{i:040x}"), "issuer": "issuing-1", "key": "3f2a9c0d1e4b5a6978877665",
            "tenant": "acme-corp", "connection": "mail-sync", "profile": "client", "sans": ["mail.acme.example"],
            "spki_sha256": format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), "key_origin": "generated",
            "not_after": 1_820_000_000,
        })
        .to_string(),
    }
}

/// The same rows into a plain table in another SQLite file with the same durability settings.
async fn baseline(dir: &std::path::Path, per_commit: usize, total: usize) -> f64 {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join(format!("plain-{per_commit}.db")).display());
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.expect("open");
    for p in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA cache_size = -65536"] {
        pool.execute(p).await.expect("pragma");
    }
    pool.execute(
        "CREATE TABLE log (idx INTEGER PRIMARY KEY, time BIGINT, actor TEXT, action TEXT, object TEXT, key_id TEXT, details TEXT)",
    )
    .await
    .expect("table");
    let rows: Vec<AuditRecord> = (0..total as u64).map(record).collect();
    let started = Instant::now();
    let mut next = 0i64;
    for commit in rows.chunks(per_commit) {
        let mut tx = pool.begin().await.expect("begin");
        for chunk in commit.chunks(100) {
            let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut q = sqlx::query(AssertSqlSafe(format!("INSERT INTO log VALUES {values}")));
            for r in chunk {
                q = q
                    .bind(next)
                    .bind(r.time)
                    .bind(&r.actor)
                    .bind(&r.action)
                    .bind(&r.object)
                    .bind(&r.key)
                    .bind(&r.details);
                next += 1;
            }
            q.execute(&mut *tx).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn run(max: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store) = common::init(&dir.path().join("data"), &InitOptions::default(), b"bench").await;
    let mut next = store.audit_size().await.expect("size");

    println!("| entries per commit | custos (Merkle) entries/s | plain SQLite table entries/s | ratio |");
    println!("| --- | --- | --- | --- |");
    for (per_commit, total) in [(1usize, 2_000usize), (100, 50_000), (1_000, 100_000), (10_000, 200_000)] {
        let rows: Vec<AuditRecord> = (next..next + total as u64).map(record).collect();
        let started = Instant::now();
        for commit in rows.chunks(per_commit) {
            store.append_audit(commit).await.expect("append");
        }
        let ours = total as f64 / started.elapsed().as_secs_f64();
        next += total as u64;
        let plain = baseline(dir.path(), per_commit, total).await;
        println!("| {per_commit} | {ours:.0} | {plain:.0} | {:.2} |", ours / plain);
    }

    // Grow to the final size in commits of 10,000.
    let started = Instant::now();
    let grown = max.saturating_sub(next);
    while next < max {
        let n = (max - next).min(10_000);
        let rows: Vec<AuditRecord> = (next..next + n).map(record).collect();
        store.append_audit(&rows).await.expect("append");
        next += n;
    }
    if grown > 0 {
        println!(
            "\ngrew the log by {grown} entries to {next} in {:.1}s ({:.0} entries/s)",
            started.elapsed().as_secs_f64(),
            grown as f64 / started.elapsed().as_secs_f64()
        );
    }
    ca.sign_checkpoint(&common::ME).await.expect("checkpoint");
    let size = store.audit_size().await.expect("size");

    // Proofs: the store-level proof (node reads + hashing), and the full
    // `audit proof` path (plus the checkpoint's signature check and the entry read).
    let mut raw = Vec::new();
    let mut full = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        let ids = merkle::needed_nodes(|read| merkle::inclusion_proof(index, size, read));
        let nodes = store.audit_nodes(&ids).await.expect("nodes");
        let proof = merkle::inclusion_proof(index, size, &mut |id| nodes[&id]).expect("proof");
        raw.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(!proof.is_empty());
        let t = Instant::now();
        ca.inclusion_proof(&common::ME, index).await.expect("proof");
        full.push(t.elapsed().as_secs_f64() * 1e6);
    }
    raw.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!("\ninclusion proof at {size} entries (2,000 random indexes):");
    println!("  store nodes + hashing: p50 {:.0} µs, p99 {:.0} µs", pct(&raw, 0.5), pct(&raw, 0.99));
    println!(
        "  Ca::inclusion_proof (with checkpoint signature check): p50 {:.0} µs, p99 {:.0} µs",
        pct(&full, 0.5),
        pct(&full, 0.99)
    );

    if std::env::var("CUSTOS_BENCH_PROBE").is_ok() {
        probe(&store).await;
    }
    let t = Instant::now();
    let report = ca.verify_log(&common::ME, None, None).await.expect("verify");
    println!("\nfull verification of {} entries: {:.2}s", report.entries, t.elapsed().as_secs_f64());
}
#[allow(dead_code)]
async fn probe(store: &custos_store::SqlStore) {
    let t = Instant::now();
    let mut from = 0;
    let mut n = 0;
    loop {
        let page = store.audit_entries(from, 50_000).await.expect("page");
        n += page.len();
        if page.len() < 50_000 {
            break;
        }
        from = page.last().expect("last").index + 1;
    }
    println!("probe: read {n} rows in {:.2}s", t.elapsed().as_secs_f64());
}
