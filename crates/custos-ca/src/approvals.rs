//! The two-person rule: while two or more admins exist, executing an
//! incident (which may replace CAs and destroys compromised keys) needs a
//! request by one admin and an approval by another. Requests expire (24 h by
//! default); the requester can never approve its own; request and approval
//! are audit entries. An approval covers its action on its object until it
//! expires, so an execution that stopped half-way resumes under it.

use aws_lc_rs::rand::SecureRandom;
pub use custos_types::ApprovalRecord;
use serde_json::json;
use time::OffsetDateTime;

use crate::authorization::{Operation, authorize};
use crate::{Ca, CaError, Principal, Result, Role, audit_record};

/// The action executing an incident is approved as.
pub const EXECUTE_INCIDENT: &str = "incident.execute";

/// Which actions need a second admin, and for how long a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Whether `incident execute` needs approval (when two or more admins exist).
    pub incident_execute: bool,
    /// Seconds a request can be approved, and an approval used.
    pub expiry_secs: i64,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy { incident_execute: true, expiry_secs: 24 * 3600 }
    }
}

impl Ca {
    /// Sets which actions need a second admin (from the configuration).
    pub fn set_approval_policy(&self, policy: ApprovalPolicy) {
        if let Ok(mut p) = self.approval_policy.write() {
            *p = policy;
        }
    }

    fn approval_policy(&self) -> ApprovalPolicy {
        self.approval_policy.read().map(|p| *p).unwrap_or_default()
    }

    /// Admins who can approve: operators with role admin, unrevoked and unexpired.
    async fn admins(&self) -> Result<usize> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Ok(self
            .store
            .operators()
            .await?
            .iter()
            .filter(|o| o.role == Role::Admin.as_str() && o.revoked_at.is_none() && o.not_after > now)
            .count())
    }

    /// Passes when `action` on `object` needs no approval or has an unexpired
    /// one; otherwise records a request by `principal` (or finds the pending
    /// one) and answers [`CaError::ApprovalRequired`] with its id.
    pub(crate) async fn require_approval(&self, principal: &Principal, action: &str, object: &str) -> Result<()> {
        let policy = self.approval_policy();
        if action == EXECUTE_INCIDENT && !policy.incident_execute {
            return Ok(());
        }
        if self.admins().await? < 2 {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let standing = self.store.approvals_for(action, object).await?;
        if standing.iter().any(|a| a.approved_by.is_some() && a.expires_at > now) {
            return Ok(());
        }
        // A refused request is over: asking again makes a new one.
        let pending = |a: &&ApprovalRecord| a.approved_by.is_none() && a.refused_by.is_none() && a.expires_at > now;
        if let Some(pending) = standing.iter().find(pending) {
            return Err(CaError::ApprovalRequired {
                id: pending.id.clone(),
                requested_by: pending.requested_by.clone(),
            });
        }
        let mut raw = [0u8; 4];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| CaError::Inconsistent("the system random source failed".into()))?;
        let request = ApprovalRecord {
            id: format!("REQ-{}", hex::encode(raw)),
            action: action.to_string(),
            object: object.to_string(),
            requested_by: principal.actor(),
            requested_at: now,
            expires_at: now + policy.expiry_secs,
            approved_by: None,
            approved_at: None,
            refused_by: None,
            refused_at: None,
        };
        let audit = audit_record(
            principal,
            "approval.request",
            format!("approval:{}", request.id),
            json!({"id": request.id, "action": action, "object": object, "expires_at": request.expires_at}),
        );
        self.store.add_approval(&request, &audit).await?;
        Err(CaError::ApprovalRequired { id: request.id, requested_by: request.requested_by })
    }

    /// Approves request `id` as `principal`, an admin other than the requester.
    pub async fn approve(&self, principal: &Principal, id: &str) -> Result<ApprovalRecord> {
        authorize(principal, Operation::Approve)?;
        let (found, now) = self.pending_request(id).await?;
        if found.requested_by == principal.actor() {
            return Err(CaError::Policy(format!(
                "approval {id}: {} requested it, and the requester cannot approve",
                found.requested_by
            )));
        }
        let audit = audit_record(
            principal,
            "approval.approve",
            format!("approval:{id}"),
            json!({"id": id, "action": found.action, "object": found.object, "requested_by": found.requested_by}),
        );
        // The store checks the same conditions again in the transaction: two
        // approvers racing, or a clock edge, cannot both pass.
        self.store.approve(id, &principal.actor(), now, &audit).await?;
        Ok(ApprovalRecord { approved_by: Some(principal.actor()), approved_at: Some(now), ..found })
    }

    /// Refuses request `id` as `principal`, an admin (the requester too: it
    /// withdraws its request). The request can then never be approved; the
    /// action asks for a new one.
    pub async fn refuse(&self, principal: &Principal, id: &str) -> Result<ApprovalRecord> {
        authorize(principal, Operation::Approve)?;
        let (found, now) = self.pending_request(id).await?;
        let audit = audit_record(
            principal,
            "approval.refuse",
            format!("approval:{id}"),
            json!({"id": id, "action": found.action, "object": found.object, "requested_by": found.requested_by}),
        );
        self.store.refuse(id, &principal.actor(), now, &audit).await?;
        Ok(ApprovalRecord { refused_by: Some(principal.actor()), refused_at: Some(now), ..found })
    }

    /// Request `id` if it can still be decided (neither approved nor refused,
    /// unexpired), with the time it was checked at; else why not.
    async fn pending_request(&self, id: &str) -> Result<(ApprovalRecord, i64)> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let found = self
            .store
            .approvals()
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| CaError::UnknownApproval(id.to_string()))?;
        let refused = |why: String| Err(CaError::Policy(format!("approval {id}: {why}")));
        if let Some(by) = &found.approved_by {
            return refused(format!("approved already by {by}"));
        }
        if let Some(by) = &found.refused_by {
            return refused(format!("refused by {by}; request it again"));
        }
        if found.expires_at <= now {
            return refused(format!("expired at {}; request it again", crate::rfc3339(found.expires_at)));
        }
        Ok((found, now))
    }

    /// Every approval request, newest first.
    pub async fn approvals(&self, principal: &Principal) -> Result<Vec<ApprovalRecord>> {
        authorize(principal, Operation::ReadAccess)?;
        Ok(self.store.approvals().await?)
    }
}
