//! Challenge validation for the ACME server: the network side of proving
//! that a client controls a name. http-01 dials the name (or the address
//! `[acme.resolve]` gives for it, as Pebble allows) on `acme.http01_port`
//! (`"*.example.test"` covers every name below it) and reads `/.well-known/acme-challenge/TOKEN`, without following
//! redirects, within `acme.validation_timeout_ms`, reading at most 8 KiB.

use std::collections::BTreeMap;
use std::time::Duration;

use custos_acme::{AcmeError, ProblemType};
use hyper::body::Bytes;

use crate::client::HttpConnection;

/// The most of a challenge answer read: a key authorization is under 100 bytes.
const MAX_ANSWER: usize = 8 * 1024;

/// Validates challenges over the network.
pub struct NetworkValidator {
    /// Port http-01 dials.
    pub http01_port: u16,
    /// Names dialled at a fixed address instead of being resolved.
    pub resolve: BTreeMap<String, String>,
    /// Bound on one validation.
    pub timeout: Duration,
}

impl NetworkValidator {
    async fn address(&self, name: &str, port: u16) -> Result<std::net::SocketAddr, AcmeError> {
        // An exact name first, then the longest `*.suffix` that covers it.
        let fixed = self.resolve.get(name).or_else(|| {
            self.resolve
                .iter()
                .filter(|(k, _)| {
                    k.strip_prefix('*').is_some_and(|suffix| name.ends_with(suffix) && suffix.starts_with('.'))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, v)| v)
        });
        if let Some(ip) = fixed.and_then(|a| a.parse::<std::net::IpAddr>().ok()) {
            return Ok(std::net::SocketAddr::new(ip, port));
        }
        let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| connection(format!("resolving {name} timed out")))?
            .map_err(|e| AcmeError::new(ProblemType::Connection, format!("cannot resolve {name}: {e}")))?
            .next();
        found.ok_or_else(|| connection(format!("{name} has no address")))
    }

    async fn http01(&self, name: &str, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        let addr = self.address(name, self.http01_port).await?;
        let tcp = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| connection(format!("connecting to {name} ({addr}) timed out")))?
            .map_err(|e| connection(format!("cannot connect to {name} ({addr}): {e}")))?;
        let mut http = HttpConnection::over(tcp, name.to_string(), String::new(), self.timeout)
            .await
            .map_err(|e| connection(format!("{name} ({addr}): {e}")))?;
        let path = format!("/.well-known/acme-challenge/{token}");
        let (status, body) = http
            .exchange(hyper::Request::get("/"), &path, Bytes::new(), MAX_ANSWER)
            .await
            .map_err(|e| connection(format!("{name} ({addr}): {e}")))?;
        if status != hyper::StatusCode::OK {
            return Err(incorrect(format!("http://{name}{path} answered HTTP {status}, not 200")));
        }
        let answer = String::from_utf8_lossy(&body);
        match answer.trim_end() == key_authorization {
            true => Ok(()),
            false => Err(incorrect(format!(
                "http://{name}{path} answered {:?}, not the key authorization",
                answer.chars().take(120).collect::<String>()
            ))),
        }
    }
}

fn connection(detail: String) -> AcmeError {
    AcmeError::new(ProblemType::Connection, detail)
}

fn incorrect(detail: String) -> AcmeError {
    AcmeError::new(ProblemType::IncorrectResponse, detail)
}

#[async_trait::async_trait]
impl custos_ca::acme::ChallengeValidator for NetworkValidator {
    fn supported(&self) -> Vec<&'static str> {
        vec!["http-01"]
    }

    async fn validate(&self, kind: &str, name: &str, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        match kind {
            "http-01" => self.http01(name, token, key_authorization).await,
            other => Err(AcmeError::malformed(format!("challenge type {other} is not validated by this custos"))),
        }
    }
}
