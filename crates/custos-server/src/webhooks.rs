//! Delivering incident notifications from the durable outbox to tenants'
//! webhooks: a signed POST per message, retried with exponential backoff.
//!
//! Delivery never blocks revocation or issuance: messages are queued in the
//! same transaction as the replacements they announce, and delivered after.

use std::time::Duration;

use custos_ca::Ca;
use custos_ca::incident::sign_webhook;
use custos_store::OutboxMessage;

use crate::client::HttpConnection;
use hyper::body::Bytes;
use serde_json::json;

/// How long one delivery may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages attempted per pass.
const PER_PASS: i64 = 64;
/// The longest wait between attempts.
const MAX_BACKOFF_SECONDS: i64 = 300;

/// Seconds to wait after `attempts` failed attempts: 1, 2, 4, ... up to five minutes.
pub fn backoff(attempts: i64) -> i64 {
    1_i64.checked_shl(attempts.clamp(0, 30) as u32).unwrap_or(MAX_BACKOFF_SECONDS).min(MAX_BACKOFF_SECONDS)
}

/// POSTs one body; Ok when the receiver answered 2xx.
async fn post(url: &str, body: &str, signature: &str, timestamp: i64) -> Result<(), String> {
    let mut connection = HttpConnection::connect(url, DELIVERY_TIMEOUT).await?;
    let request = hyper::Request::post("/")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("x-custos-timestamp", timestamp.to_string())
        .header("x-custos-signature", signature);
    // The answer is read (up to 64 KiB) only so the connection ends cleanly.
    connection.send(request, "", Bytes::from(body.to_string()), 64 * 1024).await.map(|_| ())
}

/// Tries one message and records the outcome (with its audit entry).
async fn deliver(ca: &Ca, message: &OutboxMessage, secret: Option<&str>) -> custos_ca::Result<bool> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let outcome = match secret {
        Some(secret) => {
            let signature = sign_webhook(secret, now, message.body.as_bytes());
            post(&message.url, &message.body, &signature, now).await
        }
        None => Err(format!("tenant {} has no webhook secret any more", message.tenant)),
    };
    let delivered = outcome.is_ok();
    let next = now + backoff(message.attempts + 1);
    let audit = ca.audit_record(
        if delivered { "notification.deliver" } else { "notification.fail" },
        format!("tenant:{}", message.tenant),
        json!({"incident": message.incident, "tenant": message.tenant, "message": message.id, "url": message.url,
               "attempt": message.attempts + 1, "error": outcome.as_ref().err()}),
    );
    ca.store()
        .outbox_attempt(message.id, delivered, now, next, outcome.as_ref().err().map(String::as_str), &[audit])
        .await?;
    if let Err(e) = &outcome {
        tracing::warn!(tenant = %message.tenant, url = %message.url, attempt = message.attempts + 1, error = %e, "webhook delivery failed; will retry");
    }
    Ok(delivered)
}

/// Delivers every message due now, concurrently; returns how many were delivered.
pub async fn deliver_due(ca: &Ca) -> custos_ca::Result<usize> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let due = ca.store().outbox_due(now, PER_PASS).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let secrets: std::collections::HashMap<String, String> =
        ca.store().webhooks().await?.into_iter().map(|w| (w.tenant, w.secret)).collect();
    // Concurrently on this task: a slow receiver does not hold up the others.
    let results =
        futures_util::future::join_all(due.iter().map(|m| deliver(ca, m, secrets.get(&m.tenant).map(String::as_str))))
            .await;
    let mut delivered = 0;
    for r in results {
        if r? {
            delivered += 1;
        }
    }
    Ok(delivered)
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
