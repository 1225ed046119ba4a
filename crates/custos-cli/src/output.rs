//! Rendering for humans (tables) and files written with care.

use std::io::Write;
use std::path::Path;

use crate::CliError;

/// Renders rows under headers as an aligned plain-text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Prints lines on stdout; a reader that closed the pipe ends the command
/// quietly (what was issued is durable already), any other failure is an error.
pub fn print_lines(lines: &[String]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        match writeln!(out, "{line}").and_then(|_| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::Output(e.to_string())),
        }
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Creates `path` (which must not exist) readable by everyone.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_new(path, bytes, 0o644)
}

/// Creates `path` (which must not exist) readable only by its owner: for keys.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_new(path, bytes, 0o600)
}

/// Replaces `path` with `bytes` (mode 0644) through a new file in the same
/// directory renamed over it: a symlink at `path` is replaced, never followed,
/// and readers see the old content or the new, never a truncated file.
pub fn replace_public(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    replace(path, bytes, 0o644)
}

/// [`replace_public`], owner-only: for files that hold keys.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    replace(path, bytes, 0o600)
}

/// A crash leaves the old file or the new one, never a mix: the new file is
/// synced before the rename, and the directory after it.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    let io = |e| CliError::Io { path: path.to_path_buf(), source: e };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new().prefix(".custos-").tempfile_in(dir).map_err(io)?;
    temp.write_all(bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let io = |e| CliError::Io { path: path.to_path_buf(), source: e };
    let mut f = options.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}
