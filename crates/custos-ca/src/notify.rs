//! Delivering incident notifications from the durable outbox to tenants'
//! webhooks: a signed POST per message, retried with exponential backoff.
//!
//! Delivery never blocks revocation or issuance: messages are queued in the
//! same transaction as the replacements they announce, and delivered after.
//! The rules (what is due, how it is signed, what is recorded) live here; the
//! HTTP transport is handed in by the composition root ([`Transport`]).
//! A crash between a POST and its recorded outcome sends that message again:
//! delivery is at least once, and receivers deduplicate on the message id.

use std::time::Duration;

use custos_store::OutboxMessage;
use serde_json::json;

use crate::authorization::{Operation, authorize};
use crate::incident::sign_webhook;
use crate::{Ca, Principal, Result, audit_record};

/// How long one delivery may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages attempted per pass.
const PER_PASS: i64 = 64;
/// The longest wait between attempts.
const MAX_BACKOFF_SECONDS: i64 = 300;

/// Sends one signed notification; the composition root implements it over HTTP.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `body` to `url` with the signature headers; `Ok` when the receiver answered 2xx.
    async fn post(&self, url: &str, body: &str, signature: &str, timestamp: i64) -> std::result::Result<(), String>;
}

/// Seconds to wait after `attempts` failed attempts: 1, 2, 4, ... up to five minutes.
pub fn backoff(attempts: i64) -> i64 {
    1_i64.checked_shl(attempts.clamp(0, 30) as u32).unwrap_or(MAX_BACKOFF_SECONDS).min(MAX_BACKOFF_SECONDS)
}

impl Ca {
    /// Delivers every message due now, concurrently; returns how many were delivered.
    pub async fn deliver_due(&self, principal: &Principal, transport: &dyn Transport) -> Result<usize> {
        authorize(principal, Operation::DeliverNotifications)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = self.store.outbox_due(now, PER_PASS).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let secrets = self.webhook_secrets().await?;
        // Concurrently on this task: a slow receiver does not hold up the others.
        let results = futures_util::future::join_all(
            due.iter().map(|m| self.deliver(principal, transport, m, secrets.get(&m.tenant).map(String::as_str))),
        )
        .await;
        let mut delivered = 0;
        for r in results {
            if r? {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Whether any notification is due now.
    pub async fn notifications_due(&self) -> Result<bool> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(!self.store.outbox_due(now, 1).await?.is_empty())
    }

    /// Tries one message and records the outcome (with its audit entry).
    async fn deliver(
        &self,
        principal: &Principal,
        transport: &dyn Transport,
        message: &OutboxMessage,
        secret: Option<&str>,
    ) -> Result<bool> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let outcome = match secret {
            Some(secret) => {
                let signature = sign_webhook(secret, now, message.body.as_bytes());
                transport.post(&message.url, &message.body, &signature, now).await
            }
            None => Err(format!("tenant {} has no webhook secret any more", message.tenant)),
        };
        let delivered = outcome.is_ok();
        let next = now + backoff(message.attempts + 1);
        let audit = audit_record(
            principal,
            if delivered { "notification.deliver" } else { "notification.fail" },
            format!("tenant:{}", message.tenant),
            json!({"incident": message.incident, "tenant": message.tenant, "message": message.id, "url": message.url,
                   "attempt": message.attempts + 1, "error": outcome.as_ref().err()}),
        );
        self.store
            .outbox_attempt(
                message.id,
                delivered,
                now,
                next,
                outcome.as_ref().err().map(String::as_str),
                &crate::incident::NOTIFIED,
                &[audit],
            )
            .await?;
        if let Err(e) = &outcome {
            tracing::warn!(tenant = %message.tenant, url = %message.url, attempt = message.attempts + 1, error = %e, "webhook delivery failed; will retry");
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!((backoff(0), backoff(1), backoff(3)), (1, 2, 8));
        assert_eq!(backoff(9), 300);
        assert_eq!(backoff(1_000), 300);
    }
}
