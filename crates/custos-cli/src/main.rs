//! `custos`: certificate and key custody for service connections.
//!
//! Parses the command line, calls custos-ca, and renders the result as a
//! table for people or JSON (`--json`) for scripts. Errors go to stderr with
//! their cause chain and exit status 1.

mod access;
mod audit;
mod bulk;
mod commands;
mod demo;
mod fetch;
mod incident;
mod inventory;
mod output;
mod passphrase;
mod remote;
mod session;
mod storage;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Certificate and key custody for service connections: a private CA.
#[derive(Debug, Parser)]
#[command(name = "custos", version, about)]
pub struct Cli {
    /// The configuration file (TOML); default: CUSTOS_CONFIG, else custos.toml in the data directory if it exists.
    #[arg(long, global = true, env = "CUSTOS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory holding the database and sealed keys [env CUSTOS_DATA; default custos-data].
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The database: a postgres:// URL shared by several nodes [env CUSTOS_DATABASE; default: the SQLite file in the data directory].
    #[arg(long, global = true)]
    pub database: Option<String>,
    /// File holding the key store passphrase (wins over CUSTOS_PASSPHRASE; else the dev passphrase file, else a prompt).
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// How log lines (stderr) are written: text, or json (one object per line) [env CUSTOS_LOG_FORMAT; config log.format].
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Accept plain http:// webhooks (notifications travel unencrypted) [config webhooks.danger_allow_http].
    #[arg(long, global = true)]
    pub danger_allow_http: bool,
    /// Run list, show, revoke and issue --csr against a custos API (https://HOST:PORT) instead of the local database.
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// With --server: a file holding the API token to send.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// With --server: an operator's client certificate (PEM), with --client-key.
    /// (Not `--cert`/`--key`: `audit` commands already take a `--key`.)
    #[arg(long, global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// With --server: the client certificate's key (PEM).
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// With --server: trust only the roots in this PEM file (default: the system's).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, the sealed key store, a root CA and an issuing CA.
    Init(InitArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's connections.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Issue a certificate to a connection (or many, with --from).
    Issue(IssueArgs),
    /// List issued certificates.
    List(ListArgs),
    /// Show one certificate.
    Show(ShowArgs),
    /// Revoke a certificate, or every certificate of a connection.
    Revoke(RevokeArgs),
    /// Sign and print a fresh CRL.
    Crl(CrlArgs),
    /// The certificate authorities.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Serve the HTTP endpoints.
    Serve(ServeArgs),
    /// The keys custos holds.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Declare, execute and track a key or CA compromise.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// Runnable stories for newcomers, in a throwaway data directory.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Read, prove and verify the Merkle audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write an online, consistent copy of the database (sealed keys and a signed checkpoint included).
    Backup {
        /// The new backup file (must not exist; written 0600).
        file: PathBuf,
    },
    /// Restore a backup into the data directory (which must hold no database) and verify its log.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Check the database's integrity and the audit log, on one screen.
    Doctor,
    /// API tokens for scripts and tenant services.
    #[command(subcommand)]
    Token(TokenCommand),
    /// ACME: External Account Binding keys that bind an ACME client to a tenant.
    #[command(subcommand)]
    Acme(AcmeCommand),
    /// Operators, who sign in to the API with a client certificate from the operators' CA.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Approve another admin's request (the two-person rule for incident execute).
    Approve {
        /// The request's id (REQ-...).
        id: String,
    },
    /// Refuse an admin's request (or withdraw your own): it can then never be approved.
    Refuse {
        /// The request's id (REQ-...).
        id: String,
    },
    /// List approval requests: who asked for what, who approved or refused, when each expires.
    Approvals,
    /// A witness of another custos's audit log (C2SP tlog-witness): it
    /// cosigns each checkpoint that extends what it saw, and refuses forks and rollbacks.
    #[command(subcommand)]
    Witness(WitnessCommand),
}

/// `custos operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator: its client certificate (and, without --csr, its key) go to --out.
    Add {
        /// The operator's name (its certificate's common name).
        name: String,
        /// admin, operator or auditor.
        #[arg(long)]
        role: String,
        /// A PKCS#10 request whose key the operator keeps; without it custos makes a P-256 key and writes it once.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Directory for cert.pem, ca.pem and key.pem (made 0700 if missing; files must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// List operators.
    List,
    /// Revoke an operator's certificate: refused from its next request on, on every node.
    Revoke {
        /// The operator's name.
        name: String,
    },
}

/// `custos token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it once (custos keeps only its hash).
    Create {
        /// admin, operator, auditor or tenant.
        #[arg(long)]
        role: String,
        /// With --role tenant: the tenant it is limited to.
        #[arg(long)]
        tenant: Option<String>,
        /// With --role tenant: the one connection it is limited to.
        #[arg(long)]
        connection: Option<String>,
        /// How long it lives: 30d, 12h (at most a year, the default).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List tokens (never a secret).
    List,
    /// Revoke a token: refused from its next request on, on every node.
    Revoke {
        /// The token's id (tok_...).
        id: String,
    },
}

/// `custos acme ...`.
#[derive(Subcommand, Debug)]
pub enum AcmeCommand {
    /// Make a single-use External Account Binding key: the ACME account made
    /// with it is bound to TENANT (and --connection) and its policy. Printed once.
    Eab {
        /// The tenant.
        tenant: String,
        /// The one connection the account may order for.
        #[arg(long)]
        connection: Option<String>,
        /// Make this many keys (one per client); with --json, one JSON object per line.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

/// `custos config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its value and where it came from (file, environment, flag, default); secrets redacted.
    Show,
}

/// `custos init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Public base URL written into every certificate's CRL and OCSP/caIssuers URLs [config base_url; default http://127.0.0.1:8080].
    #[arg(long)]
    pub base_url: Option<String>,
    /// Organization name in the CA subjects [config init.organization; default custos].
    #[arg(long)]
    pub organization: Option<String>,
    /// CA key algorithm: p256, p384, rsa2048, rsa3072, rsa4096, ed25519 [config init.ca_algorithm; default p256].
    #[arg(long)]
    pub ca_algorithm: Option<String>,
    /// Certificates per CRL partition (each partition has its own CRL and CDP) [config init.crl_partition_size; default 250000].
    #[arg(long)]
    pub crl_partition_size: Option<i64>,
    /// Keep CA keys on a PKCS#11 token instead of the sealed soft store [config key_store; env CUSTOS_KEY_STORE], e.g.
    /// 'pkcs11:token=custos-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/custos/pin'.
    /// init writes it to custos.toml in the data directory, where later commands find it.
    #[arg(long)]
    pub key_store: Option<String>,
    /// Accept a passphrase shorter than 12 characters. Tests and labs only.
    #[arg(long)]
    pub danger_weak_passphrase: bool,
}

/// `custos tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant.
    Add {
        /// Tenant name (a-z, 0-9, '-', '_', '.').
        name: String,
    },
    /// List tenants.
    List,
    /// Whether the tenant's new connections keep their keys in custody unless
    /// `connection add` says `--no-custody` (the API: `"custody": false`).
    Custody {
        /// Tenant name.
        tenant: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        default: String,
    },
    /// Set the tenant's webhook for incident notifications; prints its HMAC secret once.
    Webhook {
        /// Tenant name.
        tenant: String,
        /// Where notifications are POSTed (https://...; public addresses unless
        /// webhooks.allow_private_targets; http:// only with --danger-allow-http).
        url: String,
    },
}

/// `custos connection ...`.
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Add a connection to a tenant.
    Add(ConnectionAddArgs),
    /// List connections.
    List {
        /// Only this tenant's.
        tenant: Option<String>,
    },
    /// Change a connection's issuance policy: the names its certificates may
    /// carry, their default lifetime. Certificates already issued are not touched.
    Update {
        /// Tenant name.
        tenant: String,
        /// Connection name.
        name: String,
        /// A SAN its certificates may carry (replaces the list). Repeatable.
        #[arg(long = "allow-san")]
        allow_san: Vec<String>,
        /// Allow no SANs at all (clears the list).
        #[arg(long, conflicts_with = "allow_san")]
        no_sans: bool,
        /// Default lifetime of its certificates, e.g. 90d.
        #[arg(long, conflicts_with = "profile_validity")]
        validity: Option<String>,
        /// Use the profile's default lifetime.
        #[arg(long)]
        profile_validity: bool,
        /// Only if the connection still has this ETag (`connection list --json` shows it).
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Set what a custodied connection's client assertions may name.
    Policy {
        /// Tenant name.
        tenant: String,
        /// Connection name.
        name: String,
        /// An allowed `aud`: the relying party's token endpoint (https://). Repeatable.
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// An allowed `iss`/`sub`: the app's client id. Repeatable.
        #[arg(long = "client-id", required = true)]
        client_ids: Vec<String>,
    },
    /// A custodied connection's keys and their certificates (with --out, the PEMs to upload).
    Keys {
        /// Tenant name.
        tenant: String,
        /// Connection name.
        name: String,
        /// Write each key's certificate to DIR/SLOT-SERIAL.pem.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// `custos connection add`.
#[derive(Debug, Args)]
pub struct ConnectionAddArgs {
    /// Tenant name.
    pub tenant: String,
    /// Connection name.
    pub name: String,
    /// Default profile: client or server.
    #[arg(long, default_value = "client")]
    pub profile: String,
    /// A SAN its certificates may carry; `*.example.com` allows one label. Repeatable.
    #[arg(long = "allow-san")]
    pub allow_san: Vec<String>,
    /// Algorithm of keys custos generates for it.
    #[arg(long, default_value = "p256")]
    pub key_algorithm: String,
    /// Default lifetime of its certificates, e.g. 90d.
    #[arg(long)]
    pub validity: Option<String>,
    /// Keep the connection's key in custody: generated in the key store (the
    /// PKCS#11 token or the sealed soft store), never written anywhere;
    /// services sign through the API. p256, rsa2048 or rsa3072.
    #[arg(long)]
    pub custody: bool,
    /// With --custody (or the tenant's custody default): no standby key (by
    /// default a second key is certified ahead of need, so the tenant can
    /// register both certificates).
    #[arg(long)]
    pub no_standby: bool,
    /// A connection whose key custos generates or the tenant sends by CSR,
    /// even if the tenant keeps keys in custody by default.
    #[arg(long, conflicts_with = "custody")]
    pub no_custody: bool,
}

/// `custos issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Tenant name.
    #[arg(required_unless_present = "from")]
    pub tenant: Option<String>,
    /// Connection name.
    #[arg(required_unless_present = "from")]
    pub connection: Option<String>,
    /// Use this CSR (PEM or DER) instead of generating a key.
    #[arg(long, conflicts_with = "from")]
    pub csr: Option<PathBuf>,
    /// Profile, if not the connection's: client or server.
    #[arg(long)]
    pub profile: Option<String>,
    /// Subject alternative name. Repeatable.
    #[arg(long)]
    pub san: Vec<String>,
    /// Algorithm of the generated key, if not the connection's.
    #[arg(long, conflicts_with = "csr")]
    pub key_algorithm: Option<String>,
    /// Lifetime, e.g. 30d or 12h.
    #[arg(long)]
    pub validity: Option<String>,
    /// Output directory (default ./TENANT-CONNECTION-SERIAL); with --from, a JSONL file (default stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Issue one certificate per line of this JSONL file, in one process.
    #[arg(long, conflicts_with_all = ["tenant", "connection"])]
    pub from: Option<PathBuf>,
}

/// `custos list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this connection.
    #[arg(long)]
    pub connection: Option<String>,
    /// Only certificates of this issuer.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Only those expiring within this time, e.g. 30d.
    #[arg(long)]
    pub expiring: Option<String>,
    /// Only this status: valid, revoked or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<i64>,
}

/// `custos show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Serial in hex, any case, colons allowed.
    pub serial: String,
    /// Print the certificate as PEM.
    #[arg(long)]
    pub pem: bool,
}

/// `custos revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Serial in hex, any case, colons allowed.
    #[arg(required_unless_present = "connection", conflicts_with = "connection")]
    pub serial: Option<String>,
    /// Revoke every valid certificate of TENANT/CONNECTION instead.
    #[arg(long)]
    pub connection: Option<String>,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation or privilege-withdrawn.
    #[arg(long)]
    pub reason: String,
    /// When the key is known or suspected to have been compromised (RFC 3339).
    #[arg(long)]
    pub invalidity_date: Option<String>,
}

/// `custos crl`.
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// Issuer id (default: the active issuing CA).
    #[arg(long)]
    pub issuer: Option<String>,
    /// CRL partition (0 is `{issuer}.crl`).
    #[arg(long, default_value_t = 0)]
    pub partition: i64,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PEM instead of DER.
    #[arg(long)]
    pub pem: bool,
}

/// `custos demo ...`.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// A stolen issuing-CA key, from declaration to OCSP saying `revoked`, in one command.
    Incident {
        /// How many customer tenants (two connections each).
        #[arg(long, default_value_t = 200)]
        tenants: usize,
        /// Keep the demo's data here instead of a temporary directory.
        #[arg(long)]
        keep_dir: Option<PathBuf>,
        /// The custody story instead: connection keys in custody with standby keys, a service
        /// signing in throughout, forged sign-ins found by `audit match`, no key file.
        #[arg(long)]
        custody: bool,
    },
}

/// `custos incident ...`.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Record a compromise and print its blast radius; nothing else changes until execute.
    Declare(DeclareArgs),
    /// Carry an incident out: new CAs, revocation, replacements, notifications (resumable).
    Execute {
        /// Incident id (INC-0001).
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Append the replacements' certificates and private keys here (JSONL, created 0600).
        #[arg(long)]
        keys_out: Option<PathBuf>,
    },
    /// Per tenant and connection: where each stands, and notification delivery.
    Status {
        /// Incident id.
        id: String,
    },
    /// A tenant confirms a connection's new certificate is in place.
    Ack {
        /// Incident id.
        id: String,
        /// TENANT/CONNECTION.
        #[arg(long)]
        connection: String,
    },
    /// Close the incident (refused while any connection still depends on a compromised certificate).
    Close {
        /// Incident id.
        id: String,
    },
    /// Timeline, counts, durations and notifications.
    Report {
        /// Incident id.
        id: String,
        /// Markdown instead of a plain summary.
        #[arg(long)]
        markdown: bool,
    },
    /// Deliver pending notifications now (serve does this every second).
    Notify {
        /// Incident id.
        id: String,
    },
    /// Every incident.
    List,
}

/// `custos incident declare`.
#[derive(Debug, Args)]
pub struct DeclareArgs {
    /// What was compromised: issuer:ID, key:KEYID, cert:SERIAL or tenant:NAME.
    #[arg(long)]
    pub compromised: String,
    /// The revocation reason (key-compromise, ca-compromise, superseded, ...).
    #[arg(long, default_value = "key-compromise")]
    pub reason: String,
    /// Since when the compromise is assumed (RFC 3339); the revocations' invalidity date.
    #[arg(long)]
    pub since: Option<String>,
    /// What is known, for the record.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `custos keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key: id, backend, algorithm, label, public key hash, status, uses.
    List,
    /// Block a key so that no CSR with it is ever certified again (keys revoked for key compromise are blocked already).
    Block {
        /// The key's SPKI SHA-256, 64 hex digits (`custos show SERIAL` prints it).
        spki_sha256: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Every blocked key.
    Blocked,
    /// Seal every key of the soft store under a new passphrase, in one transaction.
    ChangePassphrase {
        /// File holding the new passphrase (else CUSTOS_NEW_PASSPHRASE, else a prompt, twice).
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
}

/// `custos audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest entries, oldest first; with --follow, keep printing new ones.
    Tail(TailArgs),
    /// Recompute the log and check every checkpoint (locally, or from a remote custos's tiles with --url).
    Verify(VerifyArgs),
    /// Inclusion proof of one entry against the latest checkpoint.
    Proof {
        /// Entry index (from 0).
        index: u64,
    },
    /// Print the latest signed checkpoint (to hand to a witness, or to check against later).
    Checkpoint {
        /// Sign a fresh checkpoint first if the log grew (unseals the key store).
        #[arg(long)]
        sign: bool,
    },
    /// Every use of one key, counted per day, actor and action.
    Usage {
        /// Key id (see `custos audit tail` or `ca list`).
        key: String,
    },
    /// Print the log's verifier key (origin+hash+key), to pin for `audit verify --key`.
    Key,
    /// Which sign-ins at a relying party custos did not sign: uses of a stolen
    /// key, per tenant. Exits 1 when any sign-in is unmatched.
    Match {
        /// The relying party's sign-in export: JSON lines or CSV with the
        /// fields time, thumbprint, audience, client_ip (and optionally jti, tenant).
        signins: PathBuf,
        /// Leave out the inclusion proofs of matched sign-ins.
        #[arg(long)]
        no_proofs: bool,
        /// Require the newest checkpoint, against which the proofs are made, to be
        /// cosigned by this witness (its verifier key); repeatable.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
    },
}

/// `custos audit tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep printing new entries as they arrive (until interrupted).
    #[arg(long)]
    pub follow: bool,
    /// Only this action: exact (`crl.sign`), a prefix (`certificate`), a suffix (`revoke`), or `sign` for every signature.
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries that used or changed this key.
    #[arg(long)]
    pub key: Option<String>,
    /// How many of the newest entries to print first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub lines: usize,
}

/// `custos witness ...`. The witness's key is sealed under a passphrase from
/// --passphrase-file or CUSTOS_WITNESS_PASSPHRASE.
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Create a witness in DIR for the logs given; prints its verifier key.
    Init {
        /// The witness's directory (holds witness.json, 0600).
        #[arg(long)]
        dir: PathBuf,
        /// Its name, a schema-less URL (e.g. witness.example.com/w1).
        #[arg(long)]
        name: String,
        /// A log it witnesses: the log's verifier key (`custos audit key`). Repeatable.
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
        /// Read the passphrase that seals the witness key from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Serve `POST /add-checkpoint` until interrupted.
    Serve {
        /// The witness's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on (plain HTTP; put TLS in front where it leaves the host).
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: String,
        /// Read the passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the witness's verifier key (for `audit verify --witness` and `audit.witnesses`).
    Key {
        /// The witness's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Read the passphrase from this file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

/// `custos audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A checkpoint saved earlier (`audit checkpoint > cp.txt`): the log must extend it.
    #[arg(long)]
    pub since_checkpoint: Option<PathBuf>,
    /// The log's verifier key to trust (origin+hash+key); required with --url.
    #[arg(long)]
    pub key: Option<String>,
    /// Verify a remote custos from its HTTP tiles only (http://host:port), no database needed.
    #[arg(long)]
    pub url: Option<String>,
    /// Require a cosignature by this witness (its verifier key, type 0x04) on a
    /// checkpoint the log extends. Repeatable: every one is required.
    #[arg(long = "witness", conflicts_with = "url")]
    pub witnesses: Vec<String>,
    /// Also replay the log into the state it implies and compare it with the database
    /// (certificates, revocations, tenants, connections, keys, issuers, blocklist, incidents).
    #[arg(long, conflicts_with = "url")]
    pub state: bool,
}

/// `custos ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// List the issuers.
    List,
    /// Print an issuer's certificate (PEM by default), with --chain its parents up to the root.
    Export {
        /// Issuer id (see `custos ca list`).
        id: String,
        /// PEM (the default).
        #[arg(long, conflicts_with = "der")]
        pem: bool,
        /// DER (one certificate only).
        #[arg(long, conflicts_with = "chain")]
        der: bool,
        /// Append the parents, up to the root.
        #[arg(long)]
        chain: bool,
        /// Write to this file (created new) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `custos serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [config serve.listen; default 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Also serve HTTPS here: TLS 1.3, and TLS 1.2 with ECDHE only (needs --tls-cert and --tls-key) [config serve.tls_listen].
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<String>,
    /// PEM certificate chain for the TLS listener, leaf first [config serve.tls_cert].
    #[arg(long, requires = "tls_listen")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8) for the TLS listener [config serve.tls_key].
    #[arg(long, requires = "tls_listen")]
    pub tls_key: Option<PathBuf>,
    /// Development mode: initialize the data directory on first start, keeping a
    /// generated passphrase in DATA/dev-passphrase. Never for production.
    #[arg(long)]
    pub dev: bool,
}

/// What can go wrong in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// custos refused or failed.
    #[error(transparent)]
    Ca(#[from] custos_ca::CaError),
    /// The configuration, store or key store could not be put together.
    #[error(transparent)]
    Node(#[from] custos_node::NodeError),
    /// A file could not be read or written.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No usable passphrase.
    #[error("passphrase: {0}")]
    Passphrase(String),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// Output could not be produced.
    #[error("output: {0}")]
    Output(String),
    /// The server failed.
    #[error("server: {0}")]
    Serve(String),
    /// The audit log does not verify.
    #[error(transparent)]
    Verify(#[from] custos_audit::VerifyError),
    /// A remote custos could not be read.
    #[error("remote: {0}")]
    Remote(String),
    /// `audit verify --witness`: the required cosignatures are missing.
    #[error("not witnessed: {0}")]
    Unwitnessed(String),
    /// `audit match` found sign-ins custos did not sign.
    #[error("{0}")]
    Unmatched(String),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The log filter is part of the configuration; if that cannot be read, the
    // command reports why below, with logging at its default.
    let log = session::config(&cli).map(|c| c.config.log).unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).unwrap_or_else(|_| "info".into());
    let lines = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        // One object per line, fields flattened: what log shippers parse.
        custos_node::config::LogFormat::Json => lines.json().flatten_event(true).with_current_span(false).init(),
        // Colours only where a person reads them, never into a redirected file.
        custos_node::config::LogFormat::Text => {
            lines.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
    let database = session::config(&cli).ok().map(|c| custos_node::location(&c.config));
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            if custos_node::is_damaged(&e)
                && let Some(database) = database
            {
                eprintln!("  database: {database}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command: a global flag that a
    /// subcommand also defines (as `--key` once was) fails here, not at run time.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
