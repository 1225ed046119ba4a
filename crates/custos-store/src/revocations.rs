//! Revocations, the revocation feed, and what CRLs list. The SQL implementation of [`crate::RevocationStore`].

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl RevocationStore for SqlStore {
    async fn revoke(
        &self,
        serials: &[String],
        revocation: &Revocation,
        block: &[BlockedKey],
        audit: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        // Five hundred per statement: an incident revokes a hundred thousand at once.
        for chunk in serials.chunks(500) {
            let [a, b, c] = [1, 2, 3].map(|n| params(self.engine, n, 1));
            let list = params(self.engine, 4, chunk.len());
            let sql = format!(
                "UPDATE certificates SET status = 'revoked', revoked_at = {a}, revocation_reason = {b}, invalidity_date = {c} \
                 WHERE status = 'valid' AND serial IN ({list})"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(revocation.revoked_at)
                .bind(revocation.reason.as_str())
                .bind(revocation.invalidity_date);
            for serial in chunk {
                q = q.bind(serial);
            }
            let updated = q.execute(&mut *tx).await.map_err(StoreError::db("revoke certificates"))?;
            if updated.rows_affected() != chunk.len() as u64 {
                // Name the first serial that was missing or not valid; the transaction rolls back.
                for serial in chunk {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM certificates WHERE serial = $1")
                            .bind(serial)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(StoreError::db("read a certificate"))?;
                    match status {
                        None => return Err(StoreError::NotFound { what: format!("certificate {serial}") }),
                        Some(s)
                            if s != custos_types::CertificateStatus::Revoked.as_str()
                                || chunk.iter().filter(|x| *x == serial).count() > 1 =>
                        {
                            return Err(StoreError::Conflict {
                                what: format!("certificate {serial} is listed twice or {s}"),
                            });
                        }
                        _ => {}
                    }
                }
                return Err(StoreError::Conflict {
                    what: format!(
                        "{} of {} certificates were already revoked",
                        chunk.len() as u64 - updated.rows_affected(),
                        chunk.len()
                    ),
                });
            }
            let time = params(self.engine, 1, 1);
            let list = params(self.engine, 2, chunk.len());
            let sql = format!(
                "INSERT INTO revocations (serial, issuer, crl_partition, time) \
                 SELECT serial, issuer, crl_partition, {time} FROM certificates WHERE serial IN ({list}) ORDER BY serial"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(revocation.revoked_at);
            for serial in chunk {
                q = q.bind(serial);
            }
            q.execute(&mut *tx).await.map_err(StoreError::db("record revocations"))?;
        }
        insert_blocked(self.engine, &mut tx, block).await?;
        log::append(self.log(), &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a revocation"))
    }

    async fn revoked(&self, issuer: &str, partition: i64) -> Result<Vec<RevokedRow>> {
        // sqlx hands each row from SQLite's thread to ours with a wake-up;
        // at a million rows that was most of the CRL's time. SQLite packs
        // REVOKED_PER_ROW entries into one text row instead, and pages by serial.
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let sql = match self.engine {
                Engine::Sqlite => {
                    "SELECT group_concat(serial || ' ' || revoked_at || ' ' || coalesce(revocation_reason, '-') \
                     || ' ' || coalesce(invalidity_date, '-'), ';'), max(serial), count(*) FROM \
                     (SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                      WHERE issuer = $1 AND crl_partition = $2 AND status = 'revoked' AND serial > $3 \
                      ORDER BY serial LIMIT $4)"
                }
                Engine::Postgres => {
                    "SELECT string_agg(serial || ' ' || revoked_at || ' ' || coalesce(revocation_reason, '-') \
                     || ' ' || coalesce(invalidity_date::TEXT, '-'), ';' ORDER BY serial), max(serial), count(*) FROM \
                     (SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                      WHERE issuer = $1 AND crl_partition = $2 AND status = 'revoked' AND serial > $3 \
                      ORDER BY serial LIMIT $4) AS page"
                }
            };
            let row = sqlx::query(sql)
                .bind(issuer)
                .bind(partition)
                .bind(&after)
                .bind(REVOKED_PER_ROW)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::db("list revoked certificates"))?;
            let packed: Option<String> = row.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let last: Option<String> = row.try_get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let count: i64 = row.try_get(2).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let (Some(packed), Some(last)) = (packed, last) else {
                break;
            };
            for entry in packed.split(';') {
                out.push(unpack_revoked(entry)?);
            }
            after = last;
            if count < REVOKED_PER_ROW {
                break;
            }
        }
        Ok(out)
    }

    async fn revocations_since(&self, seq: i64, limit: i64) -> Result<Vec<RevocationEvent>> {
        let rows = sqlx::query(
            "SELECT seq, serial, issuer, crl_partition FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("read the revocation feed"))?;
        rows.iter()
            .map(|r| {
                Ok(RevocationEvent {
                    seq: col(r, "seq")?,
                    serial: col(r, "serial")?,
                    issuer: col(r, "issuer")?,
                    crl_partition: col(r, "crl_partition")?,
                })
            })
            .collect()
    }

    async fn last_revocation(&self) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("read the revocation feed"))?;
        Ok(seq.unwrap_or(0))
    }
}
