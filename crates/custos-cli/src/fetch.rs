//! A small HTTP/1.1 GET client for reading a remote custos's audit tiles.
//!
//! Plain http only: everything fetched is checked against a signed
//! checkpoint and a pinned key, so transport security adds no integrity.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::CliError;

/// The most one response may carry (an entry bundle is at most 256 × 64 KiB).
const MAX_RESPONSE: usize = 17 * 1024 * 1024;
/// How long one request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One keep-alive connection to a custos base URL.
pub struct Remote {
    base: String,
    host: String,
    sender: SendRequest<Empty<Bytes>>,
}

impl Remote {
    /// Connects to `url` (`http://host:port[/prefix]`).
    pub async fn connect(url: &str) -> Result<Remote, CliError> {
        let bad = || CliError::Usage(format!("--url {url:?}: expected http://HOST:PORT"));
        let rest = url.trim_end_matches('/').strip_prefix("http://").ok_or_else(bad)?;
        let (host, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        if host.is_empty() {
            return Err(bad());
        }
        let addr = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
        let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| CliError::Remote(format!("connecting to {addr} timed out")))?
            .map_err(|e| CliError::Remote(format!("cannot connect to {addr}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| CliError::Remote(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let base = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(Remote { base, host: host.to_string(), sender })
    }

    /// GETs `path` (below the base URL) and returns the body of a 200 answer.
    pub async fn get(&mut self, path: &str) -> Result<Vec<u8>, CliError> {
        let uri = format!("{}{path}", self.base);
        let request = hyper::Request::get(&uri)
            .header(hyper::header::HOST, &self.host)
            .body(Empty::new())
            .map_err(|e| CliError::Remote(format!("GET {uri}: {e}")))?;
        let fail = |what: String| CliError::Remote(format!("GET {uri}: {what}"));
        let response = tokio::time::timeout(TIMEOUT, async {
            self.sender.ready().await.map_err(|e| fail(e.to_string()))?;
            self.sender.send_request(request).await.map_err(|e| fail(e.to_string()))
        })
        .await
        .map_err(|_| fail("timed out".into()))??;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the body: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))));
        }
        Ok(body.to_vec())
    }
}
