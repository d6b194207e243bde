//! File helpers that get permissions right the first time.
//!
//! Secrets are created with mode 0600 in one step (never written and then
//! chmod-ed), and written to a temporary file that is renamed into place so
//! a crash never leaves half a key.

use std::io::Write;
use std::path::Path;

/// Mode for secret files.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for public files.
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `data` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes a secret (mode 0600).
pub fn write_secret(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, SECRET_MODE)
}

/// Writes a public file (mode 0644).
pub fn write_public(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, PUBLIC_MODE)
}

/// Reads a secret, refusing it if group or others can read it.
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:o}; secrets must be 0600 (run: chmod 600 {})",
                path.display(),
                mode,
                path.display()
            ),
        ));
    }
    std::fs::read(path)
}
