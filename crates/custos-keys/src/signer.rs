//! An in-memory signer over aws-lc-rs, opened from PKCS#8 bytes.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use crate::connection::DigestScheme;
use crate::{KeyAlgorithm, KeyError, PublicKey, SignError, Signer};

/// A private key held by aws-lc-rs; AWS-LC wipes it when it is freed.
pub(crate) struct MemorySigner {
    algorithm: KeyAlgorithm,
    public: PublicKey,
    key: Inner,
    rng: SystemRandom,
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

const CRYPTO_GENERATE: KeyError = KeyError::Crypto { operation: "generate key" };

/// Generates a fresh key and returns it as PKCS#8 v1 DER.
pub(crate) fn generate_pkcs8(algorithm: KeyAlgorithm) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let der = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let key = EcdsaKeyPair::generate(ecdsa_alg(algorithm)).map_err(|_| CRYPTO_GENERATE)?;
            let doc = key.to_pkcs8v1().map_err(|_| CRYPTO_GENERATE)?;
            doc.as_ref().to_vec()
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let size = match algorithm {
                KeyAlgorithm::Rsa2048 => KeySize::Rsa2048,
                KeyAlgorithm::Rsa3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let key = RsaKeyPair::generate(size).map_err(|_| CRYPTO_GENERATE)?;
            let doc: aws_lc_rs::encoding::Pkcs8V1Der<'static> = key.as_der().map_err(|_| CRYPTO_GENERATE)?;
            doc.as_ref().to_vec()
        }
        KeyAlgorithm::Ed25519 => {
            let key = Ed25519KeyPair::generate().map_err(|_| CRYPTO_GENERATE)?;
            let doc = key.to_pkcs8v1().map_err(|_| CRYPTO_GENERATE)?;
            doc.as_ref().to_vec()
        }
    };
    Ok(Zeroizing::new(der))
}

fn ecdsa_alg(algorithm: KeyAlgorithm) -> &'static signature::EcdsaSigningAlgorithm {
    match algorithm {
        KeyAlgorithm::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        _ => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
    }
}

impl MemorySigner {
    /// Opens PKCS#8 DER of the given algorithm.
    pub(crate) fn from_pkcs8(algorithm: KeyAlgorithm, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rejected = |_| KeyError::Corrupt(format!("{algorithm} key does not parse as PKCS#8"));
        let key = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                Inner::Ecdsa(EcdsaKeyPair::from_pkcs8(ecdsa_alg(algorithm), pkcs8).map_err(rejected)?)
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                Inner::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(rejected)?)
            }
            KeyAlgorithm::Ed25519 => {
                Inner::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(rejected)?)
            }
        };
        let public_error = KeyError::Crypto { operation: "encode public key" };
        let public = match &key {
            Inner::Ecdsa(k) => {
                let spki: PublicKeyX509Der<'static> = k.public_key().as_der().map_err(|_| public_error)?;
                PublicKey::new(spki.as_ref().to_vec(), k.public_key().as_ref().to_vec())
            }
            Inner::Rsa(k) => {
                if KeyAlgorithm::rsa_of_bits(k.public_modulus_len() * 8) != Some(algorithm) {
                    return Err(KeyError::Corrupt(format!(
                        "RSA key has {} bits, expected {algorithm}",
                        k.public_modulus_len() * 8
                    )));
                }
                let spki: PublicKeyX509Der<'static> = k.public_key().as_der().map_err(|_| public_error)?;
                PublicKey::new(spki.as_ref().to_vec(), k.public_key().as_ref().to_vec())
            }
            Inner::Ed25519(k) => {
                let spki: PublicKeyX509Der<'static> = k.public_key().as_der().map_err(|_| public_error)?;
                PublicKey::new(spki.as_ref().to_vec(), k.public_key().as_ref().to_vec())
            }
        };
        Ok(MemorySigner { algorithm, public, key, rng: SystemRandom::new() })
    }
}

impl Signer for MemorySigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // Only the soft store signs with a MemorySigner (a leaf key is handed out, never used here).
        let failed = SignError { backend: "soft", detail: "AWS-LC refused to sign".into() };
        match &self.key {
            Inner::Ecdsa(k) => Ok(k.sign(&self.rng, message).map_err(|_| failed)?.as_ref().to_vec()),
            Inner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig).map_err(|_| failed)?;
                Ok(sig)
            }
            Inner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

impl crate::connection::DigestSigner for MemorySigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_digest(&self, scheme: DigestScheme, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        let failed = KeyError::Crypto { operation: "sign a digest" };
        let digest = aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
            .map_err(|_| KeyError::Crypto { operation: "import a digest" })?;
        match (&self.key, scheme) {
            (Inner::Ecdsa(k), DigestScheme::EcdsaP256) => {
                Ok(k.sign_digest(&digest).map_err(|_| failed)?.as_ref().to_vec())
            }
            (Inner::Rsa(k), DigestScheme::RsaPss | DigestScheme::RsaPkcs1) => {
                let padding: &'static dyn signature::RsaEncoding = match scheme {
                    DigestScheme::RsaPss => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign_digest(padding, &digest, &mut sig).map_err(|_| failed)?;
                Ok(sig)
            }
            _ => Err(KeyError::Purpose(format!("a {} key cannot sign {}", self.algorithm, scheme.jws_name()))),
        }
    }
}
