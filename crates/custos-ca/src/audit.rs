//! The audit log as custos runs it: the log's Ed25519 key, signed
//! checkpoints, inclusion proofs, tiles, local verification and key usage.
//!
//! Entries themselves are written by the store inside each state change's
//! transaction; this module signs what the store has hashed.

use custos_audit::merkle::{self, Hash, NodeId};
use custos_audit::tiles::TileRef;
use custos_audit::{Checkpoint, Expected, Verified, Verifier, VerifierKey};
use custos_keys::{KeyAlgorithm, KeyStore};
use custos_store::{AuditEntry, AuditFilter, AuditRecord, CheckpointRecord, KeyRecord, KeyUsage};
use custos_types::KeyStatus;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::{Operation, authorize};
use crate::{Ca, CaError, Principal, Result};

/// Setting naming the log key.
const META_AUDIT_KEY: &str = "audit_key";
/// Setting holding the log origin (the checkpoint's first line and key name).
const META_AUDIT_ORIGIN: &str = "audit_origin";
/// Label of the log key in the key store.
pub const LOG_KEY_LABEL: &str = "audit-log";
/// The fixed DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// Entries read per page while verifying.
const VERIFY_PAGE: u64 = 50_000;

/// The log origin for a base URL: host and path without the scheme, then `/audit`.
pub fn origin_for(base_url: &str) -> String {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    format!("{}/audit", rest.trim_end_matches('/'))
}

/// A log key just generated, with what must be stored with it in one transaction.
pub(crate) struct NewLogKey {
    /// The key's record.
    pub record: KeyRecord,
    /// The settings that name it (key id, origin).
    pub settings: Vec<(String, String)>,
    /// Its `key.generate` entry.
    pub audit: AuditRecord,
}

/// A new log key: the key store generates it; the caller stores it.
pub(crate) fn new_log_key(keys: &dyn KeyStore, base_url: &str, actor: &str, now: i64) -> Result<NewLogKey> {
    let key = keys.generate(KeyAlgorithm::Ed25519, LOG_KEY_LABEL)?;
    let id = key.signer.public_key().key_id().to_string();
    let origin = origin_for(base_url);
    let record = KeyRecord {
        id: id.clone(),
        backend: key.reference.backend.clone(),
        algorithm: key.signer.algorithm().to_string(),
        label: LOG_KEY_LABEL.into(),
        public_key: key.signer.public_key().spki_der().to_vec(),
        reference: key.reference.data.clone(),
        status: KeyStatus::Active,
        created_at: now,
    };
    let settings = vec![(META_AUDIT_KEY.into(), id.clone()), (META_AUDIT_ORIGIN.into(), origin.clone())];
    let audit = AuditRecord {
        time: now,
        actor: actor.into(),
        action: "key.generate".into(),
        object: format!("key:{id}"),
        key: Some(id.clone()),
        details: json!({"key": id, "algorithm": "ed25519", "backend": record.backend, "label": LOG_KEY_LABEL,
                        "purpose": "audit log checkpoints", "origin": origin})
        .to_string(),
    };
    Ok(NewLogKey { record, settings, audit })
}

/// A stored checkpoint note without the witnesses' cosignature lines: the
/// body, the blank line and the log's own signature line.
fn own_note(note: &str) -> String {
    match note.split_once("\n\n") {
        Some((body, sigs)) => {
            let own = sigs.lines().next().unwrap_or_default();
            format!("{body}\n\n{own}\n")
        }
        None => note.to_string(),
    }
}

/// An inclusion proof of one entry against a signed checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct InclusionProof {
    /// The entry's index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// The entry's leaf hash, hex.
    pub leaf_hash: String,
    /// The audit path, hex, leaf to root.
    pub path: Vec<String>,
    /// The root hash, hex.
    pub root: String,
    /// The signed checkpoint of that size.
    pub checkpoint: String,
    /// The entry as the log holds it.
    pub entry: serde_json::Value,
}

/// What `audit verify` checked.
#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    /// Entries recomputed.
    pub entries: u64,
    /// Root of all entries, hex.
    pub root: String,
    /// Stored checkpoints whose signature and root matched.
    pub checkpoints: usize,
    /// The key the checkpoints were checked with.
    pub key: String,
}

/// Actions in which a key made a signature; `audit tail --action sign` selects them.
pub const SIGNING_ACTIONS: &[&str] =
    &["certificate.issue", "responder.issue", "issuer.create", "crl.sign", "ocsp.sign"];

impl Ca {
    /// The log's verifier key (`origin+hash+key`) as relying parties pin it.
    pub async fn log_verifier_key(&self) -> Result<VerifierKey> {
        let id = self.store.meta(META_AUDIT_KEY).await?.ok_or_else(|| {
            CaError::Inconsistent("this custos has no audit log key yet (run any command that unseals it)".into())
        })?;
        let origin = self
            .store
            .meta(META_AUDIT_ORIGIN)
            .await?
            .ok_or_else(|| CaError::Inconsistent("no audit log origin recorded".into()))?;
        let record =
            self.store.key(&id).await?.ok_or_else(|| CaError::Inconsistent(format!("log key {id} is not recorded")))?;
        let raw = record
            .public_key
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .ok_or_else(|| CaError::Inconsistent(format!("log key {id} is not an Ed25519 key")))?;
        Ok(VerifierKey::new(&origin, raw)?)
    }

    /// Creates the log key if this custos predates it; needs the key store unsealed.
    async fn ensure_log_key(&self, principal: &Principal) -> Result<String> {
        if let Some(id) = self.store.meta(META_AUDIT_KEY).await? {
            return Ok(id);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let key = new_log_key(self.key_store()?.as_ref(), &self.base_url, &principal.actor(), now)?;
        match self.store.add_key(&key.record, &key.settings, &[key.audit]).await {
            Ok(()) => Ok(key.record.id),
            // Another process made one first: use theirs.
            Err(custos_store::StoreError::Duplicate { .. }) => {
                self.store.meta(META_AUDIT_KEY).await?.ok_or_else(|| CaError::Inconsistent("log key vanished".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The root of the first `size` entries, from stored nodes.
    async fn stored_root(&self, size: u64) -> Result<Hash> {
        let ids = merkle::needed_nodes(|read| merkle::tree_hash(size, read));
        let nodes = self.store.audit_nodes(&ids).await?;
        Ok(merkle::tree_hash(size, &mut |id| nodes.get(&id).copied().unwrap_or_default()))
    }

    /// Signs a checkpoint of the whole log if it grew since the last one;
    /// returns the new checkpoint, or `None` when the latest is current.
    pub async fn sign_checkpoint(&self, principal: &Principal) -> Result<Option<CheckpointRecord>> {
        authorize(principal, Operation::SignCheckpoint)?;
        let key_id = self.ensure_log_key(principal).await?;
        let size = self.store.audit_size().await?;
        if self.store.latest_checkpoint().await?.is_some_and(|c| c.size >= size) {
            return Ok(None);
        }
        let vkey = self.log_verifier_key().await?;
        let root = self.stored_root(size).await?;
        let signer = self.signer(&key_id, crate::metrics::Purpose::Checkpoint).await?;
        let checkpoint = Checkpoint { origin: vkey.name.clone(), size, root };
        let note = checkpoint.sign(&vkey, |body| signer.sign(body))?;
        let record =
            CheckpointRecord { size, time: OffsetDateTime::now_utc().unix_timestamp(), root: root.to_vec(), note };
        self.store.add_checkpoint(&record).await?;
        Ok(Some(record))
    }

    /// An `add-checkpoint` request for the newest checkpoint, for a witness
    /// that last cosigned size `old`: the note and a consistency proof from
    /// `old`. `None` while the log has no checkpoint.
    pub async fn witness_request(
        &self,
        principal: &Principal,
        old: u64,
    ) -> Result<Option<custos_audit::witness::AddCheckpoint>> {
        authorize(principal, Operation::SignCheckpoint)?;
        let Some(cp) = self.store.latest_checkpoint().await? else { return Ok(None) };
        if old > cp.size {
            return Err(CaError::Policy(format!(
                "the witness has cosigned size {old}, but this log's newest checkpoint has size {}: \
                 this log was rolled back, or is not the log the witness saw",
                cp.size
            )));
        }
        let proof = if old == 0 || old == cp.size {
            Vec::new()
        } else {
            let ids = merkle::needed_nodes(|read| merkle::consistency_proof(old, cp.size, read));
            let nodes = self.store.audit_nodes(&ids).await?;
            merkle::consistency_proof(old, cp.size, &mut |id| nodes.get(&id).copied().unwrap_or_default())
                .map_err(custos_audit::AuditError::from)?
        };
        // The log's own note only: cosignatures added earlier are not resubmitted.
        let note = own_note(&cp.note);
        Ok(Some(custos_audit::witness::AddCheckpoint { old, proof, note }))
    }

    /// Records a witness's cosignature lines on checkpoint `size`, once they
    /// verify against `witness` (a line already recorded is not added twice).
    pub async fn add_cosignatures(
        &self,
        principal: &Principal,
        size: u64,
        witness: &VerifierKey,
        lines: &str,
    ) -> Result<()> {
        authorize(principal, Operation::SignCheckpoint)?;
        let cp = self
            .store
            .checkpoints()
            .await?
            .into_iter()
            .find(|c| c.size == size)
            .ok_or_else(|| CaError::Policy(format!("no checkpoint of size {size}")))?;
        let fresh: String = lines
            .lines()
            .filter(|l| {
                l.starts_with('\u{2014}') && l.contains(&format!(" {} ", witness.name)) && !cp.note.contains(*l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        custos_audit::witness::verify_cosignatures(
            &format!("{}{fresh}", own_note(&cp.note)),
            std::slice::from_ref(witness),
        )?;
        Ok(self.store.add_cosignatures(size, &fresh).await?)
    }

    /// The newest checkpoint that every one of `witnesses` cosigned, with
    /// each cosignature's time; `None` if there is none.
    pub async fn witnessed_checkpoint(
        &self,
        principal: &Principal,
        witnesses: &[VerifierKey],
    ) -> Result<Option<(CheckpointRecord, Vec<(String, u64)>)>> {
        authorize(principal, Operation::ReadAudit)?;
        let vkey = self.log_verifier_key().await?;
        for cp in self.store.checkpoints().await?.into_iter().rev() {
            if let Ok(times) = custos_audit::witness::verify_cosignatures(&cp.note, witnesses) {
                Checkpoint::open(&cp.note, &vkey)?;
                return Ok(Some((cp, times)));
            }
        }
        Ok(None)
    }

    /// The newest signed checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>> {
        Ok(self.store.latest_checkpoint().await?)
    }

    /// Number of entries in the log (public: every checkpoint states it).
    pub async fn audit_size(&self) -> Result<u64> {
        Ok(self.store.audit_size().await?)
    }

    /// Entries for `audit tail`; the action `sign` selects every entry in
    /// which a key made a signature ([`SIGNING_ACTIONS`]).
    pub async fn audit_tail(&self, principal: &Principal, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        authorize(principal, Operation::ReadAudit)?;
        // Indexes are stored as signed 64-bit integers.
        if let Some(from) = filter.from
            && i64::try_from(from).is_err()
        {
            return Err(CaError::Policy(format!("entry index {from} is beyond any log")));
        }
        if filter.action.as_deref() == Some("sign") {
            let signing = AuditFilter {
                action: None,
                any_of: SIGNING_ACTIONS.iter().map(|a| a.to_string()).collect(),
                ..filter.clone()
            };
            return Ok(self.store.audit_search(&signing).await?);
        }
        Ok(self.store.audit_search(filter).await?)
    }

    /// Every use of one key, per day, actor and action.
    pub async fn key_usage(&self, principal: &Principal, key: &str) -> Result<Vec<KeyUsage>> {
        authorize(principal, Operation::ReadKeys)?;
        if self.store.key(key).await?.is_none() {
            return Err(CaError::UnknownKey(key.to_string()));
        }
        Ok(self.store.key_usage(key).await?)
    }

    /// The inclusion proof of entry `index` against the latest checkpoint,
    /// checked before it is returned.
    pub async fn inclusion_proof(&self, principal: &Principal, index: u64) -> Result<InclusionProof> {
        authorize(principal, Operation::ReadAudit)?;
        let cp = self
            .store
            .latest_checkpoint()
            .await?
            .ok_or_else(|| CaError::Policy("the log has no checkpoint yet".into()))?;
        if index >= cp.size {
            return Err(CaError::Policy(format!(
                "entry {index} is not covered by the latest checkpoint (size {}); try again in a second",
                cp.size
            )));
        }
        let vkey = self.log_verifier_key().await?;
        let checkpoint = Checkpoint::open(&cp.note, &vkey)?;
        let ids = merkle::needed_nodes(|read| merkle::inclusion_proof(index, cp.size, read));
        let mut wanted = ids.clone();
        wanted.push(NodeId { level: 0, index });
        let nodes = self.store.audit_nodes(&wanted).await?;
        let path = merkle::inclusion_proof(index, cp.size, &mut |id| nodes.get(&id).copied().unwrap_or_default())
            .map_err(custos_audit::AuditError::from)?;
        let leaf = nodes[&NodeId { level: 0, index }];
        merkle::verify_inclusion(&leaf, index, cp.size, &path, &checkpoint.root)
            .map_err(custos_audit::AuditError::from)?;
        let entry =
            self.store.audit_entries(index, 1).await?.pop().ok_or_else(|| {
                CaError::Inconsistent(format!("entry {index} is covered by a checkpoint but missing"))
            })?;
        Ok(InclusionProof {
            index,
            size: cp.size,
            leaf_hash: hex::encode(leaf),
            path: path.iter().map(hex::encode).collect(),
            root: hex::encode(checkpoint.root),
            checkpoint: cp.note,
            entry: serde_json::from_slice(&entry_bytes(&entry)?)
                .map_err(|e| CaError::Inconsistent(format!("entry {index}: {e}")))?,
        })
    }

    /// Recomputes the whole log from its entries and checks every stored
    /// checkpoint's signature and root, and `trusted` (a checkpoint saved
    /// earlier) if given. `key` pins the log key; without it the recorded one is used.
    pub async fn verify_log(
        &self,
        principal: &Principal,
        key: Option<&VerifierKey>,
        trusted: Option<&str>,
    ) -> Result<LogReport> {
        self.verify_log_visiting(principal, key, trusted, &mut |_| Ok(())).await
    }

    /// [`verify_log`](Self::verify_log), handing each entry to `visit` as it
    /// is hashed: one read of the log serves both the proof and a replay.
    pub(crate) async fn verify_log_visiting(
        &self,
        principal: &Principal,
        key: Option<&VerifierKey>,
        trusted: Option<&str>,
        visit: &mut (dyn FnMut(&custos_store::AuditEntryView<'_>) -> Result<()> + Send),
    ) -> Result<LogReport> {
        authorize(principal, Operation::ReadAudit)?;
        let vkey = match key {
            Some(k) => k.clone(),
            None => self.log_verifier_key().await?,
        };
        let mut expected = Vec::new();
        for cp in self.store.checkpoints().await? {
            let opened = Checkpoint::open(&cp.note, &vkey).map_err(|e| custos_audit::VerifyError {
                index: cp.size,
                reason: format!("checkpoint of size {}: {e}", cp.size),
            })?;
            if opened.size != cp.size || opened.root.as_slice() != cp.root.as_slice() {
                return Err(custos_audit::VerifyError {
                    index: cp.size,
                    reason: format!("checkpoint of size {}: its columns disagree with its signed note", cp.size),
                }
                .into());
            }
            expected.push((cp.size, Expected { root: opened.root, source: format!("checkpoint {}", cp.size) }));
        }
        if let Some(note) = trusted {
            expected.push(Expected::saved(note, &vkey)?);
        }
        let mut verifier = Verifier::new(expected);
        // Read the next page while this one is hashed: on two cores the
        // database decode and the hashing take about as long as each other.
        let (pages, mut incoming) = tokio::sync::mpsc::channel(2);
        let store = self.store.clone();
        let reader = tokio::spawn(async move {
            let mut from = 0;
            loop {
                let page = store.audit_page(from, VERIFY_PAGE).await;
                let next = match &page {
                    Ok(p) if p.len() as u64 == VERIFY_PAGE => Some(p.next_index()),
                    _ => None,
                };
                if pages.send(page).await.is_err() {
                    return;
                }
                match next {
                    Some(n) => from = n,
                    None => return,
                }
            }
        });
        let mut bytes = Vec::with_capacity(1024);
        while let Some(page) = incoming.recv().await {
            for entry in page?.entries() {
                let entry = entry?;
                bytes.clear();
                // Unchecked: damaged details give a different hash, which push reports.
                let fields = entry.fields();
                fields.write_unchecked(&mut bytes);
                let (leaf, len) = entry.stored_leaf();
                verifier.push(fields.index, &bytes, Some(&leaf[..len]))?;
                visit(&entry)?;
            }
        }
        reader.await.map_err(|e| CaError::Inconsistent(format!("audit reader: {e}")))?;
        let Verified { size, root, checkpoints } = verifier.finish()?;
        // Tiles and proofs are served from stored nodes: they must agree too.
        if size > 0 && self.stored_root(size).await.ok() != Some(root) {
            return Err(custos_audit::VerifyError {
                index: 0,
                reason: "the stored tree nodes (served as tiles and proofs) disagree with the entries".into(),
            }
            .into());
        }
        Ok(LogReport { entries: size, root: hex::encode(root), checkpoints, key: vkey.to_string() })
    }

    /// One tile or entry bundle, as C2SP tlog-tiles serves it.
    pub async fn audit_tile(&self, tile: &TileRef) -> Result<Vec<u8>> {
        let start = tile.start();
        match tile.level {
            None => {
                let entries = self.store.audit_entries(start, tile.width).await?;
                if entries.len() as u64 != tile.width {
                    return Err(CaError::Policy(format!("entry bundle {} is beyond the log", tile.path())));
                }
                let mut bundle = Vec::with_capacity(entries.len() * 256);
                for e in &entries {
                    custos_audit::entry::push_bundle(&mut bundle, &entry_bytes(e)?);
                }
                Ok(bundle)
            }
            Some(_) => {
                let hashes =
                    self.store.audit_level(tile.merkle_level(), start, tile.width).await.map_err(|e| match e {
                        custos_store::StoreError::NotFound { .. } => {
                            CaError::Policy(format!("tile {} is beyond the log", tile.path()))
                        }
                        other => other.into(),
                    })?;
                Ok(hashes.concat())
            }
        }
    }
}

/// The canonical bytes of a stored entry.
fn entry_bytes(e: &AuditEntry) -> Result<Vec<u8>> {
    Ok(custos_store::entry_fields(e).encode()?)
}

impl Ca {
    /// Writes one service-log line (target `custos::change`) for each audit
    /// entry from index `from` on, at most `limit`, and returns the index
    /// after the last: the entries are committed, so the line never reports
    /// a change that rolled back. Each node writes the lines of the entries
    /// it reads, whichever node made them.
    pub async fn log_changes(&self, principal: &Principal, from: u64, limit: u64) -> Result<u64> {
        authorize(principal, Operation::ReadAudit)?;
        let entries = self.store.audit_entries(from, limit).await?;
        let mut next = from;
        for e in &entries {
            let r = &e.record;
            tracing::info!(
                target: "custos::change",
                index = e.index,
                actor = %r.actor,
                action = %r.action,
                object = %r.object,
                request_id = serde_json::from_str::<serde_json::Value>(&r.details)
                    .ok()
                    .and_then(|d| d.get("request_id").and_then(|v| v.as_str()).map(str::to_string))
                    .unwrap_or_default(),
                "state change"
            );
            next = e.index + 1;
        }
        Ok(next)
    }
}

impl Ca {
    /// The newest `limit` audit entries about `object` (`cert:SERIAL`,
    /// `tenant:NAME`, `incident:ID`), oldest first: an object's trail.
    pub async fn audit_trail(&self, principal: &Principal, object: &str, limit: u64) -> Result<Vec<AuditEntry>> {
        authorize(principal, Operation::ReadAudit)?;
        Ok(self.store.audit_for_object(object, limit).await?)
    }
}
