//! Connection keys in custody, and signing with them.
//!
//! A custodied connection's key is generated inside the key store (the
//! PKCS#11 token, or the sealed soft store) and never leaves it: the service
//! that uses the connection asks custos for a JWT client assertion (RFC 7523)
//! or a signature over a digest. Every signature is an audit entry that is
//! durable before the signature is returned; entries of concurrent requests
//! share one commit ([`AuditGroup`]). A signature outside the connection's
//! policy is refused, and the refusal is an audit entry too.
//!
//! A connection holds an active key and, by default, a standby key with its
//! own certificate, issued ahead of need so that the tenant can register both
//! certificates with the relying party.
//!
//! Crash states: keys are generated before the transaction that records them
//! (with their certificates and audit entries). A crash in between leaves an
//! unreferenced object on a token (labelled `custos-connection:…`, usable by
//! nothing) or, for the soft store, nothing at all. A signature whose audit
//! entry did not commit was never returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use custos_keys::KeyAlgorithm;
use custos_keys::connection::{ConnectionKey, DigestScheme};
use custos_pki::jws::{AssertionClaims, AssertionDraft, ecdsa_fixed};
use custos_store::{
    AuditRecord, CertificateRecord, CustodyChange, CustodyKeyRecord, CustodySlot, SignatureRecord, SigningPolicy,
};
use custos_types::KeyStatus;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::Operation;
use crate::inventory::ConnectionOptions;
use crate::issuance::{IssueRequest, KeySource};
use crate::{Ca, CaError, Principal, Result, audit_record, visible};

/// The longest a client assertion may live (what Entra ID accepts is 10 minutes too).
pub const MAX_ASSERTION_SECS: i64 = 600;

/// How to put a connection's key in custody.
#[derive(Clone, Debug)]
pub struct CustodyOptions {
    /// The key's algorithm: p256, rsa2048 or rsa3072.
    pub algorithm: KeyAlgorithm,
    /// Whether to make a standby key with its own certificate too.
    pub standby: bool,
    /// SANs of the certificates (within the connection's policy).
    pub sans: Vec<String>,
    /// Lifetime of the certificates in seconds; the connection's default when `None`.
    pub validity_secs: Option<i64>,
}

/// A connection key in custody, as shown to operators and tenants.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CustodyKeyView {
    /// The key's id.
    pub key_id: String,
    /// `active`, `standby` or `retired`.
    pub slot: CustodySlot,
    /// p256, rsa2048 or rsa3072.
    pub algorithm: String,
    /// Where it lives: `soft` or `pkcs11`.
    pub backend: String,
    /// The serial of its certificate.
    pub serial: String,
    /// `x5t#S256` of that certificate: what the relying party shows.
    pub thumbprint_sha256: String,
    /// `x5t` (SHA-1) of that certificate, as Entra ID lists it.
    pub thumbprint_sha1: String,
    /// The certificate, PEM: upload it to the relying party.
    pub certificate_pem: String,
    /// When the certificate expires (RFC 3339).
    pub not_after: String,
}

/// What a client assertion should say.
#[derive(Clone, Debug)]
pub struct AssertionRequest {
    /// `aud`: the token endpoint.
    pub aud: String,
    /// `iss`: the client id.
    pub iss: String,
    /// `sub`: the client id.
    pub sub: String,
    /// `alg`: the key's default (ES256 for P-256, PS256 for RSA) when `None`; RS256 when asked.
    pub alg: Option<String>,
    /// Lifetime in seconds, at most [`MAX_ASSERTION_SECS`] (the default).
    pub lifetime_secs: Option<i64>,
}

/// A signed client assertion.
#[derive(Clone, Debug, Serialize)]
pub struct Assertion {
    /// The compact JWT.
    pub assertion: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `iat`, Unix seconds.
    pub iat: i64,
    /// Its `exp`, Unix seconds.
    pub exp: i64,
    /// Its `alg`.
    pub alg: String,
    /// The key that signed it.
    pub key_id: String,
    /// The serial of that key's certificate.
    pub serial: String,
    /// The audit entry that records it.
    pub audit_index: u64,
}

/// A signature over a caller's digest.
#[derive(Clone, Debug, Serialize)]
pub struct DigestSignature {
    /// The signature (DER `Ecdsa-Sig-Value` for ES256, as openssl verifies it).
    pub signature: Vec<u8>,
    /// The scheme: ES256, PS256 or RS256.
    pub alg: String,
    /// The key that signed it.
    pub key_id: String,
    /// The serial of that key's certificate.
    pub serial: String,
    /// The audit entry that records it.
    pub audit_index: u64,
}

/// Signing keys opened once per process, and audit entries waiting for their commit.
#[derive(Default)]
pub(crate) struct Custody {
    /// Opened keys by key id.
    keys: Mutex<HashMap<String, OpenedKey>>,
    /// Each connection's active key, its validity and policy, as read at most a second ago.
    context: crate::fresh::Fresh<(String, String), Arc<Context>>,
    log: AuditGroup,
}

/// An opened connection key with its certificate's DER and expiry (Unix seconds).
type OpenedKey = (ConnectionKey, Arc<Vec<u8>>, i64);

/// Group commit for audit entries that must be durable before an answer
/// leaves, each with the assertion it records (if any).
type AuditGroup = crate::group::GroupCommit<(AuditRecord, Option<SignatureRecord>), Result<u64>>;

fn poisoned() -> CaError {
    CaError::Inconsistent("custody state poisoned".into())
}

impl Ca {
    /// Appends `record` to the audit log, committed together with whatever
    /// other entries are waiting; returns its index once it is durable.
    pub(crate) async fn log_durably(
        self: &Arc<Self>,
        record: AuditRecord,
        signature: Option<SignatureRecord>,
    ) -> Result<u64> {
        let ca = self.clone();
        let _observe = crate::metrics::ObserveOnDrop(&self.metrics.audit_append_seconds, std::time::Instant::now());
        let outcome = self.custody.log.submit((record, signature), move |batch| async move {
            let records: Vec<AuditRecord> = batch.iter().map(|((r, _), _)| r.clone()).collect();
            let signatures: Vec<(usize, SignatureRecord)> =
                batch.iter().enumerate().filter_map(|(i, ((_, s), _))| s.clone().map(|s| (i, s))).collect();
            match ca.store.record_signatures(&records, &signatures).await {
                Ok(first) => {
                    for (i, (_, reply)) in batch.into_iter().enumerate() {
                        let _ = reply.send(Ok(first + i as u64));
                    }
                }
                Err(e) => {
                    let said = e.to_string();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(CaError::Inconsistent(format!(
                            "the audit entry could not be written, so no signature was released: {said}"
                        ))));
                    }
                }
            }
        });
        outcome
            .await
            .unwrap_or_else(|| Err(CaError::Inconsistent("the audit commit stopped before it answered".into())))
    }

    /// Puts a connection's key in custody: generates it (and a standby) in
    /// the key store, certifies each, and records keys, certificates and
    /// audit entries in one transaction. With `create`, the connection is
    /// created in that same transaction.
    pub async fn add_custody(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        create: Option<&ConnectionOptions>,
        options: &CustodyOptions,
    ) -> Result<Vec<CustodyKeyView>> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        let algorithm = custos_keys::connection::connection_algorithm(options.algorithm)
            .map_err(|e| CaError::Policy(e.to_string()))?;
        let mut audit = Vec::new();
        let (connection, new) = match create {
            Some(o) => {
                let (record, entry) = self.connection_record(principal, tenant, name, o).await?;
                audit.push(entry);
                (record.clone(), Some(record))
            }
            None => {
                let found = self.find_connection(tenant, name).await?;
                if self.store.custody_keys(tenant, name).await?.iter().any(|k| k.slot == CustodySlot::Active) {
                    return Err(CaError::Policy(format!("connection {tenant}/{name} already holds a key in custody")));
                }
                (found, None)
            }
        };
        let slots: &[CustodySlot] =
            if options.standby { &[CustodySlot::Active, CustodySlot::Standby] } else { &[CustodySlot::Active] };
        let made = self
            .certify_custody_keys(principal, &connection, algorithm, slots, &options.sans, options.validity_secs, None)
            .await?;
        audit.extend(made.audit.iter().cloned());
        let change = CustodyChange {
            connection: new.clone(),
            add: made.keys.clone(),
            certificates: made.certificates.clone(),
            ..CustodyChange::default()
        };
        let recorded = self.store.record_custody(&change, &audit).await;
        self.custody_changed();
        if let Err(e) = recorded {
            made.discard(self);
            return Err(match e {
                custos_store::StoreError::Duplicate { .. } if new.is_some() => {
                    CaError::Policy(format!("connection {tenant}/{name} already exists"))
                }
                other => other.into(),
            });
        }
        Ok(made.keys.iter().zip(&made.certificates).map(|(k, c)| view(k, c)).collect())
    }

    /// Scheduled rotation: every custodied connection whose active key is
    /// older than `max_age_secs` switches to its standby (which the tenant
    /// registered with the relying party when it was made), and gets a new
    /// standby; the tenant is told to register the new standby and remove
    /// the old certificate. The old certificate is then revoked (superseded)
    /// and its key destroyed. A standby that can no longer sign (revoked) is
    /// replaced now, and the connection rotates on a later pass; a connection
    /// made without a standby is left alone. Returns the connections rotated.
    ///
    /// Crash states: the switch, new standby, certificate, notification and
    /// audit entries commit in one transaction; the revocation and the key's
    /// destruction follow, and a pass that finds a retired key still alive
    /// finishes them.
    pub async fn rotate_custody_keys(&self, principal: &Principal, max_age_secs: i64) -> Result<Vec<(String, String)>> {
        crate::authorization::authorize(principal, Operation::RotateCustodyKeys)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut by_connection: std::collections::BTreeMap<(String, String), Vec<CustodyKeyRecord>> = Default::default();
        for k in self.store.all_custody_keys().await? {
            by_connection.entry((k.tenant.clone(), k.connection.clone())).or_default().push(k);
        }
        let webhooks: HashMap<String, custos_store::WebhookRecord> =
            self.store.webhooks().await?.into_iter().map(|w| (w.tenant.clone(), w)).collect();
        let mut rotated = Vec::new();
        for ((tenant, name), held) in by_connection {
            self.finish_retirement(principal, &held).await?;
            let Some(active) = held.iter().find(|k| k.slot == CustodySlot::Active) else { continue };
            // A connection made without a standby (--no-standby) is left as it was made.
            let Some(standby) = held.iter().find(|k| k.slot == CustodySlot::Standby) else { continue };
            let valid = !self.store.valid_serials(std::slice::from_ref(&standby.serial)).await?.is_empty();
            let standby = Some(standby).filter(|k| k.key.status == KeyStatus::Active && valid);
            let due = active.key.created_at <= now - max_age_secs;
            if !due && standby.is_some() {
                continue;
            }
            let connection = self.find_connection(&tenant, &name).await?;
            let algorithm: KeyAlgorithm = active.key.algorithm.parse()?;
            let sans = self
                .store
                .certificates_by_serials(std::slice::from_ref(&active.serial))
                .await?
                .pop()
                .map(|c| c.sans)
                .unwrap_or_default();
            let made = self
                .certify_custody_keys(principal, &connection, algorithm, &[CustodySlot::Standby], &sans, None, None)
                .await?;
            let new_standby = &made.keys[0];
            let (slots, action) = match standby.filter(|_| due) {
                Some(s) => (
                    vec![(s.key.id.clone(), CustodySlot::Active), (active.key.id.clone(), CustodySlot::Retired)],
                    "custody.rotate",
                ),
                // No usable standby: make one; the switch comes on a later pass.
                None => {
                    let mut slots = Vec::new();
                    if let Some(old) = held.iter().find(|k| k.slot == CustodySlot::Standby) {
                        slots.push((old.key.id.clone(), CustodySlot::Retired));
                    }
                    (slots, "custody.standby")
                }
            };
            let signing = standby.filter(|_| due).unwrap_or(active);
            let remove: Vec<&str> = held
                .iter()
                .filter(|k| slots.iter().any(|(id, s)| *s == CustodySlot::Retired && id == &k.key.id))
                .map(|k| k.serial.as_str())
                .collect();
            let mut audit = made.audit.clone();
            audit.push(audit_record(
                principal,
                action,
                format!("connection:{tenant}/{name}"),
                json!({"tenant": tenant, "connection": name, "active_serial": signing.serial,
                       "retired_serials": remove, "new_standby_serial": new_standby.serial,
                       "max_key_age_s": max_age_secs}),
            ));
            let messages = webhooks
                .get(&tenant)
                .map(|hook| {
                    let body = json!({
                        "type": "custos.custody.rotation",
                        "tenant": tenant,
                        "connection": name,
                        "signing_serial": signing.serial,
                        "remove_serials": remove,
                        "add_standby_serial": new_standby.serial,
                        "add_standby_certificate_pem": custos_pki::certificate_pem(&made.certificates[0].der),
                        "todo": "add the standby certificate to the relying party and remove the certificates of remove_serials",
                    });
                    vec![crate::incident::notify::queued(
                        format!("rotation:{tenant}/{name}"),
                        &tenant,
                        vec![name.clone()],
                        &hook.url,
                        body.to_string(),
                        now,
                    )]
                })
                .unwrap_or_default();
            let change = CustodyChange {
                slots,
                add: made.keys.clone(),
                certificates: made.certificates.clone(),
                messages,
                ..CustodyChange::default()
            };
            let recorded = self.store.record_custody(&change, &audit).await;
            self.custody_changed();
            if let Err(e) = recorded {
                made.discard(self);
                return Err(e.into());
            }
            if action == "custody.rotate" {
                rotated.push((tenant.clone(), name.clone()));
            }
            let after = self.store.custody_keys(&tenant, &name).await?;
            self.finish_retirement(principal, &after).await?;
        }
        Ok(rotated)
    }

    /// Revokes (superseded) the still-valid certificates of retired keys and
    /// destroys those keys: what a rotation leaves to do after its commit.
    async fn finish_retirement(&self, principal: &Principal, held: &[CustodyKeyRecord]) -> Result<()> {
        let retired: Vec<&CustodyKeyRecord> =
            held.iter().filter(|k| k.slot == CustodySlot::Retired && k.key.status == KeyStatus::Active).collect();
        if retired.is_empty() {
            return Ok(());
        }
        let serials: Vec<String> = retired.iter().map(|k| k.serial.clone()).collect();
        let valid = self.store.valid_serials(&serials).await?;
        if !valid.is_empty() {
            let records = self.store.certificates_by_serials(&valid).await?;
            self.revoke_records(principal, &records, custos_pki::Reason::Superseded, None).await?;
        }
        for k in retired {
            self.destroy_custody_key(principal, k, None).await?;
        }
        Ok(())
    }

    /// Destroys a retired connection key in the key store and records it.
    /// Destroying a key already gone (a run killed after destroying it) succeeds.
    pub(crate) async fn destroy_custody_key(
        &self,
        principal: &Principal,
        k: &CustodyKeyRecord,
        incident: Option<&str>,
    ) -> Result<()> {
        let reference = custos_keys::KeyReference { backend: k.key.backend.clone(), data: k.key.reference.clone() };
        self.key_store()?.destroy(&reference)?;
        let audit = audit_record(
            principal,
            "key.destroy",
            format!("key:{}", k.key.id),
            json!({"key": k.key.id, "backend": k.key.backend, "label": k.key.label,
                   "reason": "retired connection key", "incident": incident}),
        );
        self.store.destroy_key(&k.key.id, &[audit]).await?;
        self.forget_connection_key(std::iter::once(k.key.id.as_str()));
        Ok(())
    }

    /// Forgets what was read of every connection's keys and policy: they
    /// changed through this process (a switch, a revocation, a policy).
    pub(crate) fn custody_changed(&self) {
        self.custody.context.clear();
    }

    /// Drops opened keys (retired ones) from the process's cache.
    pub(crate) fn forget_connection_key<'a>(&self, key_ids: impl Iterator<Item = &'a str>) {
        if let Ok(mut keys) = self.custody.keys.lock() {
            for id in key_ids {
                keys.remove(id);
            }
        }
    }

    /// Generates a connection key per slot in the key store and certifies
    /// each under the active issuing CA; nothing is recorded yet. On an
    /// error, the keys made so far are destroyed again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn certify_custody_keys(
        &self,
        principal: &Principal,
        connection: &custos_store::ConnectionRecord,
        algorithm: KeyAlgorithm,
        slots: &[CustodySlot],
        sans: &[String],
        validity_secs: Option<i64>,
        incident: Option<&str>,
    ) -> Result<MadeKeys> {
        let (tenant, name) = (connection.tenant.as_str(), connection.name.as_str());
        let keys = self.key_store()?.clone();
        let active = self.active_issuer().await?;
        let first = self.store.reserve_issuance(&active.record.id, slots.len() as i64).await?;
        let now = OffsetDateTime::now_utc();
        let mut made = MadeKeys::default();
        for (i, slot) in slots.iter().enumerate() {
            let step: Result<()> = (|| {
                let label = format!("{tenant}/{name}/{slot}");
                let key = keys.generate_connection_key(algorithm, &label)?;
                made.references.push(key.reference.clone());
                let public = key.key.public_key().clone();
                let request = IssueRequest {
                    tenant: tenant.to_string(),
                    connection: name.to_string(),
                    profile: Some(custos_pki::Profile::Client),
                    sans: sans.to_vec(),
                    validity_secs,
                    key: KeySource::Custody(public.clone(), algorithm),
                    request_key: None,
                };
                let mut planned = crate::issuance::plan(&request, connection, &active, now)?;
                planned.set_position(first + i as i64, self.crl_partition_size, &self.base_url, &active.record.id);
                let issued = crate::issuance::sign(planned, &active)?;
                let key_id = public.key_id().to_string();
                made.audit.push(audit_record(
                    principal,
                    "key.generate",
                    format!("key:{key_id}"),
                    json!({"key": key_id, "algorithm": algorithm.as_str(), "backend": key.reference.backend,
                           "label": label, "purpose": "connection", "tenant": tenant, "connection": name,
                           "slot": slot, "incident": incident}),
                ));
                made.audit.push(crate::issuance::issue_audit(principal, &issued.record, &active.record, incident));
                made.keys.push(CustodyKeyRecord {
                    key: custos_store::KeyRecord {
                        id: key_id,
                        backend: key.reference.backend.clone(),
                        algorithm: algorithm.to_string(),
                        label,
                        public_key: public.spki_der().to_vec(),
                        reference: key.reference.data.clone(),
                        status: KeyStatus::Active,
                        created_at: now.unix_timestamp(),
                    },
                    tenant: tenant.to_string(),
                    connection: name.to_string(),
                    slot: *slot,
                    serial: issued.record.serial.clone(),
                    created_at: now.unix_timestamp(),
                });
                made.certificates.push(issued.record);
                Ok(())
            })();
            if let Err(e) = step {
                made.discard(self);
                return Err(e);
            }
        }
        Ok(made)
    }

    /// A connection's keys in custody, newest first; another tenant's connection is not found.
    pub async fn custody(&self, principal: &Principal, tenant: &str, name: &str) -> Result<Vec<CustodyKeyView>> {
        self.connection(principal, tenant, name).await?;
        let keys = self.store.custody_keys(tenant, name).await?;
        let serials: Vec<String> = keys.iter().map(|k| k.serial.clone()).collect();
        let certificates = self.store.certificates_by_serials(&serials).await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            let c = certificates.iter().find(|c| c.serial == k.serial).ok_or_else(|| {
                CaError::Inconsistent(format!("custody key {} names missing certificate {}", k.key.id, k.serial))
            })?;
            out.push(view(k, c));
        }
        Ok(out)
    }

    /// Sets what a custodied connection's assertions may name.
    pub async fn set_signing_policy(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        audiences: Vec<String>,
        client_ids: Vec<String>,
    ) -> Result<SigningPolicy> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownConnection {
            tenant: tenant.to_string(),
            connection: name.to_string(),
        })?;
        self.find_connection(tenant, name).await?;
        for a in &audiences {
            let ok =
                a.starts_with("https://") && a.len() <= 2048 && !a.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(CaError::Policy(format!("audience {a:?} is not an https:// URL")));
            }
        }
        for c in &client_ids {
            if c.is_empty() || c.len() > 256 || c.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CaError::Policy(format!("client id {c:?} is empty, too long or has spaces")));
            }
        }
        let policy = SigningPolicy {
            tenant: tenant.to_string(),
            connection: name.to_string(),
            audiences,
            client_ids,
            updated_at: OffsetDateTime::now_utc().unix_timestamp(),
        };
        let audit = audit_record(
            principal,
            "connection.policy",
            format!("connection:{tenant}/{name}"),
            json!({"tenant": tenant, "connection": name, "audiences": policy.audiences,
                   "client_ids": policy.client_ids}),
        );
        self.store.set_signing_policy(&policy, &audit).await?;
        self.custody_changed();
        Ok(policy)
    }

    /// A custodied connection's signing policy (empty lists if none was set).
    pub async fn signing_policy(&self, principal: &Principal, tenant: &str, name: &str) -> Result<SigningPolicy> {
        self.connection(principal, tenant, name).await?;
        Ok(self.store.signing_policy(tenant, name).await?.unwrap_or(SigningPolicy {
            tenant: tenant.to_string(),
            connection: name.to_string(),
            audiences: vec![],
            client_ids: vec![],
            updated_at: 0,
        }))
    }

    /// Signs a JWT client assertion with the connection's active key, once
    /// its audit entry is durable. `caller` is the client's address, for the log.
    pub async fn sign_assertion(
        self: &Arc<Self>,
        principal: &Principal,
        tenant: &str,
        name: &str,
        request: &AssertionRequest,
        caller: Option<&str>,
    ) -> Result<Assertion> {
        let signing = self.signing_key(principal, tenant, name).await?;
        let scheme = scheme_for(&signing.key, request.alg.as_deref())?;
        let policy = &signing.policy;
        let lifetime = request.lifetime_secs.unwrap_or(MAX_ASSERTION_SECS);
        let refusal = if let Some(p) = policy {
            if !p.audiences.contains(&request.aud) {
                Some(format!("audience {:?} is not in the connection's policy", request.aud))
            } else if !p.client_ids.contains(&request.iss) || !p.client_ids.contains(&request.sub) {
                Some(format!(
                    "iss {:?} / sub {:?} is not a client id in the connection's policy",
                    request.iss, request.sub
                ))
            } else if !(1..=MAX_ASSERTION_SECS).contains(&lifetime) {
                Some(format!("a lifetime of {lifetime} s is outside 1..={MAX_ASSERTION_SECS} s"))
            } else {
                None
            }
        } else {
            Some(format!(
                "connection {tenant}/{name} has no signing policy (set one with `custos connection policy {tenant} {name} --audience URL --client-id ID`)"
            ))
        };
        let object = format!("connection:{tenant}/{name}");
        if let Some(reason) = refusal {
            let entry = audit_record(
                principal,
                "connection.sign.refused",
                object,
                json!({"tenant": tenant, "connection": name, "key": signing.key_id, "reason": reason,
                       "aud": request.aud, "iss": request.iss, "sub": request.sub, "caller": caller}),
            );
            self.log_durably(entry, None).await?;
            return Err(CaError::Policy(reason));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = AssertionClaims {
            aud: request.aud.clone(),
            iss: request.iss.clone(),
            sub: request.sub.clone(),
            jti: new_jti()?,
            nbf: now,
            iat: now,
            exp: now + lifetime,
        };
        let rsa = signing.key.algorithm() != KeyAlgorithm::EcdsaP256;
        let draft = AssertionDraft::new(scheme.jws_name(), &signing.cert_der, rsa, &claims)?;
        let digest = sha256(draft.signing_input());
        let entry = audit_record(
            principal,
            "connection.sign",
            object,
            json!({"tenant": tenant, "connection": name, "key": signing.key_id, "serial": signing.serial,
                   "kind": "assertion", "alg": scheme.jws_name(), "jti": claims.jti, "aud": claims.aud,
                   "iss": claims.iss, "sub": claims.sub, "iat": claims.iat, "exp": claims.exp,
                   "caller": caller}),
        );
        let indexed = SignatureRecord {
            jti: claims.jti.clone(),
            serial: signing.serial.clone(),
            key_id: signing.key_id.clone(),
            tenant: tenant.to_string(),
            connection: name.to_string(),
            aud: claims.aud.clone(),
            iat: claims.iat,
            exp: claims.exp,
            audit_index: 0,
        };
        // The entry names what is signed, not the signature: it commits while
        // the key signs, and the answer waits for both. Crash after the commit
        // and before the answer: the log holds an assertion no one received
        // (its jti matches no sign-in). A failed commit discards the signature.
        let (signature, audit_index) =
            tokio::join!(self.sign_off_thread(&signing.key, scheme, digest), self.log_durably(entry, Some(indexed)));
        let audit_index = audit_index?;
        let signature = signature?;
        let signature = if rsa { signature } else { ecdsa_fixed(&signature, 32)? };
        Ok(Assertion {
            assertion: draft.finish(&signature),
            jti: claims.jti,
            iat: claims.iat,
            exp: claims.exp,
            alg: scheme.jws_name().to_string(),
            key_id: signing.key_id,
            serial: signing.serial,
            audit_index,
        })
    }

    /// Signs a caller's SHA-256 digest with the connection's active key, once
    /// its audit entry (which names the digest) is durable.
    pub async fn sign_digest(
        self: &Arc<Self>,
        principal: &Principal,
        tenant: &str,
        name: &str,
        digest: [u8; 32],
        alg: Option<&str>,
        caller: Option<&str>,
    ) -> Result<DigestSignature> {
        let signing = self.signing_key(principal, tenant, name).await?;
        let scheme = scheme_for(&signing.key, alg)?;
        let entry = audit_record(
            principal,
            "connection.sign",
            format!("connection:{tenant}/{name}"),
            json!({"tenant": tenant, "connection": name, "key": signing.key_id, "serial": signing.serial,
                   "kind": "digest", "alg": scheme.jws_name(), "digest": hex::encode(digest), "caller": caller}),
        );
        // As for assertions: the entry (which names the digest) commits while the key signs.
        let (signature, audit_index) =
            tokio::join!(self.sign_off_thread(&signing.key, scheme, digest), self.log_durably(entry, None));
        let audit_index = audit_index?;
        let signature = signature?;
        Ok(DigestSignature {
            signature,
            alg: scheme.jws_name().to_string(),
            key_id: signing.key_id,
            serial: signing.serial,
            audit_index,
        })
    }

    /// Signs on a blocking thread: a token's C_Sign, or RSA, takes long enough to stall the runtime.
    async fn sign_off_thread(&self, key: &ConnectionKey, scheme: DigestScheme, digest: [u8; 32]) -> Result<Vec<u8>> {
        let key = key.clone();
        tokio::task::spawn_blocking(move || key.sign_digest(scheme, &digest))
            .await
            .map_err(|e| CaError::Inconsistent(format!("signing task failed: {e}")))?
            .map_err(CaError::from)
            .inspect(|_| self.metrics.signed("connection", crate::metrics::Purpose::Connection))
    }

    /// The connection's active custody key, if the principal may sign with it
    /// and its certificate is still valid.
    async fn signing_key(&self, principal: &Principal, tenant: &str, name: &str) -> Result<SigningKey> {
        let unknown = || CaError::UnknownConnection { tenant: tenant.to_string(), connection: name.to_string() };
        visible(principal, Operation::Sign { tenant, connection: name }, unknown)?;
        // What the store says of this connection, read at most a second ago
        // (on any node, a switch or a revocation takes effect within it).
        let key = (tenant.to_string(), name.to_string());
        let context = match self.custody.context.get(&key) {
            Some(c) => c,
            None => {
                let active =
                    self.store.custody_keys(tenant, name).await?.into_iter().find(|k| k.slot == CustodySlot::Active);
                let valid = match &active {
                    Some(a) => !self.store.valid_serials(std::slice::from_ref(&a.serial)).await?.is_empty(),
                    None => false,
                };
                let policy = self.store.signing_policy(tenant, name).await?;
                let c = Arc::new(Context { active, valid, policy });
                self.custody.context.put(key, c.clone());
                c
            }
        };
        let Some(active) = context.active.clone() else {
            self.find_connection(tenant, name).await?;
            return Err(CaError::Policy(format!(
                "connection {tenant}/{name} holds no key in custody (create it with `custos connection add {tenant} {name} --custody`)"
            )));
        };
        if active.key.status != KeyStatus::Active {
            return Err(CaError::Policy(format!(
                "connection {tenant}/{name}'s key {} is {}",
                active.key.id, active.key.status
            )));
        }
        if !context.valid {
            return Err(CaError::Policy(format!(
                "the certificate {} of connection {tenant}/{name}'s key is revoked",
                active.serial
            )));
        }
        let cached = self.custody.keys.lock().map_err(|_| poisoned())?.get(&active.key.id).cloned();
        let (key, cert_der, not_after) = match cached {
            Some(found) => found,
            None => {
                let reference = custos_keys::KeyReference {
                    backend: active.key.backend.clone(),
                    data: active.key.reference.clone(),
                };
                let keys = self.key_store()?.clone();
                let key = tokio::task::spawn_blocking(move || keys.load_connection_key(&reference))
                    .await
                    .map_err(|e| CaError::Inconsistent(format!("key loading task failed: {e}")))??;
                let cert = self
                    .store
                    .certificate(&active.serial)
                    .await?
                    .ok_or_else(|| CaError::UnknownCertificate(active.serial.clone()))?;
                let entry = (key, Arc::new(cert.der), cert.not_after);
                self.custody.keys.lock().map_err(|_| poisoned())?.insert(active.key.id.clone(), entry.clone());
                entry
            }
        };
        if not_after < OffsetDateTime::now_utc().unix_timestamp() {
            return Err(CaError::Policy(format!(
                "the certificate {} of connection {tenant}/{name}'s key has expired",
                active.serial
            )));
        }
        Ok(SigningKey { key, cert_der, key_id: active.key.id, serial: active.serial, policy: context.policy.clone() })
    }
}

/// The scheme `alg` names for `key` (its default when `None`), if it fits the key.
fn scheme_for(key: &ConnectionKey, alg: Option<&str>) -> Result<DigestScheme> {
    match alg {
        None => Ok(key.default_scheme()),
        Some(alg) => DigestScheme::from_jws_name(alg).filter(|s| s.fits(key.algorithm())).ok_or_else(|| {
            CaError::Policy(format!("alg {alg:?} does not fit this connection's {} key", key.algorithm()))
        }),
    }
}

/// Connection keys just made and certified, not yet recorded.
#[derive(Default)]
pub(crate) struct MadeKeys {
    pub(crate) keys: Vec<CustodyKeyRecord>,
    pub(crate) certificates: Vec<CertificateRecord>,
    pub(crate) audit: Vec<AuditRecord>,
    references: Vec<custos_keys::KeyReference>,
}

impl MadeKeys {
    /// Destroys the keys again: nothing references them (their record did not commit).
    pub(crate) fn discard(&self, ca: &Ca) {
        if let Ok(keys) = ca.key_store() {
            for reference in &self.references {
                let _ = keys.destroy(reference);
            }
        }
    }
}

/// An opened active key, its certificate and the connection's policy.
struct SigningKey {
    key: ConnectionKey,
    cert_der: Arc<Vec<u8>>,
    key_id: String,
    serial: String,
    policy: Option<SigningPolicy>,
}

/// A custodied connection as the store described it: its active key, whether
/// that key's certificate is unrevoked, and its policy.
struct Context {
    active: Option<CustodyKeyRecord>,
    valid: bool,
    policy: Option<SigningPolicy>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

/// A time-ordered UUID (version 7, RFC 9562) for a `jti`: 48 bits of Unix
/// milliseconds, then 74 random bits. The `signatures` table is keyed by jti;
/// random keys (version 4) inserted at random places in its index, and each
/// such page split made SQLite's commit scan its whole page cache (the split
/// renumbers pages through the lock-byte page number, which leaves the cache's
/// highest page number far past the file's end). Time-ordered keys append.
fn new_jti() -> Result<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CaError::Inconsistent("the random generator failed".into()))?;
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

fn view(k: &CustodyKeyRecord, c: &CertificateRecord) -> CustodyKeyView {
    CustodyKeyView {
        key_id: k.key.id.clone(),
        slot: k.slot,
        algorithm: k.key.algorithm.clone(),
        backend: k.key.backend.clone(),
        serial: k.serial.clone(),
        thumbprint_sha256: custos_pki::jws::thumbprint_sha256(&c.der),
        thumbprint_sha1: custos_pki::jws::thumbprint_sha1(&c.der),
        certificate_pem: custos_pki::certificate_pem(&c.der),
        not_after: crate::inventory::rfc3339(c.not_after),
    }
}

#[cfg(test)]
mod tests {
    /// A jti is a version 7 UUID whose order follows the time it was made.
    #[test]
    fn jtis_are_time_ordered_uuids() {
        let first = super::new_jti().expect("jti");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = super::new_jti().expect("jti");
        for jti in [&first, &second] {
            let groups: Vec<&str> = jti.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{jti}");
            assert!(groups[2].starts_with('7'), "version 7: {jti}");
            assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "RFC 9562 variant: {jti}");
        }
        assert!(first < second, "{first} sorts before {second}");
        assert_ne!(first[14..], second[14..], "the random part differs");
    }
}
