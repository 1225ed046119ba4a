//! Certificate revocation lists (RFC 5280 section 5), signed by the CA key.

use time::OffsetDateTime;

use crate::der::{generalized_time, seq, signature_algorithm, tlv, unsigned_integer, x509_time};

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

/// id-ce-authorityKeyIdentifier, id-ce-cRLNumber, id-ce-issuingDistributionPoint
/// (RFC 5280 5.2); the entry extensions (5.3) are written inline below.
const OID_AKI: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];
const OID_CRL_NUMBER: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x14];
const OID_IDP: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x1c];

impl CaIssuer {
    /// Signs a CRL with this CA's key.
    ///
    /// Encoded here rather than through a generic DER writer: a CRL is one
    /// fixed structure repeated per entry, and at a million entries the
    /// generic path took ~0.9 s where this takes a small fraction of it.
    pub fn sign_crl(&self, spec: &CrlSpec) -> Result<Vec<u8>, PkiError> {
        let algorithm = signature_algorithm(self.signer().algorithm());
        // Revoked entries, written straight into one buffer: every length is
        // known up front, so no entry allocates (a million entries in ~0.1 s).
        let mut entries = Vec::with_capacity(spec.revoked.len() * 64);
        let mut time_cache: Option<(OffsetDateTime, [u8; 15])> = None;
        for r in &spec.revoked {
            let revoked_at = truncate(r.revoked_at);
            let when = match time_cache {
                Some((t, bytes)) if t == revoked_at => bytes,
                _ => {
                    let bytes = utc_time(revoked_at)
                        .ok_or_else(|| PkiError::Template(format!("revocation time {revoked_at} is past 2049")))?;
                    time_cache = Some((revoked_at, bytes));
                    bytes
                }
            };
            let serial = r.serial.as_bytes();
            let pad = usize::from(serial.first().is_some_and(|b| b & 0x80 != 0));
            let serial_len = 2 + pad + serial.len();
            let reason = r.reason.filter(|r| *r != Reason::Unspecified);
            let invalidity = r.invalidity_date.map(|d| generalized_time(truncate(d)));
            let ext_len = reason.map_or(0, |_| 12) + invalidity.as_ref().map_or(0, |g| 9 + g.len());
            let body = serial_len + when.len() + if ext_len > 0 { 2 + ext_len } else { 0 };
            entries.extend_from_slice(&[0x30, body as u8, 0x02, (pad + serial.len()) as u8]);
            if pad == 1 {
                entries.push(0);
            }
            entries.extend_from_slice(serial);
            entries.extend_from_slice(&when);
            if ext_len > 0 {
                entries.extend_from_slice(&[0x30, ext_len as u8]);
                if let Some(reason) = reason {
                    entries.extend_from_slice(&[
                        0x30,
                        0x0a,
                        0x06,
                        0x03,
                        0x55,
                        0x1d,
                        0x15,
                        0x04,
                        0x03,
                        0x0a,
                        0x01,
                        reason.code(),
                    ]);
                }
                if let Some(g) = invalidity {
                    entries.extend_from_slice(&[
                        0x30,
                        (7 + g.len()) as u8, // SEQUENCE { OID, OCTET STRING { GeneralizedTime } }
                        0x06,
                        0x03,
                        0x55,
                        0x1d,
                        0x18,
                        0x04,
                        g.len() as u8,
                    ]);
                    entries.extend_from_slice(&g);
                }
            }
        }
        let mut extensions = Vec::new();
        extensions.extend(seq(&[OID_AKI, &tlv(0x04, &seq(&[&tlv(0x80, self.key_identifier())]))]));
        extensions.extend(seq(&[OID_CRL_NUMBER, &tlv(0x04, &unsigned_integer(&trimmed(spec.number)))]));
        if let Some(url) = &spec.user_certs_at {
            // distributionPoint [0] { fullName [0] { URI [6] } }, onlyContainsUserCerts [1] TRUE.
            let dp = tlv(0xa0, &tlv(0xa0, &tlv(0x86, url.as_bytes())));
            let idp = seq(&[&dp, &[0x81, 0x01, 0xff]]);
            extensions.extend(seq(&[OID_IDP, &[0x01, 0x01, 0xff], &tlv(0x04, &idp)]));
        }
        let mut tbs_parts: Vec<Vec<u8>> = vec![
            vec![0x02, 0x01, 0x01], // version v2
            algorithm.to_vec(),
            self.subject_der().to_vec(),
            x509_time(truncate(spec.this_update)),
            x509_time(truncate(spec.next_update)),
        ];
        if !entries.is_empty() {
            // An empty revokedCertificates must be absent, not an empty SEQUENCE (RFC 5280 5.1.2.6).
            tbs_parts.push(tlv(0x30, &entries));
        }
        drop(entries);
        tbs_parts.push(tlv(0xa0, &tlv(0x30, &extensions)));
        let tbs = tlv(0x30, &tbs_parts.concat());
        drop(tbs_parts);
        let signature = self.signer().sign(&tbs).map_err(|e| PkiError::Signing(format!("CRL: {e}")))?;
        let mut bits = Vec::with_capacity(signature.len() + 1);
        bits.push(0);
        bits.extend(signature);
        Ok(seq(&[&tbs, algorithm, &tlv(0x03, &bits)]))
    }
}

/// UTCTime `YYMMDDHHMMSSZ` as a whole TLV, for years before 2050 (RFC 5280 5.1.2.4).
fn utc_time(t: OffsetDateTime) -> Option<[u8; 15]> {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(1950..2050).contains(&t.year()) {
        return None;
    }
    let mut out = [0x17, 13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'Z'];
    for (i, v) in
        [(t.year() % 100) as u8, u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()].into_iter().enumerate()
    {
        out[2 + 2 * i] = b'0' + v / 10;
        out[3 + 2 * i] = b'0' + v % 10;
    }
    Some(out)
}

/// A CRL number as minimal big-endian octets.
fn trimmed(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes[skip..].to_vec()
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}
