//! The storage itself: health, integrity, consistent copies. The SQL
//! implementation of [`crate::MaintenanceStore`].

use async_trait::async_trait;
use sqlx::Row;

use crate::backend::SqlStore;
use crate::dialect::Engine;
use crate::*;

/// Below this much free space beside a SQLite database, the storage counts as
/// full: a WAL checkpoint alone may need 64 MiB.
const MIN_FREE_BYTES: u64 = 16 << 20;

#[async_trait]
impl MaintenanceStore for SqlStore {
    async fn check_storage(&self) -> Result<()> {
        // Only stat the files, never open them: closing any descriptor of a
        // file drops every POSIX lock this process holds on it, SQLite's
        // included, and another process may then truncate the shared WAL
        // index under this one's mapping (it died of SIGBUS when an earlier
        // version read custos.db-shm here).
        if let Some((path, (dev, ino))) = &self.file {
            use std::os::unix::fs::MetadataExt;
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Unavailable(format!(
                        "the database file {} was deleted while custos had it open; what custos writes now is lost \
                         when it stops: restore the last backup",
                        path.display()
                    )));
                }
                Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", path.display()))),
                Ok(meta) if (meta.dev(), meta.ino()) != (*dev, *ino) => {
                    return Err(StoreError::Unavailable(format!(
                        "the database file {} was replaced by another file while custos had it open",
                        path.display()
                    )));
                }
                Ok(_) => {}
            }
            // A write that fits in the WAL's existing frames succeeds on a full
            // disk; the next one that needs space does not. Say so first.
            if let Ok(fs) = rustix::fs::statvfs(path.as_path()) {
                let free = fs.f_bavail.saturating_mul(fs.f_frsize);
                if free < MIN_FREE_BYTES {
                    return Err(StoreError::Unavailable(format!(
                        "the file system holding {} has {free} bytes free (less than {} MiB): writes will fail; \
                         free space",
                        path.display(),
                        MIN_FREE_BYTES >> 20
                    )));
                }
            }
        }
        let initialized: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'initialized'")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("a read failed: {}", root_cause(&e))))?;
        if initialized.is_none() {
            return Err(StoreError::Unavailable("the database holds no custos any more".into()));
        }
        // A write that changes nothing but must reach the log or WAL: a full
        // disk, a read-only file system or a lost lock fails here.
        let mut tx = self.write().await.map_err(|e| match e {
            StoreError::Database { source, .. } => {
                StoreError::Unavailable(format!("cannot begin a write: {}", root_cause(&source)))
            }
            other => other,
        })?;
        sqlx::query("UPDATE meta SET value = value WHERE key = 'initialized'")
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Unavailable(format!("a write failed: {}", root_cause(&e))))?;
        tx.commit().await.map_err(|e| StoreError::Unavailable(format!("a commit failed: {}", root_cause(&e))))
    }

    async fn integrity_check(&self) -> Result<Option<Vec<String>>> {
        match self.engine {
            Engine::Postgres => Ok(None),
            Engine::Sqlite => {
                let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db("run the integrity check"))?;
                Ok(Some(rows))
            }
        }
    }

    async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        if self.engine == Engine::Postgres {
            return Err(StoreError::Invalid(
                "a PostgreSQL custos is backed up with pg_dump or pg_basebackup (see docs/operations.md)".into(),
            ));
        }
        let target = path.to_str().ok_or_else(|| StoreError::Invalid(format!("{} is not UTF-8", path.display())))?;
        // VACUUM INTO reads one snapshot (a read transaction) while writers go on.
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("write a backup"))?;
        Ok(())
    }

    async fn figures(&self, now: i64) -> Result<StoreFigures> {
        let read = |source| StoreError::Database { operation: "count for the figures", source };
        let mut conn = self.pool.acquire().await.map_err(StoreError::db("count for the figures"))?;
        let mut f = StoreFigures::default();
        let rows = sqlx::query(
            "SELECT status, CASE WHEN not_after < $1 THEN 1 ELSE 0 END AS expired, COUNT(*) AS n \
             FROM certificates GROUP BY status, CASE WHEN not_after < $1 THEN 1 ELSE 0 END",
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::db("count certificates by status"))?;
        for r in &rows {
            let status: String = r.try_get("status").map_err(read)?;
            let expired: i64 = r.try_get("expired").map_err(read)?;
            let n: i64 = r.try_get("n").map_err(read)?;
            match (status.as_str(), expired) {
                ("revoked", _) => f.revoked += n,
                (_, 0) => f.valid += n,
                _ => f.expired += n,
            }
        }
        // notAfter is indexed: these read only the certificates near expiry.
        let expiring = |days: i64| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM certificates WHERE not_after >= $1 AND not_after < $2 AND status <> 'revoked'",
            )
            .bind(now)
            .bind(now + days * 86_400)
        };
        f.expiring_7d =
            expiring(7).fetch_one(&mut *conn).await.map_err(StoreError::db("count expiring certificates"))?;
        f.expiring_30d =
            expiring(30).fetch_one(&mut *conn).await.map_err(StoreError::db("count expiring certificates"))?;
        // Revocations are a feed in time order: today's are its tail.
        f.revoked_today = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM revocations WHERE time >= $1")
            .bind(now - now.rem_euclid(86_400))
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::db("count today's revocations"))?;
        let grouped = |sql: &'static str| sqlx::query(sql);
        let pairs = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<(String, i64)>> {
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0).map_err(read)?, r.try_get::<i64, _>(1).map_err(read)?)))
                .collect()
        };
        f.incidents = pairs(
            grouped("SELECT state, COUNT(*) FROM incidents GROUP BY state ORDER BY state")
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("count incidents"))?,
        )?;
        f.incident_connections = pairs(
            grouped(
                "SELECT c.state, COUNT(*) FROM incident_connections c JOIN incidents i ON i.id = c.incident \
                 WHERE i.state <> 'closed' GROUP BY c.state ORDER BY c.state",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db("count incident connections"))?,
        )?;
        f.outbox = pairs(
            grouped("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db("count webhook messages"))?,
        )?;
        f.audit_size = crate::log::size_in(&mut conn).await? as i64;
        if let Some(r) = sqlx::query("SELECT size, time FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::db("read the latest checkpoint"))?
        {
            f.checkpoint_size = r.try_get("size").map_err(read)?;
            f.checkpoint_time = Some(r.try_get("time").map_err(read)?);
        }
        Ok(f)
    }

    fn pool_state(&self) -> (u32, u32) {
        (self.pool.size(), self.pool.num_idle() as u32)
    }
}

/// The driver's own message, for health reasons; for a short read (SQLite's
/// SQLITE_IOERR_SHORT_READ, 522), what it means here.
fn root_cause(e: &sqlx::Error) -> String {
    match e {
        // The file and the log's index say a page is there and it is not: with
        // the database file checked above, the write-ahead log was truncated
        // or emptied under SQLite. The commits it held are lost when custos
        // stops, and a checkpoint cannot copy them.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("522") => format!(
            "{}: a committed page is missing from the write-ahead log (custos.db-wal was truncated while custos had \
             it open); the changes in it are lost: stop custos, run `custos doctor` and restore the last backup",
            d.message()
        ),
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    }
}
