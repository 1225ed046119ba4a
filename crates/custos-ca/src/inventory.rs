//! Tenants, connections, and what has been issued to them.

use custos_keys::KeyAlgorithm;
use custos_pki::{Profile, Serial};
use custos_store::{CertificateFilter, CertificateRecord, ConnectionRecord, IssuerRecord, StatusFilter, TenantRecord};
use custos_types::CertificateStatus;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::authorization::{Operation, authorize};
use crate::policy::{check_name, check_san_pattern};
use crate::{Ca, CaError, Principal, Result, audit_record, visible};

/// How a new connection issues.
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    /// Default profile of its certificates.
    pub profile: Profile,
    /// SAN patterns its certificates may carry.
    pub allowed_sans: Vec<String>,
    /// Algorithm for keys custos generates for it.
    pub key_algorithm: KeyAlgorithm,
    /// Default lifetime in days, if not the profile's.
    pub validity_days: Option<i64>,
}

/// Which certificates `list` shows.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this connection.
    pub connection: Option<String>,
    /// Only this issuer.
    pub issuer: Option<String>,
    /// Only this status.
    pub status: Option<StatusFilter>,
    /// Only those expiring within this many seconds.
    pub expiring_within: Option<i64>,
    /// Only those naming this subject alternative name exactly.
    pub san: Option<String>,
    /// Only those listed after this one (newest first): `(created_at, serial)`.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: Option<i64>,
}

/// A certificate as `list` and `show` print it (and as the API answers it,
/// which the CLI's remote mode reads back).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CertificateView {
    /// Lowercase hex serial.
    pub serial: String,
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// Profile.
    pub profile: String,
    /// `valid`, `revoked` or `expired`.
    pub status: String,
    /// Subject DN.
    pub subject: String,
    /// SANs.
    pub sans: Vec<String>,
    /// Issuer id.
    pub issuer: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Subject key algorithm.
    pub key_algorithm: String,
    /// `csr` or `generated`.
    pub key_origin: String,
    /// SHA-256 of the subject public key info.
    pub spki_sha256: String,
    /// SHA-256 of the certificate.
    pub fingerprint: String,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
    /// Reason, if revoked.
    pub revocation_reason: Option<String>,
}

/// An issuer as `ca list` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct IssuerView {
    /// Short id used in URLs.
    pub id: String,
    /// Subject.
    pub name: String,
    /// `root` or `issuing`.
    pub role: String,
    /// `active`, ...
    pub status: String,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint: String,
    /// Parent issuer id.
    pub parent: Option<String>,
    /// The key it signs with.
    pub key_id: String,
    /// RFC 3339.
    pub not_after: String,
}

/// A connection's policy as an HTTP entity tag (quoted): it changes whenever
/// the policy does, so `If-Match` can refuse an update made on a stale read.
pub fn connection_etag(c: &ConnectionRecord) -> String {
    let text = format!(
        "{}\n{}\n{}\n{}",
        c.profile,
        c.allowed_sans.join("\n\t"),
        c.key_algorithm,
        c.validity_days.map(|d| d.to_string()).unwrap_or_default()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    format!("\"{}\"", hex::encode(&digest.as_ref()[..12]))
}

/// What an update changes in a connection's policy; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ConnectionChanges {
    /// The SAN patterns its certificates may carry, replacing the list.
    pub allowed_sans: Option<Vec<String>>,
    /// The default lifetime in days (`Some(None)`: the profile's default).
    pub validity_days: Option<Option<i64>>,
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_else(|| t.to_string())
}

impl CertificateView {
    /// Renders a record as judged at `now`.
    pub fn new(c: &CertificateRecord, now: i64) -> CertificateView {
        let status = if c.status == CertificateStatus::Valid && c.not_after < now {
            "expired".to_string()
        } else {
            c.status.to_string()
        };
        CertificateView {
            serial: c.serial.clone(),
            tenant: c.tenant.clone(),
            connection: c.connection.clone(),
            profile: c.profile.to_string(),
            status,
            subject: c.subject.clone(),
            sans: c.sans.clone(),
            issuer: c.issuer.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            key_algorithm: c.key_algorithm.clone(),
            key_origin: c.key_origin.clone(),
            spki_sha256: c.spki_sha256.clone(),
            fingerprint: custos_pki::fingerprint(&c.der),
            revoked_at: c.revoked_at.map(rfc3339),
            revocation_reason: c.revocation_reason.map(|r| r.to_string()),
        }
    }
}

impl From<&IssuerRecord> for IssuerView {
    fn from(i: &IssuerRecord) -> Self {
        IssuerView {
            id: i.id.clone(),
            name: i.name.clone(),
            role: i.role.to_string(),
            status: i.status.to_string(),
            fingerprint: i.fingerprint.clone(),
            parent: i.parent.clone(),
            key_id: i.key_id.clone(),
            not_after: rfc3339(i.not_after),
        }
    }
}

impl Ca {
    /// Adds a tenant.
    pub async fn add_tenant(&self, principal: &Principal, name: &str) -> Result<TenantRecord> {
        authorize(principal, Operation::AddTenant)?;
        check_name("tenant", name)?;
        let tenant = TenantRecord {
            name: name.to_string(),
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
            custody_default: false,
        };
        self.store
            .add_tenant(
                &tenant,
                &audit_record(principal, "tenant.add", format!("tenant:{name}"), json!({"tenant": name})),
            )
            .await?;
        Ok(tenant)
    }

    /// Sets whether the tenant's new connections keep their keys in custody
    /// unless told otherwise (`connection add` without `--custody`, the API's
    /// `POST …/connections` without `custody`).
    pub async fn set_custody_default(&self, principal: &Principal, tenant: &str, on: bool) -> Result<TenantRecord> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        let audit = audit_record(
            principal,
            "tenant.custody-default",
            format!("tenant:{tenant}"),
            json!({"tenant": tenant, "custody_default": on}),
        );
        self.store.set_custody_default(tenant, on, &audit).await.map_err(|e| match e {
            custos_store::StoreError::NotFound { .. } => CaError::UnknownTenant(tenant.to_string()),
            other => other.into(),
        })?;
        self.tenant(principal, tenant).await
    }

    /// Whether a new connection of `tenant` keeps its key in custody when the
    /// request does not say: the tenant's default.
    pub async fn custody_by_default(&self, principal: &Principal, tenant: &str) -> Result<bool> {
        Ok(self.tenant(principal, tenant).await?.custody_default)
    }

    /// Every tenant.
    pub async fn tenants(&self, principal: &Principal) -> Result<Vec<TenantRecord>> {
        authorize(principal, Operation::ReadTenants(None))?;
        Ok(self.store.tenants().await?)
    }

    /// One tenant; another tenant's is not found, exactly as an unknown one.
    pub async fn tenant(&self, principal: &Principal, name: &str) -> Result<TenantRecord> {
        visible(principal, Operation::ReadTenants(Some(name)), || CaError::UnknownTenant(name.to_string()))?;
        self.store.tenant(name).await?.ok_or_else(|| CaError::UnknownTenant(name.to_string()))
    }

    /// One connection; another tenant's (or, for a token limited to one
    /// connection, another connection) is not found.
    pub async fn connection(&self, principal: &Principal, tenant: &str, name: &str) -> Result<ConnectionRecord> {
        let unknown = || CaError::UnknownConnection { tenant: tenant.to_string(), connection: name.to_string() };
        visible(principal, Operation::ReadCertificates { tenant: Some(tenant), connection: Some(name) }, unknown)?;
        visible(principal, Operation::ReadConnections(Some(tenant)), unknown)?;
        self.store.connection(tenant, name).await?.ok_or_else(unknown)
    }

    /// Adds a connection to a tenant.
    pub async fn add_connection(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        options: &ConnectionOptions,
    ) -> Result<ConnectionRecord> {
        let (record, audit) = self.connection_record(principal, tenant, name, options).await?;
        self.store.add_connection(&record, &audit).await.map_err(|e| match e {
            custos_store::StoreError::NotFound { .. } => CaError::UnknownTenant(tenant.to_string()),
            other => other.into(),
        })?;
        Ok(record)
    }

    /// A new connection checked against the rules, and its audit entry.
    pub(crate) async fn connection_record(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        options: &ConnectionOptions,
    ) -> Result<(ConnectionRecord, custos_store::AuditRecord)> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        check_name("connection", name)?;
        if options.profile.is_ca() {
            return Err(CaError::Policy(format!("a connection cannot use the {} profile", options.profile)));
        }
        for p in &options.allowed_sans {
            check_san_pattern(p)?;
        }
        if let Some(days) = options.validity_days
            && (days <= 0 || days > i64::from(options.profile.max_validity_days()))
        {
            return Err(CaError::Policy(format!(
                "validity of {days} days is outside the {} profile's cap of {} days",
                options.profile,
                options.profile.max_validity_days()
            )));
        }
        if self.store.tenant(tenant).await?.is_none() {
            return Err(CaError::UnknownTenant(tenant.to_string()));
        }
        let record = ConnectionRecord {
            tenant: tenant.to_string(),
            name: name.to_string(),
            profile: options.profile,
            allowed_sans: options.allowed_sans.clone(),
            key_algorithm: options.key_algorithm.to_string(),
            validity_days: options.validity_days,
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
        };
        let audit = audit_record(
            principal,
            "connection.add",
            format!("connection:{tenant}/{name}"),
            json!({"tenant": tenant, "connection": name, "profile": record.profile,
                   "allowed_sans": record.allowed_sans, "key_algorithm": record.key_algorithm}),
        );
        Ok((record, audit))
    }

    /// Changes a connection's policy (allowed SANs, default lifetime), with
    /// its audit entry. With `if_match`, only if that is still its
    /// [`connection_etag`]: a change made since is [`CaError::Changed`], and
    /// so is one that races this update; with `require_if_match` (the API),
    /// none is [`CaError::PreconditionRequired`].
    pub async fn update_connection(
        &self,
        principal: &Principal,
        tenant: &str,
        name: &str,
        changes: &ConnectionChanges,
        if_match: Option<&str>,
        require_if_match: bool,
    ) -> Result<ConnectionRecord> {
        visible(principal, Operation::ManageConnection { tenant }, || CaError::UnknownTenant(tenant.to_string()))?;
        let old = self.find_connection(tenant, name).await?;
        let object = format!("connection {tenant}/{name}");
        if require_if_match && if_match.is_none() {
            return Err(CaError::PreconditionRequired(object));
        }
        if let Some(tag) = if_match
            && tag != "*"
            && tag != connection_etag(&old)
        {
            return Err(CaError::Changed(object, connection_etag(&old)));
        }
        let mut new = old.clone();
        if let Some(sans) = &changes.allowed_sans {
            for p in sans {
                check_san_pattern(p)?;
            }
            new.allowed_sans = sans.clone();
        }
        if let Some(days) = changes.validity_days {
            if let Some(d) = days
                && (d <= 0 || d > i64::from(new.profile.max_validity_days()))
            {
                return Err(CaError::Policy(format!(
                    "validity of {d} days is outside the {} profile's cap of {} days",
                    new.profile,
                    new.profile.max_validity_days()
                )));
            }
            new.validity_days = days;
        }
        let audit = audit_record(
            principal,
            "connection.update",
            format!("connection:{tenant}/{name}"),
            json!({"tenant": tenant, "connection": name, "profile": new.profile,
                   "allowed_sans": new.allowed_sans, "key_algorithm": new.key_algorithm,
                   "validity_days": new.validity_days,
                   "was": {"allowed_sans": old.allowed_sans, "validity_days": old.validity_days}}),
        );
        match self.store.update_connection(&old, &new, &audit).await {
            Ok(()) => Ok(new),
            Err(custos_store::StoreError::Conflict { .. }) => {
                let now = self.find_connection(tenant, name).await?;
                Err(CaError::Changed(object, connection_etag(&now)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Connections of a tenant, or of all tenants.
    pub async fn connections(&self, principal: &Principal, tenant: Option<&str>) -> Result<Vec<ConnectionRecord>> {
        visible(principal, Operation::ReadConnections(tenant), || {
            CaError::UnknownTenant(tenant.unwrap_or_default().to_string())
        })?;
        if let Some(t) = tenant
            && self.store.tenant(t).await?.is_none()
        {
            return Err(CaError::UnknownTenant(t.to_string()));
        }
        let mut all = self.store.connections(tenant).await?;
        // A token limited to one connection sees only that one.
        if let Principal::Tenant { connection: Some(own), .. } = principal {
            all.retain(|c| &c.name == own);
        }
        Ok(all)
    }

    /// Certificates issued to connections, newest first.
    /// A tenant's account lists its own tenant's when no tenant is named.
    pub async fn certificates(&self, principal: &Principal, filter: &ListFilter) -> Result<Vec<CertificateRecord>> {
        let own;
        let filter = match (principal, &filter.tenant) {
            (Principal::Tenant { tenant, .. }, None) => {
                own = ListFilter { tenant: Some(tenant.clone()), ..filter.clone() };
                &own
            }
            _ => filter,
        };
        let read =
            Operation::ReadCertificates { tenant: filter.tenant.as_deref(), connection: filter.connection.as_deref() };
        visible(principal, read, || CaError::UnknownTenant(filter.tenant.clone().unwrap_or_default()))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(t) = &filter.tenant
            && self.store.tenant(t).await?.is_none()
        {
            return Err(CaError::UnknownTenant(t.clone()));
        }
        if let Some(i) = &filter.issuer
            && self.store.issuer(i).await?.is_none()
        {
            return Err(CaError::UnknownIssuer(i.clone()));
        }
        Ok(self
            .store
            .certificates(&CertificateFilter {
                tenant: filter.tenant.clone(),
                // A token limited to one connection lists only that one's.
                connection: match principal {
                    Principal::Tenant { connection: Some(own), .. } => Some(own.clone()),
                    _ => filter.connection.clone(),
                },
                issuer: filter.issuer.clone(),
                status: filter.status,
                expiring_before: filter.expiring_within.map(|s| now.saturating_add(s)),
                now,
                san: filter.san.clone(),
                after: filter.after.clone(),
                limit: filter.limit,
            })
            .await?)
    }

    /// One certificate by serial.
    pub async fn certificate(&self, principal: &Principal, serial: &Serial) -> Result<CertificateRecord> {
        let unknown = || CaError::UnknownCertificate(serial.to_hex());
        // Whether it may be read depends on whose it is: fetch, then decide, and
        // answer another tenant exactly as an unknown serial.
        let record = self.store.certificate(&serial.to_hex()).await?.ok_or_else(unknown)?;
        let read = Operation::ReadCertificates { tenant: Some(&record.tenant), connection: Some(&record.connection) };
        visible(principal, read, unknown)?;
        Ok(record)
    }

    /// Every issuer, oldest first.
    pub async fn issuers(&self, principal: &Principal) -> Result<Vec<IssuerRecord>> {
        authorize(principal, Operation::ReadIssuers)?;
        Ok(self.store.issuers().await?)
    }

    /// One issuer by id.
    pub async fn issuer(&self, principal: &Principal, id: &str) -> Result<IssuerRecord> {
        authorize(principal, Operation::ReadIssuers)?;
        self.issuer_record(id).await
    }

    /// One issuer by id, for operations that were authorized already.
    pub(crate) async fn issuer_record(&self, id: &str) -> Result<IssuerRecord> {
        self.store.issuer(id).await?.ok_or_else(|| CaError::UnknownIssuer(id.to_string()))
    }
}

/// A key as `keys list` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyView {
    /// Key id (hash of the public key).
    pub id: String,
    /// `soft` or `pkcs11`.
    pub backend: String,
    /// Algorithm name.
    pub algorithm: String,
    /// Operator label (`root-1`, `audit-log`, ...).
    pub label: String,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub public_key_sha256: String,
    /// `active`, `destroyed` or `compromised`.
    pub status: String,
    /// Audit log entries that used or changed the key.
    pub uses: i64,
    /// Where it lives: the PKCS#11 URI of a token key; `sealed` for the soft store.
    pub location: String,
    /// RFC 3339.
    pub created: String,
}

impl Ca {
    /// Every key custos holds, with how often the audit log saw it used.
    pub async fn key_views(&self, principal: &Principal) -> Result<Vec<KeyView>> {
        authorize(principal, Operation::ReadKeys)?;
        let mut out = Vec::new();
        for k in self.store.keys().await? {
            let uses = self.store.key_usage(&k.id).await?.iter().map(|u| u.count).sum();
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &k.public_key);
            out.push(KeyView {
                location: if k.backend == custos_keys::pkcs11::BACKEND {
                    String::from_utf8_lossy(&k.reference).into_owned()
                } else {
                    "sealed".into()
                },
                id: k.id,
                backend: k.backend,
                algorithm: k.algorithm,
                label: k.label,
                public_key_sha256: hex::encode(digest.as_ref()),
                status: k.status.to_string(),
                uses,
                created: rfc3339(k.created_at),
            });
        }
        Ok(out)
    }
}
