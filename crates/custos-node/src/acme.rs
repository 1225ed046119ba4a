//! Challenge validation for the ACME server: the network side of proving
//! that a client controls a name. tls-alpn-01 (RFC 8737) opens TLS to the
//! name on `acme.tlsalpn01_port` with ALPN `acme-tls/1` and SNI the name, and
//! checks the certificate offered (custos-pki). dns-01 asks `acme.dns_resolver`
//! (else the system's first nameserver) over UDP for the TXT record. http-01 dials the name (or the address
//! `[acme.resolve]` gives for it, as Pebble allows) on `acme.http01_port`
//! (`"*.example.test"` covers every name below it) and reads `/.well-known/acme-challenge/TOKEN`, without following
//! redirects, within `acme.validation_timeout_ms`, reading at most 8 KiB.

use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Port tls-alpn-01 dials.
    pub tlsalpn01_port: u16,
    /// The DNS resolver dns-01 asks (IP:port); the first `nameserver` of /etc/resolv.conf if unset.
    pub dns_resolver: Option<std::net::SocketAddr>,
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

impl NetworkValidator {
    async fn tls_alpn01(&self, name: &str, key_authorization: &str) -> Result<(), AcmeError> {
        use tokio_rustls::rustls;
        let addr = self.address(name, self.tlsalpn01_port).await?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // TLS 1.3 only: its handshake signature is checked against the offered
        // certificate's raw key (rustls' own check would refuse the critical
        // acmeIdentifier extension before custos-pki could judge it).
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| connection(format!("TLS set-up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| AcmeError::malformed(format!("{name} is not a DNS name: {e}")))?;
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| connection(format!("cannot connect to {name} ({addr}): {e}")))?;
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| connection(format!("TLS with {name} ({addr}): {e}")))
        };
        let tls = tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| connection(format!("TLS with {name} ({addr}) timed out")))??;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(b"acme-tls/1".as_slice()) {
            return Err(incorrect(format!("{name} ({addr}) did not negotiate the acme-tls/1 protocol")));
        }
        let der = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| incorrect(format!("{name} ({addr}) offered no certificate")))?;
        let digest = custos_acme::sha256(key_authorization.as_bytes());
        custos_pki::inspect::check_tls_alpn01(der, name, &digest)
            .map_err(|e| incorrect(format!("the certificate {name} ({addr}) offered: {e}")))
    }
}

/// tls-alpn-01 proves control by the certificate's contents, not its chain
/// (RFC 8737 section 3): any certificate is taken, the handshake signature
/// still checked against its key, and the certificate then judged by
/// [`custos_pki::inspect::check_tls_alpn01`].
#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls_pki_types::CertificateDer<'_>,
        _dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        // The client offers TLS 1.3 only; a 1.2 handshake never gets here.
        Err(tokio_rustls::rustls::Error::General("tls-alpn-01 validation speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let spki = custos_pki::inspect::subject_public_key_info(cert).ok_or_else(|| {
            tokio_rustls::rustls::Error::InvalidCertificate(tokio_rustls::rustls::CertificateError::BadEncoding)
        })?;
        tokio_rustls::rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls_pki_types::SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl NetworkValidator {
    /// The resolver to ask: configured, else the system's first nameserver.
    fn resolver(&self) -> Result<std::net::SocketAddr, AcmeError> {
        if let Some(r) = self.dns_resolver {
            return Ok(r);
        }
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .find_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, 53))
            .ok_or_else(|| connection("no DNS resolver: set acme.dns_resolver".into()))
    }

    /// dns-01 (RFC 8555 section 8.4): a TXT record at `_acme-challenge.NAME`
    /// holding base64url(SHA-256(key authorization)), asked over UDP.
    async fn dns01(&self, name: &str, key_authorization: &str) -> Result<(), AcmeError> {
        let resolver = self.resolver()?;
        let record = format!("_acme-challenge.{name}");
        let id = custos_acme::dns::random_id();
        let query = custos_acme::dns::txt_query(id, &record).map_err(AcmeError::malformed)?;
        let local: std::net::SocketAddr =
            if resolver.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let ask = async {
            let socket =
                tokio::net::UdpSocket::bind(local).await.map_err(|e| connection(format!("DNS socket: {e}")))?;
            socket.connect(resolver).await.map_err(|e| connection(format!("DNS resolver {resolver}: {e}")))?;
            socket.send(&query).await.map_err(|e| connection(format!("DNS resolver {resolver}: {e}")))?;
            let mut buf = vec![0u8; custos_acme::dns::MAX_RESPONSE];
            // Answers to other ids (late or spoofed) are skipped, within the timeout.
            loop {
                let n = socket.recv(&mut buf).await.map_err(|e| connection(format!("DNS resolver {resolver}: {e}")))?;
                match custos_acme::dns::txt_answers(id, &record, &buf[..n]) {
                    Err(e) if e.contains("another query") => continue,
                    other => return other.map_err(|e| connection(format!("DNS resolver {resolver} on {record}: {e}"))),
                }
            }
        };
        let values = tokio::time::timeout(self.timeout, ask)
            .await
            .map_err(|_| connection(format!("DNS resolver {resolver} did not answer for {record} in time")))??;
        let expected = custos_acme::dns01_value(key_authorization);
        match values.contains(&expected) {
            true => Ok(()),
            false if values.is_empty() => Err(incorrect(format!("{record} has no TXT record"))),
            false => Err(incorrect(format!("no TXT record at {record} holds the key authorization's digest"))),
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
        vec!["http-01", "tls-alpn-01", "dns-01"]
    }

    async fn validate(&self, kind: &str, name: &str, token: &str, key_authorization: &str) -> Result<(), AcmeError> {
        match kind {
            "http-01" => self.http01(name, token, key_authorization).await,
            "tls-alpn-01" => self.tls_alpn01(name, key_authorization).await,
            "dns-01" => self.dns01(name, key_authorization).await,
            other => Err(AcmeError::malformed(format!("challenge type {other} is not validated by this custos"))),
        }
    }
}
