//! The ACME server (RFC 8555) and ARI (RFC 9773) under `/acme/`: thin
//! handlers over [`custos_ca::acme::Acme`]. Every response carries a fresh
//! `Replay-Nonce` and a `Link` to the directory; every error is an ACME
//! problem document (`application/problem+json`, `urn:ietf:params:acme:error:*`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custos_acme::{AcmeError, MAX_JWS_BYTES, ProblemType};
use custos_ca::acme::{Acme, Caller, Verified};

use crate::AppState;

/// The routes, for a custos with ACME turned on.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/acme/directory", get(directory))
        .route("/acme/new-nonce", get(nonce_get).head(nonce_head))
        .route("/acme/new-account", post(new_account))
        .route("/acme/acct/{id}", post(account))
        .route("/acme/acct/{id}/orders", post(orders))
        .route("/acme/new-order", post(new_order))
        .route("/acme/order/{id}", post(order))
        .route("/acme/order/{id}/finalize", post(finalize))
        .route("/acme/authz/{id}", post(authz))
        .route("/acme/chall/{id}/{kind}", post(challenge))
        .route("/acme/cert/{serial}", post(certificate))
        .route("/acme/revoke-cert", post(revoke))
        .route("/acme/key-change", post(key_change))
        .route("/acme/renewal-info/{id}", get(renewal_info))
        .route("/acme/notice/{id}", get(notice))
        .layer(DefaultBodyLimit::max(MAX_JWS_BYTES))
        .with_state(state)
}

fn service(state: &AppState) -> Result<&Arc<Acme>, AcmeError> {
    state.acme.as_ref().ok_or_else(|| AcmeError::new(ProblemType::Malformed, "ACME is not enabled on this custos"))
}

/// Adds a fresh nonce and the directory link to a response.
async fn finish(state: &AppState, mut response: Response) -> Response {
    let Ok(acme) = service(state) else { return response };
    let headers = response.headers_mut();
    match acme.new_nonce().await {
        Ok(n) => {
            if let Ok(v) = HeaderValue::from_str(&n) {
                headers.insert("replay-nonce", v);
            }
        }
        Err(e) => tracing::warn!(error = %e, "no nonce for an ACME response"),
    }
    if let Ok(v) = HeaderValue::from_str(&format!("<{}/directory>;rel=\"index\"", acme.settings().base_url)) {
        headers.append(header::LINK, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn problem(e: &AcmeError) -> Response {
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_string(&e.problem()).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
}

fn json_response(status: StatusCode, value: &impl serde::Serialize, location: Option<String>) -> Response {
    let mut r =
        (status, [(header::CONTENT_TYPE, "application/json")], serde_json::to_string(value).unwrap_or_default())
            .into_response();
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// An ACME POST as axum hands it over: what [`handle`] checks before the
/// request's own handler runs.
struct AcmePost {
    state: Arc<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl axum::extract::FromRequest<Arc<AppState>> for AcmePost {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let (uri, headers) = (parts.uri.clone(), parts.headers.clone());
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(AcmePost { state: state.clone(), uri, headers, body })
    }
}

impl AcmePost {
    /// [`handle`] with this request.
    async fn handle<F, Fut>(self, f: F) -> Response
    where
        F: FnOnce(Arc<Acme>, Verified) -> Fut,
        Fut: std::future::Future<Output = Result<Response, AcmeError>>,
    {
        handle(self.state, self.uri, self.headers, self.body, f).await
    }
}

/// Runs a POST handler: content type, JWS, url, nonce, rate; then `f`; then nonce and link.
async fn handle<F, Fut>(state: Arc<AppState>, uri: Uri, headers: HeaderMap, body: Bytes, f: F) -> Response
where
    F: FnOnce(Arc<Acme>, Verified) -> Fut,
    Fut: std::future::Future<Output = Result<Response, AcmeError>>,
{
    let result = async {
        let acme = service(&state)?.clone();
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.split(';').next().map(str::trim) != Some("application/jose+json") {
            return Err(AcmeError::malformed(format!(
                "Content-Type {content_type:?}: ACME requests are application/jose+json"
            )));
        }
        let path = uri.path().strip_prefix("/acme").unwrap_or(uri.path());
        let url = format!("{}{path}", acme.settings().base_url);
        let verified = acme.verify(&body, &url).await?;
        let who = match &verified.caller {
            Caller::Account(a, _) => format!("acme-account:{}", a.id),
            Caller::Key(k) => format!("acme-key:{}", k.thumbprint()),
        };
        if state.limiter.admit_key(&who, &who).is_err() {
            return Err(AcmeError::new(
                ProblemType::RateLimited,
                format!("{who} is over its request rate; retry later"),
            ));
        }
        f(acme, verified).await
    }
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.kind == ProblemType::ServerInternal {
                tracing::error!(error = %e, path = uri.path(), "ACME request failed");
            } else {
                tracing::debug!(error = %e, path = uri.path(), "ACME request refused");
            }
            problem(&e)
        }
    };
    finish(&state, response).await
}

async fn directory(State(state): State<Arc<AppState>>) -> Response {
    match service(&state) {
        Ok(acme) => json_response(StatusCode::OK, &acme.directory(), None),
        Err(e) => problem(&e),
    }
}

async fn nonce_head(State(state): State<Arc<AppState>>) -> Response {
    finish(&state, StatusCode::OK.into_response()).await
}

async fn nonce_get(State(state): State<Arc<AppState>>) -> Response {
    finish(&state, StatusCode::NO_CONTENT.into_response()).await
}

async fn new_account(post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let (account, created) = acme.new_account(&v).await?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(json_response(status, &acme.account_view(&account), Some(acme.account_url(&account))))
    })
    .await
}

async fn account(Path(id): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let account = acme.account(&v, &id).await?;
        Ok(json_response(StatusCode::OK, &acme.account_view(&account), Some(acme.account_url(&account))))
    })
    .await
}

async fn orders(Path(id): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let orders = acme.orders(&v, &id).await?;
        Ok(json_response(StatusCode::OK, &serde_json::json!({"orders": orders}), None))
    })
    .await
}

async fn key_change(post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let account = acme.key_change(&v).await?;
        Ok(json_response(StatusCode::OK, &acme.account_view(&account), Some(acme.account_url(&account))))
    })
    .await
}

async fn new_order(post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let (order, _) = acme.new_order(&v).await?;
        let view = acme.order_view(&order).await?;
        Ok(json_response(StatusCode::CREATED, &view, Some(acme.order_url(&order))))
    })
    .await
}

async fn order(Path(id): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let order = acme.order(&v, &id).await?;
        let view = acme.order_view(&order).await?;
        Ok(json_response(StatusCode::OK, &view, Some(acme.order_url(&order))))
    })
    .await
}

async fn finalize(Path(id): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let order = acme.finalize(&v, &id).await?;
        let view = acme.order_view(&order).await?;
        Ok(json_response(StatusCode::OK, &view, Some(acme.order_url(&order))))
    })
    .await
}

async fn authz(Path(id): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let z = acme.authz(&v, &id).await?;
        Ok(json_response(StatusCode::OK, &acme.authz_view(&z), None))
    })
    .await
}

async fn challenge(Path((id, kind)): Path<(String, String)>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let z = acme.challenge(&v, &id, &kind).await?;
        let view = acme.authz_view(&z);
        let challenge = view.challenges.into_iter().find(|c| c.kind == kind);
        let mut r = json_response(StatusCode::OK, &challenge, None);
        if let Ok(up) = HeaderValue::from_str(&format!("<{}/authz/{id}>;rel=\"up\"", acme.settings().base_url)) {
            r.headers_mut().append(header::LINK, up);
        }
        Ok(r)
    })
    .await
}

async fn certificate(Path(serial): Path<String>, post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        let chain = acme.certificate(&v, &serial).await?;
        Ok(([(header::CONTENT_TYPE, "application/pem-certificate-chain")], chain.pem).into_response())
    })
    .await
}

async fn revoke(post: AcmePost) -> Response {
    post.handle(|acme, v| async move {
        acme.revoke(&v).await?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

async fn renewal_info(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let acme = match service(&state) {
        Ok(a) => a,
        Err(e) => return problem(&e),
    };
    match acme.renewal_info(&id).await {
        Ok(Some((info, retry_after))) => {
            let mut r = json_response(StatusCode::OK, &info, None);
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Ok(None) => problem(&AcmeError::malformed(format!("no certificate {id:?} from this CA"))).map_status(),
        Err(e) => problem(&e),
    }
}

async fn notice(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let acme = match service(&state) {
        Ok(a) => a,
        Err(e) => return problem(&e),
    };
    match acme.notice(&id).await {
        Ok(Some(text)) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Ok(None) => problem(&AcmeError::malformed(format!("no incident {id:?}"))).map_status(),
        Err(e) => problem(&e),
    }
}

trait NotFound {
    fn map_status(self) -> Response;
}

impl NotFound for Response {
    /// ARI answers an unknown certificate id with 404.
    fn map_status(mut self) -> Response {
        *self.status_mut() = StatusCode::NOT_FOUND;
        self
    }
}
