//! Who may use the API: tokens for scripts and tenant services, and (in
//! [`crate::Ca::add_operator`]) operators with client certificates.
//!
//! A token is `tok_ID.SECRET`: the id (16 hex digits) is stored in clear so a
//! token can be listed and revoked, the secret (256 random bits, base64url) is
//! stored only as its SHA-256, so a copy of the database signs no one in.
//! Every request looks its token up in the database: a revocation or an
//! expiry holds on every node sharing it at the next request.

use std::sync::Arc;

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
        let done = self.store.revoke_token(id, now, &audit).await.map_err(|e| match e {
            custos_store::StoreError::NotFound { .. } => CaError::UnknownToken(id.to_string()),
            other => other.into(),
        });
        self.tokens.clear();
        done
    }

    /// Who a bearer token is, or why it is refused ([`CaError::Unauthenticated`]
    /// names the reason for the log; the client is told only that it failed).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal> {
        let refused = |why: &str| CaError::Unauthenticated(why.to_string());
        let (id, secret) = parse_token(token)?;
        // Read at most a second ago (on any node, a revocation takes effect within it).
        let record = match self.tokens.get(&id.to_string()) {
            Some(r) => r,
            None => {
                let r = self.store.token(id).await?.ok_or_else(|| refused("unknown token"))?;
                self.tokens.put(id.to_string(), r.clone());
                r
            }
        };
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

/// A bearer token's id and secret, if it has the shape of one (`tok_` and 16
/// hex digits, a dot, 43 base64url characters); nothing is looked up.
pub fn parse_token(token: &str) -> Result<(&str, &str)> {
    let refused = || CaError::Unauthenticated("not a custos token (tok_ID.SECRET)".into());
    let (id, secret) = token.split_once('.').ok_or_else(refused)?;
    let hex_id = id.strip_prefix("tok_").ok_or_else(refused)?;
    if hex_id.len() != 16
        || !hex_id.bytes().all(|b| b.is_ascii_hexdigit())
        || secret.len() != 43
        || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(refused());
    }
    Ok((id, secret))
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

/// The setting naming the operators' CA key.
const META_OPERATORS_CA_KEY: &str = "operators_ca_key";
/// The setting holding the operators' CA certificate (hex DER).
const META_OPERATORS_CA_CERT: &str = "operators_ca_cert";
/// The operators' CA key's label.
const OPERATORS_CA_LABEL: &str = "operators-ca";
/// Where the operators' CA certificate is served (`/ca/operators-ca.der`); no tenant CA has this id.
pub const OPERATORS_CA_ID: &str = "operators-ca";

/// How long an operators' CRL is valid. A new one is signed when an operator
/// is revoked, or once the last is half-way through its life.
const OPERATORS_CRL_LIFETIME: time::Duration = time::Duration::hours(24);

/// The operators' CA's CRL as last signed on this node, with the revoked
/// serials it lists.
#[derive(Default)]
pub(crate) struct OperatorsCrl(tokio::sync::Mutex<Option<(Vec<String>, Arc<crate::revocation::Crl>)>>);

/// An operator just added: the only time a key custos made for it exists outside the caller.
pub struct NewOperator {
    /// What was stored.
    pub record: OperatorRecord,
    /// The operator's client certificate, PEM.
    pub certificate_pem: String,
    /// The operators' CA certificate, PEM (what a client needs to trust nothing more).
    pub ca_pem: String,
    /// The private key, PKCS#8 PEM, when custos generated it (no `--csr`).
    pub key_pem: Option<zeroize::Zeroizing<String>>,
}

pub use custos_types::OperatorRecord;

impl Ca {
    /// The operators' CA certificate (DER), if this custos has one: the only
    /// CA a TLS listener trusts for client certificates. It signs nothing for
    /// tenants, and the tenants' CAs sign no operator.
    pub async fn operators_ca(&self) -> Result<Option<Vec<u8>>> {
        match self.store.meta(META_OPERATORS_CA_CERT).await? {
            Some(text) => Ok(Some(
                hex::decode(text).map_err(|e| CaError::Inconsistent(format!("the operators' CA certificate: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// Makes the operators' CA if there is none (`init` makes it; a custos
    /// made before operators existed gets it on the first `operator add`).
    /// A crash before its one transaction commits leaves only an unused key
    /// in the key store; two processes racing both generate, one commits.
    pub async fn ensure_operators_ca(&self, principal: &Principal) -> Result<Vec<u8>> {
        authorize(principal, Operation::ManageAccess)?;
        if let Some(der) = self.operators_ca().await? {
            return Ok(der);
        }
        let keys = self.key_store()?;
        let key = keys.generate(custos_keys::KeyAlgorithm::EcdsaP256, OPERATORS_CA_LABEL)?;
        let key_id = key.signer.public_key().key_id().to_string();
        let now = OffsetDateTime::now_utc();
        let template = custos_pki::CertificateTemplate::new(custos_pki::CertificateSpec {
            serial: custos_pki::Serial::random()?,
            profile: custos_pki::Profile::RootCa,
            common_name: "custos operators CA".into(),
            organization: None,
            sans: vec![],
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::days(i64::from(custos_pki::Profile::RootCa.default_validity_days())),
            urls: None,
        })?;
        let (cert, _) = template.self_sign(key.signer.clone())?;
        let record = custos_store::KeyRecord {
            id: key_id.clone(),
            backend: key.reference.backend.clone(),
            algorithm: key.signer.algorithm().to_string(),
            label: OPERATORS_CA_LABEL.into(),
            public_key: key.signer.public_key().spki_der().to_vec(),
            reference: key.reference.data.clone(),
            status: custos_types::KeyStatus::Active,
            created_at: now.unix_timestamp(),
        };
        let settings = vec![
            (META_OPERATORS_CA_KEY.into(), key_id.clone()),
            (META_OPERATORS_CA_CERT.into(), hex::encode(&cert.der)),
        ];
        let audit = [
            audit_record(
                principal,
                "key.generate",
                format!("key:{key_id}"),
                json!({"key": key_id, "algorithm": "p256", "backend": record.backend, "label": OPERATORS_CA_LABEL,
                       "purpose": "operators' client certificates"}),
            ),
            audit_record(
                principal,
                "operators-ca.create",
                format!("key:{key_id}"),
                json!({"key": key_id, "serial": cert.serial.to_hex(), "fingerprint": custos_pki::fingerprint(&cert.der)}),
            ),
        ];
        match self.store.add_key(&record, &settings, &audit).await {
            Ok(()) => Ok(cert.der),
            // Another process made it first: use theirs.
            Err(custos_store::StoreError::Duplicate { .. }) => {
                self.operators_ca().await?.ok_or_else(|| CaError::Inconsistent("the operators' CA vanished".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds an operator with a client certificate from the operators' CA:
    /// for the public key in `csr`, or for a P-256 key custos makes and
    /// returns once. The certificate lives 90 days (the client profile's cap).
    pub async fn add_operator(
        &self,
        principal: &Principal,
        name: &str,
        role: Role,
        csr: Option<&[u8]>,
    ) -> Result<NewOperator> {
        authorize(principal, Operation::ManageAccess)?;
        crate::policy::check_name("operator", name)?;
        let ca_der = self.ensure_operators_ca(principal).await?;
        let (key_id, ca) = self.operators_ca_issuer(&ca_der, crate::metrics::Purpose::OperatorCertificate).await?;
        let (public, algorithm, leaf) = match csr {
            Some(bytes) => {
                let request = custos_pki::CertificateRequest::parse(bytes)?;
                (request.public_key, request.algorithm, None)
            }
            None => {
                let leaf = custos_keys::leaf::LeafKey::generate(custos_keys::KeyAlgorithm::EcdsaP256)?;
                (leaf.public_key().clone(), leaf.algorithm(), Some(leaf))
            }
        };
        let now = OffsetDateTime::now_utc();
        let profile = custos_pki::Profile::Client;
        let not_after = (now + time::Duration::days(i64::from(profile.max_validity_days()))).min(ca.not_after());
        let signed = custos_pki::CertificateTemplate::new(custos_pki::CertificateSpec {
            serial: custos_pki::Serial::random()?,
            profile,
            common_name: name.to_string(),
            organization: Some(format!("custos {role}")),
            sans: vec![],
            not_before: now - time::Duration::minutes(1),
            not_after,
            // The profile names where to check it; custos itself is the only
            // relying party, and checks its records on every request instead.
            urls: Some(crate::issuer_urls(&self.base_url, OPERATORS_CA_ID)),
        })?
        .sign(&public, algorithm, &ca)?;
        let record = OperatorRecord {
            name: name.to_string(),
            role: role.as_str().to_string(),
            serial: signed.serial.to_hex(),
            der: signed.der.clone(),
            created_at: now.unix_timestamp(),
            not_after: signed.not_after.unix_timestamp(),
            revoked_at: None,
            created_by: principal.actor(),
        };
        let audit = audit_record(
            principal,
            "operator.add",
            format!("operator:{name}"),
            json!({"operator": name, "role": record.role, "serial": record.serial, "key": key_id,
                   "fingerprint": custos_pki::fingerprint(&signed.der)}),
        );
        self.store.add_operator(&record, &audit).await?;
        Ok(NewOperator {
            certificate_pem: custos_pki::certificate_pem(&signed.der),
            ca_pem: custos_pki::certificate_pem(&ca_der),
            key_pem: leaf.map(|l| l.pkcs8_pem()),
            record,
        })
    }

    /// The operators' CA's CRL: every revoked operator certificate, at the URL
    /// those certificates name (custos itself checks its records on every
    /// request; this is for any other relying party, a TLS proxy in front, say).
    /// Served from the last one signed while the revoked set is the same and
    /// it is less than half-way through its life, so a public GET cannot make
    /// custos sign at will; a new one's `crl.sign` entry is committed before it
    /// is returned. The CRL number is the signing time in milliseconds (above
    /// the last on this node): the operators' CA has no issuer row to count in,
    /// and nodes signing it need no coordination. `None` without an operators' CA.
    pub async fn operators_crl(&self) -> Result<Option<Arc<crate::revocation::Crl>>> {
        let Some(ca_der) = self.operators_ca().await? else { return Ok(None) };
        let mut revoked: Vec<OperatorRecord> =
            self.store.operators().await?.into_iter().filter(|o| o.revoked_at.is_some()).collect();
        revoked.sort_by(|a, b| a.serial.cmp(&b.serial));
        let serials: Vec<String> = revoked.iter().map(|o| o.serial.clone()).collect();
        let now = OffsetDateTime::now_utc();
        let mut last = self.operators_crl.0.lock().await;
        if let Some((listed, crl)) = last.as_ref()
            && *listed == serials
            && now - crl.this_update < OPERATORS_CRL_LIFETIME / 2
        {
            return Ok(Some(crl.clone()));
        }
        let (key_id, ca) = self.operators_ca_issuer(&ca_der, crate::metrics::Purpose::Crl).await?;
        let entries = revoked
            .iter()
            .map(|o| {
                Ok(custos_pki::crl::RevokedEntry {
                    serial: o.serial.parse().map_err(CaError::from)?,
                    revoked_at: crate::revocation::from_unix(o.revoked_at.unwrap_or_default())?,
                    reason: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let millis = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let number = last.as_ref().map_or(millis, |(_, c)| millis.max(c.number + 1));
        let next_update = now + OPERATORS_CRL_LIFETIME;
        let spec = custos_pki::crl::CrlSpec {
            number: number as u64,
            this_update: now,
            next_update,
            user_certs_at: Some(crate::crl_url(&self.base_url, OPERATORS_CA_ID, 0)),
            revoked: entries,
        };
        let der = tokio::task::spawn_blocking(move || ca.sign_crl(&spec))
            .await
            .map_err(|e| CaError::Inconsistent(format!("CRL task failed: {e}")))??;
        // Crash here: a CRL signed and never served; the next request signs another.
        self.store
            .append_audit(&[audit_record(
                &Principal::System,
                "crl.sign",
                format!("issuer:{OPERATORS_CA_ID}"),
                json!({"issuer": OPERATORS_CA_ID, "partition": 0, "key": key_id, "entries": serials.len(),
                       "number": number}),
            )])
            .await?;
        let crl = Arc::new(crate::revocation::Crl {
            issuer: OPERATORS_CA_ID.to_string(),
            partition: 0,
            der,
            number,
            this_update: now,
            next_update,
            entries: serials.len(),
        });
        *last = Some((serials, crl.clone()));
        Ok(Some(crl))
    }

    /// The operators' CA (`ca_der`) with its key, to sign for `purpose`; and that key's id.
    async fn operators_ca_issuer(
        &self,
        ca_der: &[u8],
        purpose: crate::metrics::Purpose,
    ) -> Result<(String, custos_pki::CaIssuer)> {
        let key_id = self
            .store
            .meta(META_OPERATORS_CA_KEY)
            .await?
            .ok_or_else(|| CaError::Inconsistent("the operators' CA has no key recorded".into()))?;
        let signer = self.signer(&key_id, purpose).await?;
        Ok((key_id, custos_pki::CaIssuer::new(ca_der, signer)?))
    }

    /// Every operator, by name.
    pub async fn operators(&self, principal: &Principal) -> Result<Vec<OperatorRecord>> {
        authorize(principal, Operation::ReadAccess)?;
        Ok(self.store.operators().await?)
    }

    /// Revokes an operator's certificate: refused from its next request on, on every node.
    pub async fn revoke_operator(&self, principal: &Principal, name: &str) -> Result<()> {
        authorize(principal, Operation::ManageAccess)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let audit = audit_record(principal, "operator.revoke", format!("operator:{name}"), json!({"operator": name}));
        self.store.revoke_operator(name, now, &audit).await.map_err(|e| match e {
            custos_store::StoreError::NotFound { .. } => CaError::UnknownOperator(name.to_string()),
            other => other.into(),
        })
    }

    /// Who a client certificate is. The TLS handshake already checked its
    /// chain to the operators' CA (rustls-webpki); here it must be exactly
    /// the current, unrevoked, unexpired certificate of an operator, read
    /// from the database on every request, so a revocation holds on every
    /// node at once.
    pub async fn authenticate_operator(&self, der: &[u8]) -> Result<Principal> {
        let refused = |why: &str| CaError::Unauthenticated(why.to_string());
        let facts = custos_pki::inspect::certificate_facts(der).map_err(|_| refused("not a certificate"))?;
        let record =
            self.store.operator_by_serial(&facts.serial.to_hex()).await?.ok_or_else(|| refused("unknown operator"))?;
        if record.der != der {
            return Err(refused("not the operator's current certificate"));
        }
        if record.revoked_at.is_some() {
            return Err(refused("operator certificate revoked"));
        }
        if record.not_after <= OffsetDateTime::now_utc().unix_timestamp() {
            return Err(refused("operator certificate expired"));
        }
        let role = record
            .role
            .parse::<Role>()
            .map_err(|_| CaError::Inconsistent(format!("operator {} has role {:?}", record.name, record.role)))?;
        Ok(Principal::Operator { name: record.name, role })
    }
}
