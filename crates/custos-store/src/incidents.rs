//! Incidents: blast radius, execution lock, re-keying, replacements, per-connection state. The SQL implementation of [`crate::IncidentStore`].

use async_trait::async_trait;
use custos_types::ConnectionState;
use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl IncidentStore for SqlStore {
    async fn add_incident(
        &self,
        r: &IncidentRecord,
        certificates: &[IncidentCertificate],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO incidents (id, scope_kind, scope_value, reason, since, note, state, new_issuers, declared_at, declared_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, '[]', $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.scope_kind)
        .bind(&r.scope_value)
        .bind(r.reason.as_str())
        .bind(r.since)
        .bind(&r.note)
        .bind(r.state.as_str())
        .bind(r.declared_at)
        .bind(&r.declared_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_unique_violation(&e) {
            true => StoreError::Duplicate { what: format!("incident {}", r.id) },
            false => StoreError::Database { operation: "declare an incident", source: e },
        })?;
        crate::incidents::add_certificates(self.engine, &mut tx, &r.id, certificates, r.declared_at).await?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit an incident"))
    }

    async fn add_incident_certificates(
        &self,
        id: &str,
        certificates: &[IncidentCertificate],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        crate::incidents::add_certificates(self.engine, &mut tx, id, certificates, unix_now()).await?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit the blast radius"))
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM incidents WHERE id = $1", id, "read an incident", incident_from).await
    }

    async fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM incidents ORDER BY declared_at, id", "read incidents").await?;
        rows.iter().map(incident_from).collect()
    }

    async fn incident_certificates(&self, id: &str) -> Result<Vec<IncidentCertificate>> {
        let rows = sqlx::query("SELECT serial, tenant, connection FROM incident_certificates WHERE incident = $1 ORDER BY tenant, connection, serial")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read a blast radius"))?;
        rows.iter().map(owner_from).collect()
    }

    async fn incident_connections(&self, id: &str) -> Result<Vec<IncidentConnection>> {
        let rows = sqlx::query("SELECT * FROM incident_connections WHERE incident = $1 ORDER BY tenant, connection")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read affected connections"))?;
        rows.iter().map(incident_connection_from).collect()
    }

    async fn incident_connection(
        &self,
        id: &str,
        tenant: &str,
        connection: &str,
    ) -> Result<Option<IncidentConnection>> {
        let row =
            sqlx::query("SELECT * FROM incident_connections WHERE incident = $1 AND tenant = $2 AND connection = $3")
                .bind(id)
                .bind(tenant)
                .bind(connection)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read an affected connection"))?;
        row.as_ref().map(incident_connection_from).transpose()
    }

    async fn certificate_incidents(&self, serial: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT incident FROM incident_certificates WHERE serial = $1 ORDER BY incident")
            .bind(serial)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("find a certificate's incidents"))
    }

    async fn lock_incident(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
        stale: Option<&str>,
    ) -> Result<Option<String>> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE incidents SET lock_owner = $1, lock_until = $2 WHERE id = $3 AND \
             (lock_owner IS NULL OR lock_owner = $1 OR lock_until < $4 OR lock_owner = $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .bind(stale.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("lock an incident"))?;
        let holder = if updated.rows_affected() == 1 {
            None
        } else {
            let holder: Option<Option<String>> = sqlx::query_scalar("SELECT lock_owner FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("read an incident lock"))?;
            match holder {
                None => return Err(StoreError::NotFound { what: format!("incident {id}") }),
                Some(h) => Some(h.unwrap_or_default()),
            }
        };
        tx.commit().await.map_err(StoreError::db("commit an incident lock"))?;
        Ok(holder)
    }

    async fn unlock_incident(&self, id: &str, owner: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE incidents SET lock_owner = NULL, lock_until = NULL WHERE id = $1 AND lock_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("unlock an incident"))?;
        tx.commit().await.map_err(StoreError::db("commit an incident unlock"))
    }

    async fn update_incident(&self, r: &IncidentRecord, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        crate::incidents::update(&mut tx, r).await?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit an incident"))
    }

    async fn rekey(
        &self,
        r: &IncidentRecord,
        keys: &[KeyRecord],
        issuers: &[IssuerRecord],
        compromised: &[(String, String)],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let now = unix_now();
        for key in keys {
            insert_key(&mut tx, key).await?;
        }
        for issuer in issuers {
            insert_issuer(&mut tx, issuer).await?;
        }
        for (id, serial) in compromised {
            // A compromised CA's certificate counts as revoked now: its
            // parent's CRL and OCSP say so, and serving nodes learn it from the feed.
            sqlx::query("UPDATE issuers SET status = 'compromised', revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("mark a CA compromised"))?;
            sqlx::query("UPDATE keys SET status = 'compromised' WHERE id = (SELECT key_id FROM issuers WHERE id = $1)")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("mark a CA key compromised"))?;
            sqlx::query(
                "INSERT INTO revocations (serial, issuer, crl_partition, time) \
                 SELECT $1, parent, 0, $2 FROM issuers WHERE id = $3 AND parent IS NOT NULL",
            )
            .bind(serial)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("record a CA revocation"))?;
        }
        crate::incidents::update(&mut tx, r).await?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit the new CAs"))
    }

    async fn record_replacements(
        &self,
        id: &str,
        certificates: &[CertificateRecord],
        replacements: &[Replacement],
        transition: &Transition,
        messages: &[OutboxMessage],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let tx = self.write().await?;
        record_replacements(self, tx, id, certificates, replacements, transition, messages, audit_records).await
    }

    async fn move_connections(
        &self,
        id: &str,
        connections: &[(String, String)],
        transition: &Transition,
        audit_records: &[AuditRecord],
    ) -> Result<u64> {
        let mut tx = self.write().await?;
        let moved = move_connections(&mut tx, id, connections, transition, unix_now()).await?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a connection state"))?;
        Ok(moved)
    }
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
            q = q.bind(incident).bind(&c.tenant).bind(&c.connection).bind(ConnectionState::Pending.as_str()).bind(now);
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
    .bind(r.state.as_str())
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

/// Records replacements: the certificates, each connection's move by
/// `transition` with its replacement serial, the notifications and the audit
/// entries, in one transaction. A connection not in a `from` state (another
/// run got there first) rolls the whole batch back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_replacements(
    store: &SqlStore,
    mut tx: Transaction<'static, Any>,
    incident: &str,
    certificates: &[CertificateRecord],
    replacements: &[Replacement],
    transition: &Transition,
    messages: &[OutboxMessage],
    audit_records: &[AuditRecord],
) -> Result<()> {
    crate::certificates::insert_certificates_logged(store, &mut tx, certificates, audit_records).await?;
    apply_replacements(&mut tx, incident, replacements, transition).await?;
    queue_messages(&mut tx, messages).await?;
    tx.commit().await.map_err(StoreError::db("commit replacements"))
}

/// Inside `tx`: moves each replaced connection by `transition` with its
/// replacement serial. A connection not in a `from` state is [`StoreError::Conflict`].
pub(crate) async fn apply_replacements(
    tx: &mut Transaction<'static, Any>,
    incident: &str,
    replacements: &[Replacement],
    transition: &Transition,
) -> Result<()> {
    let now = unix_now();
    let sql = format!(
        "UPDATE incident_connections SET state = $1, replacement = $2, {} = $3, updated_at = $3 \
         WHERE incident = $4 AND tenant = $5 AND connection = $6 AND state IN ({})",
        stamp_column(transition.to)?,
        numbered(7, transition.from.len())
    );
    for r in replacements {
        let mut q = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(transition.to.as_str())
            .bind(&r.serial)
            .bind(now)
            .bind(incident)
            .bind(&r.tenant)
            .bind(&r.connection);
        for from in transition.from {
            q = q.bind(from.as_str());
        }
        let updated = q.execute(&mut **tx).await.map_err(StoreError::db("record a replacement"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!(
                    "connection {}/{} of {incident} is not {} any more",
                    r.tenant,
                    r.connection,
                    transition.from.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
                ),
            });
        }
    }
    Ok(())
}

/// Inside `tx`: queues webhook messages.
pub(crate) async fn queue_messages(tx: &mut Transaction<'static, Any>, messages: &[OutboxMessage]) -> Result<()> {
    let now = unix_now();
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
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db("queue a notification"))?;
    }
    Ok(())
}

/// Moves connections in one of `transition.from` to `transition.to`,
/// stamping the time the target state records; returns how many moved.
pub(crate) async fn move_connections(
    tx: &mut Transaction<'static, Any>,
    incident: &str,
    connections: &[(String, String)],
    transition: &Transition,
    now: i64,
) -> Result<u64> {
    // Only fixed column names go into the text; every state is a bound parameter.
    let sql = format!(
        "UPDATE incident_connections SET state = $1, {} = $2, updated_at = $2 \
         WHERE incident = $3 AND tenant = $4 AND connection = $5 AND state IN ({})",
        stamp_column(transition.to)?,
        numbered(6, transition.from.len())
    );
    let mut moved = 0;
    for (tenant, connection) in connections {
        let mut q = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(transition.to.as_str())
            .bind(now)
            .bind(incident)
            .bind(tenant)
            .bind(connection);
        for from in transition.from {
            q = q.bind(from.as_str());
        }
        moved += q.execute(&mut **tx).await.map_err(StoreError::db("move a connection"))?.rows_affected();
    }
    Ok(moved)
}

/// `$first, $first+1, ...`: numbered on both engines, since these statements
/// already number their other parameters (SQLite numbers a `?` after the
/// largest `$n`, which sqlx does not promise to keep).
fn numbered(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// The column that records when a connection reached `state`.
fn stamp_column(state: ConnectionState) -> Result<&'static str> {
    Ok(match state {
        ConnectionState::ReplacementIssued => "issued_at",
        ConnectionState::Notified => "notified_at",
        ConnectionState::Acknowledged => "acknowledged_at",
        ConnectionState::OldCertificateRetired => "retired_at",
        ConnectionState::Pending => return Err(StoreError::Invalid("no connection moves back to pending".into())),
    })
}
