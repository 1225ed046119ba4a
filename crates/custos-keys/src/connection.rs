//! Connection keys in custody: the key a vendor's service proves itself with
//! to a relying party (a JWT client assertion, a TLS client signature).
//!
//! A connection key is a different type from a CA key on purpose. A
//! [`ConnectionKey`] signs a SHA-256 digest a caller chose and has no
//! [`Signer`](crate::Signer) implementation, so it cannot be handed to
//! anything that makes a certificate, CRL or OCSP response. A CA key is only
//! ever opened as a `Signer`, which has no way to sign a caller's digest. Each
//! backend records the purpose where the database cannot change it: in the
//! soft store it is part of the sealed blob's authenticated data, on a token
//! it is the object's label prefix ([`LABEL_PREFIX`]); both loads check it.

use std::fmt;
use std::sync::Arc;

use crate::{KeyAlgorithm, KeyError, PublicKey};

/// The label prefix that marks a token object as a connection key.
pub const LABEL_PREFIX: &str = "custos-connection:";

/// How a connection key signs a SHA-256 digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestScheme {
    /// ECDSA P-256 (JWS ES256); the signature is DER `Ecdsa-Sig-Value`.
    EcdsaP256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (JWS PS256).
    RsaPss,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS RS256).
    RsaPkcs1,
}

impl DigestScheme {
    /// The JWS `alg` name of this scheme.
    pub fn jws_name(self) -> &'static str {
        match self {
            DigestScheme::EcdsaP256 => "ES256",
            DigestScheme::RsaPss => "PS256",
            DigestScheme::RsaPkcs1 => "RS256",
        }
    }

    /// The scheme a JWS `alg` name stands for.
    pub fn from_jws_name(name: &str) -> Option<DigestScheme> {
        match name {
            "ES256" => Some(DigestScheme::EcdsaP256),
            "PS256" => Some(DigestScheme::RsaPss),
            "RS256" => Some(DigestScheme::RsaPkcs1),
            _ => None,
        }
    }

    /// Whether a key of `algorithm` can sign with this scheme.
    pub fn fits(self, algorithm: KeyAlgorithm) -> bool {
        match self {
            DigestScheme::EcdsaP256 => algorithm == KeyAlgorithm::EcdsaP256,
            DigestScheme::RsaPss | DigestScheme::RsaPkcs1 => {
                matches!(algorithm, KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072)
            }
        }
    }
}

/// The algorithms a connection key may have: those relying parties take for
/// certificate credentials.
pub fn connection_algorithm(algorithm: KeyAlgorithm) -> Result<KeyAlgorithm, KeyError> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => Ok(algorithm),
        other => Err(KeyError::Purpose(format!("a connection key is p256, rsa2048 or rsa3072, not {other}"))),
    }
}

/// A backend's signing half of a connection key.
pub(crate) trait DigestSigner: Send + Sync {
    /// The key's algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// Its public half.
    fn public_key(&self) -> &PublicKey;
    /// Signs a SHA-256 digest with a scheme that fits the key.
    fn sign_digest(&self, scheme: DigestScheme, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError>;
}

/// A connection's key, held by a key store: it signs digests for that
/// connection and nothing else (see the module comment).
#[derive(Clone)]
pub struct ConnectionKey {
    inner: Arc<dyn DigestSigner>,
}

impl fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionKey({}, {})", self.algorithm(), self.public_key().key_id())
    }
}

impl ConnectionKey {
    pub(crate) fn new(inner: Arc<dyn DigestSigner>) -> ConnectionKey {
        ConnectionKey { inner }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }

    /// Its public half, to certify.
    pub fn public_key(&self) -> &PublicKey {
        self.inner.public_key()
    }

    /// The scheme used when the caller names none: PS256 for RSA (what
    /// Microsoft Entra ID documents for client assertions), ES256 for P-256.
    pub fn default_scheme(&self) -> DigestScheme {
        match self.algorithm() {
            KeyAlgorithm::EcdsaP256 => DigestScheme::EcdsaP256,
            _ => DigestScheme::RsaPss,
        }
    }

    /// Signs a SHA-256 digest.
    pub fn sign_digest(&self, scheme: DigestScheme, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        if !scheme.fits(self.algorithm()) {
            return Err(KeyError::Purpose(format!("a {} key cannot sign {}", self.algorithm(), scheme.jws_name())));
        }
        self.inner.sign_digest(scheme, digest)
    }
}

/// A connection key just generated: where to find it again, and the key.
pub struct GeneratedConnectionKey {
    /// Persist this to load the key later.
    pub reference: crate::KeyReference,
    /// Ready to sign now.
    pub key: ConnectionKey,
}
