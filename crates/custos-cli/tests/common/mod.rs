//! Helpers for tests that drive the real `custos` binary and check its output
//! with tools nobody here wrote (openssl, pkilint).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway custos data directory and a way to run the binary against it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub passphrase: String,
    /// A PostgreSQL database of its own, when the suite runs on PostgreSQL
    /// (`CUSTOS_TEST_SUITE_ON_POSTGRES=1`, with `CUSTOS_TEST_POSTGRES`).
    pub database: Option<String>,
}

static NEXT_DATABASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A fresh database on the test cluster for one environment, if the suite runs on PostgreSQL.
fn suite_database() -> Option<String> {
    if std::env::var("CUSTOS_TEST_SUITE_ON_POSTGRES").ok().as_deref() != Some("1") {
        return None;
    }
    let base = std::env::var("CUSTOS_TEST_POSTGRES").expect("CUSTOS_TEST_POSTGRES with CUSTOS_TEST_SUITE_ON_POSTGRES");
    let n = NEXT_DATABASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("suite_{}_{n}", std::process::id());
    let out =
        Command::new("psql").args([base.as_str(), "-qc", &format!("CREATE DATABASE {name}")]).output().expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(format!("{}/{name}", base.rsplit_once('/').expect("database in URL").0))
}

impl Env {
    /// A fresh, uninitialized environment.
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            passphrase: "correct horse battery staple".into(),
            database: suite_database(),
        }
    }

    /// An initialized environment with tenant `acme-corp`.
    pub fn initialized() -> Env {
        let env = Env::new();
        env.ok(&["init"]);
        env.ok(&["tenant", "add", "acme-corp"]);
        env
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_custos"));
        c.current_dir(self.dir.path())
            .env("CUSTOS_DATA", self.data_dir())
            .env("CUSTOS_PASSPHRASE", &self.passphrase)
            .env("CUSTOS_LOG", "warn");
        if let Some(db) = &self.database {
            c.env("CUSTOS_DATABASE", db);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run custos")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "custos {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and asserts failure with exit status 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "custos {args:?} should fail with status 1:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert!(!stderr.contains("panicked"), "custos panicked: {stderr}");
        stderr
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON output")
    }

    /// Serials currently listed.
    pub fn serials(&self) -> Vec<String> {
        let v = self.json(&["list"]);
        v.as_array().expect("array").iter().map(|c| c["serial"].as_str().expect("serial").to_string()).collect()
    }

    /// Makes `NAME.csr` (and `NAME.key`) with openssl req; `key` picks the key, e.g. `&["-newkey", "rsa:2048"]`.
    pub fn openssl_csr(&self, name: &str, subject: &str, key: &[&str]) -> PathBuf {
        let csr = self.path(&format!("{name}.csr"));
        let key_file = self.path(&format!("{name}.key"));
        let mut args = vec!["req", "-new", "-nodes", "-subj", subject, "-keyout", key_file.to_str().expect("p")];
        args.extend(["-out", csr.to_str().expect("p")]);
        args.extend_from_slice(key);
        sh("openssl", &args);
        csr
    }

    /// A P-256 CSR from openssl, as `NAME.csr`.
    pub fn p256_csr(&self, name: &str) -> PathBuf {
        self.openssl_csr(name, "/CN=x", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    }

    /// Writes root.pem and issuing.pem from a chain.pem (issuing first, then root).
    pub fn split_chain(&self, chain: &Path) -> (PathBuf, PathBuf) {
        let text = std::fs::read_to_string(chain).expect("chain.pem");
        let blocks: Vec<String> = text
            .split_inclusive("-----END CERTIFICATE-----\n")
            .map(str::to_string)
            .filter(|b| b.contains("BEGIN"))
            .collect();
        assert_eq!(blocks.len(), 2, "chain.pem holds issuing CA then root");
        let issuing = self.path("issuing.pem");
        let root = self.path("root.pem");
        std::fs::write(&issuing, &blocks[0]).expect("write issuing");
        std::fs::write(&root, &blocks[1]).expect("write root");
        (root, issuing)
    }
}

/// Runs a command and asserts success; returns stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} not runnable: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// openssl verify with a trusted root and an untrusted intermediate.
pub fn openssl_verify(root: &Path, issuing: &Path, cert: &Path) {
    let out = sh(
        "openssl",
        &[
            "verify",
            "-CAfile",
            root.to_str().expect("p"),
            "-untrusted",
            issuing.to_str().expect("p"),
            cert.to_str().expect("p"),
        ],
    );
    assert!(out.contains(": OK"), "openssl verify: {out}");
}

/// Where scripts/test put a PyPI tool (pkilint, schemathesis), if anywhere.
pub fn venv_tool(tool: &str) -> Option<PathBuf> {
    let dirs = [
        std::env::var_os("CUSTOS_TOOLS_BIN").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools-venv/bin")),
    ];
    dirs.into_iter().flatten().map(|d| d.join(tool)).find(|p| p.exists())
}

/// An outside tool on PATH (prometheus, chromium…), or None: then the test
/// fails under scripts/test (which installs it) and is skipped elsewhere.
pub fn outside_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(!tools_required(), "{name} is not installed (scripts/test installs it)");
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// Whether a missing outside tool fails the test (scripts/test sets this) or skips the check.
pub fn tools_required() -> bool {
    std::env::var("CUSTOS_REQUIRE_TOOLS").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Lints with a pkilint tool and fails on any ERROR or FATAL finding.
/// pkilint's exit code counts every finding, so it is not used.
pub fn pkilint(tool: &str, args: &[&str]) {
    let Some(bin) = venv_tool(tool) else {
        assert!(!tools_required(), "pkilint's {tool} is required but not installed (run scripts/test)");
        eprintln!("SKIPPED pkilint {tool}: not installed (run scripts/test)");
        return;
    };
    let mut full = vec!["lint", "-f", "JSON"];
    full.extend_from_slice(args);
    let out = Command::new(&bin).args(&full).output().expect("run pkilint");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("pkilint output is not JSON ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let bad: Vec<String> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .flat_map(|r| {
            r["finding_descriptions"].as_array().cloned().unwrap_or_default().into_iter().filter_map(move |f| {
                let sev = f["severity"].as_str().unwrap_or("");
                (sev == "ERROR" || sev == "FATAL")
                    .then(|| format!("{} @ {}: {} {}", r["validator"], r["node_path"], f["code"], f["message"]))
            })
        })
        .collect();
    assert!(bad.is_empty(), "pkilint {tool} {args:?} found errors:\n{}", bad.join("\n"));
}

/// A running `custos serve` on a loopback port, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
}

impl Server {
    /// Starts `custos serve --listen 127.0.0.1:0` and waits for its address.
    pub fn start(env: &Env) -> Server {
        Server::start_with(env, &[])
    }

    /// Starts `custos GLOBAL_ARGS serve --listen 127.0.0.1:0` (e.g. `--database URL`).
    pub fn start_with(env: &Env, global: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = env
            .command()
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("custos listening on http://")
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh loopback connection: (status, head, body).
pub fn http(addr: &str, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(ct) = content_type {
        req += &format!("Content-Type: {ct}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).expect("status").parse().expect("code");
    (status, head, buf[split + 4..].to_vec())
}

/// Asks an OCSP responder about one certificate with openssl; returns what openssl printed.
pub fn ocsp(url: &str, issuer: &Path, cert: &Path, root: &Path) -> String {
    let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    sh("openssl", &["ocsp", "-issuer", &p(issuer), "-cert", &p(cert), "-url", url, "-CAfile", &p(root)])
}

/// Polls the responder with openssl until it says `status` (`good`, `revoked`)
/// for `cert`; fails after `limit`. Returns how long it took.
pub fn wait_for_ocsp(
    url: &str,
    issuer: &Path,
    cert: &Path,
    root: &Path,
    status: &str,
    limit: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let said = ocsp(url, issuer, cert, root);
        if said.contains(&format!(": {status}")) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no `{status}` from {url} after {limit:?}: {said}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `custos serve` with its TLS listener (a server certificate for 127.0.0.1
/// issued by the custos itself), for the API.
pub struct TlsServer {
    pub server: Server,
    /// `127.0.0.1:PORT` of the TLS listener.
    pub tls_addr: String,
    /// The root CA that the listener's certificate chains to.
    pub root: PathBuf,
    /// `127.0.0.1:PORT` of the separate `/metrics` listener, if the configuration has one.
    pub metrics_addr: Option<String>,
}

impl TlsServer {
    /// Issues the listener's certificate (tenant `custos-tls`, connection
    /// `listener`, made if missing) and starts `serve` with it; `global` as
    /// for [`Server::start_with`].
    pub fn start(env: &Env, global: &[&str]) -> TlsServer {
        TlsServer::launch(env, global, std::process::Stdio::inherit(), false, &[])
    }

    /// As [`TlsServer::start`], with the server's stderr (its log) going to
    /// `stderr`, and, with `metrics`, the address of the metrics listener
    /// (`serve.metrics_listen` in the configuration) read from its output;
    /// `vars` are set in the server's environment.
    pub fn launch(
        env: &Env,
        global: &[&str],
        stderr: std::process::Stdio,
        metrics: bool,
        vars: &[(&str, &str)],
    ) -> TlsServer {
        // A second server on the same custos finds them made.
        let _ = env.run(&[global, &["tenant", "add", "custos-tls"]].concat());
        let _ = env.run(
            &[
                global,
                &["connection", "add", "custos-tls", "listener", "--profile", "server", "--allow-san", "127.0.0.1"],
            ]
            .concat(),
        );
        let out = env.path("tls-listener");
        let _ = std::fs::remove_dir_all(&out);
        env.ok(&[
            global,
            &["issue", "custos-tls", "listener", "--san", "127.0.0.1", "--out", out.to_str().expect("p")],
        ]
        .concat());
        let (root, issuing) = env.split_chain(&out.join("chain.pem"));
        let full = env.path("tls-full.pem");
        std::fs::write(
            &full,
            [std::fs::read(out.join("cert.pem")).expect("r"), std::fs::read(&issuing).expect("r")].concat(),
        )
        .expect("w");
        use std::io::BufRead;
        let mut child = env
            .command()
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .args(["--tls-cert", full.to_str().expect("p"), "--tls-key", out.join("key.pem").to_str().expect("p")])
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn serve");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let plain = lines.next().expect("plain line").expect("read");
        let secure = lines.next().expect("tls line").expect("read");
        let addr = plain.trim().strip_prefix("custos listening on http://").expect("http address").to_string();
        let tls_addr = secure.trim().strip_prefix("custos listening on https://").expect("https address").to_string();
        let metrics_addr = metrics.then(|| {
            let line = lines.next().expect("metrics line").expect("read");
            line.trim()
                .strip_prefix("custos metrics on http://")
                .and_then(|a| a.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
                .to_string()
        });
        TlsServer { server: Server { child, addr }, tls_addr, root, metrics_addr }
    }

    /// One API request with curl (verifying the listener against the root):
    /// (status, body). `token` goes in `Authorization: Bearer`.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, String) {
        self.curl(method, path, token, body, &[])
    }

    /// As [`TlsServer::api`], with extra curl arguments (a client certificate).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
        extra: &[&str],
    ) -> (u16, String) {
        let url = format!("https://{}{path}", self.tls_addr);
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "-X", method, "--cacert", self.root.to_str().expect("p")]);
        c.args(["-w", "\n%{http_code}", &url]).args(extra);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
        }
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {method} {path}: {text} {}", String::from_utf8_lossy(&out.stderr)));
        (status, body.to_string())
    }
}
