//! Keys, issuers (CAs), OCSP responders, CRL numbers and issuance positions. The SQL implementation of [`crate::IssuerStore`].

use async_trait::async_trait;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl IssuerStore for SqlStore {
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM keys WHERE id = $1", id, "read a key", key_from).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM keys ORDER BY created_at, id", "list keys").await?;
        rows.iter().map(key_from).collect()
    }

    async fn issuer(&self, id: &str) -> Result<Option<IssuerRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM issuers WHERE id = $1", id, "read an issuer", issuer_from).await
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>> {
        let sql = "SELECT * FROM issuers ORDER BY created_at, role DESC, id";
        let rows = fetch_all(&self.pool, sql, "list issuers").await?;
        rows.iter().map(issuer_from).collect()
    }

    async fn add_key(&self, key: &KeyRecord, settings: &[(String, String)], audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_key(&mut tx, key).await?;
        for (name, value) in settings {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(|e| match is_unique_violation(&e) {
                    true => StoreError::Duplicate { what: format!("setting {name:?}") },
                    false => StoreError::Database { operation: "write a setting", source: e },
                })?;
        }
        log::append(self.log(), &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a key"))
    }

    async fn add_responder(&self, key: &KeyRecord, responder: &ResponderRecord, audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_key(&mut tx, key).await?;
        sqlx::query(
            "INSERT INTO responders (issuer, key_id, cert_der, not_after, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&responder.issuer)
        .bind(&responder.key_id)
        .bind(&responder.cert_der)
        .bind(responder.not_after)
        .bind(responder.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("store a responder"))?;
        log::append(self.log(), &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a responder"))
    }

    async fn responder(&self, issuer: &str) -> Result<Option<ResponderRecord>> {
        let row =
            sqlx::query("SELECT * FROM responders WHERE issuer = $1 ORDER BY not_after DESC, created_at DESC LIMIT 1")
                .bind(issuer)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read a responder"))?;
        row.map(|r| {
            Ok(ResponderRecord {
                issuer: col(&r, "issuer")?,
                key_id: col(&r, "key_id")?,
                cert_der: col(&r, "cert_der")?,
                not_after: col(&r, "not_after")?,
                created_at: col(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn next_crl_number(&self, issuer: &str, audit: &AuditRecord) -> Result<i64> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE issuers SET crl_number = crl_number + 1 WHERE id = $1")
            .bind(issuer)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("advance the CRL number"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("issuer {issuer}") });
        }
        let number: i64 = sqlx::query_scalar("SELECT crl_number FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("read the CRL number"))?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit the CRL number"))?;
        Ok(number)
    }

    async fn destroy_key(&self, id: &str, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE keys SET status = 'destroyed', reference = $1 WHERE id = $2")
            .bind(Vec::<u8>::new())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("destroy a key"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("key {id}") });
        }
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a key destruction"))?;
        if self.engine == Engine::Sqlite {
            // The old page images (with the sealed blob) are still frames in
            // the WAL: copy the new pages back and empty the WAL. If readers
            // hold it, the next automatic checkpoint overwrites the frames.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.writer).await {
                tracing::warn!(error = %e, "emptying the WAL after destroying a key failed; a later checkpoint will");
            }
        }
        Ok(())
    }

    async fn replace_key_references(
        &self,
        references: &[(String, Vec<u8>)],
        settings: &[(String, String)],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        for (id, reference) in references {
            let updated = sqlx::query("UPDATE keys SET reference = $1 WHERE id = $2 AND status <> 'destroyed'")
                .bind(reference)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("replace a key reference"))?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::NotFound { what: format!("key {id} (or it is destroyed)") });
            }
        }
        for (name, value) in settings {
            sqlx::query("UPDATE meta SET value = $1 WHERE key = $2")
                .bind(value)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("replace a setting"))?;
        }
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit new key references"))
    }

    async fn reserve_issuance(&self, issuer: &str, count: i64) -> Result<i64> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE issuers SET issued = issued + $1 WHERE id = $2")
            .bind(count)
            .bind(issuer)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("reserve issuance positions"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("issuer {issuer}") });
        }
        let end: i64 = sqlx::query_scalar("SELECT issued FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("read issuance positions"))?;
        tx.commit().await.map_err(StoreError::db("commit issuance positions"))?;
        Ok(end - count)
    }

    async fn issued(&self, issuer: &str) -> Result<i64> {
        let issued: Option<i64> = sqlx::query_scalar("SELECT issued FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read issuance positions"))?;
        issued.ok_or_else(|| StoreError::NotFound { what: format!("issuer {issuer}") })
    }
}
