//! The witness's HTTP face (C2SP tlog-witness): `POST /add-checkpoint`.
//!
//! What it decides and what it keeps live behind [`Witness`] (custos-node
//! holds the witness's state file and key); this module only reads the body
//! (bounded) and answers with the status codes tlog-witness prescribes:
//! 200 with cosignature lines, 400, 403, 404, 409 with the witness's size as
//! `text/x.tlog.size`, 422.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_audit::witness::{MAX_REQUEST_BYTES, Refusal};

/// A witness: decides on one `add-checkpoint` request body, records its new
/// state before it answers, and returns the cosignature lines.
pub trait Witness: Send + Sync {
    /// The cosignature lines for the submitted checkpoint, or why not.
    fn add_checkpoint(&self, body: &[u8]) -> Result<String, Refusal>;
}

/// The witness's routes.
pub fn witness_router(witness: Arc<dyn Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(witness)
}

async fn add_checkpoint(State(w): State<Arc<dyn Witness>>, body: Bytes) -> Response {
    // The decision signs and writes a file: off the async threads.
    let answer = tokio::task::spawn_blocking(move || w.add_checkpoint(&body)).await;
    let text = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    match answer {
        Ok(Ok(lines)) => text(StatusCode::OK, lines),
        Ok(Err(Refusal::Conflict { size, fork })) => {
            tracing::warn!(size, fork, "witness: checkpoint refused (conflict)");
            (StatusCode::CONFLICT, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{size}\n")).into_response()
        }
        Ok(Err(refusal)) => {
            tracing::warn!(error = %refusal, "witness: checkpoint refused");
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            text(status, format!("{refusal}\n"))
        }
        Err(e) => {
            tracing::error!(error = %e, "witness: the decision failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
        }
    }
}
