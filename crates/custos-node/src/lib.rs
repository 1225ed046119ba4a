//! The composition root of a custos node: reads the one [`Config`], builds
//! the store and the key store it names, hands them to custos-ca, and runs
//! the background jobs (OCSP refresh, the revocation feed, CRLs, audit
//! checkpoints, webhook delivery) beside the HTTP listeners.
//!
//! This is the only crate that chooses backends. Nothing that decides what
//! code runs is read from the database: the PKCS#11 module comes from the
//! configuration, and a start whose module or token differs from the one
//! recorded at init is refused before the module is loaded.
//! Not here: domain rules (custos-ca), HTTP handlers (custos-server),
//! command-line parsing and output (custos-cli).

mod acme;
pub mod client;
pub mod config;
mod jobs;
mod webhook;
pub mod witness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_ca::{Ca, CaError, InitOptions, Principal, RecordedKeyStore};
use custos_keys::KeyStore;
use custos_keys::soft::{SealParams, SoftKeyStore};
use custos_store::{SqlStore, Store};

pub use config::{Config, Loaded, Origin, Override};
pub use jobs::{Listeners, serve, serve_witness};
pub use webhook::{WebhookTransport, webhook_policy};

/// What can go wrong while putting a custos node together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A file or directory could not be used.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `init` where a custos already is.
    #[error("{location} already holds an initialized custos; refusing to overwrite it")]
    AlreadyInitialized {
        /// The data directory or database.
        location: String,
    },
    /// The SQLite database is gone from a data directory that held a custos.
    #[error(
        "the database {} is missing, but {} held a custos (audit log key {identity}); restore the last backup with \
         `custos restore BACKUP` (see docs/operations.md). `custos init` refuses this directory: it would create a \
         new, unrelated CA beside the certificates the old one issued",
        database.display(), dir.display()
    )]
    DatabaseMissing {
        /// The missing database file.
        database: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// The custos recorded in its marker.
        identity: String,
    },
    /// Anything but `init` where no custos is.
    #[error("no custos in {location} (run `custos init` first, or set --data-dir / CUSTOS_DATA)")]
    NotInitialized {
        /// The data directory or database.
        location: String,
    },
    /// The configured key store is not the one this custos was created with.
    #[error(
        "the configured key store is not this custos's: the database records {recorded}, the configuration names {configured}; {hint}"
    )]
    KeyStoreMismatch {
        /// What the database recorded at init.
        recorded: String,
        /// What the configuration names.
        configured: String,
        /// What to do.
        hint: &'static str,
    },
    /// A new key store's passphrase breaks the policy; nothing was created.
    #[error("passphrase refused: {0} (tests and labs only: --danger-weak-passphrase)")]
    WeakPassphrase(String),
    /// The passphrase does not unseal the soft key store; nothing changed.
    #[error("wrong passphrase: it does not unseal this key store")]
    WrongPassphrase,
    /// The domain refused or failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The key store failed to open.
    #[error(transparent)]
    Keys(#[from] custos_keys::KeyError),
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] custos_store::StoreError),
    /// A listener could not be set up, or the server failed.
    #[error("server: {0}")]
    Serve(String),
}

/// Result of a node operation.
pub type Result<T> = std::result::Result<T, NodeError>;

/// Whether `e` or one of its causes says the database is damaged.
pub fn is_damaged(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        if cause.downcast_ref::<custos_store::StoreError>().is_some_and(custos_store::StoreError::is_damaged) {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Where the configuration puts the database, for messages (password redacted).
pub fn location(config: &Config) -> String {
    match &config.database {
        Some(url) => config::redact_url(url),
        None => config.data_dir.display().to_string(),
    }
}

/// The file beside a SQLite database that says a custos lives in this data
/// directory (its audit log key), written at `init` and by `restore`: its
/// database vanishing is then an error to restore from, not a fresh start.
pub const MARKER_FILE: &str = "custos.id";

/// The custos a data directory's marker names, if it has one.
fn marker(config: &Config) -> Result<Option<String>> {
    let path = config.data_dir.join(MARKER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(text.lines().find_map(|l| l.strip_prefix("audit-log-key: ")).unwrap_or(text.trim()).to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Io { path, source: e }),
    }
}

/// Writes the data directory's marker for `ca`, if there is none.
async fn write_marker(config: &Config, ca: &Ca) -> Result<()> {
    if config.database.is_some() || marker(config)?.is_some() {
        return Ok(());
    }
    let key = ca.log_verifier_key().await?;
    let text = format!(
        "# custos lives in this data directory; if custos.db is missing, restore a backup (`custos restore`).\n\
         audit-log-key: {key}\n"
    );
    write_new_private(&config.data_dir.join(MARKER_FILE), text.as_bytes())
}

/// Opens the configured store; the SQLite file must exist unless `create`.
async fn open_store(config: &Config, create: bool) -> Result<SqlStore> {
    match &config.database {
        Some(url) => Ok(SqlStore::open(url).await?),
        None => {
            let db = config.database_file();
            if !create && !db.exists() {
                if let Some(identity) = marker(config)? {
                    return Err(NodeError::DatabaseMissing { database: db, dir: config.data_dir.clone(), identity });
                }
                return Err(NodeError::NotInitialized { location: location(config) });
            }
            Ok(SqlStore::open_sqlite(&db).await?)
        }
    }
}

/// Opens the custos the configuration names; its keys stay sealed.
pub async fn open(config: &Config) -> Result<Ca> {
    let store: Arc<dyn Store> = Arc::new(open_store(config, false).await?);
    let ca = Ca::open(store).await.map_err(|e| match e {
        CaError::NotInitialized => NodeError::NotInitialized { location: location(config) },
        other => other.into(),
    })?;
    ca.set_approval_policy(approval_policy(config));
    Ok(ca)
}

/// The two-person rule the configuration asks for.
pub fn approval_policy(config: &Config) -> custos_ca::approvals::ApprovalPolicy {
    custos_ca::approvals::ApprovalPolicy {
        incident_execute: config.approvals.incident_execute,
        expiry_secs: i64::try_from(config.approvals.expiry_s).unwrap_or(i64::MAX),
    }
}

/// Whether a custos is already where the configuration points.
pub async fn exists(config: &Config) -> Result<bool> {
    if config.database.is_none() && !config.database_file().exists() {
        return Ok(false);
    }
    match open(config).await {
        Ok(_) => Ok(true),
        Err(NodeError::NotInitialized { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether unsealing needs the passphrase: the soft store does, a token
/// (whose PIN comes from its configured source) does not.
pub async fn needs_passphrase(ca: &Ca) -> Result<bool> {
    Ok(matches!(ca.recorded_key_store().await?, RecordedKeyStore::Soft { .. }))
}

/// Opens the key store the configuration names and hands it to `ca`: the
/// soft store unsealed with `passphrase` (a wrong one changes nothing), or
/// the PKCS#11 token, after checking that module and token are the ones
/// recorded at init.
pub async fn unseal(config: &Config, ca: &mut Ca, passphrase: &[u8]) -> Result<()> {
    let keys: Arc<dyn KeyStore> = match (ca.recorded_key_store().await?, config.key_store.backend) {
        (RecordedKeyStore::Soft { seal }, config::Backend::Soft) => {
            let params: SealParams = serde_json::from_str(&seal)
                .map_err(|e| CaError::Inconsistent(format!("recorded seal parameters: {e}")))?;
            Arc::new(SoftKeyStore::open(passphrase, &params).map_err(|e| match e {
                custos_keys::KeyError::WrongPassphrase => NodeError::WrongPassphrase,
                other => other.into(),
            })?)
        }
        (RecordedKeyStore::Pkcs11 { uri }, config::Backend::Pkcs11) => {
            let configured = config.token_config()?;
            let recorded = custos_keys::pkcs11::TokenConfig::parse(&uri)?;
            if recorded.module_path != configured.module_path || recorded.token != configured.token {
                return Err(NodeError::KeyStoreMismatch {
                    recorded: format!("token {:?} through module {}", recorded.token, recorded.module_path.display()),
                    configured: format!(
                        "token {:?} through module {}",
                        configured.token,
                        configured.module_path.display()
                    ),
                    hint: "the module was not loaded; fix [key_store] in the configuration, or find out who changed the database",
                });
            }
            Arc::new(custos_keys::pkcs11::Pkcs11KeyStore::open(configured)?)
        }
        (RecordedKeyStore::Pkcs11 { uri }, config::Backend::Soft) => {
            let recorded = custos_keys::pkcs11::TokenConfig::parse(&uri).ok();
            return Err(NodeError::KeyStoreMismatch {
                recorded: match recorded {
                    Some(r) => format!("token {:?} through module {}", r.token, r.module_path.display()),
                    None => "a PKCS#11 token".into(),
                },
                configured: "the sealed soft store".into(),
                hint: "set [key_store] backend = \"pkcs11\" with module, token and pin_source in the configuration (or CUSTOS_KEY_STORE); nothing named in the database is loaded",
            });
        }
        (RecordedKeyStore::Soft { .. }, config::Backend::Pkcs11) => {
            return Err(NodeError::KeyStoreMismatch {
                recorded: "the sealed soft store".into(),
                configured: "a PKCS#11 token".into(),
                hint: "remove [key_store] from the configuration (and CUSTOS_KEY_STORE)",
            });
        }
    };
    ca.attach_keys(keys);
    Ok(())
}

/// Creates a new custos where the configuration points: the key store it
/// names (the soft store sealed under `passphrase`, or the token), a root and
/// an issuing CA, committed in one transaction. With the SQLite default, the
/// data directory is created owner-only, and the key store's configuration
/// is written to `custos.toml` beside the database unless a file exists, so
/// that later commands find the token without a flag.
pub async fn init(config: &Config, passphrase: &[u8], principal: &Principal) -> Result<Ca> {
    let options = InitOptions {
        base_url: config.base_url.clone(),
        organization: config.init.organization.clone(),
        ca_algorithm: config.init.ca_algorithm.parse().map_err(custos_keys::KeyError::from)?,
        crl_partition_size: config.init.crl_partition_size,
    };
    if config.database.is_none()
        && !config.database_file().exists()
        && let Some(identity) = marker(config)?
    {
        return Err(NodeError::DatabaseMissing {
            database: config.database_file(),
            dir: config.data_dir.clone(),
            identity,
        });
    }
    if exists(config).await? {
        return Err(NodeError::AlreadyInitialized { location: location(config) });
    }
    // The key store first: a token that cannot be reached leaves nothing behind.
    let (keys, recorded): (Arc<dyn KeyStore>, RecordedKeyStore) = match config.key_store.backend {
        config::Backend::Soft => {
            if !config.init.danger_weak_passphrase {
                check_passphrase(passphrase)?;
            }
            let (keys, seal) = SoftKeyStore::create(passphrase)?;
            let seal = serde_json::to_string(&seal).map_err(|e| CaError::Inconsistent(e.to_string()))?;
            (Arc::new(keys), RecordedKeyStore::Soft { seal })
        }
        config::Backend::Pkcs11 => {
            let token = config.token_config()?;
            let uri = token.uri();
            (Arc::new(custos_keys::pkcs11::Pkcs11KeyStore::open(token)?), RecordedKeyStore::Pkcs11 { uri })
        }
    };
    if config.database.is_none() {
        create_private_dir(&config.data_dir)?;
    }
    let store: Arc<dyn Store> = Arc::new(open_store(config, true).await?);
    let ca = Ca::init(store, keys, &recorded, &options, principal).await.map_err(|e| match e {
        CaError::AlreadyInitialized => NodeError::AlreadyInitialized { location: location(config) },
        other => other.into(),
    })?;
    if config.key_store.backend == config::Backend::Pkcs11 {
        write_key_store_config(config)?;
    }
    write_marker(config, &ca).await?;
    ca.set_approval_policy(approval_policy(config));
    Ok(ca)
}

/// Signs a checkpoint if the log grew and appends it to the checkpoint file.
pub async fn sign_checkpoint(
    config: &Config,
    ca: &Ca,
    principal: &Principal,
) -> Result<Option<custos_ca::CheckpointRecord>> {
    let signed = ca.sign_checkpoint(principal).await?;
    if let Some(cp) = &signed {
        record_checkpoint(config, cp)?;
    }
    Ok(signed)
}

/// Appends a signed checkpoint to the checkpoint file (one JSON line:
/// size and note), created owner-only, synced before this returns. The file
/// is append-only for custos: a log truncated in the database, checkpoints
/// and all, no longer extends its newest line.
pub fn record_checkpoint(config: &Config, cp: &custos_ca::CheckpointRecord) -> Result<()> {
    use std::io::Write;
    let Some(path) = config.checkpoint_file() else { return Ok(()) };
    let io = |source| NodeError::Io { path: path.clone(), source };
    // Created owner-only, and reopened only while it is custos's own file.
    let mut file = custos_ca::files::open_own_private(&path, "audit.checkpoint_file")?;
    let line = serde_json::json!({"size": cp.size, "time": cp.time, "note": cp.note});
    file.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

/// The newest checkpoint note in the checkpoint file, with its size; `None`
/// when there is no file or no whole line in it yet.
pub fn newest_recorded_checkpoint(config: &Config) -> Result<Option<(PathBuf, u64, String)>> {
    let Some(path) = config.checkpoint_file() else { return Ok(None) };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NodeError::Io { path, source }),
    };
    // The largest size wins (nodes and the CLI append in any order); a torn
    // last line (a crash mid-append) is skipped.
    let newest = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["size"].as_u64()?, v["note"].as_str()?.to_string())))
        .max_by_key(|(size, _)| *size);
    Ok(newest.map(|(size, note)| (path, size, note)))
}

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// Bytes written.
    pub bytes: u64,
    /// Audit entries covered by the signed checkpoint in the copy.
    pub checkpoint_size: u64,
}

/// Makes an online, consistent copy of a SQLite custos at `path` (which must
/// not exist): created owner-only (it holds the sealed keys) before the
/// database writes into it, synced when done.
pub async fn backup(config: &Config, ca: &Ca, principal: &Principal, path: &Path) -> Result<BackupReport> {
    let io = |source| NodeError::Io { path: path.to_path_buf(), source };
    write_new_private(path, b"")?;
    if let Err(e) = sign_checkpoint(config, ca, principal).await {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    let checkpoint_size = match ca.backup(principal, path).await {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e.into());
        }
    };
    let file = std::fs::File::open(path).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(BackupReport { bytes: file.metadata().map_err(io)?.len(), checkpoint_size })
}

/// Restores a backup made by [`backup`] into the configured data directory,
/// which must hold no database: copied to a new owner-only file, synced,
/// renamed into place, then opened. A marker naming another custos is
/// refused. The caller verifies the log of the returned custos.
pub async fn restore(config: &Config, backup: &Path) -> Result<Ca> {
    if config.database.is_some() {
        return Err(NodeError::Config(
            "a PostgreSQL custos is restored with pg_restore or psql (see docs/operations.md)".into(),
        ));
    }
    let db = config.database_file();
    if db.exists() {
        return Err(NodeError::Config(format!(
            "{} exists; restore writes only where no database is (move it away first, and keep it)",
            db.display()
        )));
    }
    create_private_dir(&config.data_dir)?;
    // Copied to a staging file first and opened there: the backup itself is
    // never written to, and a damaged or foreign copy never becomes custos.db.
    let staging = config.data_dir.join(format!("{DATABASE_STAGING}.{}", std::process::id()));
    copy_new_private(backup, &staging)?;
    let checked = async {
        let store = SqlStore::open_sqlite(&staging).await?;
        let identity = Ca::open(Arc::new(store.clone())).await?.log_verifier_key().await?.to_string();
        store.close().await;
        if let Some(existing) = marker(config)?
            && existing != identity
        {
            return Err(NodeError::Config(format!(
                "{} belongs to another custos (audit log key {existing}); this backup is of {identity}",
                config.data_dir.display()
            )));
        }
        Ok(())
    }
    .await;
    if let Err(e) = checked {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", staging.display()));
        }
        return Err(e);
    }
    std::fs::rename(&staging, &db).map_err(|source| NodeError::Io { path: db.clone(), source })?;
    std::fs::File::open(&config.data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| NodeError::Io { path: config.data_dir.clone(), source })?;
    let ca = open(config).await?;
    write_marker(config, &ca).await?;
    ca.set_approval_policy(approval_policy(config));
    Ok(ca)
}

/// The name a restored database has until it is complete.
const DATABASE_STAGING: &str = ".custos.db.restoring";

/// The passphrase policy of a new soft key store: at least 12 characters, not
/// only blanks, at least 5 different ones. The sealed keys are readable by
/// every database reader, so the passphrase is all that stands in front of them.
fn check_passphrase(passphrase: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(passphrase);
    let chars: Vec<char> = text.chars().collect();
    let distinct: std::collections::BTreeSet<&char> = chars.iter().collect();
    let why = if chars.len() < 12 {
        Some(format!("it has {} characters; use at least 12", chars.len()))
    } else if text.trim().is_empty() {
        Some("it is only blanks".to_string())
    } else if distinct.len() < 5 {
        Some(format!("it repeats {} characters; use at least 5 different ones", distinct.len()))
    } else {
        None
    };
    match why {
        Some(why) => Err(NodeError::WeakPassphrase(why)),
        None => Ok(()),
    }
}

/// Changes the soft key store's passphrase: opens it with `old` (a wrong one
/// changes nothing), checks `new` against the passphrase policy, seals every
/// live key again under `new`, and commits the new references and seal
/// parameters in one transaction with their audit entry.
pub async fn change_passphrase(
    config: &Config,
    ca: &Ca,
    old: &[u8],
    new: &[u8],
    principal: &Principal,
) -> Result<usize> {
    let RecordedKeyStore::Soft { seal } = ca.recorded_key_store().await? else {
        return Err(NodeError::Config("the keys are on a PKCS#11 token: its PIN is changed on the token".into()));
    };
    if !config.init.danger_weak_passphrase {
        check_passphrase(new)?;
    }
    let params: SealParams =
        serde_json::from_str(&seal).map_err(|e| CaError::Inconsistent(format!("recorded seal parameters: {e}")))?;
    let current = SoftKeyStore::open(old, &params).map_err(|e| match e {
        custos_keys::KeyError::WrongPassphrase => NodeError::WrongPassphrase,
        other => other.into(),
    })?;
    let (next, next_params) = SoftKeyStore::create(new)?;
    let mut resealed = Vec::new();
    for (id, reference) in ca.soft_key_references(principal).await? {
        resealed.push((id, current.reseal(&reference, &next)?));
    }
    let seal = serde_json::to_string(&next_params).map_err(|e| CaError::Inconsistent(e.to_string()))?;
    ca.replace_seal(principal, &resealed, &seal).await?;
    Ok(resealed.len())
}

/// Writes `[key_store]` to the data directory's `custos.toml` if there is none.
fn write_key_store_config(config: &Config) -> Result<()> {
    let path = config.default_file();
    if config.database.is_some() || path.exists() {
        return Ok(());
    }
    #[derive(serde::Serialize)]
    struct KeyStoreOnly<'a> {
        key_store: &'a config::KeyStoreConfig,
    }
    let body = toml::to_string(&KeyStoreOnly { key_store: &config.key_store })
        .map_err(|e| NodeError::Config(format!("cannot write {}: {e}", path.display())))?;
    let text = format!(
        "# Written by `custos init`: where this custos's keys are. The database records which token\n\
         # and key ids; the module that is loaded comes only from here (or CUSTOS_KEY_STORE).\n{body}"
    );
    write_new_private(&path, text.as_bytes())
}

/// Creates `path` (which must not exist) owner-only and writes `bytes` to it.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| NodeError::Io { path: path.to_path_buf(), source };
    let mut file = create_new_private(path)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Copies `from` to `to` (which must not exist, created owner-only),
/// streaming: a backup of a million certificates is gigabytes.
fn copy_new_private(from: &Path, to: &Path) -> Result<()> {
    let mut source = std::fs::File::open(from).map_err(|source| NodeError::Io { path: from.to_path_buf(), source })?;
    let io = |source| NodeError::Io { path: to.to_path_buf(), source };
    let mut file = create_new_private(to)?;
    std::io::copy(&mut source, &mut file).map_err(io)?;
    file.sync_all().map_err(io)
}

fn create_new_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| NodeError::Io { path: path.to_path_buf(), source })
}

/// Creates the data directory owner-only, or accepts an existing one that
/// already is: a directory it would have to chmod (another user could have
/// opened files in it already, or it is shared like /tmp) or that another
/// user owns is refused, not repaired.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| NodeError::Io { path: dir.to_path_buf(), source };
    let refuse = |why: String| {
        NodeError::Config(format!(
            "data directory {} {why}; custos keeps its database and secrets only in a directory of its owner's, \
             mode 0700 (create it so, or name a new one)",
            dir.display()
        ))
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(refuse("is not a directory".into()));
            }
            if meta.uid() != custos_ca::current_uid() {
                return Err(refuse(format!("belongs to uid {}", meta.uid())));
            }
            if meta.mode() & 0o077 != 0 {
                return Err(refuse(format!("has mode {:o}", meta.mode() & 0o7777)));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
