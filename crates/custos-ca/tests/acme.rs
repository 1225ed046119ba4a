//! ACME rules on a real SQLite custos, driven by a small in-process client
//! (JWS made with aws-lc-rs): each bad request gets its ACME error type and
//! changes nothing; an order runs to a certificate; ARI moves the window into
//! the past while an incident covers the certificate, and a new order with
//! `replaces` re-establishes the connection. The network side of validation
//! is replaced here by the client's own table of served key authorizations
//! (custos-node dials real listeners; certbot and lego exercise that in the
//! CLI's tests).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use custos_acme::{AcmeError, CertId, Jwk, ProblemType, b64u};
use custos_ca::acme::{Acme, AcmeSettings, ChallengeValidator};
use custos_ca::incident::{Declaration, Scope};
use custos_ca::{ConnectionOptions, InitOptions, KeyAlgorithm, Profile};
use custos_store::SqlStore;
use custos_store::prelude::*;
use serde_json::{Value, json};

const BASE: &str = "https://ca.test/acme";

/// Key authorizations "served" by the test client, by token.
#[derive(Default)]
struct Served(Mutex<HashMap<String, String>>);

#[async_trait::async_trait]
impl ChallengeValidator for Served {
    fn supported(&self) -> Vec<&'static str> {
        vec!["http-01"]
    }

    async fn validate(&self, _kind: &str, name: &str, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        match self.0.lock().expect("served").get(token) {
            Some(v) if v == key_authorization => Ok(()),
            Some(_) => Err(AcmeError::new(ProblemType::IncorrectResponse, format!("{name} served another value"))),
            None => Err(AcmeError::new(ProblemType::Connection, format!("{name} served nothing"))),
        }
    }
}

struct Client {
    pair: EcdsaKeyPair,
    jwk: Jwk,
    kid: Option<String>,
}

impl Client {
    fn new() -> Client {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
        let p = pair.public_key().as_ref().to_vec();
        let jwk = Jwk::Ec { crv: "P-256", x: p[1..33].to_vec(), y: p[33..].to_vec() };
        Client { pair, jwk, kid: None }
    }

    fn sign(&self, url: &str, nonce: &str, payload: Option<&Value>) -> Vec<u8> {
        let mut header = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match &self.kid {
            Some(kid) => header["kid"] = json!(kid),
            None => header["jwk"] = self.jwk.to_value(),
        }
        let protected = b64u(header.to_string().as_bytes());
        let payload = payload.map(|p| b64u(p.to_string().as_bytes())).unwrap_or_default();
        let sig = self.pair.sign(&SystemRandom::new(), format!("{protected}.{payload}").as_bytes()).expect("sign");
        json!({"protected": protected, "payload": payload, "signature": b64u(sig.as_ref())}).to_string().into_bytes()
    }
}

fn eab(kid: &str, key: &str, jwk: &Jwk, url: &str) -> Value {
    let protected = b64u(json!({"alg": "HS256", "kid": kid, "url": url}).to_string().as_bytes());
    let payload = b64u(jwk.canonical().as_bytes());
    let key = custos_acme::from_b64u(key, "key").expect("key");
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        format!("{protected}.{payload}").as_bytes(),
    );
    json!({"protected": protected, "payload": payload, "signature": b64u(tag.as_ref())})
}

struct World {
    acme: Acme,
    ca: Arc<custos_ca::Ca>,
    store: Arc<SqlStore>,
    served: Arc<Served>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, store) = common::init(dir.path(), &InitOptions::default(), b"acme test passphrase").await;
        for (tenant, connection, pattern) in [("acme", "web", "*.acme.example"), ("other", "site", "*.other.example")] {
            ca.add_tenant(&common::ME, tenant).await.expect("tenant");
            let options = ConnectionOptions {
                profile: Profile::Server,
                allowed_sans: vec![pattern.into()],
                key_algorithm: KeyAlgorithm::EcdsaP256,
                validity_days: Some(90),
            };
            ca.add_connection(&common::ME, tenant, connection, &options).await.expect("connection");
        }
        let ca = Arc::new(ca);
        let served = Arc::new(Served::default());
        let settings = AcmeSettings {
            base_url: BASE.into(),
            nonce_lifetime_s: 3600,
            order_lifetime_s: 3600,
            max_accounts_per_tenant: 3,
            ari_retry_after_s: 60,
        };
        let acme = Acme::new(ca.clone(), settings, served.clone());
        World { acme, ca, store, served, _dir: dir }
    }

    async fn nonce(&self) -> String {
        self.acme.new_nonce().await.expect("nonce")
    }

    async fn audit_size(&self) -> u64 {
        self.store.audit_size().await.expect("audit size")
    }

    async fn binding(&self, tenant: &str, connection: Option<&str>) -> (String, String) {
        let (kid, key) = self.ca.create_acme_binding(&common::ME, tenant, connection, 3600).await.expect("binding");
        (kid, key.to_string())
    }

    /// newAccount with an EAB of `tenant`; sets the client's kid.
    async fn register(&self, client: &mut Client, tenant: &str, connection: Option<&str>) -> Result<bool, AcmeError> {
        let (kid, key) = self.binding(tenant, connection).await;
        let url = format!("{BASE}/new-account");
        let payload =
            json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab(&kid, &key, &client.jwk, &url)});
        let v = self.acme.verify(&client.sign(&url, &self.nonce().await, Some(&payload)), &url).await?;
        let (account, created) = self.acme.new_account(&v).await?;
        client.kid = Some(self.acme.account_url(&account));
        Ok(created)
    }

    async fn post(
        &self,
        client: &Client,
        path: &str,
        payload: Option<&Value>,
    ) -> Result<custos_ca::acme::Verified, AcmeError> {
        let url = format!("{BASE}/{path}");
        self.acme.verify(&client.sign(&url, &self.nonce().await, payload), &url).await
    }

    /// An order for `names`, every challenge answered: returns the order id.
    async fn ready_order(&self, client: &Client, names: &[&str], replaces: Option<&str>) -> String {
        let mut payload =
            json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()});
        if let Some(r) = replaces {
            payload["replaces"] = json!(r);
        }
        let v = self.post(client, "new-order", Some(&payload)).await.expect("verified");
        let (order, authzs) = self.acme.new_order(&v).await.expect("order");
        for z in authzs {
            self.served
                .0
                .lock()
                .expect("served")
                .insert(z.token.clone(), custos_acme::key_authorization(&z.token, &client.jwk));
            let v = self.post(client, &format!("chall/{}/http-01", z.id), Some(&json!({}))).await.expect("verified");
            let done = self.acme.challenge(&v, &z.id, "http-01").await.expect("challenge");
            assert_eq!(done.status, "valid");
        }
        order.id
    }

    async fn finalize(
        &self,
        client: &Client,
        order: &str,
        names: &[&str],
    ) -> Result<custos_store::AcmeOrderRecord, AcmeError> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).expect("csr");
        let v = self.post(client, &format!("order/{order}/finalize"), Some(&json!({"csr": b64u(csr.der())}))).await?;
        self.acme.finalize(&v, order).await
    }
}

fn kind(r: Result<impl std::fmt::Debug, AcmeError>) -> ProblemType {
    r.expect_err("refused").kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_acme_error_and_change_nothing() {
    let w = World::new().await;
    let mut alice = Client::new();
    assert!(w.register(&mut alice, "acme", Some("web")).await.expect("account"), "created");
    let before = w.audit_size().await;
    let certificates = w.store.certificates(&Default::default()).await.expect("list").len();

    // A replayed nonce.
    let url = format!("{BASE}/new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "www.acme.example"}]});
    let nonce = w.nonce().await;
    let body = alice.sign(&url, &nonce, Some(&payload));
    w.acme.verify(&body, &url).await.expect("first use");
    assert_eq!(kind(w.acme.verify(&body, &url).await), ProblemType::BadNonce);
    assert_eq!(
        kind(w.acme.verify(&alice.sign(&url, "never-issued", Some(&payload)), &url).await),
        ProblemType::BadNonce
    );
    // A JWS made for another URL.
    let elsewhere = alice.sign(&format!("{BASE}/new-account"), &w.nonce().await, Some(&payload));
    assert_eq!(kind(w.acme.verify(&elsewhere, &url).await), ProblemType::Unauthorized);
    // A signature by another key under alice's kid.
    let mallory = Client { kid: alice.kid.clone(), ..Client::new() };
    assert_eq!(
        kind(w.acme.verify(&mallory.sign(&url, &w.nonce().await, Some(&payload)), &url).await),
        ProblemType::Malformed
    );
    // No nonce; not JSON; an unknown account.
    let url_nonce = {
        let header = json!({"alg": "ES256", "url": url, "kid": alice.kid});
        let protected = b64u(header.to_string().as_bytes());
        let sig = alice.pair.sign(&SystemRandom::new(), format!("{protected}.").as_bytes()).expect("sign");
        json!({"protected": protected, "payload": "", "signature": b64u(sig.as_ref())}).to_string()
    };
    assert_eq!(kind(w.acme.verify(url_nonce.as_bytes(), &url).await), ProblemType::BadNonce);
    assert_eq!(kind(w.acme.verify(b"{not json", &url).await), ProblemType::Malformed);
    let ghost = Client { kid: Some(format!("{BASE}/acct/nobody")), ..Client::new() };
    assert_eq!(
        kind(w.acme.verify(&ghost.sign(&url, &w.nonce().await, None), &url).await),
        ProblemType::AccountDoesNotExist
    );

    // Names outside the connection's policy; a name of another tenant; not a dns identifier.
    for (names, expected) in [
        (json!([{"type": "dns", "value": "www.other.example"}]), ProblemType::RejectedIdentifier),
        (
            json!([{"type": "dns", "value": "www.acme.example"}, {"type": "dns", "value": "evil.example"}]),
            ProblemType::RejectedIdentifier,
        ),
        (json!([{"type": "dns", "value": "*.acme.example"}]), ProblemType::RejectedIdentifier),
        (json!([{"type": "ip", "value": "192.0.2.1"}]), ProblemType::UnsupportedIdentifier),
        (json!([]), ProblemType::Malformed),
    ] {
        let v = w.post(&alice, "new-order", Some(&json!({"identifiers": names}))).await.expect("verified");
        assert_eq!(kind(w.acme.new_order(&v).await), expected, "{names}");
    }
    assert_eq!(w.audit_size().await, before, "no refused request wrote an audit entry");

    // A CSR whose names are not the order's; then one with a key too weak.
    let order = w.ready_order(&alice, &["www.acme.example"], None).await;
    let after_challenge = w.audit_size().await;
    assert_eq!(kind(w.finalize(&alice, &order, &["www.acme.example", "api.acme.example"]).await), ProblemType::BadCsr);
    assert_eq!(kind(w.finalize(&alice, &order, &["api.acme.example"]).await), ProblemType::BadCsr);
    let v = w.post(&alice, &format!("order/{order}/finalize"), Some(&json!({"csr": "AAAA"}))).await.expect("verified");
    assert_eq!(kind(w.acme.finalize(&v, &order).await), ProblemType::BadCsr);
    assert_eq!(w.audit_size().await, after_challenge);
    assert_eq!(w.store.certificates(&Default::default()).await.expect("list").len(), certificates, "nothing issued");
    // Another account may not touch alice's order.
    let mut bob = Client::new();
    w.register(&mut bob, "other", None).await.expect("bob");
    let v = w.post(&bob, &format!("order/{order}"), None).await.expect("verified");
    assert_eq!(kind(w.acme.order(&v, &order).await), ProblemType::Malformed);

    // EAB: a wrong MAC key, a used key id, a key id of another tenant bound to a reused account key.
    let (kid, _) = w.binding("acme", None).await;
    let mut carol = Client::new();
    let url = format!("{BASE}/new-account");
    let forged = json!({"externalAccountBinding": eab(&kid, &b64u(&[7u8; 32]), &carol.jwk, &url)});
    let v = w.acme.verify(&carol.sign(&url, &w.nonce().await, Some(&forged)), &url).await.expect("verified");
    assert_eq!(kind(w.acme.new_account(&v).await), ProblemType::Unauthorized);
    let none = json!({"termsOfServiceAgreed": true});
    let v = w.acme.verify(&carol.sign(&url, &w.nonce().await, Some(&none)), &url).await.expect("verified");
    assert_eq!(kind(w.acme.new_account(&v).await), ProblemType::ExternalAccountRequired);
    // Alice's key with another tenant's EAB: the existing account comes back, still bound to acme/web.
    alice.kid = None;
    assert!(!w.register(&mut alice, "other", None).await.expect("existing"), "not created");
    let v = w
        .post(&alice, "new-order", Some(&json!({"identifiers": [{"type": "dns", "value": "www.other.example"}]})))
        .await
        .expect("v");
    assert_eq!(kind(w.acme.new_order(&v).await), ProblemType::RejectedIdentifier, "the account is still acme's");
    // Accounts per tenant are limited (3 here: bob made one of other's, carol and dave two more).
    assert!(w.register(&mut carol, "other", None).await.is_ok());
    let mut dave = Client::new();
    assert!(w.register(&mut dave, "other", None).await.is_ok());
    assert_eq!(kind(w.register(&mut Client::new(), "other", None).await), ProblemType::RateLimited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_runs_to_a_certificate_and_ari_drives_the_renewal_after_an_incident() {
    let w = World::new().await;
    let mut alice = Client::new();
    w.register(&mut alice, "acme", None).await.expect("account");
    let names = ["www.acme.example", "api.acme.example"];
    let order = w.ready_order(&alice, &names, None).await;
    let done = w.finalize(&alice, &order, &names).await.expect("finalized");
    assert_eq!(done.status, "valid");
    let serial = done.certificate.clone().expect("serial");
    // Finalizing again returns the same order; nothing new is issued.
    assert_eq!(w.finalize(&alice, &order, &names).await.expect("again").certificate, Some(serial.clone()));
    let v = w.post(&alice, &format!("cert/{serial}"), None).await.expect("verified");
    let pem = w.acme.certificate(&v, &serial).await.expect("chain").pem;
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf and issuing CA");
    let record = w.store.certificate(&serial).await.expect("read").expect("there");
    assert_eq!((record.connection.as_str(), record.key_origin.as_str()), ("web", "acme"));
    let mut sans = record.sans.clone();
    sans.sort();
    assert_eq!(sans, vec!["api.acme.example", "www.acme.example"]);

    // ARI: the certificate id from its AKI and serial; the window sits in the last third.
    let facts = custos_pki::inspect::certificate_facts(&record.der).expect("facts");
    let id = CertId { key_id: facts.authority_key_id.expect("aki"), serial: hex::decode(&serial).expect("hex") };
    let (info, retry) = w.acme.renewal_info(&id.encode()).await.expect("ari").expect("known");
    let start = custos_acme::parse_rfc3339(&info.suggested_window.start, "start").expect("t");
    assert!(start > record.not_before + (record.not_after - record.not_before) * 2 / 3, "{info:?}");
    assert_eq!((retry, info.explanation_url), (60, None));
    let wrong_issuer = CertId { key_id: vec![1, 2, 3], ..id.clone() };
    assert!(w.acme.renewal_info(&wrong_issuer.encode()).await.expect("ari").is_none());

    // An incident that keeps the old certificate valid until the connection moves.
    let declaration = Declaration {
        scope: Scope::Cert(serial.parse().expect("serial")),
        reason: custos_pki::Reason::Superseded,
        since: None,
        note: String::new(),
    };
    let incident = w.ca.declare_incident(&common::ME, &declaration).await.expect("declare");
    let keys = w._dir.path().join("keys.jsonl");
    let summary = w.ca.execute_incident(&common::ME, &incident.id, &keys, &|_| {}).await.expect("execute");
    assert_eq!((summary.replaced, summary.keys_file), (0, None), "no key made for an ACME client, no key file");
    assert!(!keys.exists());
    let (info, _) = w.acme.renewal_info(&id.encode()).await.expect("ari").expect("known");
    let end = custos_acme::parse_rfc3339(&info.suggested_window.end, "end").expect("t");
    assert!(end < time::OffsetDateTime::now_utc().unix_timestamp(), "renew now: {info:?}");
    assert_eq!(info.explanation_url, Some(format!("{BASE}/notice/{}", incident.id)));
    assert!(w.acme.notice(&incident.id).await.expect("notice").expect("there").contains("renew"));

    // The client renews, naming the certificate it replaces.
    let order = w.ready_order(&alice, &names, Some(&id.encode())).await;
    let renewed = w.finalize(&alice, &order, &names).await.expect("renewed");
    let new_serial = renewed.certificate.expect("serial");
    let connection = w.store.incident_connection(&incident.id, "acme", "web").await.expect("read").expect("there");
    assert_eq!(connection.state, custos_ca::ConnectionState::OldCertificateRetired);
    assert_eq!(connection.replacement, Some(new_serial));
    let old = w.store.certificate(&serial).await.expect("read").expect("there");
    assert_eq!(old.status, custos_types::CertificateStatus::Revoked, "the old certificate is retired");
    w.ca.close_incident(&common::ME, &incident.id).await.expect("close");

    // revokeCert signed by the certificate's own key is refused for a key that is not its.
    let stranger = Client::new();
    let url = format!("{BASE}/revoke-cert");
    let payload = json!({"certificate": b64u(&old.der)});
    let v = w.acme.verify(&stranger.sign(&url, &w.nonce().await, Some(&payload)), &url).await.expect("verified");
    assert_eq!(kind(w.acme.revoke(&v).await), ProblemType::Unauthorized);
    // By the account: already revoked.
    let v = w.post(&alice, "revoke-cert", Some(&payload)).await.expect("verified");
    assert_eq!(kind(w.acme.revoke(&v).await), ProblemType::AlreadyRevoked);

    // keyChange: alice rolls to a new key; the old key no longer signs.
    let new = Client::new();
    let url = format!("{BASE}/key-change");
    let inner_header = json!({"alg": "ES256", "url": url, "jwk": new.jwk.to_value()});
    let inner_payload = json!({"account": alice.kid, "oldKey": alice.jwk.to_value()});
    let protected = b64u(inner_header.to_string().as_bytes());
    let payload = b64u(inner_payload.to_string().as_bytes());
    let sig = new.pair.sign(&SystemRandom::new(), format!("{protected}.{payload}").as_bytes()).expect("sign");
    let inner = json!({"protected": protected, "payload": payload, "signature": b64u(sig.as_ref())});
    let v = w.post(&alice, "key-change", Some(&inner)).await.expect("verified");
    w.acme.key_change(&v).await.expect("rolled");
    assert_eq!(kind(w.post(&alice, "new-order", None).await), ProblemType::Malformed, "the old key is gone");
    let rolled = Client { kid: alice.kid.clone(), ..new };
    let v = w
        .post(&rolled, &format!("acct/{}", alice.kid.as_deref().and_then(|k| k.rsplit('/').next()).expect("id")), None)
        .await;
    assert!(v.is_ok(), "the new key signs for the account");

    // Deactivated: the account's next request is refused at once.
    let id = alice.kid.as_deref().and_then(|k| k.rsplit('/').next()).expect("id").to_string();
    let v = w.post(&rolled, &format!("acct/{id}"), Some(&json!({"status": "deactivated"}))).await.expect("verified");
    assert_eq!(w.acme.account(&v, &id).await.expect("deactivated").status, "deactivated");
    assert_eq!(kind(w.post(&rolled, "new-order", None).await), ProblemType::Unauthorized, "a deactivated account");
}
