//! Witnesses (C2SP tlog-witness) and their cosignatures (C2SP
//! tlog-cosignature, Ed25519 cosignature/v1).
//!
//! A witness keeps, per log, the newest checkpoint it cosigned. A log submits
//! each new checkpoint with a consistency proof from that one; the witness
//! cosigns only if the new checkpoint extends what it saw. A forked or
//! rolled-back log cannot get a cosignature, so a verifier that requires
//! cosignatures from witnesses it trusts cannot be shown a rewritten log.
//!
//! Formats only, no I/O: the `add-checkpoint` request body, the witness's
//! decision on it ([`WitnessState::add_checkpoint`]), the signed message and
//! signature lines, and their verification.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::merkle::{self, Hash};
use crate::note::{COSIGNATURE_TYPE, split_note};
use crate::{AuditError, Checkpoint, VerifierKey};

/// Signature lines start with an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// The largest request body a witness reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// An `add-checkpoint` request: the size the log believes the witness has,
/// a consistency proof from it, and the signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness last cosigned (0 if none).
    pub old: u64,
    /// RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint as a signed note.
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old N`, proof lines, a blank line, the note.
    pub fn encode(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }

    /// Parses a request body (untrusted input: every line is checked).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, AuditError> {
        let bad = |what: &str| AuditError::Format(format!("add-checkpoint: {what}"));
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("body too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
        let (head, note) = text.split_once("\n\n").ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old_line = lines.next().ok_or_else(|| bad("no old size line"))?;
        let old_text = old_line.strip_prefix("old ").ok_or_else(|| bad("the first line is not `old SIZE`"))?;
        let old: u64 = old_text.parse().map_err(|_| bad("old size is not a number"))?;
        if old_text != old.to_string() {
            return Err(bad("old size is not in canonical decimal"));
        }
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 proof lines"));
            }
            let raw = STANDARD.decode(line).map_err(|_| bad("a proof line is not base64"))?;
            proof.push(raw.try_into().map_err(|_| bad("a proof line is not a 32-byte hash"))?);
        }
        if old == 0 && !proof.is_empty() {
            return Err(bad("a proof from size 0 must be empty"));
        }
        Ok(AddCheckpoint { old, proof, note: note.to_string() })
    }
}

/// Why a witness refuses a checkpoint, with the HTTP status tlog-witness gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: malformed, or an old size above the new one.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no signature by the log's key verifies.
    #[error("the checkpoint is not signed by the log's key: {0}")]
    Forbidden(String),
    /// 404: the witness does not know this log.
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    /// 409: the old size is not what the witness has, or a same-size checkpoint has another root (a fork).
    #[error("conflict: the witness has size {size}{}", if *.fork { " with another root hash (a fork)" } else { "" })]
    Conflict {
        /// The size the witness last cosigned.
        size: u64,
        /// Whether the same size came with another root.
        fork: bool,
    },
    /// 422: the consistency proof does not verify (a fork, or a rewrite).
    #[error("the consistency proof does not verify: {0}")]
    Inconsistent(String),
}

impl Refusal {
    /// The HTTP status code tlog-witness prescribes.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Inconsistent(_) => 422,
        }
    }
}

/// What a witness knows of one log: its key and the newest checkpoint it cosigned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WitnessState {
    /// The log's verifier key (`origin+hash+key`).
    pub log_key: String,
    /// The size it last cosigned (0: never).
    pub size: u64,
    /// That checkpoint's root hash, hex (empty for size 0).
    pub root: String,
}

impl WitnessState {
    /// Decides on a request for this log: the checkpoint to cosign, or why not.
    /// The caller records the new state before it answers.
    pub fn add_checkpoint(&self, request: &AddCheckpoint) -> Result<Checkpoint, Refusal> {
        let key = VerifierKey::parse(&self.log_key).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let checkpoint = Checkpoint::open(&request.note, &key).map_err(|e| match e {
            AuditError::NoSignature { .. } | AuditError::BadSignature { .. } => Refusal::Forbidden(e.to_string()),
            other => Refusal::BadRequest(other.to_string()),
        })?;
        if request.old > checkpoint.size {
            return Err(Refusal::BadRequest(format!("old size {} is above the size {}", request.old, checkpoint.size)));
        }
        if request.old != self.size {
            return Err(Refusal::Conflict { size: self.size, fork: false });
        }
        if request.old == checkpoint.size {
            return match hex::encode(checkpoint.root) == self.root {
                true => Ok(checkpoint),
                false => Err(Refusal::Conflict { size: self.size, fork: true }),
            };
        }
        if self.size > 0 {
            let old_root: Hash = hex::decode(&self.root)
                .ok()
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| Refusal::BadRequest("the witness's stored root is corrupt".into()))?;
            merkle::verify_consistency(self.size, checkpoint.size, &request.proof, &old_root, &checkpoint.root)
                .map_err(|e| Refusal::Inconsistent(e.to_string()))?;
        }
        Ok(checkpoint)
    }

    /// The state after cosigning `checkpoint`.
    pub fn after(&self, checkpoint: &Checkpoint) -> WitnessState {
        WitnessState { log_key: self.log_key.clone(), size: checkpoint.size, root: hex::encode(checkpoint.root) }
    }
}

/// The message a cosignature/v1 signs: a header line, a time line, the checkpoint body.
pub fn cosigned_message(time: u64, body: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{body}").into_bytes()
}

/// A cosignature line by `witness` (a type 0x04 key) over `note`'s body at `time`.
pub fn cosign<E: std::fmt::Display>(
    note: &str,
    witness: &VerifierKey,
    time: u64,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, AuditError> {
    if witness.kind != COSIGNATURE_TYPE {
        return Err(AuditError::Format(format!("{} is not a witness key (type 0x04)", witness.name)));
    }
    let (body, _) = split_note(note)?;
    let signature = sign(&cosigned_message(time, body)).map_err(|e| AuditError::Sign(e.to_string()))?;
    let mut blob = witness.key_hash().to_vec();
    blob.extend_from_slice(&time.to_be_bytes());
    blob.extend_from_slice(&signature);
    Ok(format!("{SIG_PREFIX}{} {}\n", witness.name, STANDARD.encode(blob)))
}

/// Checks that `note` carries a valid cosignature by every key of
/// `witnesses`; returns each one's time. A missing or bad one is an error
/// naming the witness.
pub fn verify_cosignatures(note: &str, witnesses: &[VerifierKey]) -> Result<Vec<(String, u64)>, AuditError> {
    let (body, signatures) = split_note(note)?;
    let mut out = Vec::new();
    for w in witnesses {
        if w.kind != COSIGNATURE_TYPE {
            return Err(AuditError::Format(format!("{} is not a witness key (type 0x04)", w.name)));
        }
        let hash = w.key_hash();
        let mut found = None;
        for line in signatures.lines() {
            let Some((name, b64)) = line.strip_prefix(SIG_PREFIX).and_then(|r| r.split_once(' ')) else { continue };
            let Ok(blob) = STANDARD.decode(b64) else { continue };
            if name != w.name || blob.len() != 4 + 8 + 64 || blob[..4] != hash {
                continue;
            }
            let time = u64::from_be_bytes(blob[4..12].try_into().unwrap_or_default());
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &w.public_key)
                .verify(&cosigned_message(time, body), &blob[12..])
                .map_err(|_| AuditError::BadSignature { name: w.name.clone() })?;
            found = Some(time);
        }
        let time = found.ok_or_else(|| AuditError::NoSignature { name: w.name.clone() })?;
        out.push((w.name.clone(), time));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    fn pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    /// A log of `n` leaves (leaf i = [i]): its root and a checkpoint note.
    fn log(pair: &Ed25519KeyPair, key: &VerifierKey, n: u64, salt: u8) -> (Vec<Hash>, String) {
        let leaves: Vec<Hash> = (0..n).map(|i| merkle::leaf_hash(&[i as u8, if i >= 3 { salt } else { 0 }])).collect();
        let mut f = merkle::Frontier::default();
        for l in &leaves {
            f.push(*l);
        }
        let cp = Checkpoint { origin: key.name.clone(), size: n, root: f.root() };
        (leaves, cp.sign(key, |m| Ok::<_, String>(pair.sign(m).as_ref().to_vec())).expect("sign"))
    }

    fn proof(leaves: &[Hash], old: u64, new: u64) -> Vec<Hash> {
        // Recompute every node the proof needs from the leaves.
        let node = |id: merkle::NodeId| -> Hash {
            fn subtree(leaves: &[Hash]) -> Hash {
                let mut f = merkle::Frontier::default();
                for l in leaves {
                    f.push(*l);
                }
                f.root()
            }
            let width = 1u64 << id.level;
            let start = (id.index * width) as usize;
            let end = ((id.index + 1) * width).min(leaves.len() as u64) as usize;
            subtree(&leaves[start..end])
        };
        let mut read = node;
        merkle::consistency_proof(old, new, &mut read).expect("proof")
    }

    #[test]
    fn a_witness_cosigns_extensions_and_refuses_forks_and_rollbacks() {
        let (log_pair, witness_pair) = (pair(), pair());
        let log_key = VerifierKey::new("ca.example/audit", log_pair.public_key().as_ref()).expect("key");
        let w_key = VerifierKey::cosigner("witness.example/w1", witness_pair.public_key().as_ref()).expect("key");
        let w_parsed = VerifierKey::parse(&w_key.to_string()).expect("the vkey round-trips");
        assert_eq!(w_parsed, w_key);
        let mut state = WitnessState { log_key: log_key.to_string(), size: 0, root: String::new() };

        let (leaves5, note5) = log(&log_pair, &log_key, 5, 0);
        let first = AddCheckpoint { old: 0, proof: vec![], note: note5.clone() };
        assert_eq!(AddCheckpoint::parse(first.encode().as_bytes()).expect("parse"), first);
        let cp = state.add_checkpoint(&first).expect("cosign the first");
        state = state.after(&cp);
        let line = cosign(&note5, &w_key, 1_700_000_000, |m| Ok::<_, String>(witness_pair.sign(m).as_ref().to_vec()))
            .expect("cosign");
        let cosigned = format!("{note5}{line}");
        assert_eq!(
            verify_cosignatures(&cosigned, std::slice::from_ref(&w_key)).expect("verify"),
            vec![(w_key.name.clone(), 1_700_000_000)]
        );
        assert!(matches!(
            verify_cosignatures(&note5, std::slice::from_ref(&w_key)),
            Err(AuditError::NoSignature { .. })
        ));
        let other = VerifierKey::cosigner("witness.example/w2", pair().public_key().as_ref()).expect("key");
        assert!(verify_cosignatures(&cosigned, &[w_key.clone(), other]).is_err(), "every required witness");

        // An extension with a valid proof: cosigned.
        let (leaves8, note8) = log(&log_pair, &log_key, 8, 0);
        assert_eq!(&leaves8[..5], &leaves5[..]);
        let grow = AddCheckpoint { old: 5, proof: proof(&leaves8, 5, 8), note: note8.clone() };
        let cp8 = state.add_checkpoint(&grow).expect("an extension");
        // A fork: same earlier entries, a rewritten entry 3 onwards.
        let (forked, fork8) = log(&log_pair, &log_key, 8, 7);
        let fork = AddCheckpoint { old: 5, proof: proof(&forked, 5, 8), note: fork8 };
        assert!(matches!(state.add_checkpoint(&fork), Err(Refusal::Inconsistent(_))));
        state = state.after(&cp8);
        // A rollback: asks from an older size than the witness has.
        let back = AddCheckpoint { old: 5, proof: proof(&leaves8, 5, 8), note: note8.clone() };
        assert_eq!(state.add_checkpoint(&back), Err(Refusal::Conflict { size: 8, fork: false }));
        let (_, smaller) = log(&log_pair, &log_key, 6, 0);
        let shrink = AddCheckpoint { old: 8, proof: vec![], note: smaller };
        assert_eq!(state.add_checkpoint(&shrink).map_err(|e| e.status()), Err(400));
        // The same size with another root: a fork, 409.
        let (_, same_size_fork) = log(&log_pair, &log_key, 8, 9);
        let again = AddCheckpoint { old: 8, proof: vec![], note: same_size_fork };
        assert_eq!(state.add_checkpoint(&again), Err(Refusal::Conflict { size: 8, fork: true }));
        // A checkpoint not signed by the log's key: 403.
        let (_, stranger) = log(&pair(), &log_key, 9, 0);
        let unsigned = AddCheckpoint { old: 8, proof: vec![], note: stranger };
        assert_eq!(state.add_checkpoint(&unsigned).map_err(|e| e.status()), Err(403));
    }

    /// The fuzz target's entry point (fuzz/fuzz_targets/witness_request.rs)
    /// on mutated requests, bounded, on stable: parse and decide, never panic.
    #[test]
    fn mutated_requests_never_panic() {
        let log_pair = pair();
        let log_key = VerifierKey::new("ca.example/audit", log_pair.public_key().as_ref()).expect("key");
        let (leaves, note) = log(&log_pair, &log_key, 8, 0);
        let seed = AddCheckpoint { old: 5, proof: proof(&leaves, 5, 8), note }.encode().into_bytes();
        let state = WitnessState { log_key: log_key.to_string(), size: 5, root: hex::encode([7u8; 32]) };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let mut input = seed.clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            if let Ok(request) = AddCheckpoint::parse(&input) {
                let _ = state.add_checkpoint(&request);
            }
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            &b""[..],
            b"old 1",
            b"old 01\n\nx\n",
            b"new 1\n\nx\n",
            b"old 0\nAAAA\n\nx\n",
            b"old 2\nnot base64!\n\nx\n",
            b"old 2\nAAAA\n\nx\n",
            b"\xff\n\n",
        ] {
            assert!(AddCheckpoint::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let many = format!("old 9\n{}\nnote\n", format!("{}\n", STANDARD.encode([0u8; 32])).repeat(64));
        assert!(AddCheckpoint::parse(many.as_bytes()).is_err(), "at most 63 proof lines");
    }
}
