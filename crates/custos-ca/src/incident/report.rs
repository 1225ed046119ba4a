//! The incident report: timeline, counts, durations, notifications.

use super::*;

impl Ca {
    /// The incident report: timeline, counts, durations, notifications.
    pub async fn incident_report(&self, principal: &Principal, id: &str) -> Result<IncidentReport> {
        let status = self.incident_status(principal, id).await?;
        let view = self.incident_view(principal, id).await?;
        let r = &status.incident;
        let mut timeline = vec![TimelineEvent {
            time: crate::rfc3339(r.declared_at),
            event: format!("declared by {}: {} compromised ({}) {}", r.declared_by, view.compromised, r.reason, r.note),
        }];
        let mut push = |t: Option<i64>, event: String| {
            if let Some(t) = t {
                timeline.push(TimelineEvent { time: crate::rfc3339(t), event });
            }
        };
        push(r.since, "compromise assumed since (invalidity date)".into());
        push(r.executed_at, "execution started".into());
        if !r.new_issuers.is_empty() {
            push(
                r.executed_at,
                format!("new CA(s) {} replace {}", r.new_issuers.join(", "), view.compromised_issuers.join(", ")),
            );
        }
        push(r.revoked_at, format!("all {} affected certificates revoked", view.affected_certificates));
        push(r.replaced_at, format!("all {} connections have a replacement", view.affected_connections));
        let cs = &status.connections;
        let last = |f: fn(&IncidentConnection) -> Option<i64>| -> Option<i64> {
            if cs.iter().all(|c| f(c).is_some()) { cs.iter().filter_map(f).max() } else { None }
        };
        let first_notified = cs.iter().filter_map(|c| c.notified_at).min();
        push(first_notified, "first tenant notified".into());
        push(last(|c| c.notified_at), "every tenant notified".into());
        push(last(|c| c.acknowledged_at), "every connection acknowledged".into());
        push(r.closed_at, "closed".into());
        timeline.sort_by(|a, b| a.time.cmp(&b.time));

        let mut counts = BTreeMap::new();
        counts.insert("affected_certificates".into(), view.affected_certificates);
        counts.insert("affected_connections".into(), view.affected_connections);
        counts.insert("affected_tenants".into(), view.affected_tenants);
        for s in &status.states {
            counts.insert(format!("connections_{}", s.state), s.connections);
        }
        counts.insert("notifications_delivered".into(), status.notifications.delivered);
        counts.insert("notifications_pending".into(), status.notifications.pending);
        let mut durations = BTreeMap::new();
        let since = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| b - a);
        for (name, d) in [
            ("declared_to_execution", since(Some(r.declared_at), r.executed_at)),
            ("execution_to_all_revoked", since(r.executed_at, r.revoked_at)),
            ("execution_to_all_replaced", since(r.executed_at, r.replaced_at)),
            ("execution_to_all_notified", since(r.executed_at, last(|c| c.notified_at))),
            ("execution_to_all_acknowledged", since(r.executed_at, last(|c| c.acknowledged_at))),
            ("declared_to_closed", since(Some(r.declared_at), r.closed_at)),
        ] {
            if let Some(d) = d {
                durations.insert(name.to_string(), d);
            }
        }
        let mut warnings = Vec::new();
        if view.root_compromised {
            warnings.push(
                "A root CA was compromised: every relying party must remove the old root from its trust store and install the new one; custos cannot do that for them."
                    .to_string(),
            );
        }
        let waiting: usize = status
            .states
            .iter()
            .filter(|s| s.state != ConnectionState::OldCertificateRetired)
            .map(|s| s.connections)
            .sum();
        if waiting > 0 {
            warnings.push(format!("{waiting} connection(s) have not finished cut-over."));
        }
        if !status.notifications.tenants_without_webhook.is_empty() {
            warnings.push(format!(
                "{} tenant(s) have no webhook and were not notified: {}",
                status.notifications.tenants_without_webhook.len(),
                status.notifications.tenants_without_webhook.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(IncidentReport {
            incident: status.incident.clone(),
            timeline,
            counts,
            durations,
            warnings,
            notifications: status.notifications.messages,
        })
    }
}
