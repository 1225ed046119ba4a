//! Certificate revocation lists (RFC 5280 section 5), signed by the CA key.

use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, CrlScope, KeyIdMethod,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;

use crate::{CaIssuer, PkiError, Reason, Serial};

/// One revoked certificate on a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Its serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why; `unspecified` is written as no reason code (RFC 5280 5.3.1).
    pub reason: Option<Reason>,
    /// When the key is known or suspected to have been compromised.
    pub invalidity_date: Option<OffsetDateTime>,
}

/// What goes into one CRL.
#[derive(Clone, Debug)]
pub struct CrlSpec {
    /// Monotonic CRL number for this issuer.
    pub number: u64,
    /// Issue time.
    pub this_update: OffsetDateTime,
    /// By when the next CRL will be out.
    pub next_update: OffsetDateTime,
    /// The URL this CRL is published at, written as its issuing distribution
    /// point when it covers end-entity certificates only.
    pub user_certs_at: Option<String>,
    /// The revoked certificates.
    pub revoked: Vec<RevokedEntry>,
}

impl CaIssuer {
    /// Signs a CRL with this CA's key.
    pub fn sign_crl(&self, spec: &CrlSpec) -> Result<Vec<u8>, PkiError> {
        let revoked_certs = spec
            .revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                revocation_time: truncate(r.revoked_at),
                reason_code: r.reason.filter(|r| *r != Reason::Unspecified).map(Reason::rcgen),
                invalidity_date: r.invalidity_date.map(truncate),
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: truncate(spec.this_update),
            next_update: truncate(spec.next_update),
            crl_number: SerialNumber::from_slice(&spec.number.to_be_bytes()),
            issuing_distribution_point: spec.user_certs_at.as_ref().map(|url| CrlIssuingDistributionPoint {
                distribution_point: CrlDistributionPoint { uris: vec![url.clone()] },
                scope: Some(CrlScope::UserCertsOnly),
            }),
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_identifier().to_vec()),
        };
        let crl = params.signed_by(self.rcgen()).map_err(|e| PkiError::Signing(format!("CRL: {e}")))?;
        Ok(crl.der().to_vec())
    }
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}
