//! `custos serve`: the listeners and the background jobs beside them.
//!
//! Every job runs as custos itself ([`Principal::System`]) on a fixed period
//! from the configuration; a failed step is logged and tried again on the
//! next tick, so a database outage delays jobs but never ends the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use custos_ca::{Ca, Principal, StatusPublisher};
use custos_server::AppState;
use custos_server::tls::TlsListener;

use crate::{Config, NodeError, Result};

/// The bound listeners of a node, before it serves.
pub struct Listeners {
    plain: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds the plain listener and, if configured, the TLS one (which takes
    /// client certificates from `ca`'s operators' CA, if it has one).
    pub async fn bind(config: &Config, ca: &Ca) -> Result<Listeners> {
        let s = &config.serve;
        let plain = tokio::net::TcpListener::bind(&s.listen)
            .await
            .map_err(|e| NodeError::Serve(format!("cannot listen on {}: {e}", s.listen)))?;
        let tls = match (&s.tls_listen, &s.tls_cert, &s.tls_key) {
            (Some(listen), Some(cert), Some(key)) => {
                let operators = ca.operators_ca().await?;
                let tls_config = custos_server::tls::server_config(cert, key, operators.as_deref())
                    .map_err(|e| NodeError::Serve(e.to_string()))?;
                let tcp = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| NodeError::Serve(format!("cannot listen on {listen}: {e}")))?;
                Some(TlsListener::new(tcp, tls_config).map_err(|e| NodeError::Serve(e.to_string()))?)
            }
            _ => None,
        };
        let metrics = match &s.metrics_listen {
            Some(listen) => Some(
                tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| NodeError::Serve(format!("cannot listen on {listen}: {e}")))?,
            ),
            None => None,
        };
        Ok(Listeners { plain, tls, metrics })
    }

    /// The address of the separate `/metrics` listener, if there is one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The plain HTTP address.
    pub fn plain_address(&self) -> Result<SocketAddr> {
        self.plain.local_addr().map_err(|e| NodeError::Serve(e.to_string()))
    }

    /// The HTTPS address, if there is a TLS listener.
    pub fn tls_address(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(TlsListener::address)
    }
}

/// Serves `ca` (unsealed: OCSP responses and CRLs are signed here) on
/// `listeners` with every background job, until ctrl-c or SIGTERM.
pub async fn serve(config: &Config, ca: Ca, listeners: Listeners) -> Result<()> {
    let transport = Arc::new(crate::WebhookTransport::new(&config.webhooks)?);
    for tenant in ca.clear_webhook_secrets(&Principal::System).await? {
        tracing::warn!(%tenant, "webhook secret stored in clear (set before custos derived them); set the webhook again to rotate it");
    }
    let ca = Arc::new(ca);
    let publisher = Arc::new(StatusPublisher::start(ca.clone()).await?);
    let tasks = spawn_jobs(config, &ca, &publisher, transport);
    let limiter = custos_server::api::Limiter::new(config.serve.api_requests_per_second, config.serve.api_burst);
    let per_connection = config.serve.sign_requests_per_second;
    let sign_limiter = custos_server::api::Limiter::new(per_connection, per_connection.saturating_mul(2));
    let acme = acme_service(config, &ca, listeners.tls_address(), listeners.plain_address().ok());
    let metrics = Arc::new(custos_server::metrics::Metrics::new(ca.metrics(), publisher.clone()));
    let state = Arc::new(AppState {
        ca,
        publisher,
        metrics,
        sessions: custos_server::console::Sessions::default(),
        limiter,
        sign_limiter,
        incident_keys_dir: config.data_dir.clone(),
        acme,
        acme_on_plain_http: config.acme.plain_http,
    });
    let limits = custos_server::http::ConnectionLimits {
        total: config.serve.max_connections,
        per_client: config.serve.max_connections_per_client,
    };
    let mut tasks = tasks;
    if let Some(listener) = listeners.metrics {
        let router = custos_server::metrics::open_router(state.clone());
        tasks.push(tokio::spawn(async move {
            let stop = std::future::pending::<()>();
            if let Err(e) = custos_server::http::serve(
                listener,
                router,
                None,
                custos_server::IDLE_TIMEOUT,
                custos_server::http::ConnectionLimits { total: 64, per_client: 16 },
                stop,
            )
            .await
            {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        }));
    }
    let result = custos_server::serve(listeners.plain, listeners.tls, state, limits, shutdown_signal()).await;
    for task in tasks {
        task.abort();
    }
    result.map_err(|e| NodeError::Serve(e.to_string()))
}

/// The ACME service, when enabled and reachable (a TLS listener, or plain HTTP allowed).
fn acme_service(
    config: &Config,
    ca: &Arc<Ca>,
    tls: Option<SocketAddr>,
    plain: Option<SocketAddr>,
) -> Option<Arc<custos_ca::acme::Acme>> {
    let a = &config.acme;
    if !a.enabled {
        return None;
    }
    // Unset: the listener's own address (a port 0 in the config is the bound one here).
    let base_url = match (&a.base_url, tls, plain) {
        (Some(u), _, _) => u.trim_end_matches('/').to_string(),
        (None, Some(t), _) => format!("https://{t}/acme"),
        (None, None, Some(p)) if a.plain_http => format!("http://{p}/acme"),
        _ => return None,
    };
    let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let settings = custos_ca::acme::AcmeSettings {
        base_url,
        nonce_lifetime_s: secs(a.nonce_lifetime_s),
        order_lifetime_s: secs(a.order_lifetime_s),
        max_accounts_per_tenant: secs(a.max_accounts_per_tenant),
        ari_retry_after_s: secs(a.ari_retry_after_s),
    };
    let validator = crate::acme::NetworkValidator {
        http01_port: a.http01_port,
        tlsalpn01_port: a.tlsalpn01_port,
        dns_resolver: a.dns_resolver.as_deref().and_then(|r| r.parse().ok()),
        resolve: a.resolve.clone(),
        timeout: std::time::Duration::from_millis(a.validation_timeout_ms),
    };
    Some(Arc::new(custos_ca::acme::Acme::new(ca.clone(), settings, Arc::new(validator))))
}

fn spawn_jobs(
    config: &Config,
    ca: &Arc<Ca>,
    p: &Arc<StatusPublisher>,
    transport: Arc<crate::WebhookTransport>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let o = &config.ocsp;
    let poll = Duration::from_millis(o.poll_interval_ms);
    let presign = o.presign;
    let refresh = Duration::from_secs(o.refresh_interval_s);
    let give_up = i64::try_from(config.webhooks.give_up_after_s).unwrap_or(i64::MAX);
    vec![
        tokio::spawn(every(poll, "applying revocations", {
            let p = p.clone();
            move || {
                let p = p.clone();
                async move { p.poll().await }
            }
        })),
        // One service-log line per committed change, read back from the audit
        // log (from where it stood at start), so no line reports a rollback.
        tokio::spawn(every(Duration::from_secs(1), "logging state changes", {
            let ca = ca.clone();
            let next = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
            move || {
                let (ca, next) = (ca.clone(), next.clone());
                async move {
                    use std::sync::atomic::Ordering;
                    let mut from = next.load(Ordering::Acquire);
                    if from == u64::MAX {
                        from = ca.audit_size().await?;
                    }
                    let to = ca.log_changes(&Principal::System, from, 10_000).await?;
                    next.store(to, Ordering::Release);
                    Ok::<_, custos_ca::CaError>(to - from)
                }
            }
        })),
        // Counting a million certificates takes longer than a scrape may: the
        // figures are counted here and /metrics and the console read them.
        tokio::spawn(every(Duration::from_secs(config.serve.figures_interval_s), "counting the figures", {
            let ca = ca.clone();
            move || {
                let ca = ca.clone();
                async move { ca.refresh_figures(&Principal::System).await }
            }
        })),
        // Apart from the poll, so that signing a large CRL never delays OCSP.
        tokio::spawn(every(poll, "signing CRLs", {
            let p = p.clone();
            move || {
                let p = p.clone();
                async move { p.publish_crls().await }
            }
        })),
        tokio::spawn(every(
            Duration::from_millis(config.audit.checkpoint_interval_ms),
            "signing an audit checkpoint",
            {
                let (ca, config) = (ca.clone(), Arc::new(config.clone()));
                let witnesses = Arc::new(crate::witness::Submitter::default());
                move || {
                    let (ca, config, witnesses) = (ca.clone(), config.clone(), witnesses.clone());
                    async move {
                        let signed = crate::sign_checkpoint(&config, &ca, &Principal::System).await?;
                        // Every checkpoint goes to the witnesses; a refusal is logged there and retried.
                        witnesses.submit(&config, &ca).await?;
                        Ok::<_, crate::NodeError>(signed)
                    }
                }
            },
        )),
        tokio::spawn(every(
            Duration::from_millis(config.webhooks.delivery_interval_ms),
            "delivering webhook notifications",
            {
                let ca = ca.clone();
                move || {
                    let (ca, transport) = (ca.clone(), transport.clone());
                    async move { ca.deliver_due(&Principal::System, transport.as_ref(), give_up).await }
                }
            },
        )),
        tokio::spawn(every(Duration::from_secs(config.custody.rotation_interval_s), "rotating connection keys", {
            let ca = ca.clone();
            let max_age = i64::try_from(config.custody.max_key_age_s).unwrap_or(i64::MAX);
            move || {
                let ca = ca.clone();
                async move {
                    let rotated = ca.rotate_custody_keys(&Principal::System, max_age).await?;
                    for (tenant, connection) in &rotated {
                        tracing::info!(%tenant, %connection, "connection key rotated: its standby signs now");
                    }
                    Ok::<_, custos_ca::CaError>(rotated.len())
                }
            }
        })),
        tokio::spawn(every(Duration::from_secs(o.responder_renewal_s), "renewing OCSP responders", {
            let p = p.clone();
            move || {
                let p = p.clone();
                async move { p.reload_issuers().await }
            }
        })),
        tokio::spawn({
            let p = p.clone();
            async move {
                match p.presign(presign).await {
                    Ok(n) => tracing::info!(responses = n, "OCSP responses pre-signed"),
                    Err(e) => tracing::error!(error = %e, "pre-signing OCSP responses failed"),
                }
                every(refresh, "refreshing OCSP responses", move || {
                    let p = p.clone();
                    async move { p.refresh().await }
                })
                .await
            }
        }),
    ]
}

/// Runs `step` every `period` for as long as the server runs; a failed step
/// is tried again on the next tick. A failure is logged with its whole cause
/// chain once, and again only when the cause changes or the step recovers:
/// a database outage is one line, not one every 200 ms.
async fn every<F, Fut, T, E>(period: Duration, what: &'static str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        interval.tick().await;
        match step().await {
            Ok(_) => {
                if let Some(cause) = failing.take() {
                    tracing::info!(previous_error = %cause, "{what} works again");
                }
            }
            Err(e) => {
                let cause = cause_chain(&e);
                if failing.as_deref() != Some(cause.as_str()) {
                    tracing::error!(error = %cause, "{what} failed; trying again every {period:?} (logged again when the cause changes)");
                    failing = Some(cause);
                }
            }
        }
    }
}

/// An error and its causes on one line: `a: b: c`.
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Runs a witness on `listen` until interrupted; `ready` is called with its address.
pub async fn serve_witness(
    node: crate::witness::WitnessNode,
    listen: &str,
    ready: impl FnOnce(std::net::SocketAddr),
) -> crate::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| crate::NodeError::Serve(format!("{listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| crate::NodeError::Serve(e.to_string()))?;
    ready(addr);
    let router = custos_server::witness::witness_router(Arc::new(node));
    let limits = custos_server::http::ConnectionLimits { total: 1024, per_client: 64 };
    custos_server::http::serve(listener, router, None, Duration::from_secs(10), limits, shutdown_signal())
        .await
        .map_err(|e| crate::NodeError::Serve(e.to_string()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
