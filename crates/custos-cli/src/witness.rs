//! `custos witness init|serve|key`: a witness of another custos's audit log.

use std::path::Path;

use zeroize::Zeroizing;

use crate::{Cli, CliError, WitnessCommand};

/// The witness's passphrase: a file, else CUSTOS_WITNESS_PASSPHRASE.
fn passphrase(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(f) = file {
        let bytes = std::fs::read(f).map_err(|source| CliError::Io { path: f.to_path_buf(), source })?;
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        return Ok(Zeroizing::new(text.to_vec()));
    }
    match std::env::var_os("CUSTOS_WITNESS_PASSPHRASE").filter(|p| !p.is_empty()) {
        Some(p) => Ok(Zeroizing::new(p.into_encoded_bytes())),
        None => Err(CliError::Passphrase(
            "the witness key's passphrase: pass --passphrase-file or set CUSTOS_WITNESS_PASSPHRASE".into(),
        )),
    }
}

/// Runs one `witness` subcommand.
pub async fn run(cli: &Cli, command: &WitnessCommand) -> Result<(), CliError> {
    match command {
        WitnessCommand::Init { dir, name, logs, passphrase_file } => {
            let pass = passphrase(passphrase_file.as_deref())?;
            if pass.len() < 12 {
                return Err(CliError::Passphrase("use at least 12 characters for the witness key's passphrase".into()));
            }
            let key = custos_node::witness::WitnessNode::init(dir, name, &pass, logs)?;
            if cli.json {
                return crate::output::json(&serde_json::json!({"verifier_key": key.to_string(), "name": key.name}));
            }
            println!("{key}");
            Ok(())
        }
        WitnessCommand::Key { dir, passphrase_file } => {
            let node = custos_node::witness::WitnessNode::open(dir, &passphrase(passphrase_file.as_deref())?)?;
            println!("{}", node.verifier_key());
            Ok(())
        }
        WitnessCommand::Serve { dir, listen, passphrase_file } => {
            let node = custos_node::witness::WitnessNode::open(dir, &passphrase(passphrase_file.as_deref())?)?;
            let key = node.verifier_key().to_string();
            custos_node::serve_witness(node, listen, |addr| {
                use std::io::Write;
                // Whoever started it may stop reading after the address: never fail on that.
                let mut out = std::io::stdout();
                let _ = writeln!(out, "custos witness listening on http://{addr}");
                let _ = writeln!(out, "key {key}");
                let _ = out.flush();
            })
            .await?;
            Ok(())
        }
    }
}
