//! Rows to values and values to rows: column decoding, the row decoders of
//! every record, and the multi-row inserts. A leaf below the aggregates.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::dialect::*;
use crate::*;

/// One column of a row, or a `Corrupt` error naming it.
pub(crate) fn col<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(row: &'r AnyRow, name: &str) -> Result<T> {
    row.try_get(name).map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A list column's text: a JSON array.
/// A column holding one of a typed kind's names (a status, a role, a state), parsed.
pub(crate) fn named<T: std::str::FromStr<Err = custos_types::UnknownName>>(row: &AnyRow, name: &str) -> Result<T> {
    col::<String>(row, name)?
        .parse()
        .map_err(|e: custos_types::UnknownName| StoreError::Corrupt(format!("{name}: {e}")))
}

/// Like [`named`], for a column that may be NULL.
pub(crate) fn named_opt<T: std::str::FromStr<Err = custos_types::UnknownName>>(
    row: &AnyRow,
    name: &str,
) -> Result<Option<T>> {
    col::<Option<String>>(row, name)?
        .map(|v| v.parse().map_err(|e: custos_types::UnknownName| StoreError::Corrupt(format!("{name}: {e}"))))
        .transpose()
}

pub(crate) fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// A list column read back.
pub(crate) fn parse_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}

/// Runs a query keyed by one text value and decodes at most one row.
pub(crate) async fn fetch_one_by<T>(
    pool: &AnyPool,
    sql: &'static str,
    key: &str,
    operation: &'static str,
    decode: fn(&AnyRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = sqlx::query(sql).bind(key).fetch_optional(pool).await.map_err(StoreError::db(operation))?;
    row.as_ref().map(decode).transpose()
}

/// Runs a query without parameters and decodes every row.
pub(crate) async fn fetch_all(pool: &AnyPool, sql: &'static str, operation: &'static str) -> Result<Vec<AnyRow>> {
    sqlx::query(sql).fetch_all(pool).await.map_err(StoreError::db(operation))
}

pub(crate) fn connection_from(row: &AnyRow) -> Result<ConnectionRecord> {
    Ok(ConnectionRecord {
        tenant: col(row, "tenant")?,
        name: col(row, "name")?,
        profile: named(row, "profile")?,
        allowed_sans: parse_list(&col::<String>(row, "allowed_sans")?)?,
        key_algorithm: col(row, "key_algorithm")?,
        validity_days: col(row, "validity_days")?,
        created_at: col(row, "created_at")?,
    })
}

pub(crate) fn key_from(row: &AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: col(row, "id")?,
        backend: col(row, "backend")?,
        algorithm: col(row, "algorithm")?,
        label: col(row, "label")?,
        public_key: col(row, "public_key")?,
        reference: col(row, "reference")?,
        status: named(row, "status")?,
        created_at: col(row, "created_at")?,
    })
}

pub(crate) fn issuer_from(row: &AnyRow) -> Result<IssuerRecord> {
    Ok(IssuerRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        role: named(row, "role")?,
        parent: col(row, "parent")?,
        key_id: col(row, "key_id")?,
        cert_der: col(row, "cert_der")?,
        fingerprint: col(row, "fingerprint")?,
        not_after: col(row, "not_after")?,
        status: named(row, "status")?,
        crl_number: col(row, "crl_number")?,
        created_at: col(row, "created_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

pub(crate) fn certificate_from(row: &AnyRow) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        serial: col(row, "serial")?,
        issuer: col(row, "issuer")?,
        tenant: col(row, "tenant")?,
        connection: col(row, "connection")?,
        profile: named(row, "profile")?,
        subject: col(row, "subject")?,
        sans: parse_list(&col::<String>(row, "sans")?)?,
        key_algorithm: col(row, "key_algorithm")?,
        key_origin: col(row, "key_origin")?,
        spki_sha256: col(row, "spki_sha256")?,
        not_before: col(row, "not_before")?,
        not_after: col(row, "not_after")?,
        der: col(row, "der")?,
        status: named(row, "status")?,
        revoked_at: col(row, "revoked_at")?,
        revocation_reason: named_opt(row, "revocation_reason")?,
        invalidity_date: col(row, "invalidity_date")?,
        replaced_by: col(row, "replaced_by")?,
        crl_partition: col(row, "crl_partition")?,
        created_at: col(row, "created_at")?,
    })
}

/// Revoked entries packed into one row when reading a CRL's contents.
pub(crate) const REVOKED_PER_ROW: i64 = 10_000;

/// Parses `serial revoked_at reason invalidity` as packed by `revoked`.
pub(crate) fn unpack_revoked(entry: &str) -> Result<RevokedRow> {
    let bad = || StoreError::Corrupt(format!("revoked entry {entry:?}"));
    let mut parts = entry.split(' ');
    let (Some(serial), Some(at), Some(reason), Some(invalidity), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(RevokedRow {
        serial: serial.to_string(),
        revoked_at: at.parse().map_err(|_| bad())?,
        reason: if reason == "-" { None } else { Some(reason.parse().map_err(|_| bad())?) },
        invalidity_date: if invalidity == "-" { None } else { Some(invalidity.parse().map_err(|_| bad())?) },
    })
}

pub(crate) fn checkpoint(r: &AnyRow) -> Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        size: col::<i64>(r, "size")? as u64,
        time: col(r, "time")?,
        root: col(r, "root")?,
        note: col(r, "note")?,
    })
}

/// Rows per multi-row INSERT: one statement instead of a hundred round trips
/// to the driver, well under SQLite's 32766 bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 100;
pub(crate) const CERTIFICATE_COLUMN_COUNT: usize = 20;

pub(crate) const CERTIFICATE_COLUMNS: &str = "serial, issuer, tenant, connection, profile, subject, sans, key_algorithm, key_origin, \
     spki_sha256, not_before, not_after, der, status, revoked_at, revocation_reason, invalidity_date, replaced_by, crl_partition, created_at";

pub(crate) async fn insert_key(tx: &mut Transaction<'static, Any>, key: &KeyRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (id, backend, algorithm, label, public_key, reference, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(&key.backend)
    .bind(&key.algorithm)
    .bind(&key.label)
    .bind(&key.public_key)
    .bind(&key.reference)
    .bind(key.status.as_str())
    .bind(key.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Duplicate { what: format!("key {}", key.id) },
        false => StoreError::Database { operation: "store a key", source: e },
    })?;
    Ok(())
}

/// Inserts one issuer inside `tx`.
pub(crate) async fn insert_issuer(tx: &mut Transaction<'static, Any>, issuer: &IssuerRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO issuers (id, name, role, parent, key_id, cert_der, fingerprint, not_after, status, crl_number, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&issuer.id)
    .bind(&issuer.name)
    .bind(issuer.role.as_str())
    .bind(&issuer.parent)
    .bind(&issuer.key_id)
    .bind(&issuer.cert_der)
    .bind(&issuer.fingerprint)
    .bind(issuer.not_after)
    .bind(issuer.status.as_str())
    .bind(issuer.crl_number)
    .bind(issuer.created_at)
    .bind(issuer.revoked_at)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("store an issuer"))?;
    Ok(())
}

/// Serial, tenant and connection of a certificate row.
pub(crate) fn owner_from(r: &AnyRow) -> Result<IncidentCertificate> {
    Ok(IncidentCertificate { serial: col(r, "serial")?, tenant: col(r, "tenant")?, connection: col(r, "connection")? })
}

pub(crate) fn incident_from(r: &AnyRow) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: col(r, "id")?,
        scope_kind: col(r, "scope_kind")?,
        scope_value: col(r, "scope_value")?,
        reason: named(r, "reason")?,
        since: col(r, "since")?,
        note: col(r, "note")?,
        state: named(r, "state")?,
        new_issuers: parse_list(&col::<String>(r, "new_issuers")?)?,
        declared_at: col(r, "declared_at")?,
        declared_by: col(r, "declared_by")?,
        executed_at: col(r, "executed_at")?,
        revoked_at: col(r, "revoked_at")?,
        replaced_at: col(r, "replaced_at")?,
        closed_at: col(r, "closed_at")?,
    })
}

pub(crate) fn incident_connection_from(r: &AnyRow) -> Result<IncidentConnection> {
    Ok(IncidentConnection {
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        state: named(r, "state")?,
        replacement: col(r, "replacement")?,
        updated_at: col(r, "updated_at")?,
        issued_at: col(r, "issued_at")?,
        notified_at: col(r, "notified_at")?,
        acknowledged_at: col(r, "acknowledged_at")?,
        retired_at: col(r, "retired_at")?,
    })
}

pub(crate) fn outbox_from(r: &AnyRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: col(r, "id")?,
        incident: col(r, "incident")?,
        tenant: col(r, "tenant")?,
        connections: parse_list(&col::<String>(r, "connections")?)?,
        url: col(r, "url")?,
        body: col(r, "body")?,
        state: named(r, "state")?,
        attempts: col(r, "attempts")?,
        next_attempt_at: col(r, "next_attempt_at")?,
        last_error: col(r, "last_error")?,
        created_at: col(r, "created_at")?,
        delivered_at: col(r, "delivered_at")?,
    })
}

/// A blocked key row.
pub(crate) fn blocked_from(row: &AnyRow) -> Result<BlockedKey> {
    Ok(BlockedKey {
        spki_sha256: col(row, "spki_sha256")?,
        reason: col(row, "reason")?,
        source: col(row, "source")?,
        created_at: col(row, "created_at")?,
    })
}

/// Blocks keys inside `tx`, a hundred rows per statement (a revocation of a
/// whole connection blocks thousands); one already blocked keeps its first
/// reason and source.
pub(crate) async fn insert_blocked(
    engine: Engine,
    tx: &mut Transaction<'static, Any>,
    keys: &[BlockedKey],
) -> Result<()> {
    for chunk in keys.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO blocked_keys (spki_sha256, reason, source, created_at) VALUES {} \
             ON CONFLICT (spki_sha256) DO NOTHING",
            values_clause(engine, chunk.len(), 4)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for k in chunk {
            q = q.bind(&k.spki_sha256).bind(&k.reason).bind(&k.source).bind(k.created_at);
        }
        q.execute(&mut **tx).await.map_err(StoreError::db("block keys"))?;
    }
    Ok(())
}
