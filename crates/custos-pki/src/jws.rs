//! JWT client assertions (RFC 7523, RFC 7515 compact serialization) as an
//! OAuth 2.0 identity provider such as Microsoft Entra ID takes them: the
//! header names the certificate by its thumbprints (`x5t#S256`, and `x5t`
//! for RSA), the claims are `aud`, `iss`, `sub`, `jti`, `nbf`, `iat`, `exp`.
//!
//! Encoding only: the signature over [`AssertionDraft::signing_input`] comes
//! from whoever holds the key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::PkiError;
use crate::der::Reader;

/// A client assertion waiting for its signature.
#[derive(Clone, Debug)]
pub struct AssertionDraft {
    signing_input: String,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<String>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

/// The claims of a client assertion.
#[derive(Clone, Debug, Serialize)]
pub struct AssertionClaims {
    /// The token endpoint it is for.
    pub aud: String,
    /// The client id (issuer).
    pub iss: String,
    /// The client id (subject).
    pub sub: String,
    /// A unique id, so the identity provider can refuse a replay.
    pub jti: String,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires, Unix seconds.
    pub exp: i64,
}

/// `x5t#S256`: base64url of the certificate's SHA-256.
pub fn thumbprint_sha256(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der))
}

/// `x5t`: base64url of the certificate's SHA-1 (what Entra ID documents for RSA).
pub fn thumbprint_sha1(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der))
}

impl AssertionDraft {
    /// Header and claims for a certificate; `with_sha1` adds `x5t`.
    pub fn new(alg: &str, cert_der: &[u8], with_sha1: bool, claims: &AssertionClaims) -> Result<Self, PkiError> {
        let header = Header {
            alg,
            typ: "JWT",
            x5t: with_sha1.then(|| thumbprint_sha1(cert_der)),
            x5t_s256: thumbprint_sha256(cert_der),
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        Ok(AssertionDraft { signing_input })
    }

    /// The bytes to sign: `BASE64URL(header) . BASE64URL(claims)`.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The compact JWS with `signature` (for ES256, the fixed `r || s` form).
    pub fn finish(self, signature: &[u8]) -> String {
        format!("{}.{}", self.signing_input, URL_SAFE_NO_PAD.encode(signature))
    }
}

/// base64url of a value's JSON.
fn b64_json<T: Serialize>(value: &T) -> Result<String, PkiError> {
    let json = serde_json::to_vec(value).map_err(|e| PkiError::Signing(format!("JWT encoding: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// A DER `Ecdsa-Sig-Value` as JWS wants it: `r || s`, each `size` bytes (RFC 7518 3.4).
pub fn ecdsa_fixed(der: &[u8], size: usize) -> Result<Vec<u8>, PkiError> {
    let bad = |what: &str| PkiError::Signing(format!("ECDSA signature: {what}"));
    let mut outer = Reader::new(der);
    let seq = outer.read(0x30, "not a SEQUENCE").map_err(|e| bad(e.0))?;
    if !outer.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let mut inner = Reader::new(seq);
    let mut out = Vec::with_capacity(2 * size);
    for _ in 0..2 {
        let int = inner.read(0x02, "not an INTEGER").map_err(|e| bad(e.0))?;
        let int = match int {
            [0, rest @ ..] => rest,
            all => all,
        };
        if int.len() > size {
            return Err(bad("integer longer than the curve"));
        }
        out.extend(std::iter::repeat_n(0u8, size - int.len()));
        out.extend_from_slice(int);
    }
    if !inner.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_der_becomes_fixed_width() {
        // r has a leading zero (high bit set), s is short.
        let der = [0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x05];
        let fixed = ecdsa_fixed(&der, 4).expect("parse");
        assert_eq!(fixed, vec![0, 0, 0x80, 0x01, 0, 0, 0, 0x05]);
        assert!(ecdsa_fixed(&der[..9], 4).is_err());
        assert!(ecdsa_fixed(&[0x30, 0x00], 4).is_err());
    }

    #[test]
    fn the_signing_input_is_header_dot_claims() {
        let claims = AssertionClaims {
            aud: "https://login.example/t/oauth2/v2.0/token".into(),
            iss: "app".into(),
            sub: "app".into(),
            jti: "j".into(),
            nbf: 1,
            iat: 1,
            exp: 601,
        };
        let draft = AssertionDraft::new("PS256", b"cert", true, &claims).expect("draft");
        let input = String::from_utf8(draft.signing_input().to_vec()).expect("utf8");
        let (h, c) = input.split_once('.').expect("dot");
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json");
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], thumbprint_sha256(b"cert"));
        assert_eq!(header["x5t"], thumbprint_sha1(b"cert"));
        let body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).expect("b64")).expect("json");
        assert_eq!(body["exp"], 601);
        assert!(draft.finish(b"sig").ends_with(".c2ln"));
    }
}
