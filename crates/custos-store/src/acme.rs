//! ACME nonces, EAB keys, accounts, orders and authorizations. The SQL
//! implementation of [`crate::AcmeStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

/// Expired nonces removed per new nonce: the table stays bounded without a job.
const NONCE_SWEEP: i64 = 4;

fn eab_from(r: &AnyRow) -> Result<AcmeEabRecord> {
    Ok(AcmeEabRecord {
        kid: col(r, "kid")?,
        hmac_key: col(r, "hmac_key")?,
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        created_at: col(r, "created_at")?,
        expires_at: col(r, "expires_at")?,
        account: col(r, "account")?,
    })
}

fn account_from(r: &AnyRow) -> Result<AcmeAccountRecord> {
    Ok(AcmeAccountRecord {
        id: col(r, "id")?,
        thumbprint: col(r, "thumbprint")?,
        jwk: col(r, "jwk")?,
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        status: col(r, "status")?,
        contact: parse_list(&col::<String>(r, "contact")?)?,
        eab_kid: col(r, "eab_kid")?,
        created_at: col(r, "created_at")?,
    })
}

fn order_from(r: &AnyRow) -> Result<AcmeOrderRecord> {
    Ok(AcmeOrderRecord {
        id: col(r, "id")?,
        account: col(r, "account")?,
        tenant: col(r, "tenant")?,
        connection: col(r, "connection")?,
        status: col(r, "status")?,
        identifiers: parse_list(&col::<String>(r, "identifiers")?)?,
        not_before: col(r, "not_before")?,
        not_after: col(r, "not_after")?,
        expires_at: col(r, "expires_at")?,
        error: col(r, "error")?,
        certificate: col(r, "certificate")?,
        replaces: col(r, "replaces")?,
        created_at: col(r, "created_at")?,
    })
}

fn authz_from(r: &AnyRow) -> Result<AcmeAuthzRecord> {
    Ok(AcmeAuthzRecord {
        id: col(r, "id")?,
        order_id: col(r, "order_id")?,
        account: col(r, "account")?,
        identifier: col(r, "identifier")?,
        wildcard: col::<i64>(r, "wildcard")? != 0,
        status: col(r, "status")?,
        expires_at: col(r, "expires_at")?,
        token: col(r, "token")?,
        challenge: col(r, "challenge")?,
        challenge_status: col(r, "challenge_status")?,
        validated_at: col(r, "validated_at")?,
        error: col(r, "error")?,
    })
}

#[async_trait]
impl AcmeStore for SqlStore {
    async fn add_eab(&self, eab: &AcmeEabRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO acme_eab (kid, hmac_key, tenant, connection, created_at, expires_at, account) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&eab.kid)
        .bind(&eab.hmac_key)
        .bind(&eab.tenant)
        .bind(&eab.connection)
        .bind(eab.created_at)
        .bind(eab.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_foreign_key_violation(&e) {
            true => StoreError::NotFound { what: format!("tenant {:?}", eab.tenant) },
            false => StoreError::Database { operation: "store an EAB key", source: e },
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an EAB key"))
    }

    async fn eab(&self, kid: &str) -> Result<Option<AcmeEabRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM acme_eab WHERE kid = $1", kid, "read an EAB key", eab_from).await
    }

    async fn add_acme_account(&self, a: &AcmeAccountRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        // The key is spent: only its id stays, to say which account it bound.
        let bound = sqlx::query(
            "UPDATE acme_eab SET account = $1, hmac_key = '' WHERE kid = $2 AND account IS NULL AND expires_at >= $3",
        )
        .bind(&a.id)
        .bind(&a.eab_kid)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("use an EAB key"))?;
        if bound.rows_affected() != 1 {
            return Err(StoreError::Conflict { what: format!("EAB key {:?} was used or has expired", a.eab_kid) });
        }
        sqlx::query(
            "INSERT INTO acme_accounts (id, thumbprint, jwk, tenant, connection, status, contact, eab_kid, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.id)
        .bind(&a.thumbprint)
        .bind(&a.jwk)
        .bind(&a.tenant)
        .bind(&a.connection)
        .bind(&a.status)
        .bind(json_list(&a.contact))
        .bind(&a.eab_kid)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_unique_violation(&e) {
            true => StoreError::Duplicate { what: "an ACME account with this key".into() },
            false => StoreError::Database { operation: "store an ACME account", source: e },
        })?;
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an ACME account"))
    }

    async fn acme_account(&self, id: &str) -> Result<Option<AcmeAccountRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM acme_accounts WHERE id = $1", id, "read an ACME account", account_from)
            .await
    }

    async fn acme_account_by_key(&self, thumbprint: &str) -> Result<Option<AcmeAccountRecord>> {
        let sql = "SELECT * FROM acme_accounts WHERE thumbprint = $1";
        fetch_one_by(&self.pool, sql, thumbprint, "find an ACME account", account_from).await
    }

    async fn acme_account_count(&self, tenant: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM acme_accounts WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("count ACME accounts"))
    }

    async fn update_acme_account(&self, a: &AcmeAccountRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("UPDATE acme_accounts SET status = $1, contact = $2, jwk = $3, thumbprint = $4 WHERE id = $5")
                .bind(&a.status)
                .bind(json_list(&a.contact))
                .bind(&a.jwk)
                .bind(&a.thumbprint)
                .bind(&a.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| match is_unique_violation(&e) {
                    true => StoreError::Duplicate { what: "an ACME account with this key".into() },
                    false => StoreError::Database { operation: "update an ACME account", source: e },
                })?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("ACME account {:?}", a.id) });
        }
        log::append(self.log(), &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit an ACME account"))
    }

    async fn acme_order(&self, id: &str) -> Result<Option<AcmeOrderRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM acme_orders WHERE id = $1", id, "read an ACME order", order_from).await
    }

    async fn acme_orders(&self, account: &str, limit: i64) -> Result<Vec<AcmeOrderRecord>> {
        let rows = sqlx::query("SELECT * FROM acme_orders WHERE account = $1 ORDER BY created_at DESC, id LIMIT $2")
            .bind(account)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list ACME orders"))?;
        rows.iter().map(order_from).collect()
    }

    async fn acme_authz(&self, id: &str) -> Result<Option<AcmeAuthzRecord>> {
        let sql = "SELECT * FROM acme_authzs WHERE id = $1";
        fetch_one_by(&self.pool, sql, id, "read an ACME authorization", authz_from).await
    }

    async fn acme_authzs(&self, order_id: &str) -> Result<Vec<AcmeAuthzRecord>> {
        let rows = sqlx::query("SELECT * FROM acme_authzs WHERE order_id = $1 ORDER BY identifier, id")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list ACME authorizations"))?;
        rows.iter().map(authz_from).collect()
    }

    async fn apply_acme(&self, writes: &[AcmeWrite]) -> Result<Vec<std::result::Result<(), StoreError>>> {
        let mut tx = self.write().await?;
        if writes.iter().any(|w| matches!(w, AcmeWrite::UseNonce { .. })) {
            sqlx::query(
                "DELETE FROM acme_nonces WHERE nonce IN \
                 (SELECT nonce FROM acme_nonces WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
            )
            .bind(unix_now())
            .bind(NONCE_SWEEP)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("forget expired nonces"))?;
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            savepoint(&mut tx, "SAVEPOINT acme_write").await?;
            let outcome = apply_one(self, &mut tx, w).await;
            let end = if outcome.is_ok() { "RELEASE SAVEPOINT acme_write" } else { "ROLLBACK TO SAVEPOINT acme_write" };
            savepoint(&mut tx, end).await?;
            if outcome.is_err() {
                savepoint(&mut tx, "RELEASE SAVEPOINT acme_write").await?;
            }
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(StoreError::db("commit ACME writes"))?;
        Ok(outcomes)
    }
}

async fn savepoint(tx: &mut sqlx::Transaction<'static, sqlx::Any>, sql: &'static str) -> Result<()> {
    sqlx::query(sql).execute(&mut **tx).await.map(|_| ()).map_err(StoreError::db("an ACME savepoint"))
}

/// One ACME write inside `tx`.
async fn apply_one(store: &SqlStore, tx: &mut sqlx::Transaction<'static, sqlx::Any>, w: &AcmeWrite) -> Result<()> {
    match w {
        AcmeWrite::UseNonce { nonce, expires_at } => {
            sqlx::query("INSERT INTO acme_nonces (nonce, expires_at) VALUES ($1, $2)")
                .bind(nonce)
                .bind(expires_at)
                .execute(&mut **tx)
                .await
                .map_err(|e| match is_unique_violation(&e) {
                    true => StoreError::Conflict { what: "the nonce was used before".into() },
                    false => StoreError::Database { operation: "use a nonce", source: e },
                })?;
            Ok(())
        }
        AcmeWrite::AddOrder { order: o, authzs, audit } => {
            sqlx::query(
                "INSERT INTO acme_orders (id, account, tenant, connection, status, identifiers, not_before, not_after, \
                 expires_at, error, certificate, replaces, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&o.id)
            .bind(&o.account)
            .bind(&o.tenant)
            .bind(&o.connection)
            .bind(&o.status)
            .bind(json_list(&o.identifiers))
            .bind(o.not_before)
            .bind(o.not_after)
            .bind(o.expires_at)
            .bind(&o.error)
            .bind(&o.certificate)
            .bind(&o.replaces)
            .bind(o.created_at)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db("store an ACME order"))?;
            for z in authzs {
                sqlx::query(
                    "INSERT INTO acme_authzs (id, order_id, account, identifier, wildcard, status, expires_at, token, \
                     challenge, challenge_status, validated_at, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&z.id)
                .bind(&z.order_id)
                .bind(&z.account)
                .bind(&z.identifier)
                .bind(i64::from(z.wildcard))
                .bind(&z.status)
                .bind(z.expires_at)
                .bind(&z.token)
                .bind(&z.challenge)
                .bind(&z.challenge_status)
                .bind(z.validated_at)
                .bind(&z.error)
                .execute(&mut **tx)
                .await
                .map_err(StoreError::db("store an ACME authorization"))?;
            }
            log::append(store.log(), tx, std::slice::from_ref(audit)).await?;
            Ok(())
        }
        AcmeWrite::UpdateAuthz { authz: z, order_status, audit } => {
            // Only a pending authorization is answered (of two answers racing, one
            // counts); a valid one may still be deactivated.
            let from = if z.status == "deactivated" { "('pending', 'valid')" } else { "('pending')" };
            let sql = format!(
                "UPDATE acme_authzs SET status = $1, challenge = $2, challenge_status = $3, validated_at = $4, \
                 error = $5 WHERE id = $6 AND status IN {from}"
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&z.status)
                .bind(&z.challenge)
                .bind(&z.challenge_status)
                .bind(z.validated_at)
                .bind(&z.error)
                .bind(&z.id)
                .execute(&mut **tx)
                .await
                .map_err(StoreError::db("update an ACME authorization"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict {
                    what: format!("ACME authorization {:?} was answered before", z.id),
                });
            }
            if let Some(status) = order_status {
                // A ready order needs every authorization valid, counted here, inside the transaction.
                let ready_ok: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM acme_authzs WHERE order_id = $1 AND status <> 'valid'")
                        .bind(&z.order_id)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(StoreError::db("count an order's authorizations"))?;
                let status = match (status.as_str(), ready_ok) {
                    ("ready", n) if n > 0 => "pending",
                    (s, _) => s,
                };
                sqlx::query("UPDATE acme_orders SET status = $1 WHERE id = $2 AND status IN ('pending', 'ready')")
                    .bind(status)
                    .bind(&z.order_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db("update an ACME order"))?;
            }
            log::append(store.log(), tx, std::slice::from_ref(audit)).await?;
            Ok(())
        }
        AcmeWrite::Finalize { order: o, certificates, incident, audit } => {
            // Only a ready order becomes valid: of two finalize requests racing
            // on two nodes, one commits; the other's certificate never leaves.
            let done = sqlx::query(
                "UPDATE acme_orders SET status = $1, error = $2, certificate = $3 WHERE id = $4 AND status = 'ready'",
            )
            .bind(&o.status)
            .bind(&o.error)
            .bind(&o.certificate)
            .bind(&o.id)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db("finalize an ACME order"))?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict { what: format!("ACME order {:?} is not ready", o.id) });
            }
            crate::certificates::insert_certificates_logged(store, tx, certificates, audit).await?;
            if let Some(i) = incident {
                crate::incidents::apply_replacements(tx, &i.incident, &i.replacements, &i.transition).await?;
            }
            Ok(())
        }
    }
}
