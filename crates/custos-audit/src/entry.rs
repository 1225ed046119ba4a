//! The bytes of one log entry: the leaf that is hashed, and what tiles serve.
//!
//! An entry is one line of JSON with a fixed field order, so the same columns
//! always give the same leaf, and a verifier reads the leaf without knowing
//! our schema. Two forms:
//!
//! - **public** (every entry written with a salt): index, time, action, the
//!   key used, and a `commitment`, SHA-256 over a random salt and the
//!   private part (actor, object, details). Anyone can check inclusion and
//!   consistency and count a key's uses; tenant and connection names, SANs,
//!   URLs and notes are not in what the tiles serve. Whoever holds the
//!   private part and the salt (`audit verify` on the database, an auditor)
//!   recomputes the commitment, so the private part is bound to the leaf.
//! - **clear** (entries written before salts, kept as they were hashed):
//!   every field, `details` embedded byte for byte.

use serde_json::value::RawValue;

use crate::AuditError;

/// The most an entry may take: entry bundles prefix each entry with a 16-bit length.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// One entry as its columns hold it, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct EntryFields<'a> {
    /// Position in the log, from 0.
    pub index: u64,
    /// Unix seconds.
    pub time: i64,
    /// Who did it.
    pub actor: &'a str,
    /// What was done (`certificate.issue`, `crl.sign`, ...).
    pub action: &'a str,
    /// What it was done to (`cert:SERIAL`, ...).
    pub object: &'a str,
    /// The key used or changed, if any.
    pub key: Option<&'a str>,
    /// Structured details: a JSON object, kept byte for byte.
    pub details: &'a str,
    /// The salt of the commitment: `Some` for a public entry, `None` for a
    /// clear one written before entries were salted.
    pub salt: Option<&'a [u8]>,
}

/// The salt a new entry's commitment takes.
pub const SALT_BYTES: usize = 16;

/// A fresh random salt for a new entry.
pub fn new_salt() -> Result<[u8; SALT_BYTES], AuditError> {
    let mut salt = [0u8; SALT_BYTES];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| AuditError::Format("no randomness for an entry salt".into()))?;
    Ok(salt)
}

impl EntryFields<'_> {
    /// The canonical bytes of the entry; refuses details that are not JSON
    /// and entries too large for an entry bundle.
    pub fn encode(&self) -> Result<Vec<u8>, AuditError> {
        let _: &RawValue = serde_json::from_str(self.details)
            .map_err(|e| AuditError::Entry { index: self.index, reason: format!("details are not JSON: {e}") })?;
        // The private part is bounded as a clear entry would be, so that what
        // an auditor is shown stays as small as what a tile may carry.
        let private = 96 + self.actor.len() + self.object.len() + self.details.len();
        if private > MAX_ENTRY_BYTES {
            return Err(AuditError::Entry {
                index: self.index,
                reason: format!("{private} bytes is more than an entry may hold ({MAX_ENTRY_BYTES})"),
            });
        }
        let mut out = Vec::with_capacity(private);
        self.write_unchecked(&mut out);
        if out.len() > MAX_ENTRY_BYTES {
            return Err(AuditError::Entry {
                index: self.index,
                reason: format!("{} bytes is more than an entry may hold ({MAX_ENTRY_BYTES})", out.len()),
            });
        }
        Ok(out)
    }

    /// SHA-256 over the label, the salt and the private part (actor, object,
    /// details, each length-prefixed): what a public entry commits to.
    pub fn commitment(&self, salt: &[u8]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"custos-audit-commitment-v1\n");
        for part in [salt, self.actor.as_bytes(), self.object.as_bytes(), self.details.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Appends the canonical bytes to `out` without checking the details or
    /// the size: for re-hashing entries that [`encode`](Self::encode) checked
    /// when they were written (a verifier compares hashes, so a damaged
    /// entry still fails there).
    pub fn write_unchecked(&self, out: &mut Vec<u8>) {
        if let Some(salt) = self.salt {
            out.extend_from_slice(b"{\"index\":");
            out.extend_from_slice(self.index.to_string().as_bytes());
            out.extend_from_slice(b",\"time\":");
            out.extend_from_slice(self.time.to_string().as_bytes());
            out.extend_from_slice(b",\"action\":");
            let _ = serde_json::to_writer(&mut *out, self.action);
            out.extend_from_slice(b",\"key\":");
            match self.key {
                Some(k) => {
                    let _ = serde_json::to_writer(&mut *out, k);
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"commitment\":\"");
            out.extend_from_slice(hex::encode(self.commitment(salt)).as_bytes());
            out.extend_from_slice(b"\"}");
            return;
        }
        out.extend_from_slice(b"{\"index\":");
        out.extend_from_slice(self.index.to_string().as_bytes());
        out.extend_from_slice(b",\"time\":");
        out.extend_from_slice(self.time.to_string().as_bytes());
        for (name, value) in [("actor", Some(self.actor)), ("action", Some(self.action)), ("object", Some(self.object))]
            .into_iter()
            .chain([("key", self.key)])
        {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            match value {
                // Writing a str into a Vec cannot fail.
                Some(v) => {
                    let _ = serde_json::to_writer(&mut *out, v);
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"details\":");
        out.extend_from_slice(self.details.as_bytes());
        out.push(b'}');
    }
}

/// The index an entry's bytes start with (`{"index":N,`), read without parsing the rest.
pub fn leading_index(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.strip_prefix(b"{\"index\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b',' || (end > 1 && rest[0] == b'0') {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Appends one entry to a C2SP entry bundle (16-bit big-endian length, then the bytes).
pub fn push_bundle(bundle: &mut Vec<u8>, entry: &[u8]) {
    // encode() bounds entries to u16; a longer one cannot reach here.
    let len = u16::try_from(entry.len()).unwrap_or(u16::MAX);
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(&entry[..usize::from(len)]);
}

/// Splits an entry bundle into its entries.
pub fn split_bundle(mut bundle: &[u8]) -> Result<Vec<&[u8]>, AuditError> {
    let mut out = Vec::new();
    while !bundle.is_empty() {
        let [a, b, rest @ ..] = bundle else {
            return Err(AuditError::Format("entry bundle ends inside a length".into()));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if rest.len() < len {
            return Err(AuditError::Format("entry bundle ends inside an entry".into()));
        }
        out.push(&rest[..len]);
        bundle = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(details: &str) -> EntryFields<'_> {
        EntryFields {
            index: 7,
            time: 1_790_000_000,
            actor: "cli:\"root\"",
            action: "crl.sign",
            object: "crl:issuing-1/0",
            key: Some("abcd"),
            details,
            salt: None,
        }
    }

    #[test]
    fn public_entries_commit_to_what_they_do_not_show() {
        let salt = [7u8; SALT_BYTES];
        let details = r#"{"tenant":"acme-corp","url":"https://hooks.acme.example/x"}"#;
        let public = EntryFields { salt: Some(&salt), ..fields(details) };
        let bytes = public.encode().expect("encode");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert_eq!(
            text,
            format!(
                r#"{{"index":7,"time":1790000000,"action":"crl.sign","key":"abcd","commitment":"{}"}}"#,
                hex::encode(public.commitment(&salt))
            )
        );
        for hidden in ["acme-corp", "hooks.acme", "root", "crl:issuing-1"] {
            assert!(!text.contains(hidden), "{hidden} is in the public entry");
        }
        assert_eq!(leading_index(&bytes), Some(7));
        // Any change to the private part, or another salt, changes the leaf.
        let other = r#"{"tenant":"acme-corp","url":"https://hooks.acme.example/y"}"#;
        assert_ne!(EntryFields { salt: Some(&salt), ..fields(other) }.encode().expect("encode"), bytes);
        assert_ne!(EntryFields { salt: Some(&[8u8; SALT_BYTES]), ..fields(details) }.encode().expect("encode"), bytes);
        assert_ne!(EntryFields { salt: Some(&salt), actor: "someone", ..fields(details) }.encode().expect("e"), bytes);
        // Length prefixes: moving bytes between fields changes the commitment.
        let a = EntryFields { actor: "ab", object: "c", ..fields("{}") }.commitment(&salt);
        let b = EntryFields { actor: "a", object: "bc", ..fields("{}") }.commitment(&salt);
        assert_ne!(a, b);
        assert_ne!(new_salt().expect("salt"), new_salt().expect("salt"));
    }

    #[test]
    fn encoding_is_fixed_and_round_trips() {
        let bytes = fields(r#"{"b":1,"a":[2]}"#).encode().expect("encode");
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf8"),
            r#"{"index":7,"time":1790000000,"actor":"cli:\"root\"","action":"crl.sign","object":"crl:issuing-1/0","key":"abcd","details":{"b":1,"a":[2]}}"#
        );
        assert_eq!(leading_index(&bytes), Some(7));
        assert_eq!(leading_index(b"{\"index\":07,"), None);
        assert_eq!(leading_index(b"{\"index\":7}"), None);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("an entry is JSON");
        assert_eq!(parsed["details"]["a"][0], 2);
    }

    #[test]
    fn bad_details_and_oversized_entries_are_refused() {
        assert!(fields("{not json").encode().is_err());
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_ENTRY_BYTES));
        assert!(fields(&big).encode().is_err());
    }

    #[test]
    fn bundles_split_back_and_reject_truncation() {
        let mut bundle = Vec::new();
        push_bundle(&mut bundle, b"one");
        push_bundle(&mut bundle, b"");
        push_bundle(&mut bundle, b"three");
        assert_eq!(split_bundle(&bundle).expect("split"), vec![&b"one"[..], b"", b"three"]);
        assert!(split_bundle(&bundle[..bundle.len() - 1]).is_err());
        assert!(split_bundle(&[0]).is_err());
    }
}
