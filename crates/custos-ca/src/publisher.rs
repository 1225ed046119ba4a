//! Publishing status: OCSP answers from an in-memory cache of signed
//! responses, and the current CRL of each issuer.
//!
//! Freshness comes from the revocation feed: [`StatusPublisher::poll`] (run
//! every 200 ms by `serve`) reads revocations committed by any process since
//! the last poll, drops and re-signs those serials' responses, and marks the
//! affected CRLs for [`StatusPublisher::publish_crls`], which `serve` runs in
//! its own loop so that signing a large CRL never holds OCSP back. A revoke is therefore answered within one poll interval
//! plus one signature, across processes.
//!
//! Signing oracles are bounded: a response for a serial we never issued
//! (`unknown`) and a response that must be signed afresh (a nonce, or several
//! certificates in one request) each draw from a token bucket. When the
//! unknown bucket is empty the answer is the unsigned `tryLater`; when the
//! fresh bucket is empty a single-certificate request gets the cached response
//! without its nonce (RFC 8954 allows a responder to omit it). Cached unknown
//! responses are capped at [`MAX_CACHED_UNKNOWN`] entries.
//!
//! Every response signature reaches the audit log as an `ocsp.sign` batch
//! entry before the response leaves: each signature is recorded in a journal
//! under the current epoch, and [`StatusPublisher::ocsp`] releases an answer
//! only once an `ocsp.sign` commit has covered its epoch. The first request
//! that waits writes the whole journal (group commit: every signature made
//! meanwhile, by any request, goes in the same transaction), the others find
//! their epoch covered. Ahead-of-demand signatures (presigning, refreshing,
//! polling) are named by serial; on-demand ones are counted and hashed. If
//! the log cannot be written, signing on demand stops at once: a
//! single-certificate request gets its pre-signed (logged) response without
//! its nonce, anything else `tryLater`, and nothing signed while the log
//! refused leaves custos until it is logged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use custos_pki::ocsp::{
    CertId, CertStatus, HashAlgorithm, IssuerHashes, OcspRequest, OcspRequestError, Responder, ResponseStatus,
    SingleResponse, error_response, sign_response,
};
use custos_pki::{Reason, Serial};
use custos_types::{CertificateStatus, IssuerStatus};
use time::OffsetDateTime;

use crate::revocation::{Crl, ResponderKey, from_unix};
use crate::{Ca, CaError, Principal, Result, audit_record};
use custos_pki::crl::RevokedEntry;

/// How long a signed OCSP response says it is good for.
pub const RESPONSE_LIFETIME: time::Duration = time::Duration::hours(1);
/// A cached response is re-signed once it is older than this.
const RESPONSE_REFRESH_AFTER: time::Duration = time::Duration::minutes(30);
/// At most this many cached `unknown` responses are kept.
pub const MAX_CACHED_UNKNOWN: usize = 50_000;
/// Signatures per second for serials never issued, and the burst allowed.
const UNKNOWN_PER_SECOND: f64 = 500.0;
/// Fresh signatures per second for nonces and multi-certificate requests.
const FRESH_PER_SECOND: f64 = 5_000.0;
/// Signatures allowed to wait for the audit log before ahead-of-demand
/// signing stops too (on-demand signing stops at the first failed write).
pub const MAX_UNLOGGED_SIGNATURES: usize = 100_000;
/// How long a response may wait for the commit that logs its signature.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Serials named per `ocsp.sign` entry, which keeps entries well below the 64 KiB bound.
const SERIALS_PER_ENTRY: usize = 500;
/// Responses counted per on-demand `ocsp.sign` entry (one hash over all of them).
const RESPONSES_PER_DEMAND_ENTRY: usize = 100_000;
/// A CRL is re-signed once it is older than this, even without changes.
const CRL_REFRESH_AFTER: time::Duration = time::Duration::minutes(30);

/// What the OCSP endpoint sends back.
#[derive(Clone, Debug)]
pub struct OcspAnswer {
    /// The DER `OCSPResponse`.
    pub der: Arc<Vec<u8>>,
    /// thisUpdate and nextUpdate of a signed answer, for HTTP caching headers.
    pub validity: Option<(OffsetDateTime, OffsetDateTime)>,
    /// A short tag naming this exact response (hex of its SHA-256's first 16
    /// bytes), computed once when it is signed rather than per request.
    pub tag: Option<Arc<str>>,
    /// The journal epoch its signature was recorded in (0: none); it is
    /// released once the log covers that epoch.
    epoch: u64,
    /// `successful`, or the OCSP error status (`malformedRequest`,
    /// `internalError`, `tryLater`, `unauthorized`): the metrics' outcome label.
    pub outcome: &'static str,
    /// Whether it came from the cache of signed responses (no signature made).
    pub cached: bool,
}

impl OcspAnswer {
    fn error(status: ResponseStatus) -> OcspAnswer {
        let outcome = match status {
            ResponseStatus::MalformedRequest => "malformedRequest",
            ResponseStatus::InternalError => "internalError",
            ResponseStatus::TryLater => "tryLater",
            ResponseStatus::Unauthorized => "unauthorized",
        };
        OcspAnswer {
            der: Arc::new(error_response(status)),
            validity: None,
            tag: None,
            epoch: 0,
            outcome,
            cached: false,
        }
    }
}

struct IssuerEntry {
    id: String,
    hashes: IssuerHashes,
    responder: ResponderKey,
    /// The responder key's id, as the audit log names it.
    responder_key: String,
    /// The CA certificates this issuer signed (for a root): serial, and when
    /// it was revoked if that CA was compromised.
    children: HashMap<Serial, Option<i64>>,
}

struct Cached {
    issuer: String,
    id: CertId,
    answer: OcspAnswer,
    known: bool,
}

impl Cached {
    /// When the cached answer was signed.
    fn signed_at(&self) -> Option<OffsetDateTime> {
        self.answer.validity.map(|(this_update, _)| this_update)
    }
}

/// Signed responses by serial, and every serial seen revoked since start.
///
/// Both live under one lock: a request that read `good` just before a revoke
/// committed must not cache that `good` after the poll invalidated the serial.
/// Revocation is final, so a serial in `revoked` never gets a `good` cached.
#[derive(Default)]
struct CacheState {
    entries: HashMap<Serial, Vec<Arc<Cached>>>,
    revoked: HashSet<Serial>,
}

/// A token bucket.
struct Budget {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Budget {
    fn new(rate: f64) -> Mutex<Budget> {
        Mutex::new(Budget { tokens: rate, rate, last: Instant::now() })
    }
}

fn take(budget: &Mutex<Budget>) -> bool {
    let Ok(mut b) = budget.lock() else {
        return false;
    };
    let now = Instant::now();
    b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.rate).min(b.rate);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// OCSP responses and CRLs for every active issuer.
pub struct StatusPublisher {
    ca: Arc<Ca>,
    issuers: RwLock<Vec<Arc<IssuerEntry>>>,
    cache: RwLock<CacheState>,
    cached_unknown: AtomicUsize,
    unknown_budget: Mutex<Budget>,
    fresh_budget: Mutex<Budget>,
    last_seq: AtomicI64,
    crls: RwLock<HashMap<(String, i64), Arc<Crl>>>,
    dirty_crls: Mutex<HashSet<(String, i64)>>,
    /// Each partition's revoked certificates, read from the store once and
    /// then kept current from the feed, so a CRL after a revocation costs an
    /// encoding and a signature, not a re-read of every revoked row.
    revoked_lists: Mutex<HashMap<(String, i64), RevokedList>>,
    /// Signatures made but not yet in the audit log.
    journal: Mutex<Journal>,
    /// How many signatures may wait for the audit log before signing stops.
    max_unlogged: AtomicUsize,
    /// Every journal epoch up to this one is in the audit log.
    durable: AtomicU64,
    /// One journal write at a time: waiters queue here and find their epoch covered.
    flushing: tokio::sync::Mutex<()>,
    /// The last journal write failed: no new signature on demand until one succeeds.
    log_failing: AtomicBool,
    /// When the revocation feed was last read without error (Unix seconds).
    feed_read_at: AtomicI64,
}

/// What this node's publisher holds, for `/metrics` and the console.
#[derive(Clone, Debug)]
pub struct PublisherStatus {
    /// The revocation feed position applied here.
    pub feed_position: i64,
    /// When the feed was last read without error (Unix seconds; 0 never).
    pub feed_read_at: i64,
    /// OCSP signatures not yet in the audit log.
    pub unlogged_signatures: usize,
    /// The CRLs served here, by issuer and partition.
    pub crls: Vec<CrlStatus>,
}

/// One CRL this node serves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CrlStatus {
    /// The issuer's id.
    pub issuer: String,
    /// The partition number.
    pub partition: i64,
    /// thisUpdate (Unix seconds).
    pub this_update: i64,
    /// nextUpdate (Unix seconds).
    pub next_update: i64,
    /// DER size in bytes.
    pub bytes: usize,
    /// Revoked certificates listed.
    pub entries: usize,
}

/// (issuer id, responder key id): whose signatures a batch holds.
type BatchSigner = (String, String);
/// (serial hex, SHA-256 of the response that answered it).
type Signed = (String, [u8; 32]);

/// OCSP signatures waiting for their `ocsp.sign` audit entry, per issuer and responder key.
#[derive(Default)]
struct Journal {
    /// Signed ahead of demand (pre-signing, refresh, revocations): named by
    /// serial, bounded by the certificates issued.
    batches: HashMap<BatchSigner, Vec<Signed>>,
    /// Signed because a client asked (a nonce, several certificates, a cache
    /// miss, an unknown serial): counted and hashed, never named, so that
    /// clients cannot grow the log by a serial per request.
    demand: HashMap<BatchSigner, Vec<[u8; 32]>>,
    pending: usize,
    /// The epoch signatures recorded now belong to; a write takes the
    /// journal and moves on to the next epoch.
    epoch: u64,
}

/// The revoked certificates of one CRL partition.
#[derive(Default)]
struct RevokedList {
    entries: Vec<RevokedEntry>,
    serials: HashSet<Serial>,
    /// Whether the store's rows were merged in. Until then the list holds
    /// only what the feed brought, and the next CRL reads the store first.
    loaded: bool,
}

impl RevokedList {
    /// Adds an entry unless its serial is already listed (a revocation can
    /// reach both the start-up read and the feed).
    fn add(&mut self, entry: RevokedEntry) {
        if self.serials.insert(entry.serial.clone()) {
            self.entries.push(entry);
        }
    }
}

impl StatusPublisher {
    /// Loads every issuer, makes sure each has a responder, and signs the first CRLs.
    pub async fn start(ca: Arc<Ca>) -> Result<StatusPublisher> {
        let last_seq = ca.store.last_revocation().await?;
        let publisher = StatusPublisher {
            ca,
            issuers: RwLock::new(Vec::new()),
            cache: RwLock::new(CacheState::default()),
            cached_unknown: AtomicUsize::new(0),
            unknown_budget: Budget::new(UNKNOWN_PER_SECOND),
            fresh_budget: Budget::new(FRESH_PER_SECOND),
            last_seq: AtomicI64::new(last_seq),
            crls: RwLock::new(HashMap::new()),
            dirty_crls: Mutex::new(HashSet::new()),
            revoked_lists: Mutex::new(HashMap::new()),
            journal: Mutex::new(Journal { epoch: 1, ..Journal::default() }),
            max_unlogged: AtomicUsize::new(MAX_UNLOGGED_SIGNATURES),
            durable: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            log_failing: AtomicBool::new(false),
            feed_read_at: AtomicI64::new(0),
        };
        publisher.reload_issuers().await?;
        let ids: Vec<String> = publisher.issuer_entries().iter().map(|i| i.id.clone()).collect();
        for id in ids {
            for partition in 0..publisher.ca.crl_partitions(&id).await? {
                publisher.regenerate_crl(&id, partition).await?;
            }
        }
        Ok(publisher)
    }

    fn issuer_entries(&self) -> Vec<Arc<IssuerEntry>> {
        self.issuers.read().map(|i| i.clone()).unwrap_or_default()
    }

    /// Re-reads the issuers and renews responders that are close to expiry.
    pub async fn reload_issuers(&self) -> Result<()> {
        let records = self.ca.issuers(&Principal::System).await?;
        let mut entries = Vec::new();
        // Compromised CAs stay served: their last responder answers `revoked`
        // for what they issued, and their final CRL is published as signed.
        for r in records.iter().filter(|r| r.status == IssuerStatus::Active || r.status == IssuerStatus::Compromised) {
            let mut children = HashMap::new();
            for child in records.iter().filter(|c| c.parent.as_deref() == Some(&r.id)) {
                children.insert(custos_pki::inspect::certificate_facts(&child.cert_der)?.serial, child.revoked_at);
            }
            let responder = match self.ca.responder(&Principal::System, &r.id).await {
                Ok(responder) => responder,
                Err(e) if r.status != IssuerStatus::Active => {
                    tracing::warn!(issuer = %r.id, error = %e, "not answering OCSP for a compromised CA");
                    continue;
                }
                Err(e) => return Err(e),
            };
            entries.push(Arc::new(IssuerEntry {
                id: r.id.clone(),
                hashes: IssuerHashes::from_certificate(&r.cert_der)?,
                responder_key: responder.signer.public_key().key_id().to_string(),
                responder,
                children,
            }));
        }
        if let Ok(mut w) = self.issuers.write() {
            *w = entries;
        }
        Ok(())
    }

    /// Answers one DER OCSP request. Never fails: problems become OCSP error statuses.
    pub async fn ocsp(&self, request: &[u8]) -> OcspAnswer {
        match self.answer(request).await {
            Ok(a) => match self.until_logged(a.epoch).await {
                Ok(()) => a,
                // Not released: a single certificate still gets its pre-signed,
                // logged response (without the nonce), anything else tryLater.
                Err(status) => self.logged_fallback(request).unwrap_or_else(|| OcspAnswer::error(status)),
            },
            Err(status) => OcspAnswer::error(status),
        }
    }

    /// The cached response for a one-certificate request, if its signature is already logged.
    fn logged_fallback(&self, request: &[u8]) -> Option<OcspAnswer> {
        let req = OcspRequest::parse(request).ok()?;
        let [id] = &req.certs[..] else { return None };
        let hit = self.lookup(id, OffsetDateTime::now_utc())?;
        (self.durable.load(Ordering::Acquire) >= hit.epoch).then_some(hit)
    }

    /// Waits until the audit log covers `epoch`, writing the journal itself
    /// if no one else is (group commit). `tryLater` if the log cannot be
    /// written within [`DURABLE_WAIT`]: the signature then stays unreleased.
    async fn until_logged(&self, epoch: u64) -> std::result::Result<(), ResponseStatus> {
        if self.durable.load(Ordering::Acquire) >= epoch {
            return Ok(());
        }
        let write = async {
            loop {
                let _turn = self.flushing.lock().await;
                if self.durable.load(Ordering::Acquire) >= epoch {
                    return Ok(());
                }
                if let Err(e) = self.flush_in_turn().await {
                    tracing::error!(error = %e, "the audit log refused OCSP signatures; not releasing them");
                    return Err(ResponseStatus::TryLater);
                }
            }
        };
        tokio::time::timeout(DURABLE_WAIT, write).await.map_err(|_| ResponseStatus::TryLater)?
    }

    async fn answer(&self, request: &[u8]) -> std::result::Result<OcspAnswer, ResponseStatus> {
        let req = OcspRequest::parse(request).map_err(|e| match e {
            OcspRequestError::Malformed(_) => ResponseStatus::MalformedRequest,
            OcspRequestError::UnsupportedHash => ResponseStatus::Unauthorized,
        })?;
        let issuers = self.issuer_entries();
        let mut issuer: Option<Arc<IssuerEntry>> = None;
        for id in &req.certs {
            let found = issuers.iter().find(|i| i.hashes.matches(id)).ok_or(ResponseStatus::Unauthorized)?;
            // One response has one signer, authorized for one issuer.
            if issuer.as_ref().is_some_and(|i| i.id != found.id) {
                return Err(ResponseStatus::Unauthorized);
            }
            issuer = Some(found.clone());
        }
        let issuer = issuer.ok_or(ResponseStatus::MalformedRequest)?;
        let now = OffsetDateTime::now_utc();
        if req.certs.len() == 1 && (req.nonce.is_none() || !take(&self.fresh_budget)) {
            return self.cached(&issuer, &req.certs[0], now).await;
        }
        if req.certs.len() > 1 && !take(&self.fresh_budget) {
            return Err(ResponseStatus::TryLater);
        }
        let mut statuses = Vec::with_capacity(req.certs.len());
        for id in &req.certs {
            let status = match self.status(&issuer, &id.serial).await {
                Ok(status) => status,
                // The database is unreachable: a single certificate is still
                // answered from the pre-signed set (without the nonce) until nextUpdate.
                Err(_) if req.certs.len() == 1 => return self.cached(&issuer, id, now).await,
                Err(_) => return Err(ResponseStatus::InternalError),
            };
            if status == CertStatus::Unknown && !take(&self.unknown_budget) {
                return Err(ResponseStatus::TryLater);
            }
            statuses.push(status);
        }
        let singles: Vec<SingleResponse<'_>> = req
            .certs
            .iter()
            .zip(statuses)
            .map(|(id, status)| SingleResponse {
                cert_id: &id.der,
                status,
                this_update: now,
                next_update: now + RESPONSE_LIFETIME,
            })
            .collect();
        let serials: Vec<&Serial> = req.certs.iter().map(|c| &c.serial).collect();
        match self.sign(&issuer, &singles, &serials, req.nonce.as_deref(), now, true) {
            // Signing has stopped (the audit log is not accepting entries): a
            // single certificate is still answered from the pre-signed set,
            // without the nonce, as when the fresh budget is spent.
            Err(ResponseStatus::TryLater) if req.certs.len() == 1 => self.cached(&issuer, &req.certs[0], now).await,
            other => other,
        }
    }

    fn sign(
        &self,
        issuer: &IssuerEntry,
        singles: &[SingleResponse<'_>],
        serials: &[&Serial],
        nonce: Option<&[u8]>,
        now: OffsetDateTime,
        on_demand: bool,
    ) -> std::result::Result<OcspAnswer, ResponseStatus> {
        // The journal is locked to check and to record, never across the
        // signature itself: signing runs on every core at once.
        let full = self.journal.lock().map_err(|_| ResponseStatus::InternalError)?.pending
            >= self.max_unlogged.load(Ordering::Relaxed);
        if on_demand && self.log_failing.load(Ordering::Acquire) {
            return Err(ResponseStatus::TryLater);
        }
        if full {
            tracing::error!("the audit log is not accepting OCSP signing entries; not signing more");
            return Err(ResponseStatus::TryLater);
        }
        let responder =
            Responder { signer: issuer.responder.signer.as_ref(), certificate_der: &issuer.responder.certificate_der };
        let der = sign_response(&responder, singles, nonce, now).map_err(|e| {
            tracing::error!(error = %e, issuer = %issuer.id, "signing an OCSP response failed");
            ResponseStatus::InternalError
        })?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let mut journal = self.journal.lock().map_err(|_| ResponseStatus::InternalError)?;
        let signer = (issuer.id.clone(), issuer.responder_key.clone());
        if on_demand {
            journal.demand.entry(signer).or_default().push(hash);
        } else {
            journal.batches.entry(signer).or_default().extend(serials.iter().map(|s| (s.to_hex(), hash)));
        }
        journal.pending += 1;
        let epoch = journal.epoch;
        drop(journal);
        let tag: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(OcspAnswer {
            der: Arc::new(der),
            validity: Some((now, now + RESPONSE_LIFETIME)),
            tag: Some(tag.into()),
            epoch,
            outcome: "successful",
            cached: false,
        })
    }

    /// The cached response for one CertID, signed (and cached) if missing or old.
    async fn cached(
        &self,
        issuer: &IssuerEntry,
        id: &CertId,
        now: OffsetDateTime,
    ) -> std::result::Result<OcspAnswer, ResponseStatus> {
        if let Some(hit) = self.lookup(id, now) {
            return Ok(hit);
        }
        let status = self.status(issuer, &id.serial).await.map_err(|_| ResponseStatus::InternalError)?;
        if status == CertStatus::Unknown && !take(&self.unknown_budget) {
            return Err(ResponseStatus::TryLater);
        }
        self.sign_and_cache(issuer, id, status, now, true)
    }

    /// Signs the answer for one CertID and caches it.
    fn sign_and_cache(
        &self,
        issuer: &IssuerEntry,
        id: &CertId,
        status: CertStatus,
        now: OffsetDateTime,
        on_demand: bool,
    ) -> std::result::Result<OcspAnswer, ResponseStatus> {
        let single =
            SingleResponse { cert_id: &id.der, status, this_update: now, next_update: now + RESPONSE_LIFETIME };
        let answer = self.sign(issuer, &[single], &[&id.serial], None, now, on_demand)?;
        self.store_cached(&issuer.id, id, answer.clone(), status);
        Ok(answer)
    }

    fn lookup(&self, id: &CertId, now: OffsetDateTime) -> Option<OcspAnswer> {
        let cache = self.cache.read().ok()?;
        let hit = cache.entries.get(&id.serial)?.iter().find(|c| c.id.der == id.der)?;
        (now - hit.signed_at()? < RESPONSE_REFRESH_AFTER).then(|| OcspAnswer { cached: true, ..hit.answer.clone() })
    }

    fn store_cached(&self, issuer: &str, id: &CertId, answer: OcspAnswer, status: CertStatus) {
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        if status == CertStatus::Good && cache.revoked.contains(&id.serial) {
            // Read before the revoke committed; the poll has moved on.
            return;
        }
        let known = status != CertStatus::Unknown;
        if !known && self.cached_unknown.fetch_add(1, Ordering::Relaxed) >= MAX_CACHED_UNKNOWN {
            // Cheap and bounded: forget every cached unknown and start over.
            cache.entries.retain(|_, v| {
                v.retain(|c| c.known);
                !v.is_empty()
            });
            self.cached_unknown.store(1, Ordering::Relaxed);
        }
        let entries = cache.entries.entry(id.serial.clone()).or_default();
        entries.retain(|c| c.id.der != id.der);
        entries.push(Arc::new(Cached { issuer: issuer.to_string(), id: id.clone(), answer, known }));
    }

    /// Sets how many signatures may wait for an audit log that cannot be
    /// written before the responder stops signing (default
    /// [`MAX_UNLOGGED_SIGNATURES`]; with 0 nothing new is signed).
    pub fn set_max_unlogged_signatures(&self, max: usize) {
        self.max_unlogged.store(max, Ordering::Relaxed);
    }

    /// The feed position, CRLs and signing backlog of this node.
    pub fn snapshot(&self) -> PublisherStatus {
        let mut crls: Vec<_> = self
            .crls
            .read()
            .map(|m| {
                m.values()
                    .map(|c| CrlStatus {
                        issuer: c.issuer.clone(),
                        partition: c.partition,
                        this_update: c.this_update.unix_timestamp(),
                        next_update: c.next_update.unix_timestamp(),
                        bytes: c.der.len(),
                        entries: c.entries,
                    })
                    .collect()
            })
            .unwrap_or_default();
        crls.sort();
        PublisherStatus {
            feed_position: self.last_seq.load(Ordering::Acquire),
            feed_read_at: self.feed_read_at.load(Ordering::Acquire),
            unlogged_signatures: self.unlogged_signatures(),
            crls,
        }
    }

    /// Signatures made and not yet written to the audit log.
    pub fn unlogged_signatures(&self) -> usize {
        self.journal.lock().map(|j| j.pending).unwrap_or(usize::MAX)
    }

    /// Writes the signatures made since the last call to the audit log as
    /// `ocsp.sign` entries; on failure they stay queued. Returns how many signatures were logged.
    pub async fn flush_signing_log(&self) -> Result<usize> {
        let _turn = self.flushing.lock().await;
        self.flush_in_turn().await
    }

    /// [`flush_signing_log`](Self::flush_signing_log) with `flushing` held: writes are
    /// serialized, so an epoch is marked durable only after every earlier one committed.
    async fn flush_in_turn(&self) -> Result<usize> {
        let taken = match self.journal.lock() {
            Ok(mut j) => {
                let next = j.epoch + 1;
                std::mem::replace(&mut *j, Journal { epoch: next, ..Journal::default() })
            }
            Err(_) => return Err(CaError::Inconsistent("OCSP signing journal poisoned".into())),
        };
        if taken.pending == 0 {
            self.durable.fetch_max(taken.epoch, Ordering::AcqRel);
            return Ok(0);
        }
        let mut records = Vec::new();
        for ((issuer, key), signed) in &taken.batches {
            for chunk in signed.chunks(SERIALS_PER_ENTRY) {
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                chunk.iter().for_each(|(_, h)| ctx.update(h));
                let serials: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
                records.push(audit_record(
                    &Principal::System,
                    "ocsp.sign",
                    format!("responder:{issuer}"),
                    serde_json::json!({
                        "issuer": issuer, "key": key, "serials": serials, "responses": chunk.len(),
                        "responses_sha256": hex::encode(ctx.finish()),
                    }),
                ));
            }
        }
        for ((issuer, key), hashes) in &taken.demand {
            for chunk in hashes.chunks(RESPONSES_PER_DEMAND_ENTRY) {
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                chunk.iter().for_each(|h| ctx.update(h));
                records.push(audit_record(
                    &Principal::System,
                    "ocsp.sign",
                    format!("responder:{issuer}"),
                    serde_json::json!({
                        "issuer": issuer, "key": key, "on_demand": true, "responses": chunk.len(),
                        "responses_sha256": hex::encode(ctx.finish()),
                    }),
                ));
            }
        }
        match self.ca.store.append_audit(&records).await {
            Ok(_) => {
                self.durable.fetch_max(taken.epoch, Ordering::AcqRel);
                self.log_failing.store(false, Ordering::Release);
                Ok(taken.pending)
            }
            Err(e) => {
                // Re-queued in the current epoch: released by the next write that succeeds.
                self.log_failing.store(true, Ordering::Release);
                if let Ok(mut j) = self.journal.lock() {
                    for (k, mut v) in taken.batches {
                        j.batches.entry(k).or_default().append(&mut v);
                    }
                    for (k, mut v) in taken.demand {
                        j.demand.entry(k).or_default().append(&mut v);
                    }
                    j.pending += taken.pending;
                }
                Err(e.into())
            }
        }
    }

    /// Signs responses ahead of demand for the newest `limit` certificates of
    /// every issuer (SHA-1 CertIDs, what most clients send), so that they are
    /// answered from memory from the first request. Returns how many.
    pub async fn presign(&self, limit: i64) -> Result<usize> {
        let mut count = 0;
        for issuer in self.issuer_entries() {
            let filter = custos_store::CertificateFilter {
                issuer: Some(issuer.id.clone()),
                limit: Some(limit),
                ..Default::default()
            };
            for record in self.ca.store.certificates(&filter).await? {
                let serial: Serial = record.serial.parse()?;
                let id = issuer.hashes.cert_id(HashAlgorithm::Sha1, &serial);
                let now = OffsetDateTime::now_utc();
                if self.lookup(&id, now).is_some() {
                    continue;
                }
                if self.sign_and_cache(&issuer, &id, status_of(&record)?, now, false).is_err() {
                    continue;
                }
                count += 1;
                if count % 1024 == 0 {
                    // Pre-signing is background work: let requests through.
                    tokio::task::yield_now().await;
                }
            }
        }
        self.flush_signing_log().await?;
        Ok(count)
    }

    /// Re-signs cached answers for issued certificates before they age out,
    /// so that requests for them never wait on a signature. Returns how many.
    pub async fn refresh(&self) -> Result<usize> {
        let now = OffsetDateTime::now_utc();
        let horizon = RESPONSE_REFRESH_AFTER - time::Duration::minutes(5);
        let due: Vec<Arc<Cached>> = self
            .cache
            .read()
            .map(|c| {
                c.entries
                    .values()
                    .flatten()
                    .filter(|e| e.known && e.signed_at().is_some_and(|t| now - t > horizon))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let issuers = self.issuer_entries();
        let mut count = 0;
        for entry in due {
            let Some(issuer) = issuers.iter().find(|i| i.id == entry.issuer) else { continue };
            let status = self.status(issuer, &entry.id.serial).await?;
            if self.sign_and_cache(issuer, &entry.id, status, now, false).is_ok() {
                count += 1;
            }
        }
        self.flush_signing_log().await?;
        Ok(count)
    }

    async fn status(&self, issuer: &IssuerEntry, serial: &Serial) -> Result<CertStatus> {
        if let Some(revoked_at) = issuer.children.get(serial) {
            return Ok(match revoked_at {
                None => CertStatus::Good,
                Some(t) => CertStatus::Revoked { time: from_unix(*t)?, reason: Some(Reason::KeyCompromise) },
            });
        }
        let Some(record) = self.ca.store.certificate(&serial.to_hex()).await? else {
            return Ok(CertStatus::Unknown);
        };
        if record.issuer != issuer.id {
            return Ok(CertStatus::Unknown);
        }
        status_of(&record)
    }

    /// Applies revocations committed since the last poll: their cached
    /// responses are re-signed now and their issuers' CRLs regenerated.
    /// Then logs the OCSP signatures made since the last poll; a log that
    /// cannot be written does not hold revocations back (signing stops at
    /// [`MAX_UNLOGGED_SIGNATURES`] instead). Returns how many revocations were applied.
    pub async fn poll(&self) -> Result<usize> {
        let applied = self.apply_revocations().await;
        if let Err(e) = self.flush_signing_log().await {
            tracing::error!(error = %e, "writing OCSP signatures to the audit log failed; they stay queued");
        }
        applied
    }

    async fn apply_revocations(&self) -> Result<usize> {
        let from = self.last_seq.load(Ordering::Acquire);
        let events = self.ca.store.revocations_since(from, 100_000).await?;
        self.feed_read_at.store(OffsetDateTime::now_utc().unix_timestamp(), Ordering::Release);
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let issuers = self.issuer_entries();
        let now = OffsetDateTime::now_utc();
        let mut changed = HashSet::new();
        let mut reload = false;
        for e in &events {
            let serial: Serial = e.serial.parse()?;
            let cached_ids: Vec<CertId> = {
                let mut cache = self.cache.write().map_err(|_| CaError::Inconsistent("OCSP cache poisoned".into()))?;
                cache.revoked.insert(serial.clone());
                cache.entries.remove(&serial).unwrap_or_default().iter().map(|c| c.id.clone()).collect()
            };
            let key = (e.issuer.clone(), e.crl_partition);
            changed.insert(key.clone());
            // One read of the row gives both the OCSP status and the CRL entry.
            let Some(record) = self.ca.store.certificate(&e.serial).await? else {
                // Not a subscriber certificate: a CA its parent revoked. Its
                // parent's list is re-read (it lists compromised CAs) and the
                // issuers reloaded so OCSP answers `revoked` for it.
                if let Ok(mut lists) = self.revoked_lists.lock()
                    && let Some(list) = lists.get_mut(&key)
                {
                    list.loaded = false;
                }
                reload = true;
                continue;
            };
            let entry = revoked_entry(serial.clone(), &record)?;
            let status = status_of(&record)?;
            // Always recorded, loaded or not: a revocation that commits while a
            // partition's first read runs must land in one or the other.
            if let Ok(mut lists) = self.revoked_lists.lock() {
                lists.entry(key).or_default().add(entry);
            }
            if let Some(issuer) = issuers.iter().find(|i| i.id == e.issuer) {
                // Re-sign what clients were being served, or else the SHA-1
                // CertID most clients send, so the next request is a cache hit.
                let ids = if cached_ids.is_empty() {
                    vec![issuer.hashes.cert_id(HashAlgorithm::Sha1, &serial)]
                } else {
                    cached_ids
                };
                for id in ids {
                    if let Err(status) = self.sign_and_cache(issuer, &id, status, now, false) {
                        tracing::warn!(serial = %serial, ?status, "re-signing a revoked serial failed");
                    }
                }
            }
        }
        self.last_seq.store(last, Ordering::Release);
        if reload {
            self.reload_issuers().await?;
        }
        if let Ok(mut dirty) = self.dirty_crls.lock() {
            dirty.extend(changed);
        }
        Ok(events.len())
    }

    /// Re-signs the CRLs that revocations touched since the last call, and
    /// those past half their life. Runs apart from [`poll`](Self::poll) so that
    /// a large CRL never delays OCSP; bursts of revocations coalesce into one
    /// CRL per call. Returns how many CRLs were signed.
    pub async fn publish_crls(&self) -> Result<usize> {
        let now = OffsetDateTime::now_utc();
        let mut due: HashSet<(String, i64)> =
            self.dirty_crls.lock().map(|mut d| std::mem::take(&mut *d)).unwrap_or_default();
        if let Ok(c) = self.crls.read() {
            due.extend(
                c.values().filter(|c| now - c.this_update > CRL_REFRESH_AFTER).map(|c| (c.issuer.clone(), c.partition)),
            );
        }
        // A partition opened by issuance since the last call gets its first CRL.
        for issuer in self.issuer_entries() {
            let partitions = self.ca.crl_partitions(&issuer.id).await?;
            if let Ok(c) = self.crls.read() {
                due.extend(
                    (0..partitions)
                        .filter(|p| !c.contains_key(&(issuer.id.clone(), *p)))
                        .map(|p| (issuer.id.clone(), p)),
                );
            }
        }
        let count = due.len();
        for id in due {
            if let Err(e) = self.regenerate_crl(&id.0, id.1).await {
                // Try again on the next call rather than lose the change.
                if let Ok(mut d) = self.dirty_crls.lock() {
                    d.insert(id);
                }
                return Err(e);
            }
        }
        Ok(count)
    }

    async fn regenerate_crl(&self, issuer: &str, partition: i64) -> Result<()> {
        let key = (issuer.to_string(), partition);
        if let Some(last) = self.ca.final_crl(issuer, partition).await? {
            if let Ok(mut w) = self.crls.write() {
                w.insert(key, Arc::new(last));
            }
            return Ok(());
        }
        let loaded = self.revoked_lists.lock().is_ok_and(|l| l.get(&key).is_some_and(|l| l.loaded));
        if !loaded {
            let from_store = self.ca.revoked_entries(issuer, partition).await?;
            let mut lists =
                self.revoked_lists.lock().map_err(|_| CaError::Inconsistent("revoked lists poisoned".into()))?;
            let list = lists.entry(key.clone()).or_default();
            for e in from_store {
                list.add(e);
            }
            list.loaded = true;
        }
        let entries = self
            .revoked_lists
            .lock()
            .map_err(|_| CaError::Inconsistent("revoked lists poisoned".into()))?
            .get(&key)
            .map(|l| l.entries.clone())
            .unwrap_or_default();
        let crl = Arc::new(self.ca.sign_crl(&Principal::System, issuer, partition, entries).await?);
        tracing::debug!(issuer, entries = crl.entries, number = crl.number, "CRL signed");
        if let Ok(mut w) = self.crls.write() {
            w.insert((issuer.to_string(), partition), crl);
        }
        Ok(())
    }

    /// The current CRL of one partition of an issuer.
    pub fn crl(&self, issuer: &str, partition: i64) -> Option<Arc<Crl>> {
        self.crls.read().ok()?.get(&(issuer.to_string(), partition)).cloned()
    }
}

/// What OCSP says about a recorded certificate.
fn status_of(record: &custos_store::CertificateRecord) -> Result<CertStatus> {
    if record.status != CertificateStatus::Revoked {
        return Ok(CertStatus::Good);
    }
    let reason: Option<Reason> = record.revocation_reason;
    Ok(CertStatus::Revoked {
        time: from_unix(record.revoked_at.unwrap_or(0))?,
        reason: reason.filter(|r| *r != Reason::Unspecified),
    })
}

/// A revoked certificate's CRL entry, from its row.
fn revoked_entry(serial: Serial, record: &custos_store::CertificateRecord) -> Result<RevokedEntry> {
    Ok(RevokedEntry {
        serial,
        revoked_at: from_unix(record.revoked_at.unwrap_or(0))?,
        reason: record.revocation_reason,
        invalidity_date: record.invalidity_date.map(from_unix).transpose()?,
    })
}
