//! Certificate serial numbers (RFC 5280 4.1.2.2): positive, at most 20 octets.

use std::fmt;
use std::str::FromStr;

use crate::PkiError;

/// A certificate serial number; once parsed, it is valid.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh serial: 20 octets, positive, led by the issuance time.
    ///
    /// Octet 0 is 0x40 (so every serial has 20 octets and is positive), octets
    /// 1-6 the Unix time in milliseconds, and octets 7-19 104 bits from the
    /// CSPRNG: unpredictable and non-sequential as the Baseline Requirements
    /// ask (at least 64 random bits), yet ordered by time, so the serial index
    /// grows at its end instead of dirtying a random page per certificate
    /// (that was most of each issuance commit's write-ahead log).
    pub fn random() -> Result<Serial, PkiError> {
        let mut bytes = [0u8; 20];
        aws_lc_rs::rand::fill(&mut bytes[7..]).map_err(|_| PkiError::Signing("random serial".into()))?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        bytes[0] = 0x40;
        bytes[1..7].copy_from_slice(&millis.to_be_bytes()[2..]);
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
    fn serials_lead_with_the_time_and_carry_104_random_bits() {
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64;
        let serials: Vec<Serial> = (0..64).map(|_| Serial::random().expect("random")).collect();
        let after =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64;
        for s in &serials {
            let b = s.as_bytes();
            assert_eq!((b.len(), b[0]), (20, 0x40));
            let mut millis = [0u8; 8];
            millis[2..].copy_from_slice(&b[1..7]);
            let t = u64::from_be_bytes(millis);
            assert!(before <= t && t <= after, "{t} not in [{before}, {after}]");
        }
        // The random tails differ (a repeat of 104 CSPRNG bits would be a broken RNG).
        let mut tails: Vec<&[u8]> = serials.iter().map(|s| &s.as_bytes()[7..]).collect();
        tails.sort_unstable();
        tails.dedup();
        assert_eq!(tails.len(), 64);
        // Later serials sort after earlier ones by their time prefix.
        let later = {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Serial::random().expect("random")
        };
        assert!(serials.iter().all(|s| s < &later));
    }

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
