//! The custos domain: the CA ceremony, tenants and connections, issuance under
//! policy, the inventory, revocation, CRLs, and the status publisher that
//! answers OCSP from memory and keeps CRLs current.
//!
//! Every state change goes to the store together with its audit entry, in one
//! transaction. This crate owns the rules; the CLI and the HTTP server only
//! parse, call it and render. It does no X.509 encoding itself (custos-pki)
//! and never sees key bytes (custos-keys).

pub mod audit;
mod error;
pub mod incident;
mod inventory;
mod issuance;
pub mod policy;
pub mod publisher;
mod revocation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use custos_keys::soft::{SealParams, SoftKeyStore};
use custos_keys::{KeyAlgorithm, KeyStore, Signer};
use custos_pki::{CaIssuer, CertificateSpec, CertificateTemplate, IssuerUrls, Profile, Serial};
use custos_store::{AuditRecord, Genesis, KeyRecord, SqlStore, Store};
use serde_json::json;
use time::OffsetDateTime;

pub use custos_store::{AuditEntry, AuditFilter, CheckpointRecord, KeyUsage};
pub use custos_store::{CertificateRecord, ConnectionRecord, IssuerRecord, StatusFilter, TenantRecord};
pub use error::CaError;
pub use inventory::{CertificateView, ConnectionOptions, IssuerView, KeyView, ListFilter, rfc3339};
pub use issuance::{IssueRequest, Issued, KeySource};
pub use publisher::{OcspAnswer, StatusPublisher};
pub use revocation::{CRL_LIFETIME, Crl, ResponderKey};

/// Result of a custos operation.
pub type Result<T> = std::result::Result<T, CaError>;

/// The public base URL used when `init` is given none.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";
/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "custos.db";

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
    /// The database: `None` for the SQLite file in the data directory, or a
    /// `postgres://` URL shared by several nodes.
    pub database: Option<String>,
    /// Where CA keys live: `None` for the sealed soft store, or a PKCS#11
    /// token URI (`pkcs11:token=…?module-path=…&pin-source=…`).
    pub key_store: Option<String>,
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
            key_store: None,
            database: None,
        }
    }
}

/// An opened custos: its store, settings and (once unsealed) its keys.
pub struct Ca {
    dir: PathBuf,
    store: Arc<dyn Store>,
    base_url: String,
    crl_partition_size: i64,
    actor: String,
    keys: Option<Arc<dyn KeyStore>>,
    active: Mutex<Option<Arc<issuance::ActiveIssuer>>>,
}

impl Ca {
    /// Creates a new custos in `dir`: the database, the sealed key store, a
    /// root CA and an issuing CA, all committed in one transaction.
    pub async fn init(dir: &Path, options: &InitOptions, passphrase: &[u8], actor: &str) -> Result<Ca> {
        let base_url = normalize_base_url(&options.base_url)?;
        if options.crl_partition_size < 1 {
            return Err(CaError::Policy("the CRL partition size must be at least 1".into()));
        }
        let db = dir.join(DATABASE_FILE);
        let store = match &options.database {
            Some(url) => {
                let store = SqlStore::open(url).await?;
                if store.meta("initialized").await?.is_some() {
                    return Err(CaError::AlreadyInitialized { dir: dir.to_path_buf() });
                }
                Some(store)
            }
            None => {
                if db.exists() {
                    let store = SqlStore::open_sqlite(&db).await?;
                    if store.meta("initialized").await?.is_some() {
                        return Err(CaError::AlreadyInitialized { dir: dir.to_path_buf() });
                    }
                    store.close().await;
                }
                None
            }
        };
        // The key store first: a token that cannot be reached leaves nothing behind.
        let (keys, key_store_meta) = create_key_store(options.key_store.as_deref(), passphrase)?;
        let store = match store {
            Some(store) => store,
            None => {
                create_private_dir(dir)?;
                SqlStore::open_sqlite(&db).await?
            }
        };
        let now = OffsetDateTime::now_utc();
        let mut genesis = Genesis {
            meta: vec![
                (META_BASE_URL.into(), base_url.clone()),
                (META_CRL_PARTITION_SIZE.into(), options.crl_partition_size.to_string()),
            ],
            ..Genesis::default()
        };
        genesis.meta.extend(key_store_meta);
        let audit = |action: &str, object: String, details: serde_json::Value| {
            audit_record(now.unix_timestamp(), actor, action, object, details)
        };

        let root_id = "root-1".to_string();
        let issuing_id = "issuing-1".to_string();
        let org = options.organization.clone();
        let root_name = format!("{org} Root CA 1");
        let issuing_name = format!("{org} Issuing CA 1");

        let root_key = keys.generate(options.ca_algorithm, &root_id)?;
        let root_key_id = root_key.signer.public_key().key_id().to_string();
        let root_template = CertificateTemplate::new(CertificateSpec {
            serial: Serial::random()?,
            profile: Profile::RootCa,
            common_name: root_name.clone(),
            organization: Some(org.clone()),
            sans: vec![],
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::days(i64::from(Profile::RootCa.default_validity_days())),
            urls: None,
        })?;
        let (root_cert, root_issuer) = root_template.self_sign(root_key.signer.clone())?;

        let issuing_key = keys.generate(options.ca_algorithm, &issuing_id)?;
        let issuing_key_id = issuing_key.signer.public_key().key_id().to_string();
        let issuing_template = CertificateTemplate::new(CertificateSpec {
            serial: Serial::random()?,
            profile: Profile::IssuingCa,
            common_name: issuing_name.clone(),
            organization: Some(org.clone()),
            sans: vec![],
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::days(i64::from(Profile::IssuingCa.default_validity_days())),
            urls: Some(issuer_urls(&base_url, &root_id)),
        })?;
        let issuing_cert =
            issuing_template.sign(issuing_key.signer.public_key(), issuing_key.signer.algorithm(), &root_issuer)?;

        for (id, key, label) in [(&root_key_id, &root_key, &root_id), (&issuing_key_id, &issuing_key, &issuing_id)] {
            genesis.keys.push(KeyRecord {
                id: id.clone(),
                backend: key.reference.backend.clone(),
                algorithm: key.signer.algorithm().to_string(),
                label: label.clone(),
                public_key: key.signer.public_key().spki_der().to_vec(),
                reference: key.reference.data.clone(),
                status: "active".into(),
                created_at: now.unix_timestamp(),
            });
            genesis.audit.push(audit(
                "key.generate",
                format!("key:{id}"),
                json!({"key": id, "algorithm": key.signer.algorithm().as_str(), "backend": key.reference.backend, "label": label}),
            ));
        }
        for (id, name, role, parent, cert, key_id, signer_key) in [
            (&root_id, &root_name, "root", None, &root_cert, &root_key_id, &root_key_id),
            (
                &issuing_id,
                &issuing_name,
                "issuing",
                Some(root_id.clone()),
                &issuing_cert,
                &issuing_key_id,
                &root_key_id,
            ),
        ] {
            let fingerprint = custos_pki::fingerprint(&cert.der);
            genesis.issuers.push(IssuerRecord {
                id: id.clone(),
                name: name.clone(),
                role: role.into(),
                parent: parent.clone(),
                key_id: key_id.clone(),
                cert_der: cert.der.clone(),
                fingerprint: fingerprint.clone(),
                not_after: cert.not_after.unix_timestamp(),
                status: "active".into(),
                crl_number: 0,
                created_at: now.unix_timestamp(),
                revoked_at: None,
            });
            genesis.audit.push(audit(
                "issuer.create",
                format!("issuer:{id}"),
                json!({"key": signer_key, "subject_key": key_id, "serial": cert.serial.to_hex(), "role": role,
                       "parent": parent, "fingerprint": fingerprint}),
            ));
        }
        let log_key = audit::new_log_key(keys.as_ref(), &base_url, actor, now.unix_timestamp())?;
        genesis.keys.push(log_key.record);
        genesis.meta.extend(log_key.settings);
        genesis.audit.push(log_key.audit);
        store.initialize(genesis).await.map_err(|e| match e {
            custos_store::StoreError::AlreadyInitialized => CaError::AlreadyInitialized { dir: dir.to_path_buf() },
            other => other.into(),
        })?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            store: Arc::new(store),
            base_url,
            crl_partition_size: options.crl_partition_size,
            actor: actor.to_string(),
            keys: Some(keys),
            active: Mutex::new(None),
        })
    }

    /// Opens an existing custos in `dir` without unsealing its keys.
    pub async fn open(dir: &Path, actor: &str) -> Result<Ca> {
        Ca::open_with(dir, None, actor).await
    }

    /// Opens an existing custos: in `database` (a `postgres://` URL) if
    /// given, else in the SQLite file of `dir`; keys stay sealed.
    pub async fn open_with(dir: &Path, database: Option<&str>, actor: &str) -> Result<Ca> {
        let store = match database {
            Some(url) => SqlStore::open(url).await?,
            None => {
                let db = dir.join(DATABASE_FILE);
                if !db.exists() {
                    return Err(CaError::NotInitialized { dir: dir.to_path_buf() });
                }
                SqlStore::open_sqlite(&db).await?
            }
        };
        if store.meta("initialized").await?.is_none() {
            return Err(CaError::NotInitialized { dir: dir.to_path_buf() });
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
            dir: dir.to_path_buf(),
            store: Arc::new(store),
            base_url,
            crl_partition_size,
            actor: actor.to_string(),
            keys: None,
            active: Mutex::new(None),
        })
    }

    /// Whether unsealing needs the passphrase (the soft store) or not (a
    /// token, whose PIN comes from its configured source).
    pub async fn needs_passphrase(&self) -> Result<bool> {
        Ok(self.store.meta(META_KEY_STORE).await?.as_deref() == Some(custos_keys::soft::BACKEND))
    }

    /// Opens the key store: unseals the soft store with `passphrase` (a wrong
    /// one changes nothing), or logs in to the PKCS#11 token.
    pub async fn unseal(&mut self, passphrase: &[u8]) -> Result<()> {
        let backend = self.store.meta(META_KEY_STORE).await?.unwrap_or_default();
        if backend.starts_with("pkcs11:") {
            let config = custos_keys::pkcs11::TokenConfig::parse(&backend)?;
            self.keys = Some(Arc::new(custos_keys::pkcs11::Pkcs11KeyStore::open(config)?));
            return Ok(());
        }
        if backend != custos_keys::soft::BACKEND {
            return Err(CaError::Inconsistent(format!("unsupported key store backend {backend:?}")));
        }
        let seal = self
            .store
            .meta(META_SEAL)
            .await?
            .ok_or_else(|| CaError::Inconsistent("no seal parameters recorded".into()))?;
        let params: SealParams =
            serde_json::from_str(&seal).map_err(|e| CaError::Inconsistent(format!("seal parameters: {e}")))?;
        self.keys = Some(Arc::new(SoftKeyStore::open(passphrase, &params)?));
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public base URL in every certificate.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn key_store(&self) -> Result<&Arc<dyn KeyStore>> {
        self.keys
            .as_ref()
            .ok_or_else(|| CaError::Inconsistent("the key store is sealed; unseal it before signing".into()))
    }

    /// Loads the signer of a stored key.
    async fn signer(&self, key_id: &str) -> Result<Arc<dyn Signer>> {
        let record = self
            .store
            .key(key_id)
            .await?
            .ok_or_else(|| CaError::Inconsistent(format!("key {key_id} is not recorded")))?;
        // A compromised key still signs its CA's final CRL before it is destroyed;
        // compromised CAs never issue (only active ones are chosen for issuance).
        if record.status != "active" && record.status != "compromised" {
            return Err(CaError::Policy(format!("key {key_id} is {}, not active", record.status)));
        }
        let reference = custos_keys::KeyReference { backend: record.backend, data: record.reference };
        let signer = self.key_store()?.load(&reference)?;
        if signer.public_key().spki_der() != record.public_key {
            return Err(CaError::Inconsistent(format!("key {key_id} does not match its recorded public key")));
        }
        Ok(signer)
    }

    fn audit(&self, action: &str, object: String, details: serde_json::Value) -> AuditRecord {
        audit_record(OffsetDateTime::now_utc().unix_timestamp(), &self.actor, action, object, details)
    }

    /// An audit record by this custos's actor, for entries written outside this crate.
    pub fn audit_record(&self, action: &str, object: String, details: serde_json::Value) -> AuditRecord {
        self.audit(action, object, details)
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

    /// Pairs an issuer record with its unsealed key.
    async fn ca_issuer(&self, record: &IssuerRecord) -> Result<CaIssuer> {
        let signer = self.signer(&record.key_id).await?;
        Ok(CaIssuer::new(&record.cert_der, signer)?)
    }
}

/// Settings as (name, value) pairs for the `meta` table.
type Settings = Vec<(String, String)>;

/// Creates the key store `init` asked for, with the settings that reopen it.
fn create_key_store(uri: Option<&str>, passphrase: &[u8]) -> Result<(Arc<dyn KeyStore>, Settings)> {
    match uri {
        None => {
            let (keys, seal) = SoftKeyStore::create(passphrase)?;
            let seal = serde_json::to_string(&seal).map_err(|e| CaError::Inconsistent(e.to_string()))?;
            Ok((
                Arc::new(keys),
                vec![(META_KEY_STORE.into(), custos_keys::soft::BACKEND.into()), (META_SEAL.into(), seal)],
            ))
        }
        Some(uri) => {
            let config = custos_keys::pkcs11::TokenConfig::parse(uri)?;
            let canonical = config.uri();
            let keys = custos_keys::pkcs11::Pkcs11KeyStore::open(config)?;
            Ok((Arc::new(keys), vec![(META_KEY_STORE.into(), canonical)]))
        }
    }
}

/// An audit record; the key it names in `details.key` becomes its indexed key.
fn audit_record(time: i64, actor: &str, action: &str, object: String, details: serde_json::Value) -> AuditRecord {
    AuditRecord {
        time,
        actor: actor.to_string(),
        action: action.to_string(),
        object,
        key: details.get("key").and_then(|k| k.as_str()).map(str::to_string),
        details: details.to_string(),
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

fn create_private_dir(dir: &Path) -> Result<()> {
    let io = |source| CaError::Io { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
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
