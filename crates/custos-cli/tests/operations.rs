//! Operations on a real `custos serve`: `/metrics` scraped by a real
//! Prometheus (Debian `prometheus`) over TLS with an auditor token and from
//! the separate metrics listener, queried through Prometheus's HTTP API; the
//! example alert rules checked by `promtool check rules`; who may read
//! metrics and who may not; JSON log lines with the principal and route of
//! each API request and one line per committed change; no colour codes in a
//! redirected text log; `--json` refused where nothing is rendered.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, TlsServer, http, sh};
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A Prometheus server on a loopback port, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, _dir: dir }
    }

    /// The result vector of an instant query (empty if Prometheus is not up yet or refuses it).
    fn query(&self, q: &str) -> Vec<Value> {
        self.try_query(q).unwrap_or_default()
    }

    /// The result vector of an instant query, or what Prometheus said was wrong with it.
    fn try_query(&self, q: &str) -> Result<Vec<Value>, String> {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", "--get", "--data-urlencode", &format!("query={q}")])
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: not up yet?"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The first sample of `q`, waiting (bounded) until `ok` holds for it.
    fn wait_for(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let started = Instant::now();
        loop {
            let value = self.query(q).first().and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok());
            if let Some(v) = value
                && ok(v)
            {
                return v;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "Prometheus: {q} is {value:?} after 60 s");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn token(env: &Env, args: &[&str]) -> String {
    env.json(&[&["token", "create"], args].concat())["token"].as_str().expect("token").to_string()
}

/// Waits (bounded) until `path` holds a line for which `found` is true, and returns every line.
fn wait_for_line(path: &Path, found: impl Fn(&str) -> bool) -> Vec<String> {
    let started = Instant::now();
    loop {
        let mut text = String::new();
        std::fs::File::open(path).expect("log").read_to_string(&mut text).expect("read log");
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.iter().any(|l| found(l)) {
            return lines;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no such line in the log after 20 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn prometheus_scrapes_what_custos_counts_and_logs_are_json_lines() {
    let (Some(prometheus), Some(promtool)) = (common::outside_tool("prometheus"), common::outside_tool("promtool"))
    else {
        return;
    };
    let env = Env::initialized();
    std::fs::write(
        env.data_dir().join("custos.toml"),
        "[serve]\nmetrics_listen = \"127.0.0.1:0\"\nfigures_interval_s = 1\n\n[log]\nformat = \"json\"\n",
    )
    .expect("config");
    env.ok(&["connection", "add", "acme-corp", "mail-sync", "--allow-san", "*.acme.example"]);
    let leaf = env.path("leaf");
    for i in 0..3 {
        env.ok(&[
            "issue",
            "acme-corp",
            "mail-sync",
            "--san",
            &format!("h{i}.acme.example"),
            "--out",
            leaf.join(i.to_string()).to_str().expect("p"),
        ]);
    }
    let log = env.path("serve.log");
    let into_log = std::fs::File::create(&log).expect("log").into();
    let server = TlsServer::launch(&env, &[], into_log, true, &[("CUSTOS_LOG", "info")]);
    let metrics_addr = server.metrics_addr.clone().expect("metrics listener");
    let auditor = token(&env, &["--role", "auditor"]);
    let tenant = token(&env, &["--role", "tenant", "--tenant", "acme-corp"]);

    // Who may read /metrics on the TLS listener, and that the plain listener has none.
    assert_eq!(server.api("GET", "/metrics", None, None).0, 401);
    assert_eq!(server.api("GET", "/metrics", Some("tok_0123456789abcdef.bogus"), None).0, 401);
    let (status, body) = server.api("GET", "/metrics", Some(&tenant), None);
    assert_eq!(status, 403, "a tenant reads no metrics: {body}");
    let (status, text) = server.api("GET", "/metrics", Some(&auditor), None);
    assert_eq!(status, 200, "{text}");
    assert!(text.trim_end().ends_with("# EOF") && text.contains("custos_signatures_total"), "{text}");
    assert_eq!(http(&server.server.addr, "GET", "/metrics", None, b"").0, 404, "no metrics on the plain listener");
    let (status, _, open) = http(&metrics_addr, "GET", "/metrics", None, b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&open).contains("custos_http_requests_total"));

    // Traffic to count: OCSP twice (the second a cache hit), the API, a revocation.
    let (root, issuing) = env.split_chain(&leaf.join("0/chain.pem"));
    let cert = leaf.join("0/cert.pem");
    // With a nonce: signed for this request (a miss); without: the pre-signed answer (a hit).
    for nonce in ["-nonce", "-no_nonce"] {
        let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let url = server.server.url("/ocsp");
        let said = sh(
            "openssl",
            &["ocsp", "-issuer", &p(&issuing), "-cert", &p(&cert), "-url", &url, "-CAfile", &p(&root), nonce],
        );
        assert!(said.contains(": good"), "{said}");
    }
    assert_eq!(server.api("GET", "/api/v1/tenants", Some(&auditor), None).0, 200);
    let serial = sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase();
    let (status, body) = server.api(
        "POST",
        &format!("/api/v1/certificates/{serial}/revoke"),
        Some(&tenant),
        Some(&serde_json::json!({"reason": "superseded"})),
    );
    assert_eq!(status, 200, "{body}");

    // A real Prometheus scrapes both listeners: TLS with the auditor token, and the open one.
    let token_file = env.path("scrape-token");
    std::fs::write(&token_file, &auditor).expect("token");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/custos-alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: custos\n    scheme: https\n    \
         tls_config:\n      ca_file: {root}\n    authorization:\n      credentials_file: {token}\n    static_configs:\n      \
         - targets: ['{tls}']\n  - job_name: custos-open\n    static_configs:\n      - targets: ['{open}']\n",
        rules = rules.display(),
        root = root.display(),
        token = token_file.display(),
        tls = server.tls_addr,
        open = metrics_addr,
    );
    let prom = Prometheus::start(&prometheus, &config);
    prom.wait_for("up{job=\"custos\"}", |v| v == 1.0);
    prom.wait_for("up{job=\"custos-open\"}", |v| v == 1.0);
    // The figures as the inventory has them: 3 issued + the listener's certificate, one revoked.
    let listed = env.json(&["list"]);
    let all = listed.as_array().expect("list").len() as f64;
    prom.wait_for("custos_certificates{job=\"custos\",state=\"revoked\"}", |v| v == 1.0);
    prom.wait_for("custos_certificates{job=\"custos\",state=\"valid\"}", |v| v == all - 1.0);
    prom.wait_for("custos_revocations_today{job=\"custos\"}", |v| v == 1.0);
    prom.wait_for("custos_certificates_expiring{job=\"custos\",within=\"30d\"}", |v| v == 0.0);
    prom.wait_for("sum(custos_signatures_total{job=\"custos\",purpose=\"certificate\"})", |v| v >= 1.0);
    prom.wait_for("sum(custos_signatures_total{job=\"custos\",purpose=\"crl\"})", |v| v >= 1.0);
    prom.wait_for("custos_ocsp_responses_total{job=\"custos\",outcome=\"successful\",cache=\"hit\"}", |v| v >= 1.0);
    prom.wait_for(
        "custos_http_requests_total{job=\"custos\",listener=\"tls\",route=\"/api/v1/tenants\",status=\"200\"}",
        |v| v >= 1.0,
    );
    prom.wait_for("custos_http_requests_total{job=\"custos\",listener=\"plain\",route=\"/ocsp\"}", |v| v >= 2.0);
    prom.wait_for("custos_auth_failures_total{job=\"custos\",credential=\"bearer\"}", |v| v >= 1.0);
    prom.wait_for("count(custos_http_request_duration_seconds_bucket{job=\"custos\"})", |v| v > 0.0);
    prom.wait_for("count(custos_crl_this_update_timestamp_seconds{job=\"custos\"})", |v| v >= 2.0);
    prom.wait_for("time() - custos_revocation_feed_read_timestamp_seconds{job=\"custos\"}", |v| v < 10.0);
    prom.wait_for("custos_audit_entries{job=\"custos\"}", |v| v > 0.0);
    // No label is unbounded: every route label is a template, never a serial.
    for series in prom.query("custos_http_requests_total") {
        let route = series["metric"]["route"].as_str().unwrap_or("");
        assert!(!route.contains(&serial), "a route label holds a serial: {series}");
    }

    // The example alert rules load, in promtool and in the running Prometheus.
    let checked = sh(promtool.to_str().expect("p"), &["check", "rules", rules.to_str().expect("p")]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let started = Instant::now();
    loop {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("http://{}/api/v1/rules", prom.addr)])
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        if rules.len() == 9 && rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "alert rules not all evaluated ok: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The Grafana dashboard's every query is valid PromQL over what custos exports, and
    // shows data (incident connections and webhook messages exist only once an incident has them).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring/custos-dashboard.json"),
        )
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr").replace("$job", "custos");
            let started = Instant::now();
            loop {
                let result = prom.try_query(&expr).unwrap_or_else(|e| panic!("{}: {expr}: {e}", panel["title"]));
                let may_be_empty =
                    expr.contains("custos_incident_connections") || expr.contains("custos_webhook_messages");
                if !result.is_empty() || may_be_empty {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "{}: no data for {expr}", panel["title"]);
                std::thread::sleep(Duration::from_millis(500));
            }
            queries += 1;
        }
    }
    assert!(queries >= 16, "{queries} dashboard queries");

    // The log: JSON objects only, an API line naming principal and route, a line for the revocation.
    let lines = wait_for_line(&log, |l| l.contains("\"action\":\"certificate.revoke\""));
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}")))
        .collect();
    let request = parsed
        .iter()
        .find(|v| v["message"] == "API request" && v["route"] == "/api/v1/certificates/{serial}/revoke")
        .unwrap_or_else(|| panic!("no API request line for the revocation:\n{}", lines.join("\n")));
    assert!(request["principal"].as_str().is_some_and(|p| p.starts_with("tenant:acme-corp")), "{request}");
    assert_eq!(request["status"], 200);
    assert!(request["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{request}");
    let change = parsed.iter().find(|v| v["action"] == "certificate.revoke").expect("change line");
    assert_eq!(change["message"], "state change");
    assert_eq!(change["request_id"], request["request_id"], "the change names the request that made it");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "no escape codes in a log file");
}

#[test]
fn a_redirected_text_log_has_no_colour_codes_and_servers_refuse_json() {
    let env = Env::initialized();
    let log = env.path("serve.log");
    let into_log = std::fs::File::create(&log).expect("log").into();
    let server = TlsServer::launch(&env, &["--log-format", "text"], into_log, false, &[("CUSTOS_LOG", "info")]);
    let admin = token(&env, &["--role", "admin"]);
    assert_eq!(server.api("GET", "/api/v1/tenants", Some(&admin), None).0, 200);
    let lines = wait_for_line(&log, |l| l.contains("API request"));
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "escape codes in a redirected log:\n{}", lines.join("\n"));
    let line = lines.iter().find(|l| l.contains("API request")).expect("request line");
    assert!(line.contains("principal=\"operator:token:") && line.contains("route=\"/api/v1/tenants\""), "{line}");
    drop(server);

    for args in
        [&["--json", "serve"][..], &["--json", "demo", "incident"][..], &["--json", "ca", "export", "root-1"][..]]
    {
        let said = env.fails(args);
        assert!(said.contains("--json") && said.contains("--log-format json"), "{args:?}: {said}");
    }
    let out = env.run(&["--log-format", "yaml", "config", "show"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("'yaml'") && said.contains("json"), "{said}");
}
