//! The console's pages: thin handlers that ask custos-ca as the viewer and render.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_ca::{CaError, CertificateView, ListFilter, Principal, Role, StatusFilter};
use custos_pki::Serial;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    Credential, LOGIN_COOKIE, SESSION_COOKIE, SESSION_LIMIT, Viewer, age, ca_error_page, cookie, error_page, layout,
    page, random_token, redirect, set_cookie, svg, when,
};
use crate::AppState;
use crate::api::{Path, PeerCertificate, Query};

/// Certificates per inventory page.
const PAGE_SIZE: i64 = 50;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A form's CSRF token, and nothing else.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    /// `token` or `certificate`.
    method: Option<String>,
    token: Option<String>,
}

fn login_page(status: StatusCode, csrf: &str, operator: Option<&str>, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(e) = error { p.error { (e) } }
        form.card method="post" action="/ui/login" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="method" value="token";
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" placeholder="tok_…";
            button type="submit" { "Sign in" }
        }
        @if let Some(name) = operator {
            form.card method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="method" value="certificate";
                p { "Your browser presented the operator certificate of " b { (name) } "." }
                button type="submit" { "Sign in with it" }
            }
        }
    };
    let mut r = page(status, layout(None, "Sign in", body));
    r.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, csrf, 600));
    r
}

/// `GET /ui/login`.
pub async fn login_form(State(s): State<Arc<AppState>>, peer: Option<axum::Extension<PeerCertificate>>) -> Response {
    let operator = match &peer {
        Some(axum::Extension(PeerCertificate(der))) => s.ca.authenticate_operator(der).await.ok().map(|p| p.actor()),
        None => None,
    };
    login_page(StatusCode::OK, &random_token(), operator.as_deref(), None)
}

/// `POST /ui/login`: a token, or the TLS client certificate, becomes a session.
pub async fn login(
    State(s): State<Arc<AppState>>,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: axum::http::HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).map(str::to_string);
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad form", &e.body_text()),
    };
    let fresh = random_token();
    let csrf_ok = match (&expected, &form.csrf) {
        (Some(a), Some(b)) => aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok(),
        _ => false,
    };
    if !csrf_ok {
        return login_page(
            StatusCode::FORBIDDEN,
            &fresh,
            None,
            Some("The sign-in form was not the one this page gave out; try again."),
        );
    }
    let (credential, authenticated) = match (form.method.as_deref(), &peer) {
        (Some("certificate"), Some(axum::Extension(PeerCertificate(der)))) => {
            (Credential::Certificate(der.clone()), s.ca.authenticate_operator(der).await)
        }
        (Some("certificate"), None) => {
            (Credential::Token(String::new()), Err(CaError::Unauthenticated("no client certificate".into())))
        }
        _ => {
            let token = form.token.unwrap_or_default().trim().to_string();
            let outcome = s.ca.authenticate_token(&token).await;
            (Credential::Token(token), outcome)
        }
    };
    match authenticated {
        Ok(principal) => {
            let Some((id, _)) = s.sessions.start(credential) else {
                return error_page(StatusCode::SERVICE_UNAVAILABLE, "Busy", "too many console sessions on this node");
            };
            tracing::info!(principal = %principal.actor(), "console sign-in");
            let mut r = redirect("/ui/");
            r.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, SESSION_LIMIT.as_secs()));
            r.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
            r
        }
        Err(CaError::Unauthenticated(why)) => {
            tracing::info!(reason = %why, "console sign-in refused");
            s.metrics.auth_failure("session");
            login_page(StatusCode::UNAUTHORIZED, &fresh, None, Some("Those credentials were not accepted."))
        }
        Err(e) => ca_error_page(&e),
    }
}

/// `POST /ui/logout`.
pub async fn logout(State(s): State<Arc<AppState>>, viewer: Viewer, Form(form): Form<CsrfForm>) -> Response {
    if let Some(r) = viewer.csrf_refused(form.csrf.as_deref()) {
        return r;
    }
    s.sessions.end(&viewer.session);
    let mut r = redirect("/ui/login");
    r.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    r
}

/// `GET /ui/`: the CA's health at a glance, or a tenant's own connections.
pub async fn overview(State(s): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let p = &viewer.principal;
    if let Some(tenant) = viewer.tenant() {
        let connections = match s.ca.connections(p, Some(tenant)).await {
            Ok(c) => c,
            Err(e) => return ca_error_page(&e),
        };
        let body = html! {
            section.card {
                h2 { "Tenant " (tenant) }
                table {
                    thead { tr { th { "Connection" } th { "Profile" } th { "Allowed names" } th {} } }
                    tbody {
                        @for c in &connections {
                            tr {
                                td { (c.name) }
                                td { (c.profile) }
                                td { (c.allowed_sans.join(", ")) }
                                td { a href={ "/ui/certificates?tenant=" (c.tenant) "&connection=" (c.name) } { "certificates" } }
                            }
                        }
                    }
                }
            }
        };
        return page(StatusCode::OK, layout(Some(&viewer), "Overview", body));
    }
    let (figures, counted) = match s.ca.figures(p).await {
        Ok(f) => f,
        Err(e) => return ca_error_page(&e),
    };
    let issuers = match s.ca.issuers(p).await {
        Ok(i) => i,
        Err(e) => return ca_error_page(&e),
    };
    let health = s.ca.health().await;
    let incidents = s.ca.incidents(p).await.unwrap_or_default();
    let open: Vec<_> = incidents.iter().filter(|i| i.state != custos_ca::IncidentState::Closed).collect();
    let checkpoint = s.ca.latest_checkpoint().await.ok().flatten();
    let publisher = s.publisher.snapshot();
    let t = now();
    let body = html! {
        div.figures {
            (figure("Valid certificates", figures.valid, Some("/ui/certificates?status=valid")))
            (figure("Expiring within 7 days", figures.expiring_7d, Some("/ui/certificates?status=valid&expiring=7")))
            (figure("Expiring within 30 days", figures.expiring_30d, Some("/ui/certificates?status=valid&expiring=30")))
            (figure("Revoked today", figures.revoked_today, Some("/ui/certificates?status=revoked")))
            (figure("Open incidents", open.len() as i64, Some("/ui/incidents")))
            (figure("Audit log entries", figures.audit_size, Some("/ui/audit")))
        }
        p.muted { "Counted " (age(t - counted)) " ago; revoked in all: " (figures.revoked) ", expired: " (figures.expired) "." }
        section.card {
            h2 { "Health" }
            dl {
                dt { "Storage" }
                dd { @match &health { Ok(()) => span.ok { "available" }, Err(why) => span.bad { (why) } } }
                dt { "Revocation feed" }
                dd { "position " (publisher.feed_position) ", read " (age(t - publisher.feed_read_at)) " ago" }
                dt { "OCSP signatures not yet logged" }
                dd { (publisher.unlogged_signatures) }
                dt { "Newest audit checkpoint" }
                dd {
                    @match &checkpoint {
                        Some(cp) => {
                            "size " (cp.size) ", signed " (age(t - cp.time)) " ago, "
                            (cp.note.lines().filter(|l| l.starts_with('\u{2014}')).count().saturating_sub(1)) " witness cosignatures"
                        }
                        None => span.bad { "none yet" },
                    }
                }
            }
        }
        section.card {
            h2 { "Issuers" }
            table {
                thead { tr { th { "Id" } th { "Name" } th { "Role" } th { "Status" } th { "Not after" } th { "CRLs" } } }
                tbody {
                    @for i in &issuers {
                        tr {
                            td { a href={ "/ca/" (i.id) ".pem" } { (i.id) } }
                            td { (i.name) }
                            td { (i.role) }
                            td { (i.status) }
                            td { (when(i.not_after)) }
                            td {
                                @for c in publisher.crls.iter().filter(|c| c.issuer == i.id) {
                                    span.pill { "#" (c.partition) ": " (c.entries) " entries, " (age(t - c.this_update)) " old" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !open.is_empty() {
            section.card {
                h2 { "Open incidents" }
                ul { @for i in &open { li { a href={ "/ui/incidents/" (i.id) } { (i.id) } " — " (i.state) ", " (i.scope_kind) ":" (i.scope_value) } } }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Overview", body))
}

fn figure(label: &str, value: i64, link: Option<&str>) -> Markup {
    html! {
        div.figure {
            @if let Some(l) = link { a href=(l) { span.value { (value) } } } @else { span.value { (value) } }
            span.label { (label) }
        }
    }
}

/// The inventory's search form.
#[derive(Deserialize, Default)]
pub struct Search {
    tenant: Option<String>,
    connection: Option<String>,
    status: Option<String>,
    /// Days.
    expiring: Option<String>,
    san: Option<String>,
    serial: Option<String>,
    cursor: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

/// `GET /ui/certificates`: search and filter, newest first, a page at a time.
pub async fn certificates(State(s): State<Arc<AppState>>, viewer: Viewer, Query(q): Query<Search>) -> Response {
    if let Some(serial) = nonempty(&q.serial) {
        let serial: String = serial.chars().filter(|c| *c != ':').collect::<String>().to_lowercase();
        return redirect(&format!(
            "/ui/certificates/{}",
            percent_encoding::utf8_percent_encode(&serial, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    let bad = |what: String| error_page(StatusCode::BAD_REQUEST, "Bad search", &what);
    // A tenant searches its own tenant: asking for all would be refused.
    let tenant = nonempty(&q.tenant).or_else(|| viewer.tenant().map(str::to_string));
    let connection = nonempty(&q.connection);
    if connection.is_some() && tenant.is_none() {
        return bad("a connection is searched within a tenant: give the tenant too".into());
    }
    let status = match nonempty(&q.status).as_deref() {
        None => None,
        Some("valid") => Some(StatusFilter::Valid),
        Some("revoked") => Some(StatusFilter::Revoked),
        Some("expired") => Some(StatusFilter::Expired),
        Some(other) => return bad(format!("status {other:?}: valid, revoked or expired")),
    };
    let expiring = match nonempty(&q.expiring) {
        None => None,
        Some(d) => match d.parse::<i64>() {
            Ok(days) if (1..=3650).contains(&days) => Some(days * 86_400),
            _ => return bad(format!("expiring within {d:?} days: a number of days from 1 to 3650")),
        },
    };
    let after = match nonempty(&q.cursor) {
        None => None,
        Some(c) => match decode_cursor(&c) {
            Some(a) => Some(a),
            None => return bad(format!("page {c:?} is not one this console gave out")),
        },
    };
    let filter = ListFilter {
        tenant: tenant.clone(),
        connection: connection.clone(),
        status,
        expiring_within: expiring,
        san: nonempty(&q.san),
        after,
        limit: Some(PAGE_SIZE + 1),
        ..ListFilter::default()
    };
    let mut records = match s.ca.certificates(&viewer.principal, &filter).await {
        Ok(r) => r,
        Err(e) => return ca_error_page(&e),
    };
    let more = records.len() as i64 > PAGE_SIZE;
    records.truncate(PAGE_SIZE as usize);
    let t = now();
    let next = more.then(|| records.last().map(|c| encode_cursor(c.created_at, &c.serial))).flatten();
    let keep = |name: &str, v: &Option<String>| {
        nonempty(v).map(|v| {
            format!("&{name}={}", percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC))
        })
    };
    let query: String = [
        keep("tenant", &q.tenant),
        keep("connection", &q.connection),
        keep("status", &q.status),
        keep("expiring", &q.expiring),
        keep("san", &q.san),
    ]
    .into_iter()
    .flatten()
    .collect();
    let body = html! {
        form.search method="get" action="/ui/certificates" {
            input name="serial" placeholder="serial" value=(q.serial.clone().unwrap_or_default());
            input name="tenant" placeholder="tenant" value=(tenant.clone().unwrap_or_default());
            input name="connection" placeholder="connection" value=(connection.clone().unwrap_or_default());
            select name="status" {
                @for (v, label) in [("", "any status"), ("valid", "valid"), ("revoked", "revoked"), ("expired", "expired")] {
                    option value=(v) selected[q.status.as_deref().unwrap_or("") == v] { (label) }
                }
            }
            input name="expiring" placeholder="expiring within days" value=(q.expiring.clone().unwrap_or_default());
            input name="san" placeholder="exact name (SAN)" value=(q.san.clone().unwrap_or_default());
            button #search type="submit" { "Search" }
        }
        table #certificates {
            thead { tr { th { "Serial" } th { "Tenant" } th { "Connection" } th { "Names" } th { "Status" } th { "Not after" } } }
            tbody {
                @for c in &records {
                    @let v = CertificateView::new(c, t);
                    tr {
                        td { a.serial href={ "/ui/certificates/" (v.serial) } { (v.serial) } }
                        td { (v.tenant) }
                        td { (v.connection) }
                        td { (v.sans.join(", ")) }
                        td { span class={ "status " (v.status) } { (v.status) } }
                        td { (v.not_after) }
                    }
                }
            }
        }
        @if records.is_empty() { p.muted { "No certificate matches." } }
        @if let Some(n) = next { p { a #next href={ "/ui/certificates?cursor=" (n) (query) } { "Next page →" } } }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Certificates", body))
}

fn encode_cursor(created_at: i64, serial: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{serial}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (created, serial) = text.split_once(':')?;
    (!serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    Some((created.parse().ok()?, serial.to_string()))
}

fn parse_serial(text: &str) -> Result<Serial, Box<Response>> {
    text.parse::<Serial>().map_err(|e| Box::new(error_page(StatusCode::BAD_REQUEST, "Bad serial", &e.to_string())))
}

/// `GET /ui/certificates/{serial}`: details, chain, the live OCSP answer, the audit trail with proofs, revoke.
pub async fn certificate(State(s): State<Arc<AppState>>, viewer: Viewer, Path(serial): Path<String>) -> Response {
    let serial = match parse_serial(&serial) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &viewer.principal;
    let record = match s.ca.certificate(p, &serial).await {
        Ok(r) => r,
        Err(e) => return ca_error_page(&e),
    };
    let t = now();
    let v = CertificateView::new(&record, t);
    let issuer = s.ca.issuer(p, &record.issuer).await.ok();
    // What an OCSP client gets for it right now, through the same responder.
    let ocsp = match &issuer {
        Some(i) => match custos_pki::ocsp::IssuerHashes::from_certificate(&i.cert_der) {
            Ok(hashes) => {
                let id = hashes.cert_id(custos_pki::ocsp::HashAlgorithm::Sha1, &serial);
                Some(s.publisher.ocsp(&custos_pki::ocsp::encode_request(&[id], None)).await)
            }
            Err(_) => None,
        },
        None => None,
    };
    let may_audit = matches!(viewer.role(), Some(Role::Admin | Role::Auditor));
    let mut trail = Vec::new();
    if may_audit && let Ok(entries) = s.ca.audit_trail(p, &format!("cert:{}", v.serial), 50).await {
        for e in entries {
            let proof = s.ca.inclusion_proof(p, e.index).await;
            trail.push((e, proof));
        }
    }
    let body = html! {
        section.card {
            dl #details {
                dt { "Serial" } dd.serial { (v.serial) }
                dt { "Status" } dd { span #status class={ "status " (v.status) } { (v.status) }
                    @if let Some(r) = &v.revocation_reason { " (" (r) ", " (v.revoked_at.clone().unwrap_or_default()) ")" } }
                dt { "Tenant / connection" } dd { (v.tenant) " / " (v.connection) }
                dt { "Subject" } dd { (v.subject) }
                dt { "Names" } dd { (v.sans.join(", ")) }
                dt { "Validity" } dd { (v.not_before) " → " (v.not_after) }
                dt { "Key" } dd { (v.key_algorithm) " (" (v.key_origin) "), SPKI SHA-256 " code { (v.spki_sha256) } }
                dt { "Fingerprint (SHA-256)" } dd { code { (v.fingerprint) } }
                dt { "Chain" } dd {
                    @if let Some(i) = &issuer {
                        "issued by " a href={ "/ca/" (i.id) ".pem" } { (i.name) }
                        @if let Some(parent) = &i.parent { ", under " a href={ "/ca/" (parent) ".pem" } { (parent) } }
                    }
                }
                dt { "Download" } dd { a #download href={ "/ui/certificates/" (v.serial) "/cert.pem" } { "cert.pem" } }
            }
        }
        section.card {
            h2 { "Live OCSP answer" }
            @match &ocsp {
                Some(a) => p #ocsp {
                    (a.outcome) ", " (if a.cached { "pre-signed" } else { "signed now" })
                    @if let Some((this, next)) = a.validity { ", thisUpdate " (when(this.unix_timestamp())) ", nextUpdate " (when(next.unix_timestamp())) }
                    ", " (a.der.len()) " bytes"
                },
                None => p.bad { "the issuer is not served here" },
            }
        }
        @if v.status == "valid" && viewer.tenant().is_none_or(|t| t == v.tenant) && !matches!(viewer.role(), Some(Role::Auditor)) {
            section.card {
                h2 { "Revoke" }
                form #revoke method="post" action={ "/ui/certificates/" (v.serial) "/revoke" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    select name="reason" {
                        @for r in ["unspecified", "key-compromise", "affiliation-changed", "superseded", "cessation-of-operation"] {
                            option value=(r) { (r) }
                        }
                    }
                    button.danger type="submit" { "Revoke this certificate" }
                }
            }
        }
        @if may_audit {
            section.card {
                h2 { "Audit trail" }
                table #trail {
                    thead { tr { th { "#" } th { "Time" } th { "Actor" } th { "Action" } th { "In the log" } } }
                    tbody {
                        @for (e, proof) in &trail {
                            tr {
                                td { (e.index) }
                                td { (when(e.record.time)) }
                                td { (e.record.actor) }
                                td { (e.record.action) }
                                td {
                                    @match proof {
                                        Ok(pr) => span.ok title={ "root " (pr.root) } { "✓ proof verified against checkpoint " (pr.size) },
                                        Err(why) => span.muted { (why.to_string()) },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), &format!("Certificate {}", v.serial), body))
}

/// `GET /ui/certificates/{serial}/cert.pem`.
pub async fn certificate_pem(State(s): State<Arc<AppState>>, viewer: Viewer, Path(serial): Path<String>) -> Response {
    let serial = match parse_serial(&serial) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match s.ca.certificate(&viewer.principal, &serial).await {
        Ok(c) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}.pem\"", serial.to_hex())),
            ],
            custos_pki::certificate_pem(&c.der),
        )
            .into_response(),
        Err(e) => ca_error_page(&e),
    }
}

/// The revoke form.
#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    reason: Option<String>,
}

/// `POST /ui/certificates/{serial}/revoke`.
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    viewer: Viewer,
    Path(serial): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Some(r) = viewer.csrf_refused(form.csrf.as_deref()) {
        return r;
    }
    let serial = match parse_serial(&serial) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reason = match custos_pki::Reason::parse_loose(form.reason.as_deref().unwrap_or("unspecified")) {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad reason", &e.to_string()),
    };
    match s.ca.revoke(&viewer.principal, &serial, reason, None).await {
        Ok(_) => redirect(&format!("/ui/certificates/{}", serial.to_hex())),
        Err(e) => ca_error_page(&e),
    }
}

/// `GET /ui/incidents`.
pub async fn incidents(State(s): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let list = match s.ca.incidents(&viewer.principal).await {
        Ok(l) => l,
        Err(e) => return ca_error_page(&e),
    };
    let body = html! {
        table #incidents {
            thead { tr { th { "Id" } th { "Compromised" } th { "Reason" } th { "State" } th { "Declared" } } }
            tbody {
                @for i in list.iter().rev() {
                    tr {
                        td { a href={ "/ui/incidents/" (i.id) } { (i.id) } }
                        td { (i.scope_kind) ":" (i.scope_value) }
                        td { (i.reason) }
                        td { (i.state) }
                        td { (when(i.declared_at)) " by " (i.declared_by) }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No incident was ever declared." } }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Incidents", body))
}

/// `GET /ui/incidents/{id}`: the blast radius, live progress per state, the report.
pub async fn incident(State(s): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let p = &viewer.principal;
    let view = match s.ca.incident_view(p, &id).await {
        Ok(v) => v,
        Err(e) => return ca_error_page(&e),
    };
    let status = match s.ca.incident_status(p, &id).await {
        Ok(st) => st,
        Err(e) => return ca_error_page(&e),
    };
    let r = &status.incident;
    let since = |t: Option<i64>| t.map(|t| age(t - r.declared_at)).unwrap_or_else(|| "—".into());
    let executable = matches!(r.state, custos_ca::IncidentState::Declared | custos_ca::IncidentState::Executing);
    let body = html! {
        section.card {
            dl {
                dt { "Compromised" } dd { (view.compromised) }
                dt { "Reason" } dd { (view.reason) }
                dt { "State" } dd #incident-state { (r.state) }
                dt { "Declared" } dd { (when(r.declared_at)) " by " (r.declared_by) }
                dt { "Note" } dd { (view.note) }
            }
        }
        section.card {
            h2 { "Blast radius" }
            p #radius { (view.affected_certificates) " certificates on " (view.affected_connections) " connections of " (view.affected_tenants) " tenants"
                @if !view.compromised_issuers.is_empty() { "; CAs replaced: " (view.compromised_issuers.join(", ")) } }
            table {
                thead { tr { th { "Tenant" } th { "Connections" } th { "Certificates" } } }
                tbody { @for t in view.tenants.iter().take(100) { tr { td { (t.tenant) } td { (t.connections.len()) } td { (t.certificates) } } } }
            }
            @if view.tenants.len() > 100 { p.muted { "… and " (view.tenants.len() - 100) " more tenants" } }
        }
        section.card #progress data-events={ "/ui/incidents/" (r.id) "/events" } {
            h2 { "Progress" }
            table {
                thead { tr { th { "Connection state" } th { "Connections" } th { "Oldest" } } }
                tbody {
                    @for st in &status.states {
                        tr { td { (st.state) } td data-state=(st.state.to_string()) { (st.connections) } td { (age(st.oldest_seconds)) } }
                    }
                }
            }
            p.muted { "Webhooks: " (status.notifications.delivered) " delivered, " (status.notifications.pending) " pending, " (status.notifications.failed) " failed." }
        }
        section.card {
            h2 { "Report" }
            dl #report {
                dt { "Executed" } dd { (since(r.executed_at)) " after declaration" }
                dt { "All revoked" } dd { (since(r.revoked_at)) }
                dt { "All replaced" } dd { (since(r.replaced_at)) }
                dt { "Closed" } dd { (since(r.closed_at)) }
            }
        }
        @if executable && matches!(viewer.role(), Some(Role::Admin)) {
            form #execute method="post" action={ "/ui/incidents/" (r.id) "/execute" } {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button.danger type="submit" { "Execute: revoke, re-key and re-issue" }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), &format!("Incident {}", r.id), body))
}

/// `POST /ui/incidents/{id}/execute`: starts the execution and returns to its page to watch it.
pub async fn execute(
    State(s): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = viewer.csrf_refused(form.csrf.as_deref()) {
        return r;
    }
    let keys_file = s.incident_keys_dir.join(format!("{id}-replacements.jsonl"));
    let (ca, who, run_id) = (s.ca.clone(), viewer.principal.clone(), id.clone());
    // Its own task: leaving the page does not stop an execution half-way.
    let mut run = tokio::spawn(async move { ca.execute_incident(&who, &run_id, &keys_file, &|_| {}).await });
    // Refusals (approval required, wrong state) come at once; show them.
    match tokio::time::timeout(std::time::Duration::from_millis(300), &mut run).await {
        Ok(Ok(Err(e))) => ca_error_page(&e),
        _ => redirect(&format!("/ui/incidents/{id}")),
    }
}

/// `GET /ui/incidents/{id}/events`: server-sent `progress` events, twice a
/// second, until the incident is closed or 15 minutes have passed.
pub async fn incident_events(State(s): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    if let Err(e) = s.ca.incident_status(&viewer.principal, &id).await {
        return ca_error_page(&e);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15 * 60);
    let state = (s, viewer.principal, id, false);
    let stream = futures_util::stream::unfold(state, move |(s, p, id, done)| async move {
        if done || std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = s.ca.incident_status(&p, &id).await.ok()?;
        let closed = status.incident.state == custos_ca::IncidentState::Closed;
        let states: serde_json::Map<String, serde_json::Value> =
            status.states.iter().map(|st| (st.state.to_string(), st.connections.into())).collect();
        let data =
            serde_json::json!({"incident_state": status.incident.state.to_string(), "states": states, "done": closed});
        let event = Event::default().event("progress").data(data.to_string());
        Some((Ok::<_, std::convert::Infallible>(event), (s, p, id, closed)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /ui/approvals`: requests waiting for a second admin.
pub async fn approvals(State(s): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let list = match s.ca.approvals(&viewer.principal).await {
        Ok(l) => l,
        Err(e) => return ca_error_page(&e),
    };
    let t = now();
    let me = viewer.principal.actor();
    let body = html! {
        table #approvals {
            thead { tr { th { "Id" } th { "Action" } th { "Object" } th { "Requested by" } th { "State" } th {} } }
            tbody {
                @for a in &list {
                    tr {
                        td { (a.id) }
                        td { (a.action) }
                        td { (a.object) }
                        td { (a.requested_by) " " span.muted { (when(a.requested_at)) } }
                        td {
                            @if let Some(by) = &a.refused_by { "refused by " (by) }
                            @else if let Some(by) = &a.approved_by { "approved by " (by) }
                            @else if a.expires_at <= t { "expired" }
                            @else { "pending, expires in " (age(a.expires_at - t)) }
                        }
                        td {
                            @let open = a.approved_by.is_none() && a.refused_by.is_none() && a.expires_at > t;
                            @if open && matches!(viewer.role(), Some(Role::Admin)) {
                                @if a.requested_by != me {
                                    form.inline method="post" action={ "/ui/approvals/" (a.id) "/approve" } {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button type="submit" { "Approve" }
                                    }
                                }
                                form.inline method="post" action={ "/ui/approvals/" (a.id) "/refuse" } {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    button.danger type="submit" { (if a.requested_by == me { "Withdraw" } else { "Refuse" }) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No approval was ever requested." } }
        p.muted { "Nothing runs until a second admin approves. A refused request is over: asking again makes a new one." }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Approvals", body))
}

/// `POST /ui/approvals/{id}/approve` and `/refuse` (refuse another admin's
/// request, or withdraw one's own).
pub async fn decide(
    State(s): State<Arc<AppState>>,
    viewer: Viewer,
    Path((id, decision)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = viewer.csrf_refused(form.csrf.as_deref()) {
        return r;
    }
    let decided = match decision.as_str() {
        "approve" => s.ca.approve(&viewer.principal, &id).await,
        "refuse" => s.ca.refuse(&viewer.principal, &id).await,
        _ => return error_page(StatusCode::NOT_FOUND, "Not found", "a request is approved or refused"),
    };
    match decided {
        Ok(_) => redirect("/ui/approvals"),
        Err(e) => ca_error_page(&e),
    }
}

/// The audit page's filters.
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    action: Option<String>,
    key: Option<String>,
}

/// `GET /ui/audit`: the newest entries, a key's usage per day, and verification.
pub async fn audit(State(s): State<Arc<AppState>>, viewer: Viewer, Query(q): Query<AuditQuery>) -> Response {
    let p = &viewer.principal;
    let keys = match s.ca.key_views(p).await {
        Ok(k) => k,
        Err(e) => return ca_error_page(&e),
    };
    let filter = custos_ca::AuditFilter {
        action: nonempty(&q.action),
        key: nonempty(&q.key),
        limit: 100,
        ..custos_ca::AuditFilter::default()
    };
    let entries = match s.ca.audit_tail(p, &filter).await {
        Ok(e) => e,
        Err(e) => return ca_error_page(&e),
    };
    // Unless one is asked for, the busiest key (an issuing CA's, as a rule).
    let chart_key =
        nonempty(&q.key).or_else(|| keys.iter().filter(|k| k.uses > 0).max_by_key(|k| k.uses).map(|k| k.id.clone()));
    let usage = match &chart_key {
        Some(k) => s.ca.key_usage(p, k).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let body = html! {
        form.search method="get" action="/ui/audit" {
            input name="action" placeholder="action (revoke, certificate.issue, sign)" value=(q.action.clone().unwrap_or_default());
            select name="key" {
                option value="" { "any key" }
                @for k in &keys { option value=(k.id) selected[q.key.as_deref() == Some(k.id.as_str())] { (k.label) " (" (k.uses) " uses)" } }
            }
            button type="submit" { "Filter" }
        }
        form #verify method="post" action="/ui/audit/verify" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            button type="submit" { "Verify the whole log" }
        }
        @if let Some(k) = &chart_key {
            section.card {
                h2 { "Signatures per day: " (keys.iter().find(|x| &x.id == k).map(|x| x.label.as_str()).unwrap_or(k)) }
                (usage_chart(&usage))
            }
        }
        table #entries {
            thead { tr { th { "#" } th { "Time" } th { "Actor" } th { "Action" } th { "Object" } } }
            tbody {
                @for e in entries.iter().rev() {
                    tr { td { (e.index) } td { (when(e.record.time)) } td { (e.record.actor) } td { (e.record.action) } td { (e.record.object) } }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Audit log", body))
}

/// Uses per day as an SVG bar chart (numbers and dates only, so no escaping is needed).
fn usage_chart(usage: &[custos_ca::KeyUsage]) -> Markup {
    let mut days: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for u in usage {
        *days.entry(u.day).or_default() += u.count;
    }
    let days: Vec<(i64, i64)> = days.into_iter().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
    if days.is_empty() {
        return html! { p.muted { "No signature yet." } };
    }
    let max = days.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1) as f64;
    let (w, h, bar) = (640.0, 160.0, (600.0 / days.len() as f64).min(40.0));
    let mut out = format!(
        "<svg id=\"usage\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"signatures per day\">",
        h + 30.0
    );
    for (i, (day, n)) in days.iter().enumerate() {
        let height = (*n as f64 / max) * h;
        let x = 20.0 + i as f64 * bar;
        let date = custos_ca::rfc3339(day * 86_400);
        out += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" class=\"bar\"><title>{} {n}</title></rect>",
            h - height,
            (bar - 2.0).max(1.0),
            &date[..10]
        );
    }
    let first = custos_ca::rfc3339(days[0].0 * 86_400);
    let last = custos_ca::rfc3339(days[days.len() - 1].0 * 86_400);
    out += &format!(
        "<text x=\"20\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} · max {}/day</text></svg>",
        h + 20.0,
        &first[..10],
        w - 20.0,
        h + 20.0,
        &last[..10],
        max
    );
    svg(out)
}

/// `POST /ui/audit/verify`: recomputes the whole log and checks every checkpoint.
pub async fn verify(State(s): State<Arc<AppState>>, viewer: Viewer, Form(form): Form<CsrfForm>) -> Response {
    if let Some(r) = viewer.csrf_refused(form.csrf.as_deref()) {
        return r;
    }
    let started = std::time::Instant::now();
    let body = match s.ca.verify_log(&viewer.principal, None, None).await {
        Ok(report) => html! {
            p #verified.ok { "The log verifies: " (report.entries) " entries recomputed, " (report.checkpoints) " checkpoints' signatures and roots match." }
            dl { dt { "Root" } dd { code { (report.root) } } dt { "Key" } dd { code { (report.key) } } dt { "Took" } dd { (format!("{:.2} s", started.elapsed().as_secs_f64())) } }
        },
        Err(CaError::Forbidden { .. }) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "verifying the log needs the admin or auditor role",
            );
        }
        Err(e) => html! { p #verified.bad { "The log does NOT verify: " (e.to_string()) } },
    };
    page(StatusCode::OK, layout(Some(&viewer), "Audit verification", body))
}

/// `GET /ui/tenants`.
pub async fn tenants(State(s): State<Arc<AppState>>, viewer: Viewer) -> Response {
    if let Some(t) = viewer.tenant() {
        return redirect(&format!("/ui/tenants/{t}"));
    }
    let list = match s.ca.tenants(&viewer.principal).await {
        Ok(l) => l,
        Err(e) => return ca_error_page(&e),
    };
    let body = html! {
        table #tenants {
            thead { tr { th { "Tenant" } th { "Created" } th { "Keys in custody by default" } } }
            tbody { @for t in &list { tr { td { a href={ "/ui/tenants/" (t.name) } { (t.name) } } td { (when(t.created_at)) } td { (if t.custody_default { "yes" } else { "no" }) } } } }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), "Tenants", body))
}

/// `GET /ui/tenants/{tenant}`: connections with their policy, the webhook, tokens.
pub async fn tenant(State(s): State<Arc<AppState>>, viewer: Viewer, Path(name): Path<String>) -> Response {
    let p = &viewer.principal;
    let record = match s.ca.tenant(p, &name).await {
        Ok(r) => r,
        Err(e) => return ca_error_page(&e),
    };
    let connections = match s.ca.connections(p, Some(&name)).await {
        Ok(c) => c,
        Err(e) => return ca_error_page(&e),
    };
    let webhook = s.ca.webhook_urls(p).await.unwrap_or_default().into_iter().find(|(t, _)| t == &name).map(|(_, u)| u);
    let tokens: Vec<_> = match p {
        Principal::Tenant { .. } => Vec::new(),
        _ => {
            s.ca.tokens(p)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.tenant.as_deref() == Some(&name))
                .collect()
        }
    };
    let t = now();
    let body = html! {
        section.card {
            dl {
                dt { "Created" } dd { (when(record.created_at)) }
                dt { "Keys in custody by default" } dd { (if record.custody_default { "yes" } else { "no" }) }
                dt { "Webhook" } dd { (webhook.unwrap_or_else(|| "none: incidents reach this tenant only through its status page".into())) }
            }
        }
        section.card {
            h2 { "Connections" }
            table #connections {
                thead { tr { th { "Connection" } th { "Profile" } th { "Allowed names" } th { "Key" } th { "Lifetime" } th {} } }
                tbody {
                    @for c in &connections {
                        tr {
                            td { (c.name) }
                            td { (c.profile) }
                            td { (c.allowed_sans.join(", ")) }
                            td { (c.key_algorithm) }
                            td { (c.validity_days.map(|d| format!("{d} days")).unwrap_or_else(|| "profile default".into())) }
                            td { a href={ "/ui/certificates?tenant=" (c.tenant) "&connection=" (c.name) } { "certificates" } }
                        }
                    }
                }
            }
        }
        @if !tokens.is_empty() {
            section.card {
                h2 { "API tokens" }
                table {
                    thead { tr { th { "Id" } th { "Role" } th { "Connection" } th { "Expires" } th { "State" } } }
                    tbody {
                        @for k in &tokens {
                            tr {
                                td { (k.id) } td { (k.role) } td { (k.connection.clone().unwrap_or_else(|| "any".into())) }
                                td { (k.expires_at.map(when).unwrap_or_else(|| "never".into())) }
                                td { @if k.revoked_at.is_some() { "revoked" } @else if k.expires_at.is_some_and(|e| e <= t) { "expired" } @else { "active" } }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout(Some(&viewer), &format!("Tenant {name}"), body))
}
