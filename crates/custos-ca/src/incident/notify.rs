//! Telling tenants: their webhooks, HMAC-signed notifications delivered
//! from the durable outbox, and the signed acknowledgement they send back.
//!
//! Delivery never blocks revocation or issuance: messages are queued in the
//! same transaction as the replacements they announce, and delivered after.
//! The rules (what is due, how it is signed, what is recorded) live here; the
//! HTTP transport is handed in by the composition root ([`Transport`]).
//! A crash between a POST and its recorded outcome sends that message again:
//! delivery is at least once, and receivers deduplicate on the message id.

use std::time::Duration;

use super::*;

impl Ca {
    /// Sets a tenant's webhook with a fresh HMAC secret, returned once.
    pub async fn set_webhook(&self, principal: &Principal, tenant: &str, url: &str) -> Result<String> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        if self.store.tenant(tenant).await?.is_none() {
            return Err(CaError::UnknownTenant(tenant.into()));
        }
        if url.starts_with("https://") {
            // Refused now rather than failing every delivery later.
            return Err(CaError::Policy(format!(
                "webhook URL {url:?}: https:// delivery is not built yet (no root store ships with custos); \
                 use an http:// URL on a trusted network, or a local relay"
            )));
        }
        if !url.starts_with("http://") || url.len() <= "http://".len() || url.contains(char::is_whitespace) {
            return Err(CaError::Policy(format!("webhook URL {url:?} must be an http:// URL")));
        }
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| CaError::Inconsistent("no randomness".into()))?;
        let secret = hex::encode(secret);
        let record =
            WebhookRecord { tenant: tenant.into(), url: url.into(), secret: secret.clone(), created_at: now() };
        let audit = audit_record(
            principal,
            "tenant.webhook",
            format!("tenant:{tenant}"),
            json!({"tenant": tenant, "url": url}),
        );
        self.store.set_webhook(&record, &[audit]).await?;
        Ok(secret)
    }

    /// Authenticates a tenant's signed acknowledgement ([`sign_ack`]: method,
    /// path, incident, connection, time and body under the tenant's webhook
    /// secret, within five minutes, each signature once): the tenant's
    /// principal, scoped to that connection, or `None`.
    pub async fn authenticate_ack(&self, ack: &SignedAck<'_>, header: &str) -> Result<Option<Principal>> {
        let Some(secret) = self.store.webhooks().await?.into_iter().find(|w| w.tenant == ack.tenant).map(|w| w.secret)
        else {
            return Ok(None);
        };
        let now = now();
        let Some(mac) = verify_ack(&secret, ack, header, now, ACK_TOLERANCE_SECONDS) else { return Ok(None) };
        // A signature is good once: remember it for as long as it could verify.
        let mut seen = self.ack_replay.lock().map_err(|_| CaError::Inconsistent("ack replay cache poisoned".into()))?;
        seen.retain(|_, at| now.abs_diff(*at) <= ACK_TOLERANCE_SECONDS.unsigned_abs() * 2);
        if seen.insert(mac, now).is_some() {
            return Ok(None);
        }
        Ok(Some(Principal::Tenant {
            account: "webhook-hmac".into(),
            tenant: ack.tenant.to_string(),
            connection: Some(ack.connection.to_string()),
        }))
    }

    /// The tenants' webhooks with their secrets, for the notification job.
    pub(super) async fn webhook_secrets(&self) -> Result<HashMap<String, String>> {
        Ok(self.store.webhooks().await?.into_iter().map(|w| (w.tenant, w.secret)).collect())
    }
}

/// Signs a webhook body: `t=TIMESTAMP,v1=HEX(HMAC-SHA256(secret, "TIMESTAMP.BODY"))`.
pub fn sign_webhook(secret_hex: &str, timestamp: i64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_hex.as_bytes());
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a signature made by [`sign_webhook`] within `tolerance` seconds of `now`.
pub fn verify_webhook(secret_hex: &str, header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    // abs_diff: `now - t` overflowed for t near i64::MIN and passed.
    if now.abs_diff(t) > tolerance.unsigned_abs() {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_hex.as_bytes());
    let mut message = t.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    aws_lc_rs::hmac::verify(&key, &message, &v1).is_ok()
}

/// How far an acknowledgement's timestamp may be from now.
pub const ACK_TOLERANCE_SECONDS: i64 = 300;

/// What a tenant's signed acknowledgement is about: the request and the
/// connection it acknowledges, all covered by the MAC.
#[derive(Clone, Copy, Debug)]
pub struct SignedAck<'a> {
    /// HTTP method (`POST`).
    pub method: &'a str,
    /// Request path (`/incident/INC-0001/ack`).
    pub path: &'a str,
    /// The incident.
    pub incident: &'a str,
    /// The tenant.
    pub tenant: &'a str,
    /// The connection.
    pub connection: &'a str,
    /// The request body as sent.
    pub body: &'a [u8],
}

/// The message an acknowledgement's MAC covers. Its label keeps it apart from
/// outbound notifications (`UNIX.BODY`), so neither can be replayed as the other.
fn ack_message(ack: &SignedAck<'_>, t: i64) -> Vec<u8> {
    let mut m = format!(
        "custos-ack-v2\n{}\n{}\n{}\n{}/{}\n{t}\n",
        ack.method, ack.path, ack.incident, ack.tenant, ack.connection
    )
    .into_bytes();
    m.extend_from_slice(ack.body);
    m
}

/// Signs an acknowledgement as a tenant does: `t=UNIX,v2=HEX(HMAC-SHA256(secret,
/// "custos-ack-v2\nMETHOD\nPATH\nINCIDENT\nTENANT/CONNECTION\nUNIX\nBODY"))`.
pub fn sign_ack(secret_hex: &str, ack: &SignedAck<'_>, timestamp: i64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_hex.as_bytes());
    format!("t={timestamp},v2={}", hex::encode(aws_lc_rs::hmac::sign(&key, &ack_message(ack, timestamp)).as_ref()))
}

/// Checks an acknowledgement's signature and time; the MAC when both hold.
pub(super) fn verify_ack(
    secret_hex: &str,
    ack: &SignedAck<'_>,
    header: &str,
    now: i64,
    tolerance: i64,
) -> Option<[u8; 32]> {
    let mut t = None;
    let mut v2 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v2", v)) => v2 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (t, v2) = (t?, v2?);
    if now.abs_diff(t) > tolerance.unsigned_abs() {
        return None;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_hex.as_bytes());
    aws_lc_rs::hmac::verify(&key, &ack_message(ack, t), &v2).ok()?;
    v2.try_into().ok()
}

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
    async fn post(
        &self,
        url: &str,
        body: &str,
        signature: &str,
        timestamp: i64,
    ) -> std::result::Result<(), DeliveryFailure>;
}

/// Why a delivery failed, as custos records it: a class and at most a status,
/// never what the receiver answered (an internal URL's page must not end up
/// in the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// No connection could be made.
    Connect,
    /// The receiver did not answer in time.
    Timeout,
    /// The receiver answered with this non-2xx status.
    Status(u16),
    /// The exchange broke off.
    Protocol,
    /// The tenant has no webhook secret any more.
    NoSecret,
}

impl std::fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryFailure::Connect => f.write_str("connect failed"),
            DeliveryFailure::Timeout => f.write_str("timed out"),
            DeliveryFailure::Status(s) => write!(f, "HTTP {s}"),
            DeliveryFailure::Protocol => f.write_str("HTTP exchange failed"),
            DeliveryFailure::NoSecret => f.write_str("no webhook secret"),
        }
    }
}

/// Seconds to wait after `attempts` failed attempts: 1, 2, 4, ... up to five minutes.
pub fn backoff(attempts: i64) -> i64 {
    1_i64.checked_shl(attempts.clamp(0, 30) as u32).unwrap_or(MAX_BACKOFF_SECONDS).min(MAX_BACKOFF_SECONDS)
}

impl Ca {
    /// Delivers every message due now, concurrently; returns how many were delivered.
    /// A message still failing `give_up_after` seconds after it was queued is
    /// given up (state `failed`, a `notification.give-up` entry), so retries are bounded.
    pub async fn deliver_due(
        &self,
        principal: &Principal,
        transport: &dyn Transport,
        give_up_after: i64,
    ) -> Result<usize> {
        authorize(principal, Operation::DeliverNotifications)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = self.store.outbox_due(now, PER_PASS).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let secrets = self.webhook_secrets().await?;
        // Concurrently on this task: a slow receiver does not hold up the others.
        let results =
            futures_util::future::join_all(due.iter().map(|m| {
                self.deliver(principal, transport, m, secrets.get(&m.tenant).map(String::as_str), give_up_after)
            }))
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
        give_up_after: i64,
    ) -> Result<bool> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let outcome = match secret {
            Some(secret) => {
                let signature = sign_webhook(secret, now, message.body.as_bytes());
                transport.post(&message.url, &message.body, &signature, now).await
            }
            None => Err(DeliveryFailure::NoSecret),
        };
        let state = match &outcome {
            Ok(()) => DeliveryState::Delivered,
            Err(_) if now.saturating_sub(message.created_at) >= give_up_after => DeliveryState::Failed,
            Err(_) => DeliveryState::Pending,
        };
        let error = outcome.err().map(|e| e.to_string());
        let next = now + backoff(message.attempts + 1);
        let action = match state {
            DeliveryState::Delivered => "notification.deliver",
            DeliveryState::Failed => "notification.give-up",
            DeliveryState::Pending => "notification.fail",
        };
        let audit = audit_record(
            principal,
            action,
            format!("tenant:{}", message.tenant),
            json!({"incident": message.incident, "tenant": message.tenant, "message": message.id,
                   "attempt": message.attempts + 1, "error": error}),
        );
        self.store
            .outbox_attempt(message.id, state, now, next, error.as_deref(), &crate::incident::NOTIFIED, &[audit])
            .await?;
        match (&error, state) {
            (Some(e), DeliveryState::Failed) => {
                tracing::error!(tenant = %message.tenant, url = %message.url, attempt = message.attempts + 1, error = %e, "webhook delivery given up")
            }
            (Some(e), _) => {
                tracing::warn!(tenant = %message.tenant, url = %message.url, attempt = message.attempts + 1, error = %e, "webhook delivery failed; will retry")
            }
            _ => {}
        }
        Ok(state == DeliveryState::Delivered)
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
