//! Small file helpers: private directories, atomic writes.

use std::io::Write;
use std::path::Path;

use crate::AgentError;

/// Creates `dir` (and parents) if missing, and sets its mode.
pub fn create_private_dir(dir: &Path, mode: u32) -> Result<(), AgentError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AgentError::io(format!("cannot create {}", dir.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::io(format!("cannot set the mode of {}", dir.display()), e))
}

/// Writes `bytes` to `path` through a temporary file, fsynced and renamed into place, mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |e| AgentError::io(format!("cannot write {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Makes a directory's entries durable (best effort: not every filesystem supports it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
