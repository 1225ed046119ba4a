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
