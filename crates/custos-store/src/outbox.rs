//! Tenant webhooks and the notification outbox. The SQL implementation of [`crate::OutboxStore`].

use async_trait::async_trait;
use custos_types::DeliveryState;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl OutboxStore for SqlStore {
    async fn set_webhook(&self, w: &WebhookRecord, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO webhooks (tenant, url, secret, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant) DO UPDATE SET url = excluded.url, secret = excluded.secret, created_at = excluded.created_at",
        )
        .bind(&w.tenant)
        .bind(&w.url)
        .bind(&w.secret)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_foreign_key_violation(&e) {
            true => StoreError::NotFound { what: format!("tenant {}", w.tenant) },
            false => StoreError::Database { operation: "set a webhook", source: e },
        })?;
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a webhook"))
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM webhooks ORDER BY tenant", "read webhooks").await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookRecord {
                    tenant: col(r, "tenant")?,
                    url: col(r, "url")?,
                    secret: col(r, "secret")?,
                    created_at: col(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn use_signature(&self, mac: &str, now: i64, forget_before: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM seen_signatures WHERE seen_at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("forget old signatures"))?;
        let inserted =
            sqlx::query("INSERT INTO seen_signatures (mac, seen_at) VALUES ($1, $2) ON CONFLICT (mac) DO NOTHING")
                .bind(mac)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("record a signature"))?
                .rows_affected();
        tx.commit().await.map_err(StoreError::db("commit a signature"))?;
        Ok(inserted == 1)
    }

    async fn outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxMessage>> {
        let rows =
            sqlx::query("SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("read the outbox"))?;
        rows.iter().map(outbox_from).collect()
    }

    async fn outbox(&self, id: &str) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE incident = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read the outbox"))?;
        rows.iter().map(outbox_from).collect()
    }

    async fn outbox_attempt(
        &self,
        id: i64,
        state: DeliveryState,
        now: i64,
        next_attempt_at: i64,
        error: Option<&str>,
        on_delivery: &Transition,
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("read a notification"))?
            .ok_or_else(|| StoreError::NotFound { what: format!("notification {id}") })?;
        let message = outbox_from(&row)?;
        if message.state != DeliveryState::Pending {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3, delivered_at = $4 WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(next_attempt_at)
        .bind(error)
        .bind((state == DeliveryState::Delivered).then_some(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("record a delivery attempt"))?;
        if state == DeliveryState::Delivered {
            let connections: Vec<(String, String)> =
                message.connections.iter().map(|c| (message.tenant.clone(), c.clone())).collect();
            crate::incidents::move_connections(&mut tx, &message.incident, &connections, on_delivery, now).await?;
        }
        log::append(self.log(), &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a delivery attempt"))
    }
}
