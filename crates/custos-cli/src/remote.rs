//! `--server https://HOST:PORT`: list, show, revoke, issue (by CSR), the
//! incident commands and the audit log's tail, proofs, checkpoint and key
//! usage through a custos's `/api/v1` with a token (`--token-file`) or an
//! operator's certificate (`--client-cert`, `--client-key`), printing what the
//! local commands print (with `--json`, the API's documents).

use custos_ca::CertificateView;
use custos_node::client::HttpConnection;
use hyper::body::Bytes;

use crate::{Cli, CliError};

/// The most one API answer may carry.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// How long one API request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A certificate the API issued.
#[derive(serde::Deserialize)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The issuing CA and those above it, PEM.
    pub chain_pem: String,
    /// What `show` prints of it.
    pub certificate: CertificateView,
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A string field of an API document; empty when it is absent or not a string.
pub fn text(document: &serde_json::Value, key: &str) -> String {
    document[key].as_str().unwrap_or_default().to_string()
}

/// One keep-alive connection to a custos API, with its credentials.
pub struct Api {
    conn: HttpConnection,
    bearer: Option<String>,
}

impl Api {
    /// The API `--server` names, if it names one.
    pub async fn from_cli(cli: &Cli) -> Result<Option<Api>, CliError> {
        let Some(url) = &cli.server else {
            if cli.token_file.is_some() || cli.client_cert.is_some() {
                return Err(CliError::Usage("--token-file, --client-cert and --client-key go with --server".into()));
            }
            return Ok(None);
        };
        let bearer = match &cli.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| CliError::Io { path: path.clone(), source })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        if bearer.is_none() && cli.client_cert.is_none() {
            return Err(CliError::Usage("--server needs --token-file F, or --client-cert C --client-key K".into()));
        }
        let client = cli.client_cert.as_deref().zip(cli.client_key.as_deref());
        let conn = custos_node::client::connect_https(url, cli.ca_file.as_deref(), client, TIMEOUT)
            .await
            .map_err(CliError::Remote)?;
        Ok(Some(Api { conn, bearer }))
    }

    /// One request; the body of a 2xx answer, else the problem's detail.
    async fn call(&mut self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<Vec<u8>, CliError> {
        let mut request = hyper::Request::builder().method(method);
        if let Some(t) = &self.bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(b) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let answer = self.conn.send(request, path, bytes, MAX_ANSWER).await.map_err(|e| {
            // "PATH: HTTP STATUS: {problem}": say the problem's detail.
            let detail = e
                .split_once(": {")
                .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&format!("{{{json}")).ok())
                .and_then(|p| p["detail"].as_str().map(str::to_string));
            CliError::Remote(detail.unwrap_or(e))
        })?;
        Ok(answer.to_vec())
    }

    /// A GET of a JSON document.
    pub async fn get(&mut self, path: &str) -> Result<serde_json::Value, CliError> {
        let body = self.call("GET", path, None).await?;
        serde_json::from_slice(&body).map_err(|e| CliError::Remote(format!("{path}: {e}")))
    }

    /// A POST of `body` (an empty object if `None`), answered with a JSON document.
    pub async fn post(&mut self, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, CliError> {
        let body = self.call("POST", path, Some(body.unwrap_or_else(|| serde_json::json!({})))).await?;
        serde_json::from_slice(&body).map_err(|e| CliError::Remote(format!("{path}: {e}")))
    }

    /// Every certificate the query selects, following the pages.
    pub async fn certificates(&mut self, query: &[(&str, String)]) -> Result<Vec<CertificateView>, CliError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        // Bounded: a million pages is far past any inventory.
        for _ in 0..1_000_000 {
            let mut params: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            params.push("limit=1000".into());
            if let Some(c) = &cursor {
                params.push(format!("cursor={c}"));
            }
            let page = self.call("GET", &format!("/api/v1/certificates?{}", params.join("&")), None).await?;
            #[derive(serde::Deserialize)]
            struct Page {
                items: Vec<CertificateView>,
                next_cursor: Option<String>,
            }
            let page: Page = serde_json::from_slice(&page).map_err(|e| CliError::Remote(format!("a page: {e}")))?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// One certificate, as JSON or (with `pem`) as PEM text.
    pub async fn certificate(&mut self, serial: &str, pem: bool) -> Result<Result<CertificateView, String>, CliError> {
        if pem {
            let text = self.call("GET", &format!("/api/v1/certificates/{serial}?format=pem"), None).await?;
            return Ok(Err(String::from_utf8_lossy(&text).into_owned()));
        }
        let body = self.call("GET", &format!("/api/v1/certificates/{serial}"), None).await?;
        Ok(Ok(serde_json::from_slice(&body).map_err(|e| CliError::Remote(format!("a certificate: {e}")))?))
    }

    /// Issues a certificate for a CSR: `body` as the API takes it.
    pub async fn issue(&mut self, tenant: &str, connection: &str, body: serde_json::Value) -> Result<Issued, CliError> {
        let path = format!("/api/v1/tenants/{tenant}/connections/{connection}/certificates");
        let answer = self.call("POST", &path, Some(body)).await?;
        serde_json::from_slice(&answer).map_err(|e| CliError::Remote(format!("an issued certificate: {e}")))
    }

    /// Revokes one certificate.
    pub async fn revoke(&mut self, serial: &str, reason: &str) -> Result<CertificateView, CliError> {
        let body = self
            .call("POST", &format!("/api/v1/certificates/{serial}/revoke"), Some(serde_json::json!({"reason": reason})))
            .await?;
        serde_json::from_slice(&body).map_err(|e| CliError::Remote(format!("a certificate: {e}")))
    }
}
