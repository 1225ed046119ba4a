//! ACME against clients nobody here wrote: certbot (PyPI, installed by
//! scripts/test) obtains, is told by ARI to renew after an incident, renews
//! without --force-renewal (the incident then shows the connection
//! re-established) and revokes; lego (Debian) obtains and revokes. Both run
//! once per suite, against one real `custos serve` with its TLS listener,
//! and validate http-01 through their own standalone listener on a loopback
//! port that custos is configured to dial.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, TlsServer, tools_required, venv_tool};

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// custos with ACME on: http-01 dialled at `port`, the test names resolved to loopback,
/// and ARI clients told to ask again after a second.
fn acme_env(port: u16) -> (Env, TlsServer) {
    acme_env_with(port, free_port())
}

/// As [`acme_env`], with tls-alpn-01 dialled at `tls_port`.
fn acme_env_with(port: u16, tls_port: u16) -> (Env, TlsServer) {
    acme_env_full(port, tls_port, None)
}

/// As [`acme_env_with`], with dns-01 asking `dns` (IP:port).
fn acme_env_full(port: u16, tls_port: u16, dns: Option<&str>) -> (Env, TlsServer) {
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "web", "--profile", "server", "--allow-san", "*.acme.example"]);
    std::fs::create_dir_all(env.data_dir()).expect("data dir");
    std::fs::write(
        env.data_dir().join("custos.toml"),
        format!(
            "[acme]\nhttp01_port = {port}\ntlsalpn01_port = {tls_port}\nari_retry_after_s = 1\n{}[acme.resolve]\n\"www.acme.example\" = \"127.0.0.1\"\n\"*.acme.example\" = \"127.0.0.1\"\n",
            dns.map(|d| format!("dns_resolver = \"{d}\"\n")).unwrap_or_default()
        ),
    )
    .expect("config");
    let server = TlsServer::start(&env, &[]);
    (env, server)
}

fn eab(env: &Env) -> (String, String) {
    let v = env.json(&["acme", "eab", "acme-corp", "--connection", "web"]);
    (v["kid"].as_str().expect("kid").to_string(), v["hmac_key"].as_str().expect("key").to_string())
}

fn run(mut c: Command, what: &str) -> String {
    let started = std::time::Instant::now();
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: {:?}", started.elapsed());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn serial_of(cert: &Path) -> String {
    let out = common::sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"]);
    out.trim().trim_start_matches("serial=").to_ascii_lowercase()
}

fn status_of(env: &Env, serial: &str) -> String {
    env.json(&["show", serial])["status"].as_str().expect("status").to_string()
}

struct Certbot {
    bin: PathBuf,
    dir: PathBuf,
    directory: String,
    root: PathBuf,
    port: u16,
}

impl Certbot {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("REQUESTS_CA_BUNDLE", &self.root).args(args).args([
            "--config-dir",
            self.dir.join("config").to_str().expect("p"),
            "--work-dir",
            self.dir.join("work").to_str().expect("p"),
            "--logs-dir",
            self.dir.join("logs").to_str().expect("p"),
            "--non-interactive",
        ]);
        c
    }

    fn renew(&self) -> String {
        let port = self.port.to_string();
        // Without --no-random-sleep-on-renew, certbot sleeps up to 8 minutes when not on a terminal.
        let args = ["renew", "--no-random-sleep-on-renew", "--http-01-port", &port, "--http-01-address", "127.0.0.1"];
        run(self.command(&args), "certbot renew")
    }

    fn live(&self) -> PathBuf {
        self.dir.join("config/live/www.acme.example")
    }
}

#[test]
fn certbot_obtains_renews_when_ari_says_so_and_revokes() {
    let Some(bin) = venv_tool("certbot") else {
        assert!(!tools_required(), "certbot is required but not installed (run scripts/test)");
        eprintln!("SKIPPED: certbot not installed (run scripts/test)");
        return;
    };
    let port = free_port();
    let (env, server) = acme_env(port);
    let certbot = Certbot {
        bin,
        dir: env.path("certbot"),
        directory: format!("https://{}/acme/directory", server.tls_addr),
        root: server.root.clone(),
        port,
    };
    let (kid, key) = eab(&env);
    let port_text = port.to_string();
    let obtained = run(
        certbot.command(&[
            "certonly",
            "--server",
            &certbot.directory,
            "--standalone",
            "--http-01-port",
            &port_text,
            "--http-01-address",
            "127.0.0.1",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--eab-kid",
            &kid,
            // With '=': a key that began with '-' would read as an option
            // (custos no longer makes such keys; this guards the test anyway).
            &format!("--eab-hmac-key={key}"),
            "-d",
            "www.acme.example",
        ]),
        "certbot certonly",
    );
    assert!(obtained.contains("Successfully received certificate"), "{obtained}");
    let first = serial_of(&certbot.live().join("cert.pem"));
    let shown = env.json(&["show", &first]);
    assert_eq!(
        (shown["tenant"].as_str(), shown["connection"].as_str(), shown["key_origin"].as_str()),
        (Some("acme-corp"), Some("web"), Some("acme")),
        "the certificate is the connection's, its key the client's: {shown}"
    );
    // The chain certbot saved verifies against the custos root with openssl.
    let verified = common::sh(
        "openssl",
        &[
            "verify",
            "-CAfile",
            server.root.to_str().expect("p"),
            "-untrusted",
            certbot.live().join("chain.pem").to_str().expect("p"),
            certbot.live().join("cert.pem").to_str().expect("p"),
        ],
    );
    assert!(verified.contains(": OK"), "{verified}");

    // Fresh: ARI's window is in the last third of the lifetime, so renew does nothing.
    let early = certbot.renew();
    assert!(early.contains("not yet due for renewal"), "{early}");
    assert_eq!(serial_of(&certbot.live().join("cert.pem")), first);

    // An incident that does not revoke at once (superseded): OCSP still says good,
    // so only ARI can tell certbot to renew.
    env.ok(&["incident", "declare", "--compromised", &format!("cert:{first}"), "--reason", "superseded"]);
    env.ok(&["incident", "execute", "INC-0001", "--yes"]);
    let waiting = env.json(&["incident", "status", "INC-0001"]);
    assert_eq!(waiting["connections"][0]["state"], "pending", "custos makes no key for an ACME client: {waiting}");
    assert_eq!(status_of(&env, &first), "valid");
    // certbot honours the Retry-After of its last ARI answer (a second here).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let renewed = certbot.renew();
    assert!(renewed.contains("renewed") || renewed.contains("Congratulations"), "{renewed}");
    let second = serial_of(&certbot.live().join("cert.pem"));
    assert_ne!(second, first, "certbot renewed because ARI said so");
    let status = env.json(&["incident", "status", "INC-0001"]);
    let c = &status["connections"][0];
    assert_eq!(c["state"], "old-certificate-retired", "re-established without an ack: {status}");
    assert_eq!(c["replacement"].as_str(), Some(second.as_str()));
    assert_eq!(status_of(&env, &first), "revoked", "the old certificate is retired");
    env.ok(&["incident", "close", "INC-0001"]);

    // revokeCert, signed by the account.
    let revoked = run(
        certbot.command(&[
            "revoke",
            "--server",
            &certbot.directory,
            "--cert-path",
            certbot.live().join("cert.pem").to_str().expect("p"),
            "--reason",
            "keycompromise",
            "--no-delete-after-revoke",
        ]),
        "certbot revoke",
    );
    assert!(revoked.to_lowercase().contains("revoked"), "{revoked}");
    assert_eq!(status_of(&env, &second), "revoked");
    let audit: Vec<serde_json::Value> = env
        .ok(&["audit", "tail", "-n", "200", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON entry per line"))
        .collect();
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    let by_account =
        audit.iter().filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("acme:acme-corp/web["))).count();
    assert!(by_account >= 8, "the ACME account is the principal of what it did: {by_account} entries");
    // The log proves the state it left: every certificate, revocation and tenant.
    let verified = env.ok(&["audit", "verify", "--state"]);
    assert!(verified.contains("the database says what the log says"), "{verified}");
    for action in [
        "acme.eab.create",
        "acme.account.new",
        "acme.order.new",
        "acme.challenge.valid",
        "acme.order.finalize",
        "incident.reestablish",
    ] {
        assert!(actions.contains(&action), "audit has {action}: {actions:?}");
    }
    drop(server);
}

#[test]
fn lego_obtains_by_http01_and_tls_alpn01_and_revokes() {
    if Command::new("lego").arg("--version").output().is_err() {
        assert!(!tools_required(), "lego is required but not installed (run scripts/test)");
        eprintln!("SKIPPED: lego not installed (run scripts/test)");
        return;
    }
    let (port, tls_port) = (free_port(), free_port());
    let (env, server) = acme_env_with(port, tls_port);
    let (kid, key) = eab(&env);
    let dir = env.path("lego");
    let lego = |domain: &str, challenge: &[&str], action: &[&str]| {
        let mut c = Command::new("lego");
        c.env("LEGO_CA_CERTIFICATES", &server.root).args([
            "--server",
            &format!("https://{}/acme/directory", server.tls_addr),
            "--accept-tos",
            "--email",
            "ops@acme.example",
            "--eab",
            "--kid",
            &kid,
            &format!("--hmac={key}"),
            "--domains",
            domain,
            "--path",
            dir.to_str().expect("p"),
        ]);
        c.args(challenge).args(action);
        c
    };
    let http = ["--http", "--http.port", &format!("127.0.0.1:{port}")].map(String::from);
    let tls = ["--tls", "--tls.port", &format!("127.0.0.1:{tls_port}")].map(String::from);
    for (domain, challenge) in [("lego.acme.example", &http), ("alpn.acme.example", &tls)] {
        let challenge: Vec<&str> = challenge.iter().map(String::as_str).collect();
        run(lego(domain, &challenge, &["run"]), &format!("lego run ({})", challenge[0]));
        let cert = dir.join(format!("certificates/{domain}.crt"));
        let serial = serial_of(&cert);
        assert_eq!(env.json(&["show", &serial])["key_origin"], "acme");
        assert_eq!(status_of(&env, &serial), "valid");
        run(lego(domain, &challenge, &["revoke"]), "lego revoke");
        assert_eq!(status_of(&env, &serial), "revoked");
    }
    let audit = env.ok(&["audit", "tail", "-n", "200", "--json"]);
    assert!(audit.contains(r#""challenge":"tls-alpn-01""#), "a tls-alpn-01 validation is in the log");
    drop(server);
}

/// pebble-challtestsrv (Debian `pebble`) as the DNS server, its records set
/// through its management API; killed on drop.
struct ChallTestSrv {
    child: std::process::Child,
    dns: String,
    management: String,
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn challtestsrv() -> Option<ChallTestSrv> {
    let (dns, management) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let child = Command::new("pebble-challtestsrv")
        .args(["-dns01", &dns, "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", &management])
        .args(["-defaultIPv6", ""])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let srv = ChallTestSrv { child, dns, management };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&srv.management).is_ok() {
            return Some(srv);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("pebble-challtestsrv did not start");
}

#[test]
fn lego_obtains_a_wildcard_by_dns01() {
    let lego_there = Command::new("lego").arg("--version").output().is_ok();
    let Some(srv) = challtestsrv().filter(|_| lego_there) else {
        assert!(!tools_required(), "lego and pebble-challtestsrv are required but not installed (run scripts/test)");
        eprintln!("SKIPPED: lego or pebble-challtestsrv not installed (run scripts/test)");
        return;
    };
    let (env, server) = acme_env_full(free_port(), free_port(), Some(&srv.dns));
    let (kid, key) = eab(&env);
    // lego's exec provider calls this to place and remove the TXT record.
    let script = env.path("dns-hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  present) curl -sf -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" http://{m}/set-txt ;;\n  cleanup) curl -sf -d \"{{\\\"host\\\":\\\"$2\\\"}}\" http://{m}/clear-txt ;;\nesac\n",
            m = srv.management
        ),
    )
    .expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = env.path("lego-dns");
    let mut c = Command::new("lego");
    c.env("LEGO_CA_CERTIFICATES", &server.root).env("EXEC_PATH", &script).args([
        "--server",
        &format!("https://{}/acme/directory", server.tls_addr),
        "--accept-tos",
        "--email",
        "ops@acme.example",
        "--eab",
        "--kid",
        &kid,
        &format!("--hmac={key}"),
        "--domains",
        "*.acme.example",
        "--dns",
        "exec",
        "--dns.resolvers",
        &srv.dns,
        "--dns.disable-cp",
        "--path",
        dir.to_str().expect("p"),
        "run",
    ]);
    run(c, "lego run (dns-01)");
    let cert = dir.join("certificates/_.acme.example.crt");
    let serial = serial_of(&cert);
    let shown = env.json(&["show", &serial]);
    assert_eq!(shown["sans"], serde_json::json!(["*.acme.example"]), "{shown}");
    let audit = env.ok(&["audit", "tail", "-n", "100", "--json"]);
    assert!(audit.contains(r#""challenge":"dns-01""#), "a dns-01 validation is in the log");
}
