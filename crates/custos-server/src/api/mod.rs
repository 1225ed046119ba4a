//! `/api/v1`: the authenticated API, served on the TLS listener only.
//!
//! Handlers are thin: [`Caller`] turns the request's credentials (a bearer
//! token, or an operator's client certificate) into a [`Principal`], the
//! handler calls custos-ca with it, and custos-ca's authorization module
//! decides. Errors are RFC 9457 problem+json; an object the caller may not
//! see (another tenant's) answers 404 exactly as one that does not exist.
//! The OpenAPI 3.1 description is generated from these handlers and their
//! types (utoipa) and served at `/api/v1/openapi.json`.
//!
//! The wire types live here, not in custos-ca: the API is versioned, and a
//! change to a domain type must not change `/api/v1` by accident.

mod access;
mod custody;
mod inventory;
mod operations;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_ca::{CaError, Principal};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::{AppState, problem};

/// The largest JSON body a route takes (a CSR with a few SANs fits in 16 KiB).
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// The API's routes and their OpenAPI description, without a fallback; merged
/// into the TLS listener's router only (the plain listener never has them).
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(inventory::routes())
        .merge(operations::routes())
        .merge(access::routes())
        .merge(custody::routes())
        .split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    // After the routes are in: a modifier in the derive would see no paths.
    Conventions.modify(&mut api);
    let document = Arc::new(api.to_json().unwrap_or_default());
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*document).clone()) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives each API request an id (the client's `X-Request-Id` if it is a
/// short token, else a random one), answers it in `X-Request-Id`, writes it
/// into the request's audit entries, and logs one line per request.
async fn request_id(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes);
        hex::encode(bytes)
    });
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string());
    let actor = ActorSlot::default();
    let mut req = req;
    req.extensions_mut().insert(actor.clone());
    let started = std::time::Instant::now();
    let mut response = custos_ca::with_request_id(id.clone(), next.run(req)).await;
    tracing::info!(
        target: "custos::request",
        request_id = %id,
        principal = actor.0.get().map(String::as_str).unwrap_or("-"),
        %method,
        route = route.as_deref().unwrap_or("unmatched"),
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "API request"
    );
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

#[derive(OpenApi)]
#[openapi(
    info(title = "custos API", description = "Certificate and key custody: tenants, connections, certificates, connection keys in custody and signing, incidents, the audit log, tokens."),
    security(("bearer" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

/// What every operation shares, added once instead of on each handler: the
/// bearer scheme, problem+json as the media type of every error, and the
/// errors any operation can answer (401 without credentials, 429 past the
/// principal's rate, 500, 503 while the storage is down; with a body 413,
/// 415 and 422; with parameters 400).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("tok_ID.SECRET").build(),
            ),
        );
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for op in operations.into_iter().flatten() {
                for (status, response) in op.responses.responses.iter_mut() {
                    if let (true, RefOr::T(r)) = (status.starts_with('4') || status.starts_with('5'), response)
                        && let Some(content) = r.content.shift_remove("application/json")
                    {
                        r.content.insert("application/problem+json".into(), content);
                    }
                }
                let mut common = vec![
                    ("401", "No valid credentials"),
                    ("429", "Too many requests from this principal; see Retry-After"),
                    ("500", "custos failed (logged)"),
                    ("503", "The storage is unavailable"),
                ];
                if op.request_body.is_some() {
                    common.extend([
                        ("400", "The body is not JSON"),
                        ("413", "The body is too large"),
                        ("415", "The body is not application/json"),
                        ("422", "The body is not what the operation takes"),
                    ]);
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    common.push(("400", "A path or query parameter is malformed"));
                }
                for (code, description) in common {
                    op.responses.responses.entry(code.to_string()).or_insert_with(|| problem(description));
                }
            }
        }
    }
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the title says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong, and where.
    pub detail: String,
}

/// The caller, authenticated: who the request acts as.
pub struct Caller(pub Principal);

/// Where [`Caller`] leaves the authenticated actor for the request's log line.
#[derive(Clone, Default)]
pub struct ActorSlot(pub Arc<std::sync::OnceLock<String>>);

/// The DER of the client certificate the TLS handshake verified, set by the
/// connection loop on every request of that connection.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// The client's address, set by the connection loop on every request (for
/// the audit entries of signatures).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddress(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<PeerAddress>().copied().unwrap_or(PeerAddress(None)))
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let credential = if parts.headers.contains_key(header::AUTHORIZATION) {
            "bearer"
        } else if parts.extensions.get::<PeerCertificate>().is_some() {
            "certificate"
        } else {
            "none"
        };
        let refused = |why: &str| {
            // The reason goes to the log; the client learns only that it failed.
            tracing::info!(reason = why, path = %parts.uri.path(), "API authentication refused");
            state.metrics.auth_failure(credential);
            let mut r = problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send `Authorization: Bearer TOKEN` (custos token create) or an operator's client certificate",
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        };
        let authenticated = if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
                return Err(refused("not a Bearer authorization"));
            };
            state.ca.authenticate_token(token.trim()).await
        } else if let Some(PeerCertificate(der)) = parts.extensions.get::<PeerCertificate>() {
            state.ca.authenticate_operator(der).await
        } else {
            return Err(refused("no credentials"));
        };
        match authenticated {
            Ok(p) => {
                if let Some(slot) = parts.extensions.get::<ActorSlot>() {
                    let _ = slot.0.set(p.actor());
                }
                state.limiter.admit(p).map(Caller).map_err(|r| *r)
            }
            Err(CaError::Unauthenticated(why)) => Err(refused(&why)),
            Err(e) => Err(ApiError::Ca(e).into_response()),
        }
    }
}

/// A token bucket per principal: `per_second` requests sustained, `burst`
/// at once. Per node: with several nodes a principal gets each node's rate.
/// The map holds one small entry per principal seen; entries full again are
/// dropped when it grows past a bound, so unbounded principals cannot grow it.
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

/// Principals tracked before full buckets are swept out.
const MAX_TRACKED_PRINCIPALS: usize = 10_000;

impl Limiter {
    /// A limiter allowing `per_second` requests sustained and `burst` at once per principal.
    pub fn new(per_second: u32, burst: u32) -> Limiter {
        Limiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Lets `principal` through, or answers 429 with when to retry.
    fn admit(&self, principal: Principal) -> Result<Principal, Box<Response>> {
        let actor = principal.actor();
        self.admit_key(&actor, &format!("{actor} makes"))?;
        Ok(principal)
    }

    /// Lets one request counted against `key` through, or answers 429 saying
    /// `who` (e.g. "tenant:acme makes") is over the rate.
    pub fn admit_key(&self, key: &str, who: &str) -> Result<(), Box<Response>> {
        let now = std::time::Instant::now();
        let wait = {
            let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
            if buckets.len() >= MAX_TRACKED_PRINCIPALS {
                let (rate, burst) = (self.per_second, self.burst);
                buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            }
            let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
            *at = now;
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                None
            } else {
                Some(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
            }
        };
        match wait {
            None => Ok(()),
            Some(seconds) => {
                let mut r = problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests",
                    &format!("{who} more than {} requests a second here; retry later", self.per_second),
                );
                if let Ok(v) = header::HeaderValue::from_str(&seconds.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Err(Box::new(r))
            }
        }
    }
}

/// Why a request failed, as the API answers it.
pub enum ApiError {
    /// custos-ca refused or failed.
    Ca(CaError),
    /// The request itself is malformed (a query value, a cursor): 400 with what was wrong.
    BadRequest(String),
    /// Past a rate: the 429 answer, with its Retry-After.
    Limited(Box<Response>),
}

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        ApiError::Ca(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Ca(e) => e,
            ApiError::BadRequest(detail) => return problem(StatusCode::BAD_REQUEST, "bad request", &detail),
            ApiError::Limited(response) => return *response,
        };
        let Some((status, title)) = classify(&e) else {
            tracing::error!(error = %e, "API request failed");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the request failed inside custos");
        };
        // Another tenant's object: the same words as an unknown one, never its name.
        let detail = match &e {
            CaError::NotVisible { .. } => "no such object".to_string(),
            other => other.to_string(),
        };
        problem(status, title, &detail)
    }
}

/// The status and title an error is answered with; `None` for a failure
/// inside custos (500, logged by the caller, its words never shown).
pub(crate) fn classify(e: &CaError) -> Option<(StatusCode, &'static str)> {
    Some(match e {
        CaError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        CaError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        CaError::NotVisible { .. }
        | CaError::UnknownTenant(_)
        | CaError::UnknownConnection { .. }
        | CaError::UnknownCertificate(_)
        | CaError::UnknownIssuer(_)
        | CaError::UnknownIncident(_)
        | CaError::UnknownToken(_)
        | CaError::UnknownOperator(_)
        | CaError::UnknownKey(_)
        | CaError::UnknownApproval(_) => (StatusCode::NOT_FOUND, "not found"),
        CaError::ApprovalRequired { .. } => (StatusCode::CONFLICT, "approval required"),
        CaError::Changed(..) => (StatusCode::PRECONDITION_FAILED, "changed since read"),
        CaError::PreconditionRequired(_) => (StatusCode::PRECONDITION_REQUIRED, "precondition required"),
        CaError::InvalidName { .. } | CaError::Pki(_) => (StatusCode::BAD_REQUEST, "bad request"),
        CaError::Policy(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused by policy"),
        CaError::Name(_) => (StatusCode::BAD_REQUEST, "bad request"),
        e if e.is_conflict() => (StatusCode::CONFLICT, "conflict"),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable"),
        _ => return None,
    })
}

/// A JSON body, or a problem document saying what in it was wrong.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(problem(e.status(), "bad body", &e.body_text())),
        }
    }
}

/// Query parameters, or a problem document saying which one was wrong.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(problem(StatusCode::BAD_REQUEST, "bad query", &e.body_text())),
        }
    }
}

/// Path parameters, or a problem document.
pub struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(problem(StatusCode::BAD_REQUEST, "bad path", &e.body_text())),
        }
    }
}

/// A JSON answer with `status`.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding an API answer failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the answer could not be encoded")
        }
    }
}

/// Feeds `data` to every parser the API runs on untrusted input before
/// custos-ca sees it (JSON bodies, cursors, durations, roles, reasons,
/// incident scopes, bearer tokens): the fuzz target `api_input` calls this,
/// and none of them may panic.
#[doc(hidden)]
pub fn parse_untrusted(data: &[u8]) {
    inventory::parse_untrusted(data);
    operations::parse_untrusted(data);
    access::parse_untrusted(data);
    custody::parse_untrusted(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos_ca::access::parse_token(text);
        let _ = custos_ca::policy::parse_duration(text);
        let _ = custos_pki::Reason::parse_loose(text);
        let _ = text.parse::<custos_ca::Role>();
    }
}

/// Unix seconds as RFC 3339.
fn time(t: i64) -> String {
    custos_ca::rfc3339(t)
}

#[cfg(test)]
mod tests {
    /// The fuzz target's entry point on hostile inputs it should meet early (the
    /// fuzzer itself needs nightly and runs outside the suite).
    #[test]
    fn untrusted_parsers_survive_hostile_input() {
        let long = "9".repeat(100_000);
        let inputs: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe\x00",
            b"{\"csr\": 1}",
            b"{\"role\": \"tenant\", \"tenant\": null, \"connection\": \"x\"}",
            b"tok_.",
            b"{\"digest\": \"////\", \"alg\": \"ES256\"}",
            b"{\"aud\": \"x\", \"iss\": \"\", \"sub\": \"\", \"alg\": \"none\", \"lifetime\": -1}",
            "tok_0123456789abcdef.\u{10ffff}".as_bytes(),
            b"OTIyMzM3MjAzNjg1NDc3NTgwODo=",
            long.as_bytes(),
            b"99999999999999999999999999d",
            b"cert:zz",
        ];
        for i in inputs {
            super::parse_untrusted(i);
        }
        assert!(
            custos_ca::access::parse_token("tok_0123456789ABCDEF.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_ok()
        );
        assert!(
            custos_ca::access::parse_token("tok_0123456789abcdeg.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err()
        );
    }
}
