//! Where the key store passphrase comes from, in order: `--passphrase-file`,
//! `CUSTOS_PASSPHRASE`, the dev passphrase file that `serve --dev` writes, a
//! prompt on a terminal. Errors about a wrong passphrase name the source.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::CliError;

/// The file `serve --dev` keeps its generated passphrase in, inside the data directory.
pub const DEV_PASSPHRASE_FILE: &str = "dev-passphrase";

/// Where a passphrase came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--passphrase-file`.
    Flag(PathBuf),
    /// `CUSTOS_PASSPHRASE`.
    Env,
    /// The data directory's dev passphrase file.
    Dev(PathBuf),
    /// Typed at the prompt.
    Prompt,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "--passphrase-file {}", p.display()),
            Source::Env => f.write_str("the CUSTOS_PASSPHRASE environment variable"),
            Source::Dev(p) => write!(f, "the dev passphrase file {}", p.display()),
            Source::Prompt => f.write_str("the prompt"),
        }
    }
}

/// Finds the passphrase; `confirm` asks twice on a prompt (for `init`).
pub fn resolve(file: Option<&Path>, data_dir: &Path, confirm: bool) -> Result<(Zeroizing<Vec<u8>>, Source), CliError> {
    if let Some(f) = file {
        return Ok((read_file(f)?, Source::Flag(f.to_path_buf())));
    }
    if let Some(p) = std::env::var_os("CUSTOS_PASSPHRASE") {
        let p = Zeroizing::new(p.into_encoded_bytes());
        if p.is_empty() {
            return Err(CliError::Passphrase("CUSTOS_PASSPHRASE is set but empty".into()));
        }
        return Ok((p, Source::Env));
    }
    let dev = data_dir.join(DEV_PASSPHRASE_FILE);
    if dev.exists() {
        return Ok((read_file(&dev)?, Source::Dev(dev)));
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
        return Ok((Zeroizing::new(first.as_bytes().to_vec()), Source::Prompt));
    }
    Err(CliError::Passphrase(
        "no passphrase: pass --passphrase-file, set CUSTOS_PASSPHRASE, or run on a terminal to be prompted".into(),
    ))
}

/// Says where a wrong passphrase came from (and that a dev passphrase exists
/// when the environment's one shadowed it); other errors pass unchanged.
pub fn explain(e: custos_node::NodeError, source: &Source) -> CliError {
    if !matches!(e, custos_node::NodeError::WrongPassphrase) {
        return e.into();
    }
    let mut message = format!("wrong passphrase: the one from {source} does not unseal this key store");
    if let Source::Env = source {
        message.push_str(&format!(
            " (if this data directory was made by `serve --dev`, unset CUSTOS_PASSPHRASE: its passphrase is in {DEV_PASSPHRASE_FILE} beside the database)"
        ));
    }
    CliError::Passphrase(message)
}

/// The new passphrase for `keys change-passphrase`: from a file, else
/// CUSTOS_NEW_PASSPHRASE, else typed twice at a prompt.
pub fn resolve_new(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Some(p) = std::env::var_os("CUSTOS_NEW_PASSPHRASE").filter(|p| !p.is_empty()) {
        return Ok(Zeroizing::new(p.into_encoded_bytes()));
    }
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("new passphrase: ").map_err(|e| CliError::Passphrase(e.to_string()))?,
        );
        let second = Zeroizing::new(
            rpassword::prompt_password("repeat new passphrase: ").map_err(|e| CliError::Passphrase(e.to_string()))?,
        );
        if *first != *second {
            return Err(CliError::Passphrase("the two new passphrases differ".into()));
        }
        return Ok(Zeroizing::new(first.as_bytes().to_vec()));
    }
    Err(CliError::Passphrase(
        "no new passphrase: pass --new-passphrase-file, set CUSTOS_NEW_PASSPHRASE, or run on a terminal".into(),
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
    let pw = custos_ca::random_password()?;
    custos_node::create_private_dir(data_dir)?;
    let path = data_dir.join(DEV_PASSPHRASE_FILE);
    crate::output::write_private(&path, pw.as_bytes())?;
    Ok((Zeroizing::new(pw.as_bytes().to_vec()), path))
}
