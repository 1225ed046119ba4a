//! The states and kinds that custos stores and shows: typed here once, so the
//! store binds and parses them and no layer compares or pastes strings.
//!
//! Each has one stable name (`as_str`), used in the database, the CLI and
//! JSON output; `FromStr` accepts exactly that name.

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a kind's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of {expected})")]
pub struct UnknownName {
    /// What was being parsed (`certificate status`, `profile`, ...).
    pub kind: &'static str,
    /// The text given.
    pub value: String,
    /// The names accepted.
    pub expected: String,
}

/// Declares a string-named enum: its names, `as_str`, `Display`, `FromStr`
/// and a serde representation by name.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name in the database, the CLI and output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: $kind,
                        value: s.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

named!(
    /// Whether a certificate is still good (expiry aside).
    CertificateStatus, "certificate status", {
        /// Not revoked.
        Valid => "valid",
        /// Revoked; the certificate row says when and why.
        Revoked => "revoked",
    }
);

named!(
    /// Whether a key may sign.
    KeyStatus, "key status", {
        /// In use.
        Active => "active",
        /// Known to be compromised: it signs only its CA's final CRL, then is destroyed.
        Compromised => "compromised",
        /// Gone from the key store; its reference is wiped.
        Destroyed => "destroyed",
    }
);

named!(
    /// The role of a connection key in custody.
    CustodySlot, "custody slot", {
        /// Signs for the connection now.
        Active => "active",
        /// Certified ahead of need, registered at the relying party, signs once promoted.
        Standby => "standby",
        /// No longer signs (replaced or compromised); kept for the record.
        Retired => "retired",
    }
);

named!(
    /// A CA's place in the hierarchy.
    IssuerRole, "issuer role", {
        /// Self-signed trust anchor.
        Root => "root",
        /// Issues to connections, under the root.
        Issuing => "issuing",
    }
);

named!(
    /// Whether a CA issues.
    IssuerStatus, "issuer status", {
        /// Issues (the newest active issuing CA is used).
        Active => "active",
        /// Replaced in an ordinary rotation.
        Retired => "retired",
        /// Replaced because its key was compromised; its certificate is revoked.
        Compromised => "compromised",
    }
);

named!(
    /// Where one connection stands in an incident, in order.
    ConnectionState, "connection state", {
        /// Affected; nothing done yet.
        Pending => "pending",
        /// A replacement certificate is issued and recorded.
        ReplacementIssued => "replacement-issued",
        /// The tenant's webhook received the notification.
        Notified => "notified",
        /// The tenant confirmed the replacement is in place.
        Acknowledged => "acknowledged",
        /// The old certificate is revoked (or was already): nothing depends on it.
        OldCertificateRetired => "old-certificate-retired",
    }
);

named!(
    /// How far an incident has gone.
    IncidentState, "incident state", {
        /// Recorded with its blast radius; nothing changed.
        Declared => "declared",
        /// Being carried out (new CAs, revocation, replacements).
        Executing => "executing",
        /// Every replacement is issued; waiting for tenants.
        Executed => "executed",
        /// Done: no connection depends on a compromised certificate.
        Closed => "closed",
    }
);

named!(
    /// A certificate profile: what a certificate may do and how long it lives.
    Profile, "profile", {
        /// A product authenticating to a tenant's API: digitalSignature, EKU clientAuth.
        Client => "client",
        /// A TLS server: digitalSignature, EKU serverAuth, at least one SAN.
        Server => "server",
        /// A self-signed root CA: keyCertSign, cRLSign, pathLen 1.
        RootCa => "root-ca",
        /// An issuing CA under the root: keyCertSign, cRLSign, pathLen 0.
        IssuingCa => "issuing-ca",
        /// A delegated OCSP responder (RFC 6960 4.2.2.2): EKU OCSPSigning and
        /// id-pkix-ocsp-nocheck, short-lived because it cannot be revoked usefully.
        OcspResponder => "ocsp-responder",
    }
);

impl Profile {
    /// Whether certificates of this profile are CAs.
    pub fn is_ca(self) -> bool {
        matches!(self, Profile::RootCa | Profile::IssuingCa)
    }

    /// Lifetime used when the request names none.
    pub fn default_validity_days(self) -> u32 {
        match self {
            Profile::Client | Profile::Server => 90,
            Profile::OcspResponder => 14,
            Profile::IssuingCa => 5 * 365,
            Profile::RootCa => 10 * 365,
        }
    }

    /// The longest lifetime the profile allows; a request above it is refused,
    /// not silently shortened. 397 days is the CA/B Forum's cap for TLS.
    pub fn max_validity_days(self) -> u32 {
        match self {
            Profile::Client | Profile::Server => 397,
            Profile::OcspResponder => 30,
            Profile::IssuingCa => 10 * 365,
            Profile::RootCa => 25 * 365,
        }
    }
}

named!(
    /// Where an incident notification stands.
    DeliveryState, "delivery state", {
        /// Waiting for (another) attempt.
        Pending => "pending",
        /// The receiver answered 2xx.
        Delivered => "delivered",
        /// Given up on after failing for longer than the configured bound.
        Failed => "failed",
    }
);

named!(
    /// Why a certificate was revoked (RFC 5280 5.3.1). `certificateHold` is not
    /// offered: custos revocations are final.
    Reason, "revocation reason", {
        /// unspecified (0).
        Unspecified => "unspecified",
        /// keyCompromise (1).
        KeyCompromise => "key-compromise",
        /// cACompromise (2).
        CaCompromise => "ca-compromise",
        /// affiliationChanged (3).
        AffiliationChanged => "affiliation-changed",
        /// superseded (4).
        Superseded => "superseded",
        /// cessationOfOperation (5).
        CessationOfOperation => "cessation-of-operation",
        /// privilegeWithdrawn (9).
        PrivilegeWithdrawn => "privilege-withdrawn",
    }
);

impl Reason {
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

    /// Parses the stored name, or RFC 5280's camelCase name (`keyCompromise`)
    /// and other spellings of it, as people type them.
    pub fn parse_loose(s: &str) -> Result<Reason, UnknownName> {
        if let Ok(r) = s.parse() {
            return Ok(r);
        }
        let norm: String = s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_lowercase();
        Reason::ALL.iter().copied().find(|r| r.as_str().replace('-', "") == norm).ok_or_else(|| UnknownName {
            kind: "revocation reason",
            value: s.to_string(),
            expected: Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_expected() {
        for s in ConnectionState::ALL {
            assert_eq!(s.as_str().parse::<ConnectionState>(), Ok(*s));
        }
        let err = "paused".parse::<IncidentState>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown incident state \"paused\" (expected one of declared, executing, executed, closed)"
        );
        assert_eq!(serde_json_like(&CertificateStatus::Revoked), "revoked");
    }

    fn serde_json_like(v: &CertificateStatus) -> String {
        v.to_string()
    }
}
