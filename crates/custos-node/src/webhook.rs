//! Webhook delivery over the network: https:// verified with rustls against
//! the system's roots (or the CA file the configuration names), plain http://
//! only where the configuration allows it, and only to the addresses the
//! [`WebhookPolicy`] allows, checked after DNS resolution at every delivery
//! (so a name that later resolves to 127.0.0.1 is refused then). Redirects
//! are never followed: a 3xx is a failed delivery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use custos_ca::notify::{DELIVERY_TIMEOUT, DeliveryFailure, Transport, WebhookPolicy, WebhookUrl};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;
use tokio_rustls::rustls;

use crate::client::HttpConnection;
use crate::config::WebhookConfig;
use crate::{NodeError, Result};

/// The policy the configuration sets for webhook targets.
pub fn webhook_policy(config: &WebhookConfig) -> WebhookPolicy {
    WebhookPolicy { allow_http: config.danger_allow_http, allow_private: config.allow_private_targets }
}

/// Delivers incident notifications as the configuration allows.
pub struct WebhookTransport {
    policy: WebhookPolicy,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl WebhookTransport {
    /// A transport trusting `config.ca_file`'s certificates, else the system's roots.
    pub fn new(config: &WebhookConfig) -> Result<WebhookTransport> {
        // With no system roots at all every https delivery fails with a TLS
        // error, which incident status shows.
        let roots = crate::client::trusted_roots(config.ca_file.as_deref())
            .map_err(|e| NodeError::Config(format!("webhooks.ca_file {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NodeError::Config(format!("TLS client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(WebhookTransport { policy: webhook_policy(config), tls: Arc::new(tls), timeout: DELIVERY_TIMEOUT })
    }

    /// The first address `url`'s host resolves to that the policy allows.
    async fn address(&self, url: &WebhookUrl) -> std::result::Result<SocketAddr, DeliveryFailure> {
        let resolved = tokio::time::timeout(self.timeout, tokio::net::lookup_host((url.host.as_str(), url.port)))
            .await
            .map_err(|_| DeliveryFailure::Timeout)?
            .map_err(|_| DeliveryFailure::Connect)?;
        let mut any = false;
        for addr in resolved {
            any = true;
            if self.policy.address_allowed(addr.ip()) {
                return Ok(addr);
            }
        }
        Err(if any { DeliveryFailure::Refused } else { DeliveryFailure::Connect })
    }

    async fn connect(&self, url: &WebhookUrl) -> std::result::Result<HttpConnection, DeliveryFailure> {
        if !url.https && !self.policy.allow_http {
            return Err(DeliveryFailure::Refused);
        }
        let addr = self.address(url).await?;
        let tcp = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| DeliveryFailure::Timeout)?
            .map_err(|_| DeliveryFailure::Connect)?;
        let default_port = if url.https { 443 } else { 80 };
        let host = match (url.host.contains(':'), url.port == default_port) {
            (true, true) => format!("[{}]", url.host),
            (true, false) => format!("[{}]:{}", url.host, url.port),
            (false, true) => url.host.clone(),
            (false, false) => format!("{}:{}", url.host, url.port),
        };
        let connection = if url.https {
            let name = ServerName::try_from(url.host.clone()).map_err(|_| DeliveryFailure::Tls)?;
            let tls = tokio::time::timeout(
                self.timeout,
                tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| DeliveryFailure::Timeout)?
            .map_err(|_| DeliveryFailure::Tls)?;
            HttpConnection::over(tls, host, url.path.clone(), self.timeout).await
        } else {
            HttpConnection::over(tcp, host, url.path.clone(), self.timeout).await
        };
        connection.map_err(|_| DeliveryFailure::Protocol)
    }
}

#[async_trait::async_trait]
impl Transport for WebhookTransport {
    async fn post(
        &self,
        url: &str,
        body: &str,
        signature: &str,
        timestamp: i64,
    ) -> std::result::Result<(), DeliveryFailure> {
        let url = WebhookUrl::parse(url).map_err(|_| DeliveryFailure::Refused)?;
        let mut connection = self.connect(&url).await?;
        let request = hyper::Request::post("/")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-custos-timestamp", timestamp.to_string())
            .header("x-custos-signature", signature);
        // The answer is read (up to 64 KiB) only so the connection ends cleanly; only its status is kept.
        match connection.status(request, Bytes::from(body.to_string()), 64 * 1024).await {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => Err(DeliveryFailure::Status(status.as_u16())),
            Err(e) if e == "timed out" => Err(DeliveryFailure::Timeout),
            Err(_) => Err(DeliveryFailure::Protocol),
        }
    }
}
