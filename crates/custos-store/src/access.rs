//! API tokens and operators. The SQL implementation of [`crate::AccessStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl AccessStore for SqlStore {
    async fn add_token(&self, t: &TokenRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, secret_sha256, role, tenant, connection, created_at, expires_at, revoked_at, \
             created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.id)
        .bind(&t.secret_sha256)
        .bind(&t.role)
        .bind(&t.tenant)
        .bind(&t.connection)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(&t.created_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate { what: format!("token {:?}", t.id) }
            } else {
                StoreError::Database { operation: "add a token", source: e }
            }
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a token"))
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a token"))?;
        row.as_ref().map(token_from).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM api_tokens ORDER BY created_at, id", "list tokens").await?;
        rows.iter().map(token_from).collect()
    }

    async fn revoke_token(&self, id: &str, at: i64, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("revoke a token"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("an unrevoked token {id:?}") });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a token revocation"))
    }

    async fn add_operator(&self, o: &OperatorRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        // A revoked operator's name may be given again (a new certificate);
        // an active one's may not.
        sqlx::query("DELETE FROM operators WHERE name = $1 AND revoked_at IS NOT NULL")
            .bind(&o.name)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("replace a revoked operator"))?;
        sqlx::query(
            "INSERT INTO operators (name, role, serial, der, created_at, not_after, revoked_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&o.name)
        .bind(&o.role)
        .bind(&o.serial)
        .bind(&o.der)
        .bind(o.created_at)
        .bind(o.not_after)
        .bind(o.revoked_at)
        .bind(&o.created_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate { what: format!("operator {:?}", o.name) }
            } else {
                StoreError::Database { operation: "add an operator", source: e }
            }
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an operator"))
    }

    async fn operator_by_serial(&self, serial: &str) -> Result<Option<OperatorRecord>> {
        let row = sqlx::query("SELECT * FROM operators WHERE serial = $1")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read an operator"))?;
        row.as_ref().map(operator_from).transpose()
    }

    async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM operators ORDER BY name", "list operators").await?;
        rows.iter().map(operator_from).collect()
    }

    async fn revoke_operator(&self, name: &str, at: i64, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE operators SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("revoke an operator"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("an active operator {name:?}") });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an operator revocation"))
    }

    async fn add_approval(&self, a: &ApprovalRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO approvals (id, action, object, requested_by, requested_at, expires_at, approved_by, \
             approved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&a.id)
        .bind(&a.action)
        .bind(&a.object)
        .bind(&a.requested_by)
        .bind(a.requested_at)
        .bind(a.expires_at)
        .bind(&a.approved_by)
        .bind(a.approved_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate { what: format!("approval {:?}", a.id) }
            } else {
                StoreError::Database { operation: "add an approval request", source: e }
            }
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an approval request"))
    }

    async fn approvals_for(&self, action: &str, object: &str) -> Result<Vec<ApprovalRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM approvals WHERE action = $1 AND object = $2 ORDER BY requested_at DESC, id DESC",
        )
        .bind(action)
        .bind(object)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("read approvals"))?;
        rows.iter().map(approval_from).collect()
    }

    async fn approvals(&self) -> Result<Vec<ApprovalRecord>> {
        let rows =
            fetch_all(&self.pool, "SELECT * FROM approvals ORDER BY requested_at DESC, id DESC", "list approvals")
                .await?;
        rows.iter().map(approval_from).collect()
    }

    async fn approve(&self, id: &str, by: &str, at: i64, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE approvals SET approved_by = $1, approved_at = $2 \
             WHERE id = $3 AND approved_by IS NULL AND refused_by IS NULL AND expires_at > $4 AND requested_by <> $5",
        )
        .bind(by)
        .bind(at)
        .bind(id)
        .bind(at)
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("approve a request"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!(
                    "approval {id:?} is unknown, approved or refused already, expired, or was requested by {by}"
                ),
            });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an approval"))
    }

    async fn refuse(&self, id: &str, by: &str, at: i64, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE approvals SET refused_by = $1, refused_at = $2 \
             WHERE id = $3 AND approved_by IS NULL AND refused_by IS NULL AND expires_at > $4",
        )
        .bind(by)
        .bind(at)
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("refuse a request"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!("approval {id:?} is unknown, approved or refused already, or expired"),
            });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a refusal"))
    }
}

fn approval_from(r: &AnyRow) -> Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        id: col(r, "id")?,
        action: col(r, "action")?,
        object: col(r, "object")?,
        requested_by: col(r, "requested_by")?,
        requested_at: col(r, "requested_at")?,
        expires_at: col(r, "expires_at")?,
        approved_by: col(r, "approved_by")?,
        approved_at: col(r, "approved_at")?,
        refused_by: col(r, "refused_by")?,
        refused_at: col(r, "refused_at")?,
    })
}

fn token_from(r: &AnyRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: col(r, "id")?,
        secret_sha256: col(r, "secret_sha256")?,
        role: col(r, "role")?,
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        created_at: col(r, "created_at")?,
        expires_at: col(r, "expires_at")?,
        revoked_at: col(r, "revoked_at")?,
        created_by: col(r, "created_by")?,
    })
}

fn operator_from(r: &AnyRow) -> Result<OperatorRecord> {
    Ok(OperatorRecord {
        name: col(r, "name")?,
        role: col(r, "role")?,
        serial: col(r, "serial")?,
        der: col(r, "der")?,
        created_at: col(r, "created_at")?,
        not_after: col(r, "not_after")?,
        revoked_at: col(r, "revoked_at")?,
        created_by: col(r, "created_by")?,
    })
}
