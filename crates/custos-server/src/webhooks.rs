//! Delivering incident notifications from the durable outbox to tenants'
//! webhooks: a signed POST per message, retried with exponential backoff.
//!
//! Delivery never blocks revocation or issuance: messages are queued in the
//! same transaction as the replacements they announce, and delivered after.

use std::time::Duration;

use custos_ca::Ca;
use custos_ca::incident::sign_webhook;
use custos_store::OutboxMessage;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
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
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        "only http:// webhooks are delivered so far (https needs a root store custos does not ship yet)".to_string()
    })?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::post(&path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-custos-timestamp", timestamp.to_string())
            .header("x-custos-signature", signature)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        // Read (a bounded part of) the answer so the connection closes cleanly.
        let _ = Limited::new(response.into_body(), 64 * 1024).collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
    };
    tokio::time::timeout(DELIVERY_TIMEOUT, attempt).await.map_err(|_| "timed out".to_string())?
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
