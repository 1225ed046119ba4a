//! API tokens and operators.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custos_ca::access::TokenScope;
use custos_ca::policy::parse_duration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, Caller, Path, Problem, json, time};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_operators, add_operator))
        .routes(routes!(list_approvals))
        .routes(routes!(approve))
        .routes(routes!(refuse))
}

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
struct Token {
    id: String,
    /// `admin`, `operator`, `auditor` or `tenant`.
    role: String,
    tenant: Option<String>,
    connection: Option<String>,
    /// RFC 3339.
    created: String,
    /// RFC 3339.
    expires: Option<String>,
    /// RFC 3339, if revoked.
    revoked: Option<String>,
    created_by: String,
}

impl From<&custos_ca::access::TokenRecord> for Token {
    fn from(t: &custos_ca::access::TokenRecord) -> Self {
        Token {
            id: t.id.clone(),
            role: t.role.clone(),
            tenant: t.tenant.clone(),
            connection: t.connection.clone(),
            created: time(t.created_at),
            expires: t.expires_at.map(time),
            revoked: t.revoked_at.map(time),
            created_by: t.created_by.clone(),
        }
    }
}

/// What a new token may do, and for how long.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// `admin`, `operator`, `auditor` or `tenant`.
    role: String,
    /// With role `tenant`: the tenant.
    tenant: Option<String>,
    /// With role `tenant`: one connection only.
    connection: Option<String>,
    /// `30d`, `12h`; a year (the longest) if absent.
    ttl: Option<String>,
}

/// A token just made: the only answer that holds its secret.
#[derive(Serialize, ToSchema)]
struct CreatedToken {
    id: String,
    /// Send as `Authorization: Bearer TOKEN`. Shown once; custos keeps only its hash.
    token: String,
    details: Token,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "access",
    responses((status = 200, body = [Token]), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_tokens(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &s.ca.tokens(&who).await?.iter().map(Token::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_token(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Body(body): Body<NewToken>,
) -> Result<Response, ApiError> {
    let scope = TokenScope::parse(&body.role, body.tenant.as_deref(), body.connection.as_deref())?;
    let ttl = body.ttl.as_deref().map(parse_duration).transpose()?;
    let made = s.ca.create_token(&who, &scope, ttl).await?;
    let mut response = json(
        StatusCode::CREATED,
        &CreatedToken { id: made.record.id.clone(), token: made.token, details: Token::from(&made.record) },
    );
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked: refused from the next request on, on every node"),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.ca.revoke_token(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An operator, signing in with a client certificate from the operators' CA.
#[derive(Serialize, ToSchema)]
struct Operator {
    name: String,
    /// `admin`, `operator` or `auditor`.
    role: String,
    /// The current certificate's serial, hex.
    serial: String,
    /// RFC 3339.
    created: String,
    /// RFC 3339: when the certificate expires.
    expires: String,
    /// RFC 3339, if revoked.
    revoked: Option<String>,
    created_by: String,
}

impl From<&custos_ca::access::OperatorRecord> for Operator {
    fn from(o: &custos_ca::access::OperatorRecord) -> Self {
        Operator {
            name: o.name.clone(),
            role: o.role.clone(),
            serial: o.serial.clone(),
            created: time(o.created_at),
            expires: time(o.not_after),
            revoked: o.revoked_at.map(time),
            created_by: o.created_by.clone(),
        }
    }
}

/// A new operator, for the public key of a CSR (the API never makes an operator's key).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOperator {
    name: String,
    /// `admin`, `operator` or `auditor`.
    role: String,
    /// PKCS#10 request, PEM: the operator keeps its key.
    csr: String,
}

/// An operator just added, with its client certificate.
#[derive(Serialize, ToSchema)]
struct AddedOperator {
    operator: Operator,
    certificate_pem: String,
    /// The operators' CA, PEM.
    ca_pem: String,
}

#[utoipa::path(get, path = "/api/v1/operators", tag = "access",
    responses((status = 200, body = [Operator]), (status = 403, body = Problem)))]
async fn list_operators(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &s.ca.operators(&who).await?.iter().map(Operator::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/operators", tag = "access", request_body = NewOperator,
    responses((status = 201, body = AddedOperator), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn add_operator(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Body(body): Body<NewOperator>,
) -> Result<Response, ApiError> {
    let role = body.role.parse::<custos_ca::Role>()?;
    let made = s.ca.add_operator(&who, &body.name, role, Some(body.csr.as_bytes())).await?;
    Ok(json(
        StatusCode::CREATED,
        &AddedOperator {
            operator: Operator::from(&made.record),
            certificate_pem: made.certificate_pem,
            ca_pem: made.ca_pem,
        },
    ))
}

/// A request that a second admin approve an action.
#[derive(Serialize, ToSchema)]
struct Approval {
    id: String,
    /// `incident.execute`.
    action: String,
    /// The incident id.
    object: String,
    requested_by: String,
    /// RFC 3339.
    requested: String,
    /// RFC 3339: after it, the request can no longer be approved, nor an approval used.
    expires: String,
    approved_by: Option<String>,
    /// RFC 3339.
    approved: Option<String>,
    /// Who refused (or, the requester, withdrew) it: it can then never be approved.
    refused_by: Option<String>,
    /// RFC 3339.
    refused: Option<String>,
}

impl From<&custos_ca::approvals::ApprovalRecord> for Approval {
    fn from(a: &custos_ca::approvals::ApprovalRecord) -> Self {
        Approval {
            id: a.id.clone(),
            action: a.action.clone(),
            object: a.object.clone(),
            requested_by: a.requested_by.clone(),
            requested: time(a.requested_at),
            expires: time(a.expires_at),
            approved_by: a.approved_by.clone(),
            approved: a.approved_at.map(time),
            refused_by: a.refused_by.clone(),
            refused: a.refused_at.map(time),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/approvals", tag = "access",
    responses((status = 200, body = [Approval]), (status = 403, body = Problem)))]
async fn list_approvals(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &s.ca.approvals(&who).await?.iter().map(Approval::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "access", params(("id" = String, Path)),
    responses((status = 200, body = Approval), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn approve(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &Approval::from(&s.ca.approve(&who, &id).await?)))
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/refuse", tag = "access", params(("id" = String, Path)),
    responses((status = 200, body = Approval), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn refuse(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &Approval::from(&s.ca.refuse(&who, &id).await?)))
}

/// The parsers of this module's untrusted input (see [`super::parse_untrusted`]).
pub(super) fn parse_untrusted(data: &[u8]) {
    if let Ok(t) = serde_json::from_slice::<NewToken>(data) {
        let _ = TokenScope::parse(&t.role, t.tenant.as_deref(), t.connection.as_deref());
    }
    let _ = serde_json::from_slice::<NewOperator>(data);
}
