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
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519,
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
    /// The DNS names it asks for: its subjectAltName dNSNames and its
    /// subject's commonName, lowercased. ACME checks these against the order;
    /// the certificate's names still come from custos.
    pub requested_names: Vec<String>,
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
            OID_SIG_ECDSA_WITH_SHA512,
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
        if *sig_alg == OID_SIG_ECDSA_WITH_SHA512 {
            // x509-parser verifies ECDSA with SHA-256 and SHA-384 only.
            let verifier = match algorithm {
                KeyAlgorithm::EcdsaP256 => &aws_lc_rs::signature::ECDSA_P256_SHA512_ASN1,
                KeyAlgorithm::EcdsaP384 => &aws_lc_rs::signature::ECDSA_P384_SHA512_ASN1,
                other => {
                    return Err(PkiError::CsrSignatureAlgorithm(format!("ecdsa-with-SHA512 with a {other} key")));
                }
            };
            aws_lc_rs::signature::UnparsedPublicKey::new(verifier, &spki.subject_public_key.data)
                .verify(info.raw, &csr.signature_value.data)
                .map_err(|_| PkiError::CsrSignature)?;
        } else {
            csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;
        }
        let public_key = PublicKey::new(spki.raw.to_vec(), spki.subject_public_key.data.to_vec());
        let mut requested_names: Vec<String> = Vec::new();
        for cn in info.subject.iter_common_name() {
            if let Ok(name) = cn.as_str() {
                requested_names.push(name.to_ascii_lowercase());
            }
        }
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            requested_names.push(d.to_ascii_lowercase())
                        }
                        // Kept so that a comparison with DNS identifiers fails and says why.
                        other => requested_names.push(format!("(not a DNS name: {other})")),
                    }
                }
            }
        }
        requested_names.sort();
        requested_names.dedup();
        Ok(CertificateRequest { public_key, algorithm, requested_subject: info.subject.to_string(), requested_names })
    }
}

/// A big-endian integer without its leading zero bytes.
fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The number of significant bits of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    let b = strip_zeros(bytes);
    match b.first() {
        None => 0,
        Some(first) => (b.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// Judges a SubjectPublicKeyInfo: which algorithm it is, and whether it is strong enough.
pub fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyAlgorithm, PkiError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let Ok(ParsedKey::RSA(rsa)) = spki.parsed() else {
            return Err(PkiError::UnsupportedKey("RSA key does not parse".into()));
        };
        // The exact size: x509-parser's key_size() rounds up to whole bytes, so
        // a 2049..2055-bit modulus would pass as RSA-2048.
        let bits = bit_length(rsa.modulus);
        if bits < 2048 {
            return Err(PkiError::WeakKey(format!("RSA-{bits}: at least 2048 bits are required")));
        }
        // e = 3 and other small exponents invite known attacks; the Baseline
        // Requirements and every mainstream generator use 65537.
        let exponent = strip_zeros(rsa.exponent);
        if exponent != [0x01, 0x00, 0x01] {
            return Err(PkiError::WeakKey(format!(
                "RSA public exponent {}: only 65537 is accepted",
                if exponent.len() <= 8 {
                    exponent.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)).to_string()
                } else {
                    format!("of {} bytes", exponent.len())
                }
            )));
        }
        return KeyAlgorithm::rsa_of_bits(bits)
            .ok_or_else(|| PkiError::UnsupportedKey(format!("RSA-{bits}: use exactly 2048, 3072 or 4096 bits")));
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
