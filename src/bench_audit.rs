//! `hotline bench audit`: `audit verify` throughput and peak memory on logs
//! of growing size, beside the raw Ed25519 batch-verification rate measured
//! in the same run.
//!
//! Each log is a real receiving office's log: the sending office's core
//! signs messages, the receiving core verifies them and signs receipts, the
//! sender cosigns the receiver's checkpoints, and the receiver's entries are
//! written with the real log writer (segments and all), its Merkle hashes
//! to its tree file and its history index folded batch by batch, as a
//! running node keeps them. Ten per cent of the way from the end (at most
//! 65,536 entries) the receiving core's snapshot is written with the node's
//! own code. Verification runs as a child process (`hotline audit verify
//! --json`) so its peak memory is its own; so does each node start (`hotline
//! node run`), timed until its control API answers, with its resident
//! memory read then: from the snapshot (the tail replayed), and, with the
//! snapshot removed, from the whole log.

use std::path::Path;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::audit::LogWriter;
use crate::bench_line::Spread;
use crate::core::{Core, Draft, Now};
use crate::identity::{OfficeDir, OfficeName};
use crate::wire::proto::Precedence;
use crate::wire::MessageId;

/// One log size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPoint {
    /// Entries in the log.
    pub entries: u64,
    /// Log size in bytes.
    pub bytes: u64,
    /// Seconds `audit verify` took (whole process).
    pub verify_s: f64,
    /// Entries verified per second.
    pub entries_per_s: f64,
    /// Signatures verified per second.
    pub signatures_per_s: f64,
    /// Signatures/s ÷ the raw batch-verify rate.
    pub ratio_to_batch_floor: f64,
    /// Peak resident memory of the verify process, MiB.
    pub peak_rss_mib: f64,
    /// Seconds to read the whole log once and SHA-256 it.
    pub read_hash_s: f64,
    /// Entries after the snapshot.
    pub tail_entries: u64,
    /// Seconds to read the log after the snapshot and SHA-256 it (the
    /// floor for a start from the snapshot).
    pub tail_read_hash_s: f64,
    /// Node start from the snapshot until its control API answers,
    /// seconds: min, median, max over the runs.
    pub start_snapshot_s: crate::bench_line::Spread,
    /// Resident memory of the node just started from the snapshot, MiB
    /// (median).
    pub start_snapshot_rss_mib: f64,
    /// Node start replaying the whole log (snapshot removed), seconds.
    pub start_full_s: crate::bench_line::Spread,
    /// Resident memory of the node just started from the whole log, MiB
    /// (median).
    pub start_full_rss_mib: f64,
    /// Median snapshot start ÷ the tail's read-and-hash floor.
    pub snapshot_start_ratio_to_floor: f64,
    /// Median snapshot start ÷ median full-replay start.
    pub snapshot_start_ratio_to_full: f64,
    /// Median full-replay start ÷ the whole log's read-and-hash floor.
    pub full_start_ratio_to_floor: f64,
}

/// The audit bench's result.
#[derive(Debug, Clone, Serialize)]
pub struct AuditBenchReport {
    /// Raw Ed25519 batch verification, signatures per second, one core.
    pub batch_verify_floor_per_s: f64,
    /// One row per log size.
    pub points: Vec<AuditPoint>,
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum AuditBenchError {
    /// Setting up.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Writing the log.
    #[error(transparent)]
    Log(#[from] crate::audit::LogError),
    /// Running verify.
    #[error("{0}")]
    Run(String),
}

/// Raw batch-verify rate: batches of 256 signatures over 300-byte messages.
pub fn batch_verify_floor() -> f64 {
    let key = SigningKey::from_bytes(&[9; 32]);
    let msgs: Vec<Vec<u8>> = (0..256u32)
        .map(|i| [i.to_be_bytes().to_vec(), vec![7u8; 296]].concat())
        .collect();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
    let keys = vec![key.verifying_key(); 256];
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < 2.0 {
        ed25519_dalek::verify_batch(&refs, &sigs, &keys).expect("valid batch");
        n += 256;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Writes a receiving office's log of about `entries` entries under
/// `root` (see the module comment), with its tree file and history index
/// kept as a node keeps them, and its snapshot written `tail` entries
/// before the end (none when `tail` is 0). Returns the office directory.
pub fn make_log(
    root: &Path,
    entries: u64,
    tail: u64,
    progress: bool,
) -> Result<OfficeDir, AuditBenchError> {
    let (da, db) = (
        OfficeDir::new(root.join("washington")),
        OfficeDir::new(root.join("pyongyang")),
    );
    let (na, nb) = (
        OfficeName::new("washington").expect("valid"),
        OfficeName::new("pyongyang").expect("valid"),
    );
    da.init(&na, "127.0.0.1:0")?;
    db.init(&nb, "127.0.0.1:0")?;
    da.add_peer(&db.card(), Some(String::new()), false)?;
    db.add_peer(&da.card(), Some(String::new()), false)?;
    let (a, b) = (da.load()?, db.load()?);
    let run = |e: String| AuditBenchError::Run(e);
    // The same cores a node would run, with default timing; the receiver
    // keeps its Merkle hashes in its tree file, as a node does.
    let (mut ca, mut cb) = (
        crate::node::offline::new_core(&a),
        crate::node::offline::new_core(&b),
    );
    cb.keep_tree_in(&db.tree_hashes())
        .map_err(|e| run(e.to_string()))?;
    let (mut log, _) = LogWriter::open(&db.log(), |_| {})?;
    let (mut history, _) =
        crate::history::open_or_replace(&db.history()).map_err(|e| run(e.to_string()))?;
    let mut now = Now {
        mono_ms: 0,
        wall_ms: 1_780_000_000_000,
    };
    let mut batch = Vec::new();
    ca.link_up(now, &nb, "bench");
    cb.link_up(now, &na, "bench");
    // Exchange hellos so the cores are resumed.
    for _ in 0..2 {
        let oa = ca.take_output();
        let ob = cb.take_output();
        batch.extend(ob.persist);
        for t in oa.transmit {
            cb.handle_frame(now, &na, t.frame);
        }
        for t in ob.transmit {
            ca.handle_frame(now, &nb, t.frame);
        }
    }
    let body = "x".repeat(200);
    let mut next_report = 100_000;
    let mut n = 0u64;
    let snapshot_at = entries.saturating_sub(tail);
    let mut snapshot_written = tail == 0;
    loop {
        let at = cb.next_index();
        // Durable, folded into the index, and (once) snapshotted.
        if batch.len() >= 8192 || at >= entries || (!snapshot_written && at >= snapshot_at) {
            commit(&mut log, &mut history, &batch, &cb)?;
            batch.clear();
            if !snapshot_written && at >= snapshot_at {
                write_snapshot(&mut cb, &log, &db)?;
                snapshot_written = true;
            }
            if progress && at >= next_report {
                eprintln!("  ... {at} entries");
                next_report += 1_000_000.min(entries / 10).max(100_000);
            }
            if at >= entries {
                break;
            }
        }
        now.mono_ms += 1;
        now.wall_ms += 1;
        let id = MessageId::new(
            now.wall_ms,
            (n as u128).to_be_bytes()[6..].try_into().expect("10 bytes"),
        );
        n += 1;
        ca.submit(
            now,
            id,
            Draft {
                to: "pyongyang".into(),
                precedence: Precedence::Routine,
                subject: format!("bench {n}"),
                body: body.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| run(e.to_string()))?;
        for t in ca.take_output().transmit {
            cb.handle_frame(now, &na, t.frame);
        }
        let out = cb.take_output();
        batch.extend(out.persist);
        for t in out.transmit {
            ca.handle_frame(now, &nb, t.frame);
        }
        // The sender's cosignatures of the receiver's checkpoints go back.
        for t in ca.take_output().transmit {
            cb.handle_frame(now, &na, t.frame);
        }
        batch.extend(cb.take_output().persist);
    }
    cb.stop(now, "bench");
    commit(&mut log, &mut history, &cb.take_output().persist, &cb)?;
    Ok(db)
}

/// Makes `batch` durable and folds it into the history index, as a node's
/// commit does.
fn commit(
    log: &mut LogWriter,
    history: &mut crate::history::History,
    batch: &[crate::audit::Persisted],
    core: &Core,
) -> Result<(), AuditBenchError> {
    let start = log.len_bytes();
    log.append_durable(batch)?;
    crate::history::fold_appended(history, batch, start, log.len_bytes(), core.tree().root().0)
        .map_err(|e| AuditBenchError::Run(e.to_string()))
}

/// Writes the receiving core's snapshot as a node does (its tree file
/// synced first), every entry it made being durable.
fn write_snapshot(
    core: &mut Core,
    log: &LogWriter,
    dir: &OfficeDir,
) -> Result<(), AuditBenchError> {
    let run = |e: std::io::Error| AuditBenchError::Run(e.to_string());
    if let Some(f) = core.flush_tree_file().map_err(run)? {
        f.sync_data().map_err(run)?;
    }
    let snap = core.snapshot(log.len_bytes(), log.last_entry_offset());
    crate::node::snapshot_file::write(&dir.snapshot(), &snap).map_err(run)
}

/// Seconds to read the log at `path` (every segment) from byte `from` on
/// and hash every byte with SHA-256.
fn read_and_hash(path: &Path, from: u64) -> Result<f64, AuditBenchError> {
    use sha2::Digest;
    use std::io::{Read, Seek};
    let run = |e: std::io::Error| AuditBenchError::Run(e.to_string());
    let t = Instant::now();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for seg in crate::audit::segments::list(path).map_err(run)? {
        if seg.end() <= from {
            continue;
        }
        let mut f = std::fs::File::open(&seg.path).map_err(run)?;
        f.seek(std::io::SeekFrom::Start(from.saturating_sub(seg.start)))
            .map_err(run)?;
        loop {
            let n = f.read(&mut buf).map_err(run)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    std::hint::black_box(h.finalize());
    Ok(t.elapsed().as_secs_f64())
}

/// A node process started on `dir`: seconds until its control API
/// answered, and its resident memory then (MiB). It is then stopped
/// cleanly (a killed node leaves its history index to be repaired at the
/// next start, which would be timed too).
fn start_node(exe: &Path, dir: &OfficeDir) -> Result<(f64, f64), AuditBenchError> {
    let run = |e: String| AuditBenchError::Run(e);
    let t = Instant::now();
    let mut nodes = crate::bench_line::start_nodes(exe, std::slice::from_ref(dir))
        .map_err(|e| run(e.to_string()))?;
    let node = nodes.pop().ok_or_else(|| run("no node".into()))?;
    // Asked every 2 ms: the start being timed may take only a few.
    loop {
        let up = crate::control::ControlClient::from_dir(dir)
            .ok()
            .and_then(|c| c.status().ok());
        if up.is_some() {
            break;
        }
        if t.elapsed() > std::time::Duration::from_secs(3_600) {
            return Err(run(format!(
                "the node did not serve within an hour (see {})",
                dir.root().join("node.log").display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let secs = t.elapsed().as_secs_f64();
    let rss = crate::bench_soak::rss_mib(node.pid());
    node.stop()
        .map_err(|e| run(format!("stopping the node: {e}")))?;
    Ok((secs, rss))
}

/// Free bytes the bench needs for a log of `entries` entries: the log
/// (about 560 bytes an entry), its tree file (64), history index and the
/// rest, with room to spare.
pub fn disk_needed(entries: u64) -> u64 {
    entries.saturating_mul(1_400).saturating_add(256 << 20)
}

/// Runs the bench for each size in `sizes`, each node start `runs` times.
pub fn run(
    sizes: &[u64],
    runs: usize,
    keep: Option<&Path>,
    progress: bool,
) -> Result<AuditBenchReport, AuditBenchError> {
    let say = |s: String| {
        if progress {
            eprintln!("{s}");
        }
    };
    let err = |e: String| AuditBenchError::Run(e);
    say("measuring the raw Ed25519 batch-verify floor...".into());
    let floor = batch_verify_floor();
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let mut points = Vec::new();
    for &n in sizes {
        let tmp = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let root = match keep {
            Some(k) => k.join(format!("audit-{n}")),
            None => tmp.path().to_path_buf(),
        };
        std::fs::create_dir_all(&root).map_err(|e| err(format!("{}: {e}", root.display())))?;
        // Bounded in disk: refuse up front rather than fill the disk.
        let free = crate::audit::free_bytes(&root).map_err(|e| err(e.to_string()))?;
        if free < disk_needed(n) {
            return Err(err(format!(
                "a log of {n} entries needs about {} MiB free in {}; {} MiB are (set TMPDIR to a larger file system, or bench fewer entries)",
                disk_needed(n) >> 20,
                root.display(),
                free >> 20
            )));
        }
        let tail = (n / 10).clamp(1, 65_536);
        say(format!(
            "writing a log of {n} entries (snapshot {tail} entries before its end)..."
        ));
        let dir = make_log(&root, n, tail, progress)?;
        say(format!("verifying {n} entries..."));
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["audit", "verify", "--json"])
            .arg(dir.root())
            .output()
            .map_err(|e| err(format!("running {}: {e}", exe.display())))?;
        let secs = t.elapsed().as_secs_f64();
        let r: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| err(format!("verify output: {e}")))?;
        if !out.status.success() {
            return Err(err(format!("verify failed: {}", r["failure"])));
        }
        let entries = r["entries"].as_u64().unwrap_or(0);
        let sigs = r["signatures"].as_u64().unwrap_or(0) as f64;
        let snap = match crate::node::snapshot_file::read(&dir.snapshot()) {
            crate::node::snapshot_file::Read::Found(s) => s,
            other => return Err(err(format!("the bench's snapshot: {other:?}"))),
        };
        let read_hash_s = read_and_hash(&dir.log(), 0)?;
        let tail_read_hash_s = read_and_hash(&dir.log(), snap.log_offset)?;
        let runs = runs.max(1);
        // Each clean stop writes a newer snapshot: every run starts from
        // the one made before the tail.
        let first_snapshot = std::fs::read(dir.snapshot()).map_err(|e| err(e.to_string()))?;
        let mut snap_starts = Vec::new();
        let mut snap_rss = Vec::new();
        for i in 0..runs {
            crate::identity::files::write_private(&dir.snapshot(), &first_snapshot)
                .map_err(|e| err(e.to_string()))?;
            say(format!(
                "starting a node from its snapshot ({} of {runs})...",
                i + 1
            ));
            let (s, m) = start_node(&exe, &dir)?;
            let node_log = std::fs::read_to_string(dir.root().join("node.log")).unwrap_or_default();
            if !node_log.contains("started from the snapshot") {
                return Err(err(format!(
                    "the node did not start from the snapshot:\n{node_log}"
                )));
            }
            snap_starts.push(s);
            snap_rss.push(m);
        }
        let mut full_starts = Vec::new();
        let mut full_rss = Vec::new();
        for i in 0..runs {
            say(format!(
                "starting a node from the whole log ({} of {runs})...",
                i + 1
            ));
            let _ = std::fs::remove_file(dir.snapshot());
            let (s, m) = start_node(&exe, &dir)?;
            full_starts.push(s);
            full_rss.push(m);
        }
        let start_snapshot_s = Spread::of(snap_starts);
        let start_full_s = Spread::of(full_starts);
        points.push(AuditPoint {
            entries,
            bytes: r["bytes"].as_u64().unwrap_or(0),
            verify_s: secs,
            entries_per_s: entries as f64 / secs,
            signatures_per_s: sigs / secs,
            ratio_to_batch_floor: sigs / secs / floor,
            peak_rss_mib: r["peak_rss_kib"].as_u64().unwrap_or(0) as f64 / 1024.0,
            read_hash_s,
            tail_entries: entries.saturating_sub(snap.entries),
            tail_read_hash_s,
            snapshot_start_ratio_to_floor: start_snapshot_s.median / tail_read_hash_s,
            snapshot_start_ratio_to_full: start_snapshot_s.median / start_full_s.median,
            full_start_ratio_to_floor: start_full_s.median / read_hash_s,
            start_snapshot_rss_mib: Spread::of(snap_rss).median,
            start_full_rss_mib: Spread::of(full_rss).median,
            start_snapshot_s,
            start_full_s,
        });
    }
    Ok(AuditBenchReport {
        batch_verify_floor_per_s: floor,
        points,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_log_has_the_requested_size_and_verifies() {
        let t = tempfile::tempdir().unwrap();
        let dir = super::make_log(t.path(), 600, 100, false).unwrap();
        let (_, card, peers) = dir.load_public().unwrap();
        let r = crate::audit::verify::verify(&dir.log(), &card, &peers).unwrap();
        assert!(r.ok(), "{:?}", r.failure);
        assert!(r.entries >= 600 && r.entries < 610, "{}", r.entries);
        assert!(r.checkpoints >= 2 && r.signatures >= 590);
    }
}
