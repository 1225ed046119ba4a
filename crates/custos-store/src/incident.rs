//! Incidents, tenant webhooks and the notification outbox in SQL.
//!
//! Every transition an incident's execution makes is one transaction with its
//! audit entries, so a killed `execute` resumes from exactly what committed:
//! a connection's replacement and its move to `replacement-issued` (and its
//! notification in the outbox) commit together or not at all.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::sql::{Engine, col, insert_certificate_rows, json_list, parse_list, values_clause};
use crate::{AuditRecord, CertificateRecord, Result, StoreError, audit};

/// An incident as declared, and how far its execution got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentRecord {
    /// `INC-0001`, ...
    pub id: String,
    /// `issuer`, `key`, `cert` or `tenant`.
    pub scope_kind: String,
    /// The issuer id, key id, serial or tenant name.
    pub scope_value: String,
    /// RFC 5280 reason name for the revocations.
    pub reason: String,
    /// Unix seconds: since when the compromise is assumed (the invalidity date).
    pub since: Option<i64>,
    /// Free text from the declaration.
    pub note: String,
    /// `declared`, `executing`, `executed` or `closed`.
    pub state: String,
    /// Issuers execute created in place of compromised ones.
    pub new_issuers: Vec<String>,
    /// Unix seconds.
    pub declared_at: i64,
    /// Who declared it.
    pub declared_by: String,
    /// When execution started (first run).
    pub executed_at: Option<i64>,
    /// When the last affected certificate was revoked.
    pub revoked_at: Option<i64>,
    /// When the last replacement was issued.
    pub replaced_at: Option<i64>,
    /// When it was closed.
    pub closed_at: Option<i64>,
}

/// One certificate in an incident's blast radius.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentCertificate {
    /// Serial, hex.
    pub serial: String,
    /// Its tenant.
    pub tenant: String,
    /// Its connection.
    pub connection: String,
}

/// Where one affected connection stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentConnection {
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// `pending`, `replacement-issued`, `notified`, `acknowledged`, `old-certificate-retired`.
    pub state: String,
    /// Serial of the replacement, once issued.
    pub replacement: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// When the replacement was issued.
    pub issued_at: Option<i64>,
    /// When the tenant's webhook took the notification.
    pub notified_at: Option<i64>,
    /// When the tenant acknowledged.
    pub acknowledged_at: Option<i64>,
    /// When the old certificate was retired.
    pub retired_at: Option<i64>,
}

/// A replacement issued for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// The new certificate's serial.
    pub serial: String,
}

/// A tenant's webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Tenant.
    pub tenant: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// HMAC-SHA256 key, hex.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A notification waiting for, or past, delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// Sequence number.
    pub id: i64,
    /// The incident it reports on.
    pub incident: String,
    /// The tenant it goes to.
    pub tenant: String,
    /// The connections it covers.
    pub connections: Vec<String>,
    /// Where it goes.
    pub url: String,
    /// The JSON body.
    #[serde(skip)]
    pub body: String,
    /// `pending` or `delivered`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub delivered_at: Option<i64>,
}

/// Serial, tenant and connection of a certificate row.
pub(crate) fn owner(r: &AnyRow) -> Result<IncidentCertificate> {
    Ok(IncidentCertificate { serial: col(r, "serial")?, tenant: col(r, "tenant")?, connection: col(r, "connection")? })
}

pub(crate) fn incident(r: &AnyRow) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: col(r, "id")?,
        scope_kind: col(r, "scope_kind")?,
        scope_value: col(r, "scope_value")?,
        reason: col(r, "reason")?,
        since: col(r, "since")?,
        note: col(r, "note")?,
        state: col(r, "state")?,
        new_issuers: parse_list(&col::<String>(r, "new_issuers")?)?,
        declared_at: col(r, "declared_at")?,
        declared_by: col(r, "declared_by")?,
        executed_at: col(r, "executed_at")?,
        revoked_at: col(r, "revoked_at")?,
        replaced_at: col(r, "replaced_at")?,
        closed_at: col(r, "closed_at")?,
    })
}

pub(crate) fn connection(r: &AnyRow) -> Result<IncidentConnection> {
    Ok(IncidentConnection {
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        state: col(r, "state")?,
        replacement: col(r, "replacement")?,
        updated_at: col(r, "updated_at")?,
        issued_at: col(r, "issued_at")?,
        notified_at: col(r, "notified_at")?,
        acknowledged_at: col(r, "acknowledged_at")?,
        retired_at: col(r, "retired_at")?,
    })
}

pub(crate) fn outbox(r: &AnyRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: col(r, "id")?,
        incident: col(r, "incident")?,
        tenant: col(r, "tenant")?,
        connections: parse_list(&col::<String>(r, "connections")?)?,
        url: col(r, "url")?,
        body: col(r, "body")?,
        state: col(r, "state")?,
        attempts: col(r, "attempts")?,
        next_attempt_at: col(r, "next_attempt_at")?,
        last_error: col(r, "last_error")?,
        created_at: col(r, "created_at")?,
        delivered_at: col(r, "delivered_at")?,
    })
}

/// Inserts blast-radius rows (and a `pending` row per new connection), skipping ones already recorded.
pub(crate) async fn add_certificates(
    engine: Engine,
    tx: &mut Transaction<'static, Any>,
    incident: &str,
    certificates: &[IncidentCertificate],
    now: i64,
) -> Result<()> {
    for rows in certificates.chunks(200) {
        let sql = format!(
            "INSERT INTO incident_certificates (incident, serial, tenant, connection) VALUES {} ON CONFLICT DO NOTHING",
            values_clause(engine, rows.len(), 4)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for c in rows {
            q = q.bind(incident).bind(&c.serial).bind(&c.tenant).bind(&c.connection);
        }
        q.execute(&mut **tx).await.map_err(StoreError::db("record the blast radius"))?;
        let sql = format!(
            "INSERT INTO incident_connections (incident, tenant, connection, state, updated_at) VALUES {} ON CONFLICT DO NOTHING",
            values_clause(engine, rows.len(), 5)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for c in rows {
            q = q.bind(incident).bind(&c.tenant).bind(&c.connection).bind("pending").bind(now);
        }
        q.execute(&mut **tx).await.map_err(StoreError::db("record affected connections"))?;
    }
    Ok(())
}

/// Writes an incident's mutable fields.
pub(crate) async fn update(tx: &mut Transaction<'static, Any>, r: &IncidentRecord) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE incidents SET state = $1, new_issuers = $2, executed_at = $3, revoked_at = $4, replaced_at = $5, \
         closed_at = $6 WHERE id = $7",
    )
    .bind(&r.state)
    .bind(json_list(&r.new_issuers))
    .bind(r.executed_at)
    .bind(r.revoked_at)
    .bind(r.replaced_at)
    .bind(r.closed_at)
    .bind(&r.id)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("update an incident"))?;
    if updated.rows_affected() != 1 {
        return Err(StoreError::NotFound { what: format!("incident {}", r.id) });
    }
    Ok(())
}

/// Records replacements: the certificates, each connection's move from
/// `pending` to `replacement-issued`, the notifications and the audit
/// entries, in one transaction. A connection that is no longer `pending`
/// (another run got there first) rolls the whole batch back.
pub(crate) async fn record_replacements(
    engine: Engine,
    mut tx: Transaction<'static, Any>,
    incident: &str,
    certificates: &[CertificateRecord],
    replacements: &[Replacement],
    messages: &[OutboxMessage],
    audit_records: &[AuditRecord],
) -> Result<()> {
    let now = crate::sql::unix_now();
    insert_certificate_rows(engine, &mut tx, certificates).await?;
    for r in replacements {
        let updated = sqlx::query(
            "UPDATE incident_connections SET state = 'replacement-issued', replacement = $1, issued_at = $2, \
             updated_at = $2 WHERE incident = $3 AND tenant = $4 AND connection = $5 AND state = 'pending'",
        )
        .bind(&r.serial)
        .bind(now)
        .bind(incident)
        .bind(&r.tenant)
        .bind(&r.connection)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("record a replacement"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!("connection {}/{} of {incident} is not pending any more", r.tenant, r.connection),
            });
        }
    }
    for m in messages {
        sqlx::query(
            "INSERT INTO outbox (incident, tenant, connections, url, body, state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
        )
        .bind(&m.incident)
        .bind(&m.tenant)
        .bind(json_list(&m.connections))
        .bind(&m.url)
        .bind(&m.body)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("queue a notification"))?;
    }
    audit::append(engine, &mut tx, audit_records).await?;
    tx.commit().await.map_err(StoreError::db("commit replacements"))
}

/// Moves connections in one of `from` to `to`, stamping `stamp`; returns how many moved.
pub(crate) async fn move_connections(
    tx: &mut Transaction<'static, Any>,
    incident: &str,
    connections: &[(String, String)],
    from: &[&str],
    to: &str,
    now: i64,
) -> Result<u64> {
    let stamp = match to {
        "notified" => "notified_at",
        "acknowledged" => "acknowledged_at",
        "old-certificate-retired" => "retired_at",
        other => return Err(StoreError::Invalid(format!("no transition to {other:?}"))),
    };
    let from_list = from.iter().map(|s| format!("'{}'", s.replace('\'', ""))).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "UPDATE incident_connections SET state = $1, {stamp} = $2, updated_at = $2 \
         WHERE incident = $3 AND tenant = $4 AND connection = $5 AND state IN ({from_list})"
    );
    let mut moved = 0;
    for (tenant, connection) in connections {
        let r = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(to)
            .bind(now)
            .bind(incident)
            .bind(tenant)
            .bind(connection)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db("move a connection"))?;
        moved += r.rows_affected();
    }
    Ok(moved)
}
