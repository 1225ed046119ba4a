//! Key algorithms, public keys and key ids.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;

/// An algorithm name custos does not know or does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported key algorithm {0:?} (expected one of p256, p384, rsa2048, rsa3072, rsa4096, ed25519)")]
pub struct UnsupportedAlgorithm(pub String);

/// The key algorithms custos generates and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with PKCS#1 v1.5 and SHA-256.
    Rsa2048,
    /// RSA 3072 with PKCS#1 v1.5 and SHA-256.
    Rsa3072,
    /// RSA 4096 with PKCS#1 v1.5 and SHA-256.
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm, for tests and help texts.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Ed25519,
    ];

    /// The stable name used in configuration, the database and output.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "p256",
            KeyAlgorithm::EcdsaP384 => "p384",
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::Rsa4096 => "rsa4096",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm of an RSA key of `bits`, if custos accepts that size.
    pub fn rsa_of_bits(bits: usize) -> Option<KeyAlgorithm> {
        match bits {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = UnsupportedAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" | "ec256" => KeyAlgorithm::EcdsaP256,
            "p384" | "p-384" | "ecdsa-p384" | "ec384" => KeyAlgorithm::EcdsaP384,
            "rsa2048" | "rsa-2048" => KeyAlgorithm::Rsa2048,
            "rsa3072" | "rsa-3072" => KeyAlgorithm::Rsa3072,
            "rsa4096" | "rsa-4096" => KeyAlgorithm::Rsa4096,
            "ed25519" => KeyAlgorithm::Ed25519,
            _ => return Err(UnsupportedAlgorithm(s.to_string())),
        })
    }
}

/// A public key: its X.509 SubjectPublicKeyInfo and the raw key bits inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    spki_der: Vec<u8>,
    raw: Vec<u8>,
}

impl PublicKey {
    /// Builds a public key from its SPKI DER and the contents of its BIT STRING.
    pub fn new(spki_der: Vec<u8>, raw: Vec<u8>) -> Self {
        PublicKey { spki_der, raw }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The subjectPublicKey bits: an EC point, an RSAPublicKey, or 32 Ed25519 bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// SHA-256 of the SPKI, lowercase hex: the key's fingerprint.
    pub fn sha256_hex(&self) -> String {
        hex::encode(digest::digest(&digest::SHA256, &self.spki_der))
    }

    /// The key's identifier in custos: the first 10 bytes of its SPKI hash.
    pub fn key_id(&self) -> KeyId {
        KeyId(self.sha256_hex()[..20].to_string())
    }
}

/// A key's identifier: 20 lowercase hex digits derived from its public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id as printed by `custos keys list`.
    pub fn parse(s: &str) -> Option<KeyId> {
        let s = s.trim().to_ascii_lowercase();
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(KeyId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
