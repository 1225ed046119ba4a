//! `audit verify --state`: the log replayed into the state it implies, and
//! that state compared with the database.
//!
//! The log proves its own integrity (hashes, checkpoints); this proves that
//! the tables say what the log says. Every change custos makes commits with
//! its entry, so a difference means someone wrote the database around
//! custos: a certificate set back to valid (and dropped from the CRL), a
//! revocation removed from the feed OCSP nodes follow, a certificate with no
//! entry, a connection's policy widened. Each difference names the object
//! and the log index that should have produced what the database lacks (or
//! none, for what no entry produced).
//!
//! What is compared: tenants; connections (profile, allowed SANs, key
//! algorithm); certificates (issuer, tenant, connection, key, expiry, status
//! and revocation reason); the revocation feed; keys (existence and status);
//! issuers (existence and status); the key blocklist; incidents (existence).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use custos_types::{CertificateStatus, IssuerStatus, KeyStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Ca, CaError, Principal, Result};

/// Certificates read per page while comparing.
const CERTIFICATE_PAGE: i64 = 20_000;

/// One way the database disagrees with its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateDifference {
    /// The object (`cert:SERIAL`, `connection:T/C`, ...).
    pub object: String,
    /// What disagrees.
    pub problem: String,
    /// The log entry that should have produced what the database shows
    /// otherwise; `None` when no entry produced what the database holds.
    pub index: Option<u64>,
}

/// What `audit verify --state` found.
#[derive(Clone, Debug, Serialize)]
pub struct StateReport {
    /// Entries replayed.
    pub entries: u64,
    /// Objects compared.
    pub objects: usize,
    /// Every difference, in object order.
    pub differences: Vec<StateDifference>,
}

/// A certificate as the log describes it. Its issuance fields are folded
/// into a keyed digest (see [`Digest`]): equality is all the comparison
/// needs, and the fields of the rare certificate that differs are read again
/// for the report. A million certificates then fit in tens of megabytes.
struct LoggedCertificate {
    issued_at: u64,
    fields: u64,
    revoked: Option<(u64, String)>,
    /// Whether the database holds it (set while comparing).
    found: bool,
}

/// A certificate row reduced the same way.
struct StoredCertificate {
    fields: u64,
    status: CertificateStatus,
    reason: Option<custos_pki::Reason>,
}

/// Folds a certificate's issuance fields (issuer, tenant, connection, key,
/// expiry) into 64 bits with SipHash under a key drawn for this run only: a
/// row changed to collide with its entry would have to guess the key.
#[derive(Clone, Default)]
struct Digest(std::hash::RandomState);

impl Digest {
    fn fields(&self, issuer: &str, tenant: &str, connection: &str, spki_sha256: &str, not_after: i64) -> u64 {
        // `str`'s Hash ends each string with a marker: bytes cannot move between fields.
        self.0.hash_one((issuer, tenant, connection, spki_sha256, not_after))
    }
}

/// The state the log implies, each object with the index that last set it.
#[derive(Default)]
struct Implied {
    digest: Digest,
    tenants: HashMap<String, (u64, Present)>,
    /// Keyed `TENANT/CONNECTION`.
    connections: HashMap<String, (u64, Policy)>,
    certificates: HashMap<String, LoggedCertificate>,
    keys: HashMap<String, (u64, KeyStatus)>,
    issuers: HashMap<String, (u64, IssuerStatus)>,
    blocked: HashMap<String, (u64, Present)>,
    incidents: HashMap<String, (u64, Present)>,
    /// Each CA's certificate serial, from `issuer.create`.
    issuer_serials: HashMap<String, String>,
    /// CA certificates revoked by their parent (`issuer.compromise`): serial to index.
    revoked_cas: HashMap<String, u64>,
}

/// A `certificate.issue` entry's details, borrowed where no escape forces a copy.
#[derive(Deserialize)]
struct IssueDetails<'a> {
    #[serde(borrow)]
    serial: Cow<'a, str>,
    #[serde(borrow)]
    issuer: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    connection: Cow<'a, str>,
    #[serde(borrow)]
    spki_sha256: Cow<'a, str>,
    not_after: i64,
}

#[derive(Deserialize)]
struct RevokeDetails {
    serial: String,
    reason: String,
    blocked_key: Option<String>,
}

impl Implied {
    fn apply(&mut self, index: u64, action: &str, object: &str, details: &str) -> Result<()> {
        let bad = |e: serde_json::Error| {
            CaError::Inconsistent(format!("entry {index} ({action}): its details do not say what it did: {e}"))
        };
        let value = || serde_json::from_str::<Value>(details).map_err(bad);
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match action {
            "certificate.issue" => {
                let d: IssueDetails = serde_json::from_str(details).map_err(bad)?;
                let fields = self.digest.fields(&d.issuer, &d.tenant, &d.connection, &d.spki_sha256, d.not_after);
                self.certificates.insert(
                    d.serial.into_owned(),
                    LoggedCertificate { issued_at: index, fields, revoked: None, found: false },
                );
            }
            "certificate.revoke" => {
                let d: RevokeDetails = serde_json::from_str(details).map_err(bad)?;
                if let Some(c) = self.certificates.get_mut(&d.serial) {
                    c.revoked = Some((index, d.reason));
                }
                if let Some(spki) = d.blocked_key {
                    self.blocked.entry(spki).or_insert((index, Present));
                }
            }
            "key.block" => {
                if let Some(spki) = text(&value()?, "spki_sha256") {
                    self.blocked.entry(spki).or_insert((index, Present));
                }
            }
            "tenant.add" => {
                if let Some(t) = text(&value()?, "tenant") {
                    self.tenants.insert(t, (index, Present));
                }
            }
            "connection.add" | "connection.update" => {
                let v = value()?;
                if let (Some(t), Some(c)) = (text(&v, "tenant"), text(&v, "connection")) {
                    let policy = serde_json::json!({"profile": v["profile"], "allowed_sans": v["allowed_sans"],
                                                    "key_algorithm": v["key_algorithm"]});
                    self.connections.insert(format!("{t}/{c}"), (index, Policy(policy)));
                }
            }
            "key.generate" => {
                if let Some(k) = text(&value()?, "key") {
                    self.keys.insert(k, (index, KeyStatus::Active));
                }
            }
            "key.destroy" => {
                if let Some(k) = text(&value()?, "key") {
                    self.keys.insert(k, (index, KeyStatus::Destroyed));
                }
            }
            "issuer.create" => {
                if let Some(id) = object.strip_prefix("issuer:") {
                    self.issuers.insert(id.to_string(), (index, IssuerStatus::Active));
                    if let Some(serial) = text(&value()?, "serial") {
                        self.issuer_serials.insert(id.to_string(), serial);
                    }
                }
            }
            "issuer.compromise" => {
                let v = value()?;
                if let Some(id) = text(&v, "issuer") {
                    if let Some(serial) = self.issuer_serials.get(&id) {
                        self.revoked_cas.insert(serial.clone(), index);
                    }
                    self.issuers.insert(id, (index, IssuerStatus::Compromised));
                }
                if let Some(k) = text(&v, "key") {
                    // A destroyed key stays destroyed; otherwise it is compromised now.
                    let entry = self.keys.entry(k).or_insert((index, KeyStatus::Compromised));
                    if entry.1 != KeyStatus::Destroyed {
                        *entry = (index, KeyStatus::Compromised);
                    }
                }
            }
            "incident.declare" => {
                if let Some(id) = text(&value()?, "incident") {
                    self.incidents.insert(id, (index, Present));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// An object that exists, with nothing more to compare.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Present;

impl std::fmt::Display for Present {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("present")
    }
}

/// A connection's issuance policy as the log records it.
#[derive(PartialEq)]
struct Policy(Value);

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its policy is {}", self.0)
    }
}

/// Compares one kind of object both ways: each the database holds must have
/// been `made` by an entry and have the value the log gives it; each the log
/// made must be in the database. Returns how many the database holds.
fn compare<V: PartialEq + std::fmt::Display>(
    kind: &str,
    made: &str,
    db: impl Iterator<Item = (String, V)>,
    logged: &HashMap<String, (u64, V)>,
    out: &mut Vec<StateDifference>,
) -> usize {
    let mut seen = HashSet::new();
    for (name, value) in db {
        match logged.get(&name) {
            None => out.push(StateDifference {
                object: format!("{kind}:{name}"),
                problem: format!("in the database, but no log entry {made} it"),
                index: None,
            }),
            Some((index, v)) if *v != value => out.push(StateDifference {
                object: format!("{kind}:{name}"),
                problem: format!("{value} in the database, {v} in the log"),
                index: Some(*index),
            }),
            Some(_) => {}
        }
        seen.insert(name);
    }
    for (name, (index, _)) in logged {
        if !seen.contains(name) {
            out.push(StateDifference {
                object: format!("{kind}:{name}"),
                problem: format!("{made} in the log, missing from the database"),
                index: Some(*index),
            });
        }
    }
    seen.len()
}

impl Ca {
    /// Verifies the log ([`Ca::verify_log`]) and, in the same read, replays
    /// it into the state it implies; then compares that state with the
    /// database. Every difference is reported, none is repaired.
    pub async fn verify_log_and_state(
        &self,
        principal: &Principal,
        key: Option<&custos_audit::VerifierKey>,
        trusted: Option<&str>,
    ) -> Result<(crate::audit::LogReport, StateReport)> {
        crate::authorization::authorize(principal, crate::Operation::ReadAudit)?;
        let mut implied = Implied::default();
        // The certificates table is read while the log is proven and replayed:
        // each is a scan of its own (its own connection, its own SQLite
        // thread), and together they keep both cores busy.
        let rows = tokio::spawn(stored_certificates(self.store.clone(), implied.digest.clone()));
        let aborted = AbortOnDrop(rows.abort_handle());
        let log = self
            .verify_log_visiting(principal, key, trusted, &mut |e| {
                let f = e.fields();
                implied.apply(f.index, f.action, f.object, f.details)
            })
            .await?;
        let stored = rows.await.map_err(|e| CaError::Inconsistent(format!("certificate reader: {e}")))??;
        drop(aborted);
        let state = self.compare_state(implied, stored, log.entries).await?;
        Ok((log, state))
    }

    /// The database against the state `implied` by `entries` log entries;
    /// `stored` is the certificates table, read alongside the log.
    async fn compare_state(
        &self,
        mut implied: Implied,
        stored: Vec<(String, StoredCertificate)>,
        entries: u64,
    ) -> Result<StateReport> {
        let mut out = Vec::new();
        let mut objects = 0;
        let mut diff = |object: String, problem: String, index: Option<u64>| {
            out.push(StateDifference { object, problem, index });
        };

        let mut changed = Vec::new();
        for (serial, c) in &stored {
            objects += 1;
            let object = || format!("cert:{serial}");
            let Some(logged) = implied.certificates.get_mut(serial) else {
                diff(object(), "in the database, but no log entry issued it".into(), None);
                continue;
            };
            logged.found = true;
            if logged.fields != c.fields {
                changed.push((serial, logged.issued_at));
            }
            match (&logged.revoked, c.status) {
                (Some((index, _)), CertificateStatus::Valid) => {
                    diff(object(), "valid in the database, revoked in the log".into(), Some(*index));
                }
                (Some((index, reason)), CertificateStatus::Revoked) => {
                    let db_reason = c.reason.map_or("", |r| r.as_str());
                    if db_reason != reason {
                        diff(
                            object(),
                            format!("revoked for {db_reason:?} in the database, {reason:?} in the log"),
                            Some(*index),
                        );
                    }
                }
                (None, CertificateStatus::Revoked) => {
                    diff(object(), "revoked in the database, but no log entry revoked it".into(), None);
                }
                (None, _) => {}
            }
        }
        for (serial, issued_at) in changed {
            for problem in self.issuance_differences(serial, issued_at).await? {
                diff(format!("cert:{serial}"), problem, Some(issued_at));
            }
        }
        let mut missing: Vec<(&String, &LoggedCertificate)> =
            implied.certificates.iter().filter(|(_, c)| !c.found).collect();
        missing.sort_by_key(|(_, c)| c.issued_at);
        for (serial, c) in missing {
            diff(format!("cert:{serial}"), "issued in the log, missing from the database".into(), Some(c.issued_at));
        }

        // The revocation feed OCSP nodes follow: every revoked certificate once.
        let mut fed: HashMap<String, usize> = HashMap::new();
        let mut seq = 0;
        loop {
            let events = self.store.revocations_since(seq, 10_000).await?;
            let Some(last) = events.last() else { break };
            seq = last.seq;
            for e in events {
                *fed.entry(e.serial).or_default() += 1;
            }
        }
        let mut revoked: Vec<(&String, u64)> =
            implied.certificates.iter().filter_map(|(s, c)| c.revoked.as_ref().map(|(i, _)| (s, *i))).collect();
        revoked.sort_by_key(|(_, i)| *i);
        for (serial, index) in revoked {
            objects += 1;
            if !fed.contains_key(serial) {
                diff(
                    format!("cert:{serial}"),
                    "revoked in the log, missing from the revocation feed".into(),
                    Some(index),
                );
            }
        }
        for (serial, index) in &implied.revoked_cas {
            objects += 1;
            if !fed.contains_key(serial) {
                diff(
                    format!("cert:{serial}"),
                    "a CA certificate revoked in the log, missing from the revocation feed".into(),
                    Some(*index),
                );
            }
        }
        for (serial, n) in &fed {
            let logged = implied.certificates.get(serial).is_some_and(|c| c.revoked.is_some())
                || implied.revoked_cas.contains_key(serial);
            if !logged {
                diff(format!("cert:{serial}"), "in the revocation feed, but no log entry revoked it".into(), None);
            } else if *n > 1 {
                diff(format!("cert:{serial}"), format!("{n} times in the revocation feed"), None);
            }
        }

        // The other objects, each kind both ways and by value.
        let tenants = self.store.tenants().await?;
        objects +=
            compare("tenant", "added", tenants.into_iter().map(|t| (t.name, Present)), &implied.tenants, &mut out);
        let connections = self.store.connections(None).await?.into_iter().map(|c| {
            let policy = serde_json::json!({"profile": c.profile, "allowed_sans": c.allowed_sans,
                                            "key_algorithm": c.key_algorithm});
            (format!("{}/{}", c.tenant, c.name), Policy(policy))
        });
        objects += compare("connection", "added", connections, &implied.connections, &mut out);
        let keys = self.store.keys().await?.into_iter().map(|k| (k.id, k.status));
        objects += compare("key", "generated", keys, &implied.keys, &mut out);
        let issuers = self.store.issuers().await?.into_iter().map(|i| (i.id, i.status));
        objects += compare("issuer", "created", issuers, &implied.issuers, &mut out);
        let blocked = self.store.blocklist().await?.into_iter().map(|b| (b.spki_sha256, Present));
        objects += compare("blocked-key", "blocked", blocked, &implied.blocked, &mut out);
        let incidents = self.store.incidents().await?.into_iter().map(|i| (i.id, Present));
        objects += compare("incident", "declared", incidents, &implied.incidents, &mut out);
        out.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.object.cmp(&b.object)));
        Ok(StateReport { entries, objects, differences: out })
    }
}

impl Ca {
    /// What differs between a certificate's row and the entry that issued
    /// it, field by field: read again for a certificate whose digests differ.
    async fn issuance_differences(&self, serial: &str, issued_at: u64) -> Result<Vec<String>> {
        let row = self
            .store
            .certificate(serial)
            .await?
            .ok_or_else(|| CaError::Inconsistent(format!("certificate {serial} vanished while it was compared")))?;
        let entry = self
            .store
            .audit_entries(issued_at, 1)
            .await?
            .pop()
            .ok_or_else(|| CaError::Inconsistent(format!("entry {issued_at} vanished while it was compared")))?;
        let logged: IssueDetails = serde_json::from_str(&entry.record.details)
            .map_err(|e| CaError::Inconsistent(format!("entry {issued_at}: {e}")))?;
        let mut out = Vec::new();
        for (field, db, log) in [
            ("issuer", row.issuer.as_str(), &*logged.issuer),
            ("tenant", &row.tenant, &logged.tenant),
            ("connection", &row.connection, &logged.connection),
            ("key (SPKI SHA-256)", &row.spki_sha256, &logged.spki_sha256),
        ] {
            if db != log {
                out.push(format!("{field} is {db:?} in the database, {log:?} in the log"));
            }
        }
        if row.not_after != logged.not_after {
            out.push(format!("expiry {} in the database, {} in the log", row.not_after, logged.not_after));
        }
        Ok(out)
    }
}

/// Every certificate row, reduced by `digest`, in storage order; the next
/// page is read while one is reduced.
async fn stored_certificates(
    store: std::sync::Arc<dyn custos_store::Store>,
    digest: Digest,
) -> Result<Vec<(String, StoredCertificate)>> {
    let fetch = |cursor: Option<String>| {
        let store = store.clone();
        tokio::spawn(async move { store.certificate_states(cursor.as_deref(), CERTIFICATE_PAGE).await })
    };
    let mut out = Vec::new();
    let mut pending = Some(fetch(None));
    while let Some(task) = pending.take() {
        let page = task.await.map_err(|e| CaError::Inconsistent(format!("certificate reader: {e}")))??;
        pending = page.next_cursor().map(|n| fetch(Some(n.to_string())));
        out.reserve(page.len());
        for c in page.states() {
            let c = c?;
            let fields = digest.fields(c.issuer, c.tenant, c.connection, c.spki_sha256, c.not_after);
            out.push((
                c.serial.to_string(),
                StoredCertificate { fields, status: c.status, reason: c.revocation_reason },
            ));
        }
    }
    Ok(out)
}

/// Stops a spawned task when the caller gives up (an error, or a dropped future).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
