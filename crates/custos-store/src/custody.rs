//! Connection keys in custody and their signing policies. The SQL
//! implementation of [`crate::CustodyStore`].

use async_trait::async_trait;
use std::collections::HashMap;

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

/// The columns of a custody key joined with its key record.
const CUSTODY_COLUMNS: &str = "k.id, k.backend, k.algorithm, k.label, k.public_key, k.reference, k.status, k.created_at, \
     c.tenant AS c_tenant, c.connection AS c_connection, c.slot AS c_slot, c.serial AS c_serial, \
     c.created_at AS c_created_at";

fn custody_from(row: &AnyRow) -> Result<CustodyKeyRecord> {
    Ok(CustodyKeyRecord {
        key: key_from(row)?,
        tenant: col(row, "c_tenant")?,
        connection: col(row, "c_connection")?,
        slot: named(row, "c_slot")?,
        serial: col(row, "c_serial")?,
        created_at: col(row, "c_created_at")?,
    })
}

/// Probes per query: five parameters each stay far below SQLite's bound.
const PROBES_PER_QUERY: usize = 500;

/// The statement that indexes `signatures`, whose entries begin at log index `first`.
fn signature_rows<'q>(engine: Engine, signatures: &'q [(usize, SignatureRecord)], first: u64) -> log::Extra<'q> {
    let sql = format!(
        "INSERT INTO signatures (jti, serial, key_id, tenant, connection, aud, iat, exp, audit_index) VALUES {}",
        values_clause(engine, signatures.len(), 9)
    );
    log::extra(sql, move |mut q| {
        for (position, s) in signatures {
            q = q
                .bind(&s.jti)
                .bind(&s.serial)
                .bind(&s.key_id)
                .bind(&s.tenant)
                .bind(&s.connection)
                .bind(&s.aud)
                .bind(s.iat)
                .bind(s.exp)
                .bind((first + *position as u64) as i64);
        }
        q
    })
}

/// The signature columns, in the order [`signature_from`] reads them.
const SIGNATURE_COLUMNS: &str = "signatures.jti, signatures.serial, signatures.key_id, signatures.tenant, \
     signatures.connection, signatures.aud, signatures.iat, signatures.exp, signatures.audit_index";

/// A signature from the row's columns starting at position `at`.
fn signature_from(r: &AnyRow, at: usize) -> Result<SignatureRecord> {
    use sqlx::Row;
    let bad = |e: sqlx::Error| StoreError::Corrupt(format!("signatures: {e}"));
    Ok(SignatureRecord {
        jti: r.try_get(at).map_err(bad)?,
        serial: r.try_get(at + 1).map_err(bad)?,
        key_id: r.try_get(at + 2).map_err(bad)?,
        tenant: r.try_get(at + 3).map_err(bad)?,
        connection: r.try_get(at + 4).map_err(bad)?,
        aud: r.try_get(at + 5).map_err(bad)?,
        iat: r.try_get(at + 6).map_err(bad)?,
        exp: r.try_get(at + 7).map_err(bad)?,
        audit_index: r.try_get::<i64, _>(at + 8).map_err(bad)? as u64,
    })
}

fn policy_from(row: &AnyRow) -> Result<SigningPolicy> {
    Ok(SigningPolicy {
        tenant: col(row, "tenant")?,
        connection: col(row, "connection")?,
        audiences: parse_list(&col::<String>(row, "audiences")?)?,
        client_ids: parse_list(&col::<String>(row, "client_ids")?)?,
        updated_at: col(row, "updated_at")?,
    })
}

#[async_trait]
impl CustodyStore for SqlStore {
    async fn record_custody(&self, change: &CustodyChange, audit: &[AuditRecord]) -> Result<()> {
        let (connection, slots, add) = (change.connection.as_ref(), &change.slots, &change.add);
        let mut tx = self.write().await?;
        if let Some(c) = connection {
            crate::tenants::insert_connection(&mut tx, c).await?;
        }
        for (key_id, slot) in slots {
            let done = sqlx::query("UPDATE custody_keys SET slot = $1 WHERE key_id = $2")
                .bind(slot.as_str())
                .bind(key_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("change a custody slot"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound { what: format!("custody key {key_id:?}") });
            }
        }
        crate::certificates::insert_certificates_logged(self, &mut tx, &change.certificates, audit).await?;
        for k in add {
            insert_key(&mut tx, &k.key).await?;
            sqlx::query(
                "INSERT INTO custody_keys (key_id, tenant, connection, slot, serial, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&k.key.id)
            .bind(&k.tenant)
            .bind(&k.connection)
            .bind(k.slot.as_str())
            .bind(&k.serial)
            .bind(k.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound {
                        what: format!("connection {}/{} or certificate {}", k.tenant, k.connection, k.serial),
                    }
                } else {
                    StoreError::Database { operation: "store a custody key", source: e }
                }
            })?;
        }
        // At most one key signs for a connection at a time.
        let touched: std::collections::BTreeSet<(String, String)> = add
            .iter()
            .map(|k| (k.tenant.clone(), k.connection.clone()))
            .chain(connection.map(|c| (c.tenant.clone(), c.name.clone())))
            .chain(
                change
                    .incident
                    .iter()
                    .flat_map(|i| i.replacements.iter().map(|r| (r.tenant.clone(), r.connection.clone()))),
            )
            .collect();
        for (tenant, name) in touched {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM custody_keys WHERE tenant = $1 AND connection = $2 AND slot = 'active'",
            )
            .bind(&tenant)
            .bind(&name)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("count active custody keys"))?;
            if active > 1 {
                return Err(StoreError::Conflict {
                    what: format!("connection {tenant}/{name} would have {active} active keys"),
                });
            }
        }
        if let Some(i) = &change.incident {
            crate::incidents::apply_replacements(&mut tx, &i.incident, &i.replacements, &i.transition).await?;
        }
        crate::incidents::queue_messages(&mut tx, &change.messages).await?;
        tx.commit().await.map_err(StoreError::db("commit custody keys"))
    }

    async fn custody_keys(&self, tenant: &str, connection: &str) -> Result<Vec<CustodyKeyRecord>> {
        let sql = format!(
            "SELECT {CUSTODY_COLUMNS} FROM custody_keys c JOIN keys k ON k.id = c.key_id \
             WHERE c.tenant = $1 AND c.connection = $2 ORDER BY c.created_at DESC, k.id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(connection)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read custody keys"))?;
        rows.iter().map(custody_from).collect()
    }

    async fn all_custody_keys(&self) -> Result<Vec<CustodyKeyRecord>> {
        let sql = format!(
            "SELECT {CUSTODY_COLUMNS} FROM custody_keys c JOIN keys k ON k.id = c.key_id \
             ORDER BY c.tenant, c.connection, c.created_at, k.id"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await.map_err(StoreError::db("read custody keys"))?;
        rows.iter().map(custody_from).collect()
    }

    async fn set_signing_policy(&self, p: &SigningPolicy, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM signing_policies WHERE tenant = $1 AND connection = $2")
            .bind(&p.tenant)
            .bind(&p.connection)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("replace a signing policy"))?;
        sqlx::query(
            "INSERT INTO signing_policies (tenant, connection, audiences, client_ids, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.tenant)
        .bind(&p.connection)
        .bind(json_list(&p.audiences))
        .bind(json_list(&p.client_ids))
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound { what: format!("connection {}/{}", p.tenant, p.connection) }
            } else {
                StoreError::Database { operation: "store a signing policy", source: e }
            }
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a signing policy"))
    }

    async fn signing_policy(&self, tenant: &str, connection: &str) -> Result<Option<SigningPolicy>> {
        let row = sqlx::query("SELECT * FROM signing_policies WHERE tenant = $1 AND connection = $2")
            .bind(tenant)
            .bind(connection)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a signing policy"))?;
        row.as_ref().map(policy_from).transpose()
    }

    async fn record_signatures(&self, audit: &[AuditRecord], signatures: &[(usize, SignatureRecord)]) -> Result<u64> {
        if let Some((position, s)) = signatures.iter().find(|(position, _)| *position >= audit.len()) {
            return Err(StoreError::Invalid(format!("signature {} names entry {position} of {}", s.jti, audit.len())));
        }
        let mut tx = self.write().await?;
        let prepared = log::prepare(self.log(), &mut tx, audit).await?;
        let first = prepared.first;
        // The index rows go in the same round trip as their entries, a
        // hundred per statement (within both engines' parameter bounds).
        let rows = signatures.chunks(ROWS_PER_INSERT).map(|chunk| signature_rows(self.engine, chunk, first)).collect();
        prepared.write(self.engine, &mut tx, rows).await.map_err(|e| {
            if is_unique_violation(&e) && e.to_string().contains("signatures") {
                StoreError::Duplicate { what: "an assertion's jti".into() }
            } else {
                StoreError::Database { operation: "write signatures and their audit entries", source: e }
            }
        })?;
        tx.commit().await.map_err(StoreError::db("commit signatures"))?;
        Ok(first)
    }

    async fn find_signatures(&self, probes: &[SignatureProbe]) -> Result<Vec<Option<SignatureRecord>>> {
        let mut out: Vec<Option<SignatureRecord>> = vec![None; probes.len()];
        let (by_jti, by_key): (Vec<usize>, Vec<usize>) = (0..probes.len()).partition(|i| probes[*i].jti.is_some());
        for chunk in by_jti.chunks(PROBES_PER_QUERY) {
            let sql = format!(
                "SELECT {SIGNATURE_COLUMNS} FROM signatures WHERE jti IN ({})",
                params(self.engine, 1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for i in chunk {
                q = q.bind(probes[*i].jti.as_deref());
            }
            let found: HashMap<String, SignatureRecord> = q
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("look up assertions by jti"))?
                .iter()
                .map(|r| signature_from(r, 0).map(|s| (s.jti.clone(), s)))
                .collect::<Result<_>>()?;
            for i in chunk {
                out[*i] = probes[*i].jti.as_ref().and_then(|j| found.get(j).cloned());
            }
        }
        // Without a jti: the newest assertion of that certificate and audience
        // in the window, each probe one index seek (signatures_by_key).
        for chunk in by_key.chunks(PROBES_PER_QUERY) {
            let values: Vec<String> =
                (0..chunk.len()).map(|k| format!("({})", params(self.engine, 5 * k + 1, 5))).collect();
            let sql = format!(
                "WITH p(k, serial, aud, lo, hi) AS (VALUES {}) \
                 SELECT p.k AS probe, {SIGNATURE_COLUMNS} FROM p JOIN signatures ON signatures.jti = \
                 (SELECT s.jti FROM signatures s WHERE s.serial = p.serial AND s.aud = p.aud \
                  AND s.iat >= p.lo AND s.iat <= p.hi ORDER BY s.iat DESC LIMIT 1)",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (k, i) in chunk.iter().enumerate() {
                let p = &probes[*i];
                q = q.bind(k as i64).bind(&p.serial).bind(&p.aud).bind(p.from).bind(p.to);
            }
            for r in q.fetch_all(&self.pool).await.map_err(StoreError::db("look up assertions by key"))? {
                use sqlx::Row;
                let k: i64 = r.try_get(0).map_err(|e| StoreError::Corrupt(format!("signatures: {e}")))?;
                if let Some(i) = usize::try_from(k).ok().and_then(|k| chunk.get(k)) {
                    out[*i] = Some(signature_from(&r, 1)?);
                }
            }
        }
        Ok(out)
    }
}
