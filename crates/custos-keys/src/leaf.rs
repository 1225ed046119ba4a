//! Leaf keys generated for a requester: returned once, never stored.

use std::fmt;

use zeroize::Zeroizing;

use crate::signer::{MemorySigner, generate_pkcs8};
use crate::{KeyAlgorithm, KeyError, PublicKey, Signer};

/// A freshly generated leaf key pair, to be handed to its requester once.
pub struct LeafKey {
    algorithm: KeyAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
}

impl fmt::Debug for LeafKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeafKey({}, {})", self.algorithm, self.public.key_id())
    }
}

impl LeafKey {
    /// Generates a new key pair.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<LeafKey, KeyError> {
        let pkcs8 = generate_pkcs8(algorithm)?;
        let public = MemorySigner::from_pkcs8(algorithm, &pkcs8)?.public_key().clone();
        Ok(LeafKey { algorithm, pkcs8, public })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public half, to put in the certificate.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The private key as unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.pkcs8))
    }

    /// A PKCS#12 bundle of the key, its certificate and the chain above it,
    /// encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and an
    /// HMAC-SHA256 MAC under `password`, as cloud tenants accept for upload.
    pub fn pkcs12(
        &self,
        alias: &str,
        cert_der: &[u8],
        chain_der: &[&[u8]],
        password: &str,
    ) -> Result<Vec<u8>, KeyError> {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
        let p12 = |e: p12_keystore::error::Error| KeyError::Pkcs12(e.to_string());
        let mut certs = vec![Certificate::from_der(cert_der).map_err(p12)?];
        for der in chain_der {
            certs.push(Certificate::from_der(der).map_err(p12)?);
        }
        let key = PrivateKey::from_der(&self.pkcs8).map_err(p12)?;
        let local_id = self.public.sha256_hex().into_bytes();
        let mut store = KeyStore::new();
        store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_id, key, certs)));
        store.writer(password).encryption_iterations(100_000).mac_iterations(100_000).write().map_err(p12)
    }
}

/// A random password for a PKCS#12 bundle: 24 characters from an unambiguous alphabet.
pub fn random_password() -> Result<Zeroizing<String>, KeyError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = Zeroizing::new([0u8; 24]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| KeyError::Crypto { operation: "random password" })?;
    // 256 % 56 != 0 leaves a slight bias; 24 characters still carry > 130 bits.
    Ok(Zeroizing::new(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
