//! The status publisher on a real SQLite store: pre-signing, invalidation by
//! the revocation feed, CRL publishing. openssl reads what it signs.

mod common;

use std::sync::Arc;

use custos_ca::{Ca, InitOptions, StatusPublisher};
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, encode_request};
use custos_pki::{Reason, Serial};

fn openssl_text(dir: &std::path::Path, der: &[u8]) -> String {
    let f = dir.join("resp.der");
    std::fs::write(&f, der).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-respin", f.to_str().expect("p"), "-resp_text", "-noverify"])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A custos in a temporary directory (`data` inside it) with one tenant,
/// one connection and `n` issued certificates.
async fn custos_with_certificates(n: usize) -> (tempfile::TempDir, Arc<Ca>, Vec<Serial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = common::init(&dir.path().join("data"), &InitOptions::default(), b"pw").await.0;
    ca.add_tenant(&common::ME, "t").await.expect("tenant");
    common::add_client_connection(&ca, "t", "c").await;
    let mut serials = Vec::new();
    for _ in 0..n {
        let issued = ca.issue(&common::ME, common::generated("t", "c")).await.expect("issue");
        serials.push(issued.record.serial.parse::<Serial>().expect("serial"));
    }
    (dir, Arc::new(ca), serials)
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_cached_answers_and_crls_through_the_feed() {
    let (dir, ca, serials) = custos_with_certificates(3).await;
    let publisher = StatusPublisher::start(ca.clone()).await.expect("start");
    assert_eq!(publisher.presign(1_000).await.expect("presign"), 3);
    assert_eq!(publisher.presign(1_000).await.expect("presign"), 0, "already signed");
    assert_eq!(publisher.refresh().await.expect("refresh"), 0, "nothing is old yet");

    let issuing = ca.issuer(&common::ME, "issuing-1").await.expect("issuer");
    let hashes = IssuerHashes::from_certificate(&issuing.cert_der).expect("hashes");
    let request = encode_request(&[hashes.cert_id(HashAlgorithm::Sha1, &serials[0])], None);
    let before = publisher.ocsp(&request).await;
    assert!(openssl_text(dir.path(), &before.der).contains("Cert Status: good"));
    assert_eq!(publisher.ocsp(&request).await.der, before.der, "answered from the pre-signed cache");

    ca.revoke(&common::ME, &serials[0], Reason::KeyCompromise, None).await.expect("revoke");
    assert_eq!(publisher.ocsp(&request).await.der, before.der, "until the feed is polled, the cache answers");
    assert_eq!(publisher.poll().await.expect("poll"), 1);
    let after = openssl_text(dir.path(), &publisher.ocsp(&request).await.der);
    assert!(after.contains("Cert Status: revoked") && after.contains("Revocation Reason: keyCompromise"), "{after}");
    assert_eq!(publisher.poll().await.expect("poll"), 0, "each revocation is applied once");

    let number_before = publisher.crl("issuing-1", 0).expect("crl").number;
    assert_eq!(publisher.publish_crls().await.expect("publish"), 1);
    let crl = publisher.crl("issuing-1", 0).expect("crl");
    assert!(crl.number > number_before && crl.entries == 1);
    assert_eq!(publisher.publish_crls().await.expect("publish"), 0, "nothing changed since");
    // A SHA-256 CertID for the same serial is its own cache entry, with the same status.
    let sha256 = encode_request(&[hashes.cert_id(HashAlgorithm::Sha256, &serials[0])], None);
    assert!(openssl_text(dir.path(), &publisher.ocsp(&sha256).await.der).contains("Cert Status: revoked"));
    let other = encode_request(&[hashes.cert_id(HashAlgorithm::Sha1, &serials[1])], None);
    assert!(openssl_text(dir.path(), &publisher.ocsp(&other).await.der).contains("Cert Status: good"));

    // Every response signature is in the audit log under the responder's key:
    // those signed ahead of demand named by serial, those a client asked for
    // counted and hashed (a client must not grow the log by a serial per request).
    publisher.poll().await.expect("poll flushes the signing journal");
    let filter = custos_store::AuditFilter {
        action: Some("ocsp.sign".into()),
        from: Some(0),
        limit: 1000,
        ..Default::default()
    };
    let logged = ca.audit_tail(&common::ME, &filter).await.expect("tail");
    let details: Vec<serde_json::Value> =
        logged.iter().map(|e| serde_json::from_str(&e.record.details).expect("json")).collect();
    let named: Vec<String> = details
        .iter()
        .filter_map(|d| d["serials"].as_array())
        .flat_map(|a| a.iter().map(|s| s.as_str().expect("str").to_string()))
        .collect();
    let on_demand: Vec<&serde_json::Value> = details.iter().filter(|d| d["on_demand"] == true).collect();
    assert!(on_demand.iter().all(|d| d.get("serials").is_none() && d["responses_sha256"].is_string()), "{on_demand:?}");
    assert_eq!(on_demand.iter().map(|d| d["responses"].as_u64().expect("count")).sum::<u64>(), 1, "the SHA-256 CertID");
    for serial in &serials {
        assert!(named.contains(&serial.to_hex()), "{serial:?} signed but not logged: {named:?}");
    }
    assert!(logged.iter().all(|e| e.record.key.is_some()), "each batch names the responder key");
    assert_eq!(named.len(), 3 + 1, "presigned 3, re-signed 1 after the revoke");
}

/// Runs one SQL statement on the database file from outside custos.
async fn sql(db: &std::path::Path, statement: &str) {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    pool.execute(sqlx::AssertSqlSafe(statement.to_string())).await.expect("statement");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_stops_while_the_audit_log_refuses_writes_and_nothing_is_lost() {
    use custos_pki::ocsp::{ResponseStatus, error_response};
    let (dir, ca, serials) = custos_with_certificates(2).await;
    let publisher = StatusPublisher::start(ca.clone()).await.expect("start");
    publisher.presign(1_000).await.expect("presign");
    publisher.set_max_unlogged_signatures(20);
    let issuing = ca.issuer(&common::ME, "issuing-1").await.expect("issuer");
    let hashes = IssuerHashes::from_certificate(&issuing.cert_der).expect("hashes");
    let id = hashes.cert_id(HashAlgorithm::Sha1, &serials[0]);
    let presigned = publisher.ocsp(&encode_request(std::slice::from_ref(&id), None)).await;
    let count_signed = |ca: Arc<Ca>| async move {
        let filter = custos_store::AuditFilter {
            action: Some("ocsp.sign".into()),
            from: Some(0),
            limit: 10_000,
            ..Default::default()
        };
        ca.audit_tail(&common::ME, &filter)
            .await
            .expect("tail")
            .iter()
            .map(|e| {
                let d: serde_json::Value = serde_json::from_str(&e.record.details).expect("json");
                d["responses"].as_u64().expect("responses")
            })
            .sum::<u64>()
    };
    let logged_before = count_signed(ca.clone()).await;

    // The audit log now refuses every write, as a full disk or a lost database would.
    let db = dir.path().join("data").join("custos.db");
    sql(&db, "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'refused'); END").await;
    for n in 0..5u8 {
        // A fresh signature cannot be logged, so it never leaves: one certificate
        // gets its pre-signed (logged) response, its nonce left out.
        let nonce = [n; 16];
        let held = publisher.ocsp(&encode_request(std::slice::from_ref(&id), Some(&nonce))).await;
        assert_eq!(held.der, presigned.der, "request {n}: the pre-signed answer, not the unlogged one");
        assert!(publisher.poll().await.is_ok(), "a refused log does not stop revocations being applied");
    }
    // Signing on demand stopped at the first refused write: one signature was made, none since.
    assert_eq!(publisher.unlogged_signatures(), 1);
    // A request for two certificates, which needs a new signature, is told to try later.
    let both: Vec<_> = serials.iter().map(|s| hashes.cert_id(HashAlgorithm::Sha1, s)).collect();
    let refused = publisher.ocsp(&encode_request(&both, None)).await;
    assert_eq!(*refused.der, error_response(ResponseStatus::TryLater));
    assert_eq!(publisher.unlogged_signatures(), 1, "nothing was signed after the log refused");
    assert_eq!(count_signed(ca.clone()).await, logged_before, "nothing reached the refused log");

    // The log accepts writes again: the next poll writes the one held signature, and signing resumes.
    sql(&db, "DROP TRIGGER refuse_audit").await;
    publisher.poll().await.expect("poll");
    assert_eq!(publisher.unlogged_signatures(), 0);
    assert_eq!(count_signed(ca.clone()).await, logged_before + 1, "the signature made while refused is logged");
    // A new signature is in the log when its response is returned, without any poll.
    let again = publisher.ocsp(&encode_request(&both, None)).await;
    assert!(again.der.len() > 100, "signed again: {} bytes", again.der.len());
    assert_eq!(publisher.unlogged_signatures(), 0, "released only once logged");
    assert_eq!(
        count_signed(ca.clone()).await,
        logged_before + 2,
        "the two-certificate response is one signature, logged too"
    );
    // None of the 21 asked-for signatures named a serial: repeating a request grows the log by a count.
    let filter = custos_store::AuditFilter {
        action: Some("ocsp.sign".into()),
        from: Some(0),
        limit: 10_000,
        ..Default::default()
    };
    let entries = ca.audit_tail(&common::ME, &filter).await.expect("tail");
    let demand = entries
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.record.details).expect("json"))
        .filter(|d| d["on_demand"] == true)
        .collect::<Vec<_>>();
    assert!(demand.len() <= 3 && demand.iter().all(|d| d.get("serials").is_none()), "{demand:?}");
    let report = ca.verify_log(&common::ME, None, None).await.expect("the log verifies");
    assert!(report.entries > 0);
}
