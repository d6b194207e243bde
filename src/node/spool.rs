//! A relay's spool: sealed frames it holds, one file per frame, named by
//! the frame's SHA-256. Ciphertext only; the log holds the hashes.

use std::io::Write;
use std::path::Path;

fn name(dir: &Path, hash: &[u8; 32]) -> std::path::PathBuf {
    dir.join(format!("{}.sealed", hex::encode(hash)))
}

/// Writes each frame durably (file and directory synced).
pub fn write(dir: &Path, frames: &[([u8; 32], Vec<u8>)]) -> std::io::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    if !dir.exists() {
        crate::identity::files::create_private_dir(dir)?;
    }
    for (hash, bytes) in frames {
        let mut f = crate::identity::files::private_open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(name(dir, hash))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Deletes handed-over frames (best effort: a leftover is only garbage).
pub fn delete(dir: &Path, hashes: &[[u8; 32]]) {
    for h in hashes {
        let _ = std::fs::remove_file(name(dir, h));
    }
}

/// Reads one frame back.
pub fn read(dir: &Path, hash: &[u8; 32]) -> Option<Vec<u8>> {
    std::fs::read(name(dir, hash)).ok()
}
