//! Group commit for single issuances (the API's). Each request is checked,
//! planned and signed on its own task, in parallel with the others; only the
//! write is shared: signed certificates wait for the commit, and whichever
//! request takes the commit next writes every waiting one, with its audit
//! entry, in one transaction. A hundred concurrent clients pay for one fsync,
//! not a hundred, and none is answered before the transaction holding its
//! certificate has committed.
//!
//! Issuance positions (which pick CRL partitions) are reserved ahead in
//! chunks: a crash or restart leaves the unused rest as a gap, which the
//! store allows (positions are never reused).

use std::sync::Arc;

use custos_store::{AuditRecord, CertificateRecord};
use time::OffsetDateTime;

use crate::issuance::{IssueRequest, Issued};
use crate::{Ca, CaError, Principal, Result};

/// Positions reserved at once for grouped issuance.
const POSITION_CHUNK: i64 = 4096;

/// A signed certificate and its audit entry, waiting for the commit.
type Ready = crate::group::Pending<(Issued, AuditRecord), Result<Issued>>;

/// The certificates waiting for the commit, and positions reserved ahead.
#[derive(Default)]
pub(crate) struct Groups {
    ready: crate::group::GroupCommit<(Issued, AuditRecord), Result<Issued>>,
    /// (issuer, next position, end of the reserved range).
    positions: tokio::sync::Mutex<Option<(String, i64, i64)>>,
}

impl Ca {
    /// Issues one certificate, committed together with whatever other single
    /// issuances are ready at the same time (see the module comment). The
    /// answer, as from [`Ca::issue`], comes only once the certificate and its
    /// audit entry are durable.
    pub async fn issue_grouped(self: &Arc<Self>, principal: &Principal, request: IssueRequest) -> Result<Issued> {
        let signed = self.sign_one(principal, &request).await?;
        let ca = self.clone();
        let _observe = crate::metrics::ObserveOnDrop(&self.metrics.audit_append_seconds, std::time::Instant::now());
        let outcome = self.groups.ready.submit(signed, move |group| async move { ca.commit_ready(group).await });
        outcome.await.unwrap_or_else(|| Err(CaError::Inconsistent("issuance stopped before it answered".into())))
    }

    /// Policy, plan, blocklist, position and signature for one request, and its audit entry.
    pub(crate) async fn sign_one(
        &self,
        principal: &Principal,
        request: &IssueRequest,
    ) -> Result<(Issued, AuditRecord)> {
        crate::issuance::may_issue(principal, request)?;
        let active = self.active_issuer().await?;
        let connection = self.find_connection(&request.tenant, &request.connection).await?;
        let mut planned = crate::issuance::plan(request, &connection, &active, OffsetDateTime::now_utc())?;
        if let Some(spki) = planned.csr_spki()
            && let Some(b) = self.store.blocked_keys(std::slice::from_ref(&spki)).await?.into_iter().next()
        {
            return Err(CaError::Policy(format!(
                "the request's key (SPKI SHA-256 {}) is blocked ({}, {}): make a new key for this connection",
                b.spki_sha256, b.reason, b.source
            )));
        }
        let position = self.take_positions(&active.record.id, 1).await?;
        planned.set_position(position, self.crl_partition_size, &self.base_url, &active.record.id);
        let issued = crate::issuance::sign(planned, &active)?;
        let audit = crate::issuance::issue_audit(principal, &issued.record, &active.record, None);
        Ok((issued, audit))
    }

    /// Commits every ready certificate in one transaction and answers each.
    async fn commit_ready(&self, group: Vec<Ready>) {
        let records: Vec<CertificateRecord> = group.iter().map(|((issued, _), _)| issued.record.clone()).collect();
        let audit: Vec<AuditRecord> = group.iter().map(|((_, audit), _)| audit.clone()).collect();
        match self.store.insert_certificates(&records, &audit).await {
            Ok(()) => {
                for ((issued, _), reply) in group {
                    let _ = reply.send(Ok(issued));
                }
            }
            Err(e) => {
                let said = e.to_string();
                let unavailable = matches!(e, custos_store::StoreError::Unavailable(_));
                for (_, reply) in group {
                    let _ = reply.send(Err(if unavailable {
                        CaError::Store(custos_store::StoreError::Unavailable(said.clone()))
                    } else {
                        CaError::Inconsistent(format!("the commit of this request's group failed: {said}"))
                    }));
                }
            }
        }
    }

    /// `n` consecutive issuance positions of `issuer`, from a range reserved ahead.
    async fn take_positions(&self, issuer: &str, n: i64) -> Result<i64> {
        let mut pool = self.groups.positions.lock().await;
        if let Some((id, next, end)) = pool.as_mut()
            && id == issuer
            && *end - *next >= n
        {
            let first = *next;
            *next += n;
            return Ok(first);
        }
        let chunk = n.max(POSITION_CHUNK);
        let first = self.store.reserve_issuance(issuer, chunk).await?;
        *pool = Some((issuer.to_string(), first + n, first + chunk));
        Ok(first)
    }
}
