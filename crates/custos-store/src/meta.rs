//! Settings and the first state of a custos. The SQL implementation of [`crate::MetaStore`].

use async_trait::async_trait;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl MetaStore for SqlStore {
    async fn initialize(&self, genesis: Genesis) -> Result<()> {
        let mut tx = self.write().await?;
        // The marker goes first: a second genesis fails on its primary key
        // before it writes anything else.
        sqlx::query("INSERT INTO meta (key, value) VALUES ('initialized', $1)")
            .bind(unix_now().to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyInitialized
                } else {
                    StoreError::Database { operation: "mark the store initialized", source: e }
                }
            })?;
        for (key, value) in &genesis.meta {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("write a setting"))?;
        }
        for key in &genesis.keys {
            insert_key(&mut tx, key).await?;
        }
        for issuer in &genesis.issuers {
            insert_issuer(&mut tx, issuer).await?;
        }
        log::append(self.log(), &mut tx, &genesis.audit).await?;
        tx.commit().await.map_err(StoreError::db("commit the genesis"))
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a setting"))
    }

    async fn set_meta_once(&self, key: &str, value: &str, audit_records: &[AuditRecord]) -> Result<String> {
        let mut tx = self.write().await?;
        let inserted = sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("write a setting"))?;
        if inserted.rows_affected() == 1 {
            log::append(self.log(), &mut tx, audit_records).await?;
        }
        let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("read a setting"))?;
        tx.commit().await.map_err(StoreError::db("commit a setting"))?;
        Ok(stored)
    }

    async fn set_meta(&self, key: &str, value: &str, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("write a setting"))?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a setting"))
    }
}
