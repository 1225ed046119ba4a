//! Tenants, connections, certificates, issuers and keys.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_ca::policy::parse_duration;
use custos_ca::{CaError, CertificateView, ConnectionOptions, IssueRequest, KeySource, ListFilter, StatusFilter};
use custos_pki::{Profile, Reason, Serial};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, Caller, Path, Problem, Query, json, time};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, add_tenant))
        .routes(routes!(get_tenant))
        .routes(routes!(list_connections, add_connection))
        .routes(routes!(get_connection, update_connection))
        .routes(routes!(issue))
        .routes(routes!(list_certificates))
        .routes(routes!(get_certificate))
        .routes(routes!(revoke))
        .routes(routes!(list_issuers))
        .routes(routes!(issuer_certificate))
        .routes(routes!(list_keys))
        .routes(routes!(key_usage))
}

/// A tenant.
#[derive(Serialize, ToSchema)]
struct Tenant {
    name: String,
    /// RFC 3339.
    created: String,
}

impl From<custos_ca::TenantRecord> for Tenant {
    fn from(t: custos_ca::TenantRecord) -> Self {
        Tenant { name: t.name, created: time(t.created_at) }
    }
}

/// A new tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    /// 1-63 characters of a-z, 0-9, '-', '_' or '.'.
    name: String,
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, description = "Every tenant the caller may see", body = [Tenant]),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_tenants(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    // A tenant's account sees its own tenant only.
    let tenants = match &who {
        custos_ca::Principal::Tenant { tenant, .. } => vec![s.ca.tenant(&who, tenant).await?],
        _ => s.ca.tenants(&who).await?,
    };
    Ok(json(StatusCode::OK, &tenants.into_iter().map(Tenant::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_tenant(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Body(body): Body<NewTenant>,
) -> Result<Response, ApiError> {
    let t = s.ca.add_tenant(&who, &body.name).await?;
    Ok(json(StatusCode::CREATED, &Tenant::from(t)))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_tenant(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &Tenant::from(s.ca.tenant(&who, &tenant).await?)))
}

/// A connection: what its certificates may be.
#[derive(Serialize, ToSchema)]
struct Connection {
    tenant: String,
    name: String,
    /// `client` or `server`.
    profile: String,
    /// SAN patterns its certificates may carry.
    allowed_sans: Vec<String>,
    /// Algorithm of keys custos generates for it.
    key_algorithm: String,
    /// Default lifetime in days, if not the profile's.
    validity_days: Option<i64>,
    /// RFC 3339.
    created: String,
}

impl From<custos_ca::ConnectionRecord> for Connection {
    fn from(c: custos_ca::ConnectionRecord) -> Self {
        Connection {
            tenant: c.tenant,
            name: c.name,
            profile: c.profile.to_string(),
            allowed_sans: c.allowed_sans,
            key_algorithm: c.key_algorithm,
            validity_days: c.validity_days,
            created: time(c.created_at),
        }
    }
}

/// A new connection.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewConnection {
    name: String,
    /// `client` (default) or `server`.
    profile: Option<String>,
    /// SAN patterns its certificates may carry (`*.example.com`, `mail.example.com`).
    #[serde(default)]
    allowed_sans: Vec<String>,
    /// `p256` (default), `p384`, `rsa2048`, `rsa3072`, `ed25519`.
    key_algorithm: Option<String>,
    /// Default lifetime in days.
    validity_days: Option<i64>,
    /// Keep the connection's key (and a standby) in custody; the tenant's default when absent.
    custody: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/connections", tag = "connections", params(("tenant" = String, Path)),
    responses((status = 200, body = [Connection]), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
async fn list_connections(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let list = s.ca.connections(&who, Some(&tenant)).await?;
    Ok(json(StatusCode::OK, &list.into_iter().map(Connection::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/connections", tag = "connections", params(("tenant" = String, Path)),
    request_body = NewConnection,
    responses((status = 201, body = Connection), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn add_connection(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(tenant): Path<String>,
    Body(body): Body<NewConnection>,
) -> Result<Response, ApiError> {
    let options = ConnectionOptions {
        profile: body.profile.as_deref().unwrap_or("client").parse::<Profile>().map_err(CaError::from)?,
        allowed_sans: body.allowed_sans,
        key_algorithm: body
            .key_algorithm
            .as_deref()
            .unwrap_or("p256")
            .parse()
            .map_err(|e: custos_ca::KeyAlgorithmError| ApiError::BadRequest(e.to_string()))?,
        validity_days: body.validity_days,
    };
    let custody = match body.custody {
        Some(c) => c,
        None => s.ca.custody_by_default(&who, &tenant).await?,
    };
    let c = match custody {
        true => {
            let keys = custos_ca::custody::CustodyOptions {
                algorithm: options.key_algorithm,
                standby: true,
                sans: vec![],
                validity_secs: None,
            };
            s.ca.add_custody(&who, &tenant, &body.name, Some(&options), &keys).await?;
            s.ca.connection(&who, &tenant, &body.name).await?
        }
        false => s.ca.add_connection(&who, &tenant, &body.name, &options).await?,
    };
    Ok(json(StatusCode::CREATED, &Connection::from(c)))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/connections/{connection}", tag = "connections",
    params(("tenant" = String, Path), ("connection" = String, Path)),
    responses((status = 200, body = Connection), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_connection(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = s.ca.connection(&who, &tenant, &connection).await?;
    Ok(with_etag(json(StatusCode::OK, &Connection::from(c.clone())), &c))
}

/// `response` with the connection's ETag, for `If-Match` on the next update.
fn with_etag(mut response: Response, c: &custos_ca::ConnectionRecord) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(&custos_ca::connection_etag(c)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// What a PATCH changes; an absent field stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConnectionPatch {
    /// SAN patterns its certificates may carry, replacing the list.
    allowed_sans: Option<Vec<String>>,
    /// Default lifetime in days; `null` for the profile's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable)]
    validity_days: Option<Option<i64>>,
}

/// A field that is present (even as `null`) becomes `Some`, so `null` and absent differ.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/connections/{connection}", tag = "connections",
    params(("tenant" = String, Path), ("connection" = String, Path),
           ("If-Match" = String, Header, description = "The ETag of the connection as last read (GET answers it)")),
    request_body = ConnectionPatch,
    responses((status = 200, description = "Updated; its new ETag in the ETag header", body = Connection),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 412, description = "It changed since it was read: read it again", body = Problem),
              (status = 422, body = Problem),
              (status = 428, description = "If-Match is required", body = Problem)))]
async fn update_connection(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    Body(patch): Body<ConnectionPatch>,
) -> Result<Response, ApiError> {
    // Updates can race (two operators, two scripts): one made on a stale read
    // must fail, so the API requires the tag (428 without it).
    let tag = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::trim);
    let changes = custos_ca::ConnectionChanges { allowed_sans: patch.allowed_sans, validity_days: patch.validity_days };
    let c = s.ca.update_connection(&who, &tenant, &connection, &changes, tag, true).await?;
    Ok(with_etag(json(StatusCode::OK, &Connection::from(c.clone())), &c))
}

/// A certificate.
#[derive(Serialize, ToSchema)]
struct Certificate {
    /// Lowercase hex.
    serial: String,
    tenant: String,
    connection: String,
    profile: String,
    /// `valid`, `revoked` or `expired`.
    status: String,
    subject: String,
    sans: Vec<String>,
    issuer: String,
    /// RFC 3339.
    not_before: String,
    /// RFC 3339.
    not_after: String,
    key_algorithm: String,
    /// `csr` or `generated`.
    key_origin: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    spki_sha256: String,
    /// SHA-256 of the certificate, hex.
    fingerprint: String,
    /// RFC 3339, if revoked.
    revoked_at: Option<String>,
    revocation_reason: Option<String>,
}

impl From<CertificateView> for Certificate {
    fn from(v: CertificateView) -> Self {
        Certificate {
            serial: v.serial,
            tenant: v.tenant,
            connection: v.connection,
            profile: v.profile,
            status: v.status,
            subject: v.subject,
            sans: v.sans,
            issuer: v.issuer,
            not_before: v.not_before,
            not_after: v.not_after,
            key_algorithm: v.key_algorithm,
            key_origin: v.key_origin,
            spki_sha256: v.spki_sha256,
            fingerprint: v.fingerprint,
            revoked_at: v.revoked_at,
            revocation_reason: v.revocation_reason,
        }
    }
}

fn certificate(record: &custos_ca::CertificateRecord) -> Certificate {
    CertificateView::new(record, time::OffsetDateTime::now_utc().unix_timestamp()).into()
}

/// A certificate to issue for a key the caller keeps.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    /// PKCS#10 request, PEM.
    csr: String,
    /// Subject alternative names, within the connection's policy.
    #[serde(default)]
    san: Vec<String>,
    /// Lifetime: `90d`, `12h`, `30m`; the connection's or the profile's default if absent.
    validity: Option<String>,
    /// `client` or `server`; the connection's if absent.
    profile: Option<String>,
}

/// A certificate just issued.
#[derive(Serialize, ToSchema)]
struct IssuedCertificate {
    serial: String,
    certificate_pem: String,
    /// The issuing CA and the CAs above it, PEM, leaf's issuer first.
    chain_pem: String,
    certificate: Certificate,
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/connections/{connection}/certificates", tag = "certificates",
    params(("tenant" = String, Path), ("connection" = String, Path)), request_body = IssueBody,
    responses((status = 201, body = IssuedCertificate), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn issue(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((tenant, connection)): Path<(String, String)>,
    Body(body): Body<IssueBody>,
) -> Result<Response, ApiError> {
    let request = IssueRequest {
        tenant,
        connection,
        profile: body.profile.as_deref().map(str::parse::<Profile>).transpose().map_err(CaError::from)?,
        sans: body.san,
        validity_secs: body.validity.as_deref().map(parse_duration).transpose()?,
        key: KeySource::Csr(body.csr.into_bytes()),
        request_key: None,
    };
    let issued = s.ca.issue_grouped(&who, request).await?;
    let chain_pem: String = issued.chain.iter().map(|c| custos_pki::certificate_pem(c)).collect();
    Ok(json(
        StatusCode::CREATED,
        &IssuedCertificate {
            serial: issued.record.serial.clone(),
            certificate_pem: custos_pki::certificate_pem(&issued.record.der),
            chain_pem,
            certificate: certificate(&issued.record),
        },
    ))
}

/// Which certificates to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CertificateQuery {
    tenant: Option<String>,
    /// With `tenant`.
    connection: Option<String>,
    /// `valid`, `revoked` or `expired`.
    status: Option<String>,
    /// Only those expiring within this long: `30d`, `12h`.
    expiring_within: Option<String>,
    /// Only those naming this subject alternative name exactly.
    san: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000; 100 if absent.
    limit: Option<i64>,
}

/// One page of a list.
#[derive(Serialize, ToSchema)]
struct CertificatePage {
    items: Vec<Certificate>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(CertificateQuery),
    responses((status = 200, body = CertificatePage), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list_certificates(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Query(q): Query<CertificateQuery>,
) -> Result<Response, ApiError> {
    let bad = ApiError::BadRequest;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad(format!("limit {limit}: between 1 and 1000")));
    }
    if q.connection.is_some() && q.tenant.is_none() {
        return Err(bad("connection needs tenant".into()));
    }
    let status = match q.status.as_deref() {
        None => None,
        Some("valid") => Some(StatusFilter::Valid),
        Some("revoked") => Some(StatusFilter::Revoked),
        Some("expired") => Some(StatusFilter::Expired),
        Some(other) => return Err(bad(format!("status {other:?}: expected valid, revoked or expired"))),
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose().map_err(bad)?;
    let filter = ListFilter {
        tenant: q.tenant,
        connection: q.connection,
        status,
        expiring_within: q.expiring_within.as_deref().map(parse_duration).transpose()?,
        san: q.san,
        after,
        limit: Some(limit + 1),
        ..ListFilter::default()
    };
    let mut records = s.ca.certificates(&who, &filter).await?;
    let more = records.len() as i64 > limit;
    records.truncate(limit as usize);
    let next_cursor = more.then(|| records.last().map(|c| encode_cursor(c.created_at, &c.serial))).flatten();
    Ok(json(StatusCode::OK, &CertificatePage { items: records.iter().map(certificate).collect(), next_cursor }))
}

/// A page position: the last item's `(created_at, serial)`, opaque to clients.
fn encode_cursor(created_at: i64, serial: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{serial}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), String> {
    let bad = || format!("cursor {cursor:?} is not one this API gave out");
    let text = URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (created, serial) = text.split_once(':').ok_or_else(bad)?;
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((created.parse().map_err(|_| bad())?, serial.to_string()))
}

/// How to answer with one certificate.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FormatQuery {
    /// `json` (default), `pem` or `der`.
    format: Option<String>,
}

fn parse_serial(text: &str) -> Result<Serial, ApiError> {
    text.parse::<Serial>().map_err(|e| ApiError::Ca(CaError::from(e)))
}

#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates",
    params(("serial" = String, Path, description = "Hex serial"), FormatQuery),
    responses((status = 200, description = "JSON, or the certificate as PEM or DER with `format`",
               content((Certificate = "application/json"), (String = "application/x-pem-file"),
                       (Vec<u8> = "application/pkix-cert"))),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_certificate(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(serial): Path<String>,
    Query(q): Query<FormatQuery>,
) -> Result<Response, ApiError> {
    let serial = parse_serial(&serial)?;
    let record = s.ca.certificate(&who, &serial).await?;
    Ok(match q.format.as_deref() {
        None | Some("json") => json(StatusCode::OK, &certificate(&record)),
        Some("pem") => ([(header::CONTENT_TYPE, "application/x-pem-file")], custos_pki::certificate_pem(&record.der))
            .into_response(),
        Some("der") => ([(header::CONTENT_TYPE, "application/pkix-cert")], record.der).into_response(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!("format {other:?}: expected json, pem or der")));
        }
    })
}

/// Why a certificate is revoked.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// RFC 5280 reason: `key-compromise`, `superseded`, `cessation-of-operation`, ...; `unspecified` if absent.
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", tag = "certificates",
    params(("serial" = String, Path)), request_body = RevokeBody,
    responses((status = 200, body = Certificate), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn revoke(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(serial): Path<String>,
    Body(body): Body<RevokeBody>,
) -> Result<Response, ApiError> {
    let serial = parse_serial(&serial)?;
    let reason = match body.reason.as_deref() {
        None => Reason::Unspecified,
        Some(r) => Reason::parse_loose(r).map_err(CaError::from)?,
    };
    let record = s.ca.revoke(&who, &serial, reason, None).await?;
    Ok(json(StatusCode::OK, &certificate(&record)))
}

/// A CA.
#[derive(Serialize, ToSchema)]
struct Issuer {
    id: String,
    name: String,
    /// `root` or `issuing`.
    role: String,
    status: String,
    fingerprint: String,
    parent: Option<String>,
    key_id: String,
    /// RFC 3339.
    not_after: String,
}

#[utoipa::path(get, path = "/api/v1/issuers", tag = "issuers",
    responses((status = 200, body = [Issuer]), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_issuers(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    let list: Vec<Issuer> =
        s.ca.issuers(&who)
            .await?
            .iter()
            .map(custos_ca::IssuerView::from)
            .map(|v| Issuer {
                id: v.id,
                name: v.name,
                role: v.role,
                status: v.status,
                fingerprint: v.fingerprint,
                parent: v.parent,
                key_id: v.key_id,
                not_after: v.not_after,
            })
            .collect();
    Ok(json(StatusCode::OK, &list))
}

#[utoipa::path(get, path = "/api/v1/issuers/{id}/certificate", tag = "issuers", params(("id" = String, Path)),
    responses((status = 200, description = "The CA certificate, PEM", content_type = "application/x-pem-file", body = String),
              (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn issuer_certificate(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let issuer = s.ca.issuer(&who, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], custos_pki::certificate_pem(&issuer.cert_der))
        .into_response())
}

/// A key custos holds (never its private part).
#[derive(Serialize, ToSchema)]
struct Key {
    id: String,
    /// `soft` or `pkcs11`.
    backend: String,
    algorithm: String,
    label: String,
    public_key_sha256: String,
    status: String,
    /// Audit log entries that used or changed it.
    uses: i64,
    location: String,
    /// RFC 3339.
    created: String,
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = [Key]), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_keys(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    let keys: Vec<Key> =
        s.ca.key_views(&who)
            .await?
            .into_iter()
            .map(|k| Key {
                id: k.id,
                backend: k.backend,
                algorithm: k.algorithm,
                label: k.label,
                public_key_sha256: k.public_key_sha256,
                status: k.status,
                uses: k.uses,
                location: k.location,
                created: k.created,
            })
            .collect();
    Ok(json(StatusCode::OK, &keys))
}

/// Uses of a key on one day, by one actor, for one action.
#[derive(Serialize, ToSchema)]
struct KeyUse {
    /// `YYYY-MM-DD`.
    day: String,
    actor: String,
    action: String,
    count: i64,
}

#[utoipa::path(get, path = "/api/v1/keys/{id}/usage", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = [KeyUse]), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn key_usage(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let uses: Vec<KeyUse> =
        s.ca.key_usage(&who, &id)
            .await?
            .into_iter()
            .map(|u| KeyUse {
                day: time(u.day * 86_400).get(..10).unwrap_or_default().to_string(),
                actor: u.actor,
                action: u.action,
                count: u.count,
            })
            .collect();
    Ok(json(StatusCode::OK, &uses))
}

/// The parsers of this module's untrusted input (see [`super::parse_untrusted`]).
pub(super) fn parse_untrusted(data: &[u8]) {
    let _ = serde_json::from_slice::<NewTenant>(data);
    let _ = serde_json::from_slice::<NewConnection>(data);
    let _ = serde_json::from_slice::<ConnectionPatch>(data);
    let _ = serde_json::from_slice::<IssueBody>(data);
    let _ = serde_json::from_slice::<RevokeBody>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_cursor(text);
        let _ = text.parse::<Serial>();
        let _ = text.parse::<Profile>();
    }
}
