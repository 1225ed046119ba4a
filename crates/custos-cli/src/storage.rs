//! `custos backup`, `custos restore` and `custos doctor`: the database as a
//! thing to copy, bring back and check.

use std::path::Path;

use serde_json::json;

use crate::output::json;
use crate::session::{Session, config, open, open_unsealed};
use crate::{Cli, CliError};

/// `custos backup FILE`: an online copy with a fresh signed checkpoint.
pub async fn backup(cli: &Cli, file: &Path) -> Result<(), CliError> {
    let s = open_unsealed(cli).await?;
    let started = std::time::Instant::now();
    let report = custos_node::backup(&s.config, &s.ca, &s.me, file).await?;
    let secs = started.elapsed().as_secs_f64();
    if cli.json {
        return json(&json!({"file": file, "bytes": report.bytes, "checkpoint_size": report.checkpoint_size,
                            "seconds": secs}));
    }
    println!(
        "backup written to {} ({} bytes, {secs:.2}s): everything up to audit entry {} is covered by the signed \
         checkpoint inside; it holds the sealed keys (keep it like the data directory)",
        file.display(),
        report.bytes,
        report.checkpoint_size
    );
    Ok(())
}

/// `custos restore FILE`: into the configured data directory, then verified.
pub async fn restore(cli: &Cli, file: &Path) -> Result<(), CliError> {
    let config = config(cli)?.config;
    let ca = custos_node::restore(&config, file).await?;
    let s = Session { ca, me: custos_ca::Principal::local(), config };
    let report = s.ca.verify_log(&s.me, None, None).await?;
    // Checkpoints signed after the backup (kept in the checkpoint file) cover
    // entries the backup does not have: keep that file aside, say so, and
    // start a new one, or every later `audit verify` fails on them.
    let mut lost = None;
    if let Some((path, size, _)) = custos_node::newest_recorded_checkpoint(&s.config)?
        && size > report.entries
    {
        let aside = path.with_extension(format!("before-restore-{}", time::OffsetDateTime::now_utc().unix_timestamp()));
        std::fs::rename(&path, &aside).map_err(|source| CliError::Io { path: path.clone(), source })?;
        eprintln!(
            "warning: {} entries were signed after this backup was made and are not in it (the old checkpoint file \
             is kept as {}); certificates issued or revoked in them must be found and handled by hand",
            size - report.entries,
            aside.display()
        );
        lost = Some(size - report.entries);
    }
    if cli.json {
        return json(
            &json!({"restored": s.config.database_file(), "entries_lost": lost, "entries": report.entries, "root": report.root,
                            "checkpoints": report.checkpoints}),
        );
    }
    println!(
        "restored {} into {}: audit log verified, {} entries, {} checkpoints",
        file.display(),
        s.config.database_file().display(),
        report.entries,
        report.checkpoints
    );
    Ok(())
}

/// `custos doctor`: the database's integrity check and `audit verify
/// --state` (against the newest checkpoint kept outside the database), on one
/// screen.
pub async fn doctor(cli: &Cli) -> Result<(), CliError> {
    let s = open(cli).await?;
    let integrity = s.ca.integrity_check(&s.me).await?;
    // A database that lost its newest transactions (a truncated WAL, an old
    // copy put back) still verifies on its own: the checkpoint file does not.
    let recorded = custos_node::newest_recorded_checkpoint(&s.config)?;
    let checked = s.ca.verify_log_and_state(&s.me, None, recorded.as_ref().map(|(_, _, note)| note.as_str())).await;
    let database = custos_node::location(&s.config);
    let integrity_ok = integrity.as_ref().is_none_or(|rows| rows.len() == 1 && rows[0] == "ok");
    let state_ok = checked.as_ref().is_ok_and(|(_, state)| state.differences.is_empty());
    if cli.json {
        return json(&json!({
            "database": database,
            "integrity": integrity,
            "audit_log": match &checked {
                Ok((log, state)) => json!({"verified": true, "entries": log.entries, "checkpoints": log.checkpoints,
                                           "recorded_checkpoint": recorded.as_ref().map(|(_, size, _)| size),
                                           "objects": state.objects, "differences": state.differences}),
                Err(e) => json!({"verified": false, "error": e.to_string()}),
            },
            "healthy": integrity_ok && state_ok,
        }));
    }
    println!("database   {database}");
    match &integrity {
        None => println!("integrity  not checked (PostgreSQL: use amcheck, see docs/operations.md)"),
        Some(_) if integrity_ok => println!("integrity  ok"),
        Some(rows) => {
            println!("integrity  DAMAGED: restore the last backup (`custos restore`)");
            for row in rows.iter().take(10) {
                println!("           {row}");
            }
        }
    }
    match &checked {
        Ok((log, state)) => {
            println!("audit log  verified: {} entries, {} checkpoints", log.entries, log.checkpoints);
            if let Some((path, size, _)) = &recorded {
                println!("           extends the newest checkpoint kept outside ({}, {size} entries)", path.display());
            }
            println!("state      {} objects compared: {} differences", state.objects, state.differences.len());
            for d in state.differences.iter().take(10) {
                println!("           {}: {}", d.object, d.problem);
            }
        }
        Err(e) => println!("audit log  DOES NOT VERIFY: {e}"),
    }
    if integrity_ok && state_ok {
        return Ok(());
    }
    Err(CliError::Usage("custos doctor found problems (above): restore the last backup (`custos restore`)".into()))
}
