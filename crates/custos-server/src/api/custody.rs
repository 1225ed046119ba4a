//! Connection keys in custody: their keys and certificates, their signing
//! policy, and signing with them (client assertions and digests).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_ca::custody::{AssertionRequest, CustodyKeyView, CustodyOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, Caller, Path, PeerAddress, Problem, json, time};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, add_keys))
        .routes(routes!(get_policy, set_policy))
        .routes(routes!(assertion))
        .routes(routes!(sign))
}

/// A connection key held in custody, with its certificate.
#[derive(Serialize, ToSchema)]
struct CustodyKey {
    key_id: String,
    /// `active` (signs now), `standby` (certified ahead, signs once promoted) or `retired`.
    slot: String,
    /// `p256`, `rsa2048` or `rsa3072`.
    algorithm: String,
    /// `soft` or `pkcs11`.
    backend: String,
    /// The serial of its certificate, lowercase hex.
    serial: String,
    /// `x5t#S256`: base64url SHA-256 of the certificate.
    thumbprint_sha256: String,
    /// `x5t`: base64url SHA-1 of the certificate, as Entra ID lists it.
    thumbprint_sha1: String,
    /// The certificate, PEM: what the tenant uploads to the relying party.
    certificate_pem: String,
    /// RFC 3339.
    not_after: String,
}

impl From<CustodyKeyView> for CustodyKey {
    fn from(k: CustodyKeyView) -> Self {
        CustodyKey {
            key_id: k.key_id,
            slot: k.slot.to_string(),
            algorithm: k.algorithm,
            backend: k.backend,
            serial: k.serial,
            thumbprint_sha256: k.thumbprint_sha256,
            thumbprint_sha1: k.thumbprint_sha1,
            certificate_pem: k.certificate_pem,
            not_after: k.not_after,
        }
    }
}

/// Put a connection's key in custody.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCustody {
    /// `p256` (default), `rsa2048` or `rsa3072`.
    algorithm: Option<String>,
    /// Make a standby key with its own certificate too (default true).
    standby: Option<bool>,
    /// SANs of the certificates, within the connection's policy.
    #[serde(default)]
    sans: Vec<String>,
}

/// What a connection's client assertions may name.
#[derive(Serialize, ToSchema)]
struct Policy {
    /// Allowed `aud` values: the relying party's token endpoints (https://).
    audiences: Vec<String>,
    /// Allowed `iss`/`sub` values: the app's client ids.
    client_ids: Vec<String>,
    /// RFC 3339; null while no policy was set.
    updated: Option<String>,
}

/// A connection's new signing policy (it replaces the old one).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPolicy {
    /// Allowed `aud` values: the relying party's token endpoints (https://).
    audiences: Vec<String>,
    /// Allowed `iss`/`sub` values: the app's client ids.
    client_ids: Vec<String>,
}

/// A client assertion to sign.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAssertion {
    /// The token endpoint, one of the policy's audiences.
    aud: String,
    /// The client id, one of the policy's.
    iss: String,
    /// The client id, one of the policy's.
    sub: String,
    /// `ES256` for P-256, `PS256` (default) or `RS256` for RSA.
    alg: Option<String>,
    /// Seconds until `exp`, 1 to 600 (the default).
    lifetime: Option<i64>,
}

/// A signed client assertion.
#[derive(Serialize, ToSchema)]
struct SignedAssertion {
    /// The JWT, for `client_assertion` with
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    assertion: String,
    jti: String,
    /// Unix seconds.
    iat: i64,
    /// Unix seconds.
    exp: i64,
    alg: String,
    /// The key that signed it.
    key_id: String,
    /// That key's certificate.
    serial: String,
    /// The audit log entry that records this signature.
    audit_index: u64,
}

/// A digest to sign.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSignature {
    /// A SHA-256 digest, base64 (32 bytes).
    digest: String,
    /// `ES256` for P-256, `PS256` (default) or `RS256` for RSA.
    alg: Option<String>,
}

/// A signature over a digest.
#[derive(Serialize, ToSchema)]
struct Signature {
    /// base64; for ES256 a DER `Ecdsa-Sig-Value` (what `openssl pkeyutl -verify` takes).
    signature: String,
    alg: String,
    key_id: String,
    serial: String,
    audit_index: u64,
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/connections/{connection}/keys", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)),
    responses((status = 200, body = [CustodyKey]), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_keys(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let keys = s.ca.custody(&who, &tenant, &connection).await?;
    Ok(json(StatusCode::OK, &keys.into_iter().map(CustodyKey::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/connections/{connection}/keys", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)), request_body = NewCustody,
    responses((status = 201, body = [CustodyKey]), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn add_keys(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
    Body(body): Body<NewCustody>,
) -> Result<Response, ApiError> {
    let options = CustodyOptions {
        algorithm: body
            .algorithm
            .as_deref()
            .unwrap_or("p256")
            .parse()
            .map_err(|e: custos_ca::KeyAlgorithmError| ApiError::BadRequest(e.to_string()))?,
        standby: body.standby.unwrap_or(true),
        sans: body.sans,
        validity_secs: None,
    };
    let keys = s.ca.add_custody(&who, &tenant, &connection, None, &options).await?;
    Ok(json(StatusCode::CREATED, &keys.into_iter().map(CustodyKey::from).collect::<Vec<_>>()))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/connections/{connection}/policy", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)),
    responses((status = 200, body = Policy), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_policy(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let p = s.ca.signing_policy(&who, &tenant, &connection).await?;
    let updated = (p.updated_at > 0).then(|| time(p.updated_at));
    Ok(json(StatusCode::OK, &Policy { audiences: p.audiences, client_ids: p.client_ids, updated }))
}

#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/connections/{connection}/policy", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)), request_body = NewPolicy,
    responses((status = 200, body = Policy), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn set_policy(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
    Body(body): Body<NewPolicy>,
) -> Result<Response, ApiError> {
    let p = s.ca.set_signing_policy(&who, &tenant, &connection, body.audiences, body.client_ids).await?;
    Ok(json(
        StatusCode::OK,
        &Policy { audiences: p.audiences, client_ids: p.client_ids, updated: Some(time(p.updated_at)) },
    ))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/connections/{connection}/assertion", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)), request_body = NewAssertion,
    responses((status = 200, body = SignedAssertion), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem)))]
async fn assertion(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    PeerAddress(peer): PeerAddress,
    Path((tenant, connection)): Path<(String, String)>,
    Body(body): Body<NewAssertion>,
) -> Result<Response, ApiError> {
    limit_signatures(&s, &who, &tenant, &connection)?;
    let request =
        AssertionRequest { aud: body.aud, iss: body.iss, sub: body.sub, alg: body.alg, lifetime_secs: body.lifetime };
    let caller = peer.map(|p| p.ip().to_string());
    let a = s.ca.sign_assertion(&who, &tenant, &connection, &request, caller.as_deref()).await?;
    Ok(json(
        StatusCode::OK,
        &SignedAssertion {
            assertion: a.assertion,
            jti: a.jti,
            iat: a.iat,
            exp: a.exp,
            alg: a.alg,
            key_id: a.key_id,
            serial: a.serial,
            audit_index: a.audit_index,
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/connections/{connection}/sign", tag = "custody",
    params(("tenant" = String, Path), ("connection" = String, Path)), request_body = NewSignature,
    responses((status = 200, body = Signature), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem)))]
async fn sign(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    PeerAddress(peer): PeerAddress,
    Path((tenant, connection)): Path<(String, String)>,
    Body(body): Body<NewSignature>,
) -> Result<Response, ApiError> {
    limit_signatures(&s, &who, &tenant, &connection)?;
    let digest = parse_digest(&body.digest)?;
    let caller = peer.map(|p| p.ip().to_string());
    let d = s.ca.sign_digest(&who, &tenant, &connection, digest, body.alg.as_deref(), caller.as_deref()).await?;
    Ok(json(
        StatusCode::OK,
        &Signature {
            signature: STANDARD.encode(d.signature),
            alg: d.alg,
            key_id: d.key_id,
            serial: d.serial,
            audit_index: d.audit_index,
        },
    ))
}

/// Counts a signature against its connection's rate, whoever asks (a leaked
/// token cannot take a connection's whole rate unnoticed, nor can several
/// tokens add up past it). Only for a caller allowed to sign there: anyone
/// else is refused by custos-ca as usual, and learns nothing from a 429.
fn limit_signatures(s: &AppState, who: &custos_ca::Principal, tenant: &str, connection: &str) -> Result<(), ApiError> {
    use custos_ca::authorization::{Decision, Operation, decide};
    if decide(who, &Operation::Sign { tenant, connection }) != Decision::Allow {
        return Ok(());
    }
    s.sign_limiter
        .admit_key(&format!("{tenant}/{connection}"), &format!("connection {tenant}/{connection} gets"))
        .map_err(ApiError::Limited)
}

/// A SHA-256 digest sent as base64.
fn parse_digest(text: &str) -> Result<[u8; 32], ApiError> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ApiError::BadRequest("digest: expected 32 bytes (a SHA-256 digest) in base64".into()))
}

/// The fuzz target's share: the custody bodies and what is parsed out of them.
pub(super) fn parse_untrusted(data: &[u8]) {
    if let Ok(s) = serde_json::from_slice::<NewSignature>(data) {
        let _ = parse_digest(&s.digest);
    }
    let _ = serde_json::from_slice::<NewAssertion>(data);
    if let Ok(c) = serde_json::from_slice::<NewCustody>(data) {
        let _ = c.algorithm.as_deref().map(str::parse::<custos_ca::KeyAlgorithm>);
    }
    let _ = serde_json::from_slice::<NewPolicy>(data);
}
