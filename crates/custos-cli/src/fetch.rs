//! Reading a remote custos's audit tiles over HTTP.
//!
//! Plain http only: everything fetched is checked against a signed
//! checkpoint and a pinned key, so transport security adds no integrity.

use custos_node::client::HttpConnection;
use hyper::body::Bytes;

use crate::CliError;

/// The most one response may carry (an entry bundle is at most 256 × 64 KiB).
const MAX_RESPONSE: usize = 17 * 1024 * 1024;
/// How long one request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One keep-alive connection to a custos base URL.
pub struct Remote(HttpConnection);

impl Remote {
    /// Connects to `url` (`http://host:port[/prefix]`).
    pub async fn connect(url: &str) -> Result<Remote, CliError> {
        if !url.starts_with("http://") {
            return Err(CliError::Usage(format!("--url {url:?}: expected http://HOST:PORT")));
        }
        HttpConnection::connect(url, TIMEOUT).await.map(Remote).map_err(CliError::Remote)
    }

    /// GETs `path` (below the base URL) and returns the body of a 2xx answer.
    pub async fn get(&mut self, path: &str) -> Result<Vec<u8>, CliError> {
        let body = self.0.send(hyper::Request::get("/"), path, Bytes::new(), MAX_RESPONSE).await;
        body.map(|b| b.to_vec()).map_err(|e| CliError::Remote(format!("GET {e}")))
    }
}
