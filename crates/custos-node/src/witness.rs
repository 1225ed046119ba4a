//! A witness (`custos witness serve`), and the log's side: submitting each
//! new checkpoint to the configured witnesses and keeping their cosignatures.
//!
//! The witness keeps one file, `witness.json` in its directory: its name, its
//! Ed25519 key sealed under a passphrase (the soft key store's seal), and per
//! log the log's verifier key and the newest checkpoint it cosigned. A
//! decision and the new state are made under one lock, and the state is
//! written (a new file synced, renamed over the old, the directory synced)
//! before the cosignature is returned: a witness killed at any point either
//! cosigned and remembers it, or did neither. A tenant can run one against a
//! vendor's custos; so can another custos node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_audit::VerifierKey;
use custos_audit::witness::{AddCheckpoint, Refusal, WitnessState};
use custos_ca::{Ca, Principal};
use custos_keys::soft::{SealParams, SoftKeyStore};
use custos_keys::{KeyAlgorithm, KeyReference, KeyStore, Signer};
use serde::{Deserialize, Serialize};

use crate::{NodeError, Result};

/// The witness's state file, in its directory.
pub const STATE_FILE: &str = "witness.json";

/// What the witness keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessFile {
    /// The witness's name (its cosignature key's name).
    name: String,
    /// How its key is sealed.
    seal: SealParams,
    /// The sealed Ed25519 key, base64.
    key: String,
    /// The logs it witnesses.
    logs: Vec<WitnessState>,
}

/// A witness, unsealed: its key and its state.
pub struct WitnessNode {
    path: PathBuf,
    key: VerifierKey,
    signer: Arc<dyn Signer>,
    state: Mutex<WitnessFile>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.to_path_buf(), source }
}

/// Replaces `path` with `bytes` durably: a new file (0600) synced, renamed over, the directory synced.
fn replace_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl WitnessNode {
    /// Creates a witness in `dir` named `name` for `logs` (their verifier
    /// keys), its key sealed under `passphrase`; returns its verifier key.
    pub fn init(dir: &Path, name: &str, passphrase: &[u8], logs: &[String]) -> Result<VerifierKey> {
        let path = dir.join(STATE_FILE);
        if path.exists() {
            return Err(NodeError::Config(format!("{} already holds a witness", path.display())));
        }
        let mut states = Vec::new();
        for l in logs {
            let key = VerifierKey::parse(l).map_err(|e| NodeError::Config(format!("--log {l:?}: {e}")))?;
            states.push(WitnessState { log_key: key.to_string(), size: 0, root: String::new() });
        }
        let (store, seal) = SoftKeyStore::create(passphrase)?;
        let made = store.generate(KeyAlgorithm::Ed25519, name)?;
        let key = VerifierKey::cosigner(name, made.signer.public_key().raw())
            .map_err(|e| NodeError::Config(format!("witness name {name:?}: {e}")))?;
        let file =
            WitnessFile { name: name.to_string(), seal, key: STANDARD.encode(&made.reference.data), logs: states };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_vec_pretty(&file).map_err(|e| NodeError::Config(e.to_string()))?;
        replace_durably(&path, &json)?;
        Ok(key)
    }

    /// Opens the witness in `dir` with its passphrase.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<WitnessNode> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read(&path).map_err(io(&path))?;
        let file: WitnessFile = serde_json::from_slice(&text)
            .map_err(|e| NodeError::Config(format!("{}: not a witness state file: {e}", path.display())))?;
        let store = SoftKeyStore::open(passphrase, &file.seal)?;
        let data = STANDARD
            .decode(&file.key)
            .map_err(|_| NodeError::Config(format!("{}: the sealed key is not base64", path.display())))?;
        let signer = store.load(&KeyReference { backend: custos_keys::soft::BACKEND.into(), data })?;
        let key = VerifierKey::cosigner(&file.name, signer.public_key().raw())
            .map_err(|e| NodeError::Config(e.to_string()))?;
        Ok(WitnessNode { path, key, signer, state: Mutex::new(file) })
    }

    /// The witness's verifier key (`name+hash+key`, type 0x04), for `audit verify --witness`.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.key
    }
}

impl custos_server::witness::Witness for WitnessNode {
    fn add_checkpoint(&self, body: &[u8]) -> std::result::Result<String, Refusal> {
        let request = AddCheckpoint::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let origin = request.note.split('\n').next().unwrap_or_default().to_string();
        // One decision at a time: check and record the new size atomically (tlog-witness).
        let mut state = self.state.lock().map_err(|_| Refusal::BadRequest("witness state poisoned".into()))?;
        let at = state
            .logs
            .iter()
            .position(|l| VerifierKey::parse(&l.log_key).is_ok_and(|k| k.name == origin))
            .ok_or_else(|| Refusal::UnknownLog(origin.clone()))?;
        let checkpoint = state.logs[at].add_checkpoint(&request)?;
        let mut next = state.clone();
        next.logs[at] = next.logs[at].after(&checkpoint);
        let json = serde_json::to_vec_pretty(&next).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        // Crash before the rename: nothing cosigned, nothing changed. After it: the
        // new size is kept whether or not the answer reached the log, which then
        // learns it from the 409 of its next request.
        replace_durably(&self.path, &json).map_err(|e| Refusal::BadRequest(format!("cannot record the state: {e}")))?;
        *state = next;
        drop(state);
        let time = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        custos_audit::witness::cosign(&request.note, &self.key, time, |m| self.signer.sign(m))
            .map_err(|e| Refusal::BadRequest(e.to_string()))
    }
}

/// The log's side: what each configured witness last cosigned, as far as this node knows.
#[derive(Default)]
pub struct Submitter {
    known: Mutex<std::collections::HashMap<String, u64>>,
    /// The last refusal logged per witness: a standing refusal is one log line, not one a second.
    refused: Mutex<std::collections::HashMap<String, String>>,
}

impl Submitter {
    /// Submits the newest checkpoint to every configured witness and records
    /// the cosignatures; a witness that refuses is logged and tried again on
    /// the next pass. Returns how many witnesses cosigned it.
    pub async fn submit(&self, config: &crate::Config, ca: &Ca) -> Result<usize> {
        let mut cosigned = 0;
        let Some(latest) = ca.latest_checkpoint().await?.map(|c| c.size) else { return Ok(0) };
        for w in &config.audit.witnesses {
            let key = VerifierKey::parse(&w.key).map_err(|e| NodeError::Config(format!("audit.witnesses key: {e}")))?;
            let mut old = self.known.lock().ok().and_then(|k| k.get(&w.url).copied()).unwrap_or(0);
            if old == latest {
                continue;
            }
            // At most twice: the first answer may teach us the witness's size (409).
            for _ in 0..2 {
                let Some(request) = ca.witness_request(&Principal::System, old).await? else { return Ok(0) };
                let body = request.note.split_once("\n\n").map(|(b, _)| format!("{b}\n")).unwrap_or_default();
                let checkpoint =
                    custos_audit::Checkpoint::parse(&body).map_err(|e| NodeError::Config(e.to_string()))?;
                let size = checkpoint.size;
                match post(&w.url, request.encode()).await {
                    Ok((200, body)) => {
                        ca.add_cosignatures(&Principal::System, size, &key, &body).await?;
                        if let Ok(mut r) = self.refused.lock()
                            && r.remove(&w.url).is_some()
                        {
                            tracing::info!(witness = %key.name, size, "the witness cosigns again");
                        }
                        if let Ok(mut k) = self.known.lock() {
                            k.insert(w.url.clone(), size);
                        }
                        cosigned += 1;
                        break;
                    }
                    Ok((409, body)) => match body.trim().parse::<u64>() {
                        Ok(theirs) if theirs != old && theirs <= size => old = theirs,
                        _ => {
                            if self.first_time(&w.url, format!("409 {}", body.trim())) {
                                tracing::error!(witness = %key.name, answer = %body.trim(), size,
                                    "the witness refuses this log's checkpoint: it has seen another tree (a fork or a rollback)");
                            }
                            break;
                        }
                    },
                    Ok((status, body)) => {
                        if self.first_time(&w.url, format!("{status} {}", body.trim())) {
                            tracing::error!(witness = %key.name, status, answer = %body.trim(), "the witness refused the checkpoint");
                        }
                        break;
                    }
                    Err(e) => {
                        if self.first_time(&w.url, e.clone()) {
                            tracing::warn!(witness = %key.name, error = %e, "cannot reach the witness; trying again every pass");
                        }
                        break;
                    }
                }
            }
        }
        Ok(cosigned)
    }
}

impl Submitter {
    /// Whether `why` is news for this witness (and remembers it).
    fn first_time(&self, url: &str, why: String) -> bool {
        match self.refused.lock() {
            Ok(mut r) => r.insert(url.to_string(), why.clone()).as_ref() != Some(&why),
            Err(_) => true,
        }
    }
}

/// POSTs an add-checkpoint body; (status, body).
async fn post(url: &str, body: String) -> std::result::Result<(u16, String), String> {
    let mut c = crate::client::HttpConnection::connect(url, Duration::from_secs(5)).await?;
    let request = hyper::Request::post("/").header(hyper::header::CONTENT_TYPE, "text/plain");
    let (status, bytes) = c.exchange(request, "/add-checkpoint", body.into(), 64 * 1024).await?;
    Ok((status.as_u16(), String::from_utf8_lossy(&bytes).into_owned()))
}
