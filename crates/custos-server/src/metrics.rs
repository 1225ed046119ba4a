//! `/metrics`: the Prometheus text exposition (OpenMetrics 1.0) of this node.
//!
//! HTTP requests by listener, route template, method and status, with a
//! latency histogram per route; OCSP answers by outcome and cache hit;
//! authentication failures by credential kind; this node's revocation feed,
//! CRLs and OCSP signing backlog (read when scraped); and the domain's
//! metrics from custos-ca (signatures, audit appends, the store's figures).
//! Every label is from a closed set: routes are the router's templates (an
//! unmatched path is `unmatched`), methods outside the standard ones are
//! `other`, CRL labels are an issuer's id and partition number.
//!
//! Served on the TLS listener to principals allowed to read metrics
//! (admin, operator, auditor; a scrape token is an auditor token), and, if
//! configured, on a separate listener meant for loopback.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::api::Caller;

/// The route label of OCSP by POST.
pub const OCSP_POST: &str = "/ocsp";
/// The route label of OCSP by GET.
pub const OCSP_GET: &str = "/ocsp/{request}";

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `custos_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `plain` or `tls`.
    pub listener: &'static str,
    /// The route template (`/api/v1/certificates/{serial}`), or `unmatched`.
    pub route: String,
    /// The HTTP method, or `other`.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

/// Labels of `custos_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `plain` or `tls`.
    pub listener: &'static str,
    /// The route template, or `unmatched`.
    pub route: String,
}

/// Labels of `custos_ocsp_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OcspLabels {
    /// `successful` or the OCSP error status.
    pub outcome: &'static str,
    /// `hit` (a response signed earlier) or `miss` (signed for this request, or none).
    pub cache: &'static str,
}

/// Labels of `custos_auth_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `bearer`, `certificate`, `session` or `none`.
    pub credential: &'static str,
}

/// This node's HTTP metrics and the registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    ocsp: Family<OcspLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    /// The OCSP hot path's series, resolved once: a successful answer then
    /// costs three atomic adds and one histogram lock, no label hashing.
    hot: [HotSeries; 2],
}

/// What a successful OCSP answer on one listener counts.
struct HotSeries {
    post_ok: Counter,
    get_ok: Counter,
    post_seconds: Histogram,
    get_seconds: Histogram,
    hit: Counter,
    miss: Counter,
}

const LISTENERS: [&str; 2] = ["plain", "tls"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Metrics {
    /// The registry with the HTTP metrics, the domain's (`ca`), and this
    /// node's publisher (read when scraped).
    pub fn new(ca: &custos_ca::metrics::CaMetrics, publisher: Arc<custos_ca::StatusPublisher>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let ocsp = Family::<OcspLabels, Counter>::default();
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register("custos_http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "custos_http_request_duration_seconds",
            "Seconds from a request's head to its answer, per route",
            durations.clone(),
        );
        registry.register("custos_ocsp_responses", "OCSP answers by outcome and cache hit", ocsp.clone());
        registry.register(
            "custos_auth_failures",
            "API and console requests refused for their credentials",
            auth_failures.clone(),
        );
        ca.register(&mut registry);
        registry.register_collector(Box::new(PublisherCollector(publisher)));
        let hot = LISTENERS.map(|listener| {
            let counter = |route: &str, method| {
                requests.get_or_create(&RequestLabels { listener, route: route.into(), method, status: 200 }).clone()
            };
            let histogram =
                |route: &str| durations.get_or_create(&RouteLabels { listener, route: route.into() }).clone();
            let outcome = |cache| ocsp.get_or_create(&OcspLabels { outcome: "successful", cache }).clone();
            HotSeries {
                post_ok: counter(OCSP_POST, "POST"),
                get_ok: counter(OCSP_GET, "GET"),
                post_seconds: histogram(OCSP_POST),
                get_seconds: histogram(OCSP_GET),
                hit: outcome("hit"),
                miss: outcome("miss"),
            }
        });
        Metrics { registry, requests, durations, ocsp, auth_failures, hot }
    }

    /// Counts one OCSP request on the hot path (`/ocsp` by POST, `/ocsp/{request}` by GET).
    pub fn ocsp_request(&self, listener: &'static str, method: &axum::http::Method, status: u16, at: Instant) {
        let hot = &self.hot[usize::from(listener == "tls")];
        match (status, *method == axum::http::Method::POST) {
            (200, true) => {
                hot.post_ok.inc();
                hot.post_seconds.observe(at.elapsed().as_secs_f64());
            }
            (200, false) => {
                hot.get_ok.inc();
                hot.get_seconds.observe(at.elapsed().as_secs_f64());
            }
            (_, post) => self.request(listener, if post { OCSP_POST } else { OCSP_GET }, method, status, at),
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts one answered request.
    pub fn request(&self, listener: &'static str, route: &str, method: &axum::http::Method, status: u16, at: Instant) {
        let method = match *method {
            axum::http::Method::GET => "GET",
            axum::http::Method::POST => "POST",
            axum::http::Method::PUT => "PUT",
            axum::http::Method::PATCH => "PATCH",
            axum::http::Method::DELETE => "DELETE",
            axum::http::Method::HEAD => "HEAD",
            axum::http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.requests.get_or_create(&RequestLabels { listener, route: route.to_string(), method, status }).inc();
        self.durations
            .get_or_create(&RouteLabels { listener, route: route.to_string() })
            .observe(at.elapsed().as_secs_f64());
    }

    /// Counts one OCSP answer (by outcome and cache; the same on every listener).
    pub fn ocsp(&self, answer: &custos_ca::OcspAnswer) {
        match (answer.outcome, answer.cached) {
            ("successful", true) => self.hot[0].hit.inc(),
            ("successful", false) => self.hot[0].miss.inc(),
            (outcome, cached) => {
                let cache = if cached { "hit" } else { "miss" };
                self.ocsp.get_or_create(&OcspLabels { outcome, cache }).inc()
            }
        };
    }

    /// Counts one request refused for its credentials.
    pub fn auth_failure(&self, credential: &'static str) {
        self.auth_failures.get_or_create(&AuthLabels { credential }).inc();
    }
}

/// Reads the publisher when scraped: the feed position and when it was last
/// read, the OCSP signing backlog, and each CRL's age and size.
struct PublisherCollector(Arc<custos_ca::StatusPublisher>);

impl std::fmt::Debug for PublisherCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublisherCollector")
    }
}

impl prometheus_client::collector::Collector for PublisherCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)
        };
        gauge(
            &mut encoder,
            "custos_revocation_feed_position",
            "Revocation feed position applied here",
            s.feed_position,
        )?;
        gauge(
            &mut encoder,
            "custos_revocation_feed_read_timestamp_seconds",
            "When this node last read the revocation feed (Unix seconds); lag = time() - this",
            s.feed_read_at,
        )?;
        gauge(
            &mut encoder,
            "custos_ocsp_unlogged_signatures",
            "OCSP signatures made and not yet in the audit log (the audit backlog)",
            s.unlogged_signatures as i64,
        )?;
        let crl_family = |encoder: &mut DescriptorEncoder,
                          name: &str,
                          help: &str,
                          value: &dyn Fn(&custos_ca::CrlStatus) -> i64|
         -> Result<(), std::fmt::Error> {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for crl in &s.crls {
                let labels = CrlLabels { issuer: crl.issuer.clone(), partition: crl.partition };
                let g = ConstGauge::new(value(crl));
                g.encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        crl_family(
            &mut encoder,
            "custos_crl_this_update_timestamp_seconds",
            "thisUpdate of the CRL served here (Unix seconds); age = time() - this",
            &|c| c.this_update,
        )?;
        crl_family(
            &mut encoder,
            "custos_crl_next_update_timestamp_seconds",
            "nextUpdate of the CRL served here (Unix seconds)",
            &|c| c.next_update,
        )?;
        crl_family(&mut encoder, "custos_crl_bytes", "Size of the CRL served here (DER bytes)", &|c| c.bytes as i64)?;
        crl_family(&mut encoder, "custos_crl_entries", "Revoked certificates listed on the CRL", &|c| {
            c.entries as i64
        })?;
        Ok(())
    }
}

/// Labels of the CRL gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrlLabels {
    issuer: String,
    partition: i64,
}

/// Counts every request the router answers, under `listener`.
pub async fn count(
    State((metrics, listener)): State<(Arc<Metrics>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let at = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let response = next.run(req).await;
    metrics.request(listener, route.as_deref().unwrap_or("unmatched"), &method, response.status().as_u16(), at);
    response
}

/// `GET /metrics` on the TLS listener: for principals that may read metrics.
pub async fn authenticated(State(state): State<Arc<AppState>>, caller: Result<Caller, Response>) -> Response {
    let Caller(principal) = match caller {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    if let Err(e) = state.ca.may_read_metrics(&principal) {
        return crate::api::ApiError::Ca(e).into_response();
    }
    exposition(&state.metrics)
}

/// The exposition as an answer.
pub fn exposition(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => {
            crate::problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the metrics could not be encoded")
        }
    }
}

/// The router of the separate metrics listener: `/metrics` only, no
/// credentials (bind it to loopback or a scrape network).
pub fn open_router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(|State(s): State<Arc<AppState>>| async move { exposition(&s.metrics) }))
        .with_state(state)
}
