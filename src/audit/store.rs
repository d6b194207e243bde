//! Reading, recovering and appending to the log file.
//!
//! Recovery rule (docs/protocol.md#log-recovery): the file is read record by
//! record. At the first record that fails its check, the rest of the file is
//! a *torn tail* if it can only be the unfinished end of the last write: the
//! record runs past the end of the file, or everything from it to the end is
//! zero bytes (a file extended but never written). A torn tail is truncated
//! and reported. Anything else (a bad checksum with data after it, an entry
//! that does not decode, an index out of order) is corruption: the node
//! refuses to start and names the byte offset and entry index.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message as _;

use super::record::{self, RecordError, MAX_ENTRY_LEN, RECORD_HEADER_LEN};
use super::segments::{self, Segment};
use crate::wire::proto::{log_entry::Event, LogEntry};

/// Errors opening, reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system refused.
    #[error("log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file system is full. Nothing of the batch remains in the file:
    /// the writer cut it back to the last durable entry.
    #[error("disk full: the log {path} cannot grow ({detail}); nothing of the last batch was kept and nothing was sent on the strength of it: free space on that file system, then start the node again")]
    DiskFull {
        /// The log file.
        path: PathBuf,
        /// What the file system said, with the space left.
        detail: String,
    },
    /// The log is damaged before its tail; nothing is changed on disk.
    #[error("log {path} is corrupt at byte offset {offset} (entry {index}): {why}; the node will not start on a damaged log: restore the file from a backup, or move it aside to start a new log")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// Index the bad entry should have had.
        index: u64,
        /// What is wrong.
        why: String,
    },
    /// An entry the writer will not append (over the record size limit, or
    /// out of order). Nothing of the batch was written; this is a bug in
    /// the writer's caller, and the node stops rather than log it.
    #[error("log entry {index} refused: {why}")]
    Refused {
        /// The entry's index.
        index: u64,
        /// Why.
        why: String,
    },
}

/// An entry to append: the decoded entry and its exact encoding, which is
/// what is stored and what the Merkle tree hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    /// The entry.
    pub entry: LogEntry,
    /// `entry` encoded, once.
    pub bytes: Vec<u8>,
}

impl Persisted {
    /// Encodes `entry`.
    pub fn new(entry: LogEntry) -> Self {
        let bytes = entry.encode_to_vec();
        Persisted { entry, bytes }
    }
}

/// An entry read back from the log.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Byte offset of its record.
    pub offset: u64,
    /// The exact stored entry bytes (the future Merkle leaf).
    pub bytes: Vec<u8>,
    /// Decoded entry.
    pub entry: LogEntry,
}

/// A torn tail found (and, by [`LogWriter::open`], removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where it began.
    pub offset: u64,
    /// How many bytes it held.
    pub bytes: u64,
    /// Why the first record there failed.
    pub why: String,
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Good entries.
    pub entries: u64,
    /// Length of the good prefix in bytes.
    pub good_len: u64,
    /// The torn tail, if any.
    pub torn: Option<TornTail>,
}

/// What opening the log recovered.
pub type Recovered = ScanSummary;

/// Reads every good entry of the log at `path` in order, calling `each`;
/// stops with [`LogError::Corrupt`] on damage before the tail. A missing
/// file is an empty log. Memory stays flat: one record at a time.
pub fn scan(path: &Path, each: impl FnMut(StoredEntry)) -> Result<ScanSummary, LogError> {
    scan_from(path, ScanStart::default(), each)
}

/// Where a scan starts: at a known entry boundary (a snapshot's), with the
/// entries before it already accounted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStart {
    /// Byte offset of the first entry read.
    pub offset: u64,
    /// Its index.
    pub index: u64,
    /// Entries the latest checkpoint before it covers: damage among them
    /// is corruption, never a torn tail.
    pub covered: u64,
    /// Where the entry before it starts (0 at the beginning).
    pub last_entry_offset: u64,
}

/// As [`scan`], from `start`: the summary counts every entry of the log
/// (`start.index` of them before the first one read). Reads across the
/// log's segments ([`super::segments`]); offsets are global.
pub fn scan_from(
    path: &Path,
    start: ScanStart,
    mut each: impl FnMut(StoredEntry),
) -> Result<ScanSummary, LogError> {
    let segs = segments::list(path).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let total = segs.last().map_or(0, Segment::end);
    if start.offset > total {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            offset: total,
            index: start.index,
            why: format!(
                "the log ends at byte {total}, before entry {} at {}",
                start.index, start.offset
            ),
        });
    }
    let mut at = Cursor {
        index: start.index,
        covered: start.covered,
    };
    // The segment holding `start` (the last one when it is the end).
    let first = segs
        .iter()
        .position(|s| start.offset < s.end())
        .unwrap_or(segs.len().saturating_sub(1));
    for (k, seg) in segs.iter().enumerate().skip(first) {
        let local = if k == first {
            start.offset.saturating_sub(seg.start)
        } else {
            0
        };
        if local == 0 && seg.first_index != at.index {
            return Err(LogError::Corrupt {
                path: seg.path.clone(),
                offset: seg.start,
                index: at.index,
                why: format!(
                    "this segment should begin with entry {}; its name says {}",
                    at.index, seg.first_index
                ),
            });
        }
        let last = k.saturating_add(1) == segs.len();
        if let Some(torn) = scan_segment(seg, local, &mut at, &mut each)? {
            if !last {
                return Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    offset: torn.offset,
                    index: at.index,
                    why: format!(
                        "{}, in a sealed segment (only the last can end torn)",
                        torn.why
                    ),
                });
            }
            return Ok(ScanSummary {
                entries: at.index,
                good_len: torn.offset,
                torn: Some(torn),
            });
        }
    }
    Ok(ScanSummary {
        entries: at.index,
        good_len: total,
        torn: None,
    })
}

/// Where a scan stands.
struct Cursor {
    /// Index of the next entry.
    index: u64,
    /// Entries the latest checkpoint read so far covers.
    covered: u64,
}

/// Reads one segment from its local offset `from` to its end; returns the
/// torn tail it ends with, if any (global offsets).
fn scan_segment(
    seg: &Segment,
    from: u64,
    at: &mut Cursor,
    each: &mut impl FnMut(StoredEntry),
) -> Result<Option<TornTail>, LogError> {
    let path = seg.path.as_path();
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut local = from;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let offset = seg.start.saturating_add(local);
        let index = at.index;
        if local >= file_len {
            return Ok(None);
        }
        let remaining = file_len.saturating_sub(local);
        // Read the header (or what is left of it), then the announced body.
        let head_len = remaining.min(RECORD_HEADER_LEN as u64) as usize;
        buf.resize(head_len, 0);
        r.read_exact(&mut buf).map_err(io)?;
        if head_len == RECORD_HEADER_LEN {
            let len = match buf.first_chunk::<4>() {
                Some(b) => u32::from_be_bytes(*b) as usize,
                None => 0,
            };
            if len > 0 && len <= MAX_ENTRY_LEN {
                let body = remaining
                    .saturating_sub(RECORD_HEADER_LEN as u64)
                    .min(len as u64) as usize;
                buf.resize(RECORD_HEADER_LEN.saturating_add(body), 0);
                if let Some(tail) = buf.get_mut(RECORD_HEADER_LEN..) {
                    r.read_exact(tail).map_err(io)?;
                }
            }
        }
        match record::check(&buf) {
            Ok((bytes, total)) => {
                let entry = LogEntry::decode(bytes).map_err(|e| LogError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    index,
                    why: format!("checksum is good but the entry does not decode: {e}"),
                })?;
                if entry.index != index {
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        offset,
                        index,
                        why: format!("entry says index {}, expected {index}", entry.index),
                    });
                }
                if let Some(Event::CheckpointIssued(c)) = &entry.event {
                    if let Some((_, size, _)) = super::checkpoint::peek(&c.note) {
                        at.covered = at.covered.max(size);
                    }
                }
                each(StoredEntry {
                    offset,
                    bytes: bytes.to_vec(),
                    entry,
                });
                local = local.saturating_add(total as u64);
                at.index = index.saturating_add(1);
            }
            Err(err) => {
                let torn = match err {
                    RecordError::Short { .. } => true,
                    RecordError::Length(_) | RecordError::Checksum { .. } => {
                        rest_is_zero(path, local, file_len).map_err(io)?
                    }
                };
                if !torn || index < at.covered {
                    let why = if torn {
                        format!(
                            "{err}, inside the {} entries a checkpoint already covers",
                            at.covered
                        )
                    } else {
                        err.to_string()
                    };
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        offset,
                        index,
                        why,
                    });
                }
                return Ok(Some(TornTail {
                    offset,
                    bytes: file_len.saturating_sub(local),
                    why: err.to_string(),
                }));
            }
        }
    }
}

fn rest_is_zero(path: &Path, from: u64, to: u64) -> std::io::Result<bool> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::new(f.take(to.saturating_sub(from)));
    let mut chunk = [0u8; 8192];
    loop {
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk.iter().take(n).any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// The append side of the log. One per node (the node holds a lock).
#[derive(Debug)]
pub struct LogWriter {
    /// The log's first segment (the path every tool is given).
    path: PathBuf,
    /// The segment appended to, open.
    file: File,
    active: Segment,
    len: u64,
    entries: u64,
    last_entry_offset: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating if needed) the log, feeding every good entry to
    /// `each`, and truncates a torn tail. The caller records the returned
    /// [`Recovered::torn`] in the log.
    pub fn open(path: &Path, each: impl FnMut(StoredEntry)) -> Result<(Self, Recovered), LogError> {
        Self::open_from(path, ScanStart::default(), each)
    }

    /// As [`LogWriter::open`], reading the log from `start` (a snapshot's
    /// boundary) instead of its beginning.
    pub fn open_from(
        path: &Path,
        start: ScanStart,
        mut each: impl FnMut(StoredEntry),
    ) -> Result<(Self, Recovered), LogError> {
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                crate::identity::files::create_private_dir(dir).map_err(io(dir))?;
            }
        }
        if !path.exists() {
            crate::identity::files::private_open_options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io(path))?;
            // Make the new directory entry itself durable.
            sync_parent(path).map_err(io(path))?;
        }
        let mut last_entry_offset = start.last_entry_offset;
        let summary = scan_from(path, start, |e| {
            last_entry_offset = e.offset;
            each(e)
        })?;
        let segs = segments::list(path).map_err(io(path))?;
        let Some(active) = segs.last().cloned() else {
            return Err(io(path)(std::io::ErrorKind::NotFound.into()));
        };
        let file = crate::identity::files::private_open_options()
            .read(true)
            .append(true)
            .open(&active.path)
            .map_err(io(&active.path))?;
        if summary.torn.is_some() {
            file.set_len(summary.good_len.saturating_sub(active.start))
                .map_err(io(&active.path))?;
            file.sync_all().map_err(io(&active.path))?;
        }
        Ok((
            LogWriter {
                path: path.to_path_buf(),
                file,
                active,
                len: summary.good_len,
                entries: summary.entries,
                last_entry_offset,
                segment_bytes: segments::SEGMENT_BYTES,
                buf: Vec::new(),
            },
            summary,
        ))
    }

    /// Seals the segment being written at the first checkpoint once it
    /// holds `bytes` (default [`segments::SEGMENT_BYTES`]).
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes.max(1);
    }

    /// Entries in the log.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Where the log's last entry starts (0 when it is empty).
    pub fn last_entry_offset(&self) -> u64 {
        self.last_entry_offset
    }

    /// Bytes in the log (all segments).
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// The log's first segment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entries` and makes them durable with one `fdatasync`
    /// (group commit). Their indexes must continue the log.
    ///
    /// When the segment being written has reached its size, the batch's
    /// first checkpoint entry seals it: the entries up to it are made
    /// durable there, a new segment is begun, and the rest go to it (two
    /// syncs for that batch). A failure after the first sync leaves that
    /// part in the log, as a crash just after it would.
    ///
    /// An error here is fatal for the node: after a failed fsync the state
    /// of the file is unknown, so the caller must stop rather than retry.
    pub fn append_durable(&mut self, entries: &[Persisted]) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let full = self.len.saturating_sub(self.active.start) >= self.segment_bytes;
        let seal_after = entries
            .iter()
            .position(|e| matches!(e.entry.event, Some(Event::CheckpointIssued(_))))
            .filter(|_| full);
        match seal_after.and_then(|p| p.checked_add(1)) {
            None => self.append_to_active(entries),
            Some(cut) => {
                let (sealed, rest) = entries.split_at(cut.min(entries.len()));
                self.append_to_active(sealed)?;
                self.begin_segment()?;
                self.append_to_active(rest)
            }
        }
    }

    /// Starts a new segment after the one just sealed.
    fn begin_segment(&mut self) -> Result<(), LogError> {
        let path = segments::segment_path(&self.path, self.entries);
        let err = |source: std::io::Error| {
            if is_disk_full(&source) {
                LogError::DiskFull {
                    path: path.clone(),
                    detail: format!("{source}; {}", free_space_words(&self.path)),
                }
            } else {
                LogError::Io {
                    path: path.clone(),
                    source,
                }
            }
        };
        let file = crate::identity::files::private_open_options()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        sync_parent(&path).map_err(err)?;
        self.file = file;
        self.active = Segment {
            path,
            first_index: self.entries,
            start: self.len,
            len: 0,
        };
        Ok(())
    }

    fn append_to_active(&mut self, entries: &[Persisted]) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        let mut last_start = 0usize;
        for (i, e) in entries.iter().enumerate() {
            last_start = self.buf.len();
            let expected = self.entries.saturating_add(i as u64);
            if e.entry.index != expected {
                return Err(LogError::Refused {
                    index: e.entry.index,
                    why: format!("out of order: the log's next index is {expected}"),
                });
            }
            record::frame(&e.bytes, &mut self.buf).map_err(|err| LogError::Refused {
                index: e.entry.index,
                why: err.to_string(),
            })?;
        }
        if let Err(source) = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data())
        {
            // Whatever of the batch reached the file was never claimed
            // durable: cut it off, so that a full disk leaves no torn tail
            // (and a node restarted on it none either). Truncating frees
            // space, so it works on a full disk.
            let _ = self
                .file
                .set_len(self.len.saturating_sub(self.active.start))
                .and_then(|()| self.file.sync_data());
            return Err(if is_disk_full(&source) {
                LogError::DiskFull {
                    path: self.active.path.clone(),
                    detail: format!("{source}; {}", free_space_words(&self.path)),
                }
            } else {
                LogError::Io {
                    path: self.active.path.clone(),
                    source,
                }
            });
        }
        self.last_entry_offset = self.len.saturating_add(last_start as u64);
        self.len = self.len.saturating_add(self.buf.len() as u64);
        self.entries = self.entries.saturating_add(entries.len() as u64);
        Ok(())
    }
}

/// Makes `path`'s directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Whether an I/O error means the file system (or the user's quota) is
/// full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() || c == rustix::io::Errno::DQUOT.raw_os_error())
}

/// Bytes an unprivileged writer may still use on the file system that
/// holds `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// "N bytes free" for messages, or why it is unknown.
pub fn free_space_words(path: &Path) -> String {
    match free_bytes(path) {
        Ok(n) => format!("{n} bytes free on its file system"),
        Err(e) => format!("free space unknown: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::{log_entry::Event, NodeStopped};

    fn entry(i: u64) -> LogEntry {
        LogEntry {
            index: i,
            time_unix_ms: 1000 + i,
            event: Some(Event::NodeStopped(NodeStopped {
                reason: format!("entry {i}"),
            })),
        }
    }

    fn write_n(path: &Path, n: u64) -> Vec<u64> {
        let (mut w, _) = LogWriter::open(path, |_| {}).unwrap();
        let mut offsets = vec![];
        for i in 0..n {
            offsets.push(w.len_bytes());
            w.append_durable(&[Persisted::new(entry(i))]).unwrap();
        }
        offsets
    }

    #[test]
    fn append_reopen_and_continue() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log/hotline.log");
        write_n(&p, 5);
        let mut seen = vec![];
        let (mut w, rec) = LogWriter::open(&p, |e| seen.push(e.entry.index)).unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(rec.torn, None);
        w.append_durable(&[Persisted::new(entry(5)), Persisted::new(entry(6))])
            .unwrap();
        assert_eq!(scan(&p, |_| {}).unwrap().entries, 7);
    }

    #[test]
    fn truncation_at_every_byte_of_the_last_record_is_a_torn_tail() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l");
        let offsets = write_n(&p, 3);
        let full = std::fs::read(&p).unwrap();
        for cut in offsets[2] + 1..full.len() as u64 {
            std::fs::write(&p, &full[..cut as usize]).unwrap();
            let (_, rec) = LogWriter::open(&p, |_| {}).unwrap();
            let torn = rec.torn.expect("torn");
            assert_eq!((torn.offset, torn.bytes), (offsets[2], cut - offsets[2]));
            assert_eq!(std::fs::metadata(&p).unwrap().len(), offsets[2]);
            assert_eq!(rec.entries, 2);
        }
        // A cut exactly on a record boundary is a clean log.
        std::fs::write(&p, &full[..offsets[2] as usize]).unwrap();
        assert_eq!(LogWriter::open(&p, |_| {}).unwrap().1.torn, None);
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l");
        write_n(&p, 2);
        let good = std::fs::metadata(&p).unwrap().len();
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        let (_, rec) = LogWriter::open(&p, |_| {}).unwrap();
        assert_eq!(rec.torn.unwrap().bytes, 4096);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good);
    }

    fn checkpoint(i: u64) -> LogEntry {
        LogEntry {
            index: i,
            time_unix_ms: 1000 + i,
            event: Some(Event::CheckpointIssued(
                crate::wire::proto::CheckpointIssued { note: vec![] },
            )),
        }
    }

    /// A log of `n` entries, a checkpoint every fifth, written in batches
    /// of three with segments sealed past `limit` bytes.
    fn write_segmented(path: &Path, n: u64, limit: u64) {
        let (mut w, _) = LogWriter::open(path, |_| {}).unwrap();
        w.set_segment_bytes(limit);
        let all: Vec<Persisted> = (0..n)
            .map(|i| Persisted::new(if i % 5 == 4 { checkpoint(i) } else { entry(i) }))
            .collect();
        for batch in all.chunks(3) {
            w.append_durable(batch).unwrap();
        }
    }

    #[test]
    fn a_full_segment_is_sealed_at_its_next_checkpoint_and_the_log_reads_as_one() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log/hotline.log");
        write_segmented(&p, 60, 200);
        let segs = segments::list(&p).unwrap();
        assert!(segs.len() >= 4, "{segs:?}");
        // Every sealed segment ends with a checkpoint; the next begins
        // with the entry after it, where its name says.
        let mut all = vec![];
        let summary = scan(&p, |e| all.push(e)).unwrap();
        assert_eq!(summary.entries, 60);
        assert_eq!(summary.good_len, segments::total_len(&p).unwrap());
        for pair in segs.windows(2) {
            let last = all.iter().rev().find(|e| e.offset < pair[1].start).unwrap();
            assert!(matches!(last.entry.event, Some(Event::CheckpointIssued(_))));
            assert_eq!(last.entry.index + 1, pair[1].first_index);
            assert!(pair[0].len >= 200);
        }
        // Offsets are global: a reader finds each entry where the scan saw it.
        let r = LogReader::open(&p).unwrap();
        for e in &all {
            assert_eq!(r.read_at(e.offset).unwrap().entry, e.entry);
        }
        // A scan can start at any entry boundary, in any segment.
        let mid = &all[37];
        let mut tail = vec![];
        scan_from(
            &p,
            ScanStart {
                offset: mid.offset,
                index: 37,
                ..Default::default()
            },
            |e| tail.push(e.entry.index),
        )
        .unwrap();
        assert_eq!(tail, (37..60).collect::<Vec<_>>());
        // Reopened, the writer appends to the last segment, and a reader
        // opened before a new segment began finds entries in it.
        let (mut w, rec) = LogWriter::open(&p, |_| {}).unwrap();
        assert_eq!((rec.entries, rec.torn), (60, None));
        w.set_segment_bytes(200);
        for i in 60..80 {
            let e = if i % 5 == 4 { checkpoint(i) } else { entry(i) };
            w.append_durable(&[Persisted::new(e)]).unwrap();
        }
        assert!(segments::list(&p).unwrap().len() > segs.len());
        let mut more = vec![];
        scan(&p, |e| more.push(e)).unwrap();
        assert_eq!(more.len(), 80);
        assert_eq!(r.read_at(more[79].offset).unwrap().entry.index, 79);
    }

    #[test]
    fn only_the_last_segment_may_end_torn_and_a_missing_one_is_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hotline.log");
        write_segmented(&p, 40, 150);
        let segs = segments::list(&p).unwrap();
        assert!(segs.len() >= 3);
        // A torn tail in the last segment is cut off there.
        let last = segs.last().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last.path)
            .unwrap();
        f.write_all(&[0, 0, 0, 90, 1, 2]).unwrap();
        let (_, rec) = LogWriter::open(&p, |_| {}).unwrap();
        assert_eq!(rec.entries, 40);
        assert_eq!(rec.torn.unwrap().offset, last.end());
        assert_eq!(std::fs::metadata(&last.path).unwrap().len(), last.len);
        // The same in a sealed segment is corruption, named there.
        let sealed = &segs[1];
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&sealed.path)
            .unwrap();
        f.write_all(&[0, 0, 0, 90, 1, 2]).unwrap();
        match scan(&p, |_| {}) {
            Err(LogError::Corrupt { path, .. }) => assert_eq!(path, sealed.path),
            other => panic!("expected corruption, got {other:?}"),
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&sealed.path)
            .unwrap()
            .set_len(sealed.len)
            .unwrap();
        // A segment gone from the middle: the next does not continue.
        std::fs::remove_file(&segs[1].path).unwrap();
        match scan(&p, |_| {}) {
            Err(LogError::Corrupt { path, why, .. }) => {
                assert_eq!(path, segs[2].path);
                assert!(why.contains("should begin with entry"), "{why}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn corruption_before_the_tail_refuses_and_names_the_offset() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l");
        let offsets = write_n(&p, 4);
        let mut bytes = std::fs::read(&p).unwrap();
        let before = bytes.clone();
        bytes[offsets[1] as usize + 12] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        match LogWriter::open(&p, |_| {}) {
            Err(LogError::Corrupt { offset, index, .. }) => {
                assert_eq!((offset, index), (offsets[1], 1));
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Nothing on disk was changed.
        assert_eq!(std::fs::read(&p).unwrap().len(), before.len());
    }
}

/// Reads single entries from the log by byte offset: how the history
/// views fetch a message the index points at. Every record is checked
/// (bounds, checksum, decoding) before use.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    source: Source,
}

/// Where a [`LogReader`] reads from.
#[derive(Debug)]
enum Source {
    /// The log's segments, opened as they were listed; listed again when
    /// an offset lies past them (the writer began a new one since).
    Files(std::sync::RwLock<Vec<(Segment, File)>>),
    /// A log's bytes held in memory (the simulator's offices have no files).
    Memory(Vec<u8>),
}

fn open_segments(first: &Path) -> std::io::Result<Vec<(Segment, File)>> {
    segments::list(first)?
        .into_iter()
        .map(|s| {
            let f = File::open(&s.path)?;
            Ok((s, f))
        })
        .collect()
}

impl LogReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        match &self.source {
            Source::Files(segs) => {
                let try_read = |segs: &[(Segment, File)], buf: &mut [u8]| {
                    // The last segment whose start is at or before `offset`:
                    // a record never spans two segments.
                    let k = segs.partition_point(|(s, _)| s.start <= offset);
                    let (seg, f) = segs.get(k.checked_sub(1)?)?;
                    // The last one may have grown since it was listed.
                    let is_last = k == segs.len();
                    let end = offset.checked_add(buf.len() as u64)?;
                    if !is_last && end > seg.end() {
                        return Some(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    Some(f.read_exact_at(buf, offset.checked_sub(seg.start)?))
                };
                let first = {
                    let segs = segs.read().map_err(|_| std::io::Error::other("poisoned"))?;
                    try_read(&segs, buf)
                };
                match first {
                    Some(Ok(())) => Ok(()),
                    _ => {
                        // Perhaps past a segment begun since: list them again.
                        let fresh = open_segments(&self.path)?;
                        let r = try_read(&fresh, buf)
                            .unwrap_or_else(|| Err(std::io::ErrorKind::UnexpectedEof.into()));
                        if let Ok(mut segs) = segs.write() {
                            *segs = fresh;
                        }
                        r
                    }
                }
            }
            Source::Memory(bytes) => {
                let slice = usize::try_from(offset)
                    .ok()
                    .and_then(|start| bytes.get(start..start.checked_add(buf.len())?));
                match slice {
                    Some(s) => {
                        buf.copy_from_slice(s);
                        Ok(())
                    }
                    None => Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        }
    }

    /// Opens the log at `path` (its first segment) for reading.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            return Err(io(std::io::ErrorKind::NotFound.into()));
        }
        let segs = open_segments(path).map_err(io)?;
        Ok(LogReader {
            path: path.to_path_buf(),
            source: Source::Files(std::sync::RwLock::new(segs)),
        })
    }

    /// A reader over a log's bytes in memory (records as on disk).
    pub fn in_memory(bytes: Vec<u8>) -> Self {
        LogReader {
            path: PathBuf::from("(memory)"),
            source: Source::Memory(bytes),
        }
    }

    /// The entry whose record starts at `offset`.
    pub fn read_at(&self, offset: u64) -> Result<StoredEntry, LogError> {
        let corrupt = |why: String| LogError::Corrupt {
            path: self.path.clone(),
            offset,
            index: 0,
            why,
        };
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut head = [0u8; RECORD_HEADER_LEN];
        self.read_exact_at(&mut head, offset).map_err(io)?;
        let len = match head.first_chunk::<4>() {
            Some(b) => u32::from_be_bytes(*b) as usize,
            None => 0,
        };
        if len == 0 || len > MAX_ENTRY_LEN {
            return Err(corrupt(format!("record length {len} is out of range")));
        }
        let mut buf = vec![0u8; RECORD_HEADER_LEN.saturating_add(len)];
        self.read_exact_at(&mut buf, offset).map_err(io)?;
        let (bytes, _) = record::check(&buf).map_err(|e| corrupt(e.to_string()))?;
        let entry = LogEntry::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(StoredEntry {
            offset,
            bytes: bytes.to_vec(),
            entry,
        })
    }
}
