//! Revocation at scale: revoke latency as the revoked population grows, CRL
//! signing time and size, and the time from a revoke returning to OCSP
//! answering `revoked` in the same process.
//!
//! `cargo bench -p custos-ca --bench revocation` (set `CUSTOS_BENCH_MAX` to
//! stop at a smaller population; the default is 1,000,000). Populations are
//! built by inserting certificate records through the store (the DER of one
//! real certificate reused), since issuing a million real certificates would
//! measure issuance, not revocation.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use custos_ca::{InitOptions, StatusPublisher};
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, encode_request};
use custos_pki::{Reason, Serial};
use custos_store::prelude::*;
use custos_store::{CertificateRecord, Revocation};

fn main() {
    let max: usize = std::env::var("CUSTOS_BENCH_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(max));
}

async fn run(max: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    // One partition for the whole population: the point is one CRL of a million entries.
    let options = InitOptions { crl_partition_size: 10_000_000, ..InitOptions::default() };
    let (ca, store) = common::init(dir.path(), &options, b"bench").await;
    ca.add_tenant(&common::ME, "t").await.expect("tenant");
    common::add_client_connection(&ca, "t", "c").await;
    let template = ca.issue(&common::ME, common::generated("t", "c")).await.expect("issue").record;
    let ca = Arc::new(ca);

    println!("| revoked | bulk revoke (per cert) | single revoke p50 | p99 | CRL sign | CRL size |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut population = 0usize;
    let mut next_serial: u64 = 1 << 60; // 16 hex digits, no leading zero: stored as parsed
    for target in [1_000usize, 10_000, 100_000, 250_000, 1_000_000].into_iter().filter(|t| *t <= max) {
        // Grow the revoked population to `target` in batches.
        let started = Instant::now();
        let grow = target - population;
        while population < target {
            let n = (target - population).min(10_000);
            let batch: Vec<CertificateRecord> = (0..n)
                .map(|_| {
                    next_serial += 1;
                    let mut r = template.clone();
                    r.serial = format!("{next_serial:016x}");
                    r
                })
                .collect();
            let serials: Vec<String> = batch.iter().map(|r| r.serial.clone()).collect();
            store.insert_certificates(&batch, &[]).await.expect("insert");
            let revocation =
                Revocation { revoked_at: 1_790_000_000, reason: Reason::Superseded, invalidity_date: None };
            store.revoke(&serials, &revocation, &[], &[]).await.expect("bulk revoke");
            population += n;
        }
        let bulk = started.elapsed().as_secs_f64() / grow as f64;

        // Single revocations through Ca::revoke, each its own transaction with its audit entry.
        let mut latencies = Vec::new();
        for _ in 0..200 {
            next_serial += 1;
            let mut r = template.clone();
            r.serial = format!("{next_serial:016x}");
            store.insert_certificates(std::slice::from_ref(&r), &[]).await.expect("insert");
            let serial: Serial = r.serial.parse().expect("serial");
            let t = Instant::now();
            ca.revoke(&common::ME, &serial, Reason::KeyCompromise, None).await.expect("revoke");
            latencies.push(t.elapsed());
            population += 1;
        }
        latencies.sort();
        let t = Instant::now();
        let rows = store.revoked("issuing-1", 0).await.expect("read").len();
        let read_time = t.elapsed();
        let t = Instant::now();
        let crl = ca.crl(&common::ME, "issuing-1", 0).await.expect("crl");
        let crl_time = t.elapsed();
        eprintln!(
            "  ({rows} rows read in {:.3} s of the CRL's {:.3} s)",
            read_time.as_secs_f64(),
            crl_time.as_secs_f64()
        );
        println!(
            "| {population} | {:.1} µs | {:.2} ms | {:.2} ms | {:.3} s | {:.1} MB |",
            bulk * 1e6,
            latencies[latencies.len() / 2].as_secs_f64() * 1e3,
            latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3,
            crl_time.as_secs_f64(),
            crl.der.len() as f64 / 1e6
        );
    }

    // Revoke -> OCSP `revoked`, one process: revoke, then poll once (as the
    // server's 200 ms loop does) and answer from the cache.
    let publisher = StatusPublisher::start(ca.clone()).await.expect("publisher");
    let issuing = ca.issuer(&common::ME, "issuing-1").await.expect("issuer");
    let hashes = IssuerHashes::from_certificate(&issuing.cert_der).expect("hashes");
    let mut latencies = Vec::new();
    for _ in 0..200 {
        next_serial += 1;
        let mut r = template.clone();
        r.serial = format!("{next_serial:016x}");
        store.insert_certificates(std::slice::from_ref(&r), &[]).await.expect("insert");
        let serial: Serial = r.serial.parse().expect("serial");
        let request = encode_request(&[hashes.cert_id(HashAlgorithm::Sha1, &serial)], None);
        let good = publisher.ocsp(&request).await;
        let t = Instant::now();
        ca.revoke(&common::ME, &serial, Reason::KeyCompromise, None).await.expect("revoke");
        publisher.poll().await.expect("poll");
        let revoked = publisher.ocsp(&request).await;
        latencies.push(t.elapsed());
        assert_ne!(good.der, revoked.der, "the answer changed");
    }
    latencies.sort();
    // What a revocation costs the CRL once serve is running: the publisher
    // keeps the revoked list in memory and only encodes and signs.
    let mut regen = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        publisher.publish_crls().await.expect("publish");
        regen.push(t.elapsed());
        next_serial += 1;
        let mut r = template.clone();
        r.serial = format!("{next_serial:016x}");
        store.insert_certificates(std::slice::from_ref(&r), &[]).await.expect("insert");
        ca.revoke(&common::ME, &r.serial.parse().expect("serial"), Reason::KeyCompromise, None).await.expect("revoke");
        publisher.poll().await.expect("poll");
    }
    let entries = publisher.crl("issuing-1", 0).expect("crl").entries;
    println!("\nCRL regenerated by the running publisher after a revoke, {entries} entries: {:.3} s (median of 4)", {
        let mut r: Vec<f64> = regen[1..].iter().map(|d| d.as_secs_f64()).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        r[r.len() / 2]
    });
    println!(
        "\nrevoke -> OCSP revoked in one process (revoke + one poll + answer), 200 samples: p50 {:.2} ms, p99 {:.2} ms",
        latencies[100].as_secs_f64() * 1e3,
        latencies[198].as_secs_f64() * 1e3
    );
}
