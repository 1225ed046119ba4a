//! Declaring an incident: the blast radius of a scope, grouped by tenant and connection, recorded with nothing else changed.

use super::*;

impl Ca {
    /// Computes what a scope affects, from the store as it is now.
    pub(super) async fn radius(&self, principal: &Principal, scope: &Scope) -> Result<Radius> {
        let issuers = self.store.issuers().await?;
        let valid = |issuer: Option<String>, tenant: Option<String>| CertificateFilter {
            issuer,
            tenant,
            status: Some(StatusFilter::Valid),
            now: now(),
            ..Default::default()
        };
        let compromised = compromised_cas(scope, &issuers);
        let mut certificates: Vec<CertificateRecord> = Vec::new();
        let mut owners: Vec<IncidentCertificate> = Vec::new();
        match scope {
            Scope::Issuer(id) => {
                if compromised.is_empty() {
                    return Err(CaError::UnknownIssuer(id.clone()));
                }
            }
            Scope::Key(key) if compromised.is_empty() => {
                if key.len() >= 16 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
                    certificates = self.store.certificates_by_spki(key).await?;
                    certificates.retain(|c| c.status == CertificateStatus::Valid && c.not_after >= now());
                    if certificates.is_empty() && self.store.key(key).await?.is_none() {
                        return Err(CaError::Policy(format!(
                            "no CA key and no valid certificate with key {key} (a CA key id, or a subscriber key's SPKI SHA-256)"
                        )));
                    }
                } else {
                    return Err(CaError::Policy(format!("no key {key:?} (see `custos keys list`)")));
                }
            }
            Scope::Key(_) => {}
            Scope::Cert(serial) => {
                let record = self.certificate(principal, serial).await?;
                certificates = self.store.certificates_by_spki(&record.spki_sha256).await?;
                certificates.retain(|c| c.status == CertificateStatus::Valid && c.not_after >= now());
            }
            Scope::Tenant(t) => {
                if self.store.tenant(t).await?.is_none() {
                    return Err(CaError::UnknownTenant(t.clone()));
                }
                owners = self.store.certificate_owners(&valid(None, Some(t.clone()))).await?;
            }
        }
        for ca in &compromised {
            owners.extend(self.store.certificate_owners(&valid(Some(ca.id.clone()), None)).await?);
        }
        owners.extend(certificates.into_iter().map(|c| IncidentCertificate {
            serial: c.serial,
            tenant: c.tenant,
            connection: c.connection,
        }));
        let mut seen = std::collections::HashSet::new();
        let certificates = owners.into_iter().filter(|c| seen.insert(c.serial.clone())).collect();
        Ok(Radius { certificates, issuers: compromised })
    }

    /// Declares an incident: computes and records its blast radius. Nothing
    /// else changes until `execute`.
    pub async fn declare_incident(&self, principal: &Principal, d: &Declaration) -> Result<IncidentView> {
        authorize(principal, Operation::DeclareIncident)?;
        if let Some(since) = d.since
            && since > OffsetDateTime::now_utc()
        {
            return Err(CaError::Policy(format!("--since {since} is in the future")));
        }
        let radius = self.radius(principal, &d.scope).await?;
        let (kind, value) = d.scope.parts();
        let existing = self.store.incidents().await?.len();
        for attempt in 1..=5 {
            let record = IncidentRecord {
                id: format!("INC-{:04}", existing + attempt),
                scope_kind: kind.into(),
                scope_value: value.clone(),
                reason: d.reason,
                since: d.since.map(|t| t.unix_timestamp()),
                note: d.note.clone(),
                state: IncidentState::Declared,
                new_issuers: vec![],
                declared_at: now(),
                declared_by: principal.actor(),
                executed_at: None,
                revoked_at: None,
                replaced_at: None,
                closed_at: None,
            };
            let audit = audit_record(
                principal,
                "incident.declare",
                format!("incident:{}", record.id),
                json!({"incident": record.id, "compromised": format!("{kind}:{value}"), "reason": record.reason,
                       "since": record.since, "note": d.note, "affected_certificates": radius.certificates.len(),
                       "compromised_issuers": radius.issuers.iter().map(|i| &i.id).collect::<Vec<_>>()}),
            );
            match self.store.add_incident(&record, &radius.certificates, &[audit]).await {
                Ok(()) => return self.incident_view(principal, &record.id).await,
                Err(custos_store::StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CaError::Inconsistent("could not allocate an incident id".into()))
    }

    /// An incident.
    pub async fn incident(&self, principal: &Principal, id: &str) -> Result<IncidentRecord> {
        authorize(principal, Operation::ReadIncidents(None))?;
        self.incident_record(id).await
    }

    /// One incident, for operations that were authorized already.
    pub(super) async fn incident_record(&self, id: &str) -> Result<IncidentRecord> {
        self.store.incident(id).await?.ok_or_else(|| CaError::UnknownIncident(id.to_string()))
    }

    /// Every incident.
    pub async fn incidents(&self, principal: &Principal) -> Result<Vec<IncidentRecord>> {
        authorize(principal, Operation::ReadIncidents(None))?;
        Ok(self.store.incidents().await?)
    }

    /// An incident with its blast radius grouped by tenant and connection.
    pub async fn incident_view(&self, principal: &Principal, id: &str) -> Result<IncidentView> {
        let record = self.incident(principal, id).await?;
        let certificates = self.store.incident_certificates(id).await?;
        let mut grouped: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for c in &certificates {
            grouped
                .entry(c.tenant.clone())
                .or_default()
                .entry(c.connection.clone())
                .or_default()
                .push(c.serial.clone());
        }
        let scope = Scope::of(&record)?;
        let issuers = self.store.issuers().await?;
        let compromised: Vec<String> = compromised_cas(&scope, &issuers).into_iter().map(|i| i.id).collect();
        let root_compromised =
            compromised.iter().any(|id| issuers.iter().any(|i| &i.id == id && i.role == IssuerRole::Root));
        let tenants: Vec<TenantImpact> = grouped
            .into_iter()
            .map(|(tenant, conns)| TenantImpact {
                tenant,
                certificates: conns.values().map(Vec::len).sum(),
                connections: conns
                    .into_iter()
                    .map(|(connection, serials)| ConnectionImpact { connection, serials })
                    .collect(),
            })
            .collect();
        Ok(IncidentView {
            id: record.id.clone(),
            compromised: format!("{}:{}", record.scope_kind, record.scope_value),
            reason: record.reason,
            since: record.since.map(crate::rfc3339),
            note: record.note.clone(),
            state: record.state,
            compromised_issuers: compromised,
            root_compromised,
            affected_certificates: certificates.len(),
            affected_connections: tenants.iter().map(|t| t.connections.len()).sum(),
            affected_tenants: tenants.len(),
            tenants,
        })
    }
}
