//! Pure X.509 for custos: serials, CSR parsing and checks, certificate
//! profiles, the two-step "build, check, then sign" issuance, CRL encoding,
//! OCSP request parsing and response encoding, and inspection.
//!
//! No I/O and no key material: signing goes through a
//! [`custos_types::Signer`] handed in by the caller. Everything here takes bytes
//! and returns bytes, so it can be tested against vectors and fuzzed.

pub mod crl;
pub mod csr;
pub mod inspect;
pub mod issue;
pub mod jws;
pub mod ocsp;
pub mod serial;

mod der;
mod error;

pub use csr::CertificateRequest;
pub use custos_types::{Profile, Reason};
pub use error::PkiError;
pub use issue::{CaIssuer, CertificateSpec, CertificateTemplate, IssuerUrls, SignedCertificate};
pub use serial::Serial;

/// SHA-256 of `der` as uppercase colon-separated hex, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// PEM-encodes a DER certificate.
pub fn certificate_pem(der: &[u8]) -> String {
    to_pem("CERTIFICATE", der)
}

/// PEM-encodes DER under `label` (`CERTIFICATE`, `X509 CRL`, ...), LF line endings.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
