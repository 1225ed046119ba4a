//! Revocation reasons (RFC 5280 5.3.1).

use std::fmt;
use std::str::FromStr;

use crate::PkiError;

/// Why a certificate was revoked. `certificateHold` is not offered: custos
/// revocations are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// cACompromise (2).
    CaCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
    /// privilegeWithdrawn (9).
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every reason, for help texts.
    pub const ALL: [Reason; 7] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::PrivilegeWithdrawn,
    ];

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Reason::Unspecified => 0,
            Reason::KeyCompromise => 1,
            Reason::CaCompromise => 2,
            Reason::AffiliationChanged => 3,
            Reason::Superseded => 4,
            Reason::CessationOfOperation => 5,
            Reason::PrivilegeWithdrawn => 9,
        }
    }

    /// The CLI and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = PkiError;

    /// Accepts the CLI names and RFC 5280's camelCase names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The stored names first, without allocating: CRLs parse one per entry.
        if let Some(r) = Reason::ALL.into_iter().find(|r| r.as_str() == s) {
            return Ok(r);
        }
        let norm: String = s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
        Reason::ALL.into_iter().find(|r| r.as_str().replace('-', "") == norm).ok_or_else(|| {
            PkiError::Template(format!(
                "unknown revocation reason {s:?} (expected one of {})",
                Reason::ALL.map(Reason::as_str).join(", ")
            ))
        })
    }
}
