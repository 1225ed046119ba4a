//! ACME problem documents (RFC 8555 section 6.7): each failure names its
//! `urn:ietf:params:acme:error:*` type, so a client knows what to do.

use serde::Serialize;

/// The error types custos answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemType {
    /// The request was malformed.
    Malformed,
    /// The nonce was missing, unknown, used before or expired.
    BadNonce,
    /// The JWS algorithm is not supported.
    BadSignatureAlgorithm,
    /// The key is not acceptable (unsupported type, too small).
    BadPublicKey,
    /// The signature or the account does not authorise this.
    Unauthorized,
    /// No account for this key (newAccount with onlyReturnExisting).
    AccountDoesNotExist,
    /// newAccount without (or with a bad) External Account Binding.
    ExternalAccountRequired,
    /// The identifier is not allowed by the connection's policy.
    RejectedIdentifier,
    /// An identifier type other than `dns`.
    UnsupportedIdentifier,
    /// The CSR is unacceptable.
    BadCsr,
    /// finalize before every authorization is valid.
    OrderNotReady,
    /// The certificate was revoked before.
    AlreadyRevoked,
    /// The revocation reason is not allowed.
    BadRevocationReason,
    /// The validator could not reach the client's server.
    Connection,
    /// The client's server answered, wrongly.
    IncorrectResponse,
    /// Too many requests or accounts.
    RateLimited,
    /// Something failed on custos's side.
    ServerInternal,
}

impl ProblemType {
    /// The type URN.
    pub fn urn(self) -> &'static str {
        match self {
            ProblemType::Malformed => "urn:ietf:params:acme:error:malformed",
            ProblemType::BadNonce => "urn:ietf:params:acme:error:badNonce",
            ProblemType::BadSignatureAlgorithm => "urn:ietf:params:acme:error:badSignatureAlgorithm",
            ProblemType::BadPublicKey => "urn:ietf:params:acme:error:badPublicKey",
            ProblemType::Unauthorized => "urn:ietf:params:acme:error:unauthorized",
            ProblemType::AccountDoesNotExist => "urn:ietf:params:acme:error:accountDoesNotExist",
            ProblemType::ExternalAccountRequired => "urn:ietf:params:acme:error:externalAccountRequired",
            ProblemType::RejectedIdentifier => "urn:ietf:params:acme:error:rejectedIdentifier",
            ProblemType::UnsupportedIdentifier => "urn:ietf:params:acme:error:unsupportedIdentifier",
            ProblemType::BadCsr => "urn:ietf:params:acme:error:badCSR",
            ProblemType::OrderNotReady => "urn:ietf:params:acme:error:orderNotReady",
            ProblemType::AlreadyRevoked => "urn:ietf:params:acme:error:alreadyRevoked",
            ProblemType::BadRevocationReason => "urn:ietf:params:acme:error:badRevocationReason",
            ProblemType::Connection => "urn:ietf:params:acme:error:connection",
            ProblemType::IncorrectResponse => "urn:ietf:params:acme:error:incorrectResponse",
            ProblemType::RateLimited => "urn:ietf:params:acme:error:rateLimited",
            ProblemType::ServerInternal => "urn:ietf:params:acme:error:serverInternal",
        }
    }

    /// The HTTP status that goes with it.
    pub fn status(self) -> u16 {
        match self {
            ProblemType::Unauthorized => 403,
            ProblemType::AccountDoesNotExist => 400,
            ProblemType::OrderNotReady => 403,
            ProblemType::RateLimited => 429,
            ProblemType::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// A failed ACME request: its problem type and what was wrong, where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.urn())]
pub struct AcmeError {
    /// The problem type.
    pub kind: ProblemType,
    /// What was wrong, for a person.
    pub detail: String,
}

impl AcmeError {
    /// An error of `kind`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> AcmeError {
        AcmeError { kind, detail: detail.into() }
    }

    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> AcmeError {
        AcmeError::new(ProblemType::Malformed, detail)
    }

    /// `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> AcmeError {
        AcmeError::new(ProblemType::Unauthorized, detail)
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem { kind: self.kind.urn().to_string(), detail: self.detail.clone(), status: self.kind.status() }
    }
}

/// An RFC 7807 problem document as ACME serves it (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// The type URN.
    #[serde(rename = "type")]
    pub kind: String,
    /// What was wrong.
    pub detail: String,
    /// The HTTP status.
    pub status: u16,
}
