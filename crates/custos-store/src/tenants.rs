//! Tenants and their connections. The SQL implementation of [`crate::TenantStore`].

use async_trait::async_trait;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl TenantStore for SqlStore {
    async fn add_tenant(&self, tenant: &TenantRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO tenants (name, created_at, custody_default) VALUES ($1, $2, $3)")
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .bind(i64::from(tenant.custody_default))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate { what: format!("tenant {:?}", tenant.name) }
                } else {
                    StoreError::Database { operation: "add a tenant", source: e }
                }
            })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a tenant"))
    }

    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        let row = sqlx::query("SELECT name, created_at, custody_default FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a tenant"))?;
        row.as_ref().map(tenant_from).transpose()
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query("SELECT name, created_at, custody_default FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list tenants"))?;
        rows.iter().map(tenant_from).collect()
    }

    async fn set_custody_default(&self, tenant: &str, on: bool, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE tenants SET custody_default = $1 WHERE name = $2")
            .bind(i64::from(on))
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("set a tenant's custody default"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("tenant {tenant:?}") });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a tenant's custody default"))
    }

    async fn add_connection(&self, c: &ConnectionRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        insert_connection(&mut tx, c).await?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a connection"))
    }

    async fn update_connection(
        &self,
        old: &ConnectionRecord,
        new: &ConnectionRecord,
        audit: &AuditRecord,
    ) -> Result<()> {
        if (&old.tenant, &old.name) != (&new.tenant, &new.name) {
            return Err(StoreError::Invalid("a connection update keeps its tenant and name".into()));
        }
        let mut tx = self.write().await?;
        // Compare-and-swap on the whole policy: what the caller read is what it changes.
        let done = sqlx::query(
            "UPDATE connections SET profile = $1, allowed_sans = $2, key_algorithm = $3, validity_days = $4 \
             WHERE tenant = $5 AND name = $6 AND profile = $7 AND allowed_sans = $8 AND key_algorithm = $9 \
             AND COALESCE(validity_days, -1) = $10",
        )
        .bind(new.profile.as_str())
        .bind(json_list(&new.allowed_sans))
        .bind(&new.key_algorithm)
        .bind(new.validity_days)
        .bind(&old.tenant)
        .bind(&old.name)
        .bind(old.profile.as_str())
        .bind(json_list(&old.allowed_sans))
        .bind(&old.key_algorithm)
        .bind(old.validity_days.unwrap_or(-1))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("update a connection"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                what: format!("connection {}/{} changed since it was read (or is gone)", old.tenant, old.name),
            });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a connection update"))
    }

    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<ConnectionRecord>> {
        let row = sqlx::query("SELECT * FROM connections WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a connection"))?;
        row.as_ref().map(connection_from).transpose()
    }

    async fn connections(&self, tenant: Option<&str>) -> Result<Vec<ConnectionRecord>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT * FROM connections WHERE tenant = $1 ORDER BY tenant, name")
                    .bind(t)
                    .fetch_all(&self.pool)
                    .await
            }
            None => sqlx::query("SELECT * FROM connections ORDER BY tenant, name").fetch_all(&self.pool).await,
        }
        .map_err(StoreError::db("list connections"))?;
        rows.iter().map(connection_from).collect()
    }
}

/// Inserts one connection inside `tx`.
pub(crate) async fn insert_connection(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    c: &ConnectionRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO connections (tenant, name, profile, allowed_sans, key_algorithm, validity_days, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.tenant)
    .bind(&c.name)
    .bind(c.profile.as_str())
    .bind(json_list(&c.allowed_sans))
    .bind(&c.key_algorithm)
    .bind(c.validity_days)
    .bind(c.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Duplicate { what: format!("connection {}/{}", c.tenant, c.name) }
        } else if is_foreign_key_violation(&e) {
            StoreError::NotFound { what: format!("tenant {:?}", c.tenant) }
        } else {
            StoreError::Database { operation: "add a connection", source: e }
        }
    })?;
    Ok(())
}

fn tenant_from(r: &sqlx::any::AnyRow) -> Result<TenantRecord> {
    Ok(TenantRecord {
        name: col(r, "name")?,
        created_at: col(r, "created_at")?,
        custody_default: col::<i64>(r, "custody_default")? != 0,
    })
}
