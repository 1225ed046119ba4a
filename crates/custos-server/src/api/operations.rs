//! Incidents and the audit log.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custos_ca::incident::{Declaration, Scope};
use custos_ca::{CaError, Principal};
use custos_pki::Reason;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, Body, Caller, Path, Problem, Query, json, time};
use crate::AppState;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(declare, list_incidents))
        .routes(routes!(get_incident))
        .routes(routes!(execute))
        .routes(routes!(ack))
        .routes(routes!(report))
        .routes(routes!(close))
        .routes(routes!(audit_entries))
        .routes(routes!(audit_entry))
        .routes(routes!(audit_checkpoint))
}

/// An incident as the API shows it.
#[derive(Serialize, ToSchema)]
struct Incident {
    id: String,
    /// `issuer:ID`, `key:KEYID`, `cert:SERIAL` or `tenant:NAME`.
    compromised: String,
    reason: String,
    /// `declared`, `executing`, `executed` or `closed`.
    state: String,
    note: String,
    /// RFC 3339.
    declared: String,
    declared_by: String,
    /// RFC 3339, once closed.
    closed: Option<String>,
}

impl From<&custos_ca::IncidentRecord> for Incident {
    fn from(r: &custos_ca::IncidentRecord) -> Self {
        Incident {
            id: r.id.clone(),
            compromised: format!("{}:{}", r.scope_kind, r.scope_value),
            reason: r.reason.to_string(),
            state: r.state.to_string(),
            note: r.note.clone(),
            declared: time(r.declared_at),
            declared_by: r.declared_by.clone(),
            closed: r.closed_at.map(time),
        }
    }
}

/// What an execution did.
#[derive(Serialize, ToSchema)]
struct Executed {
    id: String,
    /// CAs created in place of compromised ones.
    new_issuers: Vec<String>,
    /// Certificates this run revoked.
    revoked: usize,
    /// Connections this run replaced (custodied ones switched to their standby).
    replaced: usize,
    /// Where, on the server, the replacement keys of connections whose keys custos
    /// generates were written (0600); null when none were (custodied connections need none).
    keys_file: Option<String>,
    seconds_to_revoked: f64,
    seconds_to_replaced: f64,
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/execute", tag = "incidents", params(("id" = String, Path)),
    responses((status = 200, body = Executed), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem),
              (status = 409, description = "A second admin must approve first: the problem names the approval request", body = Problem),
              (status = 422, body = Problem)))]
async fn execute(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let keys_file = s.incident_keys_dir.join(format!("{id}-replacements.jsonl"));
    // In its own task: a client that goes away does not stop an execution half-way
    // (it would resume on the next call, but the lock would wait to lapse).
    let ca = s.ca.clone();
    let run = tokio::spawn(async move { ca.execute_incident(&who, &id, &keys_file, &|_| {}).await });
    let done = run.await.map_err(|e| CaError::Inconsistent(format!("the execution stopped: {e}")))??;
    Ok(json(
        StatusCode::OK,
        &Executed {
            id: done.id,
            new_issuers: done.new_issuers,
            revoked: done.revoked,
            replaced: done.replaced,
            keys_file: done.keys_file.map(|p| p.display().to_string()),
            seconds_to_revoked: done.seconds_to_revoked,
            seconds_to_replaced: done.seconds_to_replaced,
        },
    ))
}

/// Where one affected connection stands.
#[derive(Serialize, ToSchema)]
struct AffectedConnection {
    tenant: String,
    connection: String,
    /// `pending`, `replacement-issued`, `notified`, `acknowledged`, `old-certificate-retired`.
    state: String,
    /// Serial of the replacement, once issued.
    replacement: Option<String>,
    /// RFC 3339 of the last change.
    updated: String,
}

impl From<&custos_ca::IncidentConnection> for AffectedConnection {
    fn from(c: &custos_ca::IncidentConnection) -> Self {
        AffectedConnection {
            tenant: c.tenant.clone(),
            connection: c.connection.clone(),
            state: c.state.to_string(),
            replacement: c.replacement.clone(),
            updated: time(c.updated_at),
        }
    }
}

/// An incident and the connections the caller may see in it.
#[derive(Serialize, ToSchema)]
struct IncidentStatus {
    incident: Incident,
    connections: Vec<AffectedConnection>,
}

/// A declaration: what was compromised, and why.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewIncident {
    /// `issuer:ID`, `key:KEYID`, `cert:SERIAL` or `tenant:NAME`.
    compromised: String,
    /// RFC 5280 reason for the revocations; `key-compromise` if absent.
    reason: Option<String>,
    note: Option<String>,
    /// RFC 3339: when the compromise began (the invalidity date of the revocations).
    since: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/incidents", tag = "incidents", request_body = NewIncident,
    responses((status = 201, body = IncidentStatus), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn declare(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Body(body): Body<NewIncident>,
) -> Result<Response, ApiError> {
    let d = Declaration {
        scope: body.compromised.parse::<Scope>()?,
        reason: match body.reason.as_deref() {
            None => Reason::KeyCompromise,
            Some(r) => Reason::parse_loose(r).map_err(CaError::from)?,
        },
        since: body
            .since
            .as_deref()
            .map(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| ApiError::BadRequest(format!("since {t:?} is not RFC 3339 ({e})")))
            })
            .transpose()?,
        note: body.note.unwrap_or_default(),
    };
    let view = s.ca.declare_incident(&who, &d).await?;
    Ok(json(StatusCode::CREATED, &status(&s, &who, &view.id).await?))
}

/// Every incident, oldest first.
#[derive(Serialize, ToSchema)]
struct IncidentList {
    items: Vec<Incident>,
}

#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    responses((status = 200, body = IncidentList), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_incidents(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    let items = s.ca.incidents(&who).await?.iter().map(Incident::from).collect();
    Ok(json(StatusCode::OK, &IncidentList { items }))
}

async fn status(s: &AppState, who: &Principal, id: &str) -> Result<IncidentStatus, ApiError> {
    let st = s.ca.incident_status(who, id).await?;
    Ok(IncidentStatus {
        incident: Incident::from(&st.incident),
        connections: st.connections.iter().map(AffectedConnection::from).collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", params(("id" = String, Path)),
    responses((status = 200, body = IncidentStatus), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
async fn get_incident(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &status(&s, &who, &id).await?))
}

/// Which connection's replacement is in place.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// The caller's own tenant if absent.
    tenant: Option<String>,
    /// The token's connection if absent and the token names one.
    connection: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents", params(("id" = String, Path)),
    request_body = AckBody,
    responses((status = 200, body = AffectedConnection), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn ack(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(body): Body<AckBody>,
) -> Result<Response, ApiError> {
    let (own_tenant, own_connection) = match &who {
        Principal::Tenant { tenant, connection, .. } => (Some(tenant.clone()), connection.clone()),
        _ => (None, None),
    };
    let missing = |what: &str| ApiError::BadRequest(format!("the body needs \"{what}\""));
    let tenant = body.tenant.or(own_tenant).ok_or_else(|| missing("tenant"))?;
    let connection = body.connection.or(own_connection).ok_or_else(|| missing("connection"))?;
    let done = s.ca.ack_incident(&who, &id, &tenant, &connection).await?;
    Ok(json(StatusCode::OK, &AffectedConnection::from(&done)))
}

/// What an incident did, when.
#[derive(Serialize, ToSchema)]
struct Report {
    incident: Incident,
    /// Oldest first.
    timeline: Vec<ReportEvent>,
    counts: std::collections::BTreeMap<String, usize>,
    /// Seconds.
    durations: std::collections::BTreeMap<String, i64>,
    warnings: Vec<String>,
}

/// One line of the timeline.
#[derive(Serialize, ToSchema)]
struct ReportEvent {
    /// RFC 3339.
    time: String,
    event: String,
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}/report", tag = "incidents", params(("id" = String, Path)),
    responses((status = 200, body = Report), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
async fn report(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = s.ca.incident_report(&who, &id).await?;
    Ok(json(
        StatusCode::OK,
        &Report {
            incident: Incident::from(&r.incident),
            timeline: r.timeline.into_iter().map(|e| ReportEvent { time: e.time, event: e.event }).collect(),
            counts: r.counts,
            durations: r.durations,
            warnings: r.warnings,
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/incidents/{id}/close", tag = "incidents", params(("id" = String, Path)),
    responses((status = 200, body = Incident), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn close(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &Incident::from(&s.ca.close_incident(&who, &id).await?)))
}

/// An audit log entry, with its details (the public tiles hold only a commitment to them).
#[derive(Serialize, ToSchema)]
struct AuditEntry {
    index: u64,
    /// RFC 3339.
    time: String,
    actor: String,
    action: String,
    object: String,
    /// The key it used, if any.
    key: Option<String>,
    /// What it did, as JSON text.
    details: String,
    /// The salt of the commitment the public entry bundle holds, hex: SHA-256
    /// over it, the actor, the object and the details gives that commitment
    /// (docs/audit.md). Absent for entries written in the clear form.
    salt: Option<String>,
}

impl From<&custos_ca::AuditEntry> for AuditEntry {
    fn from(e: &custos_ca::AuditEntry) -> Self {
        AuditEntry {
            index: e.index,
            time: time(e.record.time),
            actor: e.record.actor.clone(),
            action: e.record.action.clone(),
            object: e.record.object.clone(),
            key: e.record.key.clone(),
            details: e.record.details.clone(),
            salt: e.salt.as_ref().map(hex::encode),
        }
    }
}

/// Which entries to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// An action (`certificate.revoke`), its dotted prefix (`certificate`) or suffix (`revoke`), or `sign`.
    action: Option<String>,
    /// A key id.
    key: Option<String>,
    /// Entries from this index on, oldest first (`next_cursor` of the previous page); the newest if absent.
    cursor: Option<u64>,
    /// 1 to 1000; 100 if absent.
    limit: Option<usize>,
}

/// One page of entries.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page (oldest first); absent when there is none.
    next_cursor: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn audit_entries(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit {limit}: between 1 and 1000")));
    }
    let filter = custos_ca::AuditFilter { action: q.action, key: q.key, from: q.cursor, limit, ..Default::default() };
    let entries = s.ca.audit_tail(&who, &filter).await?;
    // Paging goes oldest first from the cursor; without one, the newest page.
    let next_cursor = match q.cursor {
        Some(_) if entries.len() == limit => entries.last().map(|e| e.index + 1),
        _ => None,
    };
    Ok(json(StatusCode::OK, &AuditPage { items: entries.iter().map(AuditEntry::from).collect(), next_cursor }))
}

/// An entry with the proof that the log holds it.
#[derive(Serialize, ToSchema)]
struct ProvedEntry {
    index: u64,
    /// The tree size the proof is for.
    size: u64,
    /// Hex.
    leaf_hash: String,
    /// Hex, leaf to root.
    path: Vec<String>,
    /// Hex.
    root: String,
    /// The signed checkpoint of that size (C2SP signed note).
    checkpoint: String,
    /// The entry as the log's public tiles hold it.
    #[schema(value_type = Object)]
    public_entry: serde_json::Value,
    /// The entry with its details.
    entry: AuditEntry,
}

#[utoipa::path(get, path = "/api/v1/audit/entries/{index}", tag = "audit", params(("index" = u64, Path)),
    responses((status = 200, body = ProvedEntry), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn audit_entry(
    State(s): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(index): Path<u64>,
) -> Result<Response, ApiError> {
    let proof = s.ca.inclusion_proof(&who, index).await?;
    let filter = custos_ca::AuditFilter { from: Some(index), limit: 1, ..Default::default() };
    let entry =
        s.ca.audit_tail(&who, &filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Ca(CaError::Inconsistent(format!("entry {index} is proved but not found"))))?;
    Ok(json(
        StatusCode::OK,
        &ProvedEntry {
            index,
            size: proof.size,
            leaf_hash: proof.leaf_hash,
            path: proof.path,
            root: proof.root,
            checkpoint: proof.checkpoint,
            public_entry: proof.entry,
            entry: AuditEntry::from(&entry),
        },
    ))
}

/// The latest signed checkpoint.
#[derive(Serialize, ToSchema)]
struct Checkpoint {
    size: u64,
    /// The C2SP signed note.
    note: String,
    /// RFC 3339.
    signed: String,
}

#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = Checkpoint), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
async fn audit_checkpoint(State(s): State<Arc<AppState>>, Caller(who): Caller) -> Result<Response, ApiError> {
    custos_ca::authorization::authorize(&who, custos_ca::authorization::Operation::ReadAudit)?;
    match s.ca.latest_checkpoint().await? {
        Some(cp) => Ok(json(StatusCode::OK, &Checkpoint { size: cp.size, note: cp.note, signed: time(cp.time) })),
        None => {
            Ok(super::problem(StatusCode::NOT_FOUND, "no checkpoint", "the audit log has no signed checkpoint yet"))
        }
    }
}

/// The parsers of this module's untrusted input (see [`super::parse_untrusted`]).
pub(super) fn parse_untrusted(data: &[u8]) {
    let _ = serde_json::from_slice::<NewIncident>(data);
    let _ = serde_json::from_slice::<AckBody>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Scope>();
    }
}
