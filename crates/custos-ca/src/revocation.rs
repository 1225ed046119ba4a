//! Revoking certificates, signing CRLs, and the delegated OCSP responders.

use std::sync::Arc;

use custos_keys::Signer;
use custos_pki::crl::{CrlSpec, RevokedEntry};
use custos_pki::{CertificateSpec, CertificateTemplate, Profile, Reason, Serial};
use custos_store::{AuditRecord, BlockedKey, CertificateRecord, KeyRecord, ResponderRecord, Revocation};
use custos_types::{CertificateStatus, IssuerRole, IssuerStatus, KeyStatus};
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::{Operation, authorize};
use crate::{Ca, CaError, Principal, Result, audit_record, visible};

/// How long a CRL says it is good for. custos regenerates it within a second
/// of any revocation; this bounds how stale a relying party's copy can be.
pub const CRL_LIFETIME: time::Duration = time::Duration::hours(1);
/// Renew a responder certificate when less than this is left of it.
const RESPONDER_RENEW_BEFORE: time::Duration = time::Duration::days(7);

/// A signed CRL.
#[derive(Clone, Debug)]
pub struct Crl {
    /// Issuer id.
    pub issuer: String,
    /// Which of the issuer's CRLs this is.
    pub partition: i64,
    /// DER.
    pub der: Vec<u8>,
    /// Its CRL number.
    pub number: i64,
    /// Its thisUpdate.
    pub this_update: OffsetDateTime,
    /// Its nextUpdate.
    pub next_update: OffsetDateTime,
    /// How many certificates it lists.
    pub entries: usize,
}

/// An issuer's current OCSP responder: its certificate and key.
#[derive(Clone)]
pub struct ResponderKey {
    /// Responder certificate, signed by the issuer.
    pub certificate_der: Vec<u8>,
    /// The responder's key.
    pub signer: Arc<dyn Signer>,
    /// End of the certificate's validity.
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Revokes one certificate; its audit entry commits with it.
    pub async fn revoke(
        &self,
        principal: &Principal,
        serial: &Serial,
        reason: Reason,
        invalidity_date: Option<OffsetDateTime>,
    ) -> Result<CertificateRecord> {
        let record = self.certificate(principal, serial).await?;
        let revoke = Operation::Revoke { tenant: &record.tenant, connection: &record.connection };
        visible(principal, revoke, || CaError::UnknownCertificate(serial.to_hex()))?;
        if record.status == CertificateStatus::Revoked {
            return Err(CaError::Policy(format!(
                "certificate {} is already revoked ({})",
                record.serial,
                record.revocation_reason.unwrap_or(Reason::Unspecified)
            )));
        }
        self.revoke_records(principal, std::slice::from_ref(&record), reason, invalidity_date).await?;
        self.certificate(principal, serial).await
    }

    /// Revokes every unexpired, unrevoked certificate of a connection, in one transaction.
    pub async fn revoke_connection(
        &self,
        principal: &Principal,
        tenant: &str,
        connection: &str,
        reason: Reason,
        invalidity_date: Option<OffsetDateTime>,
    ) -> Result<Vec<CertificateRecord>> {
        visible(principal, Operation::Revoke { tenant, connection }, || CaError::UnknownConnection {
            tenant: tenant.into(),
            connection: connection.into(),
        })?;
        if self.store.connection(tenant, connection).await?.is_none() {
            if self.store.tenant(tenant).await?.is_none() {
                return Err(CaError::UnknownTenant(tenant.to_string()));
            }
            return Err(CaError::UnknownConnection { tenant: tenant.into(), connection: connection.into() });
        }
        // `Valid` means not revoked and not past notAfter.
        let records: Vec<CertificateRecord> = self
            .certificates(
                principal,
                &crate::ListFilter {
                    tenant: Some(tenant.into()),
                    connection: Some(connection.into()),
                    status: Some(custos_store::StatusFilter::Valid),
                    ..Default::default()
                },
            )
            .await?;
        if !records.is_empty() {
            self.revoke_records(principal, &records, reason, invalidity_date).await?;
        }
        Ok(records)
    }

    /// Revokes `records` with their audit entries in one transaction (the
    /// caller has authorized it); a key compromise blocks their keys too.
    pub(crate) async fn revoke_records(
        &self,
        principal: &Principal,
        records: &[CertificateRecord],
        reason: Reason,
        invalidity_date: Option<OffsetDateTime>,
    ) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        if let Some(d) = invalidity_date
            && d > now
        {
            return Err(CaError::Policy(format!("invalidity date {d} is in the future")));
        }
        let revocation = Revocation {
            revoked_at: now.unix_timestamp(),
            reason,
            invalidity_date: invalidity_date.map(|d| d.unix_timestamp()),
        };
        // A key compromise also blocks the key, in the same transaction; the
        // revocation's entry names the key it blocked (no entry of its own).
        let blocking = reason == Reason::KeyCompromise;
        let audit: Vec<AuditRecord> = records
            .iter()
            .map(|c| {
                audit_record(
                    principal,
                    "certificate.revoke",
                    format!("cert:{}", c.serial),
                    json!({"serial": c.serial, "issuer": c.issuer, "tenant": c.tenant, "connection": c.connection,
                           "reason": reason.as_str(), "invalidity_date": revocation.invalidity_date,
                           "blocked_key": blocking.then_some(&c.spki_sha256)}),
                )
            })
            .collect();
        let serials: Vec<String> = records.iter().map(|c| c.serial.clone()).collect();
        let block = blocks_for(records, reason, None);
        let done = self.store.revoke(&serials, &revocation, &block, &audit).await.map_err(|e| match e {
            custos_store::StoreError::Conflict { what } => CaError::Policy(what),
            other => other.into(),
        });
        self.custody_changed();
        done
    }

    /// How many CRL partitions an issuer publishes.
    pub async fn crl_partitions(&self, issuer_id: &str) -> Result<i64> {
        let issued = self.store.issued(issuer_id).await?;
        Ok(((issued + self.crl_partition_size - 1) / self.crl_partition_size).max(1))
    }

    /// Signs a fresh CRL for one partition of `issuer` with the next CRL number.
    pub async fn crl(&self, principal: &Principal, issuer_id: &str, partition: i64) -> Result<Crl> {
        authorize(principal, Operation::SignCrl)?;
        if let Some(last) = self.final_crl(issuer_id, partition).await? {
            return Ok(last);
        }
        let revoked = self.revoked_entries(issuer_id, partition).await?;
        self.sign_crl(principal, issuer_id, partition, revoked).await
    }

    /// The last CRL of a compromised CA, signed before its key was destroyed.
    pub async fn final_crl(&self, issuer_id: &str, partition: i64) -> Result<Option<Crl>> {
        use base64::Engine;
        let Some(text) = self.store.meta(&final_crl_key(issuer_id, partition)).await? else { return Ok(None) };
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| CaError::Inconsistent(format!("final CRL of {issuer_id} is not base64")))?;
        let facts = custos_pki::inspect::crl_facts(&der)?;
        Ok(Some(Crl {
            issuer: issuer_id.to_string(),
            partition,
            number: facts.number,
            this_update: from_unix(facts.this_update)?,
            next_update: from_unix(facts.next_update)?,
            entries: facts.entries,
            der,
        }))
    }

    /// The revoked certificates of one CRL partition, read from the store.
    pub async fn revoked_entries(&self, issuer_id: &str, partition: i64) -> Result<Vec<RevokedEntry>> {
        if partition < 0 || partition >= self.crl_partitions(issuer_id).await? {
            return Err(CaError::Policy(format!("issuer {issuer_id} has no CRL partition {partition}")));
        }
        let rows = self.store.revoked(issuer_id, partition).await?;
        let mut revoked = Vec::with_capacity(rows.len());
        // A parent's main CRL also lists its compromised child CAs.
        if partition == 0 {
            for child in self.store.issuers().await?.iter().filter(|c| c.parent.as_deref() == Some(issuer_id)) {
                if let Some(at) = child.revoked_at {
                    revoked.push(RevokedEntry {
                        serial: custos_pki::inspect::certificate_facts(&child.cert_der)?.serial,
                        revoked_at: from_unix(at)?,
                        reason: Some(custos_pki::Reason::KeyCompromise),
                        invalidity_date: None,
                    });
                }
            }
        }
        for r in rows {
            revoked.push(RevokedEntry {
                serial: r.serial.parse()?,
                revoked_at: from_unix(r.revoked_at)?,
                reason: r.reason,
                invalidity_date: r.invalidity_date.map(from_unix).transpose()?,
            });
        }
        Ok(revoked)
    }

    /// Signs a CRL of `revoked` for one partition of `issuer`, with the next
    /// CRL number (advanced in the store together with its audit entry).
    pub async fn sign_crl(
        &self,
        principal: &Principal,
        issuer_id: &str,
        partition: i64,
        revoked: Vec<RevokedEntry>,
    ) -> Result<Crl> {
        authorize(principal, Operation::SignCrl)?;
        self.sign_crl_until(principal, issuer_id, partition, revoked, OffsetDateTime::now_utc() + CRL_LIFETIME).await
    }

    /// Signs a CRL whose nextUpdate is `next_update` (the end of a compromised
    /// CA's life for its final CRL, since no key will sign another).
    pub(crate) async fn sign_crl_until(
        &self,
        principal: &Principal,
        issuer_id: &str,
        partition: i64,
        revoked: Vec<RevokedEntry>,
        next_update: OffsetDateTime,
    ) -> Result<Crl> {
        let record = self.issuer_record(issuer_id).await?;
        let ca = self.ca_issuer(&record, crate::metrics::Purpose::Crl).await?;
        // The root's CRL covers CA certificates, so it names no user-only scope.
        let user_certs_at =
            (record.role != IssuerRole::Root).then(|| crate::crl_url(&self.base_url, issuer_id, partition));
        let entries = revoked.len();
        let number = self
            .store
            .next_crl_number(
                issuer_id,
                &audit_record(
                    principal,
                    "crl.sign",
                    format!("issuer:{issuer_id}"),
                    json!({"issuer": issuer_id, "partition": partition, "key": record.key_id, "entries": entries}),
                ),
            )
            .await?;
        let this_update = OffsetDateTime::now_utc();
        let spec = CrlSpec { number: number as u64, this_update, next_update, user_certs_at, revoked };
        let der = tokio::task::spawn_blocking(move || ca.sign_crl(&spec))
            .await
            .map_err(|e| CaError::Inconsistent(format!("CRL task failed: {e}")))??;
        Ok(Crl { issuer: issuer_id.to_string(), partition, der, number, this_update, next_update, entries })
    }

    /// The issuer's OCSP responder, created or renewed when missing or close to expiry.
    pub async fn responder(&self, principal: &Principal, issuer_id: &str) -> Result<ResponderKey> {
        authorize(principal, Operation::PublishStatus)?;
        let now = OffsetDateTime::now_utc();
        if let Some(r) = self.store.responder(issuer_id).await?
            && from_unix(r.not_after)? - now > RESPONDER_RENEW_BEFORE
        {
            let signer = self.signer(&r.key_id, crate::metrics::Purpose::Ocsp).await?;
            return Ok(ResponderKey { certificate_der: r.cert_der, signer, not_after: from_unix(r.not_after)? });
        }
        let record = self.issuer_record(issuer_id).await?;
        let key_gone = self.store.key(&record.key_id).await?.is_none_or(|k| k.status == KeyStatus::Destroyed);
        if record.status != IssuerStatus::Active && key_gone {
            // A compromised CA's key is gone: its last responder serves until it expires.
            return match self.store.responder(issuer_id).await? {
                Some(r) if from_unix(r.not_after)? > now => {
                    let signer = self.signer(&r.key_id, crate::metrics::Purpose::Ocsp).await?;
                    Ok(ResponderKey { certificate_der: r.cert_der, signer, not_after: from_unix(r.not_after)? })
                }
                _ => Err(CaError::Policy(format!("{issuer_id} is {} and has no valid OCSP responder", record.status))),
            };
        }
        let ca = self.ca_issuer(&record, crate::metrics::Purpose::Certificate).await?;
        let key = self.key_store()?.generate(custos_keys::KeyAlgorithm::EcdsaP256, &format!("ocsp-{issuer_id}"))?;
        let key_id = key.signer.public_key().key_id().to_string();
        let not_after =
            (now + time::Duration::days(i64::from(Profile::OcspResponder.default_validity_days()))).min(ca.not_after());
        let template = CertificateTemplate::new(CertificateSpec {
            serial: Serial::random()?,
            profile: Profile::OcspResponder,
            common_name: format!("{} OCSP responder", record.name.chars().take(45).collect::<String>()),
            organization: None,
            sans: vec![],
            not_before: now - time::Duration::minutes(1),
            not_after,
            urls: Some(self.urls_for(issuer_id)),
        })?;
        let cert = template.sign(key.signer.public_key(), key.signer.algorithm(), &ca)?;
        let key_record = KeyRecord {
            id: key_id.clone(),
            backend: key.reference.backend.clone(),
            algorithm: key.signer.algorithm().to_string(),
            label: format!("ocsp-{issuer_id}"),
            public_key: key.signer.public_key().spki_der().to_vec(),
            reference: key.reference.data.clone(),
            status: KeyStatus::Active,
            created_at: now.unix_timestamp(),
        };
        let responder = ResponderRecord {
            issuer: issuer_id.to_string(),
            key_id: key_id.clone(),
            cert_der: cert.der.clone(),
            not_after: cert.not_after.unix_timestamp(),
            created_at: now.unix_timestamp(),
        };
        let audit = [
            audit_record(
                principal,
                "key.generate",
                format!("key:{key_id}"),
                json!({"key": key_id, "algorithm": key_record.algorithm, "backend": key_record.backend, "label": key_record.label}),
            ),
            audit_record(
                principal,
                "responder.issue",
                format!("issuer:{issuer_id}"),
                json!({"issuer": issuer_id, "key": record.key_id, "subject_key": key_id, "serial": cert.serial.to_hex(),
                       "not_after": responder.not_after}),
            ),
        ];
        self.store.add_responder(&key_record, &responder, &audit).await?;
        Ok(ResponderKey { certificate_der: cert.der, signer: key.signer, not_after: cert.not_after })
    }
}

/// The keys a revocation blocks: for keyCompromise, every revoked
/// certificate's key, so that no CSR with it is certified again, on any
/// connection. Other reasons block nothing.
pub(crate) fn blocks_for(records: &[CertificateRecord], reason: Reason, incident: Option<&str>) -> Vec<BlockedKey> {
    if reason != Reason::KeyCompromise {
        return Vec::new();
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|c| seen.insert(c.spki_sha256.clone()))
        .map(|c| BlockedKey {
            spki_sha256: c.spki_sha256.clone(),
            reason: reason.as_str().to_string(),
            source: match incident {
                Some(id) => format!("incident:{id} cert:{}", c.serial),
                None => format!("cert:{}", c.serial),
            },
            created_at: now,
        })
        .collect()
}

/// The audit entry of one blocked key.
pub(crate) fn block_audit(principal: &Principal, b: &BlockedKey) -> AuditRecord {
    audit_record(
        principal,
        "key.block",
        format!("spki:{}", b.spki_sha256),
        json!({"spki_sha256": b.spki_sha256, "reason": b.reason, "source": b.source}),
    )
}

impl Ca {
    /// Blocks a key by its SPKI SHA-256 (64 hex digits) so that no CSR with it
    /// is certified again, with its audit entry.
    pub async fn block_key(&self, principal: &Principal, spki_sha256: &str, reason: &str) -> Result<BlockedKey> {
        authorize(principal, Operation::BlockKey)?;
        let spki = spki_sha256.trim().to_ascii_lowercase();
        if spki.len() != 64 || !spki.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CaError::Policy(format!(
                "{spki_sha256:?} is not a SPKI SHA-256: 64 hex digits, as `custos show SERIAL` prints it"
            )));
        }
        let key = BlockedKey {
            spki_sha256: spki,
            reason: if reason.trim().is_empty() { "blocked by hand".into() } else { reason.trim().to_string() },
            source: principal.actor(),
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
        };
        self.store.block_keys(std::slice::from_ref(&key), &[block_audit(principal, &key)]).await?;
        Ok(key)
    }

    /// Every blocked key, oldest first.
    pub async fn blocklist(&self, principal: &Principal) -> Result<Vec<BlockedKey>> {
        authorize(principal, Operation::ReadKeys)?;
        Ok(self.store.blocklist().await?)
    }
}

/// The setting holding a compromised CA's final CRL (base64 DER).
pub(crate) fn final_crl_key(issuer_id: &str, partition: i64) -> String {
    format!("final_crl:{issuer_id}:{partition}")
}

pub(crate) fn from_unix(t: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t)
        .map_err(|_| CaError::Inconsistent(format!("stored time {t} is out of range")))
}
