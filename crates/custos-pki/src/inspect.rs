//! Reading certificates back: the facts `custos show` prints.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{PkiError, Serial};

/// What a certificate says, in plain values.
#[derive(Clone, Debug)]
pub struct CertificateFacts {
    /// Serial number.
    pub serial: Serial,
    /// Subject DN as text.
    pub subject: String,
    /// Issuer DN as text.
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Subject alternative names as text.
    pub sans: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// The authorityKeyIdentifier's keyIdentifier (what ARI names the issuer by).
    pub authority_key_id: Option<Vec<u8>>,
    /// The subject public key, to compare with a key presented elsewhere (an ACME JWK).
    pub subject_key: SubjectKey,
}

/// A certificate's subject public key in its plain parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectKey {
    /// An EC key: the uncompressed point.
    Ec(Vec<u8>),
    /// An RSA key: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Exponent.
        e: Vec<u8>,
    },
    /// An Ed25519 key.
    Ed25519(Vec<u8>),
    /// Anything else.
    Other,
}

fn strip_leading_zeros(b: &[u8]) -> Vec<u8> {
    b.iter().skip_while(|x| **x == 0).copied().collect()
}

/// Parses a DER certificate into [`CertificateFacts`].
pub fn certificate_facts(der: &[u8]) -> Result<CertificateFacts, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(match name {
                GeneralName::DNSName(d) => (*d).to_string(),
                GeneralName::URI(u) => (*u).to_string(),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                    16 => {
                        <[u8; 16]>::try_from(*ip).map(|a| std::net::Ipv6Addr::from(a).to_string()).unwrap_or_default()
                    }
                    _ => hex::encode(ip),
                },
                other => format!("{other:?}"),
            });
        }
    }
    let authority_key_id = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
            aki.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    });
    let spki = cert.public_key();
    let subject_key = if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        SubjectKey::Ed25519(spki.subject_public_key.data.to_vec())
    } else {
        match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::EC(point)) => SubjectKey::Ec(point.data().to_vec()),
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                SubjectKey::Rsa { n: strip_leading_zeros(rsa.modulus), e: strip_leading_zeros(rsa.exponent) }
            }
            _ => SubjectKey::Other,
        }
    };
    Ok(CertificateFacts {
        authority_key_id,
        subject_key,
        serial: Serial::from_bytes(cert.raw_serial())?,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        spki_sha256: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw)),
    })
}

/// What a CRL says, in plain values.
#[derive(Clone, Debug)]
pub struct CrlFacts {
    /// The CRL number.
    pub number: i64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// How many certificates it lists.
    pub entries: usize,
}

/// Parses a DER CRL into [`CrlFacts`].
pub fn crl_facts(der: &[u8]) -> Result<CrlFacts, PkiError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| PkiError::MalformedCertificate(format!("CRL: {e}")))?;
    let number = crl.crl_number().and_then(|n| i64::try_from(n.clone()).ok()).unwrap_or(0);
    Ok(CrlFacts {
        number,
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()).unwrap_or(0),
        entries: crl.iter_revoked_certificates().count(),
    })
}

/// A certificate's SubjectPublicKeyInfo, DER, if it parses (to check a
/// handshake signature without judging the certificate otherwise).
pub fn subject_public_key_info(der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c.public_key().raw.to_vec())
}

/// The acmeIdentifier extension (RFC 8737 section 6.1).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// Checks a tls-alpn-01 validation certificate (RFC 8737 section 3): its only
/// subjectAltName is the dNSName `name`, and it carries a critical
/// acmeIdentifier extension holding `digest`, the SHA-256 of the key
/// authorization. Says what was wrong, for the challenge's error.
pub fn check_tls_alpn01(der: &[u8], name: &str, digest: &[u8]) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("the certificate does not parse: {e}"))?;
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().map(|n| n.to_string()).collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("its subjectAltName does not parse: {e}")),
    };
    let only_name = match cert.subject_alternative_name() {
        Ok(Some(ext)) => {
            ext.value.general_names.len() == 1
                && matches!(ext.value.general_names[0], GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name))
        }
        _ => false,
    };
    if !only_name {
        return Err(format!("its subjectAltName is [{}], not exactly the dNSName {name}", sans.join(", ")));
    }
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ACME_IDENTIFIER_OID)
        .ok_or_else(|| "it has no acmeIdentifier extension".to_string())?;
    if !ext.critical {
        return Err("its acmeIdentifier extension is not critical".into());
    }
    // The value is an OCTET STRING (tag 4, length 32) holding the digest.
    match ext.value {
        [4, 32, rest @ ..] if rest == digest => Ok(()),
        [4, 32, _rest @ ..] => Err("its acmeIdentifier is not the SHA-256 of the key authorization".into()),
        _ => Err("its acmeIdentifier is not a 32-byte OCTET STRING".into()),
    }
}

#[cfg(test)]
mod tls_alpn_tests {
    use super::check_tls_alpn01;

    fn cert(names: &[&str], digest: &[u8; 32], critical: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let mut ext = rcgen::CustomExtension::new_acme_identifier(digest);
        ext.set_criticality(critical);
        params.custom_extensions = vec![ext];
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_validation_certificate_must_name_the_identifier_and_carry_the_digest() {
        let digest = [7u8; 32];
        check_tls_alpn01(&cert(&["www.acme.example"], &digest, true), "www.acme.example", &digest).expect("valid");
        let wrong = check_tls_alpn01(&cert(&["www.acme.example"], &[8u8; 32], true), "www.acme.example", &digest);
        assert!(wrong.expect_err("digest").contains("SHA-256"));
        let two = check_tls_alpn01(
            &cert(&["www.acme.example", "x.acme.example"], &digest, true),
            "www.acme.example",
            &digest,
        );
        assert!(two.expect_err("names").contains("not exactly"));
        let other = check_tls_alpn01(&cert(&["other.example"], &digest, true), "www.acme.example", &digest);
        assert!(other.is_err());
        let soft = check_tls_alpn01(&cert(&["www.acme.example"], &digest, false), "www.acme.example", &digest);
        assert!(soft.expect_err("critical").contains("critical"));
        assert!(check_tls_alpn01(b"junk", "www.acme.example", &digest).is_err());
    }
}
