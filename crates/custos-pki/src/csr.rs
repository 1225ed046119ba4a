//! Certificate signing requests (PKCS#10, RFC 2986): parse, verify, judge the key.
//!
//! Only the public key and the proof of possession are taken from a CSR; the
//! subject, SANs and extensions of the certificate come from custos policy,
//! so nothing a requester asks for in the CSR can widen what it gets.

use custos_types::{KeyAlgorithm, PublicKey};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as ParsedKey;

use crate::PkiError;

/// Upper bound on a CSR's size; a real one is under 4 KiB even with RSA-4096.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// A CSR whose signature verified and whose key custos accepts.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    /// The requester's public key.
    pub public_key: PublicKey,
    /// Its algorithm (for RSA, the size).
    pub algorithm: KeyAlgorithm,
    /// The subject the requester asked for, for display only.
    pub requested_subject: String,
}

impl CertificateRequest {
    /// Parses a CSR given as PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER.
    pub fn parse(input: &[u8]) -> Result<CertificateRequest, PkiError> {
        if input.len() > MAX_CSR_BYTES {
            return Err(PkiError::MalformedCsr(format!(
                "{} bytes is larger than the {MAX_CSR_BYTES}-byte limit",
                input.len()
            )));
        }
        let trimmed = input.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN") {
            let pem = pem::parse(trimmed).map_err(|e| PkiError::MalformedCsr(format!("PEM: {e}")))?;
            if pem.tag() != "CERTIFICATE REQUEST" && pem.tag() != "NEW CERTIFICATE REQUEST" {
                return Err(PkiError::MalformedCsr(format!(
                    "PEM block is {:?}, expected CERTIFICATE REQUEST",
                    pem.tag()
                )));
            }
            Self::from_der(pem.contents())
        } else {
            Self::from_der(input)
        }
    }

    /// Parses and verifies a DER CSR.
    pub fn from_der(der: &[u8]) -> Result<CertificateRequest, PkiError> {
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| PkiError::MalformedCsr(format!("DER: {e}")))?;
        if !rest.is_empty() {
            return Err(PkiError::MalformedCsr(format!("{} trailing bytes after the CSR", rest.len())));
        }
        let sig_alg = &csr.signature_algorithm.algorithm;
        let accepted = [
            OID_SIG_ECDSA_WITH_SHA256,
            OID_SIG_ECDSA_WITH_SHA384,
            OID_PKCS1_SHA256WITHRSA,
            OID_PKCS1_SHA384WITHRSA,
            OID_PKCS1_SHA512WITHRSA,
            OID_PKCS1_RSASSAPSS,
            OID_SIG_ED25519,
        ];
        if !accepted.contains(sig_alg) {
            return Err(PkiError::CsrSignatureAlgorithm(sig_alg.to_id_string()));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let algorithm = key_algorithm(spki)?;
        csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;
        let public_key = PublicKey::new(spki.raw.to_vec(), spki.subject_public_key.data.to_vec());
        Ok(CertificateRequest { public_key, algorithm, requested_subject: info.subject.to_string() })
    }
}

/// Judges a SubjectPublicKeyInfo: which algorithm it is, and whether it is strong enough.
pub fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyAlgorithm, PkiError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let Ok(ParsedKey::RSA(rsa)) = spki.parsed() else {
            return Err(PkiError::UnsupportedKey("RSA key does not parse".into()));
        };
        let bits = rsa.key_size();
        if bits < 2048 {
            return Err(PkiError::WeakKey(format!("RSA-{bits}: at least 2048 bits are required")));
        }
        return KeyAlgorithm::rsa_of_bits(bits)
            .ok_or_else(|| PkiError::UnsupportedKey(format!("RSA-{bits}: use 2048, 3072 or 4096 bits")));
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| PkiError::UnsupportedKey("EC key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            return Ok(KeyAlgorithm::EcdsaP256);
        }
        if curve == OID_NIST_EC_P384 {
            return Ok(KeyAlgorithm::EcdsaP384);
        }
        return Err(PkiError::UnsupportedKey(format!("EC curve {} (use P-256 or P-384)", curve.to_id_string())));
    }
    if *oid == OID_SIG_ED25519 {
        return Ok(KeyAlgorithm::Ed25519);
    }
    Err(PkiError::UnsupportedKey(format!("key type {}", oid.to_id_string())))
}
