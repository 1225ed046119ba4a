//! The custos domain: the CA ceremony, tenants and connections, issuance under
//! policy, the inventory, revocation, CRLs, and the status publisher that
//! answers OCSP from memory and keeps CRLs current.
//!
//! Every state change goes to the store together with its audit entry, in one
//! transaction. Every operation that reads tenant data or changes state takes
//! the [`Principal`] asking, and [`authorization`] decides (deny by default);
//! the audit entry's actor is that principal. This crate owns the rules; the
//! CLI and the HTTP server only authenticate, call it and render.
//!
//! Not here: choosing backends (custos-node builds the store and the key
//! store from the configuration and hands them in), X.509 encoding
//! (custos-pki), key bytes (custos-keys), HTTP (custos-server).

pub mod access;
pub mod acme;
pub mod approvals;
pub mod audit;
pub mod authorization;
mod ceremony;
pub mod custody;
mod error;
pub mod files;
mod fresh;
mod group;
mod grouped;
pub mod incident;
mod inventory;
mod issuance;
pub mod metrics;
pub mod policy;
mod principal;
pub mod publisher;
mod replay;
mod revocation;
pub mod signins;

use std::sync::{Arc, Mutex};

use custos_keys::{KeyStore, Signer};
use custos_pki::{CaIssuer, IssuerUrls};
use custos_store::{Genesis, Store};
use time::OffsetDateTime;

use crate::authorization::{Decision, Operation, authorize, decide};

pub use custos_keys::KeyAlgorithm;
/// Why a key algorithm name was not understood.
pub use custos_keys::UnsupportedAlgorithm as KeyAlgorithmError;
pub use custos_types::{AuditEntry, AuditFilter, AuditRecord, CheckpointRecord, KeyUsage};
pub use custos_types::{CertificateRecord, ConnectionRecord, IssuerRecord, StatusFilter, TenantRecord};
pub use custos_types::{
    CertificateStatus, ConnectionState, DeliveryState, IncidentState, IssuerRole, IssuerStatus, KeyStatus, Profile,
    Reason,
};
pub use custos_types::{CustodySlot, SigningPolicy};
pub use custos_types::{IncidentConnection, IncidentRecord, OutboxMessage};
pub use error::CaError;
pub use fresh::FRESH_FOR;
pub use incident::notify;
pub use inventory::{
    CertificateView, ConnectionChanges, ConnectionOptions, IssuerView, KeyView, ListFilter, connection_etag, rfc3339,
};
pub use issuance::{BulkOutcome, IssueRequest, Issued, KeySource, ResultWriter, random_password};
pub use principal::{Principal, Role, current_uid};
pub use publisher::{CrlStatus, OcspAnswer, PublisherStatus, StatusPublisher};
pub use replay::{StateDifference, StateReport};
pub use revocation::{CRL_LIFETIME, Crl, ResponderKey};

/// A crash hook for kill -9 tests: when `CUSTOS_CRASHPOINT` names this
/// point, the process aborts here (no destructors, no flush, nothing
/// committed after), as a kill -9 between two commits would, so each crash
/// state can be tested on purpose.
pub(crate) fn crashpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if POINT.get_or_init(|| std::env::var("CUSTOS_CRASHPOINT").ok()).as_deref() == Some(name) {
        std::process::abort();
    }
}

/// Result of a custos operation.
pub type Result<T> = std::result::Result<T, CaError>;

/// The public base URL used when `init` is given none.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

const META_BASE_URL: &str = "base_url";
const META_SEAL: &str = "soft_seal";
const META_KEY_STORE: &str = "key_store";
const META_CRL_PARTITION_SIZE: &str = "crl_partition_size";
/// Certificates per CRL partition when `init` is given no size.
pub const DEFAULT_CRL_PARTITION_SIZE: i64 = 250_000;

/// What `custos init` sets up.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Public base URL written into every certificate's CDP and AIA.
    pub base_url: String,
    /// Organization in the CA subjects.
    pub organization: String,
    /// Algorithm of the root and issuing CA keys.
    pub ca_algorithm: KeyAlgorithm,
    /// Certificates per CRL partition: the first this many of an issuer are
    /// listed on `{issuer}.crl`, the next on `{issuer}/1.crl`, and so on, so
    /// that no CRL grows without bound.
    pub crl_partition_size: i64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            base_url: DEFAULT_BASE_URL.to_string(),
            organization: "custos".to_string(),
            ca_algorithm: KeyAlgorithm::EcdsaP256,
            crl_partition_size: DEFAULT_CRL_PARTITION_SIZE,
        }
    }
}

/// Which key store a custos was created with, as recorded in its database.
///
/// It names keys, never code: the PKCS#11 module that opens a token comes
/// from the configuration, and a start whose configured module differs from
/// the recorded one is refused by the composition root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedKeyStore {
    /// The sealed soft store, with its seal parameters (salt, KDF settings, check value).
    Soft {
        /// The seal parameters as JSON.
        seal: String,
    },
    /// A PKCS#11 token: its canonical URI (token label, module path and PIN source as configured at init).
    Pkcs11 {
        /// The canonical token URI.
        uri: String,
    },
}

/// An opened custos: its store, settings and (once unsealed) its keys.
pub struct Ca {
    store: Arc<dyn Store>,
    base_url: String,
    crl_partition_size: i64,
    keys: Option<Arc<dyn KeyStore>>,
    active: Mutex<Option<Arc<issuance::ActiveIssuer>>>,
    /// The last storage check and when it ran: probes (load balancers, every
    /// /healthz) share one check per second instead of writing each time.
    health: Mutex<Option<(std::time::Instant, std::result::Result<(), String>)>>,
    /// Single issuances committed together ([`Ca::issue_grouped`]).
    groups: grouped::Groups,
    /// Which actions need a second admin.
    approval_policy: std::sync::RwLock<approvals::ApprovalPolicy>,
    /// Opened connection keys and the signatures' group commit.
    custody: custody::Custody,
    /// Bearer tokens as read, reused for at most a second.
    tokens: fresh::Fresh<String, custos_types::TokenRecord>,
    /// What `/metrics` shows of the domain.
    metrics: Arc<metrics::CaMetrics>,
    /// The store's figures as last counted, and when.
    figures: Mutex<Option<(custos_types::StoreFigures, i64)>>,
    /// The operators' CA's CRL as last signed ([`Ca::operators_crl`]).
    operators_crl: access::OperatorsCrl,
}

impl Ca {
    /// Creates a new custos in `store` with keys in `keys`: a root CA and an
    /// issuing CA, the audit log key and the settings, all committed in one
    /// transaction. `recorded` says how to find the key store again.
    pub async fn init(
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyStore>,
        recorded: &RecordedKeyStore,
        options: &InitOptions,
        principal: &Principal,
    ) -> Result<Ca> {
        authorize(principal, Operation::Initialize)?;
        let base_url = normalize_base_url(&options.base_url)?;
        if options.crl_partition_size < 1 {
            return Err(CaError::Policy("the CRL partition size must be at least 1".into()));
        }
        if store.meta("initialized").await?.is_some() {
            return Err(CaError::AlreadyInitialized);
        }
        let now = OffsetDateTime::now_utc();
        let mut genesis = Genesis {
            meta: vec![
                (META_BASE_URL.into(), base_url.clone()),
                (META_CRL_PARTITION_SIZE.into(), options.crl_partition_size.to_string()),
            ],
            ..Genesis::default()
        };
        genesis.meta.extend(match recorded {
            RecordedKeyStore::Soft { seal } => {
                vec![(META_KEY_STORE.into(), custos_keys::soft::BACKEND.into()), (META_SEAL.into(), seal.clone())]
            }
            RecordedKeyStore::Pkcs11 { uri } => vec![(META_KEY_STORE.into(), uri.clone())],
        });
        let ceremony = ceremony::root_and_issuing(keys.as_ref(), &base_url, options, now)?;
        genesis.keys.extend(ceremony.keys);
        genesis.issuers.extend(ceremony.issuers);
        genesis.audit.extend(ceremony.events.into_iter().map(|(action, object, details)| {
            audit_record_at(now.unix_timestamp(), &principal.actor(), action, object, details)
        }));
        let log_key = audit::new_log_key(keys.as_ref(), &base_url, &principal.actor(), now.unix_timestamp())?;
        genesis.keys.push(log_key.record);
        genesis.meta.extend(log_key.settings);
        genesis.audit.push(log_key.audit);
        store.initialize(genesis).await.map_err(|e| match e {
            custos_store::StoreError::AlreadyInitialized => CaError::AlreadyInitialized,
            other => other.into(),
        })?;
        let ca = Ca {
            store,
            base_url,
            crl_partition_size: options.crl_partition_size,
            keys: Some(keys),
            active: Mutex::new(None),
            health: Mutex::new(None),
            groups: grouped::Groups::default(),
            custody: custody::Custody::default(),
            tokens: fresh::Fresh::default(),
            metrics: Arc::default(),
            figures: Mutex::new(None),
            operators_crl: Default::default(),
            approval_policy: Default::default(),
        };
        // Its own transaction: a crash before it leaves a custos without an
        // operators' CA, which the first `operator add` makes.
        ca.ensure_operators_ca(principal).await?;
        Ok(ca)
    }

    /// Opens the custos recorded in `store`; its keys stay sealed until
    /// [`Ca::attach_keys`]. [`CaError::NotInitialized`] when the store holds none.
    pub async fn open(store: Arc<dyn Store>) -> Result<Ca> {
        if store.meta("initialized").await?.is_none() {
            return Err(CaError::NotInitialized);
        }
        let base_url =
            store.meta(META_BASE_URL).await?.ok_or_else(|| CaError::Inconsistent("no base URL recorded".into()))?;
        let crl_partition_size = store
            .meta(META_CRL_PARTITION_SIZE)
            .await?
            .map(|v| v.parse::<i64>())
            .transpose()
            .map_err(|_| CaError::Inconsistent("the recorded CRL partition size is not a number".into()))?
            .unwrap_or(DEFAULT_CRL_PARTITION_SIZE)
            .max(1);
        Ok(Ca {
            store,
            base_url,
            crl_partition_size,
            keys: None,
            active: Mutex::new(None),
            health: Mutex::new(None),
            groups: grouped::Groups::default(),
            custody: custody::Custody::default(),
            tokens: fresh::Fresh::default(),
            metrics: Arc::default(),
            figures: Mutex::new(None),
            operators_crl: Default::default(),
            approval_policy: Default::default(),
        })
    }

    /// Which key store this custos was created with.
    pub async fn recorded_key_store(&self) -> Result<RecordedKeyStore> {
        let backend = self.store.meta(META_KEY_STORE).await?.unwrap_or_default();
        if backend.starts_with("pkcs11:") {
            return Ok(RecordedKeyStore::Pkcs11 { uri: backend });
        }
        if backend != custos_keys::soft::BACKEND {
            return Err(CaError::Inconsistent(format!("unsupported key store backend {backend:?} recorded")));
        }
        let seal = self
            .store
            .meta(META_SEAL)
            .await?
            .ok_or_else(|| CaError::Inconsistent("no seal parameters recorded".into()))?;
        Ok(RecordedKeyStore::Soft { seal })
    }

    /// Whether the storage answers, takes writes and is still the database
    /// this custos opened (for `/healthz` and `/readyz`): the reason when not.
    /// Checked at most once a second; callers in between get the last answer.
    pub async fn health(&self) -> std::result::Result<(), String> {
        let fresh = |at: &std::time::Instant| at.elapsed() < std::time::Duration::from_secs(1);
        if let Ok(last) = self.health.lock()
            && let Some((at, answer)) = last.as_ref()
            && fresh(at)
        {
            return answer.clone();
        }
        let answer = self.store.check_storage().await.map_err(|e| e.to_string());
        if answer.is_err() {
            self.metrics.storage_errors.inc();
        }
        if let Ok(mut last) = self.health.lock() {
            *last = Some((std::time::Instant::now(), answer.clone()));
        }
        answer
    }

    /// Writes a consistent copy of the whole database (sealed keys included)
    /// to `path`, a new or empty file, while custos keeps serving and
    /// writing. Returns the tree size of the newest signed checkpoint in the
    /// copy: the caller signs one first so that it covers everything.
    pub async fn backup(&self, principal: &Principal, path: &std::path::Path) -> Result<u64> {
        // The copy holds the sealed key store: administrators only.
        authorize(principal, Operation::ManageKeyStore)?;
        let covered = self.store.latest_checkpoint().await?.map_or(0, |c| c.size);
        self.store.backup_to(path).await?;
        Ok(covered)
    }

    /// The database's own integrity check: `["ok"]`, what is wrong, or
    /// `None` where custos runs none (PostgreSQL).
    pub async fn integrity_check(&self, principal: &Principal) -> Result<Option<Vec<String>>> {
        authorize(principal, Operation::ReadAudit)?;
        Ok(self.store.integrity_check().await?)
    }

    /// The stored references of the soft store's live keys (sealed blobs,
    /// useless without the passphrase), to seal them under a new one.
    pub async fn soft_key_references(&self, principal: &Principal) -> Result<Vec<(String, custos_keys::KeyReference)>> {
        authorize(principal, Operation::ManageKeyStore)?;
        Ok(self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.backend == custos_keys::soft::BACKEND && k.status != custos_types::KeyStatus::Destroyed)
            .map(|k| (k.id, custos_keys::KeyReference { backend: k.backend, data: k.reference }))
            .collect())
    }

    /// Replaces the soft store's seal: every live key's reference and the
    /// seal parameters, with one audit entry, in one transaction. A crash
    /// leaves the old passphrase or the new one working, never a mix.
    pub async fn replace_seal(
        &self,
        principal: &Principal,
        references: &[(String, custos_keys::KeyReference)],
        seal: &str,
    ) -> Result<()> {
        authorize(principal, Operation::ManageKeyStore)?;
        let rows: Vec<(String, Vec<u8>)> = references.iter().map(|(id, r)| (id.clone(), r.data.clone())).collect();
        let audit = audit_record(
            principal,
            "keystore.reseal",
            "keystore:soft".into(),
            serde_json::json!({"keys": references.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()}),
        );
        self.store.replace_key_references(&rows, &[(META_SEAL.to_string(), seal.to_string())], &[audit]).await?;
        Ok(())
    }

    /// Hands the opened key store to this custos. The caller opened it from
    /// [`Ca::recorded_key_store`] and its configuration; every key loaded
    /// later is still checked against its recorded public key.
    pub fn attach_keys(&mut self, keys: Arc<dyn KeyStore>) {
        self.keys = Some(keys);
    }

    /// The public base URL in every certificate.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn key_store(&self) -> Result<&Arc<dyn KeyStore>> {
        self.keys.as_ref().ok_or(CaError::KeyStoreSealed)
    }

    /// Loads the signer of a stored key, counting its signatures as `purpose`.
    async fn signer(&self, key_id: &str, purpose: metrics::Purpose) -> Result<Arc<dyn Signer>> {
        let record = self
            .store
            .key(key_id)
            .await?
            .ok_or_else(|| CaError::Inconsistent(format!("key {key_id} is not recorded")))?;
        // A compromised key still signs its CA's final CRL before it is destroyed;
        // compromised CAs never issue (only active ones are chosen for issuance).
        if record.status == custos_types::KeyStatus::Destroyed {
            return Err(CaError::Policy(format!("key {key_id} is {}, not active", record.status)));
        }
        let reference = custos_keys::KeyReference { backend: record.backend, data: record.reference };
        let signer = self.key_store()?.load(&reference)?;
        if signer.public_key().spki_der() != record.public_key {
            return Err(CaError::Inconsistent(format!("key {key_id} does not match its recorded public key")));
        }
        let signatures = self
            .metrics
            .signatures
            .get_or_create(&metrics::SignatureLabels { key: key_id.to_string(), purpose: purpose.as_str() });
        // Resolved once here: a signature then costs one atomic add (OCSP signs on its hot path).
        Ok(Arc::new(Counted { inner: signer, signatures: signatures.clone() }))
    }

    /// The domain's metrics, to register and to read.
    pub fn metrics(&self) -> &Arc<metrics::CaMetrics> {
        &self.metrics
    }

    /// Drops the cached active issuer, after the CAs changed.
    pub(crate) fn forget_active_issuer(&self) {
        if let Ok(mut a) = self.active.lock() {
            *a = None;
        }
    }

    /// Builds the CDP and AIA URLs for certificates signed by `issuer_id`.
    fn urls_for(&self, issuer_id: &str) -> IssuerUrls {
        issuer_urls(&self.base_url, issuer_id)
    }

    /// Pairs an issuer record with its unsealed key, which signs for `purpose`.
    async fn ca_issuer(&self, record: &IssuerRecord, purpose: metrics::Purpose) -> Result<CaIssuer> {
        let signer = self.signer(&record.key_id, purpose).await?;
        Ok(CaIssuer::new(&record.cert_der, signer)?)
    }
}

/// A signer that counts what it signs in `custos_signatures_total`.
struct Counted {
    inner: Arc<dyn Signer>,
    signatures: prometheus_client::metrics::counter::Counter,
}

impl Signer for Counted {
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }

    fn public_key(&self) -> &custos_types::PublicKey {
        self.inner.public_key()
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, custos_types::SignError> {
        let signature = self.inner.sign(message)?;
        self.signatures.inc();
        Ok(signature)
    }
}

/// An audit record by `principal`, now; the key it names in `details.key` becomes its indexed key.
pub(crate) fn audit_record(
    principal: &Principal,
    action: &str,
    object: String,
    details: serde_json::Value,
) -> AuditRecord {
    audit_record_at(OffsetDateTime::now_utc().unix_timestamp(), &principal.actor(), action, object, details)
}

tokio::task_local! {
    /// The id of the API request being served, if this task serves one.
    static REQUEST_ID: String;
}

/// Runs `f` as API request `id`: every audit entry it writes names the
/// request in its details (`request_id`), so a log line and an entry can be
/// matched. Work `f` hands to other tasks does not carry the id.
pub async fn with_request_id<F: std::future::Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// An audit record at `time` by `actor`.
fn audit_record_at(time: i64, actor: &str, action: &str, object: String, details: serde_json::Value) -> AuditRecord {
    let mut details = details;
    if let (Ok(id), Some(map)) = (REQUEST_ID.try_with(Clone::clone), details.as_object_mut()) {
        map.insert("request_id".into(), serde_json::Value::String(id));
    }
    AuditRecord {
        time,
        actor: actor.to_string(),
        action: action.to_string(),
        object,
        key: details.get("key").and_then(|k| k.as_str()).map(str::to_string),
        details: details.to_string(),
    }
}

/// Authorizes like [`authorize`], but answers an object the principal may not
/// see with `not_found`, exactly as if it did not exist.
pub(crate) fn visible(
    principal: &Principal,
    operation: Operation<'_>,
    not_found: impl FnOnce() -> CaError,
) -> Result<()> {
    match decide(principal, &operation) {
        Decision::Hide => Err(not_found()),
        _ => authorize(principal, operation),
    }
}

/// Where a CRL partition is published: partition 0 at `{issuer}.crl`, the
/// others at `{issuer}/{n}.crl` (issuer ids contain dashes, so no suffix).
pub fn crl_url(base_url: &str, issuer_id: &str, partition: i64) -> String {
    if partition == 0 {
        format!("{base_url}/crl/{issuer_id}.crl")
    } else {
        format!("{base_url}/crl/{issuer_id}/{partition}.crl")
    }
}

fn issuer_urls(base_url: &str, issuer_id: &str) -> IssuerUrls {
    IssuerUrls {
        crl: format!("{base_url}/crl/{issuer_id}.crl"),
        ocsp: format!("{base_url}/ocsp"),
        ca_issuers: format!("{base_url}/ca/{issuer_id}.der"),
    }
}

/// Checks a base URL and drops a trailing slash.
fn normalize_base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| CaError::Policy(format!("base URL {url:?} must start with http:// or https://")))?;
    if rest.is_empty() || !rest.is_ascii() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(CaError::Policy(format!("base URL {url:?} is not a plain http(s) URL")));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(normalize_base_url("https://pki.example/").expect("ok"), "https://pki.example");
        for bad in ["ftp://x", "http://", "pki.example", "http://a b", "http://x?y"] {
            assert!(normalize_base_url(bad).is_err(), "{bad}");
        }
    }
}
