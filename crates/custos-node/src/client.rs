//! A small HTTP/1.1 client: the CLI reads a remote custos's audit tiles with
//! it over `http://`, calls the API over `https://` ([`connect_https`]), and
//! webhook delivery POSTs notifications.
//! One keep-alive connection per [`HttpConnection`]; every request is bounded
//! in time and in the size of its answer.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One keep-alive connection to an `http://host:port[/prefix]` URL.
pub struct HttpConnection {
    prefix: String,
    host: String,
    sender: SendRequest<Full<Bytes>>,
    timeout: Duration,
}

/// A URL's host (with port) and path, for plain `http://` only.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (host, path) = rest.split_once('/').map_or((rest, String::new()), |(h, p)| (h, format!("/{p}")));
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok((host.to_string(), path))
}

impl HttpConnection {
    /// Connects to the URL's host; requests are made below its path.
    pub async fn connect(url: &str, timeout: Duration) -> Result<HttpConnection, String> {
        let (host, prefix) = split_url(url.trim_end_matches('/'))?;
        let addr = if host.contains(':') { host.clone() } else { format!("{host}:80") };
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        HttpConnection::over(tcp, host, prefix, timeout).await.map_err(|e| format!("{addr}: {e}"))
    }

    /// Speaks HTTP/1.1 over a connection already made (plain or TLS);
    /// `host` is the Host header, `prefix` the path requests go below.
    pub async fn over<IO>(io: IO, host: String, prefix: String, timeout: Duration) -> Result<HttpConnection, String>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(TokioIo::new(io)))
            .await
            .map_err(|_| "HTTP handshake timed out".to_string())?
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConnection { prefix, host, sender, timeout })
    }

    /// Sends one request and returns only the answer's status, reading (and
    /// dropping) at most `max_body` bytes of its body: for deliveries, whose
    /// receivers' answers custos records nothing of but the status.
    pub async fn status(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
        max_body: usize,
    ) -> Result<hyper::StatusCode, String> {
        let uri = if self.prefix.is_empty() { "/".to_string() } else { self.prefix.clone() };
        let request = request
            .uri(&uri)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            let response = self.sender.send_request(request).await.map_err(|e| format!("exchange: {e}"))?;
            let status = response.status();
            let _ = Limited::new(response.into_body(), max_body).collect().await;
            Ok(status)
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| "timed out".to_string())?
    }

    /// Sends one request to `path` (below the URL's path) and returns the
    /// body of a 2xx answer, at most `max_body` bytes; anything else is an error.
    pub async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        path: &str,
        body: Bytes,
        max_body: usize,
    ) -> Result<Bytes, String> {
        let (status, body) = self.exchange(request, path, body, max_body).await?;
        match status.is_success() {
            true => Ok(body),
            false => Err(format!(
                "{}{path}: HTTP {status}: {}",
                self.prefix,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
        }
    }

    /// Sends one request to `path` (below the URL's path) and returns the
    /// answer's status and body (at most `max_body` bytes), whatever the status.
    pub async fn exchange(
        &mut self,
        request: hyper::http::request::Builder,
        path: &str,
        body: Bytes,
        max_body: usize,
    ) -> Result<(hyper::StatusCode, Bytes), String> {
        let uri = match format!("{}{path}", self.prefix) {
            u if u.is_empty() => "/".to_string(),
            u => u,
        };
        let request = request
            .uri(&uri)
            .header(hyper::header::HOST, &self.host)
            .body(Full::new(body))
            .map_err(|e| format!("{uri}: {e}"))?;
        let fail = |what: String| format!("{uri}: {what}");
        let exchange = async {
            self.sender.ready().await.map_err(|e| fail(e.to_string()))?;
            let response = self.sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| fail(format!("reading the body: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| fail("timed out".into()))?
    }
}

/// The roots a TLS client trusts: every certificate in the PEM file
/// `ca_file` (an error, starting with its path, if it holds none or one is
/// unusable), else the system's (unreadable ones skipped).
pub fn trusted_roots(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::rustls::RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("{}: a certificate is not usable: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// Connects to an `https://host:port[/prefix]` custos API, trusting the PEM
/// roots in `ca_file` (else the system's), presenting `client` (a PEM
/// certificate chain and key: an operator's) if given.
pub async fn connect_https(
    url: &str,
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
    timeout: Duration,
) -> Result<HttpConnection, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;
    let rest = url
        .trim_end_matches('/')
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?}: expected https://HOST:PORT"))?;
    let (host, prefix) = rest.split_once('/').map_or((rest, String::new()), |(h, p)| (h, format!("/{p}")));
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() && !p.contains(']') => (n.trim_start_matches('[').trim_end_matches(']'), p),
        _ => (host.trim_start_matches('[').trim_end_matches(']'), "443"),
    };
    let port: u16 = port.parse().map_err(|_| format!("{url:?}: the port is not a number"))?;
    let roots = trusted_roots(ca_file).map_err(|e| format!("--ca-file {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect())
                .map_err(|e| format!("--client-cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--client-key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("--client-cert/--client-key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let server = ServerName::try_from(name.to_string()).map_err(|e| format!("{url:?}: {e}"))?;
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((name, port)))
        .await
        .map_err(|_| format!("connecting to {host} timed out"))?
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(server, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {host} timed out"))?
    .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
    HttpConnection::over(tls, host.to_string(), prefix, timeout).await.map_err(|e| format!("{host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/hooks/x").expect("url"),
            ("127.0.0.1:8080".into(), "/hooks/x".into())
        );
        assert_eq!(split_url("http://ca.example").expect("url"), ("ca.example".into(), String::new()));
        assert!(split_url("https://ca.example").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
