//! `custos tenant|connection|keys|ca list`: the inventory commands.

use custos_ca::custody::CustodyOptions;
use custos_ca::policy::parse_duration;
use custos_ca::{ConnectionOptions, IssuerView};
use serde_json::json;

use crate::output::{json, table};
use crate::session::{open, open_unsealed};
use crate::{Cli, CliError, ConnectionCommand, KeysCommand, TenantCommand};

/// `custos tenant ...`.
pub async fn tenant(cli: &Cli, command: &TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::Add { name } => {
            let s = open(cli).await?;
            let t = s.ca.add_tenant(&s.me, name).await?;
            if cli.json {
                json(&t)
            } else {
                println!("added tenant {}", t.name);
                Ok(())
            }
        }
        TenantCommand::Custody { tenant, default } => {
            let s = open(cli).await?;
            let t = s.ca.set_custody_default(&s.me, tenant, default == "on").await?;
            if cli.json {
                return json(&t);
            }
            match t.custody_default {
                true => println!(
                    "new connections of {tenant} keep their keys in custody (`connection add --no-custody` for one that does not)"
                ),
                false => println!(
                    "new connections of {tenant} keep their keys in custody only with `connection add --custody`"
                ),
            }
            Ok(())
        }
        TenantCommand::List => {
            let s = open(cli).await?;
            let tenants = s.ca.tenants(&s.me).await?;
            if cli.json {
                return json(&tenants);
            }
            let rows: Vec<Vec<String>> = tenants
                .iter()
                .map(|t| {
                    let custody = if t.custody_default { "custody" } else { "-" };
                    vec![t.name.clone(), custos_ca::rfc3339(t.created_at), custody.into()]
                })
                .collect();
            print!("{}", table(&["TENANT", "CREATED", "NEW CONNECTIONS"], &rows));
            Ok(())
        }
        TenantCommand::Webhook { tenant, url } => {
            let s = open_unsealed(cli).await?;
            let policy = custos_node::webhook_policy(&s.config.webhooks);
            let secret = s.ca.set_webhook(&s.me, tenant, url, &policy).await?;
            if cli.json {
                return json(&json!({"tenant": tenant, "url": url, "secret": secret}));
            }
            println!("webhook of {tenant}: {url}");
            println!("HMAC-SHA256 secret (shown once; the tenant verifies x-custos-signature with it): {secret}");
            Ok(())
        }
    }
}

/// `custos connection ...`.
pub async fn connection(cli: &Cli, command: &ConnectionCommand) -> Result<(), CliError> {
    match command {
        ConnectionCommand::Add(args) => {
            let options = ConnectionOptions {
                profile: args.profile.parse().map_err(custos_ca::CaError::from)?,
                allowed_sans: args.allow_san.clone(),
                key_algorithm: args.key_algorithm.parse().map_err(custos_ca::CaError::from)?,
                validity_days: args.validity.as_deref().map(days).transpose()?,
            };
            let custody = args.custody || {
                let s = open(cli).await?;
                !args.no_custody && s.ca.custody_by_default(&s.me, &args.tenant).await?
            };
            if args.no_standby && !custody {
                return Err(CliError::Usage("--no-standby is for a connection whose key is in custody".into()));
            }
            if custody {
                let s = open_unsealed(cli).await?;
                let custody = CustodyOptions {
                    algorithm: options.key_algorithm,
                    standby: !args.no_standby,
                    sans: vec![],
                    validity_secs: None,
                };
                let keys = s.ca.add_custody(&s.me, &args.tenant, &args.name, Some(&options), &custody).await?;
                if cli.json {
                    return json(&keys);
                }
                println!(
                    "added connection {}/{} with its keys in custody ({})",
                    args.tenant, args.name, options.key_algorithm
                );
                print_custody_keys(&keys);
                println!(
                    "next: `custos connection policy {} {} --audience URL --client-id ID`, then upload the certificates (`custos connection keys {} {} --out DIR`) to the relying party",
                    args.tenant, args.name, args.tenant, args.name
                );
                return Ok(());
            }
            let s = open(cli).await?;
            let c = s.ca.add_connection(&s.me, &args.tenant, &args.name, &options).await?;
            if cli.json {
                json(&c)
            } else {
                println!("added connection {}/{} (profile {}, keys {})", c.tenant, c.name, c.profile, c.key_algorithm);
                Ok(())
            }
        }
        ConnectionCommand::Policy { tenant, name, audiences, client_ids } => {
            let s = open(cli).await?;
            let p = s.ca.set_signing_policy(&s.me, tenant, name, audiences.clone(), client_ids.clone()).await?;
            if cli.json {
                return json(&p);
            }
            println!(
                "connection {tenant}/{name} signs assertions for audiences {} and client ids {}",
                p.audiences.join(", "),
                p.client_ids.join(", ")
            );
            Ok(())
        }
        ConnectionCommand::Keys { tenant, name, out } => {
            let s = open(cli).await?;
            let keys = s.ca.custody(&s.me, tenant, name).await?;
            if let Some(dir) = out {
                for k in &keys {
                    let path = dir.join(format!("{}-{}.pem", k.slot, k.serial));
                    crate::output::write_public(&path, k.certificate_pem.as_bytes())?;
                }
            }
            if cli.json {
                return json(&keys);
            }
            print_custody_keys(&keys);
            Ok(())
        }
        ConnectionCommand::Update { tenant, name, allow_san, no_sans, validity, profile_validity, if_match } => {
            let changes = custos_ca::ConnectionChanges {
                allowed_sans: match (*no_sans, allow_san.is_empty()) {
                    (true, _) => Some(Vec::new()),
                    (false, false) => Some(allow_san.clone()),
                    (false, true) => None,
                },
                validity_days: match (validity, *profile_validity) {
                    (Some(v), _) => Some(Some(days(v)?)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            if changes.allowed_sans.is_none() && changes.validity_days.is_none() {
                return Err(CliError::Usage(
                    "nothing to change: give --allow-san, --no-sans, --validity or --profile-validity".into(),
                ));
            }
            let s = open(cli).await?;
            let c = s.ca.update_connection(&s.me, tenant, name, &changes, if_match.as_deref(), false).await?;
            if cli.json {
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                v["etag"] = custos_ca::connection_etag(&c).into();
                return json(&v);
            }
            println!(
                "updated {tenant}/{name}: allowed SANs [{}], lifetime {}",
                c.allowed_sans.join(", "),
                c.validity_days.map(|d| format!("{d} days")).unwrap_or_else(|| "the profile's default".into())
            );
            Ok(())
        }
        ConnectionCommand::List { tenant } => {
            let s = open(cli).await?;
            let list = s.ca.connections(&s.me, tenant.as_deref()).await?;
            if cli.json {
                // With each one's ETag, for `connection update --if-match`.
                let tagged: Vec<serde_json::Value> = list
                    .iter()
                    .map(|c| {
                        let mut v = serde_json::to_value(c).unwrap_or_default();
                        v["etag"] = custos_ca::connection_etag(c).into();
                        v
                    })
                    .collect();
                return json(&tagged);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.tenant.clone(),
                        c.name.clone(),
                        c.profile.to_string(),
                        c.key_algorithm.clone(),
                        c.allowed_sans.join(","),
                    ]
                })
                .collect();
            print!("{}", table(&["TENANT", "CONNECTION", "PROFILE", "KEYS", "ALLOWED SANS"], &rows));
            Ok(())
        }
    }
}

/// `custos keys ...`.
pub async fn keys(cli: &Cli, command: &KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::List => key_list(cli).await,
        KeysCommand::Block { spki_sha256, reason } => {
            let s = open(cli).await?;
            let blocked = s.ca.block_key(&s.me, spki_sha256, reason).await?;
            if cli.json {
                return json(&blocked);
            }
            println!("blocked key {} ({}): no CSR with it will be certified", blocked.spki_sha256, blocked.reason);
            Ok(())
        }
        KeysCommand::ChangePassphrase { new_passphrase_file } => {
            let s = open(cli).await?;
            let (old, source) = crate::passphrase::resolve(cli.passphrase_file.as_deref(), &s.config.data_dir, false)?;
            let new = crate::passphrase::resolve_new(new_passphrase_file.as_deref())?;
            let n = custos_node::change_passphrase(&s.config, &s.ca, &old, &new, &s.me)
                .await
                .map_err(|e| crate::passphrase::explain(e, &source))?;
            if cli.json {
                return json(&json!({"resealed": n}));
            }
            println!("sealed {n} keys under the new passphrase; the old one no longer opens the key store");
            Ok(())
        }
        KeysCommand::Blocked => {
            let s = open(cli).await?;
            let list = s.ca.blocklist(&s.me).await?;
            if cli.json {
                return json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| {
                    vec![b.spki_sha256.clone(), b.reason.clone(), b.source.clone(), custos_ca::rfc3339(b.created_at)]
                })
                .collect();
            print!("{}", table(&["SPKI SHA-256", "REASON", "SOURCE", "BLOCKED"], &rows));
            Ok(())
        }
    }
}

async fn key_list(cli: &Cli) -> Result<(), CliError> {
    let s = open(cli).await?;
    let keys = s.ca.key_views(&s.me).await?;
    if cli.json {
        return json(&keys);
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.backend.clone(),
                k.algorithm.clone(),
                k.label.clone(),
                k.public_key_sha256[..16].to_string(),
                k.status.clone(),
                k.uses.to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "BACKEND", "ALGORITHM", "LABEL", "SPKI SHA-256", "STATUS", "USES"], &rows));
    Ok(())
}

/// `custos ca list`.
pub async fn ca_list(cli: &Cli) -> Result<(), CliError> {
    let s = open(cli).await?;
    let views: Vec<IssuerView> = s.ca.issuers(&s.me).await?.iter().map(IssuerView::from).collect();
    if cli.json {
        return json(&views);
    }
    print_issuers(&views);
    Ok(())
}

fn days(text: &str) -> Result<i64, CliError> {
    let secs = parse_duration(text)?;
    if secs % 86_400 != 0 {
        return Err(CliError::Usage(format!("connection validity {text:?} must be whole days")));
    }
    Ok(secs / 86_400)
}

/// The issuers as a table.
pub fn print_issuers(views: &[IssuerView]) {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.role.clone(),
                v.status.clone(),
                v.not_after.clone(),
                v.name.clone(),
                v.fingerprint.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "ROLE", "STATUS", "NOT AFTER", "NAME", "SHA-256 FINGERPRINT"], &rows));
}

/// A table of custody keys: what the tenant compares with the relying party's list.
fn print_custody_keys(keys: &[custos_ca::custody::CustodyKeyView]) {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.slot.to_string(),
                k.algorithm.clone(),
                k.backend.clone(),
                k.serial.clone(),
                k.thumbprint_sha256.clone(),
                k.not_after.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["SLOT", "ALGORITHM", "BACKEND", "SERIAL", "X5T#S256", "NOT AFTER"], &rows));
}
