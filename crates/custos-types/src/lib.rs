//! The vocabulary custos's layers share: the [`Signer`] trait, key
//! algorithms, public keys and key ids, and the typed states and kinds that
//! are stored and shown (certificate status, issuer role, connection state,
//! profile, revocation reason).
//!
//! It exists so that custos-pki (pure X.509 encoding) can ask for a signature
//! without depending on custos-keys (key material, PKCS#11, sealing) or on
//! anything that does I/O. Not here: any backend, any private key.

mod algorithm;
mod records;
mod state;

pub use algorithm::{KeyAlgorithm, KeyId, PublicKey, UnsupportedAlgorithm};
pub use records::{
    AcmeAccountRecord, AcmeAuthzRecord, AcmeEabRecord, AcmeOrderRecord, AcmeWrite, ApprovalRecord, AuditEntry,
    AuditFilter, AuditRecord, BlockedKey, CertificateFilter, CertificateRecord, CertificateState, CheckpointRecord,
    ConnectionRecord, CustodyChange, CustodyKeyRecord, IncidentCertificate, IncidentConnection, IncidentRecord,
    IncidentReplacements, IssuerRecord, KeyRecord, KeyUsage, OperatorRecord, OutboxMessage, Replacement,
    ResponderRecord, Revocation, RevocationEvent, RevokedRow, SignatureProbe, SignatureRecord, SigningPolicy,
    StatusFilter, StoreFigures, TenantRecord, TokenRecord, Transition, WebhookRecord,
};
pub use state::{
    CertificateStatus, ConnectionState, CustodySlot, DeliveryState, IncidentState, IssuerRole, IssuerStatus, KeyStatus,
    Profile, Reason, UnknownName,
};

/// A key that signs through its backend; key bytes never cross this trait.
pub trait Signer: Send + Sync {
    /// The algorithm of the key, which fixes the signature algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// The public half of the key.
    fn public_key(&self) -> &PublicKey;
    /// Signs `message` and returns the signature as X.509 encodes it
    /// (DER `Ecdsa-Sig-Value` for ECDSA, raw for RSA PKCS#1 v1.5 and Ed25519).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// A signature its backend could not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{backend} key could not sign: {detail}")]
pub struct SignError {
    /// The backend that failed (`soft`, `pkcs11`).
    pub backend: &'static str,
    /// What the backend said.
    pub detail: String,
}
