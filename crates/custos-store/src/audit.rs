//! The audit log: appends, reads, Merkle nodes, checkpoints, key usage. The SQL implementation of [`crate::AuditStore`].

use std::collections::HashMap;

use async_trait::async_trait;

use crate::backend::SqlStore;
use crate::log::{self, Matches};
use crate::rows::*;
use crate::*;

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<u64> {
        let mut tx = self.write().await?;
        let first = log::append(self.log(), &mut tx, records).await?;
        tx.commit().await.map_err(StoreError::db("commit audit entries"))?;
        Ok(first)
    }

    async fn audit_size(&self) -> Result<u64> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db("read the audit log size"))?;
        log::size_in(&mut conn).await
    }

    async fn audit_entries(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>> {
        log::read_entries(&self.pool, self.engine, from, limit).await
    }

    async fn audit_page(&self, from: u64, limit: u64) -> Result<AuditPage> {
        log::read_page(&self.pool, self.engine, from, limit).await
    }

    async fn audit_for_object(&self, object: &str, limit: u64) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The index leaves out issuance entries (the bulk of the log); a
        // certificate's own is found through the index its row records.
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE object = $1 AND action <> 'certificate.issue' ORDER BY idx DESC LIMIT $2",
        )
        .bind(object)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("read an object's audit entries"))?;
        let mut entries = rows.iter().map(log::entry).collect::<Result<Vec<_>>>()?;
        if let Some(serial) = object.strip_prefix("cert:") {
            let issued = sqlx::query(
                "SELECT a.* FROM certificates c JOIN audit_log a ON a.idx = c.issued_entry WHERE c.serial = $1",
            )
            .bind(serial)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a certificate's issuance entry"))?;
            if let Some(row) = issued {
                entries.push(log::entry(&row)?);
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.index));
        entries.truncate(limit.max(0) as usize);
        entries.reverse();
        Ok(entries)
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        // The key is indexed; the action filter has dotted and grouped forms,
        // so it is applied here, a page at a time.
        const PAGE: i64 = 2048;
        let mut out = Vec::new();
        let newest = filter.from.is_none();
        let mut cursor: i64 = match filter.from {
            Some(from) => from as i64,
            None => i64::MAX,
        };
        loop {
            let sql = match newest {
                true => {
                    "SELECT * FROM audit_log WHERE ($1 IS NULL OR key_id = $1) AND idx < $2 ORDER BY idx DESC LIMIT $3"
                }
                false => {
                    "SELECT * FROM audit_log WHERE ($1 IS NULL OR key_id = $1) AND idx >= $2 ORDER BY idx LIMIT $3"
                }
            };
            let rows = sqlx::query(sql)
                .bind(&filter.key)
                .bind(cursor)
                .bind(PAGE)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("search the audit log"))?;
            let Some(last) = rows.last() else { break };
            let last = log::entry(last)?.index as i64;
            cursor = if newest { last } else { last + 1 };
            for row in &rows {
                let entry = log::entry(row)?;
                if filter.matches(&entry.record) {
                    out.push(entry);
                    if out.len() >= filter.limit {
                        break;
                    }
                }
            }
            if out.len() >= filter.limit || (rows.len() as i64) < PAGE {
                break;
            }
        }
        if newest {
            out.reverse();
        }
        Ok(out)
    }

    async fn audit_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db("read audit tree nodes"))?;
        log::nodes(&mut conn, self.engine, ids).await
    }

    async fn audit_level(&self, level: u8, start: u64, count: u64) -> Result<Vec<Hash>> {
        let sql = if level == 0 {
            "SELECT idx, leaf_hash AS hash FROM audit_log WHERE $1 = 0 AND idx >= $2 AND idx < $3 ORDER BY idx"
        } else {
            "SELECT idx, hash FROM audit_tree WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx"
        };
        let rows = sqlx::query(sql)
            .bind(i64::from(level))
            .bind(start as i64)
            .bind(start.saturating_add(count) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read an audit tile"))?;
        if rows.len() as u64 != count {
            return Err(StoreError::NotFound { what: format!("{count} hashes of level {level} from {start}") });
        }
        rows.iter().map(|r| log::hash_of(col(r, "hash")?, col(r, "idx")?)).collect()
    }

    async fn add_checkpoint(&self, c: &CheckpointRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT size FROM audit_checkpoints WHERE size = $1")
            .bind(c.size as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("read a checkpoint"))?;
        if exists.is_none() {
            sqlx::query("INSERT INTO audit_checkpoints (size, time, root, note) VALUES ($1, $2, $3, $4)")
                .bind(c.size as i64)
                .bind(c.time)
                .bind(&c.root)
                .bind(&c.note)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("store a checkpoint"))?;
        }
        tx.commit().await.map_err(StoreError::db("commit a checkpoint"))
    }

    async fn add_cosignatures(&self, size: u64, lines: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE audit_checkpoints SET note = note || $1 WHERE size = $2")
            .bind(lines)
            .bind(size as i64)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("add cosignatures"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("checkpoint of size {size}") });
        }
        tx.commit().await.map_err(StoreError::db("commit cosignatures"))
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM audit_checkpoints ORDER BY size", "read checkpoints").await?;
        rows.iter().map(checkpoint).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>> {
        sqlx::query("SELECT * FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read the latest checkpoint"))?
            .as_ref()
            .map(checkpoint)
            .transpose()
    }

    async fn key_usage(&self, key: &str) -> Result<Vec<KeyUsage>> {
        let rows = sqlx::query(
            "SELECT time / 86400 AS day, actor, action, COUNT(*) AS n FROM audit_log WHERE key_id = $1 \
             GROUP BY time / 86400, actor, action ORDER BY day, actor, action",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("count key uses"))?;
        rows.iter()
            .map(|r| {
                Ok(KeyUsage {
                    day: col(r, "day")?,
                    actor: col(r, "actor")?,
                    action: col(r, "action")?,
                    count: col(r, "n")?,
                })
            })
            .collect()
    }
}
