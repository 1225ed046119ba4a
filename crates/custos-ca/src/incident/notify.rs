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

use zeroize::Zeroizing;

use super::*;

impl Ca {
    /// Sets a tenant's webhook with a fresh HMAC secret, returned once.
    ///
    /// The secret is never stored: it is derived from a secret key in the key
    /// store (HMAC-SHA256 over the tenant and a random salt), and the database
    /// keeps only the salt, so a database reader (the serve role, a backup)
    /// can neither forge a tenant's ack nor a notification to it.
    pub async fn set_webhook(
        &self,
        principal: &Principal,
        tenant: &str,
        url: &str,
        policy: &WebhookPolicy,
    ) -> Result<String> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        if self.store.tenant(tenant).await?.is_none() {
            return Err(CaError::UnknownTenant(tenant.into()));
        }
        policy.check_url(url)?;
        let key = self.webhook_key(principal, true).await?;
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| CaError::Inconsistent("no randomness".into()))?;
        let stored = format!("{DERIVED_PREFIX}{}", hex::encode(salt));
        let secret = self.derive_webhook_secret(&key, tenant, &stored)?;
        let record = WebhookRecord { tenant: tenant.into(), url: url.into(), secret: stored, created_at: now() };
        let audit = audit_record(
            principal,
            "tenant.webhook",
            format!("tenant:{tenant}"),
            json!({"tenant": tenant, "url": url}),
        );
        self.store.set_webhook(&record, &[audit]).await?;
        Ok(secret.to_string())
    }

    /// Authenticates a tenant's signed acknowledgement ([`sign_ack`]: method,
    /// path, incident, connection, time and body under the tenant's webhook
    /// secret, within five minutes, each signature once): the tenant's
    /// principal, scoped to that connection, or `None`.
    pub async fn authenticate_ack(&self, ack: &SignedAck<'_>, header: &str) -> Result<Option<Principal>> {
        let Some(secret) = self.webhook_secrets(&[ack.tenant]).await?.remove(ack.tenant) else {
            return Ok(None);
        };
        let now = now();
        let Some(mac) = verify_ack(&secret, ack, header, now, ACK_TOLERANCE_SECONDS) else { return Ok(None) };
        // A signature is good once, on every node: it is remembered in the
        // database for as long as it could verify (its time ± the tolerance).
        let forget_before = now.saturating_sub(ACK_TOLERANCE_SECONDS * 2);
        if !self.store.use_signature(&hex::encode(mac), now, forget_before).await? {
            return Ok(None);
        }
        Ok(Some(Principal::Tenant {
            account: "webhook-hmac".into(),
            tenant: ack.tenant.to_string(),
            connection: Some(ack.connection.to_string()),
        }))
    }

    /// The webhook secrets of `tenants`, derived in the key store (one MAC
    /// each, a token round trip on PKCS#11: only for the tenants asked about).
    /// A legacy secret stored in clear (before custos derived them) is still
    /// honoured until the tenant's webhook is set again; `serve` warns about
    /// each at start.
    pub(super) async fn webhook_secrets(&self, tenants: &[&str]) -> Result<HashMap<String, Zeroizing<String>>> {
        let mut hooks = self.store.webhooks().await?;
        hooks.retain(|w| tenants.contains(&w.tenant.as_str()));
        if hooks.is_empty() {
            return Ok(HashMap::new());
        }
        let key = match hooks.iter().any(|w| w.secret.starts_with(DERIVED_PREFIX)) {
            true => Some(self.webhook_key(&Principal::System, false).await?),
            false => None,
        };
        let mut out = HashMap::new();
        for w in hooks {
            let secret = match &key {
                Some(key) if w.secret.starts_with(DERIVED_PREFIX) => {
                    self.derive_webhook_secret(key, &w.tenant, &w.secret)?
                }
                _ => Zeroizing::new(w.secret),
            };
            out.insert(w.tenant, secret);
        }
        Ok(out)
    }

    /// Tenants whose webhook secret is still stored in clear (asked by whoever delivers).
    pub async fn clear_webhook_secrets(&self, principal: &Principal) -> Result<Vec<String>> {
        authorize(principal, Operation::DeliverNotifications)?;
        Ok(self
            .store
            .webhooks()
            .await?
            .into_iter()
            .filter(|w| !w.secret.starts_with(DERIVED_PREFIX))
            .map(|w| w.tenant)
            .collect())
    }

    /// The key-store secret key webhook secrets derive from; made (and
    /// recorded, audited) on first use when `create`.
    async fn webhook_key(&self, principal: &Principal, create: bool) -> Result<custos_keys::KeyReference> {
        let keys = self.key_store()?;
        for _ in 0..2 {
            if let Some(id) = self.store.meta(META_WEBHOOK_KEY).await? {
                let record = self
                    .store
                    .key(&id)
                    .await?
                    .ok_or_else(|| CaError::Inconsistent(format!("webhook secret key {id} is not recorded")))?;
                return Ok(custos_keys::KeyReference { backend: record.backend, data: record.reference });
            }
            if !create {
                return Err(CaError::Inconsistent("no webhook secret key is recorded".into()));
            }
            let reference = keys.generate_secret(WEBHOOK_KEY_LABEL)?;
            let mut id = [0u8; 8];
            aws_lc_rs::rand::fill(&mut id).map_err(|_| CaError::Inconsistent("no randomness".into()))?;
            let id = format!("secret-{}", hex::encode(id));
            let time = now();
            let record = custos_types::KeyRecord {
                id: id.clone(),
                backend: reference.backend.clone(),
                algorithm: "hmac-sha256".into(),
                label: WEBHOOK_KEY_LABEL.into(),
                public_key: Vec::new(),
                reference: reference.data.clone(),
                status: custos_types::KeyStatus::Active,
                created_at: time,
            };
            let audit = audit_record(
                principal,
                "key.generate",
                format!("key:{id}"),
                json!({"key": id, "algorithm": "hmac-sha256", "backend": record.backend,
                       "label": WEBHOOK_KEY_LABEL, "purpose": "webhook secrets"}),
            );
            match self.store.add_key(&record, &[(META_WEBHOOK_KEY.into(), id)], &[audit]).await {
                Ok(()) => return Ok(reference),
                // Another process made one first: use theirs, drop ours.
                Err(custos_store::StoreError::Duplicate { .. }) => {
                    let _ = keys.destroy(&reference);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CaError::Inconsistent("the webhook secret key could not be recorded".into()))
    }

    /// A tenant's secret: hex(HMAC-SHA256(key, label, tenant, salt)).
    fn derive_webhook_secret(
        &self,
        key: &custos_keys::KeyReference,
        tenant: &str,
        stored: &str,
    ) -> Result<Zeroizing<String>> {
        let message = format!("custos-webhook-secret-v1\n{tenant}\n{stored}");
        let mac = Zeroizing::new(self.key_store()?.mac(key, message.as_bytes())?);
        Ok(Zeroizing::new(hex::encode(mac.as_ref())))
    }
}

/// What a webhook's stored secret starts with when it is derived, not stored.
const DERIVED_PREFIX: &str = "derived:v1:";
/// The setting naming the secret key webhook secrets derive from.
const META_WEBHOOK_KEY: &str = "webhook_secret_key";
/// The label of that key in the key store.
const WEBHOOK_KEY_LABEL: &str = "custos-webhook-secrets";

/// Where webhooks may point. By default only `https://` to public
/// addresses: a webhook names a place custos will connect to, and a tenant
/// (or whoever sets it) must not turn custos into a client of its own
/// loopback services or of the private network it runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Plain `http://` is accepted (`--danger-allow-http`): notifications and
    /// their signatures travel unencrypted.
    pub allow_http: bool,
    /// Loopback, link-local, private and other non-public addresses are accepted.
    pub allow_private: bool,
}

/// A webhook URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    /// `https://` (else plain `http://`).
    pub https: bool,
    /// The host: a DNS name or an IP address (without brackets).
    pub host: String,
    /// The port, explicit or the scheme's.
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

impl WebhookUrl {
    /// Parses `https://host[:port][/path]` (or `http://`); no user info, no fragment.
    pub fn parse(url: &str) -> Result<WebhookUrl> {
        let bad = |why: &str| CaError::Policy(format!("webhook URL {url:?}: {why}"));
        if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must be at most 2048 characters with no spaces or control characters"));
        }
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err(bad("must be an https:// URL")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if path.contains('#') {
            return Err(bad("must not have a fragment"));
        }
        if authority.contains('@') {
            return Err(bad("must not carry a user name or password"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("names no host"));
        }
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        if !is_ip && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(bad("the host is not a DNS name or an IP address"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is not 1-65535"))?,
            None if https => 443,
            None => 80,
        };
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(WebhookUrl { https, host: host.to_ascii_lowercase(), port, path })
    }
}

impl WebhookPolicy {
    /// Checks a URL before it is stored: scheme, shape, and a host that is an
    /// IP literal or `localhost` must be allowed. DNS names are checked again
    /// at every delivery, against the addresses they resolve to then.
    pub fn check_url(&self, url: &str) -> Result<WebhookUrl> {
        let parsed = WebhookUrl::parse(url)?;
        if !parsed.https && !self.allow_http {
            return Err(CaError::Policy(format!(
                "webhook URL {url:?}: plain http:// is refused (notifications would travel unencrypted); \
                 use https://, or allow it with --danger-allow-http"
            )));
        }
        let literal = match parsed.host.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) if parsed.host == "localhost" || parsed.host.ends_with(".localhost") => {
                Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            }
            Err(_) => None,
        };
        if let Some(ip) = literal
            && !self.address_allowed(ip)
        {
            return Err(CaError::Policy(format!(
                "webhook URL {url:?}: {ip} is a loopback, link-local or private address; \
                 allow such targets with webhooks.allow_private_targets = true"
            )));
        }
        Ok(parsed)
    }

    /// Whether custos may connect to `ip` for a delivery.
    pub fn address_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// Whether `ip` is a public unicast address (not loopback, link-local,
/// private, shared, documentation, multicast, broadcast or unspecified).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
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
    let Some((t, v1)) = signature_header(header, "v1") else { return false };
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

/// The time and MAC of a `t=UNIX,VERSION=HEX` signature header.
fn signature_header(header: &str, version: &str) -> Option<(i64, Vec<u8>)> {
    let mut t = None;
    let mut mac = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some((name, v)) if name == version => mac = hex::decode(v).ok(),
            _ => {}
        }
    }
    Some((t?, mac?))
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
    let (t, v2) = signature_header(header, "v2")?;
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
    /// The target is not allowed: plain http, or an address the policy refuses.
    Refused,
    /// The TLS handshake failed (an untrusted certificate, a wrong name).
    Tls,
}

impl std::fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryFailure::Connect => f.write_str("connect failed"),
            DeliveryFailure::Timeout => f.write_str("timed out"),
            DeliveryFailure::Status(s) => write!(f, "HTTP {s}"),
            DeliveryFailure::Protocol => f.write_str("HTTP exchange failed"),
            DeliveryFailure::NoSecret => f.write_str("no webhook secret"),
            DeliveryFailure::Refused => f.write_str("target refused by the webhook policy"),
            DeliveryFailure::Tls => f.write_str("TLS handshake failed"),
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
        let tenants: Vec<&str> = due.iter().map(|m| m.tenant.as_str()).collect();
        let secrets = self.webhook_secrets(&tenants).await?;
        // Concurrently on this task: a slow receiver does not hold up the others.
        let results =
            futures_util::future::join_all(due.iter().map(|m| {
                self.deliver(principal, transport, m, secrets.get(&m.tenant).map(|s| s.as_str()), give_up_after)
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

/// A notification for `tenant`'s webhook `url`, waiting for its first delivery.
pub(crate) fn queued(
    incident: String,
    tenant: &str,
    connections: Vec<String>,
    url: &str,
    body: String,
    now: i64,
) -> OutboxMessage {
    OutboxMessage {
        id: 0,
        incident,
        tenant: tenant.to_string(),
        connections,
        url: url.to_string(),
        body,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

impl Ca {
    /// Where each tenant's notifications go (the URL only, never the secret):
    /// every tenant's for those who may read all connections, else the
    /// principal's own tenant's.
    pub async fn webhook_urls(&self, principal: &Principal) -> Result<Vec<(String, String)>> {
        let all = self.store.webhooks().await?;
        let own = match principal {
            Principal::Tenant { tenant, .. } => Some(tenant.clone()),
            _ => None,
        };
        authorize(principal, Operation::ReadConnections(own.as_deref()))?;
        Ok(all.into_iter().filter(|w| own.as_ref().is_none_or(|t| t == &w.tenant)).map(|w| (w.tenant, w.url)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_parse_strictly() {
        let u = WebhookUrl::parse("https://Hooks.Example.com/x?y=1").expect("url");
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (true, "hooks.example.com", 443, "/x?y=1"));
        let u = WebhookUrl::parse("http://[::1]:8080").expect("v6");
        assert_eq!((u.https, u.host.as_str(), u.port, u.path.as_str()), (false, "::1", 8080, "/"));
        for bad in [
            "ftp://x",
            "https://",
            "https://user:pw@host/",
            "https://host:0/",
            "https://host:99999/",
            "https://ho st/",
            "https://host/#frag",
            "https://[::1/",
            "https://h_st/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_are_public_https_unless_allowed() {
        let strict = WebhookPolicy::default();
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
        assert!(strict.check_url("http://hooks.example.com/x").is_err());
        for private in [
            "https://127.0.0.1/",
            "https://localhost/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:192.168.1.1]/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
        ] {
            assert!(strict.check_url(private).is_err(), "{private}");
        }
        let lab = WebhookPolicy { allow_http: true, allow_private: true };
        assert!(lab.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(is_public("8.8.8.8".parse().expect("ip")));
        assert!(is_public("2606:4700::1111".parse().expect("ip")));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!((backoff(0), backoff(1), backoff(3)), (1, 2, 8));
        assert_eq!(backoff(9), 300);
        assert_eq!(backoff(1_000), 300);
    }
}
