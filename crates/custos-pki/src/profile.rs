//! Certificate profiles: what each kind of certificate may do and how long it lives.

use std::fmt;
use std::str::FromStr;

use crate::PkiError;

/// A certificate profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// A product authenticating to a tenant's API: digitalSignature, EKU clientAuth.
    Client,
    /// A TLS server: digitalSignature, EKU serverAuth, at least one SAN.
    Server,
    /// A self-signed root CA: keyCertSign, cRLSign, pathLen 1.
    RootCa,
    /// An issuing CA under the root: keyCertSign, cRLSign, pathLen 0.
    IssuingCa,
    /// A delegated OCSP responder (RFC 6960 4.2.2.2): EKU OCSPSigning and
    /// id-pkix-ocsp-nocheck, short-lived because it cannot be revoked usefully.
    OcspResponder,
}

impl Profile {
    /// The stable name used in the CLI, the database and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Client => "client",
            Profile::Server => "server",
            Profile::RootCa => "root-ca",
            Profile::IssuingCa => "issuing-ca",
            Profile::OcspResponder => "ocsp-responder",
        }
    }

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

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Profile::Client),
            "server" => Ok(Profile::Server),
            "root-ca" => Ok(Profile::RootCa),
            "issuing-ca" => Ok(Profile::IssuingCa),
            "ocsp-responder" => Ok(Profile::OcspResponder),
            _ => Err(PkiError::Template(format!(
                "unknown profile {s:?} (expected client, server, root-ca or issuing-ca)"
            ))),
        }
    }
}
