//! The web console in a real browser: headless Chromium (Debian `chromium`)
//! driven over W3C WebDriver by ChromeDriver, against a real `custos serve`
//! on its TLS listener. Signs in with a token, searches, opens a
//! certificate (its audit trail with verified inclusion proofs), revokes it
//! with the form (and openssl's OCSP client sees it revoked), watches an
//! incident run to its end over server-sent events, verifies the log, and
//! checks that a tenant's session never shows another tenant's data and that
//! a form posted without its CSRF token changes nothing. Screenshots of each
//! page go to target/console-screenshots (and to docs/images/console with
//! CUSTOS_UPDATE_SCREENSHOTS=1).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Env, TlsServer, sh};
use serde_json::{Value, json};

/// A W3C WebDriver session on a ChromeDriver of its own; both end on drop.
struct Browser {
    driver: std::process::Child,
    addr: String,
    session: String,
    shots: Vec<PathBuf>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One WebDriver call on a fresh loopback connection: the answer's `value`.
fn webdriver(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-X", method, "-H", "Content-Type: application/json"])
        .args(body.map(|b| vec!["--data-binary".to_string(), b.to_string()]).unwrap_or_default())
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|e| e.to_string())?;
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    match v["value"].get("error") {
        Some(err) => Err(format!("{err}: {}", v["value"]["message"])),
        None => Ok(v["value"].clone()),
    }
}

impl Browser {
    fn start() -> Option<Browser> {
        let (Some(_), Some(_)) = (common::outside_tool("chromium"), common::outside_tool("chromedriver")) else {
            return None;
        };
        let addr = format!("127.0.0.1:{}", free_port());
        let port = addr.rsplit(':').next().expect("port").to_string();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let started = Instant::now();
        while webdriver(&addr, "GET", "/status", None).map(|v| v["ready"] != true).unwrap_or(true) {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The listener's certificate chains to this custos's own root, which Chromium does not know.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                         "--disable-dev-shm-usage", "--no-first-run"]
            }
        }}});
        let made = webdriver(&addr, "POST", "/session", Some(&capabilities)).expect("new session");
        let session = made["sessionId"].as_str().expect("session id").to_string();
        Some(Browser { driver, addr, session, shots: Vec::new() })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        webdriver(&self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url}))).expect("navigate");
    }

    fn find(&self, css: &str) -> Result<String, String> {
        let v = self.call("POST", "/element", Some(&json!({"using": "css selector", "value": css})))?;
        Ok(v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_string())
    }

    fn click(&self, css: &str) {
        let id = self.find(css).unwrap_or_else(|e| panic!("{css}: {e}\n{}", self.source()));
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({}))).expect("click");
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).unwrap_or_else(|e| panic!("{css}: {e}"));
        self.call("POST", &format!("/element/{id}/clear"), Some(&json!({}))).expect("clear");
        self.call("POST", &format!("/element/{id}/value"), Some(&json!({"text": text}))).expect("type");
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css).unwrap_or_else(|e| panic!("{css}: {e}\n{}", self.source()));
        self.call("GET", &format!("/element/{id}/text"), None).expect("text").as_str().unwrap_or("").to_string()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None).map(|v| v.as_str().unwrap_or("").to_string()).unwrap_or_default()
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).expect("url").as_str().unwrap_or("").to_string()
    }

    /// Waits (bounded) until the page's text at `css` satisfies `ok`; reloads between tries if `reload`.
    fn wait_text(&self, css: &str, reload: bool, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.find(css).ok().map(|_| self.text(css)).unwrap_or_default();
            if ok(&text) {
                return text;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{css} is {text:?} after 60 s\n{}", self.source());
            std::thread::sleep(Duration::from_millis(250));
            if reload {
                self.call("POST", "/refresh", Some(&json!({}))).expect("refresh");
            }
        }
    }

    /// Saves a screenshot of the whole window as NAME.png.
    fn screenshot(&mut self, name: &str) {
        let png = self.call("GET", "/screenshot", None).expect("screenshot");
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("decode");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &bytes).expect("write screenshot");
        if std::env::var("CUSTOS_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images/console");
            std::fs::create_dir_all(&docs).expect("dir");
            std::fs::write(docs.join(format!("{name}.png")), &bytes).expect("write screenshot");
        }
        self.shots.push(path);
    }

    /// The session cookie's value, as the browser holds it.
    fn session_cookie(&self) -> String {
        let c = self.call("GET", "/cookie/custos_session", None).expect("cookie");
        c["value"].as_str().expect("value").to_string()
    }

    fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/ui/"));
        assert!(self.url().ends_with("/ui/login"), "signed out, / leads to the sign-in page: {}", self.url());
        self.type_into("#token", token);
        self.click("form.card button");
        assert!(self.url().ends_with("/ui/"), "signed in: {}\n{}", self.url(), self.source());
    }

    fn sign_out(&self) {
        self.click("form.signout button");
        assert!(self.url().ends_with("/ui/login"), "{}", self.url());
    }
}

fn token(env: &Env, args: &[&str]) -> String {
    env.json(&[&["token", "create"], args].concat())["token"].as_str().expect("token").to_string()
}

fn serial_of(cert: &Path) -> String {
    sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

#[test]
fn an_operator_and_a_tenant_use_the_console_in_chromium() {
    let Some(mut browser) = Browser::start() else { return };
    let env = Env::initialized();
    env.ok(&["connection", "add", "acme-corp", "mail-sync", "--allow-san", "*.acme.example"]);
    env.ok(&["tenant", "add", "globex"]);
    env.ok(&["connection", "add", "globex", "portal", "--allow-san", "*.globex.example"]);
    let out = env.path("certs");
    let issue = |tenant: &str, connection: &str, name: &str| -> PathBuf {
        let dir = out.join(name);
        env.ok(&["issue", tenant, connection, "--san", name, "--out", dir.to_str().expect("p")]);
        dir.join("cert.pem")
    };
    let acme_cert = issue("acme-corp", "mail-sync", "mx1.acme.example");
    issue("acme-corp", "mail-sync", "mx2.acme.example");
    let globex_cert = issue("globex", "portal", "www.globex.example");
    issue("globex", "portal", "api.globex.example");
    let (acme_serial, globex_serial) = (serial_of(&acme_cert), serial_of(&globex_cert));
    // Two admin operators: executing an incident needs a second admin's approval.
    for name in ["alice", "bob"] {
        env.ok(&["operator", "add", name, "--role", "admin", "--out", env.path(name).to_str().expect("p")]);
    }
    let server = TlsServer::start(&env, &[]);
    let base = format!("https://{}", server.tls_addr);
    let admin = token(&env, &["--role", "admin"]);
    let second_admin = token(&env, &["--role", "admin"]);
    let tenant = token(&env, &["--role", "tenant", "--tenant", "acme-corp"]);

    // The sign-in page, and a wrong token refused.
    browser.goto(&format!("{base}/ui/login"));
    browser.screenshot("login");
    browser.type_into("#token", "tok_0123456789abcdef.not-a-secret-custos-gave-out");
    browser.click("form.card button");
    assert!(browser.text("p.error").contains("not accepted"), "{}", browser.source());

    // An admin: the overview.
    browser.sign_in(&base, &admin);
    let valid = browser.text(".figures .figure:first-child .value");
    assert_eq!(valid, "5", "4 issued and the listener's own certificate are valid");
    assert!(browser.text("main").contains("Issuers"));
    browser.screenshot("overview");

    // Search: one tenant's certificates, then by serial.
    browser.goto(&format!("{base}/ui/certificates"));
    browser.type_into("input[name=tenant]", "globex");
    browser.click("#search");
    let rows = browser.text("#certificates tbody");
    assert!(rows.contains("www.globex.example") && !rows.contains("acme.example"), "{rows}");
    browser.screenshot("certificates");
    browser.goto(&format!("{base}/ui/certificates"));
    browser.type_into("input[name=serial]", &acme_serial);
    browser.click("#search");
    assert!(browser.url().ends_with(&format!("/ui/certificates/{acme_serial}")), "{}", browser.url());
    assert_eq!(browser.text("#status"), "valid");
    assert!(browser.text("#ocsp").starts_with("successful"), "{}", browser.text("#ocsp"));
    // The issuance's audit entry, with its inclusion proof checked against a signed checkpoint.
    browser.wait_text("#trail", true, |t| t.contains("certificate.issue") && t.contains("proof verified"));
    browser.screenshot("certificate");

    // A revoke posted without the CSRF token (the session cookie alone) changes nothing.
    let cookie = browser.session_cookie();
    let refused = sh(
        "curl",
        &[
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Cookie: custos_session={cookie}"),
            "--data",
            "reason=key-compromise",
            &format!("{base}/ui/certificates/{acme_serial}/revoke"),
        ],
    );
    assert_eq!(refused.trim(), "403");
    browser.call("POST", "/refresh", Some(&json!({}))).expect("refresh");
    assert_eq!(browser.text("#status"), "valid", "the form without its token revoked nothing");

    // Revoke with the form; OCSP (openssl, on the plain listener) agrees.
    browser.click("#revoke button");
    assert!(browser.text("#status").starts_with("revoked"), "{}", browser.source());
    let (root, issuing) = env.split_chain(&acme_cert.with_file_name("chain.pem"));
    common::wait_for_ocsp(&server.server.url("/ocsp"), &issuing, &acme_cert, &root, "revoked", Duration::from_secs(5));

    // An incident, declared from the CLI, executed from the console and watched to its end.
    let declared = env.json(&["incident", "declare", "--compromised", "tenant:globex", "--reason", "superseded"]);
    let id = declared["id"].as_str().expect("incident id").to_string();
    browser.goto(&format!("{base}/ui/incidents/{id}"));
    assert!(
        browser.text("#radius").starts_with("2 certificates on 1 connections of 1 tenants"),
        "{}",
        browser.text("#radius")
    );
    browser.screenshot("incident-declared");
    // Executing needs a second admin: the first click makes the request.
    browser.click("#execute button");
    let said = browser.text("main");
    assert!(said.starts_with("Conflict") && said.contains("REQ-"), "{said}");
    let request: String = said[said.find("REQ-").expect("id")..].chars().take(12).collect();
    browser.goto(&format!("{base}/ui/approvals"));
    assert!(browser.text("#approvals").contains("Withdraw"), "the requester may only withdraw its own");
    browser.screenshot("approvals");
    browser.sign_out();
    browser.sign_in(&base, &second_admin);
    browser.goto(&format!("{base}/ui/approvals"));
    assert!(browser.text("#approvals").contains(&request));
    browser.click("#approvals form.inline button");
    assert!(browser.text("#approvals").contains("approved by operator:token:"), "{}", browser.text("#approvals"));
    browser.goto(&format!("{base}/ui/incidents/{id}"));
    browser.click("#execute button");
    // The page now follows the execution over server-sent events, without reloads.
    browser.wait_text("[data-state=replacement-issued]", false, |t| t == "1");
    browser.screenshot("incident-executing");
    env.ok(&["incident", "ack", &id, "--connection", "globex/portal"]);
    browser.wait_text("[data-state=old-certificate-retired]", false, |t| t == "1");
    env.ok(&["incident", "close", &id]);
    browser.wait_text("#incident-state", false, |t| t == "closed");
    browser.call("POST", "/refresh", Some(&json!({}))).expect("refresh");
    // Superseded: nothing was revoked at once (the old certificates retired at each ack).
    let report = browser.text("#report");
    let lines: Vec<&str> = report.lines().collect();
    let step = |name: &str| lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).copied();
    for name in ["Executed", "All replaced", "Closed"] {
        assert!(step(name).is_some_and(|t| !t.starts_with('—')), "{name} has its time: {report}");
    }
    browser.screenshot("incident-closed");
    browser.goto(&format!("{base}/ui/incidents"));
    browser.screenshot("incidents");

    // The audit log: usage chart, and a full verification.
    browser.goto(&format!("{base}/ui/audit"));
    browser.find("#usage").expect("a usage chart");
    browser.screenshot("audit");
    browser.click("#verify button");
    assert!(browser.text("#verified").starts_with("The log verifies"), "{}", browser.source());
    browser.goto(&format!("{base}/ui/tenants/acme-corp"));
    assert!(browser.text("#connections").contains("mail-sync"));
    browser.screenshot("tenant");
    browser.sign_out();
    // The session is gone with the sign-out: the old cookie reaches nothing.
    let after = sh(
        "curl",
        &[
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Cookie: custos_session={cookie}"),
            &format!("{base}/ui/"),
        ],
    );
    assert_eq!(after.trim(), "303", "redirected to sign in");

    // A tenant's session: its own tenant only; another tenant's objects are not found.
    browser.sign_in(&base, &tenant);
    assert!(browser.text("main").contains("Tenant acme-corp"));
    assert!(!browser.source().contains("globex"), "a tenant's overview names no other tenant");
    browser.screenshot("tenant-overview");
    browser.goto(&format!("{base}/ui/certificates"));
    let rows = browser.text("#certificates tbody");
    assert!(rows.contains("mx2.acme.example") && !rows.contains("globex"), "{rows}");
    // Another tenant's objects read exactly as ones that do not exist (the name asked for aside).
    let hidden = |other: &str, missing: &str, other_name: &str, missing_name: &str| {
        browser.goto(&format!("{base}{other}"));
        let seen = browser.text("main").replace(other_name, "NAME");
        browser.goto(&format!("{base}{missing}"));
        let unknown = browser.text("main").replace(missing_name, "NAME");
        assert!(seen.starts_with("Not found"), "{seen}");
        assert_eq!(seen, unknown, "{other} must read as {missing}");
    };
    hidden("/ui/certificates?tenant=globex", "/ui/certificates?tenant=nosuch", "globex", "nosuch");
    let missing_serial = "7f0000000000000000000000000000aa";
    hidden(
        &format!("/ui/certificates/{globex_serial}"),
        &format!("/ui/certificates/{missing_serial}"),
        &globex_serial,
        missing_serial,
    );
    assert!(!browser.source().contains("www.globex.example"));
    hidden("/ui/tenants/globex", "/ui/tenants/nosuch", "globex", "nosuch");
    browser.goto(&format!("{base}/ui/audit"));
    assert!(
        browser.text("main").contains("Not allowed") || browser.text("main").contains("forbidden"),
        "{}",
        browser.source()
    );
    assert!(browser.shots.len() >= 11);
}

/// Sign-in with an operator's client certificate (curl presents it): the
/// session is bound to that certificate, carries secure cookie attributes,
/// and ends at the next request once the operator is revoked.
#[test]
fn an_operator_certificate_signs_in_and_its_revocation_ends_the_session() {
    let env = Env::initialized();
    let alice = env.path("alice");
    env.ok(&["operator", "add", "alice", "--role", "auditor", "--out", alice.to_str().expect("p")]);
    let server = TlsServer::start(&env, &[]);
    let base = format!("https://{}", server.tls_addr);
    let jar = env.path("cookies.txt");
    let curl = |with_certificate: bool, args: &[&str]| -> String {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--max-time", "20", "--cacert", server.root.to_str().expect("p")]);
        c.args(["-c", jar.to_str().expect("p"), "-b", jar.to_str().expect("p")]);
        if with_certificate {
            c.args(["--cert", alice.join("cert.pem").to_str().expect("p")]);
            c.args(["--key", alice.join("key.pem").to_str().expect("p")]);
        }
        let out = c.args(args).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cookie = |name: &str| -> String {
        let text = std::fs::read_to_string(&jar).expect("jar");
        let line =
            text.lines().find(|l| l.split('\t').nth(5) == Some(name)).unwrap_or_else(|| panic!("{name}: {text}"));
        line.split('\t').nth(6).unwrap_or("").to_string()
    };
    let form = curl(true, &[&format!("{base}/ui/login")]);
    assert!(form.contains("operator:alice(auditor)") && form.contains("Sign in with it"), "{form}");
    // Without the form's token, no session.
    let refused = curl(
        true,
        &["-o", "/dev/null", "-w", "%{http_code}", "--data", "method=certificate", &format!("{base}/ui/login")],
    );
    assert_eq!(refused, "403");
    let sign_in = || -> String {
        let csrf = cookie("custos_login");
        let data = format!("csrf={csrf}&method=certificate");
        curl(true, &["-o", "/dev/null", "-D", "-", "--data", &data, &format!("{base}/ui/login")])
    };
    let head = sign_in();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let set =
        head.lines().find(|l| l.to_lowercase().starts_with("set-cookie: custos_session=")).expect("session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let page = curl(true, &[&format!("{base}/ui/")]);
    assert!(page.contains("operator:alice(auditor)") && page.contains("Valid certificates"), "{page}");
    // The cookie without the certificate reaches nothing, and ends the session it was stolen from.
    let without = curl(false, &["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/ui/")]);
    assert_eq!(without, "303", "redirected to sign in");
    let again = curl(true, &["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/ui/")]);
    assert_eq!(again, "303", "the session ended");
    curl(true, &["-o", "/dev/null", &format!("{base}/ui/login")]);
    assert!(sign_in().starts_with("HTTP/1.1 303"));
    // Revoked: the next request (custos re-reads operators within a second) ends the session.
    let page = curl(true, &[&format!("{base}/ui/")]);
    assert!(page.contains("Valid certificates"), "the session still stands: {page}");
    env.ok(&["operator", "revoke", "alice"]);
    let started = Instant::now();
    loop {
        let code = curl(true, &["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/ui/")]);
        if code == "303" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still {code} after the revocation");
        std::thread::sleep(Duration::from_millis(100));
    }
}
