//! What the domain counts for `/metrics`: signatures by key and purpose,
//! audit appends, storage errors, and the store's figures (certificates by
//! status and expiry, incidents, webhook messages, the audit log), which a
//! background job refreshes because counting a million certificates takes
//! longer than a scrape may.
//!
//! Labels are bounded: a key is a CA's or the log's key id (a handful), and
//! every connection key counts under the one value `connection`; states and
//! purposes are closed sets. Per-tenant figures are deliberately absent
//! (tenants are unbounded); the console shows them instead.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use custos_types::StoreFigures;

/// What a key signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// An end-entity, CA or responder certificate.
    Certificate,
    /// A CRL.
    Crl,
    /// An OCSP response.
    Ocsp,
    /// An audit log checkpoint.
    Checkpoint,
    /// An operator's client certificate (the operators' CA).
    OperatorCertificate,
    /// Caller-supplied bytes with a custodied connection key (assertions, signatures).
    Connection,
}

impl Purpose {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Certificate => "certificate",
            Purpose::Crl => "crl",
            Purpose::Ocsp => "ocsp",
            Purpose::Checkpoint => "checkpoint",
            Purpose::OperatorCertificate => "operator_certificate",
            Purpose::Connection => "connection",
        }
    }
}

/// Labels of `custos_signatures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabels {
    /// The key id, or `connection` for every connection key.
    pub key: String,
    /// What was signed.
    pub purpose: &'static str,
}

/// A state label (certificate status, incident state, delivery state, expiry window).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state's name.
    pub state: String,
}

/// Labels of the expiry gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithinLabel {
    /// `7d` or `30d`.
    pub within: &'static str,
}

/// The domain's metrics, registered once into the node's registry.
#[derive(Debug)]
pub struct CaMetrics {
    /// Signatures made, by key and purpose.
    pub signatures: Family<SignatureLabels, Counter>,
    /// Seconds from queueing an audit entry to its commit (group commits, the OCSP signing journal).
    pub audit_append_seconds: Histogram,
    /// Storage checks that failed (health probes and the jobs' own).
    pub storage_errors: Counter,
    certificates: Family<StateLabel, Gauge>,
    expiring: Family<WithinLabel, Gauge>,
    revoked_today: Gauge,
    incidents: Family<StateLabel, Gauge>,
    incident_connections: Family<StateLabel, Gauge>,
    outbox: Family<StateLabel, Gauge>,
    audit_size: Gauge,
    checkpoint_time: Gauge,
    checkpoint_size: Gauge,
    figures_time: Gauge,
    figures_seconds: Gauge<f64, AtomicU64>,
    pool_open: Gauge,
    pool_idle: Gauge,
}

impl Default for CaMetrics {
    fn default() -> Self {
        CaMetrics {
            signatures: Family::default(),
            // 100 µs to ~3 s.
            audit_append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            storage_errors: Counter::default(),
            certificates: Family::default(),
            expiring: Family::default(),
            revoked_today: Gauge::default(),
            incidents: Family::default(),
            incident_connections: Family::default(),
            outbox: Family::default(),
            audit_size: Gauge::default(),
            checkpoint_time: Gauge::default(),
            checkpoint_size: Gauge::default(),
            figures_time: Gauge::default(),
            figures_seconds: Gauge::default(),
            pool_open: Gauge::default(),
            pool_idle: Gauge::default(),
        }
    }
}

impl CaMetrics {
    /// Counts one signature by `key` (a key id; connection keys pass `connection`).
    pub fn signed(&self, key: &str, purpose: Purpose) {
        self.signatures.get_or_create(&SignatureLabels { key: key.to_string(), purpose: purpose.as_str() }).inc();
    }

    /// Registers every metric under `custos_` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("custos_signatures", "Signatures made, by key and purpose", self.signatures.clone());
        registry.register(
            "custos_audit_append_seconds",
            "Seconds from queueing an audit entry to its commit",
            self.audit_append_seconds.clone(),
        );
        registry.register("custos_storage_errors", "Storage checks that failed", self.storage_errors.clone());
        registry.register(
            "custos_certificates",
            "Certificates by status (valid, revoked, expired), as of custos_figures_timestamp_seconds",
            self.certificates.clone(),
        );
        registry.register(
            "custos_certificates_expiring",
            "Valid certificates whose notAfter is within 7d or 30d",
            self.expiring.clone(),
        );
        registry.register(
            "custos_revocations_today",
            "Certificates revoked since 00:00 UTC",
            self.revoked_today.clone(),
        );
        registry.register("custos_incidents", "Incidents by state", self.incidents.clone());
        registry.register(
            "custos_incident_connections",
            "Connections of incidents not closed, by state",
            self.incident_connections.clone(),
        );
        registry.register("custos_webhook_messages", "Webhook messages by delivery state", self.outbox.clone());
        registry.register("custos_audit_entries", "Entries in the audit log", self.audit_size.clone());
        registry.register(
            "custos_audit_checkpoint_timestamp_seconds",
            "When the newest checkpoint was signed (Unix seconds); age = time() - this",
            self.checkpoint_time.clone(),
        );
        registry.register(
            "custos_audit_checkpoint_entries",
            "Entries the newest checkpoint covers; the backlog is custos_audit_entries minus this",
            self.checkpoint_size.clone(),
        );
        registry.register(
            "custos_figures_timestamp_seconds",
            "When the store's figures above were counted (Unix seconds)",
            self.figures_time.clone(),
        );
        registry.register(
            "custos_figures_duration_seconds",
            "How long counting the store's figures took",
            self.figures_seconds.clone(),
        );
        registry.register("custos_db_connections_open", "Database pool connections open", self.pool_open.clone());
        registry.register("custos_db_connections_idle", "Database pool connections idle", self.pool_idle.clone());
    }

    /// Sets the figure gauges from `f`, counted at `now` in `seconds`.
    pub fn observe_figures(&self, f: &StoreFigures, now: i64, seconds: f64) {
        for (state, n) in [("valid", f.valid), ("revoked", f.revoked), ("expired", f.expired)] {
            self.certificates.get_or_create(&StateLabel { state: state.into() }).set(n);
        }
        self.expiring.get_or_create(&WithinLabel { within: "7d" }).set(f.expiring_7d);
        self.expiring.get_or_create(&WithinLabel { within: "30d" }).set(f.expiring_30d);
        self.revoked_today.set(f.revoked_today);
        // A state that has gone to zero must read 0, not keep its last value.
        for (family, pairs) in [
            (&self.incidents, &f.incidents),
            (&self.incident_connections, &f.incident_connections),
            (&self.outbox, &f.outbox),
        ] {
            family.clear();
            for (state, n) in pairs {
                family.get_or_create(&StateLabel { state: state.clone() }).set(*n);
            }
        }
        self.audit_size.set(f.audit_size);
        self.checkpoint_time.set(f.checkpoint_time.unwrap_or(0));
        self.checkpoint_size.set(f.checkpoint_size);
        self.figures_time.set(now);
        self.figures_seconds.set(seconds);
    }

    /// Sets the pool gauges.
    pub fn observe_pool(&self, (open, idle): (u32, u32)) {
        self.pool_open.set(i64::from(open));
        self.pool_idle.set(i64::from(idle));
    }
}

/// Observes the seconds since its start into a histogram when dropped: on
/// every way out of a wait, errors included.
pub(crate) struct ObserveOnDrop<'a>(pub &'a Histogram, pub std::time::Instant);

impl Drop for ObserveOnDrop<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

impl crate::Ca {
    /// Whether `principal` may read the figures and metrics.
    pub fn may_read_metrics(&self, principal: &crate::Principal) -> crate::Result<()> {
        crate::authorization::authorize(principal, crate::authorization::Operation::ReadMetrics)
    }

    /// Counts the store's figures now, keeps them for [`crate::Ca::figures`]
    /// and sets the gauges: the background job's work (seconds at millions
    /// of certificates, so never on a request).
    pub async fn refresh_figures(&self, principal: &crate::Principal) -> crate::Result<StoreFigures> {
        crate::authorization::authorize(principal, crate::authorization::Operation::ReadMetrics)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let started = std::time::Instant::now();
        let figures = self.store.figures(now).await?;
        self.metrics.observe_figures(&figures, now, started.elapsed().as_secs_f64());
        self.metrics.observe_pool(self.store.pool_state());
        if let Ok(mut cached) = self.figures.lock() {
            *cached = Some((figures.clone(), now));
        }
        Ok(figures)
    }

    /// The figures as last counted and when (Unix seconds); counted now if
    /// they never were.
    pub async fn figures(&self, principal: &crate::Principal) -> crate::Result<(StoreFigures, i64)> {
        crate::authorization::authorize(principal, crate::authorization::Operation::ReadMetrics)?;
        if let Some(cached) = self.figures.lock().ok().and_then(|c| c.clone()) {
            return Ok(cached);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok((self.refresh_figures(&crate::Principal::System).await?, now))
    }
}
