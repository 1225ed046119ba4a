//! `custos token ...`: API tokens, made, listed and revoked from the CLI.

use custos_ca::access::TokenScope;
use custos_ca::policy::parse_duration;
use serde_json::json;

use crate::output::{json, table};
use crate::session::open;
use crate::{Cli, CliError, TokenCommand};

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
