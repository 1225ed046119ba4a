//! Issuance in two steps: build and check a [`CertificateTemplate`], then
//! consume it to sign. A template cannot be cloned, so one check yields at
//! most one signature.

use std::net::IpAddr;
use std::sync::Arc;

use custos_types::{KeyAlgorithm, PublicKey, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::der::authority_info_access;
use crate::{PkiError, Profile, Serial};

/// ub-common-name and ub-organization-name, RFC 5280 appendix A.
const MAX_NAME_LEN: usize = 64;
/// id-pe-authorityInfoAccess, 1.3.6.1.5.5.7.1.1.
const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
/// id-pkix-ocsp-nocheck, 1.3.6.1.5.5.7.48.1.5.
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

/// The URLs a certificate points relying parties to (RFC 5280 4.2.1.13, 4.2.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerUrls {
    /// CRL distribution point.
    pub crl: String,
    /// OCSP responder.
    pub ocsp: String,
    /// Where the issuer's certificate can be fetched.
    pub ca_issuers: String,
}

/// Everything that goes into a certificate except the keys.
#[derive(Clone, Debug)]
pub struct CertificateSpec {
    /// The serial, unique per issuer.
    pub serial: Serial,
    /// The profile that fixes key usages and basic constraints.
    pub profile: Profile,
    /// Subject common name.
    pub common_name: String,
    /// Subject organization, if any.
    pub organization: Option<String>,
    /// DNS names, IP addresses or URIs.
    pub sans: Vec<String>,
    /// Start of validity (truncated to whole seconds).
    pub not_before: OffsetDateTime,
    /// End of validity (truncated to whole seconds).
    pub not_after: OffsetDateTime,
    /// CDP and AIA; `None` only for a self-signed root.
    pub urls: Option<IssuerUrls>,
}

impl CertificateSpec {
    /// Checks the spec against its profile and X.509 rules without building
    /// anything: what [`CertificateTemplate::new`] refuses, this refuses.
    pub fn check(&self) -> Result<(), PkiError> {
        if truncate(self.not_after) <= truncate(self.not_before) {
            return Err(PkiError::Template("notAfter must be later than notBefore".into()));
        }
        if self.common_name.is_empty() || self.common_name.chars().count() > MAX_NAME_LEN {
            return Err(PkiError::Template(format!(
                "common name {:?} must be 1 to {MAX_NAME_LEN} characters",
                self.common_name
            )));
        }
        if let Some(o) = &self.organization
            && (o.is_empty() || o.chars().count() > MAX_NAME_LEN)
        {
            return Err(PkiError::Template(format!("organization {o:?} must be 1 to {MAX_NAME_LEN} characters")));
        }
        if self.profile == Profile::Server && self.sans.is_empty() {
            return Err(PkiError::Template("a server certificate needs at least one SAN".into()));
        }
        if self.profile.is_ca() && !self.sans.is_empty() {
            return Err(PkiError::Template("a CA certificate carries no SAN".into()));
        }
        if self.profile != Profile::RootCa && self.urls.is_none() {
            return Err(PkiError::Template("a certificate below the root needs CRL and OCSP URLs".into()));
        }
        for s in &self.sans {
            san(s)?;
        }
        Ok(())
    }
}

/// A certificate checked against its profile and ready to be signed once.
#[derive(Debug)]
pub struct CertificateTemplate {
    spec: CertificateSpec,
    params: CertificateParams,
}

/// A signed certificate and the facts recorded about it.
#[derive(Clone, Debug)]
pub struct SignedCertificate {
    /// The DER certificate.
    pub der: Vec<u8>,
    /// Its serial.
    pub serial: Serial,
    /// Its subject as text.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the subject public key info, hex.
    pub spki_sha256: String,
}

impl CertificateTemplate {
    /// Checks `spec` against its profile and prepares the encoding.
    pub fn new(mut spec: CertificateSpec) -> Result<CertificateTemplate, PkiError> {
        spec.check()?;
        spec.not_before = truncate(spec.not_before);
        spec.not_after = truncate(spec.not_after);

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(spec.serial.as_bytes()));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let mut dn = DistinguishedName::new();
        if let Some(o) = &spec.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = spec.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        match spec.profile {
            Profile::Client => {
                // ExplicitNoCa makes rcgen write basicConstraints CA:FALSE and
                // the subjectKeyIdentifier (RFC 5280 4.2.1.2 SHOULD for end entities).
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Profile::Server => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Profile::OcspResponder => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
            }
            Profile::RootCa | Profile::IssuingCa => {
                let path_len = if spec.profile == Profile::RootCa { 1 } else { 0 };
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            }
        }
        // AKI on every certificate, the root's equal to its own SKI, so chain
        // builders and linters never have to guess (RFC 5280 4.2.1.1).
        params.use_authority_key_identifier_extension = true;
        if let Some(urls) = &spec.urls {
            params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![urls.crl.clone()] }];
            params.custom_extensions =
                vec![CustomExtension::from_oid_content(OID_AIA, authority_info_access(&urls.ocsp, &urls.ca_issuers))];
            if spec.profile == Profile::OcspResponder {
                // id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): clients need not
                // ask about the responder's own certificate.
                params.custom_extensions.push(CustomExtension::from_oid_content(OID_OCSP_NOCHECK, vec![0x05, 0x00]));
            }
        }
        Ok(CertificateTemplate { spec, params })
    }

    /// Signs the certificate for `subject` with `issuer`, then checks the result.
    pub fn sign(
        self,
        subject: &PublicKey,
        subject_algorithm: KeyAlgorithm,
        issuer: &CaIssuer,
    ) -> Result<SignedCertificate, PkiError> {
        if self.spec.profile == Profile::RootCa {
            return Err(PkiError::Template("a root certificate is self-signed".into()));
        }
        if self.spec.not_after > issuer.not_after {
            return Err(PkiError::Template(format!(
                "notAfter {} is past the issuer's notAfter {}",
                self.spec.not_after, issuer.not_after
            )));
        }
        let key = SubjectKey { public: subject, algorithm: subject_algorithm };
        let mut params = self.params;
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(subject));
        let cert = params.signed_by(&key, &issuer.inner).map_err(|e| PkiError::Signing(e.to_string()))?;
        check_issued(cert.der().to_vec(), &self.spec, subject)
    }

    /// Signs a root certificate with its own key and returns it as an issuer.
    pub fn self_sign(self, signer: Arc<dyn Signer>) -> Result<(SignedCertificate, CaIssuer), PkiError> {
        if self.spec.profile != Profile::RootCa {
            return Err(PkiError::Template("only a root certificate is self-signed".into()));
        }
        let key = CaKey(signer.clone());
        let mut params = self.params;
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(signer.public_key()));
        let cert = params.self_signed(&key).map_err(|e| PkiError::Signing(e.to_string()))?;
        let signed = check_issued(cert.der().to_vec(), &self.spec, signer.public_key())?;
        let issuer = CaIssuer::new(&signed.der, signer)?;
        Ok((signed, issuer))
    }
}

/// A CA certificate with the key that signs for it.
pub struct CaIssuer {
    inner: rcgen::Issuer<'static, CaKey>,
    signer: Arc<dyn Signer>,
    subject_der: Vec<u8>,
    not_after: OffsetDateTime,
    key_identifier: Vec<u8>,
}

impl std::fmt::Debug for CaIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaIssuer(notAfter {})", self.not_after)
    }
}

impl CaIssuer {
    /// Pairs a CA certificate with its signer, refusing a signer whose public key is not the certificate's.
    pub fn new(cert_der: &[u8], signer: Arc<dyn Signer>) -> Result<CaIssuer, PkiError> {
        let (_, cert) =
            X509Certificate::from_der(cert_der).map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        if cert.public_key().raw != signer.public_key().spki_der() {
            return Err(PkiError::Template("the CA key does not match the CA certificate".into()));
        }
        if !cert.is_ca() {
            return Err(PkiError::Template("the issuer certificate is not a CA".into()));
        }
        let not_after = cert.validity().not_after.to_datetime();
        let key_identifier = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| key_identifier(signer.public_key()));
        let subject_der = cert.tbs_certificate.subject.as_raw().to_vec();
        let inner = rcgen::Issuer::from_ca_cert_der(&cert_der.into(), CaKey(signer.clone()))
            .map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        Ok(CaIssuer { inner, signer, subject_der, not_after, key_identifier })
    }

    /// The CA's subject key identifier, which its CRLs name as their AKI.
    pub fn key_identifier(&self) -> &[u8] {
        &self.key_identifier
    }

    /// The CA's key.
    pub(crate) fn signer(&self) -> &dyn Signer {
        self.signer.as_ref()
    }

    /// The DER of the CA's subject name, byte for byte as in its certificate.
    pub(crate) fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// End of the CA certificate's validity: nothing it signs may outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// A custos key seen by rcgen: signing goes through the key store.
pub(crate) struct CaKey(Arc<dyn Signer>);

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        signature_algorithm(self.0.algorithm())
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A subject public key seen by rcgen.
struct SubjectKey<'a> {
    public: &'a PublicKey,
    algorithm: KeyAlgorithm,
}

impl rcgen::PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        signature_algorithm(self.algorithm)
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        // The requester's own encoding, byte for byte.
        self.public.spki_der().to_vec()
    }
}

/// The X.509 signature algorithm a key of `algorithm` signs with.
fn signature_algorithm(algorithm: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

/// RFC 7093 section 2 method 1: the leftmost 160 bits of the SHA-256 of the
/// subjectPublicKey BIT STRING value; linters recognise it, unlike a hash of the whole SPKI.
fn key_identifier(key: &PublicKey) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.raw()).as_ref()[..20].to_vec()
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn san(s: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if s.contains("://") {
        let uri = s.try_into().map_err(|_| PkiError::Template(format!("SAN URI {s:?} is not ASCII")))?;
        return Ok(SanType::URI(uri));
    }
    check_dns_name(s)?;
    let name = s.try_into().map_err(|_| PkiError::Template(format!("SAN {s:?} is not ASCII")))?;
    Ok(SanType::DnsName(name))
}

/// Checks a DNS name SAN (RFC 5280 4.2.1.6, preferred name syntax): lowercase
/// LDH labels, an optional leading `*.` wildcard, at most 253 characters.
pub fn check_dns_name(name: &str) -> Result<(), PkiError> {
    let bad = |why: &str| Err(PkiError::Template(format!("SAN {name:?} is not a valid DNS name: {why}")));
    if name.is_empty() || name.len() > 253 {
        return bad("length must be 1 to 253");
    }
    let body = name.strip_prefix("*.").unwrap_or(name);
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return bad("only lowercase letters, digits and '-' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with '-'");
        }
    }
    Ok(())
}

/// Parses what we just signed and checks it says what the template said.
fn check_issued(der: Vec<u8>, spec: &CertificateSpec, subject: &PublicKey) -> Result<SignedCertificate, PkiError> {
    let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| PkiError::Check(format!("does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::Check("trailing bytes".into()));
    }
    let serial = Serial::from_bytes(cert.raw_serial()).map_err(|e| PkiError::Check(e.to_string()))?;
    if serial != spec.serial {
        return Err(PkiError::Check("serial differs from the template".into()));
    }
    if cert.validity().not_before.to_datetime() != spec.not_before
        || cert.validity().not_after.to_datetime() != spec.not_after
    {
        return Err(PkiError::Check("validity differs from the template".into()));
    }
    if cert.public_key().raw != subject.spki_der() {
        return Err(PkiError::Check("subject public key differs".into()));
    }
    if cert.is_ca() != spec.profile.is_ca() {
        return Err(PkiError::Check("basic constraints differ from the profile".into()));
    }
    let subject_text = cert.subject().to_string();
    drop(cert);
    Ok(SignedCertificate {
        serial,
        subject: subject_text,
        not_before: spec.not_before,
        not_after: spec.not_after,
        spki_sha256: subject.sha256_hex(),
        der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        for ok in ["api.acme.example", "*.acme.example", "a-b.c1"] {
            assert!(check_dns_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "API.acme.example", "a..b", "-a.b", "a.*.b", "a b", &"a".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }
}
