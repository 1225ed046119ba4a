//! Who acts: every custos-ca operation that reads tenant data or changes
//! state takes a [`Principal`], and the audit entry's actor is its
//! [`Principal::actor`]. What each may do is decided in
//! [`crate::authorization`].

use std::fmt;
use std::str::FromStr;

use crate::CaError;

/// An operator's role: what the operator may do (see [`crate::authorization`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including CA and key operations.
    Admin,
    /// Tenants, connections, issue, revoke, declare incidents, read inventory.
    Operator,
    /// Read-only access to everything, the audit log's details included.
    Auditor,
}

impl Role {
    /// Every role, for tables and help texts.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Auditor];

    /// The role's name as configuration and output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            other => Err(CaError::Policy(format!("unknown role {other:?}: expected admin, operator or auditor"))),
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A named operator with a role (authenticated by the API).
    Operator {
        /// The operator's name (its certificate subject or token id).
        name: String,
        /// What it may do.
        role: Role,
    },
    /// A tenant's service account: its own tenant only, optionally one connection.
    Tenant {
        /// The account's id (a token id, or `webhook-hmac` for the signed ack).
        account: String,
        /// The tenant it belongs to.
        tenant: String,
        /// The one connection it is limited to, if any.
        connection: Option<String>,
    },
    /// An ACME account, bound by External Account Binding to a tenant
    /// (and a connection, if the binding named one); or, for a revocation
    /// signed by a certificate's own key, that key (`key:THUMBPRINT`).
    AcmeAccount {
        /// The account id, or `key:` and the JWK thumbprint.
        account: String,
        /// The tenant it is bound to.
        tenant: String,
        /// The one connection it is limited to, if any.
        connection: Option<String>,
    },
    /// The administrator of the local CLI, identified by the OS (uid), never by `$USER`.
    LocalAdmin {
        /// The real user id of the process.
        uid: u32,
        /// The user name the OS gives that uid, if any.
        user: Option<String>,
    },
    /// custos itself: background jobs (OCSP and CRL signing, checkpoints, notifications).
    System,
}

impl Principal {
    /// The local administrator: the real uid of this process and its name from the password database.
    pub fn local() -> Principal {
        let uid = current_uid();
        Principal::LocalAdmin { uid, user: user_name(uid) }
    }

    /// What the audit log records as the actor.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator { name, role } => format!("operator:{name}({role})"),
            Principal::Tenant { account, tenant, connection: None } => format!("tenant:{tenant}[{account}]"),
            Principal::Tenant { account, tenant, connection: Some(c) } => format!("tenant:{tenant}/{c}[{account}]"),
            Principal::AcmeAccount { account, tenant, connection: None } => format!("acme:{tenant}[{account}]"),
            Principal::AcmeAccount { account, tenant, connection: Some(c) } => format!("acme:{tenant}/{c}[{account}]"),
            Principal::LocalAdmin { uid, user: Some(user) } => format!("local:uid={uid}({user})"),
            Principal::LocalAdmin { uid, user: None } => format!("local:uid={uid}"),
            Principal::System => "custos".to_string(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.actor())
    }
}

/// The real uid of this process, read from /proc (custos forbids unsafe code, so no getuid(2)).
pub fn current_uid() -> u32 {
    // `Uid:\treal\teffective\tsaved\tfs`; the real uid says who ran the command.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
        // Without /proc no uid can be read without unsafe code: the actor then says uid=4294967295.
        .unwrap_or(u32::MAX)
}

/// The name /etc/passwd gives `uid`, if any.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}
