//! Who may do what: one decision for every operation, deny by default.
//!
//! Each public operation of [`crate::Ca`] names its [`Operation`] and asks
//! [`authorize`] before it reads tenant data or changes anything. The rules
//! are one `match` so they can be read (and tested) as a table:
//!
//! - the local CLI administrator and an `admin` operator may do everything;
//! - an `operator` manages tenants, connections and certificates, declares
//!   incidents and reads the inventory, but does not touch CAs, keys,
//!   incident execution or the audit log's details;
//! - an `auditor` reads everything and changes nothing;
//! - a tenant account reaches only its own tenant (and connection, if scoped):
//!   list, issue by CSR, revoke its own, read and acknowledge incidents, and,
//!   with a token scoped to one connection, sign with that connection's key. Another
//!   tenant's objects are reported as not found, so names do not leak;
//! - an ACME account reaches only the tenant (and connection) its External
//!   Account Binding named: it issues by CSR, revokes and reads those
//!   certificates, and nothing else;
//! - custos itself (background jobs) signs OCSP, CRLs and checkpoints,
//!   delivers notifications, rotates connection keys past their age,
//!   counts the figures `/metrics` shows and reads its own log (to write
//!   each committed change to the service log), and nothing else;
//! - the figures and metrics (counts only) are for admins, operators and
//!   auditors, never for tenants or ACME accounts.

use crate::{CaError, Principal, Role};

/// What an operation touches, to decide who may run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation<'a> {
    /// Create the CAs and the key store (`init`).
    Initialize,
    /// Add a tenant.
    AddTenant,
    /// Read tenants: one (`Some`) or all.
    ReadTenants(Option<&'a str>),
    /// Add a connection to a tenant, or change its policy or webhook.
    ManageConnection {
        /// The tenant.
        tenant: &'a str,
    },
    /// Read connections: of one tenant, or of all.
    ReadConnections(Option<&'a str>),
    /// Issue a certificate to a connection.
    Issue {
        /// The tenant.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
        /// Whether custos generates the key (and hands it out) rather than signing a CSR.
        generated_key: bool,
    },
    /// Revoke certificates of a connection.
    Revoke {
        /// The tenant.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
    },
    /// Read certificates: of one tenant (and connection), or of all.
    ReadCertificates {
        /// The tenant, if the read is limited to one.
        tenant: Option<&'a str>,
        /// The connection, if the read is limited to one.
        connection: Option<&'a str>,
    },
    /// Read the CAs (public anyway: they are served on the plain listener).
    ReadIssuers,
    /// Read the key inventory and key usage.
    ReadKeys,
    /// Sign a CRL on demand.
    SignCrl,
    /// Read the audit log's entries, proofs and details.
    ReadAudit,
    /// Sign an audit checkpoint.
    SignCheckpoint,
    /// Declare an incident (changes nothing but the record).
    DeclareIncident,
    /// Execute an incident: new CAs, revocations, new keys.
    ExecuteIncident,
    /// Close an incident.
    CloseIncident,
    /// Read incidents (all, or those touching one tenant).
    ReadIncidents(Option<&'a str>),
    /// Acknowledge that a connection's replacement is in place.
    AcknowledgeIncident {
        /// The tenant.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
    },
    /// Deliver pending notifications.
    DeliverNotifications,
    /// Keep OCSP responses, responder certificates and CRLs current.
    PublishStatus,
    /// Block a key by hand so that it is never certified again.
    BlockKey,
    /// Change how the key store is sealed (its passphrase).
    ManageKeyStore,
    /// Create and revoke API tokens and operators.
    ManageAccess,
    /// List API tokens and operators (never a secret).
    ReadAccess,
    /// Approve another admin's request (the two-person rule).
    Approve,
    /// Rotate custodied connection keys past their maximum age (promote the standby).
    RotateCustodyKeys,
    /// Make an External Account Binding key for ACME clients of a tenant (and connection).
    CreateAcmeBinding {
        /// The tenant.
        tenant: &'a str,
        /// The connection the accounts are limited to, if any.
        connection: Option<&'a str>,
    },
    /// Read the service's figures and metrics (counts, never a tenant's objects).
    ReadMetrics,
    /// Sign with a connection's custodied key (a client assertion, a digest).
    Sign {
        /// The tenant.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
    },
}

impl Operation<'_> {
    /// A short name for errors and the role table.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Initialize => "initialize",
            Operation::AddTenant => "add a tenant",
            Operation::ReadTenants(_) => "read tenants",
            Operation::ManageConnection { .. } => "manage connections",
            Operation::ReadConnections(_) => "read connections",
            Operation::Issue { .. } => "issue",
            Operation::Revoke { .. } => "revoke",
            Operation::ReadCertificates { .. } => "read certificates",
            Operation::ReadIssuers => "read issuers",
            Operation::ReadKeys => "read keys",
            Operation::SignCrl => "sign a CRL",
            Operation::ReadAudit => "read the audit log",
            Operation::SignCheckpoint => "sign a checkpoint",
            Operation::DeclareIncident => "declare an incident",
            Operation::ExecuteIncident => "execute an incident",
            Operation::CloseIncident => "close an incident",
            Operation::ReadIncidents(_) => "read incidents",
            Operation::AcknowledgeIncident { .. } => "acknowledge an incident",
            Operation::DeliverNotifications => "deliver notifications",
            Operation::PublishStatus => "publish OCSP and CRLs",
            Operation::BlockKey => "block a key",
            Operation::ManageKeyStore => "manage the key store",
            Operation::ManageAccess => "manage tokens and operators",
            Operation::ReadAccess => "read tokens and operators",
            Operation::Approve => "approve a request",
            Operation::Sign { .. } => "sign with a connection key",
            Operation::RotateCustodyKeys => "rotate connection keys",
            Operation::CreateAcmeBinding { .. } => "create an ACME account binding",
            Operation::ReadMetrics => "read metrics",
        }
    }
}

/// The answer for one principal and one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It may.
    Allow,
    /// It may not, and may know that the object exists.
    Deny,
    /// It may not, and must not learn that the object exists (another tenant's).
    Hide,
}

/// Decides; deny by default.
pub fn decide(principal: &Principal, operation: &Operation<'_>) -> Decision {
    use Decision::{Allow, Deny, Hide};
    use Operation as O;
    match principal {
        Principal::LocalAdmin { .. } | Principal::Operator { role: Role::Admin, .. } => Allow,
        Principal::Operator { role: Role::Operator, .. } => match operation {
            O::AddTenant
            | O::ReadTenants(_)
            | O::ManageConnection { .. }
            | O::ReadConnections(_)
            | O::Issue { .. }
            | O::Revoke { .. }
            | O::ReadCertificates { .. }
            | O::ReadIssuers
            | O::DeclareIncident
            | O::ReadIncidents(_)
            | O::AcknowledgeIncident { .. }
            | O::CreateAcmeBinding { .. }
            | O::ReadMetrics
            | O::Sign { .. } => Allow,
            _ => Deny,
        },
        Principal::Operator { role: Role::Auditor, .. } => match operation {
            O::ReadTenants(_)
            | O::ReadConnections(_)
            | O::ReadCertificates { .. }
            | O::ReadIssuers
            | O::ReadKeys
            | O::ReadAudit
            | O::ReadAccess
            | O::ReadMetrics
            | O::ReadIncidents(_) => Allow,
            _ => Deny,
        },
        Principal::Tenant { tenant: own, connection: own_connection, .. } => {
            let tenant_ok = |t: &str| t == own;
            let connection_ok = |c: &str| own_connection.as_deref().is_none_or(|own| own == c);
            match *operation {
                O::ReadTenants(Some(t)) | O::ReadConnections(Some(t)) | O::ReadIncidents(Some(t)) => {
                    if tenant_ok(t) {
                        Allow
                    } else {
                        Hide
                    }
                }
                O::ReadCertificates { tenant: Some(t), connection } => {
                    if tenant_ok(t) && connection.is_none_or(connection_ok) { Allow } else { Hide }
                }
                // A tenant issues only by CSR: custos never hands a tenant a key it generated over the API.
                O::Issue { tenant, connection, generated_key: false }
                | O::Revoke { tenant, connection }
                | O::AcknowledgeIncident { tenant, connection } => {
                    if tenant_ok(tenant) && connection_ok(connection) {
                        Allow
                    } else {
                        Hide
                    }
                }
                // A connection's key signs only for a service holding a token
                // scoped to that connection: a tenant-wide token may not.
                O::Sign { tenant, connection } => match own_connection.as_deref() {
                    Some(own) if tenant_ok(tenant) && own == connection => Allow,
                    None if tenant_ok(tenant) => Deny,
                    _ => Hide,
                },
                O::Issue { tenant, generated_key: true, .. } => {
                    if tenant_ok(tenant) {
                        Deny
                    } else {
                        Hide
                    }
                }
                // A service may bind ACME clients to what it may reach itself.
                O::CreateAcmeBinding { tenant, connection } => {
                    match (tenant_ok(tenant), own_connection.as_deref(), connection) {
                        (false, _, _) => Hide,
                        (true, None, _) => Allow,
                        (true, Some(own), Some(c)) if own == c => Allow,
                        (true, Some(_), Some(_)) => Hide,
                        (true, Some(_), None) => Deny,
                    }
                }
                O::ReadIssuers => Allow,
                _ => Deny,
            }
        }
        Principal::AcmeAccount { tenant: own, connection: own_connection, .. } => {
            let mine = |t: &str, c: &str| t == own && own_connection.as_deref().is_none_or(|o| o == c);
            match *operation {
                O::Issue { tenant, connection, generated_key: false }
                | O::Revoke { tenant, connection }
                | O::ReadCertificates { tenant: Some(tenant), connection: Some(connection) } => {
                    if mine(tenant, connection) { Allow } else { Hide }
                }
                O::ReadIssuers => Allow,
                _ => Deny,
            }
        }
        Principal::System => match operation {
            O::PublishStatus
            | O::SignCrl
            | O::SignCheckpoint
            | O::DeliverNotifications
            | O::ReadIssuers
            | O::ReadMetrics
            | O::ReadAudit
            | O::RotateCustodyKeys => Allow,
            _ => Deny,
        },
    }
}

/// Allows `operation` for `principal`, or says why not.
pub fn authorize(principal: &Principal, operation: Operation<'_>) -> Result<(), CaError> {
    match decide(principal, &operation) {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(CaError::Forbidden { actor: principal.actor(), operation: operation.name().to_string() }),
        Decision::Hide => Err(CaError::NotVisible { actor: principal.actor() }),
    }
}
