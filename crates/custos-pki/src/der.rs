//! The few DER encodings rcgen does not provide (the AIA extension).

/// Encodes one tag-length-value.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// id-ad-ocsp, 1.3.6.1.5.5.7.48.1 (RFC 5280 4.2.2.1), as a DER OID.
const ID_AD_OCSP: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
/// id-ad-caIssuers, 1.3.6.1.5.5.7.48.2.
const ID_AD_CA_ISSUERS: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];

/// The value of an AuthorityInfoAccess extension with an OCSP and a caIssuers URI.
pub(crate) fn authority_info_access(ocsp: &str, ca_issuers: &str) -> Vec<u8> {
    let access = |method: &[u8], uri: &str| {
        let mut inner = method.to_vec();
        inner.extend(tlv(0x86, uri.as_bytes())); // [6] uniformResourceIdentifier
        tlv(0x30, &inner)
    };
    let mut seq = access(ID_AD_OCSP, ocsp);
    seq.extend(access(ID_AD_CA_ISSUERS, ca_issuers));
    tlv(0x30, &seq)
}

/// The DER AlgorithmIdentifier of the signatures a key makes.
pub(crate) fn signature_algorithm(alg: custos_types::KeyAlgorithm) -> &'static [u8] {
    match alg {
        custos_types::KeyAlgorithm::EcdsaP256 => {
            &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        }
        custos_types::KeyAlgorithm::EcdsaP384 => {
            &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]
        }
        custos_types::KeyAlgorithm::Rsa2048
        | custos_types::KeyAlgorithm::Rsa3072
        | custos_types::KeyAlgorithm::Rsa4096 => {
            &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00]
        }
        custos_types::KeyAlgorithm::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
    }
}

/// X.509 Time (RFC 5280 4.1.2.5): UTCTime through 2049, GeneralizedTime after.
pub(crate) fn x509_time(t: time::OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    if t.year() < 2050 {
        let text = format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        tlv(0x17, text.as_bytes())
    } else {
        generalized_time(t)
    }
}

/// A DER INTEGER from unsigned big-endian octets.
pub(crate) fn unsigned_integer(unsigned: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(unsigned.len() + 1);
    if unsigned.first().is_some_and(|b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(unsigned);
    tlv(0x02, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_use_the_minimal_long_form() {
        assert_eq!(&tlv(0x04, &[0; 5])[..2], &[0x04, 5]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}

/// A strict DER reader for the structures we parse by hand (OCSP requests):
/// definite, minimal lengths only; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

/// Why a DER read failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DerError(pub &'static str);

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads one TLV: its tag, its contents and the whole encoding.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let all = self.data;
        let (&tag, rest) = all.split_first().ok_or(DerError("truncated: tag expected"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("high tag numbers are not used here"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError("truncated: length expected"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 {
                return Err(DerError("indefinite length is not DER"));
            }
            if n > 4 || rest.len() < n {
                return Err(DerError("truncated or oversized length"));
            }
            let (bytes, after) = rest.split_at(n);
            if bytes[0] == 0 {
                return Err(DerError("non-minimal length"));
            }
            let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return Err(DerError("non-minimal length"));
            }
            rest = after;
            len
        };
        if rest.len() < len {
            return Err(DerError("truncated: contents shorter than their length"));
        }
        let header = all.len() - rest.len();
        let (contents, after) = rest.split_at(len);
        self.data = after;
        Ok((tag, contents, &all[..header + len]))
    }

    /// Reads one TLV that must carry `tag`; returns its contents.
    pub(crate) fn read(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        let (t, contents, _) = self.read_any()?;
        if t != tag {
            return Err(DerError(what));
        }
        Ok(contents)
    }

    /// Reads an optional TLV with `tag`.
    pub(crate) fn read_optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        if self.peek_tag() == Some(tag) { Ok(Some(self.read_any()?.1)) } else { Ok(None) }
    }
}

/// Encodes a SEQUENCE of already-encoded parts.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ` (RFC 5280 4.1.2.5.2).
pub(crate) fn generalized_time(t: time::OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    tlv(0x18, text.as_bytes())
}
