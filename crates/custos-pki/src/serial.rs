//! Certificate serial numbers (RFC 5280 4.1.2.2): positive, at most 20 octets.

use std::fmt;
use std::str::FromStr;

use crate::PkiError;

/// A certificate serial number; once parsed, it is valid.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 20 octets whose first is 0x40..=0x7f, so the
    /// number is positive, always 20 octets long, and carries 158 random bits.
    pub fn random() -> Result<Serial, PkiError> {
        let mut bytes = [0u8; 20];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Signing("random serial".into()))?;
        bytes[0] = (bytes[0] & 0x3f) | 0x40;
        Ok(Serial(bytes.to_vec()))
    }

    /// A serial from its big-endian octets, without a sign byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Serial, PkiError> {
        let trimmed: Vec<u8> = bytes.iter().skip_while(|b| **b == 0).copied().collect();
        if trimmed.is_empty() || trimmed.len() > 20 || (trimmed.len() == 20 && trimmed[0] & 0x80 != 0) {
            return Err(PkiError::InvalidSerial(hex::encode(bytes)));
        }
        Ok(Serial(trimmed))
    }

    /// The big-endian octets, without a sign byte.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex without separators: the form custos stores and prints.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl FromStr for Serial {
    type Err = PkiError;

    /// Accepts hex in any case, with or without colons, as openssl prints it
    /// (`serial=4A1F...` or `4a:1f:...`), and an optional `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Plain lowercase hex, as custos stores serials: no copies needed.
        if s.len().is_multiple_of(2)
            && !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && let Ok(bytes) = hex::decode(s)
        {
            return Serial::from_bytes(&bytes);
        }
        let invalid = || PkiError::InvalidSerial(s.to_string());
        let t = s.trim();
        let t = t.strip_prefix("serial=").unwrap_or(t);
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        let digits: String = t.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let padded = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
        let bytes = hex::decode(padded).map_err(|_| invalid())?;
        Serial::from_bytes(&bytes).map_err(|_| invalid())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_twenty_octets_and_distinct() {
        let a = Serial::random().expect("random");
        let b = Serial::random().expect("random");
        assert_eq!(a.as_bytes().len(), 20);
        assert!(a.as_bytes()[0] < 0x80 && a.as_bytes()[0] >= 0x40);
        assert_ne!(a, b);
    }

    #[test]
    fn parses_every_form_openssl_prints() {
        let s: Serial = "4A:1F:00:ff".parse().expect("colons");
        assert_eq!(s.to_hex(), "4a1f00ff");
        assert_eq!("serial=4A1F00FF".parse::<Serial>().expect("openssl -serial"), s);
        assert_eq!("0x4a1f00ff".parse::<Serial>().expect("0x"), s);
        assert_eq!("abc".parse::<Serial>().expect("odd").to_hex(), "0abc");
    }

    #[test]
    fn refuses_garbage_zero_and_oversized() {
        for bad in ["", "xyz", "00", "0:0", &"11".repeat(21), "12 34", "ff"] {
            if bad == "ff" {
                // A single 0xff octet is the positive number 255; fine.
                assert!(bad.parse::<Serial>().is_ok());
                continue;
            }
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} should be refused");
        }
        assert!(Serial::from_bytes(&[0x80; 20]).is_err());
    }
}
