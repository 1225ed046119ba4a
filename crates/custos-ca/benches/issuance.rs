//! Issuance throughput against the raw P-256 sign+verify rate of the same
//! crypto library, measured in the same run on the same cores.
//!
//! `cargo bench -p custos-ca --bench issuance`; each element is one
//! certificate (or one sign+verify for the baseline). Issuance runs through
//! `Ca::issue_many` on a real SQLite file: policy, CSR verification, signing on
//! all cores, group-committed inserts with audit entries.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos_ca::{ConnectionOptions, InitOptions, IssueRequest, KeySource};
use custos_keys::KeyAlgorithm;
use custos_pki::Profile;

/// Certificates per iteration; `CUSTOS_BENCH_BATCH` overrides it (a bulk
/// file's size: the first batch's signing and the last one's commit cannot
/// overlap anything, so small files pay them in full).
fn batch() -> usize {
    std::env::var("CUSTOS_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(4096)
}

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The baseline: sign and verify a certificate-sized message on every core.
fn raw_sign_verify(n: usize) {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).expect("key");
    let public = key.public_key().as_ref().to_vec();
    let message = [7u8; 400];
    let per = n.div_ceil(threads());
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| {
                for _ in 0..per {
                    let sig = key.sign(&rng, &message).expect("sign");
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public)
                        .verify(&message, sig.as_ref())
                        .expect("verify");
                }
            });
        }
    });
}

fn csrs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate().expect("key");
            rcgen::CertificateParams::new(vec![]).expect("params").serialize_request(&key).expect("csr").der().to_vec()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rt.block_on(async {
        let ca = common::init(dir.path(), &InitOptions::default(), b"bench passphrase").await.0;
        ca.add_tenant(&common::ME, "bench").await.expect("tenant");
        ca.add_connection(
            &common::ME,
            "bench",
            "api",
            &ConnectionOptions {
                profile: Profile::Server,
                allowed_sans: vec!["*.bench.example".into()],
                key_algorithm: KeyAlgorithm::EcdsaP256,
                validity_days: None,
            },
        )
        .await
        .expect("connection");
        ca
    });
    let batch = batch();
    let csrs = csrs(batch);
    let request = |i: usize, key: KeySource| IssueRequest {
        tenant: "bench".into(),
        connection: "api".into(),
        profile: None,
        sans: vec![format!("h{i}.bench.example")],
        validity_secs: None,
        key,
        request_key: None,
    };

    let mut group = c.benchmark_group("issuance");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("raw_p256_sign_verify", |b| b.iter(|| raw_sign_verify(black_box(batch))));
    group.bench_function("csr_p256_sqlite", |b| {
        b.iter(|| {
            let reqs: Vec<IssueRequest> =
                csrs.iter().enumerate().map(|(i, der)| request(i, KeySource::Csr(der.clone()))).collect();
            rt.block_on(ca.issue_many(&common::ME, reqs, |batch| drop(black_box(batch)))).expect("issue")
        })
    });
    group.bench_function("server_key_p256_sqlite", |b| {
        b.iter(|| {
            let reqs: Vec<IssueRequest> = (0..batch).map(|i| request(i, KeySource::Generate(None))).collect();
            rt.block_on(ca.issue_many(&common::ME, reqs, |batch| drop(black_box(batch)))).expect("issue")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
