//! A log is a sequence of segment files, so that no file grows without
//! bound.
//!
//! The first segment is the file every tool is given (`log/hotline.log` in
//! an office directory; any single-file log, such as one written before
//! segments existed, is a log of one segment). Each later segment sits
//! beside it, named by the index of its first entry:
//! `hotline.00000000000000065536.log` for `hotline.log`. A writer moves on
//! to a new segment right after a checkpoint entry once the current one
//! has reached its size limit, so every segment but the last ends with the
//! checkpoint that covers everything before it: it is *sealed*, and never
//! written again.
//!
//! Byte offsets are global: a segment starts where the one before it ends,
//! so an offset names one record of the whole log, as it did in a single
//! file (the history index and snapshots store such offsets).

use std::path::{Path, PathBuf};

/// The size after which a writer seals its segment at the next checkpoint
/// (64 MiB: about 90,000 entries).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The file.
    pub path: PathBuf,
    /// Index of its first entry, as its name says (0 for the first).
    pub first_index: u64,
    /// Global byte offset of its first byte.
    pub start: u64,
    /// Its length in bytes when listed.
    pub len: u64,
}

impl Segment {
    /// Global offset just past its last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The path of the segment of the log at `first` whose first entry is
/// `first_index`.
pub fn segment_path(first: &Path, first_index: u64) -> PathBuf {
    if first_index == 0 {
        return first.to_path_buf();
    }
    beside(first, &format!("{first_index:020}.log"))
}

/// A file beside the log at `first`, named after it: `hotline.SUFFIX` for
/// `hotline.log`.
pub fn beside(first: &Path, suffix: &str) -> PathBuf {
    let name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".log").unwrap_or(&name);
    first.with_file_name(format!("{stem}.{suffix}"))
}

/// The first index a later segment's file name gives, if `name` is one of
/// `first`'s later segments.
fn later_index(first_name: &str, name: &str) -> Option<u64> {
    let stem = first_name.strip_suffix(".log").unwrap_or(first_name);
    let digits = name
        .strip_prefix(stem)?
        .strip_prefix('.')?
        .strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i > 0)
}

/// The segments of the log whose first segment is `first`, in order, with
/// their global offsets. A missing first segment is an empty log (and
/// later segments without it are an error).
pub fn list(first: &Path) -> std::io::Result<Vec<Segment>> {
    let first_len = match std::fs::metadata(first) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let first_name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match first.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut later: Vec<(u64, PathBuf)> = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(i) = later_index(&first_name, &name) {
                    later.push((i, e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    later.sort();
    let Some(first_len) = first_len else {
        if let Some((_, p)) = later.first() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is missing but a later segment {} is there",
                    first.display(),
                    p.display()
                ),
            ));
        }
        return Ok(Vec::new());
    };
    let mut out = vec![Segment {
        path: first.to_path_buf(),
        first_index: 0,
        start: 0,
        len: first_len,
    }];
    for (first_index, path) in later {
        let len = std::fs::metadata(&path)?.len();
        let start = out.last().map_or(0, Segment::end);
        out.push(Segment {
            path,
            first_index,
            start,
            len,
        });
    }
    Ok(out)
}

/// Total bytes of the log at `first` (0 when it does not exist).
pub fn total_len(first: &Path) -> std::io::Result<u64> {
    Ok(list(first)?.last().map_or(0, Segment::end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_segments_are_named_by_their_first_index_and_listed_in_order() {
        let t = tempfile::tempdir().unwrap();
        let first = t.path().join("hotline.log");
        assert_eq!(list(&first).unwrap(), vec![]);
        std::fs::write(&first, [1u8; 10]).unwrap();
        let s2 = segment_path(&first, 200);
        let s1 = segment_path(&first, 70);
        assert_eq!(
            s1.file_name().unwrap().to_str().unwrap(),
            "hotline.00000000000000000070.log"
        );
        std::fs::write(&s2, [3u8; 5]).unwrap();
        std::fs::write(&s1, [2u8; 7]).unwrap();
        // Not segments of this log.
        std::fs::write(t.path().join("hotline.70.log"), b"x").unwrap();
        std::fs::write(t.path().join("other.00000000000000000070.log"), b"x").unwrap();
        let l = list(&first).unwrap();
        let got: Vec<(u64, u64, u64)> = l.iter().map(|s| (s.first_index, s.start, s.len)).collect();
        assert_eq!(got, vec![(0, 0, 10), (70, 10, 7), (200, 17, 5)]);
        assert_eq!(total_len(&first).unwrap(), 22);
        std::fs::remove_file(&first).unwrap();
        assert!(list(&first).is_err(), "later segments without the first");
    }
}
