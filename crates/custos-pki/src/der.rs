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
