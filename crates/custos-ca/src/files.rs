//! Files custos appends secrets or records to (replacement keys, bulk
//! results, checkpoints): created owner-only, reopened only while they are
//! still custos's own.

use std::path::Path;

use crate::{CaError, Result};

/// Opens (appending) a file custos writes secrets or records to, owner-only.
///
/// A new file is created owner-only (O_CREAT|O_EXCL: a planted symlink or file
/// is never followed or reused). A resumed run appends to the file it
/// created, and only if that is still a regular file of ours, mode 0600, with
/// one link: opened without following symlinks, then checked on the open
/// descriptor, so nothing can be swapped in between the check and the write.
pub fn open_own_private(path: &Path, flag: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let io = |source| CaError::Io { path: path.to_path_buf(), source };
    let refuse = |why: String| {
        CaError::Policy(format!(
            "{} {why}; custos appends only to a file it created (0600, not a link): \
             choose another {flag}",
            path.display()
        ))
    };
    let existing = std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(path);
    let file = match existing {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new().append(true).create_new(true).mode(0o600).open(path).map_err(io)?
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refuse("is a symbolic link".into())),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.uid() != crate::principal::current_uid() {
        return Err(refuse(format!("belongs to uid {}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!("has mode {:o}", meta.mode() & 0o777)));
    }
    if meta.nlink() != 1 {
        return Err(refuse(format!("has {} links", meta.nlink())));
    }
    Ok(file)
}
