//! OCSP (RFC 6960, profiled by RFC 5019): parsing requests and encoding signed
//! responses. Requests are read with a strict DER reader of our own, so that
//! everything an untrusted client sends goes through ~100 bounds-checked lines.

use aws_lc_rs::digest;
use custos_types::Signer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::der::{DerError, Reader, generalized_time, seq, signature_algorithm, tlv, unsigned_integer};
use crate::{PkiError, Reason, Serial};

/// More certificates than this in one request is refused as malformed: RFC
/// 5019 clients send one, and each costs a lookup.
pub const MAX_CERTS_PER_REQUEST: usize = 16;
/// RFC 8954 nonces are 1 to 32 octets; some clients send more, none this many.
const MAX_NONCE: usize = 128;

const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
/// id-pkix-ocsp-nonce, 1.3.6.1.5.5.7.48.1.2.
const OID_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
/// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1.
const OID_BASIC: &[u8] = &[0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// The hash a CertID was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-1, what most clients (openssl included) still send.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlgorithm::Sha256 => &digest::SHA256,
            HashAlgorithm::Sha384 => &digest::SHA384,
            HashAlgorithm::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// One certificate asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The hash of the issuer name and key.
    pub hash: HashAlgorithm,
    /// Hash of the issuer's subject DN.
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's subjectPublicKey bits.
    pub issuer_key_hash: Vec<u8>,
    /// The serial.
    pub serial: Serial,
    /// The CertID exactly as the client sent it, echoed in the response.
    pub der: Vec<u8>,
}

/// A parsed OCSP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequest {
    /// The certificates asked about, 1 to [`MAX_CERTS_PER_REQUEST`].
    pub certs: Vec<CertId>,
    /// The nonce extension's value, to echo (RFC 8954).
    pub nonce: Option<Vec<u8>>,
}

/// Why a request could not be answered with statuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OcspRequestError {
    /// Not a well-formed request: answer `malformedRequest`.
    #[error("malformed OCSP request: {0}")]
    Malformed(&'static str),
    /// A CertID hashed with an algorithm we do not know: we cannot tell whose
    /// certificate it names, so answer `unauthorized`.
    #[error("unsupported CertID hash algorithm")]
    UnsupportedHash,
}

impl From<DerError> for OcspRequestError {
    fn from(e: DerError) -> Self {
        OcspRequestError::Malformed(e.0)
    }
}

impl OcspRequest {
    /// Parses a DER `OCSPRequest`. Signed requests are accepted; their signature is ignored.
    pub fn parse(der: &[u8]) -> Result<OcspRequest, OcspRequestError> {
        let bad = OcspRequestError::Malformed;
        let mut outer = Reader::new(der);
        let request = outer.read(0x30, "OCSPRequest must be a SEQUENCE")?;
        if !outer.is_empty() {
            return Err(bad("trailing bytes after the request"));
        }
        let mut request = Reader::new(request);
        let tbs = request.read(0x30, "tbsRequest must be a SEQUENCE")?;
        request.read_optional(0xa0)?; // optionalSignature
        if !request.is_empty() {
            return Err(bad("unexpected data after tbsRequest"));
        }
        let mut tbs = Reader::new(tbs);
        if let Some(version) = tbs.read_optional(0xa0)?
            && version != [0x02, 0x01, 0x00]
        {
            return Err(bad("only version 1 requests exist"));
        }
        tbs.read_optional(0xa1)?; // requestorName
        let list = tbs.read(0x30, "requestList must be a SEQUENCE")?;
        let mut nonce = None;
        if let Some(exts) = tbs.read_optional(0xa2)? {
            nonce = parse_nonce(exts)?;
        }
        if !tbs.is_empty() {
            return Err(bad("unexpected data in tbsRequest"));
        }
        let mut list = Reader::new(list);
        let mut certs = Vec::new();
        while !list.is_empty() {
            if certs.len() == MAX_CERTS_PER_REQUEST {
                return Err(bad("too many certificates in one request"));
            }
            let mut one = Reader::new(list.read(0x30, "Request must be a SEQUENCE")?);
            let (tag, cert_id, cert_id_der) = one.read_any()?;
            if tag != 0x30 {
                return Err(bad("CertID must be a SEQUENCE"));
            }
            one.read_optional(0xa0)?; // singleRequestExtensions
            if !one.is_empty() {
                return Err(bad("unexpected data in Request"));
            }
            certs.push(parse_cert_id(cert_id, cert_id_der)?);
        }
        if certs.is_empty() {
            return Err(bad("requestList is empty"));
        }
        Ok(OcspRequest { certs, nonce })
    }
}

fn parse_cert_id(contents: &[u8], der: &[u8]) -> Result<CertId, OcspRequestError> {
    let bad = OcspRequestError::Malformed;
    let mut r = Reader::new(contents);
    let mut alg = Reader::new(r.read(0x30, "hashAlgorithm must be a SEQUENCE")?);
    let oid = alg.read(0x06, "hashAlgorithm must start with an OID")?;
    match alg.read_optional(0x05)? {
        None | Some([]) => {}
        Some(_) => return Err(bad("hash parameters must be NULL or absent")),
    }
    if !alg.is_empty() {
        return Err(bad("unexpected hash parameters"));
    }
    let hash = match oid {
        OID_SHA1 => HashAlgorithm::Sha1,
        OID_SHA256 => HashAlgorithm::Sha256,
        OID_SHA384 => HashAlgorithm::Sha384,
        OID_SHA512 => HashAlgorithm::Sha512,
        _ => return Err(OcspRequestError::UnsupportedHash),
    };
    let issuer_name_hash = r.read(0x04, "issuerNameHash must be an OCTET STRING")?.to_vec();
    let issuer_key_hash = r.read(0x04, "issuerKeyHash must be an OCTET STRING")?.to_vec();
    let serial = r.read(0x02, "serialNumber must be an INTEGER")?;
    if !r.is_empty() {
        return Err(bad("unexpected data in CertID"));
    }
    if serial.is_empty() || serial[0] & 0x80 != 0 {
        return Err(bad("serialNumber must be positive"));
    }
    let serial = Serial::from_bytes(serial).map_err(|_| bad("serialNumber out of range"))?;
    Ok(CertId { hash, issuer_name_hash, issuer_key_hash, serial, der: der.to_vec() })
}

fn parse_nonce(exts: &[u8]) -> Result<Option<Vec<u8>>, OcspRequestError> {
    let bad = OcspRequestError::Malformed;
    let mut outer = Reader::new(exts);
    let mut list = Reader::new(outer.read(0x30, "requestExtensions must be a SEQUENCE")?);
    if !outer.is_empty() {
        return Err(bad("unexpected data after requestExtensions"));
    }
    let mut nonce = None;
    while !list.is_empty() {
        let mut ext = Reader::new(list.read(0x30, "Extension must be a SEQUENCE")?);
        let oid = ext.read(0x06, "extnID must be an OID")?;
        ext.read_optional(0x01)?; // critical
        let value = ext.read(0x04, "extnValue must be an OCTET STRING")?;
        if !ext.is_empty() {
            return Err(bad("unexpected data in Extension"));
        }
        if oid == OID_NONCE {
            if value.is_empty() || value.len() > MAX_NONCE {
                return Err(bad("nonce length out of range"));
            }
            nonce = Some(value.to_vec());
        }
    }
    Ok(nonce)
}

/// The hashes that identify one issuer in CertIDs, for every hash we accept.
#[derive(Clone, Debug)]
pub struct IssuerHashes {
    name_der: Vec<u8>,
    key_bits: Vec<u8>,
    by_hash: Vec<(HashAlgorithm, Vec<u8>, Vec<u8>)>,
}

impl IssuerHashes {
    /// Computes the name and key hashes of an issuer certificate.
    pub fn from_certificate(der: &[u8]) -> Result<IssuerHashes, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::MalformedCertificate(e.to_string()))?;
        let name_der = cert.tbs_certificate.subject.as_raw().to_vec();
        let key_bits = cert.public_key().subject_public_key.data.to_vec();
        let by_hash = [HashAlgorithm::Sha1, HashAlgorithm::Sha256, HashAlgorithm::Sha384, HashAlgorithm::Sha512]
            .into_iter()
            .map(|h| (h, h.digest(&name_der), h.digest(&key_bits)))
            .collect();
        Ok(IssuerHashes { name_der, key_bits, by_hash })
    }

    /// Whether `id` names a certificate of this issuer.
    pub fn matches(&self, id: &CertId) -> bool {
        self.by_hash
            .iter()
            .any(|(h, name, key)| *h == id.hash && *name == id.issuer_name_hash && *key == id.issuer_key_hash)
    }

    /// A CertID for `serial` under this issuer (for clients and tests).
    pub fn cert_id(&self, hash: HashAlgorithm, serial: &Serial) -> CertId {
        let alg_oid = match hash {
            HashAlgorithm::Sha1 => OID_SHA1,
            HashAlgorithm::Sha256 => OID_SHA256,
            HashAlgorithm::Sha384 => OID_SHA384,
            HashAlgorithm::Sha512 => OID_SHA512,
        };
        let name = hash.digest(&self.name_der);
        let key = hash.digest(&self.key_bits);
        let der = seq(&[
            &seq(&[&tlv(0x06, alg_oid), &[0x05, 0x00]]),
            &tlv(0x04, &name),
            &tlv(0x04, &key),
            &unsigned_integer(serial.as_bytes()),
        ]);
        CertId { hash, issuer_name_hash: name, issuer_key_hash: key, serial: serial.clone(), der }
    }
}

/// Builds a DER OCSP request for `ids`, optionally with a nonce (for clients and tests).
pub fn encode_request(ids: &[CertId], nonce: Option<&[u8]>) -> Vec<u8> {
    let list: Vec<u8> = ids.iter().flat_map(|id| seq(&[&id.der])).collect();
    let mut tbs = tlv(0x30, &list);
    if let Some(n) = nonce {
        let ext = seq(&[&tlv(0x06, OID_NONCE), &tlv(0x04, n)]);
        tbs.extend(tlv(0xa2, &seq(&[&ext])));
    }
    seq(&[&seq(&[&tbs])])
}

/// A certificate's status as OCSP states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued and not revoked.
    Good,
    /// Revoked at a time, perhaps for a reason.
    Revoked {
        /// When.
        time: OffsetDateTime,
        /// Why, if said.
        reason: Option<Reason>,
    },
    /// Never issued by this issuer (RFC 6960 2.2).
    Unknown,
}

/// One answer in a response.
#[derive(Clone, Debug)]
pub struct SingleResponse<'a> {
    /// The CertID as the client sent it.
    pub cert_id: &'a [u8],
    /// The status.
    pub status: CertStatus,
    /// When the status was known to be correct.
    pub this_update: OffsetDateTime,
    /// When newer information will be available.
    pub next_update: OffsetDateTime,
}

/// Unsigned OCSP error statuses (RFC 6960 4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseStatus {
    /// The request does not parse.
    MalformedRequest = 1,
    /// The responder failed.
    InternalError = 2,
    /// Try again later (the signing budget is spent).
    TryLater = 3,
    /// Not a certificate this responder answers for.
    Unauthorized = 6,
}

/// An unsigned error response: `OCSPResponse { responseStatus }`.
pub fn error_response(status: ResponseStatus) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, status as u8]
}

/// The delegated responder that signs responses for one issuer.
pub struct Responder<'a> {
    /// Its key.
    pub signer: &'a dyn Signer,
    /// Its certificate, issued by the CA it answers for, included in each response.
    pub certificate_der: &'a [u8],
}

/// Encodes and signs a successful response (RFC 6960 4.2.1, BasicOCSPResponse).
pub fn sign_response(
    responder: &Responder<'_>,
    responses: &[SingleResponse<'_>],
    nonce: Option<&[u8]>,
    produced_at: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let key_hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, responder.signer.public_key().raw());
    let responder_id = tlv(0xa2, &tlv(0x04, key_hash.as_ref()));
    let mut singles = Vec::new();
    for r in responses {
        let status = match r.status {
            CertStatus::Good => vec![0x80, 0x00],
            CertStatus::Unknown => vec![0x82, 0x00],
            CertStatus::Revoked { time, reason } => {
                let mut info = generalized_time(time);
                if let Some(reason) = reason {
                    info.extend(tlv(0xa0, &[0x0a, 0x01, reason.code()]));
                }
                tlv(0xa1, &info)
            }
        };
        singles.extend(seq(&[
            r.cert_id,
            &status,
            &generalized_time(r.this_update),
            &tlv(0xa0, &generalized_time(r.next_update)),
        ]));
    }
    let mut data = responder_id;
    data.extend(generalized_time(produced_at));
    data.extend(tlv(0x30, &singles));
    if let Some(n) = nonce {
        let ext = seq(&[&tlv(0x06, OID_NONCE), &tlv(0x04, n)]);
        data.extend(tlv(0xa1, &seq(&[&ext])));
    }
    let tbs = tlv(0x30, &data);
    let signature = responder.signer.sign(&tbs).map_err(|e| PkiError::Signing(e.to_string()))?;
    let mut bits = vec![0u8];
    bits.extend(signature);
    let basic = seq(&[
        &tbs,
        signature_algorithm(responder.signer.algorithm()),
        &tlv(0x03, &bits),
        &tlv(0xa0, &seq(&[responder.certificate_der])),
    ]);
    let bytes = seq(&[OID_BASIC, &tlv(0x04, &basic)]);
    Ok(seq(&[&[0x0a, 0x01, 0x00], &tlv(0xa0, &bytes)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CertId {
        let serial: Serial = "4a1f".parse().expect("serial");
        let der = seq(&[
            &seq(&[&tlv(0x06, OID_SHA1), &[0x05, 0x00]]),
            &tlv(0x04, &[1; 20]),
            &tlv(0x04, &[2; 20]),
            &unsigned_integer(serial.as_bytes()),
        ]);
        CertId { hash: HashAlgorithm::Sha1, issuer_name_hash: vec![1; 20], issuer_key_hash: vec![2; 20], serial, der }
    }

    #[test]
    fn request_round_trips_with_and_without_nonce() {
        let with = encode_request(&[id(), id()], Some(&[0x04, 0x02, 9, 9]));
        let parsed = OcspRequest::parse(&with).expect("parse");
        assert_eq!(parsed.certs, vec![id(), id()]);
        assert_eq!(parsed.nonce.as_deref(), Some(&[0x04, 0x02, 9, 9][..]));
        let without = OcspRequest::parse(&encode_request(&[id()], None)).expect("parse");
        assert_eq!(without.nonce, None);
    }

    #[test]
    fn every_truncation_and_garbage_is_malformed_not_a_panic() {
        let good = encode_request(&[id()], Some(&[0x04, 0x01, 7]));
        for n in 0..good.len() {
            assert!(OcspRequest::parse(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(OcspRequest::parse(&trailing).is_err());
        assert!(OcspRequest::parse(&[0x30, 0x80, 0, 0]).is_err(), "indefinite length");
        assert!(OcspRequest::parse(&[0x30, 0x81, 0x01, 0x00]).is_err(), "non-minimal length");
        assert!(OcspRequest::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err(), "huge length");
        let empty_list = seq(&[&seq(&[&tlv(0x30, &[])])]);
        assert!(matches!(OcspRequest::parse(&empty_list), Err(OcspRequestError::Malformed(_))));
        let too_many = encode_request(&vec![id(); MAX_CERTS_PER_REQUEST + 1], None);
        assert!(matches!(OcspRequest::parse(&too_many), Err(OcspRequestError::Malformed(_))));
    }

    #[test]
    fn unknown_hash_algorithm_is_its_own_error() {
        let mut cid = id();
        cid.der = seq(&[
            &seq(&[&tlv(0x06, &[0x2a, 0x03]), &[0x05, 0x00]]),
            &tlv(0x04, &[1; 20]),
            &tlv(0x04, &[2; 20]),
            &unsigned_integer(&[0x4a, 0x1f]),
        ]);
        assert_eq!(OcspRequest::parse(&encode_request(&[cid], None)), Err(OcspRequestError::UnsupportedHash));
    }
}
