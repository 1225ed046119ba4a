//! Connection keys in custody on a real SQLite custos with the sealed soft
//! store: a connection created with its active and standby keys, who may
//! sign with them, what the policy refuses (and logs), signatures that verify
//! (aws-lc-rs here; PyJWT and openssl in the CLI's API tests) and an audit
//! entry for every signature, durable before it was returned.

mod common;

use std::sync::Arc;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_ca::custody::{AssertionRequest, CustodyOptions};
use custos_ca::{CaError, ConnectionOptions, CustodySlot, InitOptions, KeyAlgorithm, Principal, Profile, Role};

const PASSPHRASE: &[u8] = b"custody test passphrase";
const AUD: &str = "https://login.microsoftonline.example/tenant-a/oauth2/v2.0/token";

fn options() -> ConnectionOptions {
    ConnectionOptions {
        profile: Profile::Client,
        allowed_sans: vec![],
        key_algorithm: KeyAlgorithm::EcdsaP256,
        validity_days: Some(365),
    }
}

fn service(tenant: &str, connection: Option<&str>) -> Principal {
    Principal::Tenant { account: "tok_svc".into(), tenant: tenant.into(), connection: connection.map(str::to_string) }
}

fn request(aud: &str) -> AssertionRequest {
    AssertionRequest { aud: aud.into(), iss: "app-1".into(), sub: "app-1".into(), alg: None, lifetime_secs: None }
}

/// The SubjectPublicKeyInfo's key bytes of a certificate (what aws-lc-rs verifies against).
/// A custos in `dir` with tenant `acme` and its custodied connection `mail`
/// (with a standby if asked), whose policy allows [`AUD`] and client `app-1`;
/// with the custody options used and the keys made.
async fn custodied(
    dir: &std::path::Path,
    algorithm: KeyAlgorithm,
    standby: bool,
) -> (Arc<custos_ca::Ca>, Arc<custos_store::SqlStore>, CustodyOptions, Vec<custos_ca::custody::CustodyKeyView>) {
    let (ca, store) = common::init(dir, &InitOptions::default(), PASSPHRASE).await;
    ca.add_tenant(&common::ME, "acme").await.expect("tenant");
    let ca = Arc::new(ca);
    let custody = CustodyOptions { algorithm, standby, sans: vec![], validity_secs: None };
    let keys = ca.add_custody(&common::ME, "acme", "mail", Some(&options()), &custody).await.expect("custody");
    ca.set_signing_policy(&common::ME, "acme", "mail", vec![AUD.into()], vec!["app-1".into()]).await.expect("policy");
    (ca, store, custody, keys)
}

fn public_key_of(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).expect("certificate");
    cert.public_key().subject_public_key.data.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custodied_connections_sign_within_policy_and_log_every_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store) = common::init(dir.path(), &InitOptions::default(), PASSPHRASE).await;
    ca.add_tenant(&common::ME, "acme").await.expect("tenant");
    ca.add_tenant(&common::ME, "other").await.expect("tenant");
    let ca = Arc::new(ca);

    let custody =
        CustodyOptions { algorithm: KeyAlgorithm::EcdsaP256, standby: true, sans: vec![], validity_secs: None };
    let keys = ca.add_custody(&common::ME, "acme", "mail", Some(&options()), &custody).await.expect("custody");
    assert_eq!(keys.iter().map(|k| k.slot).collect::<Vec<_>>(), vec![CustodySlot::Active, CustodySlot::Standby]);
    assert_ne!(keys[0].key_id, keys[1].key_id);
    assert_ne!(keys[0].thumbprint_sha256, keys[1].thumbprint_sha256);
    let listed = ca.custody(&common::ME, "acme", "mail").await.expect("listed");
    assert_eq!(listed.len(), 2);
    let cert = ca.certificate(&common::ME, &keys[0].serial.parse().expect("serial")).await.expect("certificate");
    assert_eq!(cert.key_origin, "custody");
    // Twice is refused, and so is a connection's name given again.
    assert!(matches!(ca.add_custody(&common::ME, "acme", "mail", None, &custody).await, Err(CaError::Policy(_))));
    assert!(ca.add_custody(&common::ME, "acme", "mail", Some(&options()), &custody).await.is_err());
    let ed = CustodyOptions { algorithm: KeyAlgorithm::Ed25519, ..custody.clone() };
    assert!(ca.add_custody(&common::ME, "acme", "ed", Some(&options()), &ed).await.is_err());
    assert!(ca.connections(&common::ME, Some("acme")).await.expect("list").iter().all(|c| c.name != "ed"));

    let svc = service("acme", Some("mail"));
    // No policy yet: refused, and the refusal is in the log.
    let before = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    let refused = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), Some("127.0.0.1")).await;
    assert!(matches!(refused, Err(CaError::Policy(ref m)) if m.contains("no signing policy")), "{refused:?}");
    let after = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    assert_eq!(after, before + 1);
    let entry = &custos_store::AuditStore::audit_entries(store.as_ref(), before, 1).await.expect("entry")[0];
    assert_eq!(entry.record.action, "connection.sign.refused");
    assert_eq!(entry.record.actor, "tenant:acme/mail[tok_svc]");

    // Only a manager of the connection sets the policy.
    assert!(ca.set_signing_policy(&svc, "acme", "mail", vec![AUD.into()], vec!["app-1".into()]).await.is_err());
    assert!(ca.set_signing_policy(&common::ME, "acme", "mail", vec!["http://plain".into()], vec![]).await.is_err());
    ca.set_signing_policy(&common::ME, "acme", "mail", vec![AUD.into()], vec!["app-1".into()]).await.expect("policy");

    let signed = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), Some("127.0.0.1")).await.expect("assertion");
    assert_eq!(signed.alg, "ES256");
    assert_eq!(signed.key_id, keys[0].key_id, "the active key signs, not the standby");
    assert_eq!(signed.exp - signed.iat, 600);
    let parts: Vec<&str> = signed.assertion.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("header");
    assert_eq!(header["x5t#S256"], keys[0].thumbprint_sha256.as_str());
    assert!(header.get("x5t").is_none(), "x5t only for RSA");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("claims");
    assert_eq!((claims["aud"].as_str(), claims["iss"].as_str()), (Some(AUD), Some("app-1")));
    assert_eq!(claims["jti"], signed.jti.as_str());
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let input = format!("{}.{}", parts[0], parts[1]);
    let public = public_key_of(&keys[0].certificate_pem);
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
        .verify(input.as_bytes(), &sig)
        .expect("the assertion verifies against the active certificate's key");
    let logged =
        &custos_store::AuditStore::audit_entries(store.as_ref(), signed.audit_index, 1).await.expect("entry")[0];
    assert_eq!(logged.record.action, "connection.sign");
    let details: serde_json::Value = serde_json::from_str(&logged.record.details).expect("details");
    assert_eq!(details["jti"], signed.jti.as_str());
    assert_eq!(details["caller"], "127.0.0.1");
    assert_eq!(logged.record.key.as_deref(), Some(keys[0].key_id.as_str()));

    // Outside the policy: refused and logged; a lifetime over ten minutes too.
    let before = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    let wrong_aud = ca.sign_assertion(&svc, "acme", "mail", &request("https://evil.example/token"), None).await;
    assert!(matches!(wrong_aud, Err(CaError::Policy(_))), "{wrong_aud:?}");
    let long = AssertionRequest { lifetime_secs: Some(3600), ..request(AUD) };
    assert!(matches!(ca.sign_assertion(&svc, "acme", "mail", &long, None).await, Err(CaError::Policy(_))));
    let rsa_alg = AssertionRequest { alg: Some("PS256".into()), ..request(AUD) };
    assert!(matches!(ca.sign_assertion(&svc, "acme", "mail", &rsa_alg, None).await, Err(CaError::Policy(_))));
    assert_eq!(custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size"), before + 2);

    // Who may sign: a token scoped to the connection, an operator, an admin; not a
    // tenant-wide token, an auditor, or another tenant (which does not see it at all).
    let operator = Principal::Operator { name: "op".into(), role: Role::Operator };
    ca.sign_assertion(&operator, "acme", "mail", &request(AUD), None).await.expect("operator signs");
    let tenant_wide = ca.sign_assertion(&service("acme", None), "acme", "mail", &request(AUD), None).await;
    assert!(matches!(tenant_wide, Err(CaError::Forbidden { .. })), "{tenant_wide:?}");
    let auditor = Principal::Operator { name: "au".into(), role: Role::Auditor };
    assert!(matches!(
        ca.sign_assertion(&auditor, "acme", "mail", &request(AUD), None).await,
        Err(CaError::Forbidden { .. })
    ));
    let stranger = ca.sign_assertion(&service("other", Some("mail")), "acme", "mail", &request(AUD), None).await;
    assert!(matches!(stranger, Err(CaError::UnknownConnection { .. })), "{stranger:?}");
    let other_conn = ca.sign_assertion(&service("acme", Some("crm")), "acme", "mail", &request(AUD), None).await;
    assert!(matches!(other_conn, Err(CaError::UnknownConnection { .. })), "{other_conn:?}");

    // RSA: PS256 by default (x5t too), RS256 when asked; a digest signs with either.
    let rsa = CustodyOptions { algorithm: KeyAlgorithm::Rsa2048, standby: false, ..custody.clone() };
    let rsa_keys = ca.add_custody(&common::ME, "acme", "crm", Some(&options()), &rsa).await.expect("rsa custody");
    assert_eq!(rsa_keys.len(), 1);
    ca.set_signing_policy(&common::ME, "acme", "crm", vec![AUD.into()], vec!["app-1".into()]).await.expect("policy");
    let crm = service("acme", Some("crm"));
    let rsa_public = public_key_of(&rsa_keys[0].certificate_pem);
    for (alg, verify) in
        [(None, &signature::RSA_PSS_2048_8192_SHA256), (Some("RS256"), &signature::RSA_PKCS1_2048_8192_SHA256)]
    {
        let r = AssertionRequest { alg: alg.map(str::to_string), ..request(AUD) };
        let signed = ca.sign_assertion(&crm, "acme", "crm", &r, None).await.expect("rsa assertion");
        let parts: Vec<&str> = signed.assertion.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("header");
        assert_eq!(header["x5t"], rsa_keys[0].thumbprint_sha1.as_str());
        UnparsedPublicKey::new(verify, &rsa_public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).expect("b64"))
            .expect("the RSA assertion verifies");
    }
    let message = b"a TLS 1.3 CertificateVerify input, say";
    let digest: [u8; 32] =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref().try_into().expect("32 bytes");
    let raw = ca.sign_digest(&crm, "acme", "crm", digest, Some("PS256"), None).await.expect("digest");
    UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &rsa_public)
        .verify(message, &raw.signature)
        .expect("the digest signature verifies");
    assert!(ca.sign_digest(&crm, "acme", "crm", digest, Some("ES256"), None).await.is_err());

    // Many concurrent signers: each answer has its own jti and its own durable entry.
    let before = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let ca = ca.clone();
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await }));
    }
    let mut indexes = Vec::new();
    let mut jtis = Vec::new();
    for t in tasks {
        let a = t.await.expect("task").expect("assertion");
        indexes.push(a.audit_index);
        jtis.push(a.jti);
    }
    jtis.sort();
    jtis.dedup();
    indexes.sort();
    indexes.dedup();
    assert_eq!((jtis.len(), indexes.len()), (48, 48));
    assert_eq!(custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size"), before + 48);

    // Revoking the active certificate stops its key from signing.
    ca.revoke(&common::ME, &keys[0].serial.parse().expect("serial"), custos_ca::Reason::Superseded, None)
        .await
        .expect("revoke");
    let revoked = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await;
    assert!(matches!(revoked, Err(CaError::Policy(ref m)) if m.contains("revoked")), "{revoked:?}");

    let (_, state) = ca.verify_log_and_state(&common::ME, None, None).await.expect("verify");
    assert!(state.differences.is_empty(), "{:?}", state.differences);
}

/// A key-compromise incident on a custodied connection: signing moves to the
/// standby before anything is revoked, so a service signing in a loop never
/// fails; the old key is revoked and destroyed, a new standby is certified,
/// no key file is written, and the tenant's acknowledgement closes it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_switches_to_the_standby_without_a_failed_signature() {
    use custos_ca::incident::{Declaration, Scope};
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store, custody, keys) = custodied(dir.path(), KeyAlgorithm::EcdsaP256, true).await;
    let (old, standby) = (keys[0].clone(), keys[1].clone());
    // An unrelated custodied connection is untouched.
    ca.add_custody(&common::ME, "acme", "crm", Some(&options()), &custody).await.expect("custody");

    let svc = service("acme", Some("mail"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signer = {
        let (ca, svc, stop) = (ca.clone(), svc.clone(), stop.clone());
        tokio::spawn(async move {
            let mut by_key: std::collections::BTreeMap<String, usize> = Default::default();
            let mut failures = Vec::new();
            // Bounded: at most 20 000 signatures, or until told to stop.
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                match ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await {
                    Ok(a) => *by_key.entry(a.key_id).or_default() += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (by_key, failures)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let declared = ca
        .declare_incident(
            &common::ME,
            &Declaration {
                scope: Scope::Key(old.key_id.clone()),
                reason: custos_ca::Reason::KeyCompromise,
                since: None,
                note: "the mail connection's key was used from an unknown address".into(),
            },
        )
        .await
        .expect("declare");
    let keys_file = dir.path().join("replacement-keys.jsonl");
    let summary = ca.execute_incident(&common::ME, &declared.id, &keys_file, &|_| {}).await.expect("execute");
    assert_eq!(summary.replaced, 1);
    assert!(!keys_file.exists(), "no key file for a custodied connection");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (by_key, failures) = signer.await.expect("signer");
    assert!(failures.is_empty(), "the service failed to sign: {failures:?}");
    assert!(by_key.contains_key(&old.key_id) && by_key.contains_key(&standby.key_id), "{by_key:?}");

    // The standby signs now, verifiably against the certificate the tenant registered ahead.
    let after = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await.expect("sign after");
    assert_eq!(after.key_id, standby.key_id);
    let parts: Vec<&str> = after.assertion.split('.').collect();
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public_key_of(&standby.certificate_pem))
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).expect("b64"))
        .expect("verifies against the standby's certificate");
    let held = ca.custody(&common::ME, "acme", "mail").await.expect("keys");
    let slot_of = |id: &str| held.iter().find(|k| k.key_id == id).map(|k| k.slot);
    assert_eq!(slot_of(&old.key_id), Some(CustodySlot::Retired));
    assert_eq!(slot_of(&standby.key_id), Some(CustodySlot::Active));
    let fresh: Vec<_> = held.iter().filter(|k| k.slot == CustodySlot::Standby).collect();
    assert_eq!(fresh.len(), 1, "a new standby: {held:?}");
    assert!(fresh[0].key_id != old.key_id && fresh[0].key_id != standby.key_id);
    // The old certificate is revoked, its key destroyed.
    let old_cert = ca.certificate(&common::ME, &old.serial.parse().expect("serial")).await.expect("cert");
    assert_eq!(old_cert.status, custos_ca::CertificateStatus::Revoked);
    let old_key = custos_store::IssuerStore::key(store.as_ref(), &old.key_id).await.expect("read").expect("key");
    assert_eq!(old_key.status, custos_ca::KeyStatus::Destroyed);
    // The other connection kept its keys.
    let crm = ca.custody(&common::ME, "acme", "crm").await.expect("crm");
    assert!(crm.iter().all(|k| k.slot != CustodySlot::Retired));

    // The incident tracks the connection; the tenant's acknowledgement moves it on.
    let status = ca.incident_status(&common::ME, &declared.id).await.expect("status");
    assert_eq!(status.connections.len(), 1);
    assert_eq!(status.connections[0].replacement.as_deref(), Some(standby.serial.as_str()));
    let acked = ca.ack_incident(&svc, &declared.id, "acme", "mail").await.expect("ack");
    assert_eq!(acked.state, custos_ca::ConnectionState::OldCertificateRetired);

    // A second run changes nothing.
    let again = ca.execute_incident(&common::ME, &declared.id, &keys_file, &|_| {}).await.expect("again");
    assert_eq!(again.replaced, 0);
    assert_eq!(ca.custody(&common::ME, "acme", "mail").await.expect("keys").len(), 3);
    let (_, state) = ca.verify_log_and_state(&common::ME, None, None).await.expect("verify");
    assert!(state.differences.is_empty(), "{:?}", state.differences);
}

/// Scheduled rotation: past the maximum age the standby signs, a new standby
/// is certified, the old certificate is revoked (superseded) and its key
/// destroyed; a connection without a standby gets one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_promotes_the_standby_and_makes_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store, custody, keys) = custodied(dir.path(), KeyAlgorithm::EcdsaP256, true).await;
    let lone = CustodyOptions { standby: false, ..custody.clone() };
    ca.add_custody(&common::ME, "acme", "crm", Some(&options()), &lone).await.expect("custody");
    let svc = service("acme", Some("mail"));
    assert_eq!(
        ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await.expect("sign").key_id,
        keys[0].key_id
    );

    // Not yet due: nothing happens.
    let operator = Principal::Operator { name: "op".into(), role: Role::Operator };
    assert!(ca.rotate_custody_keys(&operator, 0).await.is_err(), "operators do not rotate keys");
    assert!(ca.rotate_custody_keys(&Principal::System, 86_400).await.expect("pass").is_empty());
    assert_eq!(ca.custody(&common::ME, "acme", "mail").await.expect("keys").len(), 2);

    // Due (a maximum age of 0): mail rotates; crm, made without a standby, is left as it was made.
    let rotated = ca.rotate_custody_keys(&Principal::System, 0).await.expect("rotate");
    assert_eq!(rotated, vec![("acme".to_string(), "mail".to_string())]);
    assert_eq!(ca.custody(&common::ME, "acme", "crm").await.expect("crm").len(), 1);
    let held = ca.custody(&common::ME, "acme", "mail").await.expect("keys");
    let slot_of = |id: &str| held.iter().find(|k| k.key_id == id).map(|k| k.slot);
    assert_eq!(
        (slot_of(&keys[0].key_id), slot_of(&keys[1].key_id)),
        (Some(CustodySlot::Retired), Some(CustodySlot::Active))
    );
    assert_eq!(held.iter().filter(|k| k.slot == CustodySlot::Standby).count(), 1);
    let signed = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await.expect("sign after rotation");
    assert_eq!(signed.key_id, keys[1].key_id, "the standby signs now");
    let old = ca.certificate(&common::ME, &keys[0].serial.parse().expect("serial")).await.expect("cert");
    assert_eq!(
        (old.status, old.revocation_reason),
        (custos_ca::CertificateStatus::Revoked, Some(custos_ca::Reason::Superseded))
    );
    let old_key = custos_store::IssuerStore::key(store.as_ref(), &keys[0].key_id).await.expect("read").expect("key");
    assert_eq!(old_key.status, custos_ca::KeyStatus::Destroyed);

    // A standby that can no longer sign (its certificate revoked) is replaced on the next pass, not due or not.
    let standby = held.iter().find(|k| k.slot == CustodySlot::Standby).expect("standby").clone();
    ca.revoke(&common::ME, &standby.serial.parse().expect("serial"), custos_ca::Reason::Superseded, None)
        .await
        .expect("revoke the standby");
    assert!(ca.rotate_custody_keys(&Principal::System, 86_400).await.expect("pass").is_empty());
    let held = ca.custody(&common::ME, "acme", "mail").await.expect("keys");
    let slot_of = |id: &str| held.iter().find(|k| k.key_id == id).map(|k| k.slot);
    assert_eq!(slot_of(&standby.key_id), Some(CustodySlot::Retired));
    assert_eq!(slot_of(&keys[1].key_id), Some(CustodySlot::Active), "the signing key stays");
    assert_eq!(held.iter().filter(|k| k.slot == CustodySlot::Standby).count(), 1, "{held:?}");
    let (_, state) = ca.verify_log_and_state(&common::ME, None, None).await.expect("verify");
    assert!(state.differences.is_empty(), "{:?}", state.differences);
}

/// Runs SQL on the database file with Python's sqlite3 (not our code).
fn sqlite(db: &std::path::Path, script: &str) {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.close()"])
        .arg(db)
        .arg(script)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The key signs while the entry commits; when the entry cannot be written,
/// the signature made meanwhile is dropped: no assertion or digest signature
/// leaves without its entry, and none is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signature_leaves_when_its_entry_cannot_be_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store, _, _) = custodied(dir.path(), KeyAlgorithm::Rsa2048, false).await;
    let svc = service("acme", Some("mail"));
    ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await.expect("signs while the log takes entries");

    let db = dir.path().join("custos.db");
    sqlite(
        &db,
        "CREATE TRIGGER stuck BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'the log cannot be written'); END;",
    );
    let size = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    let refused = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await;
    assert!(
        matches!(refused, Err(CaError::Inconsistent(ref m)) if m.contains("no signature was released")),
        "{refused:?}"
    );
    let digest = ca.sign_digest(&svc, "acme", "mail", [7; 32], None, None).await;
    assert!(digest.is_err(), "no digest signature either: {:?}", digest.map(|d| d.audit_index));
    assert_eq!(custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size"), size);

    sqlite(&db, "DROP TRIGGER stuck;");
    let signed = ca.sign_assertion(&svc, "acme", "mail", &request(AUD), None).await.expect("signs again");
    assert_eq!(signed.audit_index, size, "the next entry is the next signature's");
}
