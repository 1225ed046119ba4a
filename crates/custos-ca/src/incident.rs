//! Incidents: from "this key was stolen" to every affected connection
//! re-established, as one durable, resumable workflow.
//!
//! `declare` computes the blast radius and records it (nothing else changes).
//! `execute` is a state machine in the store, each step idempotent and
//! committed with its audit entries: replace compromised CAs (new key, new CA,
//! old ones marked compromised and revoked by their parent), revoke every
//! affected certificate, sign the compromised CAs' final CRLs and destroy
//! their keys, then issue each connection's replacement, recording it, the
//! connection's move to `replacement-issued` and the tenant's notification in
//! one transaction. Killed at any point, it resumes from what committed; two
//! runs at once are kept apart by a lock in the store.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use custos_keys::KeyAlgorithm;
use custos_pki::{Reason, Serial};
use custos_store::{
    AuditRecord, CertificateFilter, CertificateRecord, IncidentCertificate, IncidentConnection, IncidentRecord,
    IssuerRecord, KeyRecord, OutboxMessage, Replacement, Revocation, StatusFilter, Transition, WebhookRecord,
};
use custos_types::{
    CertificateStatus, ConnectionState, DeliveryState, IncidentState, IssuerRole, IssuerStatus, KeyStatus,
};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::{Operation, authorize};
use crate::issuance::{IssueSink, Issued};
use crate::{Ca, CaError, IssueRequest, KeySource, Principal, Result, audit_record, visible};

/// Connection states, in the order a connection passes them.
/// A tenant acknowledges a replacement once it is issued (notified or not).
const ACKNOWLEDGE: Transition = Transition {
    from: &[ConnectionState::ReplacementIssued, ConnectionState::Notified],
    to: ConnectionState::Acknowledged,
};
/// An acknowledged connection's old certificate is then retired.
const RETIRE: Transition =
    Transition { from: &[ConnectionState::Acknowledged], to: ConnectionState::OldCertificateRetired };
/// A pending connection gets its replacement.
pub(crate) const REPLACE: Transition =
    Transition { from: &[ConnectionState::Pending], to: ConnectionState::ReplacementIssued };
/// A delivered notification moves its connections on.
pub(crate) const NOTIFIED: Transition =
    Transition { from: &[ConnectionState::ReplacementIssued], to: ConnectionState::Notified };
/// How long an execution lock lasts without a heartbeat.
const LOCK_SECONDS: i64 = 60;
/// Certificates revoked per transaction.
const REVOKE_BATCH: usize = 5_000;
/// Connections replaced per issuance call (each call commits in batches of its own).
const REPLACE_BATCH: usize = 4_096;

/// What was compromised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A CA (issuing or root).
    Issuer(String),
    /// A key: a CA key by its key id, or a subscriber key by its SPKI SHA-256 (or a prefix of it).
    Key(String),
    /// One certificate, and every certificate sharing its key.
    Cert(Serial),
    /// Every certificate of a tenant.
    Tenant(String),
}

impl std::str::FromStr for Scope {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Scope> {
        let bad = || {
            CaError::Policy(format!("--compromised {s:?}: expected issuer:ID, key:KEYID, cert:SERIAL or tenant:NAME"))
        };
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "issuer" => Scope::Issuer(value.into()),
            "key" => Scope::Key(value.to_ascii_lowercase()),
            "cert" => Scope::Cert(value.parse()?),
            "tenant" => Scope::Tenant(value.into()),
            _ => return Err(bad()),
        })
    }
}

impl Scope {
    fn parts(&self) -> (&'static str, String) {
        match self {
            Scope::Issuer(i) => ("issuer", i.clone()),
            Scope::Key(k) => ("key", k.clone()),
            Scope::Cert(s) => ("cert", s.to_hex()),
            Scope::Tenant(t) => ("tenant", t.clone()),
        }
    }

    fn of(record: &IncidentRecord) -> Result<Scope> {
        format!("{}:{}", record.scope_kind, record.scope_value).parse()
    }
}

/// What `incident declare` asks for.
#[derive(Clone, Debug)]
pub struct Declaration {
    /// What was compromised.
    pub scope: Scope,
    /// The revocation reason.
    pub reason: Reason,
    /// Since when the compromise is assumed (becomes the invalidity date).
    pub since: Option<OffsetDateTime>,
    /// Free text.
    pub note: String,
}

/// The blast radius: what is affected, and which CAs must be replaced.
struct Radius {
    certificates: Vec<IncidentCertificate>,
    /// Compromised CAs, parents before children.
    issuers: Vec<IssuerRecord>,
}

/// One tenant's affected connections.
#[derive(Clone, Debug, Serialize)]
pub struct TenantImpact {
    /// Tenant.
    pub tenant: String,
    /// Affected certificates of the tenant.
    pub certificates: usize,
    /// Its affected connections and their certificates.
    pub connections: Vec<ConnectionImpact>,
}

/// One affected connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionImpact {
    /// Connection.
    pub connection: String,
    /// The affected certificates' serials.
    pub serials: Vec<String>,
}

/// An incident and its blast radius, as `declare` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentView {
    /// `INC-0001`, ...
    pub id: String,
    /// `issuer:ID`, `key:KEYID`, `cert:SERIAL` or `tenant:NAME`.
    pub compromised: String,
    /// The revocation reason.
    pub reason: Reason,
    /// RFC 3339, if given.
    pub since: Option<String>,
    /// The declaration's note.
    pub note: String,
    /// `declared`, `executing`, `executed` or `closed`.
    pub state: IncidentState,
    /// CAs that execute replaces.
    pub compromised_issuers: Vec<String>,
    /// Whether a root is among them (trust must be re-distributed).
    pub root_compromised: bool,
    /// Affected certificates.
    pub affected_certificates: usize,
    /// Affected connections.
    pub affected_connections: usize,
    /// Affected tenants.
    pub affected_tenants: usize,
    /// Per tenant, per connection.
    pub tenants: Vec<TenantImpact>,
}

/// What one `execute` run did.
#[derive(Clone, Debug, Serialize)]
pub struct ExecuteSummary {
    /// The incident.
    pub id: String,
    /// CAs created in place of compromised ones.
    pub new_issuers: Vec<String>,
    /// Certificates revoked by this run.
    pub revoked: usize,
    /// Replacements issued by this run.
    pub replaced: usize,
    /// Where the replacements' private keys were written.
    pub keys_file: Option<PathBuf>,
    /// Seconds from start to the last affected certificate revoked (this run).
    pub seconds_to_revoked: f64,
    /// Seconds from start to the last replacement (this run).
    pub seconds_to_replaced: f64,
}

/// Where the steps of an execution stand, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Certificates revoked so far, of the total.
    Revoked(usize, usize),
    /// Replacements issued so far, of the total.
    Replaced(usize, usize),
}

/// Counts and ages per connection state, and notification delivery.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentStatus {
    /// The incident.
    pub incident: IncidentRecord,
    /// Per state: how many connections, and the longest time one has waited in it (seconds).
    pub states: Vec<StateCount>,
    /// Every affected connection.
    pub connections: Vec<IncidentConnection>,
    /// Notifications: delivered, pending (with attempts and last error), and tenants without a webhook.
    pub notifications: NotificationSummary,
}

/// Connections in one state.
#[derive(Clone, Debug, Serialize)]
pub struct StateCount {
    /// The state.
    pub state: ConnectionState,
    /// How many connections are in it.
    pub connections: usize,
    /// Seconds the longest-waiting one has been in it.
    pub oldest_seconds: i64,
}

/// Notification delivery for an incident.
#[derive(Clone, Debug, Serialize)]
pub struct NotificationSummary {
    /// Messages delivered.
    pub delivered: usize,
    /// Messages still being retried.
    pub pending: usize,
    /// Affected tenants with no webhook configured.
    pub tenants_without_webhook: Vec<String>,
    /// Every message.
    pub messages: Vec<OutboxMessage>,
}

/// The incident report: timeline, counts, durations, notifications.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentReport {
    /// The incident.
    pub incident: IncidentRecord,
    /// What happened when, oldest first.
    pub timeline: Vec<TimelineEvent>,
    /// Affected certificates, connections, tenants.
    pub counts: BTreeMap<String, usize>,
    /// Named durations in seconds (declared → revoked, → replaced, → all acknowledged, ...).
    pub durations: BTreeMap<String, i64>,
    /// Plain statements a reader must not miss (root compromise, pending work).
    pub warnings: Vec<String>,
    /// Notifications sent.
    pub notifications: Vec<OutboxMessage>,
}

/// One line of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineEvent {
    /// RFC 3339.
    pub time: String,
    /// What happened.
    pub event: String,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// This process as a lock owner: host and pid.
fn lock_owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A holder on this host whose process is gone.
fn is_dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else { return false };
    host == hostname() && pid.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// The next CA id of a role: `issuing-3` after `issuing-2`.
fn next_issuer_id(issuers: &[IssuerRecord], prefix: &str) -> (String, u32) {
    let n = issuers
        .iter()
        .filter_map(|i| i.id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')).and_then(|n| n.parse::<u32>().ok()))
        .max()
        .unwrap_or(0)
        + 1;
    (format!("{prefix}-{n}"), n)
}

/// `custos Issuing CA 1` → `custos Issuing CA 2`.
fn renumber(name: &str, n: u32) -> String {
    format!("{} {n}", name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end())
}

/// The organization in a CA name made by `init` (`{org} Issuing CA 1`).
fn organization_of(name: &str) -> Option<String> {
    name.rsplit_once(" Issuing CA").or_else(|| name.rsplit_once(" Root CA")).map(|(o, _)| o.to_string())
}

/// The CAs a scope compromises: the named CA, or those signing with the
/// named key, and every CA below them (replaced under the new one). Parents
/// come before children.
fn compromised_cas(scope: &Scope, issuers: &[IssuerRecord]) -> Vec<IssuerRecord> {
    let mut compromised: Vec<IssuerRecord> = match scope {
        Scope::Issuer(id) => issuers.iter().filter(|i| &i.id == id).cloned().collect(),
        Scope::Key(key) => issuers.iter().filter(|i| &i.key_id == key).cloned().collect(),
        Scope::Cert(_) | Scope::Tenant(_) => Vec::new(),
    };
    let mut i = 0;
    while i < compromised.len() {
        let parent = compromised[i].id.clone();
        for child in issuers.iter().filter(|c| c.parent.as_deref() == Some(&parent)) {
            if !compromised.iter().any(|c| c.id == child.id) {
                compromised.push(child.clone());
            }
        }
        i += 1;
    }
    compromised
}

impl Ca {
    /// Computes what a scope affects, from the store as it is now.
    async fn radius(&self, principal: &Principal, scope: &Scope) -> Result<Radius> {
        let issuers = self.store.issuers().await?;
        let valid = |issuer: Option<String>, tenant: Option<String>| CertificateFilter {
            issuer,
            tenant,
            status: Some(StatusFilter::Valid),
            now: now(),
            ..Default::default()
        };
        let compromised = compromised_cas(scope, &issuers);
        let mut certificates: Vec<CertificateRecord> = Vec::new();
        let mut owners: Vec<IncidentCertificate> = Vec::new();
        match scope {
            Scope::Issuer(id) => {
                if compromised.is_empty() {
                    return Err(CaError::UnknownIssuer(id.clone()));
                }
            }
            Scope::Key(key) if compromised.is_empty() => {
                if key.len() >= 16 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
                    certificates = self.store.certificates_by_spki(key).await?;
                    certificates.retain(|c| c.status == CertificateStatus::Valid && c.not_after >= now());
                    if certificates.is_empty() && self.store.key(key).await?.is_none() {
                        return Err(CaError::Policy(format!(
                            "no CA key and no valid certificate with key {key} (a CA key id, or a subscriber key's SPKI SHA-256)"
                        )));
                    }
                } else {
                    return Err(CaError::Policy(format!("no key {key:?} (see `custos keys list`)")));
                }
            }
            Scope::Key(_) => {}
            Scope::Cert(serial) => {
                let record = self.certificate(principal, serial).await?;
                certificates = self.store.certificates_by_spki(&record.spki_sha256).await?;
                certificates.retain(|c| c.status == CertificateStatus::Valid && c.not_after >= now());
            }
            Scope::Tenant(t) => {
                if self.store.tenant(t).await?.is_none() {
                    return Err(CaError::UnknownTenant(t.clone()));
                }
                owners = self.store.certificate_owners(&valid(None, Some(t.clone()))).await?;
            }
        }
        for ca in &compromised {
            owners.extend(self.store.certificate_owners(&valid(Some(ca.id.clone()), None)).await?);
        }
        owners.extend(certificates.into_iter().map(|c| IncidentCertificate {
            serial: c.serial,
            tenant: c.tenant,
            connection: c.connection,
        }));
        let mut seen = std::collections::HashSet::new();
        let certificates = owners.into_iter().filter(|c| seen.insert(c.serial.clone())).collect();
        Ok(Radius { certificates, issuers: compromised })
    }

    /// Declares an incident: computes and records its blast radius. Nothing
    /// else changes until `execute`.
    pub async fn declare_incident(&self, principal: &Principal, d: &Declaration) -> Result<IncidentView> {
        authorize(principal, Operation::DeclareIncident)?;
        if let Some(since) = d.since
            && since > OffsetDateTime::now_utc()
        {
            return Err(CaError::Policy(format!("--since {since} is in the future")));
        }
        let radius = self.radius(principal, &d.scope).await?;
        let (kind, value) = d.scope.parts();
        let existing = self.store.incidents().await?.len();
        for attempt in 1..=5 {
            let record = IncidentRecord {
                id: format!("INC-{:04}", existing + attempt),
                scope_kind: kind.into(),
                scope_value: value.clone(),
                reason: d.reason,
                since: d.since.map(|t| t.unix_timestamp()),
                note: d.note.clone(),
                state: IncidentState::Declared,
                new_issuers: vec![],
                declared_at: now(),
                declared_by: principal.actor(),
                executed_at: None,
                revoked_at: None,
                replaced_at: None,
                closed_at: None,
            };
            let audit = audit_record(
                principal,
                "incident.declare",
                format!("incident:{}", record.id),
                json!({"incident": record.id, "compromised": format!("{kind}:{value}"), "reason": record.reason,
                       "since": record.since, "note": d.note, "affected_certificates": radius.certificates.len(),
                       "compromised_issuers": radius.issuers.iter().map(|i| &i.id).collect::<Vec<_>>()}),
            );
            match self.store.add_incident(&record, &radius.certificates, &[audit]).await {
                Ok(()) => return self.incident_view(principal, &record.id).await,
                Err(custos_store::StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CaError::Inconsistent("could not allocate an incident id".into()))
    }

    /// An incident.
    pub async fn incident(&self, principal: &Principal, id: &str) -> Result<IncidentRecord> {
        authorize(principal, Operation::ReadIncidents(None))?;
        self.incident_record(id).await
    }

    /// One incident, for operations that were authorized already.
    async fn incident_record(&self, id: &str) -> Result<IncidentRecord> {
        self.store
            .incident(id)
            .await?
            .ok_or_else(|| CaError::Policy(format!("no incident {id:?} (see `custos incident list`)")))
    }

    /// Every incident.
    pub async fn incidents(&self, principal: &Principal) -> Result<Vec<IncidentRecord>> {
        authorize(principal, Operation::ReadIncidents(None))?;
        Ok(self.store.incidents().await?)
    }

    /// An incident with its blast radius grouped by tenant and connection.
    pub async fn incident_view(&self, principal: &Principal, id: &str) -> Result<IncidentView> {
        let record = self.incident(principal, id).await?;
        let certificates = self.store.incident_certificates(id).await?;
        let mut grouped: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for c in &certificates {
            grouped
                .entry(c.tenant.clone())
                .or_default()
                .entry(c.connection.clone())
                .or_default()
                .push(c.serial.clone());
        }
        let scope = Scope::of(&record)?;
        let issuers = self.store.issuers().await?;
        let compromised: Vec<String> = compromised_cas(&scope, &issuers).into_iter().map(|i| i.id).collect();
        let root_compromised =
            compromised.iter().any(|id| issuers.iter().any(|i| &i.id == id && i.role == IssuerRole::Root));
        let tenants: Vec<TenantImpact> = grouped
            .into_iter()
            .map(|(tenant, conns)| TenantImpact {
                tenant,
                certificates: conns.values().map(Vec::len).sum(),
                connections: conns
                    .into_iter()
                    .map(|(connection, serials)| ConnectionImpact { connection, serials })
                    .collect(),
            })
            .collect();
        Ok(IncidentView {
            id: record.id.clone(),
            compromised: format!("{}:{}", record.scope_kind, record.scope_value),
            reason: record.reason,
            since: record.since.map(crate::rfc3339),
            note: record.note.clone(),
            state: record.state,
            compromised_issuers: compromised,
            root_compromised,
            affected_certificates: certificates.len(),
            affected_connections: tenants.iter().map(|t| t.connections.len()).sum(),
            affected_tenants: tenants.len(),
            tenants,
        })
    }

    /// Carries an incident out, resuming wherever an earlier run stopped.
    /// Replacement private keys are appended to `keys_file` (created 0600)
    /// before each batch commits, so no committed replacement lacks its key.
    pub async fn execute_incident(
        &self,
        principal: &Principal,
        id: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ExecuteSummary> {
        authorize(principal, Operation::ExecuteIncident)?;
        let started = std::time::Instant::now();
        let mut record = self.incident_record(id).await?;
        if record.state == IncidentState::Closed {
            return Err(CaError::Policy(format!("incident {id} is closed")));
        }
        let owner = lock_owner();
        if let Some(holder) = self.lock_incident(id, &owner, None).await? {
            let taken = match is_dead_here(&holder) {
                true => self.lock_incident(id, &owner, Some(&holder)).await?,
                false => Some(holder.clone()),
            };
            if taken.is_some() {
                return Err(CaError::Policy(format!(
                    "incident {id} is being executed by {holder}; wait for it to finish (its lock lapses after {LOCK_SECONDS}s without progress)"
                )));
            }
        }
        let result = self.execute_locked(principal, &mut record, &owner, keys_file, progress, started).await;
        let _ = self.store.unlock_incident(id, &owner).await;
        result
    }

    /// Takes (or renews) the execution lock for `owner`, taking it over from
    /// `stale`; returns the holder when refused.
    async fn lock_incident(&self, id: &str, owner: &str, stale: Option<&str>) -> Result<Option<String>> {
        Ok(self.store.lock_incident(id, owner, now(), now() + LOCK_SECONDS, stale).await?)
    }

    /// Renews the lock between steps; fails if another run took it.
    async fn heartbeat(&self, id: &str, owner: &str) -> Result<()> {
        match self.lock_incident(id, owner, None).await? {
            None => Ok(()),
            Some(holder) => Err(CaError::Policy(format!("lost the execution lock of {id} to {holder}"))),
        }
    }

    async fn execute_locked(
        &self,
        principal: &Principal,
        record: &mut IncidentRecord,
        owner: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
        started: std::time::Instant,
    ) -> Result<ExecuteSummary> {
        let id = record.id.clone();
        if record.executed_at.is_none() || record.state == IncidentState::Declared {
            record.state = IncidentState::Executing;
            record.executed_at.get_or_insert(now());
            let audit = audit_record(principal, "incident.execute", format!("incident:{id}"), json!({"incident": id}));
            self.store.update_incident(record, &[audit]).await?;
        }
        // Certificates issued under a compromised CA since the declaration are affected too.
        let scope = Scope::of(record)?;
        let radius = self.radius(principal, &scope).await?;
        let known: std::collections::HashSet<String> =
            self.store.incident_certificates(&id).await?.into_iter().map(|c| c.serial).collect();
        let late: Vec<IncidentCertificate> =
            radius.certificates.iter().filter(|c| !known.contains(&c.serial)).cloned().collect();
        if !late.is_empty() {
            let audit = audit_record(
                principal,
                "incident.extend",
                format!("incident:{id}"),
                json!({"incident": id, "added_certificates": late.len()}),
            );
            self.store.add_incident_certificates(&id, &late, &[audit]).await?;
        }

        // 1. New CAs in place of compromised ones (once).
        if record.new_issuers.is_empty() && !radius.issuers.is_empty() {
            self.replace_cas(principal, record, &radius.issuers).await?;
        }
        self.heartbeat(&id, owner).await?;

        // 2. Revoke (a key compromise at once; other reasons when each connection is retired).
        let reason: Reason = record.reason;
        let mut revoked = 0;
        if reason == Reason::KeyCompromise {
            revoked = self.revoke_affected(principal, record, None, progress).await?;
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now());
                self.store.update_incident(record, &[]).await?;
            }
        }
        let seconds_to_revoked = started.elapsed().as_secs_f64();

        // 3. Final CRLs of compromised CAs, then destroy their keys.
        self.retire_compromised_keys(principal, record).await?;
        self.heartbeat(&id, owner).await?;

        // 4. Replacements, with their notifications, per batch.
        let (replaced, keys_file) = self.replace_connections(principal, record, owner, keys_file, progress).await?;
        let seconds_to_replaced = started.elapsed().as_secs_f64();
        let pending =
            self.store.incident_connections(&id).await?.iter().filter(|c| c.state == ConnectionState::Pending).count();
        if pending == 0 && record.state == IncidentState::Executing {
            record.state = IncidentState::Executed;
            record.replaced_at.get_or_insert(now());
            let audit = audit_record(
                principal,
                "incident.executed",
                format!("incident:{id}"),
                json!({"incident": id, "new_issuers": record.new_issuers}),
            );
            self.store.update_incident(record, &[audit]).await?;
        }
        Ok(ExecuteSummary {
            id,
            new_issuers: record.new_issuers.clone(),
            revoked,
            replaced,
            keys_file,
            seconds_to_revoked,
            seconds_to_replaced,
        })
    }

    /// Creates a new key and CA for each compromised CA (a new root first if
    /// the root is among them), marks the old ones compromised, all in one transaction.
    async fn replace_cas(
        &self,
        principal: &Principal,
        record: &mut IncidentRecord,
        compromised: &[IssuerRecord],
    ) -> Result<()> {
        let mut issuers = self.store.issuers().await?;
        let keys = self.key_store()?.clone();
        let now_t = OffsetDateTime::now_utc();
        let mut new_keys: Vec<KeyRecord> = Vec::new();
        let mut new_issuers: Vec<IssuerRecord> = Vec::new();
        let mut audit: Vec<AuditRecord> = Vec::new();
        // Old CA id -> the new CA that replaces it, parents first.
        let mut replaced: HashMap<String, crate::ceremony::Parent> = HashMap::new();
        for old in compromised {
            let old_key = self
                .store
                .key(&old.key_id)
                .await?
                .ok_or_else(|| CaError::Inconsistent(format!("CA {} names missing key {}", old.id, old.key_id)))?;
            let algorithm: KeyAlgorithm = old_key.algorithm.parse()?;
            let prefix = old.role.as_str();
            let (new_id, n) = next_issuer_id(&issuers, prefix);
            // Under the parent's replacement if the parent was replaced too.
            let parent = match &old.parent {
                None => None,
                Some(p) => Some(match replaced.get(p) {
                    Some(new_parent) => new_parent.clone(),
                    None => {
                        let parent = issuers
                            .iter()
                            .find(|i| &i.id == p)
                            .ok_or_else(|| CaError::Inconsistent(format!("CA {} names missing parent {p}", old.id)))?;
                        crate::ceremony::Parent {
                            id: parent.id.clone(),
                            key_id: parent.key_id.clone(),
                            issuer: std::sync::Arc::new(self.ca_issuer(parent).await?),
                        }
                    }
                }),
            };
            let made = crate::ceremony::make_ca(
                keys.as_ref(),
                crate::ceremony::CaSpec {
                    id: new_id.clone(),
                    name: renumber(&old.name, n),
                    organization: organization_of(&old.name),
                    algorithm,
                    parent: parent.as_ref(),
                    base_url: &self.base_url,
                },
                now_t,
            )?;
            for (action, object, mut details) in made.events {
                details["incident"] = json!(record.id);
                if action == "issuer.create" {
                    details["replaces"] = json!(old.id);
                }
                audit.push(audit_record(principal, action, object, details));
            }
            audit.push(audit_record(
                principal,
                "issuer.compromise",
                format!("issuer:{}", old.id),
                json!({"issuer": old.id, "key": old.key_id, "replaced_by": new_id, "incident": record.id}),
            ));
            new_keys.push(made.key);
            replaced.insert(old.id.clone(), made.parent);
            issuers.push(made.issuer.clone());
            new_issuers.push(made.issuer);
        }
        record.new_issuers = new_issuers.iter().map(|i| i.id.clone()).collect();
        let mut revoked = Vec::with_capacity(compromised.len());
        for c in compromised {
            revoked.push((c.id.clone(), custos_pki::inspect::certificate_facts(&c.cert_der)?.serial.to_hex()));
        }
        self.store.rekey(record, &new_keys, &new_issuers, &revoked, &audit).await?;
        self.forget_active_issuer();
        Ok(())
    }

    /// Revokes the incident's still-valid certificates (of `only` connections
    /// if given) with its reason and invalidity date; returns how many.
    async fn revoke_affected(
        &self,
        principal: &Principal,
        record: &IncidentRecord,
        only: Option<&[(String, String)]>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<usize> {
        let affected = self.store.incident_certificates(&record.id).await?;
        let mut todo = Vec::new();
        for c in affected {
            if let Some(only) = only
                && !only.iter().any(|(t, n)| t == &c.tenant && n == &c.connection)
            {
                continue;
            }
            todo.push(c);
        }
        let total = todo.len();
        // Only those still valid: a resumed run does not revoke twice.
        let mut valid = Vec::with_capacity(total);
        for chunk in todo.chunks(REVOKE_BATCH) {
            let serials: Vec<String> = chunk.iter().map(|c| c.serial.clone()).collect();
            valid.extend(self.store.valid_serials(&serials).await?);
        }
        let reason: Reason = record.reason;
        let revocation = Revocation { revoked_at: now(), reason, invalidity_date: record.since };
        let mut done = total - valid.len();
        progress(Progress::Revoked(done, total));
        for chunk in valid.chunks(REVOKE_BATCH) {
            let audit: Vec<AuditRecord> = chunk
                .iter()
                .map(|serial| {
                    audit_record(
                        principal,
                        "certificate.revoke",
                        format!("cert:{serial}"),
                        json!({"serial": serial, "reason": reason.as_str(), "invalidity_date": record.since,
                               "incident": record.id}),
                    )
                })
                .collect();
            self.store.revoke(chunk, &revocation, &audit).await?;
            done += chunk.len();
            progress(Progress::Revoked(done, total));
        }
        Ok(valid.len())
    }

    /// Signs the final CRLs of compromised CAs (long-lived, since no key will
    /// sign another) and destroys their keys in the key store.
    async fn retire_compromised_keys(&self, principal: &Principal, record: &IncidentRecord) -> Result<()> {
        for ca in self.store.issuers().await?.into_iter().filter(|i| i.status == IssuerStatus::Compromised) {
            let Some(key) = self.store.key(&ca.key_id).await? else { continue };
            if key.status == KeyStatus::Destroyed {
                continue;
            }
            // Its OCSP responder, made (or renewed) now while the key exists,
            // keeps answering `revoked` for its certificates until it expires.
            self.responder(principal, &ca.id).await?;
            for partition in 0..self.crl_partitions(&ca.id).await? {
                let entries = self.revoked_entries(&ca.id, partition).await?;
                let until = crate::revocation::from_unix(ca.not_after)?;
                let crl = self.sign_crl_until(principal, &ca.id, partition, entries, until).await?;
                use base64::Engine;
                let value = base64::engine::general_purpose::STANDARD.encode(&crl.der);
                self.store.set_meta(&crate::revocation::final_crl_key(&ca.id, partition), &value, &[]).await?;
            }
            let reference = custos_keys::KeyReference { backend: key.backend.clone(), data: key.reference.clone() };
            // Destroying a key already gone (a run killed after destroying it) succeeds.
            self.key_store()?.destroy(&reference)?;
            let audit = audit_record(
                principal,
                "key.destroy",
                format!("key:{}", key.id),
                json!({"key": key.id, "backend": key.backend, "label": key.label, "reason": "compromised",
                       "incident": record.id}),
            );
            self.store.destroy_key(&key.id, &[audit]).await?;
        }
        Ok(())
    }

    /// Issues a replacement for every `pending` connection; returns how many and the keys file.
    async fn replace_connections(
        &self,
        principal: &Principal,
        record: &IncidentRecord,
        owner: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(usize, Option<PathBuf>)> {
        let connections = self.store.incident_connections(&record.id).await?;
        let total = connections.len();
        let pending: Vec<IncidentConnection> =
            connections.into_iter().filter(|c| c.state == ConnectionState::Pending).collect();
        progress(Progress::Replaced(total - pending.len(), total));
        if pending.is_empty() {
            return Ok((0, None));
        }
        // The names to repeat: those of each connection's newest affected certificate.
        let affected = self.store.incident_certificates(&record.id).await?;
        let mut newest: HashMap<(String, String), CertificateRecord> = HashMap::new();
        let mut old_serials: HashMap<(String, String), Vec<String>> = HashMap::new();
        for c in &affected {
            old_serials.entry((c.tenant.clone(), c.connection.clone())).or_default().push(c.serial.clone());
        }
        for chunk in affected.chunks(REVOKE_BATCH) {
            let serials: Vec<String> = chunk.iter().map(|c| c.serial.clone()).collect();
            for cert in self.store.certificates_by_serials(&serials).await? {
                let key = (cert.tenant.clone(), cert.connection.clone());
                if newest.get(&key).is_none_or(|n| n.created_at < cert.created_at) {
                    newest.insert(key, cert);
                }
            }
        }
        let webhooks: HashMap<String, WebhookRecord> =
            self.store.webhooks().await?.into_iter().map(|w| (w.tenant.clone(), w)).collect();
        let file = open_keys_file(keys_file)?;
        let sink = ReplacementSink {
            incident: record.id.clone(),
            reason: record.reason,
            base_url: self.base_url.clone(),
            old_serials,
            webhooks,
            file: std::sync::Mutex::new(file),
            path: keys_file.to_path_buf(),
        };
        let mut done = total - pending.len();
        let mut replaced = 0;
        for chunk in pending.chunks(REPLACE_BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for c in chunk {
                let old = newest.get(&(c.tenant.clone(), c.connection.clone())).ok_or_else(|| {
                    CaError::Inconsistent(format!("no affected certificate recorded for {}/{}", c.tenant, c.connection))
                })?;
                requests.push(IssueRequest {
                    tenant: c.tenant.clone(),
                    connection: c.connection.clone(),
                    profile: Some(old.profile),
                    sans: old.sans.clone(),
                    validity_secs: None,
                    key: KeySource::Generate(old.key_algorithm.parse().ok()),
                });
            }
            let n = self
                .issue_into(principal, requests, &sink, |batch| {
                    done += batch.len();
                    progress(Progress::Replaced(done, total));
                })
                .await?;
            replaced += n;
            self.heartbeat(&record.id, owner).await?;
        }
        Ok((replaced, Some(keys_file.to_path_buf())))
    }

    /// Where each connection stands, with ages and notification delivery.
    pub async fn incident_status(&self, principal: &Principal, id: &str) -> Result<IncidentStatus> {
        let incident = self.incident(principal, id).await?;
        let connections = self.store.incident_connections(id).await?;
        let t = now();
        let states = ConnectionState::ALL
            .iter()
            .map(|s| {
                let in_state: Vec<&IncidentConnection> = connections.iter().filter(|c| c.state == *s).collect();
                StateCount {
                    state: *s,
                    connections: in_state.len(),
                    oldest_seconds: in_state.iter().map(|c| t - c.updated_at).max().unwrap_or(0),
                }
            })
            .collect();
        let messages = self.store.outbox(id).await?;
        let hooked: std::collections::HashSet<String> =
            self.store.webhooks().await?.into_iter().map(|w| w.tenant).collect();
        let mut without: Vec<String> =
            connections.iter().map(|c| c.tenant.clone()).filter(|t| !hooked.contains(t)).collect();
        without.dedup();
        Ok(IncidentStatus {
            incident,
            states,
            notifications: NotificationSummary {
                delivered: messages.iter().filter(|m| m.state == DeliveryState::Delivered).count(),
                pending: messages.iter().filter(|m| m.state == DeliveryState::Pending).count(),
                tenants_without_webhook: without,
                messages,
            },
            connections,
        })
    }

    /// A tenant confirms its new certificate is in place; the old one is
    /// then retired (revoked now if the reason did not revoke it at once).
    pub async fn ack_incident(
        &self,
        principal: &Principal,
        id: &str,
        tenant: &str,
        connection: &str,
    ) -> Result<IncidentConnection> {
        visible(principal, Operation::AcknowledgeIncident { tenant, connection }, || CaError::UnknownConnection {
            tenant: tenant.into(),
            connection: connection.into(),
        })?;
        let record = self.incident_record(id).await?;
        let connections = self.store.incident_connections(id).await?;
        let current = connections
            .iter()
            .find(|c| c.tenant == tenant && c.connection == connection)
            .ok_or_else(|| CaError::Policy(format!("{tenant}/{connection} is not affected by {id}")))?;
        match current.state.as_str() {
            "pending" => {
                return Err(CaError::Policy(format!(
                    "{tenant}/{connection} has no replacement yet (run `custos incident execute {id}`)"
                )));
            }
            "acknowledged" | "old-certificate-retired" => return Ok(current.clone()),
            _ => {}
        }
        let pair = [(tenant.to_string(), connection.to_string())];
        let audit = audit_record(
            principal,
            "incident.ack",
            format!("connection:{tenant}/{connection}"),
            json!({"incident": id, "tenant": tenant, "connection": connection, "replacement": current.replacement}),
        );
        self.store.move_connections(id, &pair, &ACKNOWLEDGE, &[audit]).await?;
        // Retire: anything of this connection still valid in the blast radius is revoked now.
        self.revoke_affected(principal, &record, Some(&pair), &|_| {}).await?;
        let audit = audit_record(
            principal,
            "incident.retire",
            format!("connection:{tenant}/{connection}"),
            json!({"incident": id, "tenant": tenant, "connection": connection}),
        );
        self.store.move_connections(id, &pair, &RETIRE, &[audit]).await?;
        self.store
            .incident_connections(id)
            .await?
            .into_iter()
            .find(|c| c.tenant == tenant && c.connection == connection)
            .ok_or_else(|| CaError::Inconsistent("connection vanished".into()))
    }

    /// Closes an incident; refused while any connection still depends on a compromised certificate.
    pub async fn close_incident(&self, principal: &Principal, id: &str) -> Result<IncidentRecord> {
        authorize(principal, Operation::CloseIncident)?;
        let mut record = self.incident_record(id).await?;
        if record.state == IncidentState::Closed {
            return Ok(record);
        }
        let open: Vec<String> = self
            .store
            .incident_connections(id)
            .await?
            .into_iter()
            .filter(|c| c.state != ConnectionState::OldCertificateRetired)
            .map(|c| format!("{}/{} ({})", c.tenant, c.connection, c.state))
            .collect();
        if !open.is_empty() {
            let shown: Vec<&str> = open.iter().take(5).map(String::as_str).collect();
            return Err(CaError::Policy(format!(
                "{} connection(s) still depend on a compromised certificate, e.g. {}; they must acknowledge first",
                open.len(),
                shown.join(", ")
            )));
        }
        record.state = IncidentState::Closed;
        record.closed_at = Some(now());
        let audit = audit_record(principal, "incident.close", format!("incident:{id}"), json!({"incident": id}));
        self.store.update_incident(&record, &[audit]).await?;
        Ok(record)
    }

    /// The incident report: timeline, counts, durations, notifications.
    pub async fn incident_report(&self, principal: &Principal, id: &str) -> Result<IncidentReport> {
        let status = self.incident_status(principal, id).await?;
        let view = self.incident_view(principal, id).await?;
        let r = &status.incident;
        let mut timeline = vec![TimelineEvent {
            time: crate::rfc3339(r.declared_at),
            event: format!("declared by {}: {} compromised ({}) {}", r.declared_by, view.compromised, r.reason, r.note),
        }];
        let mut push = |t: Option<i64>, event: String| {
            if let Some(t) = t {
                timeline.push(TimelineEvent { time: crate::rfc3339(t), event });
            }
        };
        push(r.since, "compromise assumed since (invalidity date)".into());
        push(r.executed_at, "execution started".into());
        if !r.new_issuers.is_empty() {
            push(
                r.executed_at,
                format!("new CA(s) {} replace {}", r.new_issuers.join(", "), view.compromised_issuers.join(", ")),
            );
        }
        push(r.revoked_at, format!("all {} affected certificates revoked", view.affected_certificates));
        push(r.replaced_at, format!("all {} connections have a replacement", view.affected_connections));
        let cs = &status.connections;
        let last = |f: fn(&IncidentConnection) -> Option<i64>| -> Option<i64> {
            if cs.iter().all(|c| f(c).is_some()) { cs.iter().filter_map(f).max() } else { None }
        };
        let first_notified = cs.iter().filter_map(|c| c.notified_at).min();
        push(first_notified, "first tenant notified".into());
        push(last(|c| c.notified_at), "every tenant notified".into());
        push(last(|c| c.acknowledged_at), "every connection acknowledged".into());
        push(r.closed_at, "closed".into());
        timeline.sort_by(|a, b| a.time.cmp(&b.time));

        let mut counts = BTreeMap::new();
        counts.insert("affected_certificates".into(), view.affected_certificates);
        counts.insert("affected_connections".into(), view.affected_connections);
        counts.insert("affected_tenants".into(), view.affected_tenants);
        for s in &status.states {
            counts.insert(format!("connections_{}", s.state), s.connections);
        }
        counts.insert("notifications_delivered".into(), status.notifications.delivered);
        counts.insert("notifications_pending".into(), status.notifications.pending);
        let mut durations = BTreeMap::new();
        let since = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| b - a);
        for (name, d) in [
            ("declared_to_execution", since(Some(r.declared_at), r.executed_at)),
            ("execution_to_all_revoked", since(r.executed_at, r.revoked_at)),
            ("execution_to_all_replaced", since(r.executed_at, r.replaced_at)),
            ("execution_to_all_notified", since(r.executed_at, last(|c| c.notified_at))),
            ("execution_to_all_acknowledged", since(r.executed_at, last(|c| c.acknowledged_at))),
            ("declared_to_closed", since(Some(r.declared_at), r.closed_at)),
        ] {
            if let Some(d) = d {
                durations.insert(name.to_string(), d);
            }
        }
        let mut warnings = Vec::new();
        if view.root_compromised {
            warnings.push(
                "A root CA was compromised: every relying party must remove the old root from its trust store and install the new one; custos cannot do that for them."
                    .to_string(),
            );
        }
        let waiting: usize = status
            .states
            .iter()
            .filter(|s| s.state != ConnectionState::OldCertificateRetired)
            .map(|s| s.connections)
            .sum();
        if waiting > 0 {
            warnings.push(format!("{waiting} connection(s) have not finished cut-over."));
        }
        if !status.notifications.tenants_without_webhook.is_empty() {
            warnings.push(format!(
                "{} tenant(s) have no webhook and were not notified: {}",
                status.notifications.tenants_without_webhook.len(),
                status.notifications.tenants_without_webhook.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(IncidentReport {
            incident: status.incident.clone(),
            timeline,
            counts,
            durations,
            warnings,
            notifications: status.notifications.messages,
        })
    }

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

    /// Authenticates a tenant's signed request (`x-custos-signature: t=UNIX,v1=HEX`
    /// over `UNIX.BODY` with the tenant's webhook secret, within five minutes):
    /// the tenant's principal if the signature holds, `None` if not.
    pub async fn tenant_by_signature(&self, tenant: &str, header: &str, body: &[u8]) -> Result<Option<Principal>> {
        let Some(secret) = self.store.webhooks().await?.into_iter().find(|w| w.tenant == tenant).map(|w| w.secret)
        else {
            return Ok(None);
        };
        Ok(verify_webhook(&secret, header, body, now(), 300).then(|| Principal::Tenant {
            account: "webhook-hmac".into(),
            tenant: tenant.to_string(),
            connection: None,
        }))
    }

    /// The tenants' webhooks with their secrets, for the notification job.
    pub(crate) async fn webhook_secrets(&self) -> Result<HashMap<String, String>> {
        Ok(self.store.webhooks().await?.into_iter().map(|w| (w.tenant, w.secret)).collect())
    }
}

/// Opens (appending) the file that receives replacement private keys, owner-only.
fn open_keys_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| CaError::Io { path: path.to_path_buf(), source })
}

/// Commits a batch of replacements: keys to the file first (synced), then the
/// certificates, connection states, notifications and audit entries in one transaction.
struct ReplacementSink {
    incident: String,
    reason: Reason,
    base_url: String,
    old_serials: HashMap<(String, String), Vec<String>>,
    webhooks: HashMap<String, WebhookRecord>,
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
}

#[async_trait::async_trait]
impl IssueSink for ReplacementSink {
    fn incident(&self) -> Option<&str> {
        Some(&self.incident)
    }

    async fn commit(&self, ca: &Ca, batch: &[Issued], audit: Vec<AuditRecord>) -> Result<()> {
        let io = |source| CaError::Io { path: self.path.clone(), source };
        {
            let mut lines = Vec::with_capacity(batch.len() * 1200);
            for issued in batch {
                let r = &issued.record;
                let line = json!({
                    "incident": self.incident, "tenant": r.tenant, "connection": r.connection, "serial": r.serial,
                    "certificate": custos_pki::certificate_pem(&r.der),
                    "chain": issued.chain.iter().map(|c| custos_pki::certificate_pem(c)).collect::<String>(),
                    "private_key": issued.key.as_ref().map(|k| k.pkcs8_pem().to_string()),
                });
                lines.extend_from_slice(line.to_string().as_bytes());
                lines.push(b'\n');
            }
            let mut file = self.file.lock().map_err(|_| CaError::Inconsistent("keys file lock poisoned".into()))?;
            file.write_all(&lines).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut by_tenant: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let mut replacements = Vec::with_capacity(batch.len());
        for issued in batch {
            let r = &issued.record;
            replacements.push(Replacement {
                tenant: r.tenant.clone(),
                connection: r.connection.clone(),
                serial: r.serial.clone(),
            });
            if self.webhooks.contains_key(&r.tenant) {
                by_tenant.entry(r.tenant.clone()).or_default().push(json!({
                    "connection": r.connection,
                    "old_serials": self.old_serials.get(&(r.tenant.clone(), r.connection.clone())),
                    "new_serial": r.serial,
                    "not_after": crate::rfc3339(r.not_after),
                    "certificate_pem": custos_pki::certificate_pem(&r.der),
                    "chain_pem": issued.chain.iter().map(|c| custos_pki::certificate_pem(c)).collect::<String>(),
                }));
            }
        }
        let created = now();
        let messages: Vec<OutboxMessage> = by_tenant
            .into_iter()
            .filter_map(|(tenant, connections)| {
                let hook = self.webhooks.get(&tenant)?;
                let names = connections.iter().filter_map(|c| c["connection"].as_str().map(str::to_string)).collect();
                let body = json!({
                    "type": "custos.incident.replacement",
                    "incident": self.incident,
                    "tenant": tenant,
                    "reason": self.reason,
                    "connections": connections,
                    "ack_url": format!("{}/incident/{}/ack", self.base_url, self.incident),
                });
                Some(OutboxMessage {
                    id: 0,
                    incident: self.incident.clone(),
                    tenant: tenant.clone(),
                    connections: names,
                    url: hook.url.clone(),
                    body: body.to_string(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_attempt_at: created,
                    last_error: None,
                    created_at: created,
                    delivered_at: None,
                })
            })
            .collect();
        let records: Vec<CertificateRecord> = batch.iter().map(|s| s.record.clone()).collect();
        ca.store
            .record_replacements(&self.incident, &records, &replacements, &REPLACE, &messages, &audit)
            .await
            .map_err(|e| match e {
                custos_store::StoreError::Conflict { what } => CaError::Policy(what),
                other => other.into(),
            })
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
    if (now - t).abs() > tolerance {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_hex.as_bytes());
    let mut message = t.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    aws_lc_rs::hmac::verify(&key, &message, &v1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_refuse_nonsense() {
        assert_eq!("issuer:issuing-1".parse::<Scope>().expect("issuer"), Scope::Issuer("issuing-1".into()));
        assert_eq!("tenant:acme".parse::<Scope>().expect("tenant"), Scope::Tenant("acme".into()));
        assert!(matches!("cert:0A:0B".parse::<Scope>().expect("cert"), Scope::Cert(_)));
        for bad in ["issuer", "issuer:", "bogus:x", "cert:zz"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_signatures_verify_and_expire() {
        let header = sign_webhook("00ff", 1_000, b"{}");
        assert!(verify_webhook("00ff", &header, b"{}", 1_010, 300));
        assert!(!verify_webhook("00ff", &header, b"{ }", 1_010, 300), "body changed");
        assert!(!verify_webhook("00fe", &header, b"{}", 1_010, 300), "other secret");
        assert!(!verify_webhook("00ff", &header, b"{}", 2_000, 300), "too old");
        assert!(!verify_webhook("00ff", "garbage", b"{}", 1_000, 300));
    }

    #[test]
    fn ca_names_renumber() {
        assert_eq!(renumber("custos Issuing CA 1", 2), "custos Issuing CA 2");
        assert_eq!(organization_of("acme Root CA 1").as_deref(), Some("acme"));
        let (id, n) = next_issuer_id(&[], "issuing");
        assert_eq!((id.as_str(), n), ("issuing-1", 1));
    }
}
