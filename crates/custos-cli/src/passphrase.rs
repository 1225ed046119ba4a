//! Where the key store passphrase comes from, in order: `CUSTOS_PASSPHRASE`,
//! `--passphrase-file`, the dev passphrase file that `serve --dev` writes, a
//! prompt on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::CliError;

/// The file `serve --dev` keeps its generated passphrase in, inside the data directory.
pub const DEV_PASSPHRASE_FILE: &str = "dev-passphrase";

/// Finds the passphrase; `confirm` asks twice on a prompt (for `init`).
pub fn resolve(file: Option<&Path>, data_dir: &Path, confirm: bool) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(p) = std::env::var_os("CUSTOS_PASSPHRASE") {
        let p = Zeroizing::new(p.into_encoded_bytes());
        if p.is_empty() {
            return Err(CliError::Passphrase("CUSTOS_PASSPHRASE is set but empty".into()));
        }
        return Ok(p);
    }
    if let Some(f) = file {
        return read_file(f);
    }
    let dev = data_dir.join(DEV_PASSPHRASE_FILE);
    if dev.exists() {
        return read_file(&dev);
    }
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("custos passphrase: ").map_err(|e| CliError::Passphrase(e.to_string()))?,
        );
        if confirm {
            let second = Zeroizing::new(
                rpassword::prompt_password("repeat passphrase: ").map_err(|e| CliError::Passphrase(e.to_string()))?,
            );
            if *first != *second {
                return Err(CliError::Passphrase("the two passphrases differ".into()));
            }
        }
        if first.is_empty() {
            return Err(CliError::Passphrase("empty passphrase".into()));
        }
        return Ok(Zeroizing::new(first.as_bytes().to_vec()));
    }
    Err(CliError::Passphrase(
        "no passphrase: set CUSTOS_PASSPHRASE, pass --passphrase-file, or run on a terminal to be prompted".into(),
    ))
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| CliError::Io { path: path.to_path_buf(), source: e })?);
    // A trailing newline from `echo pw > file` is not part of the passphrase.
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(CliError::Passphrase(format!("passphrase file {} is empty", path.display())));
    }
    Ok(Zeroizing::new(trimmed.to_vec()))
}

/// Writes a new random dev passphrase, readable only by its owner.
pub fn write_dev(data_dir: &Path) -> Result<(Zeroizing<Vec<u8>>, PathBuf), CliError> {
    let pw = custos_keys::leaf::random_password().map_err(|e| CliError::Passphrase(e.to_string()))?;
    std::fs::create_dir_all(data_dir).map_err(|e| CliError::Io { path: data_dir.to_path_buf(), source: e })?;
    let path = data_dir.join(DEV_PASSPHRASE_FILE);
    crate::output::write_private(&path, pw.as_bytes())?;
    Ok((Zeroizing::new(pw.as_bytes().to_vec()), path))
}
