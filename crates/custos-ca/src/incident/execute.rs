//! Executing an incident: new CAs, revocation, new keys and replacements, notifications queued; a durable, resumable state machine under a lock.

use super::*;

impl Ca {
    /// Carries an incident out, resuming wherever an earlier run stopped.
    /// Replacement private keys are appended to `keys_file` (created 0600)
    /// before each batch commits, so no committed replacement lacks its key.
    pub async fn execute_incident(
        &self,
        principal: &Principal,
        id: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ExecuteSummary> {
        authorize(principal, Operation::ExecuteIncident)?;
        let started = std::time::Instant::now();
        let mut record = self.incident_record(id).await?;
        // Two admins must agree (when two exist): replacing CAs and destroying keys cannot be undone.
        self.require_approval(principal, crate::approvals::EXECUTE_INCIDENT, id).await?;
        if record.state == IncidentState::Closed {
            return Err(CaError::Policy(format!("incident {id} is closed")));
        }
        let owner = lock_owner();
        if let Some(holder) = self.lock_incident(id, &owner, None).await? {
            let taken = match is_dead_here(&holder) {
                true => self.lock_incident(id, &owner, Some(&holder)).await?,
                false => Some(holder.clone()),
            };
            if taken.is_some() {
                return Err(CaError::Policy(format!(
                    "incident {id} is being executed by {holder}; wait for it to finish (its lock lapses after {LOCK_SECONDS}s without progress)"
                )));
            }
        }
        let result = self.execute_locked(principal, &mut record, &owner, keys_file, progress, started).await;
        let _ = self.store.unlock_incident(id, &owner).await;
        result
    }

    /// Takes (or renews) the execution lock for `owner`, taking it over from
    /// `stale`; returns the holder when refused.
    pub(super) async fn lock_incident(&self, id: &str, owner: &str, stale: Option<&str>) -> Result<Option<String>> {
        Ok(self.store.lock_incident(id, owner, now(), now() + LOCK_SECONDS, stale).await?)
    }

    /// Renews the lock between steps; fails if another run took it.
    pub(super) async fn heartbeat(&self, id: &str, owner: &str) -> Result<()> {
        match self.lock_incident(id, owner, None).await? {
            None => Ok(()),
            Some(holder) => Err(CaError::Policy(format!("lost the execution lock of {id} to {holder}"))),
        }
    }

    pub(super) async fn execute_locked(
        &self,
        principal: &Principal,
        record: &mut IncidentRecord,
        owner: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
        started: std::time::Instant,
    ) -> Result<ExecuteSummary> {
        let id = record.id.clone();
        if record.executed_at.is_none() || record.state == IncidentState::Declared {
            record.state = IncidentState::Executing;
            record.executed_at.get_or_insert(now());
            let audit = audit_record(principal, "incident.execute", format!("incident:{id}"), json!({"incident": id}));
            self.store.update_incident(record, &[audit]).await?;
        }
        // Certificates issued under a compromised CA since the declaration are affected too.
        let scope = Scope::of(record)?;
        let radius = self.radius(principal, &scope).await?;
        // This incident's own replacements are never in its blast radius: a
        // tenant or key scope re-evaluated by a second run would otherwise
        // take the replacements an earlier run issued for old certificates.
        let mut known: std::collections::HashSet<String> =
            self.store.incident_certificates(&id).await?.into_iter().map(|c| c.serial).collect();
        let connections = self.store.incident_connections(&id).await?;
        // Keys this incident made for custodied connections (new standbys) are its own too.
        let executed_at = record.executed_at.unwrap_or(i64::MAX);
        for c in &connections {
            for k in self.store.custody_keys(&c.tenant, &c.connection).await? {
                if k.created_at >= executed_at {
                    known.insert(k.serial);
                }
            }
        }
        known.extend(connections.into_iter().filter_map(|c| c.replacement));
        let late: Vec<IncidentCertificate> =
            radius.certificates.iter().filter(|c| !known.contains(&c.serial)).cloned().collect();
        if !late.is_empty() {
            let audit = audit_record(
                principal,
                "incident.extend",
                format!("incident:{id}"),
                json!({"incident": id, "added_certificates": late.len()}),
            );
            self.store.add_incident_certificates(&id, &late, &[audit]).await?;
        }

        // 1. New CAs in place of compromised ones (once).
        if record.new_issuers.is_empty() && !radius.issuers.is_empty() {
            self.replace_cas(principal, record, &radius.issuers).await?;
        }
        self.heartbeat(&id, owner).await?;

        // 2. Custodied connections sign with an unaffected key before anything is revoked.
        let switched = self.switch_custodied(principal, record).await?;
        self.heartbeat(&id, owner).await?;

        // 3. Revoke (a key compromise at once; other reasons when each connection is retired).
        let reason: Reason = record.reason;
        let mut revoked = 0;
        if reason == Reason::KeyCompromise {
            revoked = self.revoke_affected(principal, record, None, progress).await?;
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now());
                self.store.update_incident(record, &[]).await?;
            }
        }
        let seconds_to_revoked = started.elapsed().as_secs_f64();

        // 4. Final CRLs of compromised CAs, then destroy their keys.
        self.retire_compromised_keys(principal, record).await?;
        self.heartbeat(&id, owner).await?;

        // 5. Replacements, with their notifications, per batch.
        let (replaced, keys_file) = self.replace_connections(principal, record, owner, keys_file, progress).await?;
        let replaced = replaced + switched;
        let seconds_to_replaced = started.elapsed().as_secs_f64();
        let pending =
            self.store.incident_connections(&id).await?.iter().filter(|c| c.state == ConnectionState::Pending).count();
        if pending == 0 && record.state == IncidentState::Executing {
            record.state = IncidentState::Executed;
            record.replaced_at.get_or_insert(now());
            let audit = audit_record(
                principal,
                "incident.executed",
                format!("incident:{id}"),
                json!({"incident": id, "new_issuers": record.new_issuers}),
            );
            self.store.update_incident(record, &[audit]).await?;
        }
        Ok(ExecuteSummary {
            id,
            new_issuers: record.new_issuers.clone(),
            revoked,
            replaced,
            keys_file,
            seconds_to_revoked,
            seconds_to_replaced,
        })
    }

    /// Creates a new key and CA for each compromised CA (a new root first if
    /// the root is among them), marks the old ones compromised, all in one transaction.
    pub(super) async fn replace_cas(
        &self,
        principal: &Principal,
        record: &mut IncidentRecord,
        compromised: &[IssuerRecord],
    ) -> Result<()> {
        let mut issuers = self.store.issuers().await?;
        let keys = self.key_store()?.clone();
        let now_t = OffsetDateTime::now_utc();
        let mut new_keys: Vec<KeyRecord> = Vec::new();
        let mut new_issuers: Vec<IssuerRecord> = Vec::new();
        let mut audit: Vec<AuditRecord> = Vec::new();
        // Old CA id -> the new CA that replaces it, parents first.
        let mut replaced: HashMap<String, crate::ceremony::Parent> = HashMap::new();
        for old in compromised {
            let old_key = self
                .store
                .key(&old.key_id)
                .await?
                .ok_or_else(|| CaError::Inconsistent(format!("CA {} names missing key {}", old.id, old.key_id)))?;
            let algorithm: KeyAlgorithm = old_key.algorithm.parse()?;
            let prefix = old.role.as_str();
            let (new_id, n) = next_issuer_id(&issuers, prefix);
            // Under the parent's replacement if the parent was replaced too.
            let parent = match &old.parent {
                None => None,
                Some(p) => Some(match replaced.get(p) {
                    Some(new_parent) => new_parent.clone(),
                    None => {
                        let parent = issuers
                            .iter()
                            .find(|i| &i.id == p)
                            .ok_or_else(|| CaError::Inconsistent(format!("CA {} names missing parent {p}", old.id)))?;
                        crate::ceremony::Parent {
                            id: parent.id.clone(),
                            key_id: parent.key_id.clone(),
                            issuer: std::sync::Arc::new(
                                self.ca_issuer(parent, crate::metrics::Purpose::Certificate).await?,
                            ),
                        }
                    }
                }),
            };
            let made = crate::ceremony::make_ca(
                keys.as_ref(),
                crate::ceremony::CaSpec {
                    id: new_id.clone(),
                    name: renumber(&old.name, n),
                    organization: organization_of(&old.name),
                    algorithm,
                    parent: parent.as_ref(),
                    base_url: &self.base_url,
                },
                now_t,
            )?;
            for (action, object, mut details) in made.events {
                details["incident"] = json!(record.id);
                if action == "issuer.create" {
                    details["replaces"] = json!(old.id);
                }
                audit.push(audit_record(principal, action, object, details));
            }
            audit.push(audit_record(
                principal,
                "issuer.compromise",
                format!("issuer:{}", old.id),
                json!({"issuer": old.id, "key": old.key_id, "replaced_by": new_id, "incident": record.id}),
            ));
            new_keys.push(made.key);
            replaced.insert(old.id.clone(), made.parent);
            issuers.push(made.issuer.clone());
            new_issuers.push(made.issuer);
        }
        record.new_issuers = new_issuers.iter().map(|i| i.id.clone()).collect();
        let mut revoked = Vec::with_capacity(compromised.len());
        for c in compromised {
            revoked.push((c.id.clone(), custos_pki::inspect::certificate_facts(&c.cert_der)?.serial.to_hex()));
        }
        self.store.rekey(record, &new_keys, &new_issuers, &revoked, &audit).await?;
        self.forget_active_issuer();
        Ok(())
    }

    /// Revokes the incident's still-valid certificates (of `only` connections
    /// if given) with its reason and invalidity date; returns how many.
    pub(super) async fn revoke_affected(
        &self,
        principal: &Principal,
        record: &IncidentRecord,
        only: Option<&[(String, String)]>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<usize> {
        let affected = self.store.incident_certificates(&record.id).await?;
        let mut todo = Vec::new();
        for c in affected {
            if let Some(only) = only
                && !only.iter().any(|(t, n)| t == &c.tenant && n == &c.connection)
            {
                continue;
            }
            todo.push(c);
        }
        let total = todo.len();
        // Only those still valid: a resumed run does not revoke twice.
        let mut valid = Vec::with_capacity(total);
        for chunk in todo.chunks(REVOKE_BATCH) {
            let serials: Vec<String> = chunk.iter().map(|c| c.serial.clone()).collect();
            valid.extend(self.store.valid_serials(&serials).await?);
        }
        let reason: Reason = record.reason;
        let revocation = Revocation { revoked_at: now(), reason, invalidity_date: record.since };
        let mut done = total - valid.len();
        progress(Progress::Revoked(done, total));
        for chunk in valid.chunks(REVOKE_BATCH) {
            // A key compromise blocks every revoked certificate's key as well,
            // in the same transaction; each revocation entry names the key it blocked.
            let (block, keys): (Vec<custos_store::BlockedKey>, HashMap<String, String>) =
                if reason == Reason::KeyCompromise {
                    let records = self.store.certificates_by_serials(chunk).await?;
                    let keys = records.iter().map(|c| (c.serial.clone(), c.spki_sha256.clone())).collect();
                    (crate::revocation::blocks_for(&records, reason, Some(&record.id)), keys)
                } else {
                    (Vec::new(), HashMap::new())
                };
            let audit: Vec<AuditRecord> = chunk
                .iter()
                .map(|serial| {
                    audit_record(
                        principal,
                        "certificate.revoke",
                        format!("cert:{serial}"),
                        json!({"serial": serial, "reason": reason.as_str(), "invalidity_date": record.since,
                               "incident": record.id, "blocked_key": keys.get(serial)}),
                    )
                })
                .collect();
            self.store.revoke(chunk, &revocation, &block, &audit).await?;
            self.custody_changed();
            done += chunk.len();
            progress(Progress::Revoked(done, total));
        }
        Ok(valid.len())
    }

    /// Signs the final CRLs of compromised CAs (long-lived, since no key will
    /// sign another) and destroys their keys in the key store.
    pub(super) async fn retire_compromised_keys(&self, principal: &Principal, record: &IncidentRecord) -> Result<()> {
        for ca in self.store.issuers().await?.into_iter().filter(|i| i.status == IssuerStatus::Compromised) {
            let Some(key) = self.store.key(&ca.key_id).await? else { continue };
            if key.status == KeyStatus::Destroyed {
                continue;
            }
            // Its OCSP responder, made (or renewed) now while the key exists,
            // keeps answering `revoked` for its certificates until it expires.
            self.responder(principal, &ca.id).await?;
            for partition in 0..self.crl_partitions(&ca.id).await? {
                let entries = self.revoked_entries(&ca.id, partition).await?;
                let until = crate::revocation::from_unix(ca.not_after)?;
                let crl = self.sign_crl_until(principal, &ca.id, partition, entries, until).await?;
                use base64::Engine;
                let value = base64::engine::general_purpose::STANDARD.encode(&crl.der);
                self.store.set_meta(&crate::revocation::final_crl_key(&ca.id, partition), &value, &[]).await?;
            }
            let reference = custos_keys::KeyReference { backend: key.backend.clone(), data: key.reference.clone() };
            // Destroying a key already gone (a run killed after destroying it) succeeds.
            self.key_store()?.destroy(&reference)?;
            let audit = audit_record(
                principal,
                "key.destroy",
                format!("key:{}", key.id),
                json!({"key": key.id, "backend": key.backend, "label": key.label, "reason": "compromised",
                       "incident": record.id}),
            );
            self.store.destroy_key(&key.id, &[audit]).await?;
        }
        Ok(())
    }

    /// Issues a replacement for every `pending` connection; returns how many and the keys file.
    pub(super) async fn replace_connections(
        &self,
        principal: &Principal,
        record: &IncidentRecord,
        owner: &str,
        keys_file: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(usize, Option<PathBuf>)> {
        let connections = self.store.incident_connections(&record.id).await?;
        let total = connections.len();
        let pending: Vec<IncidentConnection> =
            connections.into_iter().filter(|c| c.state == ConnectionState::Pending).collect();
        progress(Progress::Replaced(total - pending.len(), total));
        if pending.is_empty() {
            return Ok((0, None));
        }
        // The names to repeat: those of each connection's newest affected certificate.
        let affected = self.store.incident_certificates(&record.id).await?;
        let mut newest: HashMap<(String, String), CertificateRecord> = HashMap::new();
        let mut old_serials: HashMap<(String, String), Vec<String>> = HashMap::new();
        for c in &affected {
            old_serials.entry((c.tenant.clone(), c.connection.clone())).or_default().push(c.serial.clone());
        }
        for chunk in affected.chunks(REVOKE_BATCH) {
            let serials: Vec<String> = chunk.iter().map(|c| c.serial.clone()).collect();
            for cert in self.store.certificates_by_serials(&serials).await? {
                let key = (cert.tenant.clone(), cert.connection.clone());
                if newest.get(&key).is_none_or(|n| n.created_at < cert.created_at) {
                    newest.insert(key, cert);
                }
            }
        }
        let webhooks: HashMap<String, WebhookRecord> =
            self.store.webhooks().await?.into_iter().map(|w| (w.tenant.clone(), w)).collect();
        let file = crate::files::open_own_private(keys_file, "--keys-out")?;
        let sink = ReplacementSink {
            incident: record.id.clone(),
            reason: record.reason,
            base_url: self.base_url.clone(),
            old_serials,
            webhooks,
            file: std::sync::Mutex::new(file),
            path: keys_file.to_path_buf(),
        };
        let mut done = total - pending.len();
        let mut replaced = 0;
        for chunk in pending.chunks(REPLACE_BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for c in chunk {
                let old = newest.get(&(c.tenant.clone(), c.connection.clone())).ok_or_else(|| {
                    CaError::Inconsistent(format!("no affected certificate recorded for {}/{}", c.tenant, c.connection))
                })?;
                // An ACME client holds its own key: ARI tells it to renew now,
                // and its new order re-establishes the connection (acme.rs).
                // custos makes no key for it; the connection stays pending until then.
                if old.key_origin == crate::acme::KEY_ORIGIN {
                    continue;
                }
                requests.push(IssueRequest {
                    tenant: c.tenant.clone(),
                    connection: c.connection.clone(),
                    profile: Some(old.profile),
                    sans: old.sans.clone(),
                    validity_secs: None,
                    key: KeySource::Generate(old.key_algorithm.parse().ok()),
                    request_key: None,
                });
            }
            if requests.is_empty() {
                continue;
            }
            let n = self
                .issue_into(principal, requests, &sink, |batch| {
                    done += batch.len();
                    progress(Progress::Replaced(done, total));
                })
                .await?;
            replaced += n;
            self.heartbeat(&record.id, owner).await?;
        }
        if replaced == 0 && std::fs::metadata(keys_file).is_ok_and(|m| m.len() == 0) {
            // Every pending connection waits for its ACME client: no keys, no file.
            let _ = std::fs::remove_file(keys_file);
            return Ok((0, None));
        }
        Ok((replaced, Some(keys_file.to_path_buf())))
    }
}

/// Commits a batch of replacements: keys to the file first (synced), then the
/// certificates, connection states, notifications and audit entries in one transaction.
struct ReplacementSink {
    incident: String,
    reason: Reason,
    base_url: String,
    old_serials: HashMap<(String, String), Vec<String>>,
    webhooks: HashMap<String, WebhookRecord>,
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
}

#[async_trait::async_trait]
impl IssueSink for ReplacementSink {
    fn incident(&self) -> Option<&str> {
        Some(&self.incident)
    }

    async fn commit(&self, ca: &Ca, batch: &[Issued], audit: Vec<AuditRecord>) -> Result<()> {
        let io = |source| CaError::Io { path: self.path.clone(), source };
        {
            let mut lines = Vec::with_capacity(batch.len() * 1200);
            for issued in batch {
                let r = &issued.record;
                let line = json!({
                    "incident": self.incident, "tenant": r.tenant, "connection": r.connection, "serial": r.serial,
                    "certificate": custos_pki::certificate_pem(&r.der),
                    "chain": issued.chain.iter().map(|c| custos_pki::certificate_pem(c)).collect::<String>(),
                    "private_key": issued.key.as_ref().map(|k| k.pkcs8_pem().to_string()),
                });
                lines.extend_from_slice(line.to_string().as_bytes());
                lines.push(b'\n');
            }
            let mut file = self.file.lock().map_err(|_| CaError::Inconsistent("keys file lock poisoned".into()))?;
            file.write_all(&lines).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut by_tenant: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let mut replacements = Vec::with_capacity(batch.len());
        for issued in batch {
            let r = &issued.record;
            replacements.push(Replacement {
                tenant: r.tenant.clone(),
                connection: r.connection.clone(),
                serial: r.serial.clone(),
            });
            if self.webhooks.contains_key(&r.tenant) {
                by_tenant.entry(r.tenant.clone()).or_default().push(json!({
                    "connection": r.connection,
                    "old_serials": self.old_serials.get(&(r.tenant.clone(), r.connection.clone())),
                    "new_serial": r.serial,
                    "not_after": crate::rfc3339(r.not_after),
                    "certificate_pem": custos_pki::certificate_pem(&r.der),
                    "chain_pem": issued.chain.iter().map(|c| custos_pki::certificate_pem(c)).collect::<String>(),
                }));
            }
        }
        let created = now();
        let messages: Vec<OutboxMessage> = by_tenant
            .into_iter()
            .filter_map(|(tenant, connections)| {
                let hook = self.webhooks.get(&tenant)?;
                let names = connections.iter().filter_map(|c| c["connection"].as_str().map(str::to_string)).collect();
                let body = json!({
                    "type": "custos.incident.replacement",
                    "incident": self.incident,
                    "tenant": tenant,
                    "reason": self.reason,
                    "connections": connections,
                    "ack_url": format!("{}/incident/{}/ack", self.base_url, self.incident),
                });
                Some(super::notify::queued(self.incident.clone(), &tenant, names, &hook.url, body.to_string(), created))
            })
            .collect();
        let records: Vec<CertificateRecord> = batch.iter().map(|s| s.record.clone()).collect();
        ca.store
            .record_replacements(&self.incident, &records, &replacements, &REPLACE, &messages, &audit)
            .await
            .map_err(|e| match e {
                custos_store::StoreError::Conflict { what } => CaError::Policy(what),
                other => other.into(),
            })
    }
}
