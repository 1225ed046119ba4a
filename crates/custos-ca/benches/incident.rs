//! The incident at real size: 3,600 tenants × 3 connections, then 100,000
//! connections, every connection with a valid certificate from the issuing
//! CA; the issuing CA is declared compromised and the incident executed.
//! Reports the time from the start of `execute` to every affected certificate
//! revoked and to every replacement issued (with a new CA, server-side keys
//! written to a file, and notifications queued for tenants with a webhook).
//!
//! `cargo bench -p custos-ca --bench incident` (`CUSTOS_BENCH_MAX` caps the
//! connection count; default 100,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use custos_ca::notify::WebhookPolicy;

/// The lab policy: the bench queues to a loopback port nobody listens on.
const LAB: WebhookPolicy = WebhookPolicy { allow_http: true, allow_private: true };

use custos_ca::incident::{Declaration, Scope};
use custos_ca::{InitOptions, IssueRequest, KeySource};
use custos_pki::Reason;
use sqlx::{AssertSqlSafe, Executor};

fn main() {
    let max: usize = std::env::var("CUSTOS_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!(
        "| tenants × connections | affected certificates | execute → all revoked | execute → all replaced | declare |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (tenants, per) in [(3_600usize, 3usize), (25_000, 4)] {
        if tenants * per > max.max(10_800) {
            continue;
        }
        rt.block_on(run(tenants, per));
    }
}

/// Adds tenants and connections in one transaction straight into the file
/// (set-up only: the CLI adds them one by one, each with its audit entry).
async fn populate(db: &std::path::Path, tenants: usize, per: usize) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    let mut tx = pool.begin().await.expect("begin");
    for chunk in (0..tenants).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk.iter().map(|t| format!("('t{t:06}', 0)")).collect();
        tx.execute(AssertSqlSafe(format!("INSERT INTO tenants (name, created_at) VALUES {}", values.join(", "))))
            .await
            .expect("tenants");
        let values: Vec<String> = chunk
            .iter()
            .flat_map(|t| (0..per).map(move |c| format!("('t{t:06}', 'c{c}', 'client', '[]', 'p256', NULL, 0)")))
            .collect();
        tx.execute(AssertSqlSafe(format!(
            "INSERT INTO connections (tenant, name, profile, allowed_sans, key_algorithm, validity_days, created_at) VALUES {}",
            values.join(", ")
        )))
        .await
        .expect("connections");
    }
    tx.commit().await.expect("commit");
    pool.close().await;
}

async fn run(tenants: usize, per: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    drop(common::init(&data, &InitOptions::default(), b"bench").await.0);
    populate(&data.join("custos.db"), tenants, per).await;
    let ca = common::reopen(&data, b"bench").await;
    let requests: Vec<IssueRequest> = (0..tenants)
        .flat_map(|t| {
            (0..per).map(move |c| IssueRequest {
                tenant: format!("t{t:06}"),
                connection: format!("c{c}"),
                profile: None,
                sans: vec![],
                validity_secs: None,
                key: KeySource::Generate(None),
                request_key: None,
            })
        })
        .collect();
    let total = requests.len();
    ca.issue_many(&common::ME, requests, |_| {}).await.expect("issue the population");
    // A tenth of the tenants have a webhook (to a port nobody listens on: queued, not delivered here).
    for t in (0..tenants).step_by(10) {
        ca.set_webhook(&common::ME, &format!("t{t:06}"), "http://127.0.0.1:9/hook", &LAB).await.expect("webhook");
    }

    let declared = Instant::now();
    let view = ca
        .declare_incident(
            &common::ME,
            &Declaration {
                scope: Scope::Issuer("issuing-1".into()),
                reason: Reason::KeyCompromise,
                since: None,
                note: "bench".into(),
            },
        )
        .await
        .expect("declare");
    let declare_secs = declared.elapsed().as_secs_f64();
    assert_eq!(view.affected_certificates, total);
    let summary =
        ca.execute_incident(&common::ME, &view.id, &dir.path().join("keys.jsonl"), &|_| {}).await.expect("execute");
    assert_eq!((summary.revoked, summary.replaced), (total, total));
    println!(
        "| {tenants} × {per} | {total} | {:.2} s | {:.2} s | {declare_secs:.2} s |",
        summary.seconds_to_revoked, summary.seconds_to_replaced
    );
}
