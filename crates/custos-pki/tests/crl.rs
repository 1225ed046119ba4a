//! CRLs as x509-parser (not our encoder) reads them: structure, entries,
//! extensions, and a signature that verifies under the CA's key.

use custos_keys::soft::SoftKeyStore;
use custos_keys::{KeyAlgorithm, KeyStore};
use custos_pki::crl::{CrlSpec, RevokedEntry};
use custos_pki::{CertificateSpec, CertificateTemplate, Profile, Reason, Serial};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

fn root(algorithm: KeyAlgorithm) -> (Vec<u8>, custos_pki::CaIssuer) {
    let (store, _) = SoftKeyStore::create(b"pw").expect("store");
    let key = store.generate(algorithm, "root").expect("key");
    let now = OffsetDateTime::now_utc();
    let template = CertificateTemplate::new(CertificateSpec {
        serial: Serial::random().expect("serial"),
        profile: Profile::RootCa,
        common_name: "CRL test root".into(),
        organization: None,
        sans: vec![],
        not_before: now,
        not_after: now + time::Duration::days(30),
        urls: None,
    })
    .expect("template");
    let (cert, issuer) = template.self_sign(key.signer).expect("self-sign");
    (cert.der, issuer)
}

#[test]
fn crls_parse_and_verify_for_every_ca_key_type() {
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048, KeyAlgorithm::Ed25519] {
        let (cert_der, issuer) = root(algorithm);
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).expect("cert");
        let now = OffsetDateTime::now_utc();
        let revoked: Vec<RevokedEntry> = (1..=1000u32)
            .map(|i| RevokedEntry {
                serial: Serial::from_bytes(&(0x8000_0000u32 + i).to_be_bytes()).expect("serial"),
                revoked_at: now,
                reason: [None, Some(Reason::KeyCompromise), Some(Reason::Unspecified)][i as usize % 3],
                invalidity_date: (i % 2 == 0).then_some(now - time::Duration::days(1)),
            })
            .collect();
        let spec = CrlSpec {
            number: 300,
            this_update: now,
            next_update: now + time::Duration::hours(1),
            user_certs_at: Some("http://127.0.0.1:8080/crl/x.crl".into()),
            revoked,
        };
        let der = issuer.sign_crl(&spec).expect("sign");
        let (rest, crl) = CertificateRevocationList::from_der(&der).expect("parses");
        assert!(rest.is_empty());
        crl.verify_signature(cert.public_key()).unwrap_or_else(|e| panic!("{algorithm}: signature: {e:?}"));
        assert_eq!(crl.iter_revoked_certificates().count(), 1000);
        let with_reason = crl.iter_revoked_certificates().filter(|e| e.reason_code().is_some()).count();
        let with_invalidity = crl.iter_revoked_certificates().filter(|e| e.invalidity_date().is_some()).count();
        // i % 3 == 1 is keyCompromise; unspecified is written as no reason (RFC 5280 5.3.1).
        assert_eq!((with_reason, with_invalidity), (334, 500), "{algorithm}");
        assert!(crl.iter_revoked_certificates().filter_map(|e| e.reason_code()).all(|(_, r)| r.0 == 1));
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("300".to_string()));
        let first = crl.iter_revoked_certificates().next().expect("entry");
        assert_eq!(first.raw_serial(), &[0x00, 0x80, 0x00, 0x00, 0x01], "positive INTEGER with a sign octet");
        assert_eq!(crl.issuer(), cert.subject());
    }
}

#[test]
fn an_empty_crl_omits_the_revoked_list() {
    let (cert_der, issuer) = root(KeyAlgorithm::EcdsaP256);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).expect("cert");
    let now = OffsetDateTime::now_utc();
    let spec = CrlSpec {
        number: 1,
        this_update: now,
        next_update: now + time::Duration::hours(1),
        user_certs_at: None,
        revoked: vec![],
    };
    let der = issuer.sign_crl(&spec).expect("sign");
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("parses");
    crl.verify_signature(cert.public_key()).expect("verifies");
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
}

#[test]
fn an_issuer_refuses_a_key_that_is_not_its_certificates() {
    let (cert_der, _) = root(KeyAlgorithm::EcdsaP256);
    let (store, _) = SoftKeyStore::create(b"pw").expect("store");
    let other = store.generate(KeyAlgorithm::EcdsaP256, "other").expect("key");
    let err = custos_pki::CaIssuer::new(&cert_der, other.signer).expect_err("mismatched key");
    assert!(err.to_string().contains("does not match the CA certificate"), "{err}");
}
