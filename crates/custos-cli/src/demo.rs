//! `custos demo incident`: the whole story in one command, in a throwaway
//! data directory: tenants and connections, a stolen issuing-CA key,
//! declare, execute, OCSP (asked with openssl) answering `revoked` for an old
//! certificate and `good` for its replacement, and the report.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use custos_ca::incident::{Declaration, Scope};
use custos_ca::{Ca, CertificateRecord, ConnectionOptions, IssueRequest, KeyAlgorithm, KeySource, Principal};
use custos_pki::{Profile, Reason, Serial};

use crate::CliError;

fn io(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

/// A `custos serve` child on a loopback port, killed on drop.
struct ServeChild(std::process::Child);

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo with `tenants` tenants of two connections each; keeps the directory if `keep` is given.
pub async fn incident(tenants: usize, keep: Option<PathBuf>) -> Result<(), CliError> {
    let temp = tempfile::tempdir().map_err(|e| CliError::Output(format!("temporary directory: {e}")))?;
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let data = dir.join("data");
    let passphrase = custos_ca::random_password()?;
    println!("== a throwaway custos in {}", data.display());
    let config = custos_node::Config { data_dir: data.clone(), ..custos_node::Config::default() };
    let me = Principal::local();
    let ca = custos_node::init(&config, passphrase.as_bytes(), &me).await?;
    let (old, issued) = populate(&ca, &me, tenants).await?;
    let view = steal_and_replace(&ca, &me, &dir, tenants, issued).await?;
    let files = pem_files(&ca, &me, &dir, &view.id, &old).await?;
    // The server below opens the database itself.
    drop(ca);
    ask_ocsp(&data, passphrase.as_str(), &old, &files)?;
    acknowledge_and_report(&config, passphrase.as_str(), &me, &view.id, &old, &dir).await
}

/// Tenants with two connections each, each with a client certificate from
/// issuing-1; returns the first certificate (the one followed through the
/// story) and how many were issued.
async fn populate(ca: &Ca, me: &Principal, tenants: usize) -> Result<(CertificateRecord, usize), CliError> {
    let options = ConnectionOptions {
        profile: Profile::Client,
        allowed_sans: vec![],
        key_algorithm: KeyAlgorithm::EcdsaP256,
        validity_days: None,
    };
    let mut requests = Vec::new();
    for t in 0..tenants {
        let tenant = format!("customer-{t:03}");
        ca.add_tenant(me, &tenant).await?;
        for connection in ["mail-sync", "calendar-sync"] {
            ca.add_connection(me, &tenant, connection, &options).await?;
            requests.push(IssueRequest {
                tenant: tenant.clone(),
                connection: connection.into(),
                profile: None,
                sans: vec![],
                validity_secs: None,
                key: KeySource::Generate(None),
                request_key: None,
            });
        }
    }
    let mut first = None;
    let issued = ca
        .issue_many(me, requests, |batch| {
            if first.is_none() {
                first = batch.into_iter().next().map(|i| i.record);
            }
        })
        .await?;
    let old = first.ok_or_else(|| CliError::Usage("the demo needs at least one tenant".into()))?;
    Ok((old, issued))
}

/// The stolen key: declare the incident on issuing-1 and execute it.
async fn steal_and_replace(
    ca: &Ca,
    me: &Principal,
    dir: &Path,
    tenants: usize,
    issued: usize,
) -> Result<custos_ca::incident::IncidentView, CliError> {
    println!("== {tenants} customer tenants, {issued} connections, each with a client certificate from issuing-1");
    println!("   the vendor's issuing CA key is stolen. One command finds everyone affected:\n");

    let view = ca
        .declare_incident(
            me,
            &Declaration {
                scope: Scope::Issuer("issuing-1".into()),
                reason: Reason::KeyCompromise,
                since: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)),
                note: "demo: issuing CA key found on a paste site".into(),
            },
        )
        .await?;
    println!(
        "$ custos incident declare --compromised issuer:issuing-1\n   {}: {} certificates on {} connections of {} tenants affected",
        view.id, view.affected_certificates, view.affected_connections, view.affected_tenants
    );
    let summary = ca.execute_incident(me, &view.id, &dir.join("replacements.jsonl"), &|_| {}).await?;
    println!(
        "$ custos incident execute {} --yes\n   new CA {}; {} revoked in {:.2}s; {} replacements issued in {:.2}s",
        view.id,
        summary.new_issuers.join(", "),
        summary.revoked,
        summary.seconds_to_revoked,
        summary.replaced,
        summary.seconds_to_replaced
    );
    Ok(view)
}

/// The certificates openssl needs, as PEM files in `dir`.
struct PemFiles {
    root: PathBuf,
    old_ca: PathBuf,
    new_ca: PathBuf,
    old: PathBuf,
    new: PathBuf,
}

/// Writes the root, both issuing CAs, the old certificate and its replacement.
async fn pem_files(
    ca: &Ca,
    me: &Principal,
    dir: &Path,
    incident: &str,
    old: &CertificateRecord,
) -> Result<PemFiles, CliError> {
    // Ask a running server, with openssl, about the old certificate and its replacement.
    let connections = ca.incident_status(me, incident).await?.connections;
    let replacement = connections
        .iter()
        .find(|c| c.tenant == old.tenant && c.connection == old.connection)
        .and_then(|c| c.replacement.clone())
        .ok_or_else(|| CliError::Output("no replacement recorded".into()))?;
    let replacement: Serial = replacement.parse().map_err(custos_ca::CaError::from)?;
    let new = ca.certificate(me, &replacement).await?;
    let issuers = ca.issuers(me).await?;
    let pem = |name: &str, der: &[u8]| -> Result<PathBuf, CliError> {
        let path = dir.join(name);
        std::fs::write(&path, custos_pki::certificate_pem(der)).map_err(io(&path))?;
        Ok(path)
    };
    let find = |id: &str| issuers.iter().find(|i| i.id == id).map(|i| i.cert_der.clone()).unwrap_or_default();
    let root = pem("root.pem", &find("root-1"))?;
    let old_ca = pem("issuing-1.pem", &find("issuing-1"))?;
    let new_ca = pem(&format!("{}.pem", new.issuer), &find(&new.issuer))?;
    let old_pem = pem("old.pem", &old.der)?;
    let new_pem = pem("new.pem", &new.der)?;
    Ok(PemFiles { root, old_ca, new_ca, old: old_pem, new: new_pem })
}

/// Asks a running `custos serve`, with openssl, about the old certificate and its replacement.
fn ask_ocsp(data: &Path, passphrase: &str, old: &CertificateRecord, files: &PemFiles) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Output(e.to_string()))?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CUSTOS_DATA", data)
        .env("CUSTOS_PASSPHRASE", passphrase)
        .env("CUSTOS_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::Serve(e.to_string()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line).map_err(|e| CliError::Serve(e.to_string()))?;
    }
    let _server = ServeChild(child);
    let url = format!("{}/ocsp", line.trim().strip_prefix("custos listening on ").unwrap_or("http://127.0.0.1:8080"));
    println!("\n== relying parties ask OCSP ({url}) with openssl:");
    for (what, cert, issuer) in
        [("old certificate", &files.old, &files.old_ca), ("its replacement", &files.new, &files.new_ca)]
    {
        let out = Command::new("openssl")
            .args(["ocsp", "-issuer"])
            .arg(issuer)
            .arg("-cert")
            .arg(cert)
            .args(["-url", &url, "-CAfile"])
            .arg(&files.root)
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
                let status = text.lines().find(|l| l.contains(".pem:")).unwrap_or("(no answer)").trim().to_string();
                println!("   {what} of {}/{}: {status}", old.tenant, old.connection);
            }
            Err(e) => println!("   (openssl not available: {e})"),
        }
    }
    drop(_server);
    Ok(())
}

/// The first customer acknowledges its replacement; the report.
async fn acknowledge_and_report(
    config: &custos_node::Config,
    passphrase: &str,
    me: &Principal,
    incident: &str,
    old: &CertificateRecord,
    dir: &Path,
) -> Result<(), CliError> {
    let mut ca = custos_node::open(config).await?;
    custos_node::unseal(config, &mut ca, passphrase.as_bytes()).await?;
    // The first customer confirms its new certificate is in place.
    ca.ack_incident(me, incident, &old.tenant, &old.connection).await?;
    let report = ca.incident_report(me, incident).await?;
    println!("\n== the report (custos incident report {incident})");
    for e in &report.timeline {
        println!("   {}  {}", e.time, e.event);
    }
    for (k, v) in &report.counts {
        println!("   {k}: {v}");
    }
    for w in &report.warnings {
        println!("   note: {w}");
    }
    println!(
        "\nreplacement keys: {} (0600). Try `CUSTOS_DATA={} custos incident status {}` with --keep-dir to look around.",
        dir.join("replacements.jsonl").display(),
        config.data_dir.display(),
        incident
    );
    Ok(())
}
