//! Key custody for custos: the only crate that touches private key material.
//!
//! It defines the [`KeyStore`] boundary (generate, public key, sign, destroy)
//! and the sealed soft backend ([`soft::SoftKeyStore`]). Nothing here returns a
//! CA private key: a stored key is reached only through [`Signer`]. The one
//! exception is a leaf key generated for a requester ([`leaf::LeafKey`]), which
//! is handed out once and never stored. A connection key kept in custody
//! ([`connection::ConnectionKey`]) signs digests for its connection only.
//!
//! Not here: certificate encoding (custos-pki) and persistence (custos-store).
//! A [`KeyReference`] is opaque bytes the caller persists; for the soft store
//! it is the sealed (AES-256-GCM) key, useless without the passphrase.

pub mod connection;
pub mod leaf;
pub mod pkcs11;
pub mod soft;

mod error;
mod signer;

use std::sync::Arc;

pub use custos_types::{KeyAlgorithm, KeyId, PublicKey, SignError, Signer, UnsupportedAlgorithm};
pub use error::KeyError;

/// Where a stored key lives: the backend's name and its opaque address.
///
/// The caller persists both; only the named backend can turn them back into
/// a [`Signer`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyReference {
    /// Backend name, e.g. `soft` or `pkcs11`.
    pub backend: String,
    /// Backend-specific address: a sealed blob, or a PKCS#11 URI.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for KeyReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sealed blob is not secret, but it has no business in logs either.
        write!(f, "KeyReference({}, {} bytes)", self.backend, self.data.len())
    }
}

/// A key just generated in a backend: where to find it again, and its signer.
pub struct GeneratedKey {
    /// Persist this to load the key later.
    pub reference: KeyReference,
    /// Ready to sign now.
    pub signer: Arc<dyn Signer>,
}

/// A backend that generates keys, signs with them and destroys them.
pub trait KeyStore: Send + Sync {
    /// The backend's name as written in [`KeyReference::backend`].
    fn backend(&self) -> &'static str;
    /// Generates a new non-exportable key; `label` names it for operators.
    fn generate(&self, algorithm: KeyAlgorithm, label: &str) -> Result<GeneratedKey, KeyError>;
    /// Opens a key generated earlier by this backend.
    fn load(&self, reference: &KeyReference) -> Result<Arc<dyn Signer>, KeyError>;
    /// Destroys the key in the backend; the caller wipes its reference.
    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError>;
    /// Generates a secret key for HMAC-SHA256, as non-exportable as a
    /// signing key: custos derives per-tenant secrets from it, so that no
    /// secret is ever stored where a database reader could use it.
    fn generate_secret(&self, label: &str) -> Result<KeyReference, KeyError>;
    /// HMAC-SHA256 of `message` under a key made by [`generate_secret`](Self::generate_secret).
    fn mac(&self, reference: &KeyReference, message: &[u8]) -> Result<[u8; 32], KeyError>;
    /// Generates a non-exportable connection key, marked for that purpose
    /// so that [`load`](Self::load) refuses it.
    fn generate_connection_key(
        &self,
        algorithm: KeyAlgorithm,
        label: &str,
    ) -> Result<connection::GeneratedConnectionKey, KeyError>;
    /// Opens a connection key; any other key (a CA's) is refused.
    fn load_connection_key(&self, reference: &KeyReference) -> Result<connection::ConnectionKey, KeyError>;
}
