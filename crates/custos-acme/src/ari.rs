//! ACME Renewal Information (RFC 9773): the certificate identifier and when
//! to renew.

use crate::{AcmeError, b64u, from_b64u};

/// A certificate as ARI names it: `base64url(AKI keyIdentifier) "." base64url(serial)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The issuer's key identifier (the certificate's AKI).
    pub key_id: Vec<u8>,
    /// The serial number's DER content octets.
    pub serial: Vec<u8>,
}

impl CertId {
    /// Parses a certID from a URL path or a `replaces` member.
    pub fn parse(text: &str) -> Result<CertId, AcmeError> {
        let (aki, serial) = text
            .split_once('.')
            .ok_or_else(|| AcmeError::malformed("a certificate id is base64url(AKI).base64url(serial)"))?;
        let key_id = from_b64u(aki, "the certificate id's key identifier")?;
        let serial = from_b64u(serial, "the certificate id's serial")?;
        if key_id.is_empty() || serial.is_empty() || serial.len() > 21 {
            return Err(AcmeError::malformed("a certificate id has an empty key identifier or a bad serial"));
        }
        Ok(CertId { key_id, serial })
    }

    /// The serial as lowercase hex without leading zero bytes.
    pub fn serial_hex(&self) -> String {
        let first = self.serial.iter().position(|b| *b != 0).unwrap_or(self.serial.len());
        self.serial[first..].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The text form.
    pub fn encode(&self) -> String {
        format!("{}.{}", b64u(&self.key_id), b64u(&self.serial))
    }
}

/// When a client should renew, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Not before this.
    pub start: i64,
    /// By this.
    pub end: i64,
}

/// The normal window: a twelfth of the lifetime, placed by `spread` (a hash
/// of the serial) within the last third, so that certificates issued
/// together do not all renew in the same minute.
pub fn renewal_window(not_before: i64, not_after: i64, spread: u64) -> RenewalWindow {
    let lifetime = (not_after - not_before).max(12);
    let width = lifetime / 12;
    // The window starts between 2/3 and 3/4 of the lifetime and ends before 5/6.
    let start = not_before + lifetime * 2 / 3 + (spread % width.max(1) as u64) as i64;
    RenewalWindow { start, end: start + width }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_9773_example_cert_id_round_trips() {
        // RFC 9773 section 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21.
        let id = CertId::parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").expect("parse");
        assert_eq!(id.serial_hex(), "87654321");
        assert_eq!(id.key_id[0], 0x69);
        assert_eq!(id.encode(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        assert!(CertId::parse("no-dot").is_err());
        assert!(CertId::parse(".AIdlQyE").is_err());
        assert!(CertId::parse("aYhb.!!").is_err());
    }

    #[test]
    fn windows_sit_in_the_last_third_and_spread() {
        let (nb, na) = (1_000_000, 1_000_000 + 90 * 86_400);
        let windows: Vec<RenewalWindow> = (0..100u64).map(|s| renewal_window(nb, na, s * 7919)).collect();
        for w in &windows {
            assert!(w.start >= nb + (na - nb) * 2 / 3 && w.end <= na && w.start < w.end, "{w:?}");
        }
        let distinct: std::collections::HashSet<i64> = windows.iter().map(|w| w.start).collect();
        assert!(distinct.len() > 90, "windows spread: {} distinct starts", distinct.len());
    }
}
