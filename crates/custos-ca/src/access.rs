//! Who may use the API: tokens for scripts and tenant services, and (in
//! [`crate::Ca::add_operator`]) operators with client certificates.
//!
//! A token is `tok_ID.SECRET`: the id (16 hex digits) is stored in clear so a
//! token can be listed and revoked, the secret (256 random bits, base64url) is
//! stored only as its SHA-256, so a copy of the database signs no one in.
//! Every request looks its token up in the database: a revocation or an
//! expiry holds on every node sharing it at the next request.

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use custos_types::TokenRecord;
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::{Operation, authorize};
use crate::{Ca, CaError, Principal, Result, Role, audit_record};

/// The longest a token may live: a year.
pub const MAX_TOKEN_TTL_SECS: i64 = 366 * 24 * 3600;

/// What a new token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// An operator role.
    Role(Role),
    /// A tenant's service account: its tenant only, optionally one connection.
    Tenant {
        /// The tenant.
        tenant: String,
        /// The one connection, if limited to one.
        connection: Option<String>,
    },
}

impl TokenScope {
    /// From the CLI's and the API's words: `--role ROLE [--tenant T] [--connection C]`.
    pub fn parse(role: &str, tenant: Option<&str>, connection: Option<&str>) -> Result<TokenScope> {
        match (role, tenant) {
            ("tenant", Some(t)) => {
                Ok(TokenScope::Tenant { tenant: t.to_string(), connection: connection.map(str::to_string) })
            }
            ("tenant", None) => Err(CaError::Policy("a tenant token needs the tenant it is for".into())),
            (_, Some(_)) => Err(CaError::Policy(format!(
                "a token for role {role} is not limited to a tenant: use role tenant for that"
            ))),
            (other, None) if connection.is_some() => {
                Err(CaError::Policy(format!("a connection is given only with role tenant, not {other}")))
            }
            (other, None) => other.parse::<Role>().map(TokenScope::Role).map_err(|_| {
                CaError::Policy(format!("unknown role {other:?}: expected admin, operator, auditor or tenant"))
            }),
        }
    }

    fn role_name(&self) -> &'static str {
        match self {
            TokenScope::Role(r) => r.as_str(),
            TokenScope::Tenant { .. } => "tenant",
        }
    }
}

/// A token just made: the only time its secret exists outside the caller.
#[derive(Debug)]
pub struct NewToken {
    /// The token as the client sends it: `tok_ID.SECRET`.
    pub token: String,
    /// What was stored.
    pub record: TokenRecord,
}

impl Ca {
    /// Makes a token for `scope`, valid `ttl_secs` (at most a year; `None`: a year).
    pub async fn create_token(
        &self,
        principal: &Principal,
        scope: &TokenScope,
        ttl_secs: Option<i64>,
    ) -> Result<NewToken> {
        authorize(principal, Operation::ManageAccess)?;
        let ttl = ttl_secs.unwrap_or(MAX_TOKEN_TTL_SECS);
        if ttl <= 0 || ttl > MAX_TOKEN_TTL_SECS {
            return Err(CaError::Policy(format!(
                "a token lives between 1 second and {MAX_TOKEN_TTL_SECS} seconds (a year); {ttl} asked"
            )));
        }
        if let TokenScope::Tenant { tenant, connection } = scope {
            if self.store.tenant(tenant).await?.is_none() {
                return Err(CaError::UnknownTenant(tenant.clone()));
            }
            if let Some(c) = connection
                && self.store.connection(tenant, c).await?.is_none()
            {
                return Err(CaError::UnknownConnection { tenant: tenant.clone(), connection: c.clone() });
            }
        }
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill(&mut id).map_err(|_| CaError::Inconsistent("the system random source failed".into()))?;
        rng.fill(&mut secret).map_err(|_| CaError::Inconsistent("the system random source failed".into()))?;
        let id = format!("tok_{}", hex::encode(id));
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (tenant, connection) = match scope {
            TokenScope::Tenant { tenant, connection } => (Some(tenant.clone()), connection.clone()),
            TokenScope::Role(_) => (None, None),
        };
        let record = TokenRecord {
            id: id.clone(),
            secret_sha256: sha256_hex(secret.as_bytes()),
            role: scope.role_name().to_string(),
            tenant,
            connection,
            created_at: now,
            expires_at: Some(now + ttl),
            revoked_at: None,
            created_by: principal.actor(),
        };
        let audit = audit_record(
            principal,
            "token.create",
            format!("token:{id}"),
            json!({"id": id, "role": record.role, "tenant": record.tenant, "connection": record.connection,
                   "expires_at": record.expires_at}),
        );
        self.store.add_token(&record, &audit).await?;
        Ok(NewToken { token: format!("{id}.{secret}"), record })
    }

    /// Every token (never a secret), oldest first.
    pub async fn tokens(&self, principal: &Principal) -> Result<Vec<TokenRecord>> {
        authorize(principal, Operation::ReadAccess)?;
        Ok(self.store.tokens().await?)
    }

    /// Revokes a token: refused from the next request on, on every node.
    pub async fn revoke_token(&self, principal: &Principal, id: &str) -> Result<()> {
        authorize(principal, Operation::ManageAccess)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let audit = audit_record(principal, "token.revoke", format!("token:{id}"), json!({"id": id}));
        self.store.revoke_token(id, now, &audit).await.map_err(|e| match e {
            custos_store::StoreError::NotFound { .. } => CaError::UnknownToken(id.to_string()),
            other => other.into(),
        })
    }

    /// Who a bearer token is, or why it is refused ([`CaError::Unauthenticated`]
    /// names the reason for the log; the client is told only that it failed).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal> {
        let refused = |why: &str| CaError::Unauthenticated(why.to_string());
        let (id, secret) = token.split_once('.').ok_or_else(|| refused("not a custos token (tok_ID.SECRET)"))?;
        if !id.starts_with("tok_") || id.len() != 20 || secret.len() != 43 {
            return Err(refused("not a custos token (tok_ID.SECRET)"));
        }
        let record = self.store.token(id).await?.ok_or_else(|| refused("unknown token"))?;
        // Compared in constant time: the stored hash is not a secret, but the
        // comparison should not say how much of a guess was right either way.
        let given = sha256_hex(secret.as_bytes());
        if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), record.secret_sha256.as_bytes()).is_err()
        {
            return Err(refused("wrong secret"));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if record.revoked_at.is_some() {
            return Err(refused("revoked"));
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(refused("expired"));
        }
        token_principal(&record)
    }
}

/// The principal a stored token stands for.
fn token_principal(t: &TokenRecord) -> Result<Principal> {
    if t.role == "tenant" {
        let tenant = t.tenant.clone().ok_or_else(|| CaError::Inconsistent(format!("token {} has no tenant", t.id)))?;
        return Ok(Principal::Tenant { account: t.id.clone(), tenant, connection: t.connection.clone() });
    }
    let role =
        t.role.parse::<Role>().map_err(|_| CaError::Inconsistent(format!("token {} has role {:?}", t.id, t.role)))?;
    Ok(Principal::Operator { name: format!("token:{}", t.id), role })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}
