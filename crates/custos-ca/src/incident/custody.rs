//! An incident on custodied connections: no key file, no wait on the tenant.
//!
//! Before anything is revoked, each affected custodied connection switches
//! signing to its standby key, whose certificate the tenant registered with
//! the relying party ahead of need: sign-ins never fail. The old key is
//! retired and destroyed, a new standby is made and certified, and the tenant
//! is told to remove the old certificate from the relying party and add the
//! new standby's; its acknowledgement ("old credential removed") moves the
//! connection on as for any other. Where no unaffected standby exists (the
//! standby is in the blast radius too, a CA compromise say), new active and
//! standby keys are made under the current issuing CA, and sign-ins resume
//! once the tenant has registered the new certificate.
//!
//! Crash states: the switch, the new keys, their certificates, the incident
//! connection's move to replacement-issued, the notification and the audit
//! entries commit in one transaction, so a resumed run finds each connection
//! either switched or pending. Keys are destroyed after that commit; a run
//! killed in between leaves retired keys that the next run destroys.

use std::collections::HashSet;

use custos_store::{CustodyChange, CustodyKeyRecord, CustodySlot, IncidentReplacements};

use super::*;

impl Ca {
    /// Switches every pending custodied connection of the incident to an
    /// unaffected key (see the module comment); returns how many switched.
    pub(super) async fn switch_custodied(&self, principal: &Principal, record: &IncidentRecord) -> Result<usize> {
        let pending: Vec<IncidentConnection> = self
            .store
            .incident_connections(&record.id)
            .await?
            .into_iter()
            .filter(|c| c.state == ConnectionState::Pending)
            .collect();
        let affected: HashSet<String> =
            self.store.incident_certificates(&record.id).await?.into_iter().map(|c| c.serial).collect();
        let webhooks: HashMap<String, WebhookRecord> =
            self.store.webhooks().await?.into_iter().map(|w| (w.tenant.clone(), w)).collect();
        let mut switched = 0;
        for c in pending {
            let held = self.store.custody_keys(&c.tenant, &c.connection).await?;
            if held.is_empty() {
                continue;
            }
            let live: Vec<&CustodyKeyRecord> = held.iter().filter(|k| k.slot != CustodySlot::Retired).collect();
            let usable = |k: &&CustodyKeyRecord| !affected.contains(&k.serial) && k.key.status == KeyStatus::Active;
            let active = live.iter().find(|k| k.slot == CustodySlot::Active).copied();
            let standby = live.iter().find(|k| k.slot == CustodySlot::Standby).copied();
            // Which key signs from now on, and which standby stays.
            let signing = active.filter(usable).or(standby.filter(usable));
            let id_of = |k: Option<&CustodyKeyRecord>| k.map(|k| k.key.id.clone());
            let keep_standby = standby.filter(usable).filter(|s| id_of(signing) != Some(s.key.id.clone()));
            let mut slots: Vec<(String, CustodySlot)> = Vec::new();
            if let Some(s) = signing.filter(|s| s.slot != CustodySlot::Active) {
                slots.push((s.key.id.clone(), CustodySlot::Active));
            }
            for k in &live {
                if id_of(signing) != Some(k.key.id.clone()) && id_of(keep_standby) != Some(k.key.id.clone()) {
                    slots.push((k.key.id.clone(), CustodySlot::Retired));
                }
            }
            let mut make: Vec<CustodySlot> = Vec::new();
            if signing.is_none() {
                make.push(CustodySlot::Active);
            }
            if keep_standby.is_none() {
                make.push(CustodySlot::Standby);
            }
            let connection = self.find_connection(&c.tenant, &c.connection).await?;
            let template = active.or(standby).unwrap_or(&held[0]);
            let algorithm: KeyAlgorithm = template.key.algorithm.parse()?;
            let old = self.store.certificates_by_serials(std::slice::from_ref(&template.serial)).await?;
            let sans = old.first().map(|c| c.sans.clone()).unwrap_or_default();
            let made = self
                .certify_custody_keys(principal, &connection, algorithm, &make, &sans, None, Some(&record.id))
                .await?;
            let now_active = match signing {
                Some(k) => k.serial.clone(),
                None => made
                    .keys
                    .iter()
                    .find(|k| k.slot == CustodySlot::Active)
                    .map(|k| k.serial.clone())
                    .ok_or_else(|| CaError::Inconsistent("no active key was made".into()))?,
            };
            let new_standby = made.keys.iter().find(|k| k.slot == CustodySlot::Standby);
            let retired: Vec<String> =
                slots.iter().filter(|(_, s)| *s == CustodySlot::Retired).map(|(id, _)| id.clone()).collect();
            let retired_serials: Vec<&String> =
                held.iter().filter(|k| retired.contains(&k.key.id)).map(|k| &k.serial).collect();
            let mut audit = made.audit.clone();
            audit.push(audit_record(
                principal,
                "custody.switch",
                format!("connection:{}/{}", c.tenant, c.connection),
                json!({"incident": record.id, "tenant": c.tenant, "connection": c.connection,
                       "active_serial": now_active, "retired_keys": retired,
                       "new_standby_serial": new_standby.map(|k| &k.serial)}),
            ));
            let messages: Vec<OutboxMessage> = webhooks
                .get(&c.tenant)
                .map(|hook| {
                    let pem_of = |serial: &str| {
                        made.certificates.iter().find(|x| x.serial == serial).map(|x| custos_pki::certificate_pem(&x.der))
                    };
                    let body = json!({
                        "type": "custos.incident.custody",
                        "incident": record.id,
                        "tenant": c.tenant,
                        "reason": record.reason,
                        "connections": [{
                            "connection": c.connection,
                            "signing_serial": now_active,
                            "signing_certificate_pem": pem_of(&now_active),
                            "remove_serials": retired_serials,
                            "add_standby_serial": new_standby.map(|k| &k.serial),
                            "add_standby_certificate_pem": new_standby.and_then(|k| pem_of(&k.serial)),
                        }],
                        "todo": "remove the certificates of remove_serials from the relying party and add the standby certificate, then acknowledge",
                        "ack_url": format!("{}/incident/{}/ack", self.base_url, record.id),
                    });
                    vec![super::notify::queued(
                        record.id.clone(),
                        &c.tenant,
                        vec![c.connection.clone()],
                        &hook.url,
                        body.to_string(),
                        now(),
                    )]
                })
                .unwrap_or_default();
            let change = CustodyChange {
                connection: None,
                slots,
                add: made.keys.clone(),
                certificates: made.certificates.clone(),
                incident: Some(IncidentReplacements {
                    incident: record.id.clone(),
                    replacements: vec![Replacement {
                        tenant: c.tenant.clone(),
                        connection: c.connection.clone(),
                        serial: now_active,
                    }],
                    transition: REPLACE,
                }),
                messages,
            };
            let recorded = self.store.record_custody(&change, &audit).await;
            self.custody_changed();
            if let Err(e) = recorded {
                made.discard(self);
                return Err(e.into());
            }
            switched += 1;
        }
        self.destroy_retired_custody_keys(principal, record).await?;
        Ok(switched)
    }

    /// Destroys, in the key store, every retired custody key of the
    /// incident's connections that still exists (a run killed after a
    /// switch leaves them for this one).
    async fn destroy_retired_custody_keys(&self, principal: &Principal, record: &IncidentRecord) -> Result<()> {
        for c in self.store.incident_connections(&record.id).await? {
            for k in self.store.custody_keys(&c.tenant, &c.connection).await? {
                if k.slot != CustodySlot::Retired || k.key.status != KeyStatus::Active {
                    continue;
                }
                self.destroy_custody_key(principal, &k, Some(&record.id)).await?;
            }
        }
        Ok(())
    }
}
