//! Recomputing a log from its entries and checking it against checkpoints.
//!
//! The same [`Verifier`] serves `custos audit verify` on the database (which
//! also has stored leaf hashes to compare) and on a remote custos's tiles
//! (entry bytes only). It names the first index at which the log stops being
//! the log the checkpoints signed.

use std::collections::BTreeMap;

use crate::entry::leading_index;
use crate::merkle::{Frontier, Hash, leaf_hash};

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log fails verification at index {index}: {reason}")]
pub struct VerifyError {
    /// The first index known to be bad (or the first missing one).
    pub index: u64,
    /// What is wrong there.
    pub reason: String,
}

/// A root the recomputed tree must reach at a given size.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Root hash at that size.
    pub root: Hash,
    /// Where the expectation comes from, for messages (`checkpoint 120`, `the saved checkpoint`).
    pub source: String,
}

impl Expected {
    /// The root a checkpoint saved earlier commits to, once its signature by `key` checks out.
    pub fn saved(note: &str, key: &crate::VerifierKey) -> Result<(u64, Expected), VerifyError> {
        let cp = crate::Checkpoint::open(note, key)
            .map_err(|e| VerifyError { index: 0, reason: format!("the saved checkpoint does not verify: {e}") })?;
        Ok((cp.size, Expected { root: cp.root, source: format!("the saved checkpoint ({})", cp.size) }))
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Entries recomputed.
    pub size: u64,
    /// Root of all of them.
    pub root: Hash,
    /// Checkpoint roots matched.
    pub checkpoints: usize,
}

/// Recomputes a tree entry by entry and checks expected roots as it passes them.
pub struct Verifier {
    frontier: Frontier,
    expected: BTreeMap<u64, Vec<Expected>>,
    /// Size of the last checked expectation, to bound where a bad entry is.
    last_good: u64,
    matched: usize,
    /// A failure found before the first entry (a bad checkpoint of the empty tree).
    pending: Option<VerifyError>,
}

impl Verifier {
    /// A verifier for a log that must reach `expected` roots at their sizes.
    pub fn new(expected: impl IntoIterator<Item = (u64, Expected)>) -> Verifier {
        let mut map: BTreeMap<u64, Vec<Expected>> = BTreeMap::new();
        for (size, e) in expected {
            map.entry(size).or_default().push(e);
        }
        let mut v = Verifier { frontier: Frontier::default(), expected: map, last_good: 0, matched: 0, pending: None };
        // A checkpoint of the empty tree is checked before any entry.
        v.pending = v.check_expected().err();
        v
    }

    /// Entries pushed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Adds the entry at `index` (which must be the next one) from its bytes;
    /// `stored_leaf` is the leaf hash the database holds, if any.
    pub fn push(&mut self, index: u64, bytes: &[u8], stored_leaf: Option<&[u8]>) -> Result<(), VerifyError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let next = self.frontier.size();
        if index != next {
            return Err(VerifyError {
                index: next,
                reason: format!("entry {next} is missing (next entry found is {index})"),
            });
        }
        // Only the index is read: the leaf hash covers every other byte, and
        // a full parse would double the cost of verifying a large log.
        match leading_index(bytes) {
            Some(i) if i == index => {}
            Some(i) => {
                return Err(VerifyError { index, reason: format!("entry at position {index} says it is entry {i}") });
            }
            None => {
                return Err(VerifyError { index, reason: "malformed entry: it does not start with its index".into() });
            }
        }
        let leaf = leaf_hash(bytes);
        if let Some(stored) = stored_leaf
            && stored != leaf
        {
            return Err(VerifyError {
                index,
                reason: "content does not match its stored leaf hash (changed, or moved from another index)".into(),
            });
        }
        self.frontier.push(leaf);
        self.check_expected()
    }

    fn check_expected(&mut self) -> Result<(), VerifyError> {
        let size = self.frontier.size();
        let Some(list) = self.expected.get(&size) else { return Ok(()) };
        let root = self.frontier.root();
        for e in list {
            if e.root != root {
                let first = self.last_good;
                return Err(VerifyError {
                    index: first,
                    reason: format!(
                        "the entries do not lead to the root of {} (size {size}): an entry in [{first}, {size}) differs from what was signed",
                        e.source
                    ),
                });
            }
            self.matched += 1;
        }
        self.last_good = size;
        Ok(())
    }

    /// Ends verification: any expected size beyond the last entry means the log was truncated.
    pub fn finish(self) -> Result<Verified, VerifyError> {
        if let Some(e) = self.pending {
            return Err(e);
        }
        let size = self.frontier.size();
        if let Some((&beyond, list)) = self.expected.range(size + 1..).next() {
            return Err(VerifyError {
                index: size,
                reason: format!(
                    "the log ends at {size} entries but {} covers {beyond}: entries from index {size} on are missing (truncated)",
                    list[0].source
                ),
            });
        }
        Ok(Verified { size, root: self.frontier.root(), checkpoints: self.matched })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryFields;

    fn entry(i: u64, action: &str) -> Vec<u8> {
        EntryFields { index: i, time: 1, actor: "a", action, object: "o", key: None, details: "{}", salt: None }
            .encode()
            .expect("encode")
    }

    fn root_of(entries: &[Vec<u8>]) -> Hash {
        let mut f = Frontier::default();
        entries.iter().for_each(|e| {
            f.push(leaf_hash(e));
        });
        f.root()
    }

    fn run(entries: &[Vec<u8>], expected: Vec<(u64, Hash)>) -> Result<Verified, VerifyError> {
        let mut v = Verifier::new(
            expected.into_iter().map(|(s, root)| (s, Expected { root, source: format!("checkpoint {s}") })),
        );
        for (i, e) in entries.iter().enumerate() {
            let index = leading_index(e).unwrap_or(i as u64);
            v.push(index, e, None)?;
        }
        v.finish()
    }

    #[test]
    fn honest_log_verifies_and_each_tampering_names_its_index() {
        let log: Vec<Vec<u8>> = (0..20).map(|i| entry(i, "x")).collect();
        let cps = vec![(5, root_of(&log[..5])), (12, root_of(&log[..12])), (20, root_of(&log))];
        assert_eq!(run(&log, cps.clone()).expect("honest").checkpoints, 3);

        let mut changed = log.clone();
        changed[7] = entry(7, "y");
        let e = run(&changed, cps.clone()).expect_err("changed");
        assert_eq!(e.index, 5, "bad entry is bounded by the checkpoints around it: {e}");

        let mut deleted = log.clone();
        deleted.remove(9);
        assert_eq!(run(&deleted, cps.clone()).expect_err("deleted").index, 9);

        let e = run(&log[..15], cps.clone()).expect_err("truncated");
        assert_eq!(e.index, 15);
        assert!(e.reason.contains("truncated"), "{e}");

        let mut swapped = log.clone();
        swapped.swap(3, 4);
        assert_eq!(run(&swapped, cps).expect_err("reordered").index, 3);
    }

    #[test]
    fn stored_leaf_hashes_pin_the_exact_entry() {
        let log: Vec<Vec<u8>> = (0..4).map(|i| entry(i, "x")).collect();
        let mut v = Verifier::new([]);
        v.push(0, &log[0], Some(&leaf_hash(&log[0]))).expect("good");
        let e = v.push(1, &entry(1, "evil"), Some(&leaf_hash(&log[1]))).expect_err("mismatch");
        assert_eq!(e.index, 1);
    }
}
