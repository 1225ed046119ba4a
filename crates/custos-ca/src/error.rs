use std::path::PathBuf;

use custos_keys::KeyError;
use custos_pki::PkiError;
use custos_store::StoreError;

/// What went wrong in a custos operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// `init` on a store that already holds a custos.
    #[error("the database already holds an initialized custos; refusing to overwrite it")]
    AlreadyInitialized,
    /// Any operation but `init` on a store that holds no custos.
    #[error("the database holds no custos (run `custos init` first)")]
    NotInitialized,
    /// The principal's role does not allow the operation.
    #[error("{actor} may not {operation}")]
    Forbidden {
        /// Who asked.
        actor: String,
        /// What was refused.
        operation: String,
    },
    /// No valid credentials: the reason is for the log, never for the client.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The action needs a second admin's approval of request `id`.
    #[error(
        "this needs a second admin's approval (two admins exist): request {id} by {requested_by} is waiting; another admin runs `custos approve {id}` (or POST /api/v1/approvals/{id}/approve), then run this again"
    )]
    ApprovalRequired {
        /// The request to approve.
        id: String,
        /// Who requested it.
        requested_by: String,
    },
    /// No such approval request.
    #[error("no approval request {0:?} (see `custos approvals`)")]
    UnknownApproval(String),
    /// No key with this id.
    #[error("no key {0:?} (see `custos keys list`)")]
    UnknownKey(String),
    /// An update named a version of an object (an ETag) that is no longer current.
    #[error("{0} changed since it was read; read it again (its ETag is now {1})")]
    Changed(String, String),
    /// An update that must name the version it changes named none.
    #[error("{0}: an update must name the version it changes (If-Match with its ETag, from a GET)")]
    PreconditionRequired(String),
    /// No such active operator.
    #[error("no active operator {0:?} (see `custos operator list`)")]
    UnknownOperator(String),
    /// No such API token (or it was revoked already).
    #[error("no unrevoked token {0:?} (see `custos token list`)")]
    UnknownToken(String),
    /// The object belongs to another tenant; the principal may not learn it exists.
    #[error("not found")]
    NotVisible {
        /// Who asked (for logs, not for the answer).
        actor: String,
    },
    /// A name that is not a valid tenant or connection name.
    #[error(
        "invalid {kind} name {name:?}: use 1-63 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit"
    )]
    InvalidName {
        /// `tenant` or `connection`.
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// No such tenant.
    #[error("unknown tenant {0:?} (see `custos tenant list`)")]
    UnknownTenant(String),
    /// No such connection.
    #[error("unknown connection {tenant}/{connection} (see `custos connection list {tenant}`)")]
    UnknownConnection {
        /// Tenant name.
        tenant: String,
        /// Connection name.
        connection: String,
    },
    /// No certificate with this serial.
    #[error("no certificate with serial {0}")]
    UnknownCertificate(String),
    /// No issuer with this id.
    #[error("unknown issuer {0:?} (see `custos ca list`)")]
    UnknownIssuer(String),
    /// No such incident (or none the principal may see).
    #[error("no incident {0:?} (see `custos incident list`)")]
    UnknownIncident(String),
    /// The request breaks the connection's or the profile's policy.
    #[error("policy refused the request: {0}")]
    Policy(String),
    /// A line of a bulk request file failed; nothing from the file was issued.
    #[error("line {line}: {source}")]
    BulkLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        #[source]
        source: Box<CaError>,
    },
    /// Key custody failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A name that is not one of its kind's (a profile, a state, a reason).
    #[error(transparent)]
    Name(#[from] custos_types::UnknownName),
    /// X.509 encoding or checking failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation signs, and the key store is not unsealed in this process.
    #[error("the key store is sealed; unseal it before signing")]
    KeyStoreSealed,
    /// Results (with generated keys) could not be written before their batch
    /// committed, so the batch was not committed: nothing of it was issued.
    #[error("writing the results failed, so their batch was not committed (nothing of it was issued): {0}")]
    ResultsNotWritten(#[source] std::io::Error),
    /// A file or directory could not be used.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The audit log does not verify; names the first bad index.
    #[error(transparent)]
    AuditLog(#[from] custos_audit::VerifyError),
    /// Audit log data (a checkpoint, key or tile) is malformed or does not verify.
    #[error(transparent)]
    AuditFormat(#[from] custos_audit::AuditError),
    /// Something stored contradicts something else.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

impl From<custos_keys::UnsupportedAlgorithm> for CaError {
    fn from(e: custos_keys::UnsupportedAlgorithm) -> Self {
        CaError::Keys(e.into())
    }
}

impl CaError {
    /// Whether the change collided with an existing object or state (a
    /// duplicate name, a state that does not allow it): the caller's to fix.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CaError::Store(StoreError::Duplicate { .. } | StoreError::Conflict { .. }))
    }

    /// Whether the storage is unavailable (down, full, deleted): try later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CaError::Store(StoreError::Unavailable(_)))
    }
}
