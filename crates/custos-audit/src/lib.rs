//! The custos audit log format, without I/O: RFC 9162 Merkle hashing and
//! proofs ([`merkle`]), the canonical entry bytes ([`entry`]), C2SP
//! checkpoints in signed notes ([`note`]) and C2SP tlog-tiles paths ([`tiles`]).
//!
//! custos-store keeps the tree in the same transaction as each state change;
//! custos-ca signs checkpoints with the log key; the server serves tiles; the
//! CLI verifies, locally or from tiles alone. Written here rather than taken
//! from the `tlog_tiles`/`signed_note` crates, which are unmaintained and pull
//! in old base64/thiserror/rand_core (see docs/audit.md).

pub mod entry;
pub mod merkle;
pub mod note;
pub mod tiles;
pub mod verify;
pub mod witness;

pub use entry::{EntryFields, SALT_BYTES, new_salt};
pub use merkle::{Frontier, Hash, NodeId};
pub use note::{Checkpoint, VerifierKey};
pub use tiles::TileRef;
pub use verify::{Expected, Verified, Verifier, VerifyError};

/// What can be wrong with log data.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An entry cannot be encoded or decoded.
    #[error("audit entry {index}: {reason}")]
    Entry {
        /// The entry's index (u64::MAX when unknown).
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint, note, key or tile is malformed.
    #[error("{0}")]
    Format(String),
    /// The note carries no signature by this key.
    #[error("the note has no signature by key {name:?}")]
    NoSignature {
        /// Key name.
        name: String,
    },
    /// The key's signature on the note does not verify.
    #[error("the signature by key {name:?} does not verify")]
    BadSignature {
        /// Key name.
        name: String,
    },
    /// The signer failed.
    #[error("signing the checkpoint failed: {0}")]
    Sign(String),
    /// A Merkle proof failed.
    #[error(transparent)]
    Proof(#[from] merkle::ProofError),
}
