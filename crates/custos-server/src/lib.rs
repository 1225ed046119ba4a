//! The custos HTTP surface: thin axum handlers over custos-ca.
//!
//! Serves OCSP (`POST /ocsp`, `GET /ocsp/{base64}`, RFC 6960 and RFC 5019),
//! CRLs (`/crl/{issuer}.crl`, `/crl/{issuer}/{n}.crl`), the CA certificates (`/ca/{issuer}.der`, AIA
//! caIssuers), the audit log as C2SP tlog-tiles (`/audit/checkpoint`,
//! `/audit/tile/...`, and `/audit/key` for convenience), `/healthz` and `/readyz`; on
//! the TLS listener also `/api/v1` ([`api`]), `/acme` ([`acme`]), the web
//! console `/ui/` ([`console`]) and `/metrics` ([`metrics`]). Errors outside OCSP are RFC 9457 problem+json;
//! OCSP errors are OCSP error statuses, as clients expect. Not here: any rule
//! about what may be issued (custos-ca), any key material (custos-keys), the
//! database (custos-store), or the background jobs that keep OCSP and CRLs
//! current (custos-node runs them).

pub mod acme;
pub mod api;
pub mod console;
pub mod http;
pub mod metrics;
pub mod tls;
pub mod witness;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custos_ca::{Ca, CaError, OcspAnswer, Principal, StatusPublisher};
use time::OffsetDateTime;

/// Request bodies larger than this are refused with 413 before a handler runs.
/// A real OCSP request is under 200 bytes; 16 certificates with a nonce fit in 2 KiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// A connection is closed when a request's head has not arrived this long
/// after the connection opened or its previous response was sent, and a
/// request not completed this long after its head gets 408: idle or trickling
/// clients cannot hold connections (and their memory) forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state of the handlers.
pub struct AppState {
    /// The opened, unsealed custos.
    pub ca: Arc<Ca>,
    /// OCSP answers and CRLs.
    pub publisher: Arc<StatusPublisher>,
    /// How many API requests each principal may make.
    pub limiter: api::Limiter,
    /// How many signatures each custodied connection may get, whoever asks.
    pub sign_limiter: api::Limiter,
    /// Where `POST /api/v1/incidents/{id}/execute` writes the replacement keys
    /// of connections whose keys custos generates (`ID-replacements.jsonl`,
    /// 0600, as `custos incident execute` does); custodied connections need none.
    pub incident_keys_dir: std::path::PathBuf,
    /// The ACME service, when `[acme] enabled`.
    pub acme: Option<Arc<custos_ca::acme::Acme>>,
    /// Whether `/acme/` also answers on the plain-HTTP listener (labs only).
    pub acme_on_plain_http: bool,
    /// What `/metrics` shows.
    pub metrics: Arc<metrics::Metrics>,
    /// The web console's sessions on this node.
    pub sessions: console::Sessions,
}

/// Builds the router with every public route but OCSP, which [`serve`]
/// answers ahead of it ([`OcspHotPath`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ca/{file}", get(ca_certificate))
        .route("/crl/{file}", get(crl))
        .route("/crl/{issuer}/{file}", get(crl_partition))
        .route("/audit/checkpoint", get(audit_checkpoint))
        .route("/audit/key", get(audit_key))
        .route("/audit/tile/{*path}", get(audit_tile))
        .route("/incident/{id}/ack", post(incident_ack))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the public routes on `listener`, and those and `/api/v1` on `tls`
/// (if given), until `shutdown`
/// resolves: in-flight requests finish, idle connections close. Each
/// listener keeps at most `limits` connections open.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tls::TlsListener>,
    state: Arc<AppState>,
    limits: http::ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hot = |listener| -> Arc<dyn http::HotPath> { Arc::new(OcspHotPath(state.clone(), listener)) };
    let counted = |router: Router, listener: &'static str| {
        router.layer(axum::middleware::from_fn_with_state((state.metrics.clone(), listener), metrics::count))
    };
    // One shutdown for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let secure = tls.map(|l| {
        let mut app = router(state.clone())
            .merge(api::router(state.clone()))
            .merge(console::router(state.clone()))
            .route("/metrics", get(metrics::authenticated).with_state(state.clone()));
        if state.acme.is_some() {
            app = app.merge(acme::router(state.clone()));
        }
        let app = counted(app, "tls");
        let mut stopped = stopped.clone();
        tokio::spawn(http::serve(l, app, Some(hot("tls")), IDLE_TIMEOUT, limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    // OCSP answers are small and latency-bound: never let Nagle hold one back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let mut plain = router(state.clone());
    if state.acme.is_some() && state.acme_on_plain_http {
        plain = plain.merge(acme::router(state.clone()));
    }
    let plain = counted(plain, "plain");
    let result = http::serve(listener, plain, Some(hot("plain")), IDLE_TIMEOUT, limits, signal).await;
    if let Some(task) = secure {
        // The TLS listener saw the same signal; give it its own graceful end.
        let _ = task.await;
    }
    result
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.ca.health().await {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok\n").into_response(),
        Err(reason) => problem(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable", &reason),
    }
}

/// `GET /readyz`: whether a load balancer should send traffic here. While the
/// storage is unavailable, OCSP still answers from the pre-signed set
/// (degraded), but nothing that writes can succeed: 503 with the reason.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ca.health().await {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ready\n").into_response(),
        Err(reason) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded",
            &format!("OCSP answers from pre-signed responses only; {reason}"),
        ),
    }
}

/// `GET /ca/{issuer}.der` (AIA caIssuers, RFC 5280 4.2.2.1) or `.pem`.
async fn ca_certificate(State(state): State<Arc<AppState>>, file: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(file)) = file else {
        return problem(StatusCode::BAD_REQUEST, "bad path", "the issuer in the path is not valid UTF-8");
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
    if id == custos_ca::access::OPERATORS_CA_ID {
        return match state.ca.operators_ca().await {
            Ok(Some(der)) if pem => {
                ([(header::CONTENT_TYPE, "application/x-pem-file")], custos_pki::certificate_pem(&der)).into_response()
            }
            Ok(Some(der)) => ([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response(),
            Ok(None) => problem(StatusCode::NOT_FOUND, "unknown issuer", "this custos has no operators' CA yet"),
            Err(e) => internal(&e, "reading the operators' CA"),
        };
    }
    match state.ca.issuer(&Principal::System, id).await {
        Ok(issuer) if pem => (
            [(header::CONTENT_TYPE, "application/x-pem-file"), (header::CACHE_CONTROL, "public, max-age=3600")],
            custos_pki::certificate_pem(&issuer.cert_der),
        )
            .into_response(),
        Ok(issuer) => (
            [(header::CONTENT_TYPE, "application/pkix-cert"), (header::CACHE_CONTROL, "public, max-age=3600")],
            issuer.cert_der,
        )
            .into_response(),
        Err(CaError::UnknownIssuer(_)) => {
            problem(StatusCode::NOT_FOUND, "unknown issuer", &format!("no issuer {id:?}"))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading issuer failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the issuer could not be read")
        }
    }
}

/// `GET /audit/checkpoint`: the latest signed checkpoint (C2SP tlog-checkpoint in a signed note).
async fn audit_checkpoint(State(state): State<Arc<AppState>>) -> Response {
    match state.ca.latest_checkpoint().await {
        Ok(Some(cp)) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], cp.note)
                .into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, "no checkpoint", "the audit log has no signed checkpoint yet"),
        Err(e) => internal(&e, "reading the checkpoint"),
    }
}

/// `GET /audit/key`: the log's verifier key. A relying party should pin it
/// from a channel other than this server; it is here to make that easy.
async fn audit_key(State(state): State<Arc<AppState>>) -> Response {
    match state.ca.log_verifier_key().await {
        Ok(key) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{key}\n")).into_response(),
        Err(e) => internal(&e, "reading the log key"),
    }
}

/// `GET /audit/tile/{L}/{N}[.p/{W}]` and `/audit/tile/entries/...` (C2SP tlog-tiles).
/// Every tile path names fixed content, so all are cacheable forever.
async fn audit_tile(State(state): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(path)) = path else {
        return problem(StatusCode::BAD_REQUEST, "bad path", "the tile path is not valid UTF-8");
    };
    let tile = match custos_audit::TileRef::parse(&path) {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::NOT_FOUND, "not a tile", &e.to_string()),
    };
    match state.ca.audit_tile(&tile).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            body,
        )
            .into_response(),
        Err(CaError::Policy(detail)) => problem(StatusCode::NOT_FOUND, "no such tile", &detail),
        Err(e) => internal(&e, "reading a tile"),
    }
}

/// `POST /incident/{id}/ack`: a tenant confirms a connection's new
/// certificate is in place. The body is `{"tenant": T, "connection": C}`,
/// signed like the notification with the tenant's webhook secret
/// (`x-custos-signature: t=UNIX,v1=HEX`, within five minutes).
async fn incident_ack(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path(id)) = id else {
        return problem(StatusCode::BAD_REQUEST, "bad path", "the incident id is not valid UTF-8");
    };
    #[derive(serde::Deserialize)]
    struct Ack {
        tenant: String,
        connection: String,
    }
    let ack: Ack = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "bad body",
                &format!("expected {{\"tenant\", \"connection\"}}: {e}"),
            );
        }
    };
    let signature = headers.get("x-custos-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    // The signature authenticates the tenant for this request and connection;
    // custos-ca then decides what that tenant may acknowledge.
    let path = format!("/incident/{id}/ack");
    let signed = custos_ca::incident::SignedAck {
        method: "POST",
        path: &path,
        incident: &id,
        tenant: &ack.tenant,
        connection: &ack.connection,
        body: &body,
    };
    let principal = match state.ca.authenticate_ack(&signed, signature).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "bad signature",
                "sign with the tenant's webhook secret, once, within five minutes: x-custos-signature: t=UNIX,v2=HEX(HMAC-SHA256(secret, \"custos-ack-v2\\nPOST\\nPATH\\nINCIDENT\\nTENANT/CONNECTION\\nUNIX\\nBODY\"))",
            );
        }
        Err(e) => return internal(&e, "checking a signature"),
    };
    match state.ca.ack_incident(&principal, &id, &ack.tenant, &ack.connection).await {
        Ok(c) => ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&c).unwrap_or_default())
            .into_response(),
        Err(CaError::Policy(detail)) => problem(StatusCode::CONFLICT, "cannot acknowledge", &detail),
        Err(e @ (CaError::UnknownConnection { .. } | CaError::UnknownTenant(_) | CaError::NotVisible { .. })) => {
            problem(StatusCode::NOT_FOUND, "not found", &e.to_string())
        }
        Err(e @ CaError::Forbidden { .. }) => problem(StatusCode::FORBIDDEN, "forbidden", &e.to_string()),
        Err(e) => internal(&e, "acknowledging"),
    }
}

/// Logs an unexpected failure and answers 500 without internals.
fn internal(e: &CaError, doing: &str) -> Response {
    tracing::error!(error = %e, "{doing} failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &format!("{doing} failed"))
}

/// The DER request in the (percent-decoded) path of an OCSP GET; empty, and
/// so answered `malformedRequest`, when it is not base64 of any flavour.
fn request_from_get_path(text: &str) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim_end_matches('=');
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .unwrap_or_default()
}

/// `POST /ocsp` (a DER request body, RFC 6960 appendix A.1) and
/// `GET /ocsp/{base64 of the DER request}` (RFC 5019 section 5; standard or
/// URL-safe base64, padded or not, percent-encoded or not), answered ahead of
/// the router: they are nearly all of a responder's traffic, and going
/// through the router cost 2-3 of ~30 µs of server CPU per request
/// (`perf stat`, one connection, five alternating runs each).
pub struct OcspHotPath(pub Arc<AppState>, pub &'static str);

impl http::HotPath for OcspHotPath {
    fn answer(
        &self,
        req: axum::extract::Request<hyper::body::Incoming>,
    ) -> Result<futures_util::future::BoxFuture<'static, Response>, axum::extract::Request<hyper::body::Incoming>> {
        use http_body_util::BodyExt;
        let method = req.method().clone();
        let path = req.uri().path();
        let listener = self.1;
        if method == axum::http::Method::POST && path == "/ocsp" {
            let state = self.0.clone();
            return Ok(Box::pin(async move {
                let at = std::time::Instant::now();
                let response = match http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
                    Ok(body) => ocsp_response(&state, state.publisher.ocsp(&body.to_bytes()).await),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request too large",
                        &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
                    ),
                    Err(_) => problem(StatusCode::BAD_REQUEST, "bad request", "the request body could not be read"),
                };
                state.metrics.ocsp_request(listener, &method, response.status().as_u16(), at);
                response
            }));
        }
        if method == axum::http::Method::GET
            && let Some(tail) = path.strip_prefix("/ocsp/")
            && !tail.is_empty()
        {
            // As the route's path extractor: percent-decoded, and malformed if not UTF-8.
            let der = percent_encoding::percent_decode_str(tail)
                .decode_utf8()
                .map(|text| request_from_get_path(&text))
                .unwrap_or_default();
            let state = self.0.clone();
            return Ok(Box::pin(async move {
                let at = std::time::Instant::now();
                let response = ocsp_response(&state, state.publisher.ocsp(&der).await);
                state.metrics.ocsp_request(listener, &method, response.status().as_u16(), at);
                response
            }));
        }
        Err(req)
    }
}

fn ocsp_response(state: &AppState, answer: OcspAnswer) -> Response {
    state.metrics.ocsp(&answer);
    // The cached DER is shared with the response body, not copied.
    let mut response = (StatusCode::OK, Bytes::from_owner(SharedDer(answer.der.clone()))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/ocsp-response"));
    match answer.validity {
        Some((this_update, next_update)) => {
            // RFC 5019 section 6: caches may keep the response until nextUpdate.
            let max_age = (next_update - OffsetDateTime::now_utc()).whole_seconds().max(0);
            let values = [
                (header::CACHE_CONTROL, format!("public, max-age={max_age}, no-transform, must-revalidate")),
                (header::LAST_MODIFIED, http_date(this_update)),
                (header::EXPIRES, http_date(next_update)),
                (header::ETAG, format!("\"{}\"", answer.tag.as_deref().unwrap_or("-"))),
            ];
            for (name, value) in values {
                if let Ok(v) = header::HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            }
        }
        None => {
            headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        }
    }
    response
}

/// `GET /crl/{issuer}.crl`: the current DER CRL (RFC 5280 section 5).
async fn crl(State(state): State<Arc<AppState>>, file: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(file)) = file else {
        return problem(StatusCode::BAD_REQUEST, "bad path", "the issuer in the path is not valid UTF-8");
    };
    let Some(id) = file.strip_suffix(".crl") else {
        return problem(StatusCode::NOT_FOUND, "not found", "CRLs are served as {issuer}.crl");
    };
    if id == custos_ca::access::OPERATORS_CA_ID {
        return match state.ca.operators_crl().await {
            Ok(Some(crl)) => crl_answer(&crl),
            Ok(None) => problem(StatusCode::NOT_FOUND, "unknown CRL", "this custos has no operators' CA"),
            Err(e) => {
                tracing::warn!(error = %e, "the operators' CRL could not be signed");
                problem(StatusCode::SERVICE_UNAVAILABLE, "CRL unavailable", "the operators' CRL could not be signed")
            }
        };
    }
    crl_response(&state, id, 0)
}

/// `GET /crl/{issuer}/{n}.crl`: CRL partition `n` of an issuer.
async fn crl_partition(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((issuer, file))) = path else {
        return problem(StatusCode::BAD_REQUEST, "bad path", "the path is not valid UTF-8");
    };
    match file.strip_suffix(".crl").and_then(|n| n.parse::<i64>().ok()) {
        Some(partition) if partition > 0 => crl_response(&state, &issuer, partition),
        _ => problem(StatusCode::NOT_FOUND, "not found", "CRL partitions are served as {issuer}/{n}.crl, n >= 1"),
    }
}

fn crl_response(state: &AppState, id: &str, partition: i64) -> Response {
    let Some(crl) = state.publisher.crl(id, partition) else {
        return problem(StatusCode::NOT_FOUND, "unknown CRL", &format!("no CRL {partition} for issuer {id:?}"));
    };
    crl_answer(&crl)
}

/// A CRL with the headers that let caches hold it for a second.
fn crl_answer(crl: &custos_ca::Crl) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/pkix-crl".to_string()),
        // Regenerated within a second of every revocation: let caches hold it no longer.
        (header::CACHE_CONTROL, "public, max-age=1, no-transform".to_string()),
        (header::LAST_MODIFIED, http_date(crl.this_update)),
        (header::ETAG, format!("\"{}-{}-{}\"", crl.issuer, crl.partition, crl.number)),
    ];
    let mut response = (StatusCode::OK, crl.der.clone()).into_response();
    for (name, value) in headers {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

/// A cached response body shared with the cache that holds it.
struct SharedDer(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedDer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

fn http_date(t: OffsetDateTime) -> String {
    // httpdate (already hyper's) formats IMF-fixdate without a format-description interpreter.
    httpdate::fmt_http_date(t.into())
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
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}
