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
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
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
