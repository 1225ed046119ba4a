//! ACME (RFC 8555) with External Account Binding and ARI (RFC 9773): the
//! rules. custos-acme parses and checks the JWS; this module decides what a
//! request may do and commits it with its audit entry (the account is the
//! principal); custos-server speaks HTTP; custos-node dials the challenges.
//!
//! Accounts are bound by a single-use EAB key to a tenant, or to one of its
//! connections, and order names within that connection's SAN policy. A
//! certificate an ACME client holds the key of is never re-keyed by an
//! incident: ARI moves its renewal window into the past, and the client's
//! next order re-establishes the connection (no acknowledgement needed).
//!
//! Every write (a nonce used up, an order, a challenge's outcome, a
//! finalized order with its certificate) is group-committed: concurrent
//! requests share one transaction, each write in a savepoint of its own, and
//! none is answered before its transaction committed. Nonces are issued
//! without a write (an HMAC over expiry and randomness, with a key every node
//! shares through the database) and used up durably, so a nonce works on any
//! node, once.
//!
//! Crash states: a challenge is validated inside its request and written
//! once (a crash leaves it pending; the client asks again); a finalize
//! commits the certificate and the order together (a crash before leaves
//! the order ready, and the signed certificate never left); the retirement
//! of an incident's old certificate after it is finished by `incident close`
//! (as after an acknowledgement).

use std::sync::Arc;

use custos_acme::{
    AcmeError, Authorization, CertId, Challenge, Directory, DirectoryMeta, Eab, Identifier, Jwk, Jws, KeyRef, Order,
    ProblemType, RenewalInfo, SuggestedWindow, b64u, rfc3339,
};
use custos_store::{AcmeAccountRecord, AcmeAuthzRecord, AcmeEabRecord, AcmeOrderRecord, AcmeWrite, StoreError};
use custos_types::{CertificateStatus, ConnectionState, IncidentReplacements, IncidentState, Replacement, Transition};
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::Operation;
use crate::{Ca, CaError, IssueRequest, KeySource, Principal, audit_record, visible};

/// What the `key_origin` of a certificate issued to an ACME client says.
pub const KEY_ORIGIN: &str = "acme";

/// An order's connection moves from pending to acknowledged when its ACME
/// client's new certificate commits (then the old one is retired).
const REESTABLISH: Transition = Transition { from: &[ConnectionState::Pending], to: ConnectionState::Acknowledged };

/// Identifiers per order, at most.
pub const MAX_IDENTIFIERS: usize = 100;

/// How custos's ACME server behaves.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The URL the ACME resources live under, e.g. `https://ca.example:8443/acme`.
    pub base_url: String,
    /// How long a nonce stays usable, seconds.
    pub nonce_lifetime_s: i64,
    /// How long an order and its authorizations stay usable, seconds.
    pub order_lifetime_s: i64,
    /// Accounts per tenant, at most.
    pub max_accounts_per_tenant: i64,
    /// How often an ARI client should ask again (Retry-After), seconds.
    pub ari_retry_after_s: i64,
}

/// Proves that a client controls a name (does the network I/O; custos-node implements it).
#[async_trait::async_trait]
pub trait ChallengeValidator: Send + Sync {
    /// The challenge types it can check (`http-01`, `tls-alpn-01`, `dns-01`).
    fn supported(&self) -> Vec<&'static str>;

    /// Checks that `name` answers challenge `kind` with `key_authorization`.
    async fn validate(&self, kind: &str, name: &str, token: &str, key_authorization: &str) -> Result<(), AcmeError>;
}

/// Who signed a request.
#[derive(Clone, Debug)]
pub enum Caller {
    /// An existing account (`kid`), with its key.
    Account(AcmeAccountRecord, Jwk),
    /// A key not (yet) known as an account (`jwk`).
    Key(Jwk),
}

/// A verified request: its JWS (signature checked, nonce used) and who signed it.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The request.
    pub jws: Jws,
    /// Who signed it.
    pub caller: Caller,
}

/// A finalized order's certificate with its chain, as PEM.
pub struct CertificateChain {
    /// Leaf first, then the issuing CAs; the root, a trust anchor clients hold, is left out.
    pub pem: String,
}

/// The ACME service: a [`Ca`], the settings and the challenge validator.
pub struct Acme {
    ca: Arc<Ca>,
    settings: AcmeSettings,
    validator: Arc<dyn ChallengeValidator>,
    /// The key nonces are MACed with, read from (or first written to) the database.
    nonce_key: tokio::sync::OnceCell<aws_lc_rs::hmac::Key>,
    /// Writes waiting for the next group commit.
    writes: crate::group::GroupCommit<AcmeWrite, Result<(), StoreError>>,
    /// Accounts by id as every signed request reads them, reused for under a
    /// second (a deactivation or key change on another node holds here within
    /// that time; one made through this process clears them at once).
    accounts: crate::fresh::Fresh<String, AcmeAccountRecord>,
}

/// Where the nonce key lives in the settings.
const NONCE_KEY_META: &str = "acme_nonce_key";

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_b64u(bytes: usize) -> Result<String, AcmeError> {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| internal("the random generator failed"))?;
    Ok(b64u(&b))
}

fn internal(detail: &str) -> AcmeError {
    AcmeError::new(ProblemType::ServerInternal, detail)
}

fn store_error(e: StoreError) -> AcmeError {
    tracing::error!(error = %e, "ACME storage failed");
    internal("storage failed; try again")
}

/// A domain error as an ACME problem: a policy refusal is `kind`.
fn ca_error(e: CaError, kind: ProblemType) -> AcmeError {
    match e {
        CaError::Policy(d) => AcmeError::new(kind, d),
        CaError::Pki(p) => AcmeError::new(ProblemType::BadCsr, p.to_string()),
        e @ (CaError::Forbidden { .. } | CaError::NotVisible { .. }) => AcmeError::unauthorized(e.to_string()),
        e @ (CaError::UnknownConnection { .. } | CaError::UnknownTenant(_)) => AcmeError::unauthorized(e.to_string()),
        CaError::BulkLine { source, .. } => ca_error(*source, kind),
        other => {
            tracing::error!(error = %other, "ACME operation failed");
            internal("the operation failed on custos's side")
        }
    }
}

fn principal_of(a: &AcmeAccountRecord) -> Principal {
    Principal::AcmeAccount { account: a.id.clone(), tenant: a.tenant.clone(), connection: a.connection.clone() }
}

fn problem_json(e: &AcmeError) -> String {
    serde_json::to_string(&e.problem()).unwrap_or_default()
}

impl Ca {
    /// Makes a single-use External Account Binding key for ACME clients of
    /// `tenant` (limited to `connection` if given); returns `(kid, hmac_key)`,
    /// the key base64url. The key binds one account, within `lifetime_s`.
    pub async fn create_acme_binding(
        &self,
        principal: &Principal,
        tenant: &str,
        connection: Option<&str>,
        lifetime_s: i64,
    ) -> crate::Result<(String, zeroize::Zeroizing<String>)> {
        visible(principal, Operation::CreateAcmeBinding { tenant, connection }, || {
            CaError::UnknownTenant(tenant.to_string())
        })?;
        match connection {
            Some(c) => {
                self.find_connection(tenant, c).await?;
            }
            None if self.store.tenant(tenant).await?.is_none() => return Err(CaError::UnknownTenant(tenant.into())),
            None => {}
        }
        let random = |n| random_b64u(n).map_err(|e| CaError::Inconsistent(e.detail));
        let kid = format!("eab-{}", random(12)?);
        // A key starting with '-' reads as an option to certbot's and lego's
        // parsers (`--eab-hmac-key -x…` fails): draw again (1 in 64; the cost
        // is 0.02 of 256 bits).
        let mut key = zeroize::Zeroizing::new(random(32)?);
        for _ in 0..64 {
            if !key.starts_with('-') {
                break;
            }
            key = zeroize::Zeroizing::new(random(32)?);
        }
        let t = now();
        let record = AcmeEabRecord {
            kid: kid.clone(),
            hmac_key: key.to_string(),
            tenant: tenant.into(),
            connection: connection.map(str::to_string),
            created_at: t,
            expires_at: t + lifetime_s,
            account: None,
        };
        let audit = audit_record(
            principal,
            "acme.eab.create",
            format!("acme-eab:{kid}"),
            json!({"kid": kid, "tenant": tenant, "connection": connection, "expires_at": record.expires_at}),
        );
        self.store.add_eab(&record, &audit).await?;
        Ok((kid, key))
    }
}

impl Acme {
    /// The service over `ca`.
    pub fn new(ca: Arc<Ca>, settings: AcmeSettings, validator: Arc<dyn ChallengeValidator>) -> Acme {
        Acme {
            ca,
            settings,
            validator,
            nonce_key: tokio::sync::OnceCell::new(),
            writes: Default::default(),
            accounts: Default::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AcmeSettings {
        &self.settings
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.settings.base_url)
    }

    /// The directory.
    pub fn directory(&self) -> Directory {
        Directory {
            new_nonce: self.url("new-nonce"),
            new_account: self.url("new-account"),
            new_order: self.url("new-order"),
            revoke_cert: self.url("revoke-cert"),
            key_change: self.url("key-change"),
            renewal_info: self.url("renewal-info"),
            meta: DirectoryMeta { external_account_required: true, website: None },
        }
    }

    /// The nonce key: every node reads the same one from the database; the
    /// first to need it makes it (with an audit entry), written only if none
    /// is there, so nodes racing to make it all end up with the first one's.
    async fn nonce_key(&self) -> Result<&aws_lc_rs::hmac::Key, AcmeError> {
        self.nonce_key
            .get_or_try_init(|| async {
                let stored = self.ca.store.meta(NONCE_KEY_META).await.map_err(store_error)?;
                let text = match stored {
                    Some(k) => k,
                    None => {
                        let made = random_b64u(32)?;
                        let audit = audit_record(
                            &Principal::System,
                            "acme.nonce-key.create",
                            "acme:nonces".into(),
                            json!({"purpose": "MAC of ACME nonces (anti-replay, not secrecy)"}),
                        );
                        self.ca.store.set_meta_once(NONCE_KEY_META, &made, &[audit]).await.map_err(store_error)?
                    }
                };
                let key = custos_acme::from_b64u(&text, "the nonce key")?;
                Ok(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key))
            })
            .await
    }

    /// A fresh nonce: expiry, randomness and a MAC over both, so issuing it
    /// writes nothing and any node can check it; [`Acme::verify`] uses it up.
    pub async fn new_nonce(&self) -> Result<String, AcmeError> {
        let key = self.nonce_key().await?;
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&(now() + self.settings.nonce_lifetime_s).to_be_bytes());
        aws_lc_rs::rand::fill(&mut body[8..]).map_err(|_| internal("the random generator failed"))?;
        let tag = aws_lc_rs::hmac::sign(key, &body);
        Ok(b64u(&[&body[..], &tag.as_ref()[..16]].concat()))
    }

    /// Uses a nonce up: it must be one of ours, unexpired, and unused on every node.
    async fn use_nonce(&self, nonce: &str) -> Result<(), AcmeError> {
        let bad = |d: &str| AcmeError::new(ProblemType::BadNonce, d);
        let raw = custos_acme::from_b64u(nonce, "nonce").map_err(|_| bad("the nonce is not one this server issued"))?;
        if raw.len() != 32 {
            return Err(bad("the nonce is not one this server issued"));
        }
        let key = self.nonce_key().await?;
        // The tag is HMAC-SHA256 truncated to 128 bits, compared in constant time.
        let tag = aws_lc_rs::hmac::sign(key, &raw[..16]);
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..16], &raw[16..])
            .map_err(|_| bad("the nonce is not one this server issued"))?;
        let expires_at = i64::from_be_bytes(raw[..8].try_into().map_err(|_| bad("bad nonce"))?);
        if expires_at < now() {
            return Err(bad("the nonce has expired"));
        }
        match self.write(AcmeWrite::UseNonce { nonce: nonce.to_string(), expires_at }).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(bad("the nonce was used before")),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Commits `w` with whatever other writes are waiting (see the module comment).
    async fn write(&self, w: AcmeWrite) -> Result<(), StoreError> {
        let store = self.ca.store.clone();
        let _observe = crate::metrics::ObserveOnDrop(&self.ca.metrics.audit_append_seconds, std::time::Instant::now());
        let outcome = self.writes.submit(w, move |group| async move {
            let (writes, replies): (Vec<AcmeWrite>, Vec<_>) = group.into_iter().unzip();
            match store.apply_acme(&writes).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => {
                    let said = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Unavailable(said.clone())));
                    }
                }
            }
        });
        outcome.await.unwrap_or_else(|| Err(StoreError::Invalid("the ACME commit stopped before it answered".into())))
    }

    /// Parses and verifies a request that arrived at `url`: the `url`
    /// header, the signature (by the account's key or the embedded one), then
    /// the nonce (used up only by a request that verified).
    pub async fn verify(&self, body: &[u8], url: &str) -> Result<Verified, AcmeError> {
        let jws = Jws::parse(body)?;
        if jws.protected.url != url {
            return Err(AcmeError::unauthorized(format!(
                "the JWS url {:?} is not the URL requested ({url:?})",
                jws.protected.url
            )));
        }
        let caller = match &jws.protected.key {
            KeyRef::Jwk(key) => {
                jws.verify(key)?;
                Caller::Key(key.clone())
            }
            KeyRef::Kid(kid) => {
                let id = kid
                    .strip_prefix(&format!("{}/acct/", self.settings.base_url))
                    .ok_or_else(|| AcmeError::malformed(format!("kid {kid:?} is not an account URL of this server")))?;
                let account = match self.accounts.get(&id.to_string()) {
                    Some(account) => account,
                    None => {
                        let account = self.ca.store.acme_account(id).await.map_err(store_error)?.ok_or_else(|| {
                            AcmeError::new(ProblemType::AccountDoesNotExist, format!("no account {id:?}"))
                        })?;
                        self.accounts.put(id.to_string(), account.clone());
                        account
                    }
                };
                let key =
                    Jwk::parse(&serde_json::from_str(&account.jwk).map_err(|_| internal("stored key unreadable"))?)?;
                jws.verify(&key)?;
                if account.status != "valid" {
                    return Err(AcmeError::unauthorized(format!("account {id} is {}", account.status)));
                }
                Caller::Account(account, key)
            }
        };
        let nonce = jws
            .protected
            .nonce
            .as_deref()
            .ok_or_else(|| AcmeError::new(ProblemType::BadNonce, "the protected header has no nonce"))?;
        self.use_nonce(nonce).await?;
        Ok(Verified { jws, caller })
    }

    fn account_of(v: &Verified) -> Result<&AcmeAccountRecord, AcmeError> {
        match &v.caller {
            Caller::Account(a, _) => Ok(a),
            Caller::Key(_) => {
                Err(AcmeError::malformed("this request must be signed with the account's kid, not a jwk"))
            }
        }
    }

    /// The account as a resource.
    pub fn account_view(&self, a: &AcmeAccountRecord) -> custos_acme::Account {
        custos_acme::Account {
            status: a.status.clone(),
            contact: a.contact.clone(),
            orders: self.url(&format!("acct/{}/orders", a.id)),
        }
    }

    /// The account's URL.
    pub fn account_url(&self, a: &AcmeAccountRecord) -> String {
        self.url(&format!("acct/{}", a.id))
    }

    /// newAccount: returns the account and whether it was created now.
    pub async fn new_account(&self, v: &Verified) -> Result<(AcmeAccountRecord, bool), AcmeError> {
        let Caller::Key(key) = &v.caller else {
            return Err(AcmeError::malformed("newAccount is signed with a jwk, not a kid"));
        };
        let request: custos_acme::AccountRequest = v.jws.payload_as("newAccount")?;
        let thumbprint = key.thumbprint();
        if let Some(existing) = self.ca.store.acme_account_by_key(&thumbprint).await.map_err(store_error)? {
            return Ok((existing, false));
        }
        if request.only_return_existing == Some(true) {
            return Err(AcmeError::new(ProblemType::AccountDoesNotExist, "no account has this key"));
        }
        let contact = check_contacts(request.contact.unwrap_or_default())?;
        let eab = Eab::parse(request.external_account_binding.as_ref().ok_or_else(|| {
            AcmeError::new(
                ProblemType::ExternalAccountRequired,
                "this CA binds every account to a tenant: get a key id and HMAC key with `custos acme eab TENANT`",
            )
        })?)?;
        let binding = self.ca.store.eab(&eab.kid).await.map_err(store_error)?;
        let binding = match binding {
            Some(b) if b.account.is_none() && b.expires_at >= now() => b,
            Some(b) if b.account.is_some() => {
                return Err(AcmeError::unauthorized(format!("EAB key id {:?} has bound an account already", eab.kid)));
            }
            Some(_) => return Err(AcmeError::unauthorized(format!("EAB key id {:?} has expired", eab.kid))),
            None => return Err(AcmeError::unauthorized(format!("unknown EAB key id {:?}", eab.kid))),
        };
        let hmac_key = custos_acme::from_b64u(&binding.hmac_key, "the stored EAB key")?;
        eab.verify(&hmac_key, key, &self.url("new-account"))?;
        let count = self.ca.store.acme_account_count(&binding.tenant).await.map_err(store_error)?;
        if count >= self.settings.max_accounts_per_tenant {
            return Err(AcmeError::new(
                ProblemType::RateLimited,
                format!("tenant {} has {count} ACME accounts, the most allowed", binding.tenant),
            ));
        }
        let account = AcmeAccountRecord {
            id: random_b64u(12)?,
            thumbprint,
            jwk: key.canonical(),
            tenant: binding.tenant.clone(),
            connection: binding.connection.clone(),
            status: "valid".into(),
            contact,
            eab_kid: binding.kid.clone(),
            created_at: now(),
        };
        let audit = audit_record(
            &principal_of(&account),
            "acme.account.new",
            format!("acme-account:{}", account.id),
            json!({"account": account.id, "tenant": account.tenant, "connection": account.connection,
                   "eab_kid": account.eab_kid, "jwk_thumbprint": account.thumbprint}),
        );
        match self.ca.store.add_acme_account(&account, &audit).await {
            Ok(()) => Ok((account, true)),
            // Two requests with the same key raced: the other one made it.
            Err(StoreError::Duplicate { .. }) => {
                let existing = self.ca.store.acme_account_by_key(&account.thumbprint).await.map_err(store_error)?;
                existing.map(|a| (a, false)).ok_or_else(|| internal("account vanished"))
            }
            Err(StoreError::Conflict { .. }) => {
                Err(AcmeError::unauthorized(format!("EAB key id {:?} has bound an account already", eab.kid)))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// POST to an account URL: read it (POST-as-GET), change its contact, or deactivate it.
    pub async fn account(&self, v: &Verified, id: &str) -> Result<AcmeAccountRecord, AcmeError> {
        let account = Self::account_of(v)?;
        if account.id != id {
            return Err(AcmeError::unauthorized("an account may only read or change itself"));
        }
        if v.jws.is_post_as_get() {
            return Ok(account.clone());
        }
        let request: custos_acme::AccountRequest = v.jws.payload_as("account update")?;
        let mut updated = account.clone();
        if let Some(contact) = request.contact {
            updated.contact = check_contacts(contact)?;
        }
        match request.status.as_deref() {
            None => {}
            Some("deactivated") => updated.status = "deactivated".into(),
            Some(other) => {
                return Err(AcmeError::malformed(format!(
                    "an account's status can only become deactivated, not {other:?}"
                )));
            }
        }
        if updated == *account {
            return Ok(updated);
        }
        let audit = audit_record(
            &principal_of(account),
            "acme.account.update",
            format!("acme-account:{id}"),
            json!({"account": id, "status": updated.status, "contacts": updated.contact.len()}),
        );
        let outcome = self.ca.store.update_acme_account(&updated, &audit).await;
        self.accounts.clear();
        outcome.map_err(store_error)?;
        Ok(updated)
    }

    /// keyChange (RFC 8555 section 7.3.5): the inner JWS, signed by the new
    /// key, names the account and its old key.
    pub async fn key_change(&self, v: &Verified) -> Result<AcmeAccountRecord, AcmeError> {
        let account = Self::account_of(v)?;
        let inner = Jws::parse(&v.jws.payload).map_err(|e| AcmeError::malformed(format!("inner JWS: {}", e.detail)))?;
        let KeyRef::Jwk(new_key) = &inner.protected.key else {
            return Err(AcmeError::malformed("the inner JWS must carry the new key as jwk"));
        };
        inner.verify(new_key)?;
        if inner.protected.nonce.is_some() {
            return Err(AcmeError::malformed("the inner JWS of a keyChange must not carry a nonce"));
        }
        if inner.protected.url != v.jws.protected.url {
            return Err(AcmeError::malformed("the inner JWS url differs from the outer one"));
        }
        let request: custos_acme::KeyChangeRequest = inner.payload_as("keyChange")?;
        if request.account != self.account_url(account) {
            return Err(AcmeError::unauthorized("keyChange names another account"));
        }
        if Jwk::parse(&request.old_key)?.thumbprint() != account.thumbprint {
            return Err(AcmeError::unauthorized("oldKey is not the account's current key"));
        }
        let thumbprint = new_key.thumbprint();
        if self.ca.store.acme_account_by_key(&thumbprint).await.map_err(store_error)?.is_some() {
            return Err(AcmeError::malformed("the new key belongs to an account already"));
        }
        let updated = AcmeAccountRecord { jwk: new_key.canonical(), thumbprint: thumbprint.clone(), ..account.clone() };
        let audit = audit_record(
            &principal_of(account),
            "acme.account.key-change",
            format!("acme-account:{}", account.id),
            json!({"account": account.id, "old_thumbprint": account.thumbprint, "new_thumbprint": thumbprint}),
        );
        let outcome = self.ca.store.update_acme_account(&updated, &audit).await;
        self.accounts.clear();
        match outcome {
            Ok(()) => Ok(updated),
            Err(StoreError::Duplicate { .. }) => Err(AcmeError::malformed("the new key belongs to an account already")),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The account's orders (newest first, up to 1,000), as URLs.
    pub async fn orders(&self, v: &Verified, id: &str) -> Result<Vec<String>, AcmeError> {
        let account = Self::account_of(v)?;
        if account.id != id {
            return Err(AcmeError::unauthorized("an account may only list its own orders"));
        }
        let orders = self.ca.store.acme_orders(id, 1000).await.map_err(store_error)?;
        Ok(orders.iter().map(|o| self.url(&format!("order/{}", o.id))).collect())
    }

    /// newOrder: names within the account's connection's policy, one
    /// authorization per name.
    pub async fn new_order(&self, v: &Verified) -> Result<(AcmeOrderRecord, Vec<AcmeAuthzRecord>), AcmeError> {
        let account = Self::account_of(v)?;
        let request: custos_acme::OrderRequest = v.jws.payload_as("newOrder")?;
        if request.not_before.is_some() || request.not_after.is_some() {
            return Err(AcmeError::malformed(
                "custos sets a certificate's lifetime from the connection's policy: omit notBefore and notAfter",
            ));
        }
        if request.identifiers.is_empty() || request.identifiers.len() > MAX_IDENTIFIERS {
            return Err(AcmeError::malformed(format!("an order names 1 to {MAX_IDENTIFIERS} identifiers")));
        }
        let mut names: Vec<String> = Vec::new();
        for id in &request.identifiers {
            if id.kind != "dns" {
                return Err(AcmeError::new(
                    ProblemType::UnsupportedIdentifier,
                    format!("identifier type {:?}: custos issues for dns names only", id.kind),
                ));
            }
            let name = id.value.trim_end_matches('.').to_ascii_lowercase();
            if name.starts_with("*.") && !self.validator.supported().contains(&"dns-01") {
                return Err(AcmeError::new(
                    ProblemType::RejectedIdentifier,
                    format!("{name}: a wildcard needs dns-01, which this custos does not validate"),
                ));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let connection = self.connection_for(account, &names).await?;
        let replaces = match &request.replaces {
            None => None,
            Some(text) => Some(self.replaced_serial(account, text).await?),
        };
        let t = now();
        let expires_at = t + self.settings.order_lifetime_s;
        let order = AcmeOrderRecord {
            id: random_b64u(12)?,
            account: account.id.clone(),
            tenant: account.tenant.clone(),
            connection: connection.clone(),
            status: "pending".into(),
            identifiers: names.clone(),
            not_before: None,
            not_after: None,
            expires_at,
            error: None,
            certificate: None,
            replaces: replaces.clone(),
            created_at: t,
        };
        let mut authzs = Vec::with_capacity(names.len());
        for name in &names {
            let (identifier, wildcard) = match name.strip_prefix("*.") {
                Some(base) => (base.to_string(), true),
                None => (name.clone(), false),
            };
            authzs.push(AcmeAuthzRecord {
                id: random_b64u(12)?,
                order_id: order.id.clone(),
                account: account.id.clone(),
                identifier,
                wildcard,
                status: "pending".into(),
                expires_at,
                token: random_b64u(32)?,
                challenge: None,
                challenge_status: "pending".into(),
                validated_at: None,
                error: None,
            });
        }
        let audit = audit_record(
            &principal_of(account),
            "acme.order.new",
            format!("acme-order:{}", order.id),
            json!({"order": order.id, "account": account.id, "tenant": order.tenant, "connection": connection,
                   "identifiers": names, "replaces": replaces}),
        );
        let add = AcmeWrite::AddOrder { order: order.clone(), authzs: authzs.clone(), audit };
        self.write(add).await.map_err(store_error)?;
        Ok((order, authzs))
    }

    /// The connection an order's names go to: the account's, if its binding
    /// named one, else the tenant's one connection whose policy allows them all.
    async fn connection_for(&self, account: &AcmeAccountRecord, names: &[String]) -> Result<String, AcmeError> {
        let candidates = match &account.connection {
            Some(c) => {
                let conn = self.ca.store.connection(&account.tenant, c).await.map_err(store_error)?;
                vec![conn.ok_or_else(|| AcmeError::unauthorized(format!("connection {c} no longer exists")))?]
            }
            None => self.ca.store.connections(Some(&account.tenant)).await.map_err(store_error)?,
        };
        let fits: Vec<&custos_types::ConnectionRecord> = candidates
            .iter()
            .filter(|c| names.iter().all(|n| crate::policy::san_allowed(n, &c.allowed_sans)))
            .collect();
        match fits.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => {
                let refused: Vec<&str> = names
                    .iter()
                    .filter(|n| !candidates.iter().any(|c| crate::policy::san_allowed(n, &c.allowed_sans)))
                    .map(String::as_str)
                    .collect();
                let which = match &account.connection {
                    Some(c) => format!("connection {}/{c}", account.tenant),
                    None => format!("any one connection of tenant {}", account.tenant),
                };
                let detail = match refused.is_empty() {
                    true => format!("no one connection allows all of {}", names.join(", ")),
                    false => format!("{} not allowed by the policy of {which}", refused.join(", ")),
                };
                Err(AcmeError::new(ProblemType::RejectedIdentifier, detail))
            }
            many => Err(AcmeError::new(
                ProblemType::RejectedIdentifier,
                format!(
                    "the names fit several connections ({}): bind the account to one (`custos acme eab {} --connection C`)",
                    many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                    account.tenant
                ),
            )),
        }
    }

    /// The serial of the certificate a `replaces` names, if it is the account's to replace.
    async fn replaced_serial(&self, account: &AcmeAccountRecord, cert_id: &str) -> Result<String, AcmeError> {
        let id = CertId::parse(cert_id)?;
        let record = self.ca.store.certificate(&id.serial_hex()).await.map_err(store_error)?;
        match record {
            Some(c)
                if c.tenant == account.tenant && account.connection.as_ref().is_none_or(|own| *own == c.connection) =>
            {
                Ok(c.serial)
            }
            _ => {
                Err(AcmeError::malformed(format!("replaces names no certificate of this account's tenant: {cert_id}")))
            }
        }
    }

    async fn own_order(&self, account: &AcmeAccountRecord, id: &str) -> Result<AcmeOrderRecord, AcmeError> {
        match self.ca.store.acme_order(id).await.map_err(store_error)? {
            Some(o) if o.account == account.id => Ok(o),
            _ => Err(AcmeError::malformed(format!("no order {id:?} of this account"))),
        }
    }

    /// An order as a resource (its status judged now: an expired pending order is invalid).
    pub async fn order_view(&self, order: &AcmeOrderRecord) -> Result<Order, AcmeError> {
        let authzs = self.ca.store.acme_authzs(&order.id).await.map_err(store_error)?;
        let expired = order.expires_at < now() && order.status != "valid";
        Ok(Order {
            status: if expired { "invalid".into() } else { order.status.clone() },
            expires: rfc3339(order.expires_at),
            identifiers: order
                .identifiers
                .iter()
                .map(|n| Identifier { kind: "dns".into(), value: n.clone() })
                .collect(),
            not_before: None,
            not_after: None,
            error: order.error.as_deref().and_then(|e| serde_json::from_str(e).ok()),
            authorizations: authzs.iter().map(|z| self.url(&format!("authz/{}", z.id))).collect(),
            finalize: self.url(&format!("order/{}/finalize", order.id)),
            certificate: order.certificate.as_ref().map(|s| self.url(&format!("cert/{s}"))),
            replaces: None,
        })
    }

    /// The order's URL.
    pub fn order_url(&self, order: &AcmeOrderRecord) -> String {
        self.url(&format!("order/{}", order.id))
    }

    /// POST-as-GET on an order.
    pub async fn order(&self, v: &Verified, id: &str) -> Result<AcmeOrderRecord, AcmeError> {
        self.own_order(Self::account_of(v)?, id).await
    }

    /// An authorization as a resource.
    pub fn authz_view(&self, z: &AcmeAuthzRecord) -> Authorization {
        let expired = z.expires_at < now() && z.status == "pending";
        let kinds: Vec<&str> = match z.challenge.as_deref() {
            Some(chosen) => vec![chosen],
            None if z.wildcard => vec!["dns-01"],
            None => self.validator.supported(),
        };
        let challenges = kinds
            .into_iter()
            .filter(|k| !z.wildcard || *k == "dns-01")
            .map(|k| Challenge {
                kind: k.to_string(),
                url: self.url(&format!("chall/{}/{k}", z.id)),
                status: match z.challenge.as_deref() == Some(k) {
                    true => z.challenge_status.clone(),
                    false => "pending".into(),
                },
                token: z.token.clone(),
                validated: z.validated_at.map(rfc3339),
                error: z.error.as_deref().and_then(|e| serde_json::from_str(e).ok()),
            })
            .collect();
        Authorization {
            identifier: Identifier { kind: "dns".into(), value: z.identifier.clone() },
            status: if expired { "expired".into() } else { z.status.clone() },
            expires: rfc3339(z.expires_at),
            challenges,
            wildcard: z.wildcard,
        }
    }

    async fn own_authz(&self, account: &AcmeAccountRecord, id: &str) -> Result<AcmeAuthzRecord, AcmeError> {
        match self.ca.store.acme_authz(id).await.map_err(store_error)? {
            Some(z) if z.account == account.id => Ok(z),
            _ => Err(AcmeError::malformed(format!("no authorization {id:?} of this account"))),
        }
    }

    /// POST to an authorization: read it, or deactivate it.
    pub async fn authz(&self, v: &Verified, id: &str) -> Result<AcmeAuthzRecord, AcmeError> {
        let account = Self::account_of(v)?;
        let mut z = self.own_authz(account, id).await?;
        if v.jws.is_post_as_get() {
            return Ok(z);
        }
        #[derive(serde::Deserialize)]
        struct Update {
            status: Option<String>,
        }
        let update: Update = v.jws.payload_as("authorization update")?;
        match update.status.as_deref() {
            Some("deactivated") if z.status == "pending" || z.status == "valid" => {
                z.status = "deactivated".into();
                let audit = audit_record(
                    &principal_of(account),
                    "acme.authz.deactivate",
                    format!("acme-authz:{id}"),
                    json!({"authz": id, "order": z.order_id, "identifier": z.identifier}),
                );
                let update = AcmeWrite::UpdateAuthz { authz: z.clone(), order_status: Some("invalid".into()), audit };
                match self.write(update).await {
                    Ok(()) => Ok(z),
                    Err(StoreError::Conflict { .. }) => self.own_authz(account, id).await,
                    Err(e) => Err(store_error(e)),
                }
            }
            _ => Err(AcmeError::malformed("an authorization can only be deactivated, and only while pending or valid")),
        }
    }

    /// A client says it is ready for challenge `kind`: custos validates it
    /// now and records the outcome (and the order's, once every name is valid).
    pub async fn challenge(&self, v: &Verified, authz_id: &str, kind: &str) -> Result<AcmeAuthzRecord, AcmeError> {
        let account = Self::account_of(v)?;
        let (key, mut z) = match &v.caller {
            Caller::Account(_, key) => (key, self.own_authz(account, authz_id).await?),
            Caller::Key(_) => return Err(AcmeError::malformed("sign with the account's kid")),
        };
        if !self.validator.supported().contains(&kind) || (z.wildcard && kind != "dns-01") {
            return Err(AcmeError::malformed(format!("this authorization has no {kind} challenge")));
        }
        if z.status != "pending" || z.challenge_status != "pending" {
            // Answered before: the client reads the outcome.
            return Ok(z);
        }
        if z.expires_at < now() {
            return Err(AcmeError::unauthorized("the authorization has expired; place a new order"));
        }
        let key_authorization = custos_acme::key_authorization(&z.token, key);
        let outcome = self.validator.validate(kind, &z.identifier, &z.token, &key_authorization).await;
        z.challenge = Some(kind.to_string());
        // The store makes the order ready only if every authorization is valid, in the same transaction.
        let order_status = match &outcome {
            Ok(()) => {
                z.status = "valid".into();
                z.challenge_status = "valid".into();
                z.validated_at = Some(now());
                "ready"
            }
            Err(e) => {
                z.status = "invalid".into();
                z.challenge_status = "invalid".into();
                z.error = Some(problem_json(e));
                "invalid"
            }
        };
        let audit = audit_record(
            &principal_of(account),
            if outcome.is_ok() { "acme.challenge.valid" } else { "acme.challenge.invalid" },
            format!("acme-authz:{}", z.id),
            json!({"authz": z.id, "order": z.order_id, "identifier": z.identifier, "challenge": kind,
                   "error": outcome.as_ref().err().map(|e| e.detail.clone())}),
        );
        let update = AcmeWrite::UpdateAuthz { authz: z.clone(), order_status: Some(order_status.into()), audit };
        match self.write(update).await {
            Ok(()) => Ok(z),
            // Answered by a request that raced this one: its outcome stands.
            Err(StoreError::Conflict { .. }) => self.own_authz(account, authz_id).await,
            Err(e) => Err(store_error(e)),
        }
    }

    /// finalize: checks the CSR against the order, issues under the
    /// connection's policy, and commits the certificate with the order (and,
    /// if an incident waits for this connection, its re-establishment).
    pub async fn finalize(&self, v: &Verified, id: &str) -> Result<AcmeOrderRecord, AcmeError> {
        let account = Self::account_of(v)?;
        let order = self.own_order(account, id).await?;
        match order.status.as_str() {
            "ready" if order.expires_at >= now() => {}
            "valid" => return Ok(order),
            "ready" => return Err(AcmeError::new(ProblemType::OrderNotReady, "the order has expired")),
            other => {
                return Err(AcmeError::new(
                    ProblemType::OrderNotReady,
                    format!("the order is {other}: every authorization must be valid first"),
                ));
            }
        }
        let request: custos_acme::FinalizeRequest = v.jws.payload_as("finalize")?;
        let der = custos_acme::from_b64u(&request.csr, "csr")?;
        let csr = custos_pki::csr::CertificateRequest::from_der(&der)
            .map_err(|e| AcmeError::new(ProblemType::BadCsr, e.to_string()))?;
        let mut ordered = order.identifiers.clone();
        ordered.sort();
        if csr.requested_names != ordered {
            return Err(AcmeError::new(
                ProblemType::BadCsr,
                format!(
                    "the CSR names [{}], the order [{}]: they must be the same",
                    csr.requested_names.join(", "),
                    ordered.join(", ")
                ),
            ));
        }
        let principal = principal_of(account);
        let request = IssueRequest {
            tenant: order.tenant.clone(),
            connection: order.connection.clone(),
            profile: None,
            sans: order.identifiers.clone(),
            validity_secs: None,
            key: KeySource::AcmeCsr(der),
            request_key: None,
        };
        let (issued, issue_audit) =
            self.ca.sign_one(&principal, &request).await.map_err(|e| ca_error(e, ProblemType::BadCsr))?;
        let serial = issued.record.serial.clone();
        let finished = AcmeOrderRecord { status: "valid".into(), certificate: Some(serial.clone()), ..order.clone() };
        // Twice at most: a first attempt that found the connection waiting may
        // lose it to a renewal racing on the same connection; the second
        // commits the certificate without re-establishing anything.
        let mut attempt = 0;
        let incident = loop {
            let incident = self.waiting_incident(&order).await?;
            let mut audit = vec![
                issue_audit.clone(),
                audit_record(
                    &principal,
                    "acme.order.finalize",
                    format!("acme-order:{}", order.id),
                    json!({"order": order.id, "serial": serial, "replaces": order.replaces,
                           "incident": incident.as_ref().map(|i| i.id.clone())}),
                ),
            ];
            if let Some(i) = &incident {
                audit.push(audit_record(
                    &principal,
                    "incident.reestablish",
                    format!("connection:{}/{}", order.tenant, order.connection),
                    json!({"incident": i.id, "tenant": order.tenant, "connection": order.connection,
                           "replacement": serial, "by": "acme"}),
                ));
            }
            let write = AcmeWrite::Finalize {
                order: finished.clone(),
                certificates: vec![issued.record.clone()],
                incident: incident.as_ref().map(|i| IncidentReplacements {
                    incident: i.id.clone(),
                    replacements: vec![Replacement {
                        tenant: order.tenant.clone(),
                        connection: order.connection.clone(),
                        serial: serial.clone(),
                    }],
                    transition: REESTABLISH,
                }),
                audit,
            };
            match self.write(write).await {
                Ok(()) => break incident,
                Err(StoreError::Conflict { .. }) => {
                    let now_order = self.own_order(account, id).await?;
                    // Another finalize of this order won; its certificate stands, this one never leaves.
                    if now_order.status != "ready" || attempt > 0 {
                        return Ok(now_order);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(store_error(e)),
            }
        };
        if let Some(record) = incident {
            // The old certificate is retired now; a crash here is finished by `incident close`.
            let pairs = [(order.tenant.clone(), order.connection.clone())];
            if let Err(e) = self.ca.retire(&principal, &record, &pairs).await {
                tracing::warn!(error = %e, incident = %record.id, "retiring after an ACME renewal failed; `incident close` finishes it");
            }
        }
        Ok(AcmeOrderRecord { status: "valid".into(), certificate: Some(serial), ..order })
    }

    /// The open incident, if any, that waits for this order's connection to renew.
    async fn waiting_incident(
        &self,
        order: &AcmeOrderRecord,
    ) -> Result<Option<custos_types::IncidentRecord>, AcmeError> {
        let incidents = self.ca.store.incidents().await.map_err(store_error)?;
        for incident in
            incidents.into_iter().filter(|i| matches!(i.state, IncidentState::Executing | IncidentState::Executed))
        {
            let c = self
                .ca
                .store
                .incident_connection(&incident.id, &order.tenant, &order.connection)
                .await
                .map_err(store_error)?;
            if c.is_some_and(|c| c.state == ConnectionState::Pending) {
                return Ok(Some(incident));
            }
        }
        Ok(None)
    }

    /// The certificate of a valid order of this account, with its chain, as PEM.
    pub async fn certificate(&self, v: &Verified, serial: &str) -> Result<CertificateChain, AcmeError> {
        let account = Self::account_of(v)?;
        let record = self.ca.store.certificate(serial).await.map_err(store_error)?;
        let record = match record {
            Some(c)
                if c.tenant == account.tenant
                    && account.connection.as_ref().is_none_or(|own| *own == c.connection)
                    && c.key_origin == KEY_ORIGIN =>
            {
                c
            }
            _ => return Err(AcmeError::malformed(format!("no certificate {serial:?} of this account"))),
        };
        let mut pem = custos_pki::certificate_pem(&record.der);
        let issuers = self.ca.store.issuers().await.map_err(store_error)?;
        let mut next = Some(record.issuer.clone());
        let mut depth = 0;
        while let Some(id) = next.take() {
            let Some(issuer) = issuers.iter().find(|i| i.id == id) else { break };
            // The root is a trust anchor: clients have it; the chain stops below it.
            if issuer.parent.is_none() || depth > 8 {
                break;
            }
            pem.push_str(&custos_pki::certificate_pem(&issuer.cert_der));
            next = issuer.parent.clone();
            depth += 1;
        }
        Ok(CertificateChain { pem })
    }

    /// revokeCert, signed by an account of the certificate's tenant (and
    /// connection) or by the certificate's own key.
    pub async fn revoke(&self, v: &Verified) -> Result<(), AcmeError> {
        let request: custos_acme::RevokeRequest = v.jws.payload_as("revokeCert")?;
        let der = custos_acme::from_b64u(&request.certificate, "certificate")?;
        let facts = custos_pki::inspect::certificate_facts(&der)
            .map_err(|e| AcmeError::malformed(format!("certificate: {e}")))?;
        let serial = facts.serial.to_hex();
        let record = self.ca.store.certificate(&serial).await.map_err(store_error)?;
        let record = match record {
            Some(r) if r.der == der => r,
            _ => return Err(AcmeError::unauthorized("custos did not issue this certificate")),
        };
        let principal = match &v.caller {
            Caller::Account(a, _) => principal_of(a),
            Caller::Key(jwk) => {
                if !same_key(jwk, &facts.subject_key) {
                    return Err(AcmeError::unauthorized("the jwk is not the certificate's key"));
                }
                Principal::AcmeAccount {
                    account: format!("key:{}", jwk.thumbprint()),
                    tenant: record.tenant.clone(),
                    connection: Some(record.connection.clone()),
                }
            }
        };
        let reason = match request.reason.unwrap_or(0) {
            0 => custos_pki::Reason::Unspecified,
            1 => custos_pki::Reason::KeyCompromise,
            3 => custos_pki::Reason::AffiliationChanged,
            4 => custos_pki::Reason::Superseded,
            5 => custos_pki::Reason::CessationOfOperation,
            other => {
                return Err(AcmeError::new(
                    ProblemType::BadRevocationReason,
                    format!("reason {other}: use 0, 1, 3, 4 or 5"),
                ));
            }
        };
        if record.status == CertificateStatus::Revoked {
            return Err(AcmeError::new(
                ProblemType::AlreadyRevoked,
                format!("certificate {serial} is revoked already"),
            ));
        }
        self.ca
            .revoke(&principal, &facts.serial, reason, None)
            .await
            .map(|_| ())
            .map_err(|e| ca_error(e, ProblemType::Unauthorized))
    }

    /// renewalInfo (RFC 9773): the suggested window, in the past while an
    /// open incident covers the certificate or it is revoked; with the
    /// Retry-After to send, seconds.
    pub async fn renewal_info(&self, cert_id: &str) -> Result<Option<(RenewalInfo, i64)>, AcmeError> {
        let id = CertId::parse(cert_id)?;
        let Some(record) = self.ca.store.certificate(&id.serial_hex()).await.map_err(store_error)? else {
            return Ok(None);
        };
        let facts = custos_pki::inspect::certificate_facts(&record.der)
            .map_err(|_| internal("stored certificate unreadable"))?;
        if facts.authority_key_id.as_deref() != Some(id.key_id.as_slice()) {
            return Ok(None);
        }
        let t = now();
        let mut explanation = None;
        for incident in self.ca.store.certificate_incidents(&record.serial).await.map_err(store_error)? {
            // Declared is not yet decided: the window moves once execution starts.
            if let Some(i) = self.ca.store.incident(&incident).await.map_err(store_error)?
                && matches!(i.state, IncidentState::Executing | IncidentState::Executed)
            {
                explanation = Some(self.url(&format!("notice/{}", i.id)));
                break;
            }
        }
        let urgent = explanation.is_some() || record.status == CertificateStatus::Revoked;
        let window = match urgent {
            // In the past: renew at once (RFC 9773 section 4.2).
            true => custos_acme::RenewalWindow { start: t - 7200, end: t - 3600 },
            false => {
                let spread =
                    u64::from_str_radix(record.serial.get(record.serial.len().saturating_sub(12)..).unwrap_or("0"), 16)
                        .unwrap_or(0);
                custos_acme::renewal_window(record.not_before, record.not_after, spread)
            }
        };
        let info = RenewalInfo {
            suggested_window: SuggestedWindow { start: rfc3339(window.start), end: rfc3339(window.end) },
            explanation_url: explanation,
        };
        Ok(Some((info, self.settings.ari_retry_after_s)))
    }
}

impl Acme {
    /// The public notice ARI's `explanationURL` points at: which incident,
    /// why, since when, and what an ACME client should do. Names no tenant.
    pub async fn notice(&self, id: &str) -> Result<Option<String>, AcmeError> {
        let Some(i) = self.ca.store.incident(id).await.map_err(store_error)? else { return Ok(None) };
        Ok(Some(format!(
            "Incident {}\nDeclared: {}\nReason: {}\nState: {}\n\nCertificates this incident covers are being replaced. \
             ACME clients that check renewal information (ARI) renew them on their next run; \
             others should renew now (for example `certbot renew --force-renewal`).\n",
            i.id,
            rfc3339(i.declared_at),
            i.reason,
            i.state.as_str(),
        )))
    }
}

/// Whether a JWK is the certificate's subject key.
fn same_key(jwk: &Jwk, key: &custos_pki::inspect::SubjectKey) -> bool {
    use custos_pki::inspect::SubjectKey as K;
    match (jwk, key) {
        (Jwk::Ec { x, y, .. }, K::Ec(point)) => {
            point.first() == Some(&4) && point[1..] == [x.as_slice(), y.as_slice()].concat()
        }
        (Jwk::Rsa { n, e }, K::Rsa { n: cn, e: ce }) => n == cn && e == ce,
        (Jwk::Ed25519 { x }, K::Ed25519(k)) => x == k,
        _ => false,
    }
}

/// Contacts must be `mailto:` URLs (custos sends no mail; they are kept for the operator).
fn check_contacts(contact: Vec<String>) -> Result<Vec<String>, AcmeError> {
    if contact.len() > 10 {
        return Err(AcmeError::malformed("at most 10 contacts"));
    }
    for c in &contact {
        if !c.starts_with("mailto:") || c.len() > 320 || c.contains(',') {
            return Err(AcmeError::malformed(format!("contact {c:?} is not one mailto: URL")));
        }
    }
    Ok(contact)
}
