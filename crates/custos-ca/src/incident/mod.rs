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

mod custody;
mod declare;
mod execute;
pub mod notify;
mod report;
mod track;

pub use notify::{ACK_TOLERANCE_SECONDS, SignedAck, sign_ack, sign_webhook, verify_webhook};

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
    /// Messages given up after failing for longer than the bound.
    pub failed: usize,
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
        let ancient = sign_webhook("00ff", i64::MIN, b"{}");
        assert!(!verify_webhook("00ff", &ancient, b"{}", 1_000, 300), "the time difference must not overflow");
        // An acknowledgement is bound to its request and connection, and apart from notifications.
        let ack = SignedAck {
            method: "POST",
            path: "/incident/INC-0001/ack",
            incident: "INC-0001",
            tenant: "t",
            connection: "c",
            body: b"{}",
        };
        let header = sign_ack("00ff", &ack, 1_000);
        assert!(notify::verify_ack("00ff", &ack, &header, 1_010, 300).is_some());
        assert!(notify::verify_ack("00ff", &SignedAck { connection: "d", ..ack }, &header, 1_010, 300).is_none());
        assert!(notify::verify_ack("00ff", &SignedAck { incident: "INC-0002", ..ack }, &header, 1_010, 300).is_none());
        assert!(!verify_webhook("00ff", &header.replace("v2=", "v1="), b"{}", 1_010, 300));
    }

    #[test]
    fn ca_names_renumber() {
        assert_eq!(renumber("custos Issuing CA 1", 2), "custos Issuing CA 2");
        assert_eq!(organization_of("acme Root CA 1").as_deref(), Some("acme"));
        let (id, n) = next_issuer_id(&[], "issuing");
        assert_eq!((id.as_str(), n), ("issuing-1", 1));
    }
}
