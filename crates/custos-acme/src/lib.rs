//! ACME (RFC 8555) and ACME Renewal Information (RFC 9773) as data: the
//! JWS every request is wrapped in and the checks RFC 8555 section 6 asks
//! for, account keys and their thumbprints, External Account Binding, the
//! resource objects and problem documents, and ARI certificate ids and
//! renewal windows. No I/O, no state: custos-ca decides what a request may
//! do and custos-store remembers it.

mod ari;
pub mod dns;
mod error;
mod jws;
mod objects;

pub use ari::{CertId, RenewalWindow, renewal_window};
pub use error::{AcmeError, ProblemType};
pub use jws::{Alg, Eab, Jwk, Jws, KeyRef, MAX_JWS_BYTES, Protected, dns01_value, key_authorization};
pub use objects::*;

/// SHA-256 (tls-alpn-01's acmeIdentifier, dns-01's TXT value).
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().to_vec()
}

/// base64url without padding, as JOSE and ACME write binary values.
pub fn b64u(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `what` names the field for the error.
pub fn from_b64u(text: &str, what: &str) -> Result<Vec<u8>, AcmeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| AcmeError::malformed(format!("{what} is not unpadded base64url: {e}")))
}
