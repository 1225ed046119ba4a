//! The custos HTTP surface: thin axum handlers over custos-ca.
//!
//! Serves the CA certificates (`/ca/{issuer}.der`, AIA caIssuers) and
//! `/healthz`. Errors are RFC 9457 problem+json. Not here: any rule about
//! what may be issued (custos-ca) or any key material (custos-keys).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custos_ca::{Ca, CaError};

/// Request bodies larger than this are refused with 413 before a handler runs.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of the handlers.
pub struct AppState {
    /// The opened custos.
    pub ca: Ca,
}

/// Builds the router with every public route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ca/{file}", get(ca_certificate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `router` on `listener` until ctrl-c or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.ca.store().meta("initialized").await {
        Ok(Some(_)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            "ok\n",
        )
            .into_response(),
        Ok(None) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not initialized",
            "the store holds no custos",
        ),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable",
                "the database did not answer",
            )
        }
    }
}

/// `GET /ca/{issuer}.der` (AIA caIssuers, RFC 5280 4.2.2.1) or `.pem`.
async fn ca_certificate(
    State(state): State<Arc<AppState>>,
    file: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(file)) = file else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad path",
            "the issuer in the path is not valid UTF-8",
        );
    };
    let (id, pem) = if let Some(id) = file.strip_suffix(".der") {
        (id, false)
    } else if let Some(id) = file.strip_suffix(".pem") {
        (id, true)
    } else {
        return problem(
            StatusCode::NOT_FOUND,
            "not found",
            "CA certificates are served as {issuer}.der or {issuer}.pem",
        );
    };
    match state.ca.issuer(id).await {
        Ok(issuer) if pem => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            custos_pki::certificate_pem(&issuer.cert_der),
        )
            .into_response(),
        Ok(issuer) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            issuer.cert_der,
        )
            .into_response(),
        Err(CaError::UnknownIssuer(_)) => problem(
            StatusCode::NOT_FOUND,
            "unknown issuer",
            &format!("no issuer {id:?}"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading issuer failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "the issuer could not be read",
            )
        }
    }
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "not found", "no such resource")
}

/// An RFC 9457 problem+json response.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
