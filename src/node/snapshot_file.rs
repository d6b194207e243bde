//! The snapshot file (`log/snapshot`): the core's state at a cosigned
//! checkpoint, framed so that damage is found before anything is parsed.
//!
//! ```text
//! "HLSNAP01" | body length (u64, big-endian) | SHA-256(body) | body
//! ```
//!
//! The body is a `hotline.store.v1.Snapshot` (`proto/snapshot.proto`). It is
//! written to `log/snapshot.tmp`, synced, and renamed over the old one, so a
//! node killed mid-write leaves the previous snapshot whole; the Merkle
//! hashes it relies on (`log/tree.hashes`) are synced before it is written.

use std::io::Write as _;
use std::path::Path;

use prost::Message as _;

use crate::wire::store::Snapshot;

const MAGIC: &[u8; 8] = b"HLSNAP01";
const HEADER_LEN: usize = 8 + 8 + 32;
/// The largest snapshot read back (a node with 100,000 open messages to
/// each of dozens of peers stays well under it).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Writes `s` to `path` durably and atomically (mode 0600).
pub fn write(path: &Path, s: &Snapshot) -> std::io::Result<()> {
    let body = s.encode_to_vec();
    let mut bytes = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&crate::wire::sha256(&body));
    bytes.extend_from_slice(&body);
    let tmp = path.with_extension("tmp");
    let mut f = crate::identity::files::private_open_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What reading a snapshot found.
#[derive(Debug)]
pub enum Read {
    /// There is none.
    Missing,
    /// One that cannot be used, and why.
    Damaged(String),
    /// A whole snapshot.
    Found(Box<Snapshot>),
}

/// Reads the snapshot at `path`, checking its frame before parsing.
pub fn read(path: &Path) -> Read {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Missing,
        Err(e) => return Read::Damaged(format!("cannot read it: {e}")),
    };
    if len > MAX_SNAPSHOT_BYTES {
        return Read::Damaged(format!("{len} bytes, over the {MAX_SNAPSHOT_BYTES} read"));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Read::Damaged(format!("cannot read it: {e}")),
    };
    match parse(&bytes) {
        Ok(s) => Read::Found(Box::new(s)),
        Err(why) => Read::Damaged(why),
    }
}

fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let (head, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, shorter than its header", bytes.len()))?;
    let (magic, rest) = head.split_at(8);
    let (len, digest) = rest.split_at(8);
    if magic != MAGIC {
        return Err("not a hotline snapshot of this layout (bad magic)".into());
    }
    let len = u64::from_be_bytes(len.try_into().map_err(|_| "header")?);
    if len != body.len() as u64 {
        return Err(format!(
            "its header says {len} bytes of state, the file holds {}",
            body.len()
        ));
    }
    if crate::wire::sha256(body).as_slice() != digest {
        return Err("its checksum does not match (the file is damaged)".into());
    }
    Snapshot::decode(body).map_err(|e| format!("its state does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_snapshot_reads_back_and_any_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        assert!(matches!(read(&path), Read::Missing));
        let s = Snapshot {
            layout: 1,
            office: "washington".into(),
            entries: 42,
            root: vec![7; 32],
            ..Default::default()
        };
        write(&path, &s).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        match read(&path) {
            Read::Found(got) => assert_eq!(*got, s),
            other => panic!("{other:?}"),
        }
        let good = std::fs::read(&path).unwrap();
        let damaged = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match read(&path) {
                Read::Damaged(why) => why,
                other => panic!("{other:?}"),
            }
        };
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(damaged(&flipped).contains("checksum"));
        assert!(damaged(&good[..good.len() - 1]).contains("header says"));
        assert!(damaged(&good[..10]).contains("shorter"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(damaged(&magic).contains("magic"));
    }
}
