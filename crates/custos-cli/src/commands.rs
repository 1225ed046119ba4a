//! One function per command: parse arguments, call custos-ca, render.

use std::io::Write;
use std::path::{Path, PathBuf};

use custos_ca::{CertificateView, Issued, IssuerView, ListFilter, StatusFilter, policy::parse_duration};
use custos_pki::{Reason, Serial};
use serde_json::json;

use crate::bulk::request;
use crate::inventory::print_issuers;
use crate::output::{json, table, write_public};
use crate::session::{Session, checkpoint, open, open_unsealed, unseal};
use crate::{
    CaCommand, Cli, CliError, Command, ConfigCommand, CrlArgs, IssueArgs, ListArgs, RevokeArgs, ServeArgs, ShowArgs,
    passphrase,
};

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    // Servers and the demo print no result to render, and `ca export` prints
    // the certificates themselves: say so rather than ignore --json.
    let unrendered = matches!(
        &cli.command,
        Command::Serve(_)
            | Command::Demo(_)
            | Command::Witness(crate::WitnessCommand::Serve { .. })
            | Command::Ca(CaCommand::Export { .. })
    );
    if cli.json && unrendered {
        return Err(CliError::Usage(
            "--json: this command prints no result to render as JSON (ca export writes PEM or DER; servers log: \
             for JSON log lines use --log-format json)"
                .into(),
        ));
    }
    match &cli.command {
        Command::Init(_) => init(&cli).await,
        Command::Tenant(command) => crate::inventory::tenant(&cli, command).await,
        Command::Connection(command) => crate::inventory::connection(&cli, command).await,
        Command::Keys(command) => crate::inventory::keys(&cli, command).await,
        Command::Issue(args) => issue(&cli, args).await,
        Command::List(args) => list(&cli, args).await,
        Command::Show(args) => show(&cli, args).await,
        Command::Ca(CaCommand::Export { id, pem: _, der, chain, out }) => {
            ca_export(&cli, id, *der, *chain, out.as_deref()).await
        }
        Command::Ca(CaCommand::List) => crate::inventory::ca_list(&cli).await,
        Command::Config(ConfigCommand::Show) => config_show(&cli),
        Command::Backup { file } => crate::storage::backup(&cli, file).await,
        Command::Restore { file } => crate::storage::restore(&cli, file).await,
        Command::Doctor => crate::storage::doctor(&cli).await,
        Command::Token(command) => crate::access::token(&cli, command).await,
        Command::Acme(command) => crate::access::acme(&cli, command).await,
        Command::Operator(command) => crate::access::operator(&cli, command).await,
        Command::Approve { id } => crate::access::approve(&cli, id).await,
        Command::Refuse { id } => crate::access::refuse(&cli, id).await,
        Command::Approvals => crate::access::approvals(&cli).await,
        Command::Witness(command) => crate::witness::run(&cli, command).await,
        Command::Serve(args) => serve(&cli, args).await,
        Command::Revoke(args) => revoke(&cli, args).await,
        Command::Crl(args) => crl(&cli, args).await,
        Command::Audit(command) => crate::audit::run(&cli, command).await,
        Command::Incident(command) => crate::incident::run(&cli, command).await,
        Command::Demo(crate::DemoCommand::Incident { tenants, keep_dir, custody: false }) => {
            crate::demo::incident(*tenants, keep_dir.clone()).await
        }
        Command::Demo(crate::DemoCommand::Incident { tenants, keep_dir, custody: true }) => {
            crate::demo::custody(*tenants, keep_dir.clone()).await
        }
    }
}

async fn init(cli: &Cli) -> Result<(), CliError> {
    let config = crate::session::config(cli)?.config;
    // Refuse before asking for a passphrase; the store refuses again atomically.
    if custos_node::exists(&config).await? {
        return Err(custos_node::NodeError::AlreadyInitialized { location: custos_node::location(&config) }.into());
    }
    // A token's PIN comes from its pin-source; only the soft store needs a passphrase.
    let pw = match config.key_store.backend {
        custos_node::config::Backend::Soft => {
            passphrase::resolve(cli.passphrase_file.as_deref(), &config.data_dir, true)?.0
        }
        custos_node::config::Backend::Pkcs11 => zeroize::Zeroizing::new(Vec::new()),
    };
    let me = custos_ca::Principal::local();
    let ca = custos_node::init(&config, &pw, &me).await?;
    let s = Session { ca, me, config };
    checkpoint(&s).await;
    print_init(cli, &s).await
}

async fn print_init(cli: &Cli, s: &Session) -> Result<(), CliError> {
    let views: Vec<IssuerView> = s.ca.issuers(&s.me).await?.iter().map(IssuerView::from).collect();
    let location = custos_node::location(&s.config);
    if cli.json {
        return json(
            &json!({"data_dir": s.config.data_dir, "location": location, "base_url": s.ca.base_url(), "issuers": views}),
        );
    }
    println!("initialized custos in {location} (base URL {})", s.ca.base_url());
    print_issuers(&views);
    Ok(())
}

/// `custos ca export`: an issuer's certificate, and with `chain` its parents.
async fn ca_export(cli: &Cli, id: &str, der: bool, chain: bool, out: Option<&Path>) -> Result<(), CliError> {
    let s = open(cli).await?;
    let mut certificates = vec![s.ca.issuer(&s.me, id).await?];
    // Bounded: a chain is root, issuing CA and at most a few intermediates; a
    // parent loop in a damaged database must not loop forever.
    for _ in 0..if chain { 8 } else { 0 } {
        let Some(parent) = certificates.last().and_then(|c| c.parent.clone()) else { break };
        certificates.push(s.ca.issuer(&s.me, &parent).await?);
    }
    let bytes = if der {
        certificates[0].cert_der.clone()
    } else {
        certificates.iter().map(|c| custos_pki::certificate_pem(&c.cert_der)).collect::<String>().into_bytes()
    };
    match out {
        Some(path) => {
            write_public(path, &bytes)?;
            eprintln!("wrote {} certificate(s) of {id} to {}", certificates.len(), path.display());
            Ok(())
        }
        None => std::io::stdout().write_all(&bytes).map_err(|e| CliError::Output(e.to_string())),
    }
}

/// `custos config show`: every setting, its value and its origin.
fn config_show(cli: &Cli) -> Result<(), CliError> {
    let loaded = crate::session::config(cli)?;
    let entries = loaded.entries();
    if cli.json {
        let list: Vec<serde_json::Value> =
            entries.iter().map(|(k, v, o)| json!({"key": k, "value": v, "origin": o})).collect();
        return json(&json!({"file": loaded.file, "settings": list}));
    }
    match &loaded.file {
        Some(f) => println!("configuration file: {}", f.display()),
        None => println!("configuration file: none (defaults, environment and flags only)"),
    }
    let rows: Vec<Vec<String>> = entries.into_iter().map(|(k, v, o)| vec![k, v, o.to_string()]).collect();
    print!("{}", table(&["SETTING", "VALUE", "FROM"], &rows));
    Ok(())
}

async fn issue(cli: &Cli, args: &IssueArgs) -> Result<(), CliError> {
    if let Some(from) = &args.from {
        return crate::bulk::issue_bulk(cli, args, from).await;
    }
    let (Some(tenant), Some(connection)) = (&args.tenant, &args.connection) else {
        return Err(CliError::Usage("issue needs TENANT and CONNECTION, or --from FILE".into()));
    };
    let csr = match &args.csr {
        Some(path) => Some(std::fs::read(path).map_err(|e| CliError::Io { path: path.clone(), source: e })?),
        None => None,
    };
    let generated = csr.is_none();
    if let Some(mut api) = crate::remote::Api::from_cli(cli).await? {
        let Some(csr) = csr else {
            return Err(CliError::Usage("over --server, issue takes --csr (the API never hands out a key)".into()));
        };
        if args.key_algorithm.is_some() {
            return Err(CliError::Usage("--key-algorithm is for keys custos makes; a CSR brings its own".into()));
        }
        let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{tenant}-{connection}")));
        let outputs = Outputs::create(&out, false)?;
        let body = json!({"csr": String::from_utf8_lossy(&csr), "san": args.san, "validity": args.validity,
                          "profile": args.profile});
        let issued = match api.issue(tenant, connection, body).await {
            Ok(i) => i,
            Err(e) => {
                outputs.discard();
                return Err(e);
            }
        };
        let names = outputs.write_pems(&issued.certificate_pem, &issued.chain_pem)?;
        let view = issued.certificate;
        if cli.json {
            return json(&json!({
                "serial": view.serial, "tenant": view.tenant, "connection": view.connection, "profile": view.profile,
                "status": view.status, "not_after": view.not_after, "out": out, "files": names,
                "p12_password": null,
            }));
        }
        return crate::output::print_lines(&[
            format!(
                "issued {} certificate {} to {}/{} (valid until {})",
                view.profile, view.serial, view.tenant, view.connection, view.not_after
            ),
            format!("wrote {} to {}", names.join(", "), out.display()),
        ]);
    }
    let req = request(
        tenant.clone(),
        connection.clone(),
        csr,
        args.profile.as_deref(),
        args.san.clone(),
        args.validity.as_deref(),
        args.key_algorithm.as_deref(),
    )?;
    // Every output file is created (empty, O_EXCL, with its final mode)
    // before anything is issued: a name that exists (a file, or a symlink,
    // even a dangling one) refuses the command before the certificate exists,
    // and a generated key always has somewhere to go. A directory made here is
    // removed again if issuance fails.
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{tenant}-{connection}")));
    let outputs = Outputs::create(&out, generated)?;
    let issued = match open_unsealed(cli).await {
        Ok(s) => match s.ca.issue(&s.me, req).await {
            Ok(issued) => {
                checkpoint(&s).await;
                (s, issued)
            }
            Err(e) => {
                outputs.discard();
                return Err(e.into());
            }
        },
        Err(e) => {
            outputs.discard();
            return Err(e);
        }
    };
    let (s, issued) = issued;
    let files = match outputs.write(&issued) {
        Ok(files) => files,
        Err(e) => {
            // The certificate is committed but its key could not be saved: it
            // must not stay valid with a key nobody has.
            let serial: Serial = issued.record.serial.parse().map_err(custos_ca::CaError::from)?;
            let revoked = s.ca.revoke(&s.me, &serial, Reason::Unspecified, None).await;
            eprintln!(
                "error: writing the outputs failed after issuance; certificate {} {}",
                issued.record.serial,
                if revoked.is_ok() { "was revoked" } else { "could NOT be revoked: revoke it by hand" }
            );
            return Err(e);
        }
    };
    let view = CertificateView::new(&issued.record, time::OffsetDateTime::now_utc().unix_timestamp());
    if cli.json {
        return json(&json!({
            "serial": view.serial, "tenant": view.tenant, "connection": view.connection, "profile": view.profile,
            "status": view.status, "not_after": view.not_after, "out": out, "files": files.names,
            "p12_password": files.p12_password.as_deref().map(|p| p.as_str()),
        }));
    }
    // The one-time password first: a reader that stops early (`| head -1`)
    // still gets it, and a closed pipe ends the command quietly, not in a panic.
    let mut lines = Vec::new();
    if let Some(pw) = &files.p12_password {
        lines.push(format!("PKCS#12 password (shown once, not stored): {}", pw.as_str()));
    }
    lines.push(format!(
        "issued {} certificate {} to {}/{} (valid until {})",
        view.profile, view.serial, view.tenant, view.connection, view.not_after
    ));
    lines.push(format!("wrote {} to {}", files.names.join(", "), out.display()));
    if files.p12_password.is_some() {
        lines.push("the private key is not kept by custos: store key.pem / bundle.p12 safely".into());
    }
    crate::output::print_lines(&lines)
}

/// The files `issue` writes, created before issuance and filled after.
struct Outputs {
    dir: PathBuf,
    made_dir: bool,
    files: Vec<(&'static str, std::fs::File)>,
}

impl Outputs {
    /// Creates the directory (owner-only, if it does not exist) and every file, or nothing.
    fn create(dir: &Path, generated: bool) -> Result<Outputs, CliError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CliError::Io { path, source }
        };
        let made_dir = std::fs::symlink_metadata(dir).is_err();
        if made_dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        }
        let mut outputs = Outputs { dir: dir.to_path_buf(), made_dir, files: Vec::new() };
        let names: &[(&'static str, u32)] = if generated {
            &[("cert.pem", 0o644), ("chain.pem", 0o644), ("key.pem", 0o600), ("bundle.p12", 0o600)]
        } else {
            &[("cert.pem", 0o644), ("chain.pem", 0o644)]
        };
        for (name, mode) in names {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.join(name);
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(*mode).open(&path) {
                Ok(f) => outputs.files.push((name, f)),
                Err(e) => {
                    let exists = e.kind() == std::io::ErrorKind::AlreadyExists;
                    outputs.discard();
                    return Err(if exists {
                        CliError::Usage(format!("{} exists; choose another --out directory", path.display()))
                    } else {
                        io(&path)(e)
                    });
                }
            }
        }
        Ok(outputs)
    }

    /// Removes what `create` made (nothing was issued).
    fn discard(self) {
        for (name, _) in &self.files {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        if self.made_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// Writes a certificate and chain the API answered (PEM), each synced.
    fn write_pems(self, certificate: &str, chain: &str) -> Result<Vec<String>, CliError> {
        let mut names = Vec::new();
        for (name, mut file) in self.files {
            let text = match name {
                "cert.pem" => certificate,
                "chain.pem" => chain,
                _ => continue,
            };
            let path = self.dir.join(name);
            let io = |source| CliError::Io { path: path.clone(), source };
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            names.push(name.to_string());
        }
        Ok(names)
    }

    /// Writes the certificate, chain and (for a generated key) key and PKCS#12 bundle, each synced.
    fn write(self, issued: &Issued) -> Result<Written, CliError> {
        let mut p12_password = None;
        let mut names = Vec::new();
        for (name, mut file) in self.files {
            let bytes: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(match name {
                "cert.pem" => custos_pki::certificate_pem(&issued.record.der).into_bytes(),
                "chain.pem" => {
                    issued.chain.iter().map(|d| custos_pki::certificate_pem(d)).collect::<String>().into_bytes()
                }
                "key.pem" => match &issued.key {
                    Some(key) => key.pkcs8_pem().as_bytes().to_vec(),
                    None => continue,
                },
                _ => match &issued.key {
                    Some(key) => {
                        let pw = custos_ca::random_password()?;
                        let chain: Vec<&[u8]> = issued.chain.iter().map(Vec::as_slice).collect();
                        let alias = format!("{}/{}", issued.record.tenant, issued.record.connection);
                        let p12 =
                            key.pkcs12(&alias, &issued.record.der, &chain, &pw).map_err(custos_ca::CaError::from)?;
                        p12_password = Some(pw);
                        p12
                    }
                    None => continue,
                },
            });
            let path = self.dir.join(name);
            let io = |source| CliError::Io { path: path.clone(), source };
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            names.push(name.to_string());
        }
        Ok(Written { names, p12_password })
    }
}

struct Written {
    names: Vec<String>,
    p12_password: Option<zeroize::Zeroizing<String>>,
}

async fn list(cli: &Cli, args: &ListArgs) -> Result<(), CliError> {
    let status = match args.status.as_deref() {
        None => None,
        Some("valid") => Some(StatusFilter::Valid),
        Some("revoked") => Some(StatusFilter::Revoked),
        Some("expired") => Some(StatusFilter::Expired),
        Some(other) => {
            return Err(CliError::Usage(format!("--status {other:?}: expected valid, revoked or expired")));
        }
    };
    if args.connection.is_some() && args.tenant.is_none() {
        return Err(CliError::Usage("--connection needs --tenant".into()));
    }
    if let Some(mut api) = crate::remote::Api::from_cli(cli).await? {
        if args.issuer.is_some() || args.limit.is_some() {
            return Err(CliError::Usage("--issuer and --limit are not offered over --server yet".into()));
        }
        let query: Vec<(&str, String)> = [
            ("tenant", args.tenant.clone()),
            ("connection", args.connection.clone()),
            ("status", args.status.clone()),
            ("expiring_within", args.expiring.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        return print_list(cli, &api.certificates(&query).await?);
    }
    let s = open(cli).await?;
    let filter = ListFilter {
        tenant: args.tenant.clone(),
        connection: args.connection.clone(),
        issuer: args.issuer.clone(),
        status,
        expiring_within: args.expiring.as_deref().map(parse_duration).transpose()?,
        limit: args.limit,
        ..ListFilter::default()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let views: Vec<CertificateView> =
        s.ca.certificates(&s.me, &filter).await?.iter().map(|c| CertificateView::new(c, now)).collect();
    print_list(cli, &views)
}

/// What `list` prints, local or remote.
fn print_list(cli: &Cli, views: &[CertificateView]) -> Result<(), CliError> {
    if cli.json {
        return json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.serial.clone(),
                v.tenant.clone(),
                v.connection.clone(),
                v.profile.clone(),
                v.status.clone(),
                v.not_after.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["SERIAL", "TENANT", "CONNECTION", "PROFILE", "STATUS", "NOT AFTER"], &rows));
    Ok(())
}

async fn show(cli: &Cli, args: &ShowArgs) -> Result<(), CliError> {
    let serial: Serial = args.serial.parse().map_err(custos_ca::CaError::from)?;
    let view = match crate::remote::Api::from_cli(cli).await? {
        Some(mut api) => match api.certificate(&serial.to_hex(), args.pem).await? {
            Ok(view) => view,
            Err(pem) => {
                print!("{pem}");
                return Ok(());
            }
        },
        None => {
            let s = open(cli).await?;
            let record = s.ca.certificate(&s.me, &serial).await?;
            if args.pem {
                print!("{}", custos_pki::certificate_pem(&record.der));
                return Ok(());
            }
            CertificateView::new(&record, time::OffsetDateTime::now_utc().unix_timestamp())
        }
    };
    if cli.json {
        return json(&view);
    }
    let mut rows = vec![
        vec!["serial".into(), view.serial.clone()],
        vec!["tenant".into(), view.tenant.clone()],
        vec!["connection".into(), view.connection.clone()],
        vec!["profile".into(), view.profile.clone()],
        vec!["status".into(), view.status.clone()],
        vec!["subject".into(), view.subject.clone()],
        vec!["sans".into(), view.sans.join(", ")],
        vec!["issuer".into(), view.issuer.clone()],
        vec!["not before".into(), view.not_before.clone()],
        vec!["not after".into(), view.not_after.clone()],
        vec!["key".into(), format!("{} ({})", view.key_algorithm, view.key_origin)],
        vec!["spki sha-256".into(), view.spki_sha256.clone()],
        vec!["fingerprint".into(), view.fingerprint.clone()],
    ];
    if let Some(r) = &view.revoked_at {
        rows.push(vec!["revoked at".into(), r.clone()]);
        rows.push(vec!["reason".into(), view.revocation_reason.clone().unwrap_or_default()]);
    }
    print!("{}", table(&["FIELD", "VALUE"], &rows));
    Ok(())
}

async fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), CliError> {
    let config = crate::session::config(cli)?.config;
    let me = custos_ca::Principal::local();
    let ca = match custos_node::open(&config).await {
        Ok(ca) => ca,
        Err(custos_node::NodeError::NotInitialized { .. }) if args.dev => {
            let (pw, path) = passphrase::write_dev(&config.data_dir)?;
            let ca = custos_node::init(&config, &pw, &me).await?;
            eprintln!(
                "DEV MODE: initialized {} with a generated passphrase kept in {} (never do this in production)",
                config.data_dir.display(),
                path.display()
            );
            ca
        }
        Err(e) => return Err(e.into()),
    };
    // OCSP responses and CRLs are signed here, so serving needs the keys.
    let mut s = Session { ca, me, config };
    unseal(cli, &mut s).await?;
    let listeners = custos_node::Listeners::bind(&s.config, &s.ca).await?;
    let mut said = format!("custos listening on http://{}\n", listeners.plain_address()?);
    if let Some(addr) = listeners.tls_address() {
        said += &format!("custos listening on https://{addr}\n");
    }
    if let Some(addr) = listeners.metrics_address() {
        said += &format!("custos metrics on http://{addr}/metrics\n");
    }
    if let Some(addr) = listeners.tls_address() {
        said += &format!("custos console on https://{addr}/ui/\n");
    }
    // One write, and a reader that went away (`custos serve | head -1`, a
    // supervisor reading only the first line) does not stop the server.
    let mut out = std::io::stdout();
    if out.write_all(said.as_bytes()).and_then(|()| out.flush()).is_err() {
        tracing::warn!("stdout is closed; serving anyway");
    }
    Ok(custos_node::serve(&s.config, s.ca, listeners).await?)
}

async fn revoke(cli: &Cli, args: &RevokeArgs) -> Result<(), CliError> {
    let reason = Reason::parse_loose(&args.reason).map_err(custos_ca::CaError::from)?;
    let invalidity = match &args.invalidity_date {
        Some(text) => Some(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| CliError::Usage(format!("--invalidity-date {text:?} is not RFC 3339 ({e})")))?,
        ),
        None => None,
    };
    if let Some(mut api) = crate::remote::Api::from_cli(cli).await? {
        let (Some(serial), None, None) = (&args.serial, &args.connection, &args.invalidity_date) else {
            return Err(CliError::Usage(
                "over --server, revoke takes one SERIAL (no --connection or --invalidity-date yet)".into(),
            ));
        };
        let serial: Serial = serial.parse().map_err(custos_ca::CaError::from)?;
        let view = api.revoke(&serial.to_hex(), &reason.to_string()).await?;
        return print_revoked(cli, &[view], reason);
    }
    let s = open(cli).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let revoked = match (&args.serial, &args.connection) {
        (Some(serial), _) => {
            let serial: Serial = serial.parse().map_err(custos_ca::CaError::from)?;
            vec![s.ca.revoke(&s.me, &serial, reason, invalidity).await?]
        }
        (None, Some(conn)) => {
            let (tenant, name) = conn
                .split_once('/')
                .ok_or_else(|| CliError::Usage(format!("--connection {conn:?}: expected TENANT/CONNECTION")))?;
            s.ca.revoke_connection(&s.me, tenant, name, reason, invalidity).await?
        }
        (None, None) => {
            return Err(CliError::Usage("revoke needs a SERIAL or --connection TENANT/CONNECTION".into()));
        }
    };
    let views: Vec<CertificateView> = revoked.iter().map(|c| CertificateView::new(c, now)).collect();
    print_revoked(cli, &views, reason)
}

/// What `revoke` prints, local or remote.
fn print_revoked(cli: &Cli, views: &[CertificateView], reason: Reason) -> Result<(), CliError> {
    if cli.json {
        return json(&views);
    }
    if views.is_empty() {
        println!("nothing to revoke: no valid certificate on that connection");
    }
    for v in views {
        println!("revoked {} ({}/{}) for {}", v.serial, v.tenant, v.connection, reason);
    }
    Ok(())
}

async fn crl(cli: &Cli, args: &CrlArgs) -> Result<(), CliError> {
    let s = open_unsealed(cli).await?;
    let issuer = match &args.issuer {
        Some(i) => i.clone(),
        None => {
            s.ca.issuers(&s.me)
                .await?
                .into_iter()
                .rev()
                .find(|i| i.role == custos_ca::IssuerRole::Issuing && i.status == custos_ca::IssuerStatus::Active)
                .map(|i| i.id)
                .ok_or_else(|| CliError::Usage("no active issuing CA; name one with --issuer".into()))?
        }
    };
    let crl = s.ca.crl(&s.me, &issuer, args.partition).await?;
    checkpoint(&s).await;
    let bytes = if args.pem { custos_pki::to_pem("X509 CRL", &crl.der).into_bytes() } else { crl.der.clone() };
    match &args.out {
        Some(path) => {
            crate::output::replace_public(path, &bytes)?;
            if cli.json {
                return json(&json!({"issuer": crl.issuer, "number": crl.number, "entries": crl.entries,
                                    "this_update": custos_ca::rfc3339(crl.this_update.unix_timestamp()),
                                    "next_update": custos_ca::rfc3339(crl.next_update.unix_timestamp()),
                                    "out": path}));
            }
            eprintln!("wrote CRL #{} of {} ({} entries) to {}", crl.number, crl.issuer, crl.entries, path.display());
        }
        None => std::io::stdout().write_all(&bytes).map_err(|e| CliError::Output(e.to_string()))?,
    }
    Ok(())
}
