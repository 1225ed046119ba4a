//! C2SP checkpoints (tlog-checkpoint) wrapped in C2SP signed notes with an
//! Ed25519 key, and the `name+hash+key` verifier key string.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::AuditError;
use crate::merkle::Hash;

/// Signature type byte of Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;
/// Signature type byte of an Ed25519 cosignature/v1 (C2SP tlog-cosignature).
pub(crate) const COSIGNATURE_TYPE: u8 = 0x04;
/// Signature lines start with an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// A log's state: its origin, how many entries, and their root hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, e.g. `ca.example.net/audit`.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// RFC 9162 root hash of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body: origin, size and base64 root, each on its own line.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// Parses a checkpoint body (extension lines after the root are allowed and ignored).
    pub fn parse(body: &str) -> Result<Checkpoint, AuditError> {
        let bad = |what: &str| AuditError::Format(format!("checkpoint: {what}"));
        let mut lines = body.split_inclusive('\n');
        let mut line = |what: &str| {
            lines.next().and_then(|l| l.strip_suffix('\n')).ok_or_else(|| bad(&format!("missing the {what} line")))
        };
        let origin = line("origin")?.to_string();
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        let size_text = line("size")?;
        let size: u64 = size_text.parse().map_err(|_| bad(&format!("size {size_text:?} is not a number")))?;
        if size_text != size.to_string() {
            return Err(bad("size is not in canonical decimal"));
        }
        let root_bytes = STANDARD.decode(line("root hash")?).map_err(|_| bad("root hash is not base64"))?;
        let root: Hash = root_bytes.try_into().map_err(|_| bad("root hash is not 32 bytes"))?;
        Ok(Checkpoint { origin, size, root })
    }

    /// Signs the checkpoint as a signed note with `key`'s `sign` (Ed25519 over the body).
    pub fn sign<E: std::fmt::Display>(
        &self,
        key: &VerifierKey,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<String, AuditError> {
        let body = self.body();
        let signature = sign(body.as_bytes()).map_err(|e| AuditError::Sign(e.to_string()))?;
        let mut blob = key.key_hash().to_vec();
        blob.extend_from_slice(&signature);
        Ok(format!("{body}\n{SIG_PREFIX}{} {}\n", key.name, STANDARD.encode(blob)))
    }

    /// Opens a signed checkpoint: checks `key`'s signature on it and returns it.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, AuditError> {
        if key.kind != ED25519_TYPE {
            return Err(AuditError::Format(format!("{} is a witness's key, not a log's", key.name)));
        }
        let (body, signatures) = split_note(note)?;
        let hash = key.key_hash();
        let mut found = false;
        for line in signatures.lines() {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
                AuditError::Format("signed note: a signature line does not start with an em dash".into())
            })?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| AuditError::Format("signed note: a signature line has no signature".into()))?;
            let blob =
                STANDARD.decode(b64).map_err(|_| AuditError::Format("signed note: signature is not base64".into()))?;
            if name != key.name || blob.len() < 4 || blob[..4] != hash {
                continue;
            }
            found = true;
            UnparsedPublicKey::new(&ED25519, &key.public_key)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| AuditError::BadSignature { name: key.name.clone() })?;
        }
        if !found {
            return Err(AuditError::NoSignature { name: key.name.clone() });
        }
        let checkpoint = Checkpoint::parse(body)?;
        if checkpoint.origin != key.name {
            return Err(AuditError::Format(format!(
                "checkpoint origin {:?} is not the key's name {:?}",
                checkpoint.origin, key.name
            )));
        }
        Ok(checkpoint)
    }
}

/// Splits a signed note into its body (with final newline) and its signature lines.
pub(crate) fn split_note(note: &str) -> Result<(&str, &str), AuditError> {
    let at =
        note.rfind("\n\n").ok_or_else(|| AuditError::Format("signed note: no blank line before signatures".into()))?;
    let (body, sigs) = (&note[..=at], &note[at + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(AuditError::Format("signed note: signatures missing or not newline-terminated".into()));
    }
    Ok((body, sigs))
}

/// A public key as signed notes name it: `name+hash+base64(type || key)`;
/// type 0x01 for a log's Ed25519 key, 0x04 for a witness's cosignature/v1 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name: the log origin, or the witness's name.
    pub name: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The signature type byte: 0x01 (a note signature) or 0x04 (a cosignature).
    pub kind: u8,
}

impl VerifierKey {
    /// A verifier key for an Ed25519 public key.
    pub fn new(name: &str, public_key: &[u8]) -> Result<VerifierKey, AuditError> {
        if public_key.len() != 32 {
            return Err(AuditError::Format("an Ed25519 public key has 32 bytes".into()));
        }
        if name.is_empty() || name.contains(['+', ' ', '\n']) {
            return Err(AuditError::Format(format!("{name:?} cannot name a note key")));
        }
        Ok(VerifierKey { name: name.to_string(), public_key: public_key.to_vec(), kind: ED25519_TYPE })
    }

    /// A witness's cosignature/v1 key (type 0x04) for an Ed25519 public key.
    pub fn cosigner(name: &str, public_key: &[u8]) -> Result<VerifierKey, AuditError> {
        Ok(VerifierKey { kind: COSIGNATURE_TYPE, ..VerifierKey::new(name, public_key)? })
    }

    /// The 4-byte key hash: SHA-256(name || "\n" || type || key)[..4].
    pub fn key_hash(&self) -> [u8; 4] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.name.as_bytes());
        ctx.update(b"\n");
        ctx.update(&[self.kind]);
        ctx.update(&self.public_key);
        let d = ctx.finish();
        [d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]
    }

    /// Parses `name+hash+base64key`, checking the hash.
    pub fn parse(text: &str) -> Result<VerifierKey, AuditError> {
        let bad = |what: &str| AuditError::Format(format!("verifier key: {what}"));
        // Base64 uses '+' too: only the first two separate fields.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+hash+key"));
        };
        let raw = STANDARD.decode(b64).map_err(|_| bad("key is not base64"))?;
        let key = match raw.split_first() {
            Some((&ED25519_TYPE, public_key)) => VerifierKey::new(name, public_key)?,
            Some((&COSIGNATURE_TYPE, public_key)) => VerifierKey::cosigner(name, public_key)?,
            _ => return Err(bad("only Ed25519 keys (type 0x01, or 0x04 for a witness) are supported")),
        };
        if hash != hex::encode(key.key_hash()) {
            return Err(bad("the hash does not match the name and key"));
        }
        Ok(key)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.kind];
        raw.extend_from_slice(&self.public_key);
        write!(f, "{}+{}+{}", self.name, hex::encode(self.key_hash()), STANDARD.encode(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> (Ed25519KeyPair, VerifierKey) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let vkey = VerifierKey::new("ca.example/audit", pair.public_key().as_ref()).expect("vkey");
        (pair, vkey)
    }

    fn signed(pair: &Ed25519KeyPair, vkey: &VerifierKey, cp: &Checkpoint) -> String {
        cp.sign(vkey, |m| Ok::<_, String>(pair.sign(m).as_ref().to_vec())).expect("sign")
    }

    #[test]
    fn go_sumdb_verifier_key_vector() {
        // From golang.org/x/mod/sumdb/note's documentation.
        let k = VerifierKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .expect("the Go example key parses");
        assert_eq!(k.name, "PeterNeumann");
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let (body, _) = split_note(note).expect("split");
        let blob = STANDARD
            .decode("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=")
            .expect("b64");
        assert_eq!(blob[..4], k.key_hash());
        UnparsedPublicKey::new(&ED25519, &k.public_key)
            .verify(body.as_bytes(), &blob[4..])
            .expect("Go's note verifies");
        assert_eq!(VerifierKey::parse(&k.to_string()).expect("round trip"), k);
    }

    #[test]
    fn verifier_keys_whose_base64_holds_a_plus_round_trip() {
        let k = (0u8..=255)
            .map(|b| VerifierKey::new("o/audit", &[b; 32]).expect("key"))
            .find(|k| k.to_string().matches('+').count() > 2)
            .expect("some key's base64 has a '+'");
        assert_eq!(VerifierKey::parse(&k.to_string()).expect("parses"), k);
    }

    #[test]
    fn signed_checkpoints_open_and_tampering_is_caught() {
        let (pair, vkey) = key();
        let cp = Checkpoint { origin: vkey.name.clone(), size: 12, root: [7; 32] };
        let note = signed(&pair, &vkey, &cp);
        assert!(note.starts_with("ca.example/audit\n12\nBwcH"));
        assert_eq!(Checkpoint::open(&note, &vkey).expect("opens"), cp);

        let bigger = note.replacen("\n12\n", "\n13\n", 1);
        assert!(matches!(Checkpoint::open(&bigger, &vkey), Err(AuditError::BadSignature { .. })));
        let (_, other) = key();
        let other = VerifierKey::new("ca.example/audit", &other.public_key).expect("vkey");
        assert!(matches!(Checkpoint::open(&note, &other), Err(AuditError::NoSignature { .. })));
        assert!(Checkpoint::open("garbage", &vkey).is_err());
        assert!(Checkpoint::parse("o\n012\nAAAA\n").is_err());
    }
}
