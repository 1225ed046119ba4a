//! The resources a client reads (RFC 8555 section 7.1) and the payloads it
//! sends, as JSON. Unknown members in payloads are ignored, as RFC 8555 asks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AcmeError;

/// RFC 3339 in UTC for Unix seconds, as ACME timestamps are written.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Unix seconds of an RFC 3339 timestamp; `what` names the field for the error.
pub fn parse_rfc3339(text: &str, what: &str) -> Result<i64, AcmeError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| AcmeError::malformed(format!("{what} is not an RFC 3339 time: {e}")))
}

/// `GET /acme/directory`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    /// newNonce URL.
    pub new_nonce: String,
    /// newAccount URL.
    pub new_account: String,
    /// newOrder URL.
    pub new_order: String,
    /// revokeCert URL.
    pub revoke_cert: String,
    /// keyChange URL.
    pub key_change: String,
    /// ARI base URL (RFC 9773).
    pub renewal_info: String,
    /// Metadata.
    pub meta: DirectoryMeta,
}

/// The directory's `meta`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMeta {
    /// Always true: every account is bound to a tenant by EAB.
    pub external_account_required: bool,
    /// Where to read about this CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
}

/// An identifier in an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// `dns` (the only type custos issues for).
    #[serde(rename = "type")]
    pub kind: String,
    /// The name.
    pub value: String,
}

/// The newAccount payload, and the account update payload.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRequest {
    /// `mailto:` URLs.
    pub contact: Option<Vec<String>>,
    /// Whether the client agreed (custos has no terms; accepted either way).
    pub terms_of_service_agreed: Option<bool>,
    /// Only look the account up.
    pub only_return_existing: Option<bool>,
    /// The binding to a tenant.
    pub external_account_binding: Option<Value>,
    /// `deactivated` in an update.
    pub status: Option<String>,
}

/// An account resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// `valid` or `deactivated`.
    pub status: String,
    /// Contact URLs.
    pub contact: Vec<String>,
    /// The account's orders URL.
    pub orders: String,
}

/// The newOrder payload.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    /// The names.
    pub identifiers: Vec<Identifier>,
    /// Requested notBefore (RFC 3339).
    pub not_before: Option<String>,
    /// Requested notAfter (RFC 3339).
    pub not_after: Option<String>,
    /// The ARI certificate id of the certificate this order replaces (RFC 9773 section 5).
    pub replaces: Option<String>,
}

/// An order resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// `pending`, `ready`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// When it expires.
    pub expires: String,
    /// The names.
    pub identifiers: Vec<Identifier>,
    /// Requested notBefore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Requested notAfter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Why it is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::Problem>,
    /// Authorization URLs.
    pub authorizations: Vec<String>,
    /// Finalize URL.
    pub finalize: String,
    /// Certificate URL, once issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The certificate it replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// An authorization resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Authorization {
    /// The name.
    pub identifier: Identifier,
    /// `pending`, `valid`, `invalid`, `deactivated`, `expired` or `revoked`.
    pub status: String,
    /// When it expires.
    pub expires: String,
    /// The ways to prove control.
    pub challenges: Vec<Challenge>,
    /// Whether the order asked for `*.` this name.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub wildcard: bool,
}

/// A challenge resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    /// `http-01`, `tls-alpn-01` or `dns-01`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its URL.
    pub url: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// The token.
    pub token: String,
    /// When it was validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validated: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::Problem>,
}

/// The finalize payload.
#[derive(Clone, Debug, Deserialize)]
pub struct FinalizeRequest {
    /// The CSR, DER in base64url.
    pub csr: String,
}

/// The revokeCert payload.
#[derive(Clone, Debug, Deserialize)]
pub struct RevokeRequest {
    /// The certificate, DER in base64url.
    pub certificate: String,
    /// An RFC 5280 reason code.
    pub reason: Option<u8>,
}

/// The inner JWS payload of a keyChange (RFC 8555 section 7.3.5).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChangeRequest {
    /// The account URL.
    pub account: String,
    /// The account's current key.
    pub old_key: Value,
}

/// A renewalInfo answer (RFC 9773 section 4.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalInfo {
    /// When to renew.
    pub suggested_window: SuggestedWindow,
    /// Why, when the window moved (an incident's notice).
    #[serde(rename = "explanationURL", skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
}

/// The suggested window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuggestedWindow {
    /// Start (RFC 3339).
    pub start: String,
    /// End (RFC 3339).
    pub end: String,
}
