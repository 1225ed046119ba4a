//! What `audit match` costs at scale: a custos whose log holds
//! `CUSTOS_BENCH_ENTRIES` client assertions (default 1,000,000; issue 16's
//! figure is 10,000,000) from 100 custodied connections, against an export of
//! `CUSTOS_BENCH_SIGNINS` sign-ins (default 100,000; the issue's, 1,000,000):
//! nine in ten genuine (half naming their jti), one in ten forged (an unknown
//! jti, or a time with no assertion in the ten minutes before). The baseline
//! in the same run is reading as many audit log entries as there are
//! sign-ins (one row per sign-in: the I/O floor of any matcher). Assertions are written straight into the store with their
//! audit entries (signing each would measure signing, not matching).
//!
//! `cargo bench -p custos-ca --bench matching`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use custos_ca::custody::CustodyOptions;
use custos_ca::{ConnectionOptions, InitOptions, KeyAlgorithm, Profile};
use custos_store::prelude::*;
use custos_store::{AuditRecord, SignatureRecord};

fn main() {
    let entries: usize = std::env::var("CUSTOS_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let signins: usize = std::env::var("CUSTOS_BENCH_SIGNINS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(entries, signins));
}

const AUD: &str = "https://login.microsoftonline.example/bench/oauth2/v2.0/token";

async fn run(entries: usize, wanted: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store) = common::init(dir.path(), &InitOptions::default(), b"bench passphrase").await;
    ca.add_tenant(&common::ME, "bench").await.expect("tenant");
    let options = ConnectionOptions {
        profile: Profile::Client,
        allowed_sans: vec![],
        key_algorithm: KeyAlgorithm::EcdsaP256,
        validity_days: None,
    };
    let custody =
        CustodyOptions { algorithm: KeyAlgorithm::EcdsaP256, standby: false, sans: vec![], validity_secs: None };
    let mut held = Vec::new();
    for c in 0..100 {
        let keys =
            ca.add_custody(&common::ME, "bench", &format!("c{c}"), Some(&options), &custody).await.expect("custody");
        held.push((format!("c{c}"), keys[0].key_id.clone(), keys[0].serial.clone(), keys[0].thumbprint_sha256.clone()));
    }
    // 200 assertions a second, from a day ago on.
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 86_400;
    let at = |i: usize| start + (i / 200) as i64;
    let started = Instant::now();
    let mut written = 0;
    while written < entries {
        let n = (entries - written).min(20_000);
        let mut audit = Vec::with_capacity(n);
        let mut sigs = Vec::with_capacity(n);
        for k in 0..n {
            let i = written + k;
            let (conn, key, serial, _) = &held[i % held.len()];
            let jti = format!("{:08x}-0000-4000-8000-{:012x}", i >> 16, i);
            audit.push(AuditRecord {
                time: at(i),
                actor: format!("tenant:bench/{conn}[tok_bench]"),
                action: "connection.sign".into(),
                object: format!("connection:bench/{conn}"),
                key: Some(key.clone()),
                details: serde_json::json!({"jti": jti, "aud": AUD, "serial": serial, "iat": at(i)}).to_string(),
            });
            sigs.push((
                k,
                SignatureRecord {
                    jti,
                    serial: serial.clone(),
                    key_id: key.clone(),
                    tenant: "bench".into(),
                    connection: conn.clone(),
                    aud: AUD.into(),
                    iat: at(i),
                    exp: at(i) + 600,
                    audit_index: 0,
                },
            ));
        }
        store.record_signatures(&audit, &sigs).await.expect("append");
        written += n;
    }
    eprintln!("wrote {entries} assertions to the log in {:.0} s", started.elapsed().as_secs_f64());
    ca.sign_checkpoint(&common::ME).await.expect("checkpoint");

    // The export: every (entries / genuine)-th assertion's sign-in, and forged ones.
    let forged = wanted / 10;
    let genuine = wanted - forged;
    let step = (entries / genuine.max(1)).max(1);
    let mut export = String::with_capacity(wanted * 200);
    let rfc = |t: i64| custos_ca::rfc3339(t);
    for g in 0..genuine {
        let i = (g * step) % entries;
        let (_, _, _, thumb) = &held[i % held.len()];
        let jti = format!("{:08x}-0000-4000-8000-{:012x}", i >> 16, i);
        if g % 2 == 0 {
            export.push_str(&format!(
                "{{\"time\":\"{}\",\"thumbprint\":\"{thumb}\",\"audience\":\"{AUD}\",\"client_ip\":\"198.51.100.7\",\"jti\":\"{jti}\"}}\n",
                rfc(at(i) + 1)
            ));
        } else {
            export.push_str(&format!(
                "{{\"time\":\"{}\",\"thumbprint\":\"{thumb}\",\"audience\":\"{AUD}\",\"client_ip\":\"198.51.100.7\"}}\n",
                rfc(at(i) + 1)
            ));
        }
    }
    let last = at(entries - 1);
    for f in 0..forged {
        let (_, _, _, thumb) = &held[f % held.len()];
        if f % 2 == 0 {
            export.push_str(&format!(
                "{{\"time\":\"{}\",\"thumbprint\":\"{thumb}\",\"audience\":\"{AUD}\",\"client_ip\":\"203.0.113.66\",\"jti\":\"forged-{f}\"}}\n",
                rfc(start + (f as i64 % (last - start + 1)))
            ));
        } else {
            // Hours after the last assertion: nothing was signed in the ten minutes before.
            export.push_str(&format!(
                "{{\"time\":\"{}\",\"thumbprint\":\"{thumb}\",\"audience\":\"{AUD}\",\"client_ip\":\"203.0.113.66\"}}\n",
                rfc(last + 3600 + f as i64)
            ));
        }
    }

    // The baseline: reading as many rows of the log as there are sign-ins.
    let t = Instant::now();
    let mut read = 0;
    while read < wanted as u64 {
        read += store.audit_entries(read, 10_000).await.expect("read").len() as u64;
    }
    let scan_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let records = custos_ca::signins::parse_signins(export.as_bytes()).expect("parse");
    let parse_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = ca.match_signins(&common::ME, records, false).await.expect("match");
    let match_secs = t.elapsed().as_secs_f64();
    assert_eq!(report.unmatched.len(), forged, "every forged sign-in, nothing else");
    assert_eq!(report.matched.len(), genuine);
    let records = custos_ca::signins::parse_signins(export.as_bytes()).expect("parse");
    let t = Instant::now();
    let proved = ca.match_signins(&common::ME, records, true).await.expect("match with proofs");
    let proof_secs = t.elapsed().as_secs_f64();
    assert!(proved.matched.iter().all(|m| m.proof.is_some()));
    println!(
        "| log entries | sign-ins | read one entry per sign-in (baseline) | parse | match | ratio | match with proofs | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {entries} | {wanted} | {scan_secs:.2} s | {parse_secs:.2} s | {match_secs:.2} s | {:.2} | {proof_secs:.2} s | {:.2} |",
        match_secs / scan_secs,
        proof_secs / scan_secs
    );
}
