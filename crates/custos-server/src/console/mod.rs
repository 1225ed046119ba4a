//! `/ui/`: the web console, server-rendered HTML on the TLS listener only.
//!
//! Sign-in is with an API token or an operator's client certificate; either
//! becomes a session: a random 256-bit id in a cookie (`Secure`, `HttpOnly`,
//! `SameSite=Strict`, path `/ui`), kept in this node's memory by its SHA-256
//! with the credential it stands for. Every request authenticates that
//! credential again (custos-ca caches tokens for at most a second), so a
//! revoked token or operator certificate ends its sessions on the next click.
//! A session begun with a certificate also needs that certificate on every
//! request. Sessions end after 30 idle minutes or 8 hours. Every form carries the
//! session's CSRF token, and a POST without it changes nothing (403).
//!
//! Pages show what the principal's role allows, because every read goes
//! through custos-ca's authorization as the API's do: a tenant's session
//! reaches only its tenant, and another tenant's objects are "not found".
//!
//! Sessions are per node: behind a load balancer, keep a client on one node
//! (or sign in again on another).

pub(crate) mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_ca::{CaError, Principal, Role};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::AppState;

/// The session cookie.
const SESSION_COOKIE: &str = "custos_session";
/// The sign-in form's CSRF cookie (double submit, before there is a session).
const LOGIN_COOKIE: &str = "custos_login";
/// A session unused this long ends.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const SESSION_LIMIT: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept per node; past it, expired ones are swept and then the oldest refused.
const MAX_SESSIONS: usize = 10_000;

/// What a session signs in with; authenticated again on every request.
#[derive(Clone)]
enum Credential {
    Token(String),
    Certificate(Arc<Vec<u8>>),
}

struct Session {
    credential: Credential,
    csrf: String,
    started: Instant,
    used: Instant,
}

/// This node's console sessions, by the SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn session_key(id: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes()))
}

impl Sessions {
    /// Starts a session for `credential`: (cookie value, CSRF token), or None when full.
    fn start(&self, credential: Credential) -> Option<(String, String)> {
        let mut map = self.map.lock().ok()?;
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| alive(s));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let (id, csrf) = (random_token(), random_token());
        let now = Instant::now();
        map.insert(session_key(&id), Session { credential, csrf: csrf.clone(), started: now, used: now });
        Some((id, csrf))
    }

    /// The live session with this cookie value, marked used: (credential, CSRF token).
    fn touch(&self, id: &str) -> Option<(Credential, String)> {
        let mut map = self.map.lock().ok()?;
        let key = session_key(id);
        let s = map.get_mut(&key)?;
        if !alive(s) {
            map.remove(&key);
            return None;
        }
        s.used = Instant::now();
        Some((s.credential.clone(), s.csrf.clone()))
    }

    fn end(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&session_key(id));
        }
    }
}

fn alive(s: &Session) -> bool {
    s.used.elapsed() < IDLE_LIMIT && s.started.elapsed() < SESSION_LIMIT
}

/// The console's routes (TLS listener only), with security headers on every answer.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/certificates", get(pages::certificates))
        .route("/ui/certificates/{serial}", get(pages::certificate))
        .route("/ui/certificates/{serial}/cert.pem", get(pages::certificate_pem))
        .route("/ui/certificates/{serial}/revoke", post(pages::revoke))
        .route("/ui/incidents", get(pages::incidents))
        .route("/ui/incidents/{id}", get(pages::incident))
        .route("/ui/incidents/{id}/execute", post(pages::execute))
        .route("/ui/incidents/{id}/events", get(pages::incident_events))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/approvals/{id}/{decision}", post(pages::decide))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/audit/verify", post(pages::verify))
        .route("/ui/tenants", get(pages::tenants))
        .route("/ui/tenants/{tenant}", get(pages::tenant))
        .route("/ui/static/console.css", get(|| async { asset("text/css", include_str!("console.css")) }))
        .route("/ui/static/console.js", get(|| async { asset("text/javascript", include_str!("console.js")) }))
        .layer(axum::middleware::from_fn(headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// No framing, no inline script or style, no sniffing, no referrer, no caching of pages.
async fn headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A 303 to `to`.
fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The value of cookie `name` in the request's headers, if any.
fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console's path, secure and script-proof.
fn set_cookie(name: &str, value: &str, max_age: u64) -> HeaderValue {
    let text = format!("{name}={value}; Path=/ui; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The signed-in viewer of a page.
pub struct Viewer {
    /// Who the session acts as, authenticated again for this request.
    pub principal: Principal,
    /// The session's CSRF token, for forms.
    pub csrf: String,
    session: String,
}

impl Viewer {
    /// Whether the viewer is a tenant (or an ACME account): tenant-scoped pages only.
    fn tenant(&self) -> Option<&str> {
        match &self.principal {
            Principal::Tenant { tenant, .. } | Principal::AcmeAccount { tenant, .. } => Some(tenant),
            _ => None,
        }
    }

    fn role(&self) -> Option<Role> {
        match &self.principal {
            Principal::Operator { role, .. } => Some(*role),
            Principal::LocalAdmin { .. } => Some(Role::Admin),
            _ => None,
        }
    }

    /// Checks a posted form's CSRF token: the 403 page if it is missing or wrong.
    fn csrf_refused(&self, posted: Option<&str>) -> Option<Response> {
        let ok = posted.is_some_and(|p| {
            aws_lc_rs::constant_time::verify_slices_are_equal(p.as_bytes(), self.csrf.as_bytes()).is_ok()
        });
        if ok {
            None
        } else {
            Some(error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form did not carry this session's CSRF token, so nothing was changed. Reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string) else {
            return Err(redirect("/ui/login"));
        };
        let Some((credential, csrf)) = state.sessions.touch(&id) else { return Err(redirect("/ui/login")) };
        let authenticated = match &credential {
            Credential::Token(t) => state.ca.authenticate_token(t).await,
            // Bound to the certificate's key: the cookie alone, from a client
            // without that certificate, reaches nothing.
            Credential::Certificate(der) => match parts.extensions.get::<crate::api::PeerCertificate>() {
                Some(crate::api::PeerCertificate(presented)) if presented == der => {
                    state.ca.authenticate_operator(der).await
                }
                _ => Err(CaError::Unauthenticated("the session's client certificate was not presented".into())),
            },
        };
        match authenticated {
            Ok(principal) => {
                let actor = principal.actor();
                if let Err(limited) = state.limiter.admit_key(&actor, &format!("{actor} makes")) {
                    return Err(*limited);
                }
                if let Some(slot) = parts.extensions.get::<crate::api::ActorSlot>() {
                    let _ = slot.0.set(actor);
                }
                Ok(Viewer { principal, csrf, session: id })
            }
            Err(CaError::Unauthenticated(why)) => {
                // Revoked or expired since sign-in: the session ends with it.
                tracing::info!(reason = %why, "console session refused");
                state.metrics.auth_failure("session");
                state.sessions.end(&id);
                Err(redirect("/ui/login"))
            }
            Err(e) => Err(ca_error_page(&e)),
        }
    }
}

/// The page frame: navigation for what the role may see, and sign-out.
fn layout(viewer: Option<&Viewer>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · custos" }
                link rel="stylesheet" href="/ui/static/console.css";
                script src="/ui/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "custos" }
                    @if let Some(v) = viewer {
                        nav {
                            a href="/ui/" { "Overview" }
                            a href="/ui/certificates" { "Certificates" }
                            @if v.tenant().is_none() {
                                a href="/ui/incidents" { "Incidents" }
                            }
                            @if matches!(v.role(), Some(Role::Admin | Role::Auditor)) {
                                a href="/ui/approvals" { "Approvals" }
                                a href="/ui/audit" { "Audit" }
                            }
                            a href="/ui/tenants" { "Tenants" }
                        }
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span.who { (v.principal.actor()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An HTML answer.
fn page(status: StatusCode, markup: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response()
}

/// A page saying what went wrong.
fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    page(status, layout(None, title, html! { p.error { (detail) } p { a href="/ui/" { "Back to the overview" } } }))
}

/// custos-ca's refusal as a page, with the API's statuses and words (another
/// tenant's object reads exactly as a missing one).
fn ca_error_page(e: &CaError) -> Response {
    let Some((status, _)) = crate::api::classify(e) else {
        tracing::error!(error = %e, "console page failed");
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Failed", "the page failed inside custos (logged)");
    };
    let detail = match e {
        CaError::NotVisible { .. } => "no such object".to_string(),
        e => e.to_string(),
    };
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::SERVICE_UNAVAILABLE => "Storage unavailable",
        _ => "Refused",
    };
    error_page(status, title, &detail)
}

/// Feeds `data` to every parser the console runs on untrusted input before
/// custos-ca sees it (cookies, query strings and form bodies, page cursors,
/// serials): the fuzz target `api_input` calls this (beside the API's), and none may panic.
#[doc(hidden)]
pub fn parse_untrusted(data: &[u8]) {
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        headers.insert(header::COOKIE, v);
        let _ = cookie(&headers, SESSION_COOKIE);
        let _ = cookie(&headers, LOGIN_COOKIE);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pages::decode_cursor(text);
        let _ = text.parse::<custos_pki::Serial>();
        // Form bodies are encoded as query strings are.
        if let Ok(uri) = format!("/?{text}").parse::<axum::http::Uri>() {
            let _ = axum::extract::Query::<pages::Search>::try_from_uri(&uri);
            let _ = axum::extract::Query::<pages::LoginForm>::try_from_uri(&uri);
            let _ = axum::extract::Query::<pages::RevokeForm>::try_from_uri(&uri);
            let _ = axum::extract::Query::<pages::AuditQuery>::try_from_uri(&uri);
        }
    }
}

/// Unix seconds as RFC 3339.
fn when(t: i64) -> String {
    custos_ca::rfc3339(t)
}

/// A whole number of seconds as `3d 4h`, `12m`, `40s`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Text that is safe inside a script-free page (maud escapes; this is for attribute-free raw SVG only).
fn svg(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    /// The fuzz target's entry point on hostile inputs it should meet early.
    #[test]
    fn untrusted_parsers_survive_hostile_input() {
        let inputs: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe\x00",
            b"custos_session=; custos_login==;;=x; a",
            b"csrf=%ZZ&token=%&method=certificate&&reason=\xff",
            b"tenant=a&status=bogus&expiring=99999999999999999999&cursor=%00",
            b"MTIzOmdn",
        ];
        for i in inputs {
            super::parse_untrusted(i);
        }
        assert_eq!(super::pages::decode_cursor("MTIzOmFi"), Some((123, "ab".to_string())));
        assert_eq!(super::pages::decode_cursor("MTIzOmdn"), None, "not hex");
    }

    /// Sessions end 30 idle minutes after their last use, and 8 hours after
    /// sign-in however busy (times moved back rather than waited for).
    #[test]
    fn sessions_expire_when_idle_and_at_their_limit() {
        use std::time::{Duration, Instant};
        let sessions = super::Sessions::default();
        let (idle, _) = sessions.start(super::Credential::Token("a".into())).expect("room");
        let (busy, _) = sessions.start(super::Credential::Token("b".into())).expect("room");
        let (fresh, _) = sessions.start(super::Credential::Token("c".into())).expect("room");
        let ago = |d: Duration| Instant::now().checked_sub(d).expect("an instant in the past");
        {
            let mut map = sessions.map.lock().expect("lock");
            let s = map.get_mut(&super::session_key(&idle)).expect("idle");
            s.used = ago(super::IDLE_LIMIT + Duration::from_secs(1));
            let s = map.get_mut(&super::session_key(&busy)).expect("busy");
            s.started = ago(super::SESSION_LIMIT + Duration::from_secs(1));
            s.used = Instant::now();
            let s = map.get_mut(&super::session_key(&fresh)).expect("fresh");
            s.used = ago(super::IDLE_LIMIT - Duration::from_secs(60));
        }
        assert!(sessions.touch(&idle).is_none(), "idle past 30 minutes");
        assert!(sessions.touch(&busy).is_none(), "past 8 hours, though just used");
        assert!(sessions.touch(&fresh).is_some(), "used 29 minutes ago");
        assert_eq!(sessions.map.lock().expect("lock").len(), 1, "expired sessions are dropped");
    }

    /// Sessions: a cookie value finds its session, a wrong one nothing, an ended one nothing.
    #[test]
    fn sessions_start_touch_and_end() {
        let sessions = super::Sessions::default();
        let (id, csrf) = sessions.start(super::Credential::Token("tok".into())).expect("room");
        let (_, again) = sessions.touch(&id).expect("live");
        assert_eq!(again, csrf);
        assert!(sessions.touch("not-a-session").is_none());
        sessions.end(&id);
        assert!(sessions.touch(&id).is_none());
    }
}
