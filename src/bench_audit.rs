//! `hotline bench audit`: `audit verify` throughput and peak memory on logs
//! of growing size, beside the raw Ed25519 batch-verification rate measured
//! in the same run.
//!
//! Each log is a real receiving office's log: the sending office's core
//! signs messages, the receiving core verifies them and signs receipts, and
//! its entries (messages, receipts, checkpoints) are written with the real
//! log writer. Verification runs as a child process (`hotline audit verify
//! --json`) so its peak memory is its own.

use std::path::Path;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::audit::LogWriter;
use crate::core::{Draft, Now};
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
    /// Seconds to read the log file once and SHA-256 it (the floor for
    /// starting a node on it).
    pub read_hash_s: f64,
    /// Seconds `node::start` took on this log (replay, checkpoint check,
    /// listening), until the node serves.
    pub start_s: f64,
    /// `start_s` ÷ `read_hash_s`.
    pub start_ratio: f64,
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

/// Writes a receiving office's log of about `entries` entries under `root`
/// and returns the receiver's directory.
pub fn make_log(root: &Path, entries: u64, progress: bool) -> Result<OfficeDir, AuditBenchError> {
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
    // The same cores a node would run, with default timing.
    let (mut ca, mut cb) = (
        crate::node::offline::new_core(&a),
        crate::node::offline::new_core(&b),
    );
    let (mut log, _) = LogWriter::open(&db.log(), |_| {})?;
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
    while cb.next_index() < entries {
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
        .map_err(|e| AuditBenchError::Run(e.to_string()))?;
        for t in ca.take_output().transmit {
            cb.handle_frame(now, &na, t.frame);
        }
        let out = cb.take_output();
        batch.extend(out.persist);
        for t in out.transmit {
            ca.handle_frame(now, &nb, t.frame);
        }
        let _ = ca.take_output();
        if batch.len() >= 8192 {
            log.append_durable(&batch)?;
            batch.clear();
            if progress && cb.next_index() >= next_report {
                eprintln!("  ... {} entries", cb.next_index());
                next_report += 100_000;
            }
        }
    }
    cb.stop(now, "bench");
    batch.extend(cb.take_output().persist);
    log.append_durable(&batch)?;
    Ok(db)
}

/// Seconds to read `path` once and hash every byte with SHA-256.
fn read_and_hash(path: &Path) -> Result<f64, AuditBenchError> {
    use sha2::Digest;
    use std::io::Read;
    let t = Instant::now();
    let mut f = std::fs::File::open(path).map_err(|e| AuditBenchError::Run(e.to_string()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| AuditBenchError::Run(e.to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    std::hint::black_box(h.finalize());
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds until a node started on `dir` serves; then it is stopped.
fn start_node(dir: &OfficeDir) -> Result<f64, AuditBenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AuditBenchError::Run(e.to_string()))?;
    let office = dir.load()?;
    let t = Instant::now();
    let node = rt
        .block_on(crate::node::start(
            office,
            crate::node::NodeOptions { control_api: false },
        ))
        .map_err(|e| AuditBenchError::Run(format!("node start: {e}")))?;
    let secs = t.elapsed().as_secs_f64();
    rt.block_on(node.stop())
        .map_err(|e| AuditBenchError::Run(format!("node stop: {e}")))?;
    Ok(secs)
}

/// Runs the bench for each size in `sizes`.
pub fn run(sizes: &[u64], progress: bool) -> Result<AuditBenchReport, AuditBenchError> {
    let say = |s: String| {
        if progress {
            eprintln!("{s}");
        }
    };
    say("measuring the raw Ed25519 batch-verify floor...".into());
    let floor = batch_verify_floor();
    let exe = std::env::current_exe().map_err(|e| AuditBenchError::Run(e.to_string()))?;
    let mut points = Vec::new();
    for &n in sizes {
        let tmp = tempfile::tempdir().map_err(|e| AuditBenchError::Run(e.to_string()))?;
        say(format!("writing a log of {n} entries..."));
        let dir = make_log(tmp.path(), n, progress)?;
        say(format!("verifying {n} entries..."));
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["audit", "verify", "--json"])
            .arg(dir.root())
            .output()
            .map_err(|e| AuditBenchError::Run(format!("running {}: {e}", exe.display())))?;
        let secs = t.elapsed().as_secs_f64();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| AuditBenchError::Run(format!("verify output: {e}")))?;
        if !out.status.success() {
            return Err(AuditBenchError::Run(format!(
                "verify failed: {}",
                r["failure"]
            )));
        }
        let entries = r["entries"].as_u64().unwrap_or(0);
        let sigs = r["signatures"].as_u64().unwrap_or(0) as f64;
        say(format!("starting a node on {n} entries..."));
        let read_hash_s = read_and_hash(&dir.log())?;
        let start_s = start_node(&dir)?;
        points.push(AuditPoint {
            entries,
            bytes: r["bytes"].as_u64().unwrap_or(0),
            verify_s: secs,
            entries_per_s: entries as f64 / secs,
            signatures_per_s: sigs / secs,
            ratio_to_batch_floor: sigs / secs / floor,
            peak_rss_mib: r["peak_rss_kib"].as_u64().unwrap_or(0) as f64 / 1024.0,
            read_hash_s,
            start_s,
            start_ratio: start_s / read_hash_s,
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
        let dir = super::make_log(t.path(), 600, false).unwrap();
        let (_, card, peers) = dir.load_public().unwrap();
        let r = crate::audit::verify::verify(&dir.log(), &card, &peers).unwrap();
        assert!(r.ok(), "{:?}", r.failure);
        assert!(r.entries >= 600 && r.entries < 610, "{}", r.entries);
        assert!(r.checkpoints >= 2 && r.signatures >= 590);
    }
}
