//! Persistence for custos behind one trait, [`Store`].
//!
//! Every method that changes state takes the audit entries that describe the
//! change and commits both in one transaction: when it returns `Ok`, the change
//! and its audit entries are durable together; when it returns `Err`, neither
//! happened. The SQLite backend (one file, WAL) is the embedded default.
//!
//! Not here: domain rules (custos-ca) or key material (custos-keys). Values are
//! plain strings, integers and bytes; custos-ca gives them their types.

mod access;
mod acme;
mod audit;
mod backend;
mod blocklist;
mod certificates;
mod custody;
mod dialect;
mod error;
mod incidents;
mod issuers;
mod log;
mod maintenance;
mod meta;
mod outbox;
mod revocations;
mod rows;
mod tenants;

use std::collections::HashMap;

use custos_audit::{Hash, NodeId};

use async_trait::async_trait;
use custos_types::DeliveryState;

pub use backend::SqlStore;
pub use certificates::CertificateStatePage;
pub use error::StoreError;
pub use log::{AuditEntryView, AuditPage, entry_fields};
// The records this store persists are the domain's (custos-types); re-exported
// so that callers of the store traits can name them from here too.
pub use custos_types::{
    AcmeAccountRecord, AcmeAuthzRecord, AcmeEabRecord, AcmeOrderRecord, AcmeWrite, ApprovalRecord, AuditEntry,
    AuditFilter, AuditRecord, BlockedKey, CertificateFilter, CertificateRecord, CertificateState, CheckpointRecord,
    ConnectionRecord, CustodyChange, CustodyKeyRecord, CustodySlot, IncidentReplacements, IssuerRecord, KeyRecord,
    KeyUsage, OperatorRecord, ResponderRecord, Revocation, RevocationEvent, RevokedRow, SignatureProbe,
    SignatureRecord, SigningPolicy, StatusFilter, StoreFigures, TenantRecord, TokenRecord,
};
pub use custos_types::{
    IncidentCertificate, IncidentConnection, IncidentRecord, OutboxMessage, Replacement, Transition, WebhookRecord,
};

/// The store traits, to call their methods on an `Arc<dyn Store>`.
pub mod prelude {
    pub use crate::{
        AccessStore, AcmeStore, AuditStore, BlocklistStore, CertificateStore, CustodyStore, IncidentStore, IssuerStore,
        MaintenanceStore, MetaStore, OutboxStore, RevocationStore, Store, TenantStore,
    };
}

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The first state of a new custos: settings, CA keys and issuers.
#[derive(Debug, Default)]
pub struct Genesis {
    /// Settings (`base_url`, seal parameters, ...).
    pub meta: Vec<(String, String)>,
    /// The CA keys.
    pub keys: Vec<KeyRecord>,
    /// The CA certificates, parents first.
    pub issuers: Vec<IssuerRecord>,
    /// What was done, for the audit log.
    pub audit: Vec<AuditRecord>,
}

/// Where custos keeps its state: every aggregate's store, as one object.
///
/// Implemented for every type that implements all of them; custos-ca holds an
/// `Arc<dyn Store>` and brings the aggregate traits into scope with
/// `use custos_store::prelude::*`.
pub trait Store:
    AccessStore
    + AcmeStore
    + CustodyStore
    + MetaStore
    + TenantStore
    + IssuerStore
    + CertificateStore
    + RevocationStore
    + BlocklistStore
    + AuditStore
    + IncidentStore
    + OutboxStore
    + MaintenanceStore
{
}

impl<T> Store for T where
    T: AccessStore
        + AcmeStore
        + CustodyStore
        + MetaStore
        + TenantStore
        + IssuerStore
        + CertificateStore
        + RevocationStore
        + BlocklistStore
        + AuditStore
        + IncidentStore
        + OutboxStore
        + MaintenanceStore
{
}

/// Settings and the first state of a custos.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Writes the first state. Atomic: either everything in `genesis` is
    /// committed, or nothing is and [`StoreError::AlreadyInitialized`] says an
    /// earlier genesis exists.
    async fn initialize(&self, genesis: Genesis) -> Result<()>;

    /// Reads one setting.
    async fn meta(&self, key: &str) -> Result<Option<String>>;

    /// Writes (or replaces) one setting with its audit entries.
    async fn set_meta(&self, key: &str, value: &str, audit: &[AuditRecord]) -> Result<()>;

    /// Writes one setting with its audit entries only if it is not set yet,
    /// and returns the value the database holds: of two nodes racing to make
    /// it, both end up with the first one's.
    async fn set_meta_once(&self, key: &str, value: &str, audit: &[AuditRecord]) -> Result<String>;
}

/// The storage itself: whether it can still be read and written, its
/// integrity, and consistent copies of it.
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// Checks that the storage answers and takes writes: for SQLite, that the
    /// file opened is still the one at its path (not deleted or replaced),
    /// then a read and a write that changes nothing. The error says why not.
    async fn check_storage(&self) -> Result<()>;

    /// The database's own integrity check (SQLite `PRAGMA integrity_check`):
    /// `["ok"]` when sound, else what it found; `None` where the backend has
    /// none that custos runs (PostgreSQL).
    async fn integrity_check(&self) -> Result<Option<Vec<String>>>;

    /// Writes a consistent copy of the whole database to `path`, a new or
    /// empty file, while others keep reading and writing (SQLite `VACUUM
    /// INTO`). PostgreSQL is backed up with its own tools: refused here.
    async fn backup_to(&self, path: &std::path::Path) -> Result<()>;

    /// The counts dashboards show, as of `now` (Unix seconds): certificates
    /// by status and expiry, incidents, webhook messages, the audit log. One
    /// pass over the certificates: seconds at millions, so callers cache it.
    async fn figures(&self, now: i64) -> Result<StoreFigures>;

    /// Connections of the pool: (open, idle).
    fn pool_state(&self) -> (u32, u32);
}

/// Tenants and their connections (with their issuance policy).
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Adds a tenant with its audit entry, atomically; a duplicate name is
    /// [`StoreError::Duplicate`].
    async fn add_tenant(&self, tenant: &TenantRecord, audit: &AuditRecord) -> Result<()>;

    /// Reads one tenant.
    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>>;

    /// Every tenant, by name.
    async fn tenants(&self) -> Result<Vec<TenantRecord>>;

    /// Sets whether a tenant's new connections keep their keys in custody by default.
    async fn set_custody_default(&self, tenant: &str, on: bool, audit: &AuditRecord) -> Result<()>;

    /// Adds a connection with its audit entry, atomically; an unknown tenant
    /// is [`StoreError::NotFound`], a duplicate [`StoreError::Duplicate`].
    async fn add_connection(&self, connection: &ConnectionRecord, audit: &AuditRecord) -> Result<()>;

    /// Replaces connection `old` (as it was read) with `new` (same tenant and
    /// name), with its audit entry, only if the row still equals `old`: a
    /// change made in between is [`StoreError::Conflict`] and nothing is written.
    async fn update_connection(
        &self,
        old: &ConnectionRecord,
        new: &ConnectionRecord,
        audit: &AuditRecord,
    ) -> Result<()>;

    /// Reads one connection.
    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<ConnectionRecord>>;

    /// Connections, of one tenant or of all, by tenant and name.
    async fn connections(&self, tenant: Option<&str>) -> Result<Vec<ConnectionRecord>>;
}

/// Keys, issuers (CAs), OCSP responders, CRL numbers and issuance positions.
#[async_trait]
pub trait IssuerStore: Send + Sync {
    /// Reads one key record.
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>>;

    /// Every key record, oldest first.
    async fn keys(&self) -> Result<Vec<KeyRecord>>;

    /// Reads one issuer.
    async fn issuer(&self, id: &str) -> Result<Option<IssuerRecord>>;

    /// Every issuer, oldest first.
    async fn issuers(&self) -> Result<Vec<IssuerRecord>>;

    /// Records a key with settings that name it and its audit entries, atomically.
    async fn add_key(&self, key: &KeyRecord, settings: &[(String, String)], audit: &[AuditRecord]) -> Result<()>;

    /// Records a new OCSP responder key and certificate with their audit entries, atomically.
    async fn add_responder(&self, key: &KeyRecord, responder: &ResponderRecord, audit: &[AuditRecord]) -> Result<()>;

    /// The newest responder of an issuer.
    async fn responder(&self, issuer: &str) -> Result<Option<ResponderRecord>>;

    /// Advances and returns the issuer's CRL number, with its audit entry, atomically;
    /// numbers never repeat, even across processes.
    async fn next_crl_number(&self, issuer: &str, audit: &AuditRecord) -> Result<i64>;

    /// Marks a key destroyed and wipes its stored reference, with its audit entry.
    async fn destroy_key(&self, id: &str, audit: &[AuditRecord]) -> Result<()>;

    /// Replaces keys' stored references (the same keys sealed anew) and
    /// settings with the audit entries, in one transaction: after a crash,
    /// either every key opens with the old passphrase or every key with the new.
    /// An unknown or destroyed key is [`StoreError::NotFound`] and changes nothing.
    async fn replace_key_references(
        &self,
        references: &[(String, Vec<u8>)],
        settings: &[(String, String)],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// Reserves `count` consecutive issuance positions of an issuer and
    /// returns the first; positions pick CRL partitions. Durable when it
    /// returns; a crash after it leaves a gap, never a reuse.
    async fn reserve_issuance(&self, issuer: &str, count: i64) -> Result<i64>;

    /// How many issuance positions of an issuer have been reserved.
    async fn issued(&self, issuer: &str) -> Result<i64>;
}

/// Issued certificates and the queries over them.
#[async_trait]
pub trait CertificateStore: Send + Sync {
    /// Records issued certificates and their audit entries in one transaction:
    /// all of the batch is durable when this returns `Ok`, none of it on `Err`.
    async fn insert_certificates(&self, certificates: &[CertificateRecord], audit: &[AuditRecord]) -> Result<()>;

    /// Inserts certificates issued for idempotency-keyed requests
    /// (`request_keys[i]` for `certificates[i]`), keys and audit entries in
    /// one transaction; a key already used fails the whole batch as a duplicate.
    async fn insert_requested_certificates(
        &self,
        certificates: &[CertificateRecord],
        request_keys: &[String],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// Every certificate, a page of at most `limit` at a time in the order
    /// that reads fastest (SQLite: as stored), with only the columns the audit
    /// log vouches for. Start with `cursor` `None`; each page returns the
    /// cursor of the next, `None` after the last.
    async fn certificate_states(&self, cursor: Option<&str>, limit: i64) -> Result<CertificateStatePage>;

    /// The given request keys that were issued, with their certificates' serials.
    async fn issued_requests(&self, request_keys: &[String]) -> Result<Vec<(String, String)>>;

    /// Reads one certificate by lowercase hex serial.
    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>>;

    /// Certificates matching `filter`, newest first.
    async fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>>;

    /// Serial, tenant and connection of the certificates `filter` selects
    /// (what a blast radius needs, without reading whole rows).
    async fn certificate_owners(&self, filter: &CertificateFilter) -> Result<Vec<IncidentCertificate>>;

    /// Certificates whose SPKI SHA-256 starts with `prefix` (hex), any status.
    async fn certificates_by_spki(&self, prefix: &str) -> Result<Vec<CertificateRecord>>;

    /// The certificates with these serials that exist.
    async fn certificates_by_serials(&self, serials: &[String]) -> Result<Vec<CertificateRecord>>;

    /// Which of these serials are not revoked (expiry aside).
    async fn valid_serials(&self, serials: &[String]) -> Result<Vec<String>>;
}

/// Who may use the API: tokens (stored as hashes) and operators (by their certificate).
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new token with its audit entry, atomically.
    async fn add_token(&self, token: &TokenRecord, audit: &AuditRecord) -> Result<()>;

    /// One token by id, revoked or not.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Marks a token revoked at `at` with its audit entry, atomically;
    /// [`StoreError::NotFound`] if no such token is unrevoked.
    async fn revoke_token(&self, id: &str, at: i64, audit: &AuditRecord) -> Result<()>;

    /// Stores a new operator (or replaces a revoked one's record) with its audit entry.
    async fn add_operator(&self, operator: &OperatorRecord, audit: &AuditRecord) -> Result<()>;

    /// The operator whose current certificate has this serial (lowercase hex).
    async fn operator_by_serial(&self, serial: &str) -> Result<Option<OperatorRecord>>;

    /// Every operator, by name.
    async fn operators(&self) -> Result<Vec<OperatorRecord>>;

    /// Marks an operator's certificate revoked at `at` with its audit entry;
    /// [`StoreError::NotFound`] if no such operator is unrevoked.
    async fn revoke_operator(&self, name: &str, at: i64, audit: &AuditRecord) -> Result<()>;

    /// Stores a new approval request with its audit entry.
    async fn add_approval(&self, approval: &ApprovalRecord, audit: &AuditRecord) -> Result<()>;

    /// Every approval request for `action` on `object`, newest first.
    async fn approvals_for(&self, action: &str, object: &str) -> Result<Vec<ApprovalRecord>>;

    /// Every approval request, newest first.
    async fn approvals(&self) -> Result<Vec<ApprovalRecord>>;

    /// Records that `by` approved request `id` at `at`, with its audit entry,
    /// only if it is unapproved, unexpired at `at` and was not requested by
    /// `by`; [`StoreError::Conflict`] otherwise, changing nothing.
    async fn approve(&self, id: &str, by: &str, at: i64, audit: &AuditRecord) -> Result<()>;

    /// Records that `by` refused request `id` at `at`, with its audit entry,
    /// only if it is neither approved nor refused and unexpired at `at`; it can
    /// then never be approved. The requester may refuse (withdraw) its own.
    async fn refuse(&self, id: &str, by: &str, at: i64, audit: &AuditRecord) -> Result<()>;
}

/// Connection keys in custody (which key signs for a connection) and what they may sign.
#[async_trait]
pub trait CustodyStore: Send + Sync {
    /// Records `change` and appends `audit` in one transaction: creates the
    /// connection (if given), moves existing custody keys to new slots,
    /// stores new keys with their certificates, and moves the incident
    /// connections it replaces. Refused, changing nothing, if a connection
    /// would end up with more than one active key, or a replaced connection
    /// is not in a state the transition moves from.
    async fn record_custody(&self, change: &CustodyChange, audit: &[AuditRecord]) -> Result<()>;

    /// A connection's custody keys, newest first.
    async fn custody_keys(&self, tenant: &str, connection: &str) -> Result<Vec<CustodyKeyRecord>>;

    /// Every custody key of every connection.
    async fn all_custody_keys(&self) -> Result<Vec<CustodyKeyRecord>>;

    /// Replaces a connection's signing policy, with its audit entry.
    async fn set_signing_policy(&self, policy: &SigningPolicy, audit: &AuditRecord) -> Result<()>;

    /// A connection's signing policy, if it has one.
    async fn signing_policy(&self, tenant: &str, connection: &str) -> Result<Option<SigningPolicy>>;

    /// Appends `audit` and indexes the client assertions it records, in one
    /// transaction: each `(position, signature)` names the entry of `audit`
    /// that records it (its `audit_index` is set from there). Returns the
    /// index of the first entry.
    async fn record_signatures(&self, audit: &[AuditRecord], signatures: &[(usize, SignatureRecord)]) -> Result<u64>;

    /// For each probe, the assertion it asks for (see [`SignatureProbe`]), if
    /// any: by `jti` whatever its certificate, audience and time (the caller
    /// says what does not fit), else by certificate, audience and time.
    async fn find_signatures(&self, probes: &[SignatureProbe]) -> Result<Vec<Option<SignatureRecord>>>;
}

/// Keys that must never be certified again.
#[async_trait]
pub trait BlocklistStore: Send + Sync {
    /// Blocks `keys` with the audit entries, atomically; a key already
    /// blocked keeps its first reason and source.
    async fn block_keys(&self, keys: &[BlockedKey], audit: &[AuditRecord]) -> Result<()>;

    /// Which of these SPKI SHA-256 hashes (lowercase hex) are blocked.
    async fn blocked_keys(&self, spki_sha256: &[String]) -> Result<Vec<BlockedKey>>;

    /// Every blocked key, oldest first.
    async fn blocklist(&self) -> Result<Vec<BlockedKey>>;
}

/// Revocations, the revocation feed, and what CRLs list.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Revokes every certificate in `serials` with `revocation`, appends each
    /// to the revocation feed, and writes `audit`, all in one transaction.
    /// A serial that is unknown ([`StoreError::NotFound`]) or not valid
    /// ([`StoreError::Conflict`]) rolls the whole call back. The keys in
    /// `block` are blocked in the same transaction (a revocation for key
    /// compromise and the block on its key commit together or not at all).
    async fn revoke(
        &self,
        serials: &[String],
        revocation: &Revocation,
        block: &[BlockedKey],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// The revoked certificates in one CRL partition of an issuer.
    async fn revoked(&self, issuer: &str, partition: i64) -> Result<Vec<RevokedRow>>;

    /// Revocations committed after feed position `seq`, oldest first, at most `limit`.
    async fn revocations_since(&self, seq: i64, limit: i64) -> Result<Vec<RevocationEvent>>;

    /// The feed position of the newest revocation (0 if none).
    async fn last_revocation(&self) -> Result<i64>;
}

/// The append-only audit log, its Merkle nodes and checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends entries that go with no other state change (OCSP signing
    /// batches, say); returns the index of the first.
    async fn append_audit(&self, audit: &[AuditRecord]) -> Result<u64>;

    /// Number of entries in the audit log.
    async fn audit_size(&self) -> Result<u64>;

    /// The audit entries, oldest first, from index `from` on, at most `limit`.
    async fn audit_entries(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>>;

    /// [`audit_entries`](Self::audit_entries) left packed, each entry parsed
    /// in place when read: for reading the whole log without a copy per entry.
    async fn audit_page(&self, from: u64, limit: u64) -> Result<AuditPage>;

    /// Entries that pass `filter`, oldest first.
    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    /// The newest `limit` entries about `object` (`cert:SERIAL`,
    /// `tenant:NAME`…), oldest first; the object is indexed.
    async fn audit_for_object(&self, object: &str, limit: u64) -> Result<Vec<AuditEntry>>;

    /// Stored Merkle nodes; every one asked for must exist.
    async fn audit_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>>;

    /// `count` consecutive node hashes of one Merkle level from `start` (a tile).
    async fn audit_level(&self, level: u8, start: u64, count: u64) -> Result<Vec<Hash>>;

    /// Stores a signed checkpoint; one for the same size already stored is kept.
    async fn add_checkpoint(&self, checkpoint: &CheckpointRecord) -> Result<()>;

    /// Appends witnesses' cosignature lines to the note of checkpoint `size`;
    /// [`StoreError::NotFound`] if there is no such checkpoint.
    async fn add_cosignatures(&self, size: u64, lines: &str) -> Result<()>;

    /// Every stored checkpoint, smallest first.
    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>>;

    /// The checkpoint of the largest tree.
    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>>;

    /// Uses of one key, per day, actor and action.
    async fn key_usage(&self, key: &str) -> Result<Vec<KeyUsage>>;
}

/// Incidents: blast radius, execution lock, re-keying, replacements, per-connection state.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Declares an incident with its blast radius; an existing id is [`StoreError::Duplicate`].
    async fn add_incident(
        &self,
        incident: &IncidentRecord,
        certificates: &[IncidentCertificate],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// Adds certificates found later to an incident's blast radius (already known ones are skipped).
    async fn add_incident_certificates(
        &self,
        id: &str,
        certificates: &[IncidentCertificate],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// One incident.
    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>>;

    /// Every incident, oldest first.
    async fn incidents(&self) -> Result<Vec<IncidentRecord>>;

    /// An incident's blast radius.
    async fn incident_certificates(&self, id: &str) -> Result<Vec<IncidentCertificate>>;

    /// Where each affected connection stands.
    async fn incident_connections(&self, id: &str) -> Result<Vec<IncidentConnection>>;

    /// Where one connection stands in an incident, if the incident affects it.
    async fn incident_connection(&self, id: &str, tenant: &str, connection: &str)
    -> Result<Option<IncidentConnection>>;

    /// The incidents whose blast radius holds this certificate.
    async fn certificate_incidents(&self, serial: &str) -> Result<Vec<String>>;

    /// Takes an incident's execution lock for `owner` until `until` if it is
    /// free, expired, or held by `stale` (a holder known to be dead); returns
    /// the current holder when refused.
    async fn lock_incident(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
        stale: Option<&str>,
    ) -> Result<Option<String>>;

    /// Releases the lock if `owner` holds it.
    async fn unlock_incident(&self, id: &str, owner: &str) -> Result<()>;

    /// Writes an incident's state and timestamps with audit entries.
    async fn update_incident(&self, incident: &IncidentRecord, audit: &[AuditRecord]) -> Result<()>;

    /// Replaces compromised CAs in one transaction: new keys and issuers,
    /// the compromised CAs (`compromised`: id and certificate serial) marked
    /// revoked and fed to the revocation feed under their parents, their keys
    /// marked compromised, the incident's record, and the audit entries.
    async fn rekey(
        &self,
        incident: &IncidentRecord,
        keys: &[KeyRecord],
        issuers: &[IssuerRecord],
        compromised: &[(String, String)],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// Records replacement certificates, moves their connections by
    /// `transition` (recording the replacement serial) and queues
    /// notifications, atomically. A connection not in a `from` state (another
    /// run got there first) is [`StoreError::Conflict`] and rolls the whole batch back.
    async fn record_replacements(
        &self,
        incident: &str,
        certificates: &[CertificateRecord],
        replacements: &[Replacement],
        transition: &Transition,
        messages: &[OutboxMessage],
        audit: &[AuditRecord],
    ) -> Result<()>;

    /// Moves the connections whose state is one of `transition.from` to
    /// `transition.to`, with the audit entries, atomically; returns how many moved.
    async fn move_connections(
        &self,
        incident: &str,
        connections: &[(String, String)],
        transition: &Transition,
        audit: &[AuditRecord],
    ) -> Result<u64>;
}

/// Tenant webhooks and the durable notification outbox.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Sets (or replaces) a tenant's webhook.
    async fn set_webhook(&self, webhook: &WebhookRecord, audit: &[AuditRecord]) -> Result<()>;

    /// Every tenant's webhook.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>>;

    /// Records a request signature as used at `now`, forgetting those seen
    /// before `forget_before`; `false` when it was already used (a replay).
    async fn use_signature(&self, mac: &str, now: i64, forget_before: i64) -> Result<bool>;

    /// Notifications due for delivery at `now`, oldest first.
    async fn outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxMessage>>;

    /// Every notification of an incident.
    async fn outbox(&self, incident: &str) -> Result<Vec<OutboxMessage>>;

    /// Records a delivery attempt with its audit entries, atomically: the
    /// message's new state (delivered: its connections move by
    /// `on_delivery`; pending: tried again at `next_attempt_at`; failed: given up).
    #[allow(clippy::too_many_arguments)]
    async fn outbox_attempt(
        &self,
        id: i64,
        state: DeliveryState,
        now: i64,
        next_attempt_at: i64,
        error: Option<&str>,
        on_delivery: &Transition,
        audit: &[AuditRecord],
    ) -> Result<()>;
}

/// ACME: nonces, External Account Binding keys, accounts, orders and
/// authorizations. Every change that a client makes commits with its audit entry.
#[async_trait]
pub trait AcmeStore: Send + Sync {
    /// Commits `writes` in one transaction, each in a savepoint of its own:
    /// the answer holds each one's outcome, in order (a write that failed
    /// left nothing; the others committed). `Err` only if the transaction
    /// itself failed, and then none of them happened. Many concurrent
    /// requests pay for one commit.
    async fn apply_acme(&self, writes: &[AcmeWrite]) -> Result<Vec<std::result::Result<(), StoreError>>>;

    /// Stores an EAB key.
    async fn add_eab(&self, eab: &AcmeEabRecord, audit: &AuditRecord) -> Result<()>;

    /// An EAB key by id.
    async fn eab(&self, kid: &str) -> Result<Option<AcmeEabRecord>>;

    /// Creates an account and uses its EAB key up, atomically: a key binds
    /// one account ([`StoreError::Conflict`] if it was used), a key
    /// thumbprint belongs to one account ([`StoreError::Duplicate`]).
    async fn add_acme_account(&self, account: &AcmeAccountRecord, audit: &AuditRecord) -> Result<()>;

    /// An account by id.
    async fn acme_account(&self, id: &str) -> Result<Option<AcmeAccountRecord>>;

    /// The account holding the key with this thumbprint.
    async fn acme_account_by_key(&self, thumbprint: &str) -> Result<Option<AcmeAccountRecord>>;

    /// How many accounts a tenant has (any status).
    async fn acme_account_count(&self, tenant: &str) -> Result<i64>;

    /// Replaces an account's status, contact and key.
    async fn update_acme_account(&self, account: &AcmeAccountRecord, audit: &AuditRecord) -> Result<()>;

    /// An order by id.
    async fn acme_order(&self, id: &str) -> Result<Option<AcmeOrderRecord>>;

    /// An account's orders, newest first, at most `limit`.
    async fn acme_orders(&self, account: &str, limit: i64) -> Result<Vec<AcmeOrderRecord>>;

    /// An authorization by id.
    async fn acme_authz(&self, id: &str) -> Result<Option<AcmeAuthzRecord>>;

    /// An order's authorizations.
    async fn acme_authzs(&self, order_id: &str) -> Result<Vec<AcmeAuthzRecord>>;
}
