//! Issuing end-entity certificates to connections, one at a time or in bulk.
//!
//! Bulk issuance runs in two passes so that a bad line changes nothing: the
//! first checks every request against policy (CSR signatures included), the
//! second signs on all cores and commits in batches, each batch with its audit
//! entries in one transaction. Signing batch k+1 overlaps committing batch k.
//! If the process dies mid-way, every committed batch is complete and no
//! certificate outside it was ever handed out.

use std::collections::HashMap;
use std::sync::Arc;

use custos_keys::KeyAlgorithm;
use custos_keys::leaf::LeafKey;
use custos_pki::{CaIssuer, CertificateRequest, CertificateSpec, CertificateTemplate, IssuerUrls, Profile, Serial};
use custos_store::{AuditRecord, CertificateRecord, ConnectionRecord, IssuerRecord};
use custos_types::{CertificateStatus, IssuerRole, IssuerStatus};
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::Operation;
use crate::policy::san_allowed;
use crate::{Ca, CaError, Principal, Result, audit_record, visible};

/// A random one-time password (for a PKCS#12 bundle or a dev passphrase), from the CSPRNG.
pub fn random_password() -> Result<zeroize::Zeroizing<String>> {
    Ok(custos_keys::leaf::random_password()?)
}

/// Where the subject key of a certificate comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A PKCS#10 request (PEM or DER): the requester keeps its key.
    Csr(Vec<u8>),
    /// custos generates the key (of this algorithm, or the connection's) and
    /// returns it once; it is never stored.
    Generate(Option<KeyAlgorithm>),
    /// The public half of a connection key custos holds in custody.
    Custody(custos_keys::PublicKey, KeyAlgorithm),
    /// A PKCS#10 request finalizing an ACME order: the client keeps its key,
    /// and an incident waits for the client to renew rather than making a key.
    AcmeCsr(Vec<u8>),
}

/// One certificate to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// Tenant name.
    pub tenant: String,
    /// Connection name.
    pub connection: String,
    /// Profile; the connection's when `None`.
    pub profile: Option<Profile>,
    /// Subject alternative names.
    pub sans: Vec<String>,
    /// Lifetime in seconds; the connection's or the profile's default when `None`.
    pub validity_secs: Option<i64>,
    /// The subject key.
    pub key: KeySource,
    /// An idempotency key (bulk issuance: the input and its line). A request
    /// whose key was issued before is skipped, never issued twice.
    pub request_key: Option<String>,
}

/// A certificate just issued and recorded.
#[derive(Debug)]
pub struct Issued {
    /// What was recorded.
    pub record: CertificateRecord,
    /// The issuer's certificate and the ones above it, up to the root.
    pub chain: Arc<Vec<Vec<u8>>>,
    /// The private key, when custos generated it. Hand it out once.
    pub key: Option<LeafKey>,
    /// The request's idempotency key, if it had one.
    pub request_key: Option<String>,
}

/// What [`Ca::issue_bulk`] did.
#[derive(Debug, Default)]
pub struct BulkOutcome {
    /// Certificates issued now.
    pub issued: usize,
    /// Requests skipped because their key was issued before: (key, serial).
    pub skipped: Vec<(String, String)>,
}

/// Writes a batch's results where they must be durable before it commits.
pub type ResultWriter<'a> = dyn FnMut(&[Issued]) -> std::io::Result<()> + Send + 'a;

/// The issuing CA currently used for new certificates, unsealed.
pub(crate) struct ActiveIssuer {
    pub(crate) record: IssuerRecord,
    issuer: CaIssuer,
    chain: Arc<Vec<Vec<u8>>>,
    urls: IssuerUrls,
}

/// A request that passed policy, waiting to be signed.
pub(crate) struct Planned {
    spec: CertificateSpec,
    /// The CRL partition, from the issuance position.
    partition: i64,
    tenant: String,
    connection: String,
    key: PlannedKey,
    request_key: Option<String>,
}

enum PlannedKey {
    /// A CSR, and the key origin to record (`csr` or `acme`).
    Csr(CertificateRequest, &'static str),
    Generate(KeyAlgorithm),
    Custody(custos_keys::PublicKey, KeyAlgorithm),
}

impl Planned {
    /// The SPKI SHA-256 of a CSR's key (to check the blocklist); `None` for a key custos makes.
    pub(crate) fn csr_spki(&self) -> Option<String> {
        match &self.key {
            PlannedKey::Csr(r, _) => Some(r.public_key.sha256_hex()),
            PlannedKey::Generate(_) | PlannedKey::Custody(..) => None,
        }
    }

    /// Places it at issuance `position`: its CRL partition and URL.
    pub(crate) fn set_position(&mut self, position: i64, partition_size: i64, base_url: &str, issuer: &str) {
        self.partition = position / partition_size;
        if let Some(urls) = self.spec.urls.as_mut() {
            urls.crl = crate::crl_url(base_url, issuer, self.partition);
        }
    }
}

/// Makes a signed batch of certificates durable with its audit entries, in
/// one transaction: either all of it happened or none of it did.
#[async_trait::async_trait]
pub(crate) trait IssueSink: Sync {
    /// Commits `batch` and `audit`.
    async fn commit(&self, ca: &Ca, batch: &[Issued], audit: Vec<AuditRecord>) -> Result<()>;

    /// The incident these certificates replace for, named in their audit entries.
    fn incident(&self) -> Option<&str> {
        None
    }
}

/// The plain sink: the certificates, their request keys and audit entries,
/// after the results (with generated keys) are written by `write`, if given.
struct Recorded<'a> {
    write: Option<std::sync::Mutex<&'a mut ResultWriter<'a>>>,
}

#[async_trait::async_trait]
impl IssueSink for Recorded<'_> {
    async fn commit(&self, ca: &Ca, batch: &[Issued], audit: Vec<AuditRecord>) -> Result<()> {
        if let Some(write) = &self.write {
            // Crash here: the results hold keys of certificates that were never
            // committed; a resumed run drops them from the file (their request
            // keys are not in the database) before it issues again.
            let mut write = write.lock().map_err(|_| CaError::Inconsistent("result writer poisoned".into()))?;
            (*write)(batch).map_err(CaError::ResultsNotWritten)?;
        }
        let records: Vec<CertificateRecord> = batch.iter().map(|s| s.record.clone()).collect();
        let keys: Vec<String> = batch.iter().filter_map(|s| s.request_key.clone()).collect();
        match keys.len() {
            0 => Ok(ca.store.insert_certificates(&records, &audit).await?),
            n if n == batch.len() => Ok(ca.store.insert_requested_certificates(&records, &keys, &audit).await?),
            _ => Err(CaError::Inconsistent("a batch mixes requests with and without request keys".into())),
        }
    }
}

/// Certificates per commit in bulk issuance: large enough that the fsync is
/// amortised, small enough that a batch's memory stays in the megabytes.
const BATCH: usize = 1024;

impl Ca {
    /// Issues one certificate to a connection.
    pub async fn issue(&self, principal: &Principal, request: IssueRequest) -> Result<Issued> {
        let mut out = Vec::with_capacity(1);
        self.issue_many(principal, vec![request], |batch| out.extend(batch)).await?;
        out.pop().ok_or_else(|| CaError::Inconsistent("issuance returned nothing".into()))
    }

    /// Issues many certificates; `on_batch` receives each committed batch.
    ///
    /// Nothing is issued unless every request passes policy; a failing request
    /// is reported as [`CaError::BulkLine`] with its 1-based position.
    pub async fn issue_many(
        &self,
        principal: &Principal,
        requests: Vec<IssueRequest>,
        on_batch: impl FnMut(Vec<Issued>),
    ) -> Result<usize> {
        self.issue_into(principal, requests, &Recorded { write: None }, on_batch).await
    }

    /// Issues many certificates durably and resumably: each batch's results
    /// go to `write` (which must make them durable: the caller syncs its file)
    /// before the batch commits, so no committed certificate lacks its
    /// generated key; requests whose `request_key` was issued before are
    /// skipped, so running the same input again after a crash issues only
    /// what is missing.
    pub async fn issue_bulk(
        &self,
        principal: &Principal,
        requests: Vec<IssueRequest>,
        write: &mut ResultWriter<'_>,
    ) -> Result<BulkOutcome> {
        for (i, r) in requests.iter().enumerate() {
            may_issue(principal, r).map_err(|e| at_line(requests.len(), i, e))?;
        }
        let skipped = self.issued_requests(principal, &requests).await?;
        let done: std::collections::HashSet<&str> = skipped.iter().map(|(k, _)| k.as_str()).collect();
        let todo: Vec<IssueRequest> =
            requests.iter().filter(|r| r.request_key.as_deref().is_none_or(|k| !done.contains(k))).cloned().collect();
        let issued = match todo.is_empty() {
            true => 0,
            false => {
                self.issue_into(principal, todo, &Recorded { write: Some(std::sync::Mutex::new(write)) }, drop).await?
            }
        };
        Ok(BulkOutcome { issued, skipped })
    }

    /// Which of `requests`' keys were issued before, with their serials.
    pub async fn issued_requests(
        &self,
        principal: &Principal,
        requests: &[IssueRequest],
    ) -> Result<Vec<(String, String)>> {
        for r in requests {
            visible(
                principal,
                Operation::ReadCertificates { tenant: Some(&r.tenant), connection: Some(&r.connection) },
                || CaError::UnknownConnection { tenant: r.tenant.clone(), connection: r.connection.clone() },
            )?;
        }
        let keys: Vec<String> = requests.iter().filter_map(|r| r.request_key.clone()).collect();
        Ok(self.store.issued_requests(&keys).await?)
    }

    /// Refuses the batch if a request's key is blocked: revoked for key
    /// compromise, or blocked by hand, it is never certified again.
    async fn refuse_blocked_keys(&self, planned: &[Planned]) -> Result<()> {
        let csr_keys: Vec<(usize, String)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.key {
                PlannedKey::Csr(r, _) => Some((i, r.public_key.sha256_hex())),
                PlannedKey::Generate(_) | PlannedKey::Custody(..) => None,
            })
            .collect();
        if csr_keys.is_empty() {
            return Ok(());
        }
        let spkis: Vec<String> = csr_keys.iter().map(|(_, s)| s.clone()).collect();
        match self.store.blocked_keys(&spkis).await?.into_iter().next() {
            None => Ok(()),
            Some(blocked) => {
                let line = csr_keys.iter().find(|(_, s)| *s == blocked.spki_sha256).map_or(0, |(i, _)| *i);
                Err(at_line(
                    planned.len(),
                    line,
                    CaError::Policy(format!(
                        "the request's key (SPKI SHA-256 {}) is blocked ({}, {}): make a new key for this connection",
                        blocked.spki_sha256, blocked.reason, blocked.source
                    )),
                ))
            }
        }
    }

    /// Issues many certificates, each batch made durable by `sink`.
    pub(crate) async fn issue_into(
        &self,
        principal: &Principal,
        requests: Vec<IssueRequest>,
        sink: &dyn IssueSink,
        mut on_batch: impl FnMut(Vec<Issued>),
    ) -> Result<usize> {
        let active = self.active_issuer().await?;
        let now = OffsetDateTime::now_utc();
        let mut connections: HashMap<(String, String), ConnectionRecord> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            may_issue(principal, r).map_err(|e| at_line(requests.len(), i, e))?;
            let key = (r.tenant.clone(), r.connection.clone());
            if connections.contains_key(&key) {
                continue;
            }
            let found =
                self.find_connection(&r.tenant, &r.connection).await.map_err(|e| at_line(requests.len(), i, e))?;
            connections.insert(key, found);
        }

        let total = requests.len();
        let started = std::time::Instant::now();
        let planned: Vec<Result<Planned>> = {
            let active = active.clone();
            tokio::task::spawn_blocking(move || {
                par_map(&requests, |r| {
                    // Every request's connection was looked up above, or we returned.
                    let conn = &connections[&(r.tenant.clone(), r.connection.clone())];
                    plan(r, conn, &active, now)
                })
            })
            .await
            .map_err(|e| CaError::Inconsistent(format!("planning task failed: {e}")))?
        };
        let mut ok = Vec::with_capacity(total);
        for (i, p) in planned.into_iter().enumerate() {
            ok.push(p.map_err(|e| at_line(total, i, e))?);
        }
        self.refuse_blocked_keys(&ok).await?;
        // Positions are reserved only once every request passed policy.
        let first = self.store.reserve_issuance(&active.record.id, total as i64).await?;
        for (k, p) in ok.iter_mut().enumerate() {
            p.set_position(first + k as i64, self.crl_partition_size, &self.base_url, &active.record.id);
        }

        tracing::debug!(requests = total, elapsed_ms = started.elapsed().as_millis() as u64, "planned");
        let mut batches = chunk(ok, BATCH).into_iter();
        let sign = |batch: Vec<Planned>| {
            let active = active.clone();
            tokio::task::spawn_blocking(move || par_map_owned(batch, |p| sign(p, &active)))
        };
        let mut signing = batches.next().map(sign);
        let mut issued_count = 0;
        while let Some(task) = signing.take() {
            let signed = task.await.map_err(|e| CaError::Inconsistent(format!("signing task failed: {e}")))?;
            signing = batches.next().map(sign);
            let signed: Vec<Issued> = signed.into_iter().collect::<Result<_>>()?;
            let commit_started = std::time::Instant::now();
            let audit: Vec<AuditRecord> =
                signed.iter().map(|s| issue_audit(principal, &s.record, &active.record, sink.incident())).collect();
            sink.commit(self, &signed, audit).await?;
            tracing::debug!(
                certificates = signed.len(),
                commit_ms = commit_started.elapsed().as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            issued_count += signed.len();
            on_batch(signed);
        }
        Ok(issued_count)
    }

    pub(crate) async fn find_connection(&self, tenant: &str, connection: &str) -> Result<ConnectionRecord> {
        if let Some(c) = self.store.connection(tenant, connection).await? {
            return Ok(c);
        }
        if self.store.tenant(tenant).await?.is_none() {
            return Err(CaError::UnknownTenant(tenant.to_string()));
        }
        Err(CaError::UnknownConnection { tenant: tenant.to_string(), connection: connection.to_string() })
    }

    /// The active issuing CA, unsealed once per process.
    pub(crate) async fn active_issuer(&self) -> Result<Arc<ActiveIssuer>> {
        if let Some(a) = self.active.lock().map_err(|_| CaError::Inconsistent("issuer cache poisoned".into()))?.as_ref()
        {
            return Ok(a.clone());
        }
        let issuers = self.store.issuers().await?;
        let record = issuers
            .iter()
            .rev()
            .find(|i| i.role == IssuerRole::Issuing && i.status == IssuerStatus::Active)
            .cloned()
            .ok_or_else(|| CaError::Policy("no active issuing CA".into()))?;
        let mut chain = vec![record.cert_der.clone()];
        let mut parent = record.parent.clone();
        while let Some(id) = parent {
            let p = issuers
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| CaError::Inconsistent(format!("issuer {} names missing parent {id}", record.id)))?;
            chain.push(p.cert_der.clone());
            parent = p.parent.clone();
            if chain.len() > 8 {
                return Err(CaError::Inconsistent("issuer chain loops".into()));
            }
        }
        let issuer = self.ca_issuer(&record, crate::metrics::Purpose::Certificate).await?;
        let active = Arc::new(ActiveIssuer { urls: self.urls_for(&record.id), record, issuer, chain: Arc::new(chain) });
        *self.active.lock().map_err(|_| CaError::Inconsistent("issuer cache poisoned".into()))? = Some(active.clone());
        Ok(active)
    }
}

/// Whether `principal` may issue `r` (another tenant's connection answers as unknown).
pub(crate) fn may_issue(principal: &Principal, r: &IssueRequest) -> Result<()> {
    let issue = Operation::Issue {
        tenant: &r.tenant,
        connection: &r.connection,
        generated_key: matches!(r.key, KeySource::Generate(_)),
    };
    visible(principal, issue, || CaError::UnknownConnection {
        tenant: r.tenant.clone(),
        connection: r.connection.clone(),
    })
}

/// Wraps an error with its line number when the request came from a file.
fn at_line(total: usize, index: usize, e: CaError) -> CaError {
    if total == 1 { e } else { CaError::BulkLine { line: index + 1, source: Box::new(e) } }
}

/// Checks one request against its connection's policy and the profile.
pub(crate) fn plan(
    r: &IssueRequest,
    conn: &ConnectionRecord,
    active: &ActiveIssuer,
    now: OffsetDateTime,
) -> Result<Planned> {
    let profile = match r.profile {
        Some(p) => p,
        None => conn.profile,
    };
    if profile.is_ca() {
        return Err(CaError::Policy(format!("profile {profile} cannot be issued to a connection")));
    }
    let mut sans: Vec<String> = Vec::new();
    for s in &r.sans {
        let s = s.trim();
        let s = if s.parse::<std::net::IpAddr>().is_ok() || s.contains("://") {
            s.to_string()
        } else {
            s.to_ascii_lowercase()
        };
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    for s in &sans {
        crate::policy::check_wildcard_base(s)?;
        if !san_allowed(s, &conn.allowed_sans) {
            let allowed = if conn.allowed_sans.is_empty() { "none".to_string() } else { conn.allowed_sans.join(", ") };
            return Err(CaError::Policy(format!(
                "SAN {s:?} is not allowed for connection {}/{} (allowed: {allowed}; add patterns with `custos connection add ... --allow-san`)",
                conn.tenant, conn.name
            )));
        }
    }
    if profile == Profile::Server && sans.is_empty() {
        return Err(CaError::Policy("a server certificate needs at least one SAN (--san)".into()));
    }
    let max = i64::from(profile.max_validity_days()) * 86_400;
    let validity = match (r.validity_secs, conn.validity_days) {
        (Some(v), _) => v,
        (None, Some(days)) => days * 86_400,
        (None, None) => i64::from(profile.default_validity_days()) * 86_400,
    };
    if validity <= 0 || validity > max {
        return Err(CaError::Policy(format!(
            "a lifetime of {} days is outside the {profile} profile's cap of {} days",
            validity / 86_400,
            profile.max_validity_days()
        )));
    }
    let not_before = now - time::Duration::minutes(1);
    let not_after = now + time::Duration::seconds(validity);
    if not_after > active.issuer.not_after() {
        return Err(CaError::Policy(format!(
            "the certificate would outlive its issuer ({} ends {})",
            active.record.id,
            active.issuer.not_after()
        )));
    }
    let key = match &r.key {
        KeySource::Csr(bytes) => PlannedKey::Csr(CertificateRequest::parse(bytes)?, "csr"),
        KeySource::AcmeCsr(bytes) => PlannedKey::Csr(CertificateRequest::parse(bytes)?, "acme"),
        KeySource::Generate(alg) => PlannedKey::Generate(match alg {
            Some(a) => *a,
            None => conn.key_algorithm.parse()?,
        }),
        KeySource::Custody(public, algorithm) => PlannedKey::Custody(public.clone(), *algorithm),
    };
    let common_name = match profile {
        Profile::Server => sans
            .iter()
            .find(|s| s.parse::<std::net::IpAddr>().is_err() && !s.contains("://") && s.len() <= 64)
            .cloned()
            .unwrap_or_else(|| conn.name.clone()),
        _ => conn.name.clone(),
    };
    let spec = CertificateSpec {
        serial: Serial::random()?,
        profile,
        common_name,
        organization: Some(conn.tenant.clone()),
        sans,
        not_before,
        not_after,
        urls: Some(active.urls.clone()),
    };
    // Check now so a bad request fails in this pass, not mid-way; the
    // template itself is built once, when it is signed.
    spec.check()?;
    Ok(Planned {
        spec,
        partition: 0,
        tenant: conn.tenant.clone(),
        connection: conn.name.clone(),
        key,
        request_key: r.request_key.clone(),
    })
}

/// Signs one planned certificate.
pub(crate) fn sign(p: Planned, active: &ActiveIssuer) -> Result<Issued> {
    let (public, algorithm, leaf, origin) = match p.key {
        PlannedKey::Csr(csr, origin) => (csr.public_key, csr.algorithm, None, origin),
        PlannedKey::Generate(alg) => {
            let leaf = LeafKey::generate(alg)?;
            (leaf.public_key().clone(), alg, Some(leaf), "generated")
        }
        PlannedKey::Custody(public, alg) => (public, alg, None, "custody"),
    };
    let profile = p.spec.profile;
    let sans = p.spec.sans.clone();
    let signed = CertificateTemplate::new(p.spec)?.sign(&public, algorithm, &active.issuer)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Ok(Issued {
        record: CertificateRecord {
            serial: signed.serial.to_hex(),
            issuer: active.record.id.clone(),
            tenant: p.tenant,
            connection: p.connection,
            profile,
            subject: signed.subject,
            sans,
            key_algorithm: algorithm.to_string(),
            key_origin: origin.to_string(),
            spki_sha256: signed.spki_sha256,
            not_before: signed.not_before.unix_timestamp(),
            not_after: signed.not_after.unix_timestamp(),
            der: signed.der,
            status: CertificateStatus::Valid,
            revoked_at: None,
            revocation_reason: None,
            invalidity_date: None,
            replaced_by: None,
            crl_partition: p.partition,
            created_at: now,
        },
        chain: active.chain.clone(),
        key: leaf,
        request_key: p.request_key,
    })
}

fn chunk<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Maps `f` over `items` on every core, keeping order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let per = items.len().div_ceil(threads()).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(per).map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>())).collect();
        // A panic in `f` is a bug, not input: let it surface.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// Maps `f` over owned `items` on every core, keeping order.
pub(crate) fn par_map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let per = items.len().div_ceil(threads()).max(1);
    let parts = chunk(items, per);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            parts.into_iter().map(|c| s.spawn(|| c.into_iter().map(&f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

pub(crate) fn issue_audit(
    principal: &Principal,
    c: &CertificateRecord,
    issuer: &IssuerRecord,
    incident: Option<&str>,
) -> AuditRecord {
    let mut details = json!({
        "serial": c.serial, "issuer": c.issuer, "key": issuer.key_id, "tenant": c.tenant,
        "connection": c.connection, "profile": c.profile, "sans": c.sans, "spki_sha256": c.spki_sha256,
        "key_origin": c.key_origin, "not_after": c.not_after,
    });
    if let Some(incident) = incident {
        details["incident"] = json!(incident);
    }
    audit_record(principal, "certificate.issue", format!("cert:{}", c.serial), details)
}
