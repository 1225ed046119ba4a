//! The JWS every ACME request is (RFC 8555 section 6.2, RFC 7515 flattened
//! JSON): one signature, a protected header with `alg`, `nonce`, `url` and
//! exactly one of `jwk` and `kid`, no unprotected header, no unencoded
//! payload. Signatures are checked with aws-lc-rs: ES256, ES384, RS256
//! (2048 to 8192 bits) and EdDSA (Ed25519).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::{AcmeError, ProblemType, b64u, from_b64u};

/// Request bodies larger than this are refused: a finalize with an RSA-8192
/// CSR, the largest legitimate request, is under 8 KiB.
pub const MAX_JWS_BYTES: usize = 64 * 1024;

/// A signature algorithm custos accepts for account keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 (r || s).
    Es256,
    /// ECDSA P-384 with SHA-384 (r || s).
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Result<Alg, AcmeError> {
        match name {
            "ES256" => Ok(Alg::Es256),
            "ES384" => Ok(Alg::Es384),
            "RS256" => Ok(Alg::Rs256),
            "EdDSA" => Ok(Alg::EdDsa),
            other => Err(AcmeError::new(
                ProblemType::BadSignatureAlgorithm,
                format!("JWS alg {other:?} is not accepted: use ES256, ES384, RS256 or EdDSA"),
            )),
        }
    }
}

/// An account's public key as a JWK (RFC 7517), checked for size and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jwk {
    /// An EC key: curve `P-256` or `P-384` and its coordinates.
    Ec {
        /// `P-256` or `P-384`.
        crv: &'static str,
        /// The x coordinate, big-endian, full length.
        x: Vec<u8>,
        /// The y coordinate.
        y: Vec<u8>,
    },
    /// An RSA key.
    Rsa {
        /// The modulus, big-endian without leading zeros.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// An Ed25519 key.
    Ed25519 {
        /// The 32-byte public key.
        x: Vec<u8>,
    },
}

fn member<'a>(obj: &'a Map<String, Value>, name: &str, what: &str) -> Result<&'a str, AcmeError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AcmeError::malformed(format!("{what} has no string member {name:?}")))
}

fn bad_key(detail: String) -> AcmeError {
    AcmeError::new(ProblemType::BadPublicKey, detail)
}

impl Jwk {
    /// Reads a JWK; private members (`d`, ...) are refused, so a client that
    /// sent its private key learns it did.
    pub fn parse(value: &Value) -> Result<Jwk, AcmeError> {
        let obj = value.as_object().ok_or_else(|| AcmeError::malformed("jwk is not a JSON object"))?;
        if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|m| obj.contains_key(*m)) {
            return Err(bad_key("jwk holds private key material: send the public key only".into()));
        }
        match member(obj, "kty", "jwk")? {
            "EC" => {
                let (crv, len) = match member(obj, "crv", "jwk")? {
                    "P-256" => ("P-256", 32),
                    "P-384" => ("P-384", 48),
                    other => return Err(bad_key(format!("EC curve {other:?} is not accepted: use P-256 or P-384"))),
                };
                let x = from_b64u(member(obj, "x", "jwk")?, "jwk.x")?;
                let y = from_b64u(member(obj, "y", "jwk")?, "jwk.y")?;
                if x.len() != len || y.len() != len {
                    return Err(bad_key(format!("{crv} coordinates must be {len} bytes each")));
                }
                Ok(Jwk::Ec { crv, x, y })
            }
            "RSA" => {
                let n = strip_zeros(from_b64u(member(obj, "n", "jwk")?, "jwk.n")?);
                let e = strip_zeros(from_b64u(member(obj, "e", "jwk")?, "jwk.e")?);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) {
                    return Err(bad_key(format!("an RSA key of {bits} bits: use 2048 to 8192")));
                }
                if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b % 2 == 0) {
                    return Err(bad_key("the RSA public exponent is not an odd number below 2^32".into()));
                }
                Ok(Jwk::Rsa { n, e })
            }
            "OKP" => match member(obj, "crv", "jwk")? {
                "Ed25519" => {
                    let x = from_b64u(member(obj, "x", "jwk")?, "jwk.x")?;
                    if x.len() != 32 {
                        return Err(bad_key("an Ed25519 key is 32 bytes".into()));
                    }
                    Ok(Jwk::Ed25519 { x })
                }
                other => Err(bad_key(format!("OKP curve {other:?} is not accepted: use Ed25519"))),
            },
            other => Err(bad_key(format!("key type {other:?} is not accepted: use EC, RSA or OKP"))),
        }
    }

    /// The JWK with its required members only, in lexicographic order
    /// without whitespace (RFC 7638 section 3): what the thumbprint hashes
    /// and what custos stores.
    pub fn canonical(&self) -> String {
        match self {
            Jwk::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#, b64u(x), b64u(y))
            }
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64u(e), b64u(n)),
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64u(x)),
        }
    }

    /// The RFC 7638 thumbprint (SHA-256), base64url.
    pub fn thumbprint(&self) -> String {
        b64u(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical().as_bytes()).as_ref())
    }

    /// The key as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.canonical()).unwrap_or(Value::Null)
    }

    /// Whether `alg` is the algorithm for this key.
    fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (Jwk::Ec { crv: "P-256", .. }, Alg::Es256)
                | (Jwk::Ec { crv: "P-384", .. }, Alg::Es384)
                | (Jwk::Rsa { .. }, Alg::Rs256)
                | (Jwk::Ed25519 { .. }, Alg::EdDsa)
        )
    }

    /// Verifies `signature` over `message` with `alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), AcmeError> {
        if !self.fits(alg) {
            return Err(AcmeError::new(
                ProblemType::BadSignatureAlgorithm,
                format!("JWS alg {alg:?} does not fit the account key's type"),
            ));
        }
        let bad = |_| AcmeError::malformed("JWS signature does not verify with the account key");
        match self {
            Jwk::Ec { crv, x, y } => {
                let point = [&[4u8][..], x, y].concat();
                let algorithm: &dyn signature::VerificationAlgorithm = match *crv {
                    "P-256" => &signature::ECDSA_P256_SHA256_FIXED,
                    _ => &signature::ECDSA_P384_SHA384_FIXED,
                };
                UnparsedPublicKey::new(algorithm, point).verify(message, signature).map_err(bad)
            }
            Jwk::Rsa { n, e } => signature::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .map_err(bad),
            Jwk::Ed25519 { x } => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, signature).map_err(bad)
            }
        }
    }
}

fn strip_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.drain(..first);
    bytes
}

/// How a request names its account: a new key, or an account URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// `jwk`: newAccount, and revokeCert signed by the certificate's key.
    Jwk(Jwk),
    /// `kid`: the account URL, for everything else.
    Kid(String),
}

/// A JWS's protected header, checked against RFC 8555 section 6.2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    /// The signature algorithm.
    pub alg: Alg,
    /// The anti-replay nonce: required on every request (the caller checks
    /// that), absent in a keyChange's inner JWS (RFC 8555 section 7.3.5).
    pub nonce: Option<String>,
    /// The URL the client meant to reach.
    pub url: String,
    /// Who signed.
    pub key: KeyRef,
}

/// The flattened JSON serialisation, as it arrived.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

/// A parsed (not yet verified) ACME request.
#[derive(Clone, Debug)]
pub struct Jws {
    /// The protected header.
    pub protected: Protected,
    /// The payload bytes; empty for POST-as-GET.
    pub payload: Vec<u8>,
    /// `protected.payload` as sent: what the signature covers.
    signing_input: String,
    signature: Vec<u8>,
}

impl Jws {
    /// Parses a request body. Checks the shape, not the signature.
    pub fn parse(body: &[u8]) -> Result<Jws, AcmeError> {
        if body.len() > MAX_JWS_BYTES {
            return Err(AcmeError::malformed(format!("the request is larger than {MAX_JWS_BYTES} bytes")));
        }
        let f: Flattened = serde_json::from_slice(body).map_err(|e| {
            AcmeError::malformed(format!(
                "the body is not a flattened JWS {{\"protected\", \"payload\", \"signature\"}} with no unprotected header: {e}"
            ))
        })?;
        let header_bytes = from_b64u(&f.protected, "protected")?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .map_err(|e| AcmeError::malformed(format!("the protected header is not JSON: {e}")))?;
        let obj = header.as_object().ok_or_else(|| AcmeError::malformed("the protected header is not an object"))?;
        if obj.contains_key("b64") || obj.contains_key("crit") {
            return Err(AcmeError::malformed("the unencoded payload option (b64, crit) is not allowed"));
        }
        let alg = match obj.get("alg").and_then(Value::as_str) {
            Some(a) => Alg::parse(a)?,
            None => return Err(AcmeError::malformed("the protected header has no alg")),
        };
        let nonce = match obj.get("nonce") {
            None => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(AcmeError::new(ProblemType::BadNonce, "the nonce is not a string")),
        };
        let url = member(obj, "url", "the protected header")?;
        let key = match (obj.get("jwk"), obj.get("kid")) {
            (Some(jwk), None) => KeyRef::Jwk(Jwk::parse(jwk)?),
            (None, Some(Value::String(kid))) => KeyRef::Kid(kid.clone()),
            (None, Some(_)) => return Err(AcmeError::malformed("kid is not a string")),
            _ => return Err(AcmeError::malformed("the protected header must hold exactly one of jwk and kid")),
        };
        let payload = match f.payload.is_empty() {
            true => Vec::new(),
            false => from_b64u(&f.payload, "payload")?,
        };
        Ok(Jws {
            protected: Protected { alg, nonce, url: url.to_string(), key },
            payload,
            signing_input: format!("{}.{}", f.protected, f.payload),
            signature: from_b64u(&f.signature, "signature")?,
        })
    }

    /// Verifies the signature with `key`.
    pub fn verify(&self, key: &Jwk) -> Result<(), AcmeError> {
        key.verify(self.protected.alg, self.signing_input.as_bytes(), &self.signature)
    }

    /// Whether this is a POST-as-GET (an empty payload).
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }

    /// The payload as JSON of type `T`; `what` names the request for errors.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, AcmeError> {
        serde_json::from_slice(&self.payload).map_err(|e| AcmeError::malformed(format!("{what} payload: {e}")))
    }
}

/// An External Account Binding (RFC 8555 section 7.3.4): a JWS, MACed with
/// the key custos gave the tenant, over the account's public key.
#[derive(Clone, Debug)]
pub struct Eab {
    /// The key id custos gave out.
    pub kid: String,
    alg: &'static aws_lc_rs::hmac::Algorithm,
    url: String,
    payload: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Eab {
    /// Parses the `externalAccountBinding` member of a newAccount payload.
    pub fn parse(value: &Value) -> Result<Eab, AcmeError> {
        let eab_error = |d: String| AcmeError::new(ProblemType::ExternalAccountRequired, d);
        let f: Flattened = serde_json::from_value(value.clone())
            .map_err(|e| eab_error(format!("externalAccountBinding is not a flattened JWS: {e}")))?;
        let header: Value = serde_json::from_slice(&from_b64u(&f.protected, "externalAccountBinding.protected")?)
            .map_err(|e| eab_error(format!("externalAccountBinding header is not JSON: {e}")))?;
        let obj =
            header.as_object().ok_or_else(|| eab_error("externalAccountBinding header is not an object".into()))?;
        if obj.contains_key("nonce") {
            return Err(eab_error("externalAccountBinding must not carry a nonce".into()));
        }
        let alg = match obj.get("alg").and_then(Value::as_str) {
            Some("HS256") => &aws_lc_rs::hmac::HMAC_SHA256,
            Some("HS384") => &aws_lc_rs::hmac::HMAC_SHA384,
            Some("HS512") => &aws_lc_rs::hmac::HMAC_SHA512,
            other => return Err(eab_error(format!("externalAccountBinding alg {other:?}: use HS256, HS384 or HS512"))),
        };
        let payload: Value = serde_json::from_slice(&from_b64u(&f.payload, "externalAccountBinding.payload")?)
            .map_err(|e| eab_error(format!("externalAccountBinding payload is not JSON: {e}")))?;
        Ok(Eab {
            kid: member(obj, "kid", "externalAccountBinding header")?.to_string(),
            alg,
            url: member(obj, "url", "externalAccountBinding header")?.to_string(),
            payload,
            signing_input: format!("{}.{}", f.protected, f.payload),
            signature: from_b64u(&f.signature, "externalAccountBinding.signature")?,
        })
    }

    /// Checks the MAC with `hmac_key`, and that it binds `account` and was
    /// made for `url` (the newAccount URL).
    pub fn verify(&self, hmac_key: &[u8], account: &Jwk, url: &str) -> Result<(), AcmeError> {
        let unauthorized = |d: &str| AcmeError::new(ProblemType::Unauthorized, d);
        if self.url != url {
            return Err(unauthorized("externalAccountBinding url is not the newAccount URL"));
        }
        let key = aws_lc_rs::hmac::Key::new(*self.alg, hmac_key);
        aws_lc_rs::hmac::verify(&key, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| unauthorized("externalAccountBinding MAC does not verify with that key id's key"))?;
        if Jwk::parse(&self.payload).ok().as_ref() != Some(account) {
            return Err(unauthorized("externalAccountBinding binds a different key than the one signing the request"));
        }
        Ok(())
    }
}

/// The key authorization for a challenge token (RFC 8555 section 8.1).
pub fn key_authorization(token: &str, account: &Jwk) -> String {
    format!("{token}.{}", account.thumbprint())
}

/// The TXT record value dns-01 expects (RFC 8555 section 8.4).
pub fn dns01_value(key_authorization: &str) -> String {
    b64u(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn es256() -> (EcdsaKeyPair, Jwk) {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
        let p = pair.public_key().as_ref();
        let jwk = Jwk::Ec { crv: "P-256", x: p[1..33].to_vec(), y: p[33..].to_vec() };
        (pair, jwk)
    }

    fn sign(pair: &EcdsaKeyPair, header: Value, payload: &str) -> Vec<u8> {
        let protected = b64u(header.to_string().as_bytes());
        let payload = if payload.is_empty() { String::new() } else { b64u(payload.as_bytes()) };
        let sig = pair.sign(&SystemRandom::new(), format!("{protected}.{payload}").as_bytes()).expect("sign");
        serde_json::json!({"protected": protected, "payload": payload, "signature": b64u(sig.as_ref())})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let (pair, jwk) = es256();
        let body = sign(
            &pair,
            serde_json::json!({"alg": "ES256", "nonce": "n1", "url": "https://x/acme/new-order", "jwk": jwk.to_value()}),
            r#"{"identifiers":[]}"#,
        );
        let jws = Jws::parse(&body).expect("parse");
        assert_eq!(jws.protected.url, "https://x/acme/new-order");
        assert_eq!(jws.protected.key, KeyRef::Jwk(jwk.clone()));
        jws.verify(&jwk).expect("verifies");
        let (_, other) = es256();
        assert_eq!(jws.verify(&other).expect_err("other key").kind, ProblemType::Malformed);
        let tampered = String::from_utf8(body).expect("utf8").replace("\"payload\":\"", "\"payload\":\"e");
        if let Ok(j) = Jws::parse(tampered.as_bytes()) {
            assert!(j.verify(&jwk).is_err(), "a changed payload must not verify");
        }
    }

    #[test]
    fn header_rules_give_the_right_problem() {
        let (pair, jwk) = es256();
        let both =
            sign(&pair, serde_json::json!({"alg":"ES256","nonce":"n","url":"u","jwk":jwk.to_value(),"kid":"k"}), "");
        assert_eq!(Jws::parse(&both).expect_err("both").kind, ProblemType::Malformed);
        let no_nonce = sign(&pair, serde_json::json!({"alg":"ES256","url":"u","kid":"k"}), "");
        assert_eq!(Jws::parse(&no_nonce).expect("a keyChange's inner JWS has none").protected.nonce, None);
        let hs = sign(&pair, serde_json::json!({"alg":"HS256","nonce":"n","url":"u","kid":"k"}), "");
        assert_eq!(Jws::parse(&hs).expect_err("mac").kind, ProblemType::BadSignatureAlgorithm);
        let none = sign(&pair, serde_json::json!({"alg":"none","nonce":"n","url":"u","kid":"k"}), "");
        assert_eq!(Jws::parse(&none).expect_err("none").kind, ProblemType::BadSignatureAlgorithm);
        let unprotected = br#"{"protected":"e30","payload":"","signature":"","header":{}}"#;
        assert_eq!(Jws::parse(unprotected).expect_err("header").kind, ProblemType::Malformed);
        let private = serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"});
        assert_eq!(Jwk::parse(&private).expect_err("private").kind, ProblemType::BadPublicKey);
        let es384_on_p256 = sign(&pair, serde_json::json!({"alg":"ES384","nonce":"n","url":"u","kid":"k"}), "");
        let parsed = Jws::parse(&es384_on_p256).expect("shape is fine");
        assert_eq!(parsed.verify(&jwk).expect_err("alg").kind, ProblemType::BadSignatureAlgorithm);
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 section 3.1.
        let jwk = Jwk::parse(&serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        }))
        .expect("rsa jwk");
        assert_eq!(jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn eab_binds_the_account_key_to_the_mac_key() {
        let (_, jwk) = es256();
        let key = b"0123456789abcdef0123456789abcdef";
        let protected = b64u(br#"{"alg":"HS256","kid":"kid-1","url":"https://x/acme/new-account"}"#);
        let payload = b64u(jwk.canonical().as_bytes());
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            format!("{protected}.{payload}").as_bytes(),
        );
        let value = serde_json::json!({"protected": protected, "payload": payload, "signature": b64u(tag.as_ref())});
        let eab = Eab::parse(&value).expect("parse");
        assert_eq!(eab.kid, "kid-1");
        eab.verify(key, &jwk, "https://x/acme/new-account").expect("binds");
        assert!(eab.verify(b"another key, another tenant.....", &jwk, "https://x/acme/new-account").is_err());
        let (_, other) = es256();
        assert!(eab.verify(key, &other, "https://x/acme/new-account").is_err());
        assert!(eab.verify(key, &jwk, "https://x/acme/new-order").is_err());
    }
}
