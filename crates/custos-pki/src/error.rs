/// What went wrong while reading or building X.509 objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The CSR is not valid PEM or DER, or is truncated.
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify.
    #[error("CSR signature does not verify: the request was altered or was not signed by its key")]
    CsrSignature,
    /// The CSR's signature algorithm is weak or unknown.
    #[error("CSR signature algorithm {0} is not accepted (use SHA-256 or better)")]
    CsrSignatureAlgorithm(String),
    /// The public key is too weak.
    #[error("weak key refused: {0}")]
    WeakKey(String),
    /// The public key type is not one custos issues for.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    /// A serial number that is not 1 to 20 octets of positive hex.
    #[error("invalid serial {0:?}: expected hex digits (colons allowed), at most 20 octets")]
    InvalidSerial(String),
    /// A certificate template that breaks an X.509 rule.
    #[error("invalid certificate template: {0}")]
    Template(String),
    /// The encoder or signer failed.
    #[error("certificate signing failed: {0}")]
    Signing(String),
    /// A certificate we signed failed our own post-signing check.
    #[error("issued certificate failed its check: {0}")]
    Check(String),
    /// A certificate that does not parse.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
}
