//! Keys that must never be certified again. The SQL implementation of [`crate::BlocklistStore`].

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl BlocklistStore for SqlStore {
    async fn block_keys(&self, keys: &[BlockedKey], audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_blocked(self.engine, &mut tx, keys).await?;
        log::append(self.log(), &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit blocked keys"))
    }

    async fn blocked_keys(&self, spki_sha256: &[String]) -> Result<Vec<BlockedKey>> {
        let mut out = Vec::new();
        for chunk in spki_sha256.chunks(500) {
            let sql =
                format!("SELECT * FROM blocked_keys WHERE spki_sha256 IN ({})", params(self.engine, 1, chunk.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                q = q.bind(s);
            }
            let rows = q.fetch_all(&self.pool).await.map_err(StoreError::db("read blocked keys"))?;
            for row in &rows {
                out.push(blocked_from(row)?);
            }
        }
        Ok(out)
    }

    async fn blocklist(&self) -> Result<Vec<BlockedKey>> {
        let rows =
            fetch_all(&self.pool, "SELECT * FROM blocked_keys ORDER BY created_at, spki_sha256", "read blocked keys")
                .await?;
        rows.iter().map(blocked_from).collect()
    }
}
