//! The sealed soft key store: keys encrypted at rest with AES-256-GCM under a
//! key-encryption key derived from a passphrase with Argon2id.
//!
//! A [`KeyReference`] of this backend is the sealed key itself:
//! `1 || len(alg) || alg || nonce(12) || ciphertext+tag`, with the algorithm
//! name bound as associated data so a blob cannot be relabelled.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::connection::{ConnectionKey, GeneratedConnectionKey, connection_algorithm};
use crate::signer::{MemorySigner, generate_pkcs8};
use crate::{GeneratedKey, KeyAlgorithm, KeyError, KeyReference, KeyStore, Signer};

/// The backend name of the soft store.
pub const BACKEND: &str = "soft";

const SEAL_VERSION: u8 = 1;
const CHECK_PLAINTEXT: &[u8] = b"custos soft key store v1";

/// Public parameters that, with the passphrase, re-derive the key-encryption key.
///
/// Persist them next to the sealed keys; they hold no secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SealParams {
    /// Format version.
    pub version: u8,
    /// Argon2id memory cost in KiB.
    pub m_cost_kib: u32,
    /// Argon2id iterations.
    pub t_cost: u32,
    /// Argon2id lanes.
    pub p_cost: u32,
    /// Random salt, hex.
    pub salt: String,
    /// A known plaintext sealed under the KEK, hex: tells a wrong passphrase apart
    /// from a corrupt key before any key is touched.
    pub check: String,
}

/// The soft key store, unsealed with its passphrase.
pub struct SoftKeyStore {
    kek: LessSafeKey,
}

impl SoftKeyStore {
    /// Creates a new store for `passphrase`; persist the returned parameters.
    ///
    /// Argon2id with 64 MiB and 3 passes: the sealed blobs and these
    /// parameters are readable by every database reader (the serve role,
    /// backups), so guessing must be expensive offline. Stores made with the
    /// older 19 MiB / 2 passes still open: the parameters travel with the seal.
    pub fn create(passphrase: &[u8]) -> Result<(SoftKeyStore, SealParams), KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::WrongPassphrase);
        }
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| KeyError::Crypto { operation: "random salt" })?;
        let mut params = SealParams {
            version: SEAL_VERSION,
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
            salt: hex::encode(salt),
            check: String::new(),
        };
        let store = SoftKeyStore { kek: derive_kek(passphrase, &params)? };
        params.check = hex::encode(store.seal(CHECK_PLAINTEXT, b"check")?);
        Ok((store, params))
    }

    /// Opens an existing store; a wrong passphrase is [`KeyError::WrongPassphrase`].
    pub fn open(passphrase: &[u8], params: &SealParams) -> Result<SoftKeyStore, KeyError> {
        if params.version != SEAL_VERSION {
            return Err(KeyError::Corrupt(format!("unknown seal version {}", params.version)));
        }
        let store = SoftKeyStore { kek: derive_kek(passphrase, params)? };
        let check = hex::decode(&params.check).map_err(|_| KeyError::Corrupt("check is not hex".into()))?;
        match store.unseal(&check, b"check") {
            Ok(plain) if plain.as_slice() == CHECK_PLAINTEXT => Ok(store),
            _ => Err(KeyError::WrongPassphrase),
        }
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Crypto { operation: "random nonce" })?;
        let mut buf = plaintext.to_vec();
        self.kek
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| KeyError::Crypto { operation: "seal" })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        // The plaintext copy in `buf` was encrypted in place; nothing to wipe.
        Ok(out)
    }

    fn unseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KeyError::Corrupt("sealed blob too short".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Corrupt("bad nonce".into()))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .kek
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KeyError::Corrupt("sealed key fails authentication".into()))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn derive_kek(passphrase: &[u8], params: &SealParams) -> Result<LessSafeKey, KeyError> {
    let salt = hex::decode(&params.salt).map_err(|_| KeyError::Corrupt("salt is not hex".into()))?;
    let argon_params = argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| KeyError::Corrupt(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut kek = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, &salt, kek.as_mut()).map_err(|e| KeyError::Corrupt(format!("argon2: {e}")))?;
    let key = UnboundKey::new(&AES_256_GCM, kek.as_ref()).map_err(|_| KeyError::Crypto { operation: "kek" })?;
    Ok(LessSafeKey::new(key))
}

/// The associated data of a sealed key: its kind (an algorithm, or [`SECRET_KIND`]).
fn key_aad(kind: &str) -> Vec<u8> {
    format!("custos-soft-key-v1:{kind}").into_bytes()
}

/// The kind written in the reference of an HMAC secret key.
const SECRET_KIND: &str = "hmac-sha256";

/// The kind prefix of a connection key (`connection/ecdsa-p256`). The kind is
/// sealed into the blob's authenticated data, so a CA key's blob cannot be
/// relabelled a connection key (or back) without the passphrase.
const CONNECTION_KIND: &str = "connection/";

/// A sealed reference: `SEAL_VERSION || len(kind) || kind || sealed`.
fn sealed_reference(kind: &str, sealed: &[u8]) -> KeyReference {
    let name = kind.as_bytes();
    let mut data = Vec::with_capacity(2 + name.len() + sealed.len());
    data.push(SEAL_VERSION);
    data.push(name.len() as u8);
    data.extend_from_slice(name);
    data.extend_from_slice(sealed);
    KeyReference { backend: BACKEND.to_string(), data }
}

impl SoftKeyStore {
    /// The same key sealed under `to`'s passphrase instead of this store's:
    /// for changing the passphrase. The plaintext lives only in wiped memory.
    pub fn reseal(&self, reference: &KeyReference, to: &SoftKeyStore) -> Result<KeyReference, KeyError> {
        let (kind, sealed) = split_reference(reference)?;
        let plain = self.unseal(sealed, &key_aad(kind))?;
        Ok(sealed_reference(kind, &to.seal(&plain, &key_aad(kind))?))
    }
}

/// A soft key reference: its kind (an algorithm name or [`SECRET_KIND`]) and its sealed blob.
fn split_reference(reference: &KeyReference) -> Result<(&str, &[u8]), KeyError> {
    if reference.backend != BACKEND {
        return Err(KeyError::BackendMismatch { expected: BACKEND, found: reference.backend.clone() });
    }
    let data = &reference.data;
    let (version, rest) = data.split_first().ok_or_else(|| KeyError::Corrupt("empty key reference".into()))?;
    if *version != SEAL_VERSION {
        return Err(KeyError::Corrupt(format!("unknown sealed key version {version}")));
    }
    let (len, rest) = rest.split_first().ok_or_else(|| KeyError::Corrupt("truncated key reference".into()))?;
    let len = usize::from(*len);
    if rest.len() < len {
        return Err(KeyError::Corrupt("truncated key reference".into()));
    }
    let (name, sealed) = rest.split_at(len);
    let kind = std::str::from_utf8(name).map_err(|_| KeyError::Corrupt("key kind is not UTF-8".into()))?;
    Ok((kind, sealed))
}

impl KeyStore for SoftKeyStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn generate(&self, algorithm: KeyAlgorithm, _label: &str) -> Result<GeneratedKey, KeyError> {
        let pkcs8 = generate_pkcs8(algorithm)?;
        let signer = MemorySigner::from_pkcs8(algorithm, &pkcs8)?;
        let sealed = self.seal(&pkcs8, &key_aad(algorithm.as_str()))?;
        Ok(GeneratedKey { reference: sealed_reference(algorithm.as_str(), &sealed), signer: Arc::new(signer) })
    }

    fn load(&self, reference: &KeyReference) -> Result<Arc<dyn Signer>, KeyError> {
        let (kind, sealed) = split_reference(reference)?;
        if kind == SECRET_KIND {
            return Err(KeyError::Corrupt("this is a secret key, not a signing key".into()));
        }
        if kind.starts_with(CONNECTION_KIND) {
            return Err(KeyError::Purpose(
                "this is a connection key: it cannot sign certificates, CRLs or OCSP responses".into(),
            ));
        }
        let algorithm: KeyAlgorithm = kind.parse()?;
        let pkcs8 = self.unseal(sealed, &key_aad(kind))?;
        Ok(Arc::new(MemorySigner::from_pkcs8(algorithm, &pkcs8)?))
    }

    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
        // The sealed blob is the key: once the caller wipes the reference, no
        // copy is left in this backend.
        if reference.backend != BACKEND {
            return Err(KeyError::BackendMismatch { expected: BACKEND, found: reference.backend.clone() });
        }
        Ok(())
    }

    fn generate_secret(&self, _label: &str) -> Result<KeyReference, KeyError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| KeyError::Crypto { operation: "random secret" })?;
        Ok(sealed_reference(SECRET_KIND, &self.seal(secret.as_ref(), &key_aad(SECRET_KIND))?))
    }

    fn mac(&self, reference: &KeyReference, message: &[u8]) -> Result<[u8; 32], KeyError> {
        let (kind, sealed) = split_reference(reference)?;
        if kind != SECRET_KIND {
            return Err(KeyError::Corrupt(format!("a {kind} key is not a secret key")));
        }
        let secret = self.unseal(sealed, &key_aad(kind))?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(aws_lc_rs::hmac::sign(&key, message).as_ref());
        Ok(out)
    }

    fn generate_connection_key(
        &self,
        algorithm: KeyAlgorithm,
        _label: &str,
    ) -> Result<GeneratedConnectionKey, KeyError> {
        let algorithm = connection_algorithm(algorithm)?;
        let kind = format!("{CONNECTION_KIND}{algorithm}");
        let pkcs8 = generate_pkcs8(algorithm)?;
        let signer = MemorySigner::from_pkcs8(algorithm, &pkcs8)?;
        let sealed = self.seal(&pkcs8, &key_aad(&kind))?;
        Ok(GeneratedConnectionKey {
            reference: sealed_reference(&kind, &sealed),
            key: ConnectionKey::new(Arc::new(signer)),
        })
    }

    fn load_connection_key(&self, reference: &KeyReference) -> Result<ConnectionKey, KeyError> {
        let (kind, sealed) = split_reference(reference)?;
        let Some(name) = kind.strip_prefix(CONNECTION_KIND) else {
            return Err(KeyError::Purpose(format!(
                "a {kind} key is not a connection key: it cannot sign a caller's bytes"
            )));
        };
        let algorithm = connection_algorithm(name.parse()?)?;
        let pkcs8 = self.unseal(sealed, &key_aad(kind))?;
        Ok(ConnectionKey::new(Arc::new(MemorySigner::from_pkcs8(algorithm, &pkcs8)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{self, UnparsedPublicKey};

    fn verify_alg(a: KeyAlgorithm) -> &'static dyn signature::VerificationAlgorithm {
        match a {
            KeyAlgorithm::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyAlgorithm::Ed25519 => &signature::ED25519,
            _ => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    #[test]
    fn sealed_keys_round_trip_and_sign_for_every_algorithm() {
        let (store, params) = SoftKeyStore::create(b"correct horse").expect("create");
        let reopened = SoftKeyStore::open(b"correct horse", &params).expect("open");
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384, KeyAlgorithm::Rsa2048, KeyAlgorithm::Ed25519] {
            let key = store.generate(alg, "test").expect("generate");
            let loaded = reopened.load(&key.reference).expect("load");
            assert_eq!(loaded.public_key(), key.signer.public_key());
            let sig = loaded.sign(b"message").expect("sign");
            UnparsedPublicKey::new(verify_alg(alg), loaded.public_key().raw())
                .verify(b"message", &sig)
                .expect("signature verifies");
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_before_any_key_is_touched() {
        let (_, params) = SoftKeyStore::create(b"right").expect("create");
        assert!(matches!(SoftKeyStore::open(b"wrong", &params), Err(KeyError::WrongPassphrase)));
    }

    #[test]
    fn tampered_or_relabelled_blob_does_not_open() {
        let (store, _) = SoftKeyStore::create(b"pw").expect("create");
        let key = store.generate(KeyAlgorithm::EcdsaP256, "t").expect("generate");
        let mut flipped = key.reference.clone();
        let last = flipped.data.len() - 1;
        flipped.data[last] ^= 1;
        assert!(matches!(store.load(&flipped), Err(KeyError::Corrupt(_))));
        let mut relabelled = key.reference.clone();
        relabelled.data[2..6].copy_from_slice(b"p384");
        assert!(store.load(&relabelled).is_err());
        let truncated = KeyReference { backend: BACKEND.into(), data: key.reference.data[..5].to_vec() };
        assert!(store.load(&truncated).is_err());
    }

    #[test]
    fn secret_keys_mac_only_and_survive_a_reseal() {
        let (store, _) = SoftKeyStore::create(b"pw").expect("create");
        let secret = store.generate_secret("webhooks").expect("secret");
        let mac = store.mac(&secret, b"tenant").expect("mac");
        assert_ne!(mac, store.mac(&secret, b"other").expect("mac"));
        assert!(store.load(&secret).is_err(), "a secret key is not a signer");
        let signing = store.generate(KeyAlgorithm::EcdsaP256, "t").expect("generate");
        assert!(store.mac(&signing.reference, b"x").is_err(), "a signing key is not a MAC key");
        let (other, _) = SoftKeyStore::create(b"pw2").expect("create");
        let moved = store.reseal(&secret, &other).expect("reseal");
        assert_eq!(other.mac(&moved, b"tenant").expect("mac"), mac);
        assert!(store.mac(&moved, b"tenant").is_err());
    }

    #[test]
    fn sealed_blob_does_not_contain_the_plain_key() {
        let (store, _) = SoftKeyStore::create(b"pw").expect("create");
        let pkcs8 = generate_pkcs8(KeyAlgorithm::EcdsaP256).expect("gen");
        let sealed = store.seal(&pkcs8, b"x").expect("seal");
        assert!(!sealed.windows(32).any(|w| pkcs8.windows(32).any(|p| p == w)));
    }
}
