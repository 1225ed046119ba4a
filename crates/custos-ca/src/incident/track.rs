//! Where each affected connection stands: status, acknowledgement, retirement of the old certificate, close.

use super::*;

impl Ca {
    /// Where each connection stands, with ages and notification delivery.
    /// A tenant sees only its own connections (and its own notifications),
    /// and an incident that touches none of them is not found.
    pub async fn incident_status(&self, principal: &Principal, id: &str) -> Result<IncidentStatus> {
        let (incident, connections) = match principal {
            Principal::Tenant { tenant, connection, .. } => {
                visible(principal, Operation::ReadIncidents(Some(tenant)), || CaError::UnknownIncident(id.into()))?;
                let incident = self.incident_record(id).await?;
                let own: Vec<IncidentConnection> = self
                    .store
                    .incident_connections(id)
                    .await?
                    .into_iter()
                    .filter(|c| &c.tenant == tenant && connection.as_ref().is_none_or(|own| own == &c.connection))
                    .collect();
                if own.is_empty() {
                    return Err(CaError::UnknownIncident(id.to_string()));
                }
                (incident, own)
            }
            _ => {
                authorize(principal, Operation::ReadIncidents(None))?;
                (self.incident_record(id).await?, self.store.incident_connections(id).await?)
            }
        };
        let t = now();
        let states = ConnectionState::ALL
            .iter()
            .map(|s| {
                let in_state: Vec<&IncidentConnection> = connections.iter().filter(|c| c.state == *s).collect();
                StateCount {
                    state: *s,
                    connections: in_state.len(),
                    oldest_seconds: in_state.iter().map(|c| t - c.updated_at).max().unwrap_or(0),
                }
            })
            .collect();
        let mut messages = self.store.outbox(id).await?;
        messages.retain(|m| connections.iter().any(|c| c.tenant == m.tenant));
        let hooked: std::collections::HashSet<String> =
            self.store.webhooks().await?.into_iter().map(|w| w.tenant).collect();
        let mut without: Vec<String> =
            connections.iter().map(|c| c.tenant.clone()).filter(|t| !hooked.contains(t)).collect();
        without.dedup();
        Ok(IncidentStatus {
            incident,
            states,
            notifications: NotificationSummary {
                delivered: messages.iter().filter(|m| m.state == DeliveryState::Delivered).count(),
                pending: messages.iter().filter(|m| m.state == DeliveryState::Pending).count(),
                failed: messages.iter().filter(|m| m.state == DeliveryState::Failed).count(),
                tenants_without_webhook: without,
                messages,
            },
            connections,
        })
    }

    /// A tenant confirms its new certificate is in place; the old one is
    /// then retired (revoked now if the reason did not revoke it at once).
    pub async fn ack_incident(
        &self,
        principal: &Principal,
        id: &str,
        tenant: &str,
        connection: &str,
    ) -> Result<IncidentConnection> {
        visible(principal, Operation::AcknowledgeIncident { tenant, connection }, || CaError::UnknownConnection {
            tenant: tenant.into(),
            connection: connection.into(),
        })?;
        let record = self.incident_record(id).await?;
        let connections = self.store.incident_connections(id).await?;
        let current = connections
            .iter()
            .find(|c| c.tenant == tenant && c.connection == connection)
            .ok_or_else(|| CaError::Policy(format!("{tenant}/{connection} is not affected by {id}")))?;
        let pair = [(tenant.to_string(), connection.to_string())];
        match current.state {
            ConnectionState::Pending => {
                return Err(CaError::Policy(format!(
                    "{tenant}/{connection} has no replacement yet (run `custos incident execute {id}`)"
                )));
            }
            ConnectionState::OldCertificateRetired => return Ok(current.clone()),
            // Acknowledged before, and the retirement did not finish (a crash
            // between the two): finish it now.
            ConnectionState::Acknowledged => {}
            _ => {
                let audit = audit_record(
                    principal,
                    "incident.ack",
                    format!("connection:{tenant}/{connection}"),
                    json!({"incident": id, "tenant": tenant, "connection": connection,
                           "replacement": current.replacement}),
                );
                self.store.move_connections(id, &pair, &ACKNOWLEDGE, &[audit]).await?;
                crate::crashpoint("incident.ack:acknowledged");
            }
        }
        self.retire(principal, &record, &pair).await?;
        self.store
            .incident_connections(id)
            .await?
            .into_iter()
            .find(|c| c.tenant == tenant && c.connection == connection)
            .ok_or_else(|| CaError::Inconsistent("connection vanished".into()))
    }

    /// Retires acknowledged connections: anything of theirs still valid in
    /// the blast radius is revoked, then they move to old-certificate-retired.
    /// Each step is idempotent, so a crash between them is finished by
    /// running this again (a repeated ack, or close).
    pub(crate) async fn retire(
        &self,
        principal: &Principal,
        record: &IncidentRecord,
        pairs: &[(String, String)],
    ) -> Result<()> {
        self.revoke_affected(principal, record, Some(pairs), &|_| {}).await?;
        crate::crashpoint("incident.ack:revoked");
        let audits: Vec<AuditRecord> = pairs
            .iter()
            .map(|(tenant, connection)| {
                audit_record(
                    principal,
                    "incident.retire",
                    format!("connection:{tenant}/{connection}"),
                    json!({"incident": record.id, "tenant": tenant, "connection": connection}),
                )
            })
            .collect();
        self.store.move_connections(&record.id, pairs, &RETIRE, &audits).await?;
        Ok(())
    }

    /// Closes an incident; refused while any connection still depends on a compromised certificate.
    /// Connections acknowledged whose retirement a crash interrupted are retired first.
    pub async fn close_incident(&self, principal: &Principal, id: &str) -> Result<IncidentRecord> {
        authorize(principal, Operation::CloseIncident)?;
        let mut record = self.incident_record(id).await?;
        if record.state == IncidentState::Closed {
            return Ok(record);
        }
        let unfinished: Vec<(String, String)> = self
            .store
            .incident_connections(id)
            .await?
            .into_iter()
            .filter(|c| c.state == ConnectionState::Acknowledged)
            .map(|c| (c.tenant, c.connection))
            .collect();
        if !unfinished.is_empty() {
            self.retire(principal, &record, &unfinished).await?;
        }
        let open: Vec<String> = self
            .store
            .incident_connections(id)
            .await?
            .into_iter()
            .filter(|c| c.state != ConnectionState::OldCertificateRetired)
            .map(|c| format!("{}/{} ({})", c.tenant, c.connection, c.state))
            .collect();
        if !open.is_empty() {
            let shown: Vec<&str> = open.iter().take(5).map(String::as_str).collect();
            return Err(CaError::Policy(format!(
                "{} connection(s) still depend on a compromised certificate, e.g. {}; they must acknowledge first",
                open.len(),
                shown.join(", ")
            )));
        }
        record.state = IncidentState::Closed;
        record.closed_at = Some(now());
        let audit = audit_record(principal, "incident.close", format!("incident:{id}"), json!({"incident": id}));
        self.store.update_incident(&record, &[audit]).await?;
        Ok(record)
    }
}
