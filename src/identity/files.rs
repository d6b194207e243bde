//! File helpers that get permissions right the first time.
//!
//! An office directory is private to the user that runs its node: the
//! directory and each subdirectory 0700, every file in it 0600, whatever
//! the umask. Files are created with their final mode in one step (never
//! written and then chmod-ed), and written to a temporary file that is
//! renamed into place so a crash never leaves half a key. Secrets are
//! opened without following a symlink and judged on the open handle, so a
//! file swapped between the check and the read is never the one read.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode for every file in an office directory.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode for an office directory and its subdirectories.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Writes `data` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes a file of the office directory atomically (mode 0600). Cards and
/// the config are no secret, but the directory is one user's: whoever
/// hands a card to the peer copies it out.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, PRIVATE_MODE)
}

/// Writes a secret (mode 0600).
pub fn write_secret(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, PRIVATE_MODE)
}

/// Open options for a file the node appends to or creates in place (the
/// log, a spool file, the lock): mode 0600 at creation. The umask can only
/// remove bits from it.
pub fn private_open_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.mode(PRIVATE_MODE);
    o
}

/// Creates `path` and any missing parents as 0700 directories, and makes
/// `path` itself exactly 0700 whatever the umask.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why a path of the office directory is not private.
fn loose(path: &Path, meta: &std::fs::Metadata, want: u32) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    let uid = current_uid();
    if meta.uid() != uid {
        return Some(format!(
            "{} is owned by uid {}, not by this user (uid {uid}); run the node as the \
             office's owner, or: chown {uid} {}",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "{} has mode {mode:o}: group or others can reach it (run: chmod {want:o} {})",
            path.display(),
            path.display()
        ));
    }
    None
}

fn denied(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)
}

/// Refuses `path` unless it is a real directory (not a symlink) owned by
/// this user with no group or other permissions.
pub fn check_private_dir(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    judge(path, &meta, true)
}

/// Refuses `meta` (of `path`, not followed) unless it is a directory or a
/// regular file as asked, owned by this user, private.
fn judge(path: &Path, meta: &std::fs::Metadata, dir: bool) -> std::io::Result<()> {
    let (is_kind, kind, want) = if dir {
        (meta.file_type().is_dir(), "a directory", PRIVATE_DIR_MODE)
    } else {
        (meta.file_type().is_file(), "a regular file", PRIVATE_MODE)
    };
    if !is_kind {
        return Err(denied(format!(
            "{} is not {kind} (a symlink is refused too)",
            path.display()
        )));
    }
    match loose(path, meta, want) {
        Some(why) => Err(denied(why)),
        None => Ok(()),
    }
}

/// Reads a secret: opened without following a symlink, then refused
/// unless the open handle is a regular file owned by this user that group
/// and others cannot reach.
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                denied(format!(
                    "{} is a symlink; a secret must be the file itself",
                    path.display()
                ))
            } else {
                e
            }
        })?;
    judge(path, &file.metadata()?, false)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Refuses a file that exists but is not private (a secret, or the log
/// with every message in it); a missing one is not this check's business.
/// Nothing is read.
pub fn check_private_file(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    judge(path, &meta, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_is_read_only_when_it_is_private_and_not_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let key = t.path().join("message.key");
        write_secret(&key, b"k").unwrap();
        assert_eq!(read_secret(&key).unwrap(), b"k");
        for loose in [0o640, 0o604, 0o660] {
            chmod(&key, loose);
            let err = read_secret(&key).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{loose:o}: {err}");
            assert!(check_private_file(&key).is_err());
        }
        chmod(&key, 0o600);
        let link = t.path().join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let err = read_secret(&link).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(check_private_file(&link).is_err());
        assert!(check_private_file(&t.path().join("absent")).is_ok());
    }

    #[test]
    fn a_directory_is_private_only_at_0700_and_creation_makes_it_so() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("office/keys");
        create_private_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("office")), 0o700);
        check_private_dir(&d).unwrap();
        chmod(&d, 0o755);
        let err = check_private_dir(&d).unwrap_err().to_string();
        assert!(err.contains(&format!("chmod 700 {}", d.display())), "{err}");
        // Creating it again tightens it.
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn a_file_another_user_owns_is_refused_even_at_0600() {
        if current_uid() != 0 {
            eprintln!("skipped: needs root to give a file to another user (uid 65534)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let key = t.path().join("log.key");
        write_secret(&key, b"k").unwrap();
        std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
        let err = read_secret(&key).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}
