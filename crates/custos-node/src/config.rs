//! The one typed configuration of a custos node.
//!
//! Read from a TOML file (`--config FILE`, `CUSTOS_CONFIG`, or `custos.toml`
//! in the data directory), then environment variables, then command-line
//! flags, each overriding the one before. Every value remembers where it came
//! from, so `custos config show` can say. Nothing that decides what code runs
//! (the PKCS#11 module) is ever read from the database.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// The configuration file's name inside the data directory.
pub const CONFIG_FILE: &str = "custos.toml";
/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "custos.db";
/// Signed checkpoints appended outside the database, in the data directory unless configured.
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";

/// Everything a custos node is told: where its state and keys are, what it
/// listens on, and how often its jobs run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: the SQLite database, the dev passphrase, the default config file.
    pub data_dir: PathBuf,
    /// A `postgres://` URL shared by several nodes; unset for the SQLite file in the data directory.
    pub database: Option<String>,
    /// Public base URL written into certificates' CRL, OCSP and caIssuers URLs (used by `init`).
    pub base_url: String,
    /// Where CA and responder keys live.
    pub key_store: KeyStoreConfig,
    /// What `init` creates.
    pub init: InitConfig,
    /// The listeners of `custos serve`.
    pub serve: ServeConfig,
    /// OCSP and CRL timings.
    pub ocsp: OcspConfig,
    /// The audit log's checkpoints.
    pub audit: AuditConfig,
    /// Incident notifications.
    pub webhooks: WebhookConfig,
    /// The two-person rule.
    pub approvals: ApprovalsConfig,
    /// Connection keys in custody.
    pub custody: CustodyConfig,
    /// The ACME server and ARI.
    pub acme: AcmeConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Connection keys in custody: how old an active key may get before its
/// standby takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustodyConfig {
    /// Seconds an active connection key signs before `serve` promotes its standby (90 days).
    pub max_key_age_s: u64,
    /// Seconds between `serve`'s passes over the keys' ages.
    pub rotation_interval_s: u64,
}

impl Default for CustodyConfig {
    fn default() -> Self {
        CustodyConfig { max_key_age_s: 90 * 86_400, rotation_interval_s: 3600 }
    }
}

/// The ACME server (RFC 8555) and ARI (RFC 9773) under `/acme/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Serve `/acme/` (on the TLS listener; accounts need an EAB key from `custos acme eab`).
    pub enabled: bool,
    /// The URL clients reach `/acme` at; `https://{serve.tls_listen}/acme` when unset.
    pub base_url: Option<String>,
    /// Also answer `/acme/` on the plain-HTTP listener (labs only: clients then trust no TLS).
    pub plain_http: bool,
    /// The port http-01 validation dials (80 on the Internet; a loopback port in tests).
    pub http01_port: u16,
    /// The port tls-alpn-01 validation dials.
    pub tlsalpn01_port: u16,
    /// The DNS resolver dns-01 validation asks (IP:port); the first nameserver of /etc/resolv.conf when unset.
    pub dns_resolver: Option<String>,
    /// Where validation dials a name instead of resolving it (name = "IP"; "*.suffix" covers names below it), as Pebble allows.
    pub resolve: std::collections::BTreeMap<String, String>,
    /// How long a nonce stays usable, seconds.
    pub nonce_lifetime_s: u64,
    /// How long an order and its authorizations stay usable, seconds.
    pub order_lifetime_s: u64,
    /// How long an EAB key from `custos acme eab` binds, seconds.
    pub eab_lifetime_s: u64,
    /// ACME accounts per tenant, at most.
    pub max_accounts_per_tenant: u64,
    /// How often ARI clients are told to ask again (Retry-After), seconds: the
    /// longest an incident waits before a polling client learns to renew.
    pub ari_retry_after_s: u64,
    /// How long one challenge validation may take, milliseconds.
    pub validation_timeout_ms: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            enabled: true,
            base_url: None,
            plain_http: false,
            http01_port: 80,
            tlsalpn01_port: 443,
            dns_resolver: None,
            resolve: Default::default(),
            nonce_lifetime_s: 3600,
            order_lifetime_s: 7 * 86_400,
            eab_lifetime_s: 7 * 86_400,
            max_accounts_per_tenant: 100,
            ari_retry_after_s: 3600,
            validation_timeout_ms: 10_000,
        }
    }
}

/// The two-person rule: which actions need a second admin while two or more exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// `incident execute` (which may replace CAs and destroys compromised keys) needs a second admin's approval.
    pub incident_execute: bool,
    /// Seconds an approval request can be approved, and an approval used.
    pub expiry_s: u64,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig { incident_execute: true, expiry_s: 86_400 }
    }
}

/// Which key store holds the keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyStoreConfig {
    /// `soft` (sealed in the database under the passphrase) or `pkcs11` (an HSM token).
    pub backend: Backend,
    /// The PKCS#11 module (shared library) that reaches the token; `pkcs11` only.
    pub module: Option<PathBuf>,
    /// The token's label; `pkcs11` only.
    pub token: Option<String>,
    /// Where the token's user PIN comes from: `file:/path` or `env:NAME`; `pkcs11` only.
    pub pin_source: Option<String>,
}

/// A key store backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The sealed soft store (the embedded default).
    #[default]
    Soft,
    /// A PKCS#11 token.
    Pkcs11,
}

/// What `custos init` creates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitConfig {
    /// Organization in the CA subjects.
    pub organization: String,
    /// CA key algorithm: p256, p384, rsa2048, rsa3072, rsa4096, ed25519.
    pub ca_algorithm: String,
    /// Certificates per CRL partition (each partition has its own CRL and CDP).
    pub crl_partition_size: i64,
    /// Accept a soft-store passphrase shorter than 12 characters (tests and labs only).
    pub danger_weak_passphrase: bool,
}

/// The listeners of `custos serve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Plain HTTP: OCSP, CRLs, CA certificates, audit tiles, health.
    pub listen: String,
    /// HTTPS (TLS 1.3, and TLS 1.2 with ECDHE only); needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<String>,
    /// PEM certificate chain for the TLS listener, leaf first.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8) for the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// Connections a listener keeps open in all; past it, new ones get 503.
    pub max_connections: usize,
    /// Connections a listener keeps open from one client address; past it, that client's new ones get 503.
    pub max_connections_per_client: usize,
    /// API requests per second one principal (a token, an operator) may make on a node, sustained.
    pub api_requests_per_second: u32,
    /// API requests one principal may make at once above that rate; past it, 429 with Retry-After.
    pub api_burst: u32,
    /// Signatures (assertions and digests) per second one custodied connection may get on a node,
    /// sustained, twice that at once; past it, 429 with Retry-After, whoever asks.
    pub sign_requests_per_second: u32,
    /// A separate listener serving only `/metrics`, without credentials: bind
    /// it to loopback or a scrape network (the TLS listener serves `/metrics`
    /// to admins, operators and auditors).
    pub metrics_listen: Option<String>,
    /// How often the store's figures (certificates by status and expiry,
    /// incidents, webhook messages) are counted for `/metrics` and the console.
    pub figures_interval_s: u64,
}

/// OCSP and CRL timings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcspConfig {
    /// How often the revocation feed is polled (ms): the bound on how stale another node's answers are.
    pub poll_interval_ms: u64,
    /// How often cached OCSP responses are checked for re-signing (s).
    pub refresh_interval_s: u64,
    /// Certificates per issuer whose OCSP responses are signed at start-up.
    pub presign: i64,
    /// How often responder certificates are checked for renewal (s).
    pub responder_renewal_s: u64,
}

/// The audit log's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often `serve` signs a checkpoint while entries arrive (ms).
    pub checkpoint_interval_ms: u64,
    /// Where every signed checkpoint is also appended, outside the database, so
    /// that deleting entries with their checkpoints is caught (default:
    /// `checkpoints.jsonl` in the data directory; put it on other storage).
    pub checkpoint_file: Option<PathBuf>,
    /// Witnesses (C2SP tlog-witness) `serve` submits every checkpoint to.
    pub witnesses: Vec<WitnessConfig>,
}

/// A witness of the audit log: its verifier key and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Its verifier key, `name+hash+key` (type 0x04), as `custos witness init` printed it.
    pub key: String,
    /// Its submission URL prefix (`http://host:port`); `/add-checkpoint` is appended.
    pub url: String,
}

/// Incident notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// How often `serve` delivers due notifications (ms).
    pub delivery_interval_ms: u64,
    /// How long a notification is retried before it is given up (s); incident status says so.
    pub give_up_after_s: u64,
    /// Trust only the CA certificates in this PEM file for https:// webhooks
    /// (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Accept webhooks on loopback, link-local and private addresses (labs, tests).
    pub allow_private_targets: bool,
    /// Accept plain http:// webhooks: notifications travel unencrypted
    /// (`--danger-allow-http` sets it for one command).
    pub danger_allow_http: bool,
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: a level (`info`) or per-module directives (`info,custos_ca=debug`).
    pub level: String,
    /// `text` (one readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("custos-data"),
            database: None,
            base_url: "http://127.0.0.1:8080".into(),
            key_store: KeyStoreConfig::default(),
            init: InitConfig::default(),
            serve: ServeConfig::default(),
            ocsp: OcspConfig::default(),
            audit: AuditConfig::default(),
            webhooks: WebhookConfig::default(),
            approvals: ApprovalsConfig::default(),
            custody: CustodyConfig::default(),
            acme: AcmeConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        KeyStoreConfig { backend: Backend::Soft, module: None, token: None, pin_source: None }
    }
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            organization: "custos".into(),
            ca_algorithm: "p256".into(),
            crl_partition_size: 250_000,
            danger_weak_passphrase: false,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            max_connections: 4096,
            max_connections_per_client: 256,
            api_requests_per_second: 200,
            api_burst: 400,
            sign_requests_per_second: 100,
            metrics_listen: None,
            figures_interval_s: 15,
        }
    }
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig { poll_interval_ms: 200, refresh_interval_s: 60, presign: 50_000, responder_renewal_s: 3600 }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { checkpoint_interval_ms: 1000, checkpoint_file: None, witnesses: Vec::new() }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            delivery_interval_ms: 1000,
            give_up_after_s: 86_400,
            ca_file: None,
            allow_private_targets: false,
            danger_allow_http: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", content = "name", rename_all = "lowercase")]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(n) => write!(f, "env {n}"),
            Origin::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// One setting to apply over the file: a dotted key, its text, and where it came from.
#[derive(Clone, Debug)]
pub struct Override {
    /// The dotted key, e.g. `serve.listen`.
    pub key: &'static str,
    /// The value as text.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Environment variables that override the file, and the key each sets.
/// `CUSTOS_KEY_STORE` (a PKCS#11 URI) sets the whole `[key_store]` section.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("CUSTOS_DATA", "data_dir"),
    ("CUSTOS_DATABASE", "database"),
    ("CUSTOS_BASE_URL", "base_url"),
    ("CUSTOS_KEY_STORE", "key_store"),
    ("CUSTOS_LISTEN", "serve.listen"),
    ("CUSTOS_LOG", "log.level"),
    ("CUSTOS_LOG_FORMAT", "log.format"),
];

/// A configuration with the origin of every value.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// Where `key` (dotted) came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Every value as (dotted key, text, origin), secrets redacted, in file order.
    pub fn entries(&self) -> Vec<(String, String, Origin)> {
        let value = toml::Value::try_from(&self.config).unwrap_or(toml::Value::Table(Default::default()));
        let mut out = Vec::new();
        flatten("", &value, &mut out);
        // Unset options are absent from the TOML value: list them too, as "(unset)".
        for key in ALL_KEYS {
            if !out.iter().any(|(k, _)| k == key) {
                out.push((key.to_string(), "(unset)".into()));
            }
        }
        let order = |k: &str| ALL_KEYS.iter().position(|a| *a == k).unwrap_or(usize::MAX);
        out.sort_by_key(|(k, _)| order(k));
        out.into_iter()
            .map(|(k, v)| {
                let shown = if k == "database" { redact_url(&v) } else { v };
                let origin = self.origin(&k);
                (k, shown, origin)
            })
            .collect()
    }
}

/// Every key, in the order `config show` prints them.
const ALL_KEYS: &[&str] = &[
    "data_dir",
    "database",
    "base_url",
    "key_store.backend",
    "key_store.module",
    "key_store.token",
    "key_store.pin_source",
    "init.organization",
    "init.ca_algorithm",
    "init.crl_partition_size",
    "init.danger_weak_passphrase",
    "serve.listen",
    "serve.tls_listen",
    "serve.tls_cert",
    "serve.tls_key",
    "serve.max_connections",
    "serve.max_connections_per_client",
    "serve.api_requests_per_second",
    "serve.api_burst",
    "serve.sign_requests_per_second",
    "serve.metrics_listen",
    "serve.figures_interval_s",
    "ocsp.poll_interval_ms",
    "ocsp.refresh_interval_s",
    "ocsp.presign",
    "ocsp.responder_renewal_s",
    "audit.checkpoint_interval_ms",
    "audit.checkpoint_file",
    "audit.witnesses",
    "webhooks.delivery_interval_ms",
    "webhooks.give_up_after_s",
    "webhooks.ca_file",
    "webhooks.allow_private_targets",
    "webhooks.danger_allow_http",
    "approvals.incident_execute",
    "approvals.expiry_s",
    "custody.max_key_age_s",
    "custody.rotation_interval_s",
    "acme.enabled",
    "acme.base_url",
    "acme.plain_http",
    "acme.http01_port",
    "acme.tlsalpn01_port",
    "acme.dns_resolver",
    "acme.resolve",
    "acme.nonce_lifetime_s",
    "acme.order_lifetime_s",
    "acme.eab_lifetime_s",
    "acme.max_accounts_per_tenant",
    "acme.ari_retry_after_s",
    "acme.validation_timeout_ms",
    "log.level",
    "log.format",
];

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// A URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Reads the configuration: the file (`file`, else `custos.toml` in the data
/// directory the overrides or defaults name, if it exists), then `overrides`
/// in order (environment first, then flags), then checks it.
pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Loaded, NodeError> {
    // The data directory decides where the default file is, so find it first.
    let data_dir = overrides
        .iter()
        .rev()
        .find(|o| o.key == "data_dir")
        .map(|o| PathBuf::from(&o.value))
        .unwrap_or_else(|| Config::default().data_dir);
    let (path, explicit) = match file {
        Some(p) => (p.to_path_buf(), true),
        None => (data_dir.join(CONFIG_FILE), false),
    };
    let mut loaded = Loaded { config: Config::default(), file: None, origins: BTreeMap::new() };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let parsed: Config = toml::from_str(&text)
                .map_err(|e| NodeError::Config(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| NodeError::Config(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
            let mut set = Vec::new();
            flatten("", &toml::Value::Table(table), &mut set);
            for (k, _) in set {
                loaded.origins.insert(k, Origin::File(path.clone()));
            }
            loaded.config = parsed;
            loaded.file = Some(path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => return Err(NodeError::Io { path, source: e }),
    }
    for o in overrides {
        loaded.apply(o)?;
    }
    if loaded.file.is_none() && overrides.iter().all(|o| o.key != "data_dir") {
        // Keep the default visible as such.
        loaded.origins.remove("data_dir");
    }
    loaded.config.validate()?;
    Ok(loaded)
}

/// The overrides the environment gives, in [`ENVIRONMENT`] order.
pub fn environment() -> Vec<Override> {
    ENVIRONMENT
        .iter()
        .filter_map(|(name, key)| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some(Override { key, value, origin: Origin::Env(name) })
        })
        .collect()
}

impl Loaded {
    fn apply(&mut self, o: &Override) -> Result<(), NodeError> {
        let c = &mut self.config;
        let bad = |what: &str| NodeError::Config(format!("{} ({}): {what}", o.key, o.origin));
        let number = || o.value.trim().parse::<u64>().map_err(|_| bad(&format!("{:?} is not a number", o.value)));
        let mut keys = vec![o.key.to_string()];
        match o.key {
            "data_dir" => c.data_dir = PathBuf::from(&o.value),
            "database" => c.database = Some(o.value.clone()),
            "base_url" => c.base_url = o.value.clone(),
            "key_store" => {
                // A PKCS#11 URI (`pkcs11:token=…?module-path=…&pin-source=…`) sets the whole section.
                let token = custos_keys::pkcs11::TokenConfig::parse(&o.value).map_err(|e| bad(&e.to_string()))?;
                c.key_store = KeyStoreConfig {
                    backend: Backend::Pkcs11,
                    module: Some(token.module_path.clone()),
                    token: Some(token.token.clone()),
                    pin_source: Some(pin_source_text(&token.pin_source)),
                };
                keys = ["key_store.backend", "key_store.module", "key_store.token", "key_store.pin_source"]
                    .map(String::from)
                    .to_vec();
            }
            "log.level" => c.log.level = o.value.clone(),
            "log.format" => c.log.format = o.value.parse().map_err(|e: String| bad(&e))?,
            "serve.listen" => c.serve.listen = o.value.clone(),
            "serve.tls_listen" => c.serve.tls_listen = Some(o.value.clone()),
            "serve.tls_cert" => c.serve.tls_cert = Some(PathBuf::from(&o.value)),
            "serve.tls_key" => c.serve.tls_key = Some(PathBuf::from(&o.value)),
            "init.organization" => c.init.organization = o.value.clone(),
            "init.ca_algorithm" => c.init.ca_algorithm = o.value.clone(),
            "init.crl_partition_size" => {
                c.init.crl_partition_size =
                    o.value.trim().parse().map_err(|_| bad(&format!("{:?} is not a number", o.value)))?
            }
            "ocsp.poll_interval_ms" => c.ocsp.poll_interval_ms = number()?,
            "init.danger_weak_passphrase" => c.init.danger_weak_passphrase = o.value == "true",
            "webhooks.danger_allow_http" => c.webhooks.danger_allow_http = o.value == "true",
            other => return Err(NodeError::Config(format!("{other} cannot be set from {}", o.origin))),
        }
        for k in keys {
            self.origins.insert(k, o.origin.clone());
        }
        Ok(())
    }
}

fn pin_source_text(source: &custos_keys::pkcs11::PinSource) -> String {
    match source {
        custos_keys::pkcs11::PinSource::File(p) => format!("file:{}", p.display()),
        custos_keys::pkcs11::PinSource::Env(n) => format!("env:{n}"),
    }
}

impl Config {
    /// Checks what can be checked before anything is opened.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |key: &str, what: String| Err(NodeError::Config(format!("{key}: {what}")));
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "is empty".into());
        }
        if let Some(url) = &self.database
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
            && !url.starts_with("sqlite:")
        {
            return bad("database", format!("{:?} is not a postgres:// or sqlite: URL", redact_url(url)));
        }
        match self.key_store.backend {
            Backend::Soft => {
                if self.key_store.module.is_some() || self.key_store.token.is_some() {
                    return bad("key_store", "module and token belong to backend = \"pkcs11\"".into());
                }
            }
            Backend::Pkcs11 => {
                self.token_config()?;
            }
        }
        if let Err(e) = self.init.ca_algorithm.parse::<custos_keys::KeyAlgorithm>() {
            return bad("init.ca_algorithm", e.to_string());
        }
        if self.init.crl_partition_size < 1 {
            return bad("init.crl_partition_size", "must be at least 1".into());
        }
        for (key, addr) in [
            ("serve.listen", Some(&self.serve.listen)),
            ("serve.tls_listen", self.serve.tls_listen.as_ref()),
            ("serve.metrics_listen", self.serve.metrics_listen.as_ref()),
        ] {
            if let Some(addr) = addr
                && addr.parse::<SocketAddr>().is_err()
            {
                return bad(key, format!("{addr:?} is not an address:port (e.g. 127.0.0.1:8080)"));
            }
        }
        if self.serve.tls_listen.is_some() && (self.serve.tls_cert.is_none() || self.serve.tls_key.is_none()) {
            return bad("serve.tls_listen", "needs serve.tls_cert and serve.tls_key".into());
        }
        for (key, value) in [
            ("ocsp.poll_interval_ms", self.ocsp.poll_interval_ms),
            ("serve.figures_interval_s", self.serve.figures_interval_s),
            ("ocsp.refresh_interval_s", self.ocsp.refresh_interval_s),
            ("ocsp.responder_renewal_s", self.ocsp.responder_renewal_s),
            ("audit.checkpoint_interval_ms", self.audit.checkpoint_interval_ms),
            ("webhooks.delivery_interval_ms", self.webhooks.delivery_interval_ms),
            ("webhooks.give_up_after_s", self.webhooks.give_up_after_s),
            ("approvals.expiry_s", self.approvals.expiry_s),
            ("custody.max_key_age_s", self.custody.max_key_age_s),
            ("custody.rotation_interval_s", self.custody.rotation_interval_s),
            ("acme.nonce_lifetime_s", self.acme.nonce_lifetime_s),
            ("acme.order_lifetime_s", self.acme.order_lifetime_s),
            ("acme.eab_lifetime_s", self.acme.eab_lifetime_s),
            ("acme.max_accounts_per_tenant", self.acme.max_accounts_per_tenant),
            ("acme.ari_retry_after_s", self.acme.ari_retry_after_s),
            ("acme.validation_timeout_ms", self.acme.validation_timeout_ms),
        ] {
            if value == 0 {
                return bad(key, "must be above 0".into());
            }
        }
        if self.serve.max_connections == 0 || self.serve.max_connections_per_client == 0 {
            return bad("serve.max_connections", "limits must be above 0".into());
        }
        if self.serve.api_requests_per_second == 0
            || self.serve.api_burst == 0
            || self.serve.sign_requests_per_second == 0
        {
            return bad("serve.api_requests_per_second", "API rate limits must be above 0".into());
        }
        for w in &self.audit.witnesses {
            match custos_audit::VerifierKey::parse(&w.key) {
                Ok(k) if k.kind == 0x04 => {}
                Ok(k) => {
                    return bad("audit.witnesses", format!("{}: a log's key, not a witness's (type 0x04)", k.name));
                }
                Err(e) => return bad("audit.witnesses", format!("key {:?}: {e}", w.key)),
            }
            if crate::client::split_url(&w.url).is_err() {
                return bad("audit.witnesses", format!("url {:?}: expected http://host:port", w.url));
            }
        }
        if let Some(r) = &self.acme.dns_resolver
            && r.parse::<SocketAddr>().is_err()
        {
            return bad("acme.dns_resolver", format!("{r:?} is not an IP:port (e.g. 127.0.0.1:53)"));
        }
        for (name, address) in &self.acme.resolve {
            if address.parse::<std::net::IpAddr>().is_err() {
                return bad("acme.resolve", format!("{name} = {address:?}: expected an IP address"));
            }
        }
        if let Some(u) = &self.acme.base_url
            && !u.starts_with("https://")
            && !(self.acme.plain_http && u.starts_with("http://"))
        {
            return bad(
                "acme.base_url",
                format!("{u:?}: expected https://host:port/acme (http:// only with plain_http)"),
            );
        }
        if self.ocsp.presign < 0 {
            return bad("ocsp.presign", "must not be negative".into());
        }
        Ok(())
    }

    /// The configured PKCS#11 token (backend `pkcs11` only).
    pub fn token_config(&self) -> Result<custos_keys::pkcs11::TokenConfig, NodeError> {
        let k = &self.key_store;
        let missing = |what: &str| NodeError::Config(format!("key_store: backend = \"pkcs11\" needs {what}"));
        let module = k.module.as_ref().ok_or_else(|| missing("module"))?;
        let token = k.token.as_ref().ok_or_else(|| missing("token"))?;
        let pin = k.pin_source.as_ref().ok_or_else(|| missing("pin_source (file:/path or env:NAME)"))?;
        let pin_source = if let Some(p) = pin.strip_prefix("file:") {
            custos_keys::pkcs11::PinSource::File(PathBuf::from(p))
        } else if let Some(n) = pin.strip_prefix("env:") {
            custos_keys::pkcs11::PinSource::Env(n.to_string())
        } else {
            return Err(NodeError::Config(format!("key_store.pin_source {pin:?}: expected file:/path or env:NAME")));
        };
        Ok(custos_keys::pkcs11::TokenConfig { token: token.clone(), module_path: module.clone(), pin_source })
    }

    /// The SQLite file, when no database URL is set.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }

    /// Where signed checkpoints are appended outside the database: the
    /// configured file, else `checkpoints.jsonl` in the data directory of a
    /// SQLite custos; none for PostgreSQL unless configured (its nodes have
    /// no shared directory).
    pub fn checkpoint_file(&self) -> Option<PathBuf> {
        match (&self.audit.checkpoint_file, &self.database) {
            (Some(path), _) => Some(path.clone()),
            (None, None) => Some(self.data_dir.join(CHECKPOINT_FILE)),
            (None, Some(_)) => None,
        }
    }

    /// The file the configuration would be read from by default.
    pub fn default_file(&self) -> PathBuf {
        self.data_dir.join(CONFIG_FILE)
    }
}
