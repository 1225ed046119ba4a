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

/// A throwaway custos (in `keep`, else a temporary directory removed with the
/// returned guard): the guard, its directory, config, passphrase, principal and Ca.
async fn throwaway(
    keep: Option<PathBuf>,
) -> Result<(tempfile::TempDir, PathBuf, custos_node::Config, zeroize::Zeroizing<String>, Principal, Ca), CliError> {
    let temp = tempfile::tempdir().map_err(|e| CliError::Output(format!("temporary directory: {e}")))?;
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let data = dir.join("data");
    let passphrase = custos_ca::random_password()?;
    println!("== a throwaway custos in {}", data.display());
    let config = custos_node::Config { data_dir: data, ..custos_node::Config::default() };
    let me = Principal::local();
    let ca = custos_node::init(&config, passphrase.as_bytes(), &me).await?;
    Ok((temp, dir, config, passphrase, me, ca))
}

/// Runs the demo with `tenants` tenants of two connections each; keeps the directory if `keep` is given.
pub async fn incident(tenants: usize, keep: Option<PathBuf>) -> Result<(), CliError> {
    let (_temp, dir, config, passphrase, me, ca) = throwaway(keep).await?;
    let data = config.data_dir.clone();
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

/// `custos demo incident --custody`: custodied connections with standby keys,
/// a service signing client assertions in a loop (in this process, through
/// custos-ca as the API does), forged sign-ins at a relying party under
/// copied thumbprints, `audit match` naming the targeted tenants, and the
/// incident switching their connections to the standby keys while the
/// service keeps signing in — no key file, no failed sign-in.
pub async fn custody(tenants: usize, keep: Option<PathBuf>) -> Result<(), CliError> {
    use custos_ca::custody::{AssertionRequest, CustodyOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if tenants < 2 {
        return Err(CliError::Usage("the custody demo needs at least 2 tenants".into()));
    }
    let (_temp, dir, _config, _passphrase, me, ca) = throwaway(keep).await?;
    let ca = Arc::new(ca);
    let app = "6731de76-14a6-49ae-97bc-6eba6914391e";
    let aud = |t: &str| format!("https://login.microsoftonline.example/{t}/oauth2/v2.0/token");
    let options = ConnectionOptions {
        profile: Profile::Client,
        allowed_sans: vec![],
        key_algorithm: KeyAlgorithm::Rsa2048,
        validity_days: None,
    };
    let custody = CustodyOptions { algorithm: KeyAlgorithm::Rsa2048, standby: true, sans: vec![], validity_secs: None };
    let mut names = Vec::new();
    let mut active_keys = Vec::new();
    for t in 0..tenants {
        let tenant = format!("customer-{t:03}");
        ca.add_tenant(&me, &tenant).await?;
        let keys = ca.add_custody(&me, &tenant, "mail-sync", Some(&options), &custody).await?;
        ca.set_signing_policy(&me, &tenant, "mail-sync", vec![aud(&tenant)], vec![app.into()]).await?;
        active_keys.push((keys[0].key_id.clone(), keys[0].thumbprint_sha256.clone()));
        names.push(tenant);
    }
    println!(
        "$ custos connection add customer-NNN mail-sync --custody --key-algorithm rsa2048   (x{tenants})\n   \
         {tenants} tenants, each with an active and a standby RSA key in the key store; both certificates\n   \
         are registered at the relying party. No private key file exists anywhere."
    );

    // The vendor's service: one assertion after another, round robin over the tenants.
    let stop = Arc::new(AtomicBool::new(false));
    let service = {
        let (ca, stop, names) = (ca.clone(), stop.clone(), names.clone());
        tokio::spawn(async move {
            let mut signins = Vec::new();
            let mut failures = Vec::new();
            // Bounded: at most 100 000 assertions, or until told to stop.
            for i in 0..100_000usize {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let tenant = &names[i % names.len()];
                let who = Principal::Tenant {
                    account: "tok_service".into(),
                    tenant: tenant.clone(),
                    connection: Some("mail-sync".into()),
                };
                let request = AssertionRequest {
                    aud: aud(tenant),
                    iss: app.into(),
                    sub: app.into(),
                    alg: None,
                    lifetime_secs: None,
                };
                match ca.sign_assertion(&who, tenant, "mail-sync", &request, Some("198.51.100.10")).await {
                    Ok(a) => signins.push((tenant.clone(), a)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (signins, failures)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // The relying party's sign-in log: the service's sign-ins, and the attacker's.
    let targeted = [names[1].clone(), names[names.len() - 1].clone()];
    let forged: Vec<serde_json::Value> = targeted
        .iter()
        .map(|t| {
            let i = names.iter().position(|n| n == t).unwrap_or(0);
            serde_json::json!({"time": custos_ca::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()),
                "thumbprint": active_keys[i].1, "audience": aud(t), "client_ip": "203.0.113.66",
                "jti": "00000000-4000-8000-8000-00000000beef", "tenant": t})
        })
        .collect();
    println!(
        "\n== an attacker signs in to {} and {} with assertions custos never made,\n   under the certificates' copied thumbprints",
        targeted[0], targeted[1]
    );

    // The incident on the targeted tenants' keys, while the service keeps signing in.
    let keys_file = dir.join("replacements.jsonl");
    for t in &targeted {
        let i = names.iter().position(|n| n == t).unwrap_or(0);
        let view = ca
            .declare_incident(
                &me,
                &Declaration {
                    scope: Scope::Key(active_keys[i].0.clone()),
                    reason: Reason::KeyCompromise,
                    since: None,
                    note: format!("demo: sign-ins to {t} that the service did not make"),
                },
            )
            .await?;
        let summary = ca.execute_incident(&me, &view.id, &keys_file, &|_| {}).await?;
        println!(
            "$ custos incident declare --compromised key:{} && custos incident execute {}\n   \
             {t}: signing switched to the standby, old certificate revoked and its key destroyed,\n   \
             a new standby certified ({} connection replaced in {:.2}s)",
            active_keys[i].0, view.id, summary.replaced, summary.seconds_to_replaced
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let (signins, failures) = service.await.map_err(|e| CliError::Output(format!("the service task: {e}")))?;
    let switched: usize = signins
        .iter()
        .filter(|(t, a)| targeted.contains(t) && !active_keys.iter().any(|(k, _)| k == &a.key_id))
        .count();
    println!(
        "\n== the service signed {} assertions throughout, {} failed; {switched} were signed by the standby keys\n   \
         replacement key file written: {}",
        signins.len(),
        failures.len(),
        if keys_file.exists() { "yes" } else { "no" }
    );

    // The export, matched.
    let mut export = String::new();
    for (tenant, a) in &signins {
        let thumbprint = ca
            .custody(&me, tenant, "mail-sync")
            .await?
            .into_iter()
            .find(|k| k.key_id == a.key_id)
            .map(|k| k.thumbprint_sha256)
            .unwrap_or_default();
        let record = serde_json::json!({"time": custos_ca::rfc3339(a.iat + 1), "thumbprint": thumbprint,
            "audience": aud(tenant), "client_ip": "198.51.100.10", "tenant": tenant});
        export.push_str(&format!("{record}\n"));
    }
    for f in &forged {
        export.push_str(&format!("{f}\n"));
    }
    let path = dir.join("signins.jsonl");
    std::fs::write(&path, &export).map_err(io(&path))?;
    let records = custos_ca::signins::parse_signins(export.as_bytes()).map_err(|e| CliError::Usage(e.to_string()))?;
    let report = ca.match_signins(&me, records, false).await?;
    println!(
        "\n$ custos audit match {}\n   {} sign-ins: {} signed by custos, {} not; targeted tenants: {}",
        path.display(),
        report.matched.len() + report.unmatched.len(),
        report.matched.len(),
        report.unmatched.len(),
        report.targeted_tenants.join(", ")
    );
    for u in &report.unmatched {
        println!("   line {}: {} — {}", u.line, u.tenant.as_deref().unwrap_or("(unknown)"), u.reason);
    }
    if !failures.is_empty() {
        return Err(CliError::Output(format!("{} sign-ins failed: {}", failures.len(), failures[0])));
    }
    Ok(())
}
