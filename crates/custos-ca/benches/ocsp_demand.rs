//! OCSP responses signed on demand (a nonce per request), each released only
//! after the `ocsp.sign` commit that logs it, against pre-signed responses
//! served from memory, in the same run: `cargo bench -p custos-ca --bench
//! ocsp_demand` (`CUSTOS_BENCH_SECONDS` per cell, default 5).
//!
//! Requests go straight to `StatusPublisher::ocsp` from concurrent tasks (no
//! HTTP), so the figures are the responder's own: how many fresh signatures
//! per second survive durable logging with group commit, and what a request
//! waits for it. The fresh-signature budget (5,000/s) is the design cap.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custos_ca::{InitOptions, StatusPublisher};
use custos_pki::Serial;
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, encode_request};

fn main() {
    let secs: u64 = std::env::var("CUSTOS_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(Duration::from_secs(secs)));
}

async fn run(cell: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = common::init(&dir.path().join("data"), &InitOptions::default(), b"bench passphrase").await.0;
    ca.add_tenant(&common::ME, "t").await.expect("tenant");
    common::add_client_connection(&ca, "t", "c").await;
    let mut serials = Vec::new();
    for _ in 0..100 {
        let issued = ca.issue(&common::ME, common::generated("t", "c")).await.expect("issue");
        serials.push(issued.record.serial.parse::<Serial>().expect("serial"));
    }
    let ca = Arc::new(ca);
    let issuing = ca.issuer(&common::ME, "issuing-1").await.expect("issuer");
    let hashes = IssuerHashes::from_certificate(&issuing.cert_der).expect("hashes");
    let publisher = Arc::new(StatusPublisher::start(ca.clone()).await.expect("start"));
    publisher.presign(1_000).await.expect("presign");
    println!(
        "| tasks | pre-signed/s (baseline) | fresh (nonce) signed/s | ratio | nonce dropped (budget)/s | p50 fresh | p99 fresh | unlogged after |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for tasks in [1usize, 4, 16] {
        let (presigned, _, _) = load(&publisher, &hashes, &serials, tasks, cell, false).await;
        let (fresh, dropped, waits) = load(&publisher, &hashes, &serials, tasks, cell, true).await;
        let pct = |q: f64| waits.get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1)));
        println!(
            "| {tasks} | {presigned:.0} | {fresh:.0} | {:.4} | {dropped:.0} | {:.2} ms | {:.2} ms | {} |",
            fresh / presigned,
            pct(0.5).copied().unwrap_or(0.0),
            pct(0.99).copied().unwrap_or(0.0),
            publisher.unlogged_signatures()
        );
        // Let the fresh-signature budget refill between cells.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Over `cell` from `tasks` tasks: answers per second that carry the nonce
/// (freshly signed; all answers without nonces), answers per second that
/// dropped it (budget spent), and each fresh answer's wait in ms, sorted.
async fn load(
    publisher: &Arc<StatusPublisher>,
    hashes: &IssuerHashes,
    serials: &[Serial],
    tasks: usize,
    cell: Duration,
    nonce: bool,
) -> (f64, f64, Vec<f64>) {
    let done = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + cell;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let requests: Vec<(Vec<u8>, Vec<u8>)> = serials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = hashes.cert_id(HashAlgorithm::Sha1, s);
                let n = (t * 1_000_000 + i) as u64;
                let nonce_bytes = n.to_be_bytes().repeat(2);
                (encode_request(std::slice::from_ref(&id), nonce.then_some(&nonce_bytes[..])), nonce_bytes)
            })
            .collect();
        let (publisher, done, dropped) = (publisher.clone(), done.clone(), dropped.clone());
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                let (request, nonce_bytes) = &requests[i % requests.len()];
                let answer = publisher.ocsp(request).await;
                assert!(answer.der.len() > 100, "a signed answer");
                i += 1;
                if nonce && !answer.der.windows(nonce_bytes.len()).any(|w| w == &nonce_bytes[..]) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if nonce {
                    waits.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for h in handles {
        waits.extend(h.await.expect("task"));
    }
    waits.sort_by(f64::total_cmp);
    let per_second = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / cell.as_secs_f64();
    (per_second(&done), per_second(&dropped), waits)
}
