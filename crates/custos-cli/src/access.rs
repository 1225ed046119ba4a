//! `custos token ...`, `custos operator ...` and `custos approve`: who may
//! use the API, made, listed and revoked from the CLI, and the second admin's
//! approval.

use custos_ca::access::TokenScope;
use custos_ca::policy::parse_duration;
use serde_json::json;

use crate::output::{json, table, write_private, write_public};
use crate::session::{open, open_unsealed};
use crate::{AcmeCommand, Cli, CliError, OperatorCommand, TokenCommand};

/// `custos acme eab TENANT [--connection C]`.
pub async fn acme(cli: &Cli, command: &AcmeCommand) -> Result<(), CliError> {
    let s = open(cli).await?;
    match command {
        AcmeCommand::Eab { tenant, connection, count } => {
            let lifetime = i64::try_from(s.config.acme.eab_lifetime_s).unwrap_or(i64::MAX);
            if *count == 0 || *count > 10_000 {
                return Err(CliError::Usage(format!("--count {count}: make 1 to 10000 keys at a time")));
            }
            for _ in 0..*count {
                let (kid, key) = s.ca.create_acme_binding(&s.me, tenant, connection.as_deref(), lifetime).await?;
                if cli.json {
                    let line =
                        json!({"kid": kid, "hmac_key": key.as_str(), "tenant": tenant, "connection": connection});
                    println!("{line}");
                    continue;
                }
                eprintln!(
                    "EAB key for {tenant}{}: binds one ACME account until {}; shown once",
                    connection.as_deref().map(|c| format!("/{c}")).unwrap_or_default(),
                    custos_ca::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp() + lifetime),
                );
                println!("kid:      {kid}");
                println!("hmac_key: {}", key.as_str());
            }
            Ok(())
        }
    }
}

/// `custos token create|list|revoke`.
pub async fn token(cli: &Cli, command: &TokenCommand) -> Result<(), CliError> {
    let s = open(cli).await?;
    match command {
        TokenCommand::Create { role, tenant, connection, ttl } => {
            let scope = TokenScope::parse(role, tenant.as_deref(), connection.as_deref())?;
            let ttl = ttl.as_deref().map(parse_duration).transpose()?;
            let made = s.ca.create_token(&s.me, &scope, ttl).await?;
            if cli.json {
                return json(&json!({"id": made.record.id, "token": made.token, "role": made.record.role,
                                    "tenant": made.record.tenant, "connection": made.record.connection,
                                    "expires": made.record.expires_at.map(custos_ca::rfc3339)}));
            }
            eprintln!(
                "token {} ({}{}), expires {}; shown once, custos keeps only its hash:",
                made.record.id,
                made.record.role,
                match (&made.record.tenant, &made.record.connection) {
                    (Some(t), Some(c)) => format!(" of {t}/{c}"),
                    (Some(t), None) => format!(" of {t}"),
                    _ => String::new(),
                },
                made.record.expires_at.map(custos_ca::rfc3339).unwrap_or_else(|| "never".into())
            );
            println!("{}", made.token);
            Ok(())
        }
        TokenCommand::List => {
            let tokens = s.ca.tokens(&s.me).await?;
            if cli.json {
                return json(&tokens);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let scope = match (&t.tenant, &t.connection) {
                        (Some(tn), Some(c)) => format!("{tn}/{c}"),
                        (Some(tn), None) => tn.clone(),
                        _ => "-".into(),
                    };
                    let state = match (t.revoked_at, t.expires_at) {
                        (Some(at), _) => format!("revoked {}", custos_ca::rfc3339(at)),
                        (None, Some(e)) => format!("expires {}", custos_ca::rfc3339(e)),
                        (None, None) => "active".into(),
                    };
                    vec![t.id.clone(), t.role.clone(), scope, state, t.created_by.clone()]
                })
                .collect();
            print!("{}", table(&["ID", "ROLE", "SCOPE", "STATE", "CREATED BY"], &rows));
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            s.ca.revoke_token(&s.me, id).await?;
            if cli.json {
                return json(&json!({"revoked": id}));
            }
            println!("revoked {id}: refused from its next request on");
            Ok(())
        }
    }
}

/// `custos operator add|list|revoke`.
pub async fn operator(cli: &Cli, command: &OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::Add { name, role, csr, out } => {
            let role: custos_ca::Role = role.parse()?;
            let csr = csr
                .as_ref()
                .map(|p| std::fs::read(p).map_err(|source| CliError::Io { path: p.clone(), source }))
                .transpose()?;
            // Refuse before anything is signed: the files must be new.
            let files = ["cert.pem", "ca.pem", "key.pem"].map(|f| out.join(f));
            if let Some(existing) = files.iter().find(|p| std::fs::symlink_metadata(p).is_ok()) {
                return Err(CliError::Usage(format!("{} exists; choose another --out directory", existing.display())));
            }
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(out)
                    .map_err(|source| CliError::Io { path: out.clone(), source })?;
            }
            // Signing with the operators' CA needs the keys.
            let s = open_unsealed(cli).await?;
            // Committed first, then written: a crash in between leaves an
            // operator whose key is lost; revoke it and add it again.
            let made = s.ca.add_operator(&s.me, name, role, csr.as_deref()).await?;
            write_public(&files[0], made.certificate_pem.as_bytes())?;
            write_public(&files[1], made.ca_pem.as_bytes())?;
            if let Some(key) = &made.key_pem {
                write_private(&files[2], key.as_bytes())?;
            }
            if cli.json {
                return json(&json!({"name": made.record.name, "role": made.record.role, "serial": made.record.serial,
                                    "expires": custos_ca::rfc3339(made.record.not_after), "out": out}));
            }
            println!(
                "operator {} ({}) added: {} (serial {}, expires {}){}",
                made.record.name,
                made.record.role,
                files[0].display(),
                made.record.serial,
                custos_ca::rfc3339(made.record.not_after),
                if made.key_pem.is_some() {
                    format!("; its key is {} (0600), kept nowhere else", files[2].display())
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        OperatorCommand::List => {
            let s = open(cli).await?;
            let operators = s.ca.operators(&s.me).await?;
            if cli.json {
                return json(&operators);
            }
            let rows: Vec<Vec<String>> = operators
                .iter()
                .map(|o| {
                    let state = match o.revoked_at {
                        Some(at) => format!("revoked {}", custos_ca::rfc3339(at)),
                        None => format!("expires {}", custos_ca::rfc3339(o.not_after)),
                    };
                    vec![o.name.clone(), o.role.clone(), o.serial.clone(), state]
                })
                .collect();
            print!("{}", table(&["NAME", "ROLE", "SERIAL", "STATE"], &rows));
            Ok(())
        }
        OperatorCommand::Revoke { name } => {
            let s = open(cli).await?;
            s.ca.revoke_operator(&s.me, name).await?;
            if cli.json {
                return json(&json!({"revoked": name}));
            }
            println!("revoked operator {name}: refused from its next request on");
            Ok(())
        }
    }
}

/// `custos approve REQ-ID`.
pub async fn approve(cli: &Cli, id: &str) -> Result<(), CliError> {
    let s = open(cli).await?;
    let a = s.ca.approve(&s.me, id).await?;
    if cli.json {
        return json(&a);
    }
    println!(
        "approved {} ({} {}), requested by {}; it stands until {}",
        a.id,
        a.action,
        a.object,
        a.requested_by,
        custos_ca::rfc3339(a.expires_at)
    );
    Ok(())
}

/// `custos refuse ID`.
pub async fn refuse(cli: &Cli, id: &str) -> Result<(), CliError> {
    let s = open(cli).await?;
    let a = s.ca.refuse(&s.me, id).await?;
    if cli.json {
        return json(&a);
    }
    println!(
        "refused {} ({} {}), requested by {}; it can no longer be approved",
        a.id, a.action, a.object, a.requested_by
    );
    Ok(())
}

/// `custos approvals`.
pub async fn approvals(cli: &Cli) -> Result<(), CliError> {
    let s = open(cli).await?;
    let list = s.ca.approvals(&s.me).await?;
    if cli.json {
        return json(&list);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let state = match (&a.approved_by, &a.refused_by, a.expires_at > now) {
                (_, Some(by), _) => format!("refused by {by}"),
                (Some(by), None, true) => format!("approved by {by}"),
                (_, None, false) => "expired".into(),
                (None, None, true) => "waiting".into(),
            };
            vec![
                a.id.clone(),
                format!("{} {}", a.action, a.object),
                a.requested_by.clone(),
                state,
                custos_ca::rfc3339(a.expires_at),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "ACTION", "REQUESTED BY", "STATE", "EXPIRES"], &rows));
    Ok(())
}
