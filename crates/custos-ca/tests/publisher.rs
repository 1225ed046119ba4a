//! The status publisher on a real SQLite store: pre-signing, invalidation by
//! the revocation feed, CRL publishing. openssl reads what it signs.

use std::sync::Arc;

use custos_ca::{Ca, ConnectionOptions, InitOptions, IssueRequest, KeySource, StatusPublisher};
use custos_keys::KeyAlgorithm;
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, encode_request};
use custos_pki::{Profile, Reason, Serial};

fn openssl_text(dir: &std::path::Path, der: &[u8]) -> String {
    let f = dir.join("resp.der");
    std::fs::write(&f, der).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-respin", f.to_str().expect("p"), "-resp_text", "-noverify"])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_cached_answers_and_crls_through_the_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::init(&dir.path().join("data"), &InitOptions::default(), b"pw", "test").await.expect("init");
    ca.add_tenant("t").await.expect("tenant");
    let options = ConnectionOptions {
        profile: Profile::Client,
        allowed_sans: vec![],
        key_algorithm: KeyAlgorithm::EcdsaP256,
        validity_days: None,
    };
    ca.add_connection("t", "c", &options).await.expect("connection");
    let mut serials = Vec::new();
    for _ in 0..3 {
        let issued = ca
            .issue(IssueRequest {
                tenant: "t".into(),
                connection: "c".into(),
                profile: None,
                sans: vec![],
                validity_secs: None,
                key: KeySource::Generate(None),
            })
            .await
            .expect("issue");
        serials.push(issued.record.serial.parse::<Serial>().expect("serial"));
    }
    let ca = Arc::new(ca);
    let publisher = StatusPublisher::start(ca.clone()).await.expect("start");
    assert_eq!(publisher.presign(1_000).await.expect("presign"), 3);
    assert_eq!(publisher.presign(1_000).await.expect("presign"), 0, "already signed");
    assert_eq!(publisher.refresh().await.expect("refresh"), 0, "nothing is old yet");

    let issuing = ca.issuer("issuing-1").await.expect("issuer");
    let hashes = IssuerHashes::from_certificate(&issuing.cert_der).expect("hashes");
    let request = encode_request(&[hashes.cert_id(HashAlgorithm::Sha1, &serials[0])], None);
    let before = publisher.ocsp(&request).await;
    assert!(openssl_text(dir.path(), &before.der).contains("Cert Status: good"));
    assert_eq!(publisher.ocsp(&request).await.der, before.der, "answered from the pre-signed cache");

    ca.revoke(&serials[0], Reason::KeyCompromise, None).await.expect("revoke");
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

    // Every response signature is in the audit log, named by serial, under the responder's key.
    publisher.poll().await.expect("poll flushes the signing journal");
    let filter = custos_store::AuditFilter {
        action: Some("ocsp.sign".into()),
        from: Some(0),
        limit: 1000,
        ..Default::default()
    };
    let logged = ca.audit_tail(&filter).await.expect("tail");
    let named: Vec<String> = logged
        .iter()
        .flat_map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.record.details).expect("json");
            d["serials"]
                .as_array()
                .expect("serials")
                .iter()
                .map(|s| s.as_str().expect("str").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for serial in &serials {
        assert!(named.contains(&serial.to_hex()), "{serial:?} signed but not logged: {named:?}");
    }
    assert!(logged.iter().all(|e| e.record.key.is_some()), "each batch names the responder key");
    assert_eq!(named.len(), 3 + 1 + 1, "presigned 3, re-signed 1 after the revoke, 1 SHA-256 CertID on demand");
}
