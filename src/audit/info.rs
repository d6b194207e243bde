//! `hotline audit info`: the log's size, root, latest checkpoint and who
//! cosigned it, in one streaming pass.

use std::collections::BTreeMap;

use serde::Serialize;

use super::checkpoint;
use super::merkle::Frontier;
use super::store::{scan, LogError};
use crate::wire::proto::log_entry::Event;

/// A cosignature on one of this office's checkpoints.
#[derive(Debug, Clone, Serialize)]
pub struct CosignInfo {
    /// Cosigning office.
    pub peer: String,
    /// Checkpoint size it cosigned.
    pub size: u64,
    /// Entry recording it.
    pub entry: u64,
}

/// The summary.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Entries.
    pub size: u64,
    /// Bytes.
    pub bytes: u64,
    /// RFC 6962 root over all entries, hex.
    pub root: String,
    /// Latest checkpoint: size, root hex, entry index, time.
    pub checkpoint: Option<CheckpointInfo>,
    /// Cosignatures on the latest checkpoint.
    pub cosignatures: Vec<CosignInfo>,
    /// Per peer, the largest size of this log it cosigned.
    pub cosigned_by: BTreeMap<String, u64>,
    /// Per peer, the largest size of its log this office cosigned.
    pub cosigned_for: BTreeMap<String, u64>,
    /// Equivocations this office detected.
    pub equivocations: u64,
    /// A torn tail, if the node has not yet truncated it.
    pub torn_tail_bytes: Option<u64>,
}

/// Latest checkpoint facts.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Tree size.
    pub size: u64,
    /// Root, hex.
    pub root: String,
    /// Entry recording it.
    pub entry: u64,
    /// When.
    pub time_unix_ms: u64,
    /// The signed note.
    pub note: String,
}

/// Reads the summary of the log at `path`.
pub fn info(path: &std::path::Path) -> Result<Info, LogError> {
    let mut f = Frontier::new();
    let mut cp: Option<CheckpointInfo> = None;
    let mut cosigs: Vec<CosignInfo> = Vec::new();
    let mut by = BTreeMap::new();
    let mut for_ = BTreeMap::new();
    let mut equivocations: u64 = 0;
    let summary = scan(path, |e| {
        match &e.entry.event {
            Some(Event::CheckpointIssued(c)) => {
                if let Some((_, size, root)) = checkpoint::peek(&c.note) {
                    cp = Some(CheckpointInfo {
                        size,
                        root: hex::encode(root.0),
                        entry: e.entry.index,
                        time_unix_ms: e.entry.time_unix_ms,
                        note: String::from_utf8_lossy(&c.note).into_owned(),
                    });
                }
            }
            Some(Event::CosignatureReceived(n)) => {
                if let Some((_, size, _)) = checkpoint::peek(&n.note) {
                    cosigs.push(CosignInfo {
                        peer: n.peer.clone(),
                        size,
                        entry: e.entry.index,
                    });
                    let v = by.entry(n.peer.clone()).or_insert(0);
                    *v = size.max(*v);
                }
            }
            Some(Event::CosignatureIssued(n)) => {
                if let Some((_, size, _)) = checkpoint::peek(&n.note) {
                    let v = for_.entry(n.peer.clone()).or_insert(0);
                    *v = size.max(*v);
                }
            }
            Some(Event::EquivocationDetected(_)) => equivocations = equivocations.saturating_add(1),
            _ => {}
        }
        f.push(&e.bytes);
    })?;
    let latest = cp.as_ref().map(|c| c.size);
    Ok(Info {
        size: summary.entries,
        bytes: summary.good_len,
        root: hex::encode(f.root().0),
        cosignatures: cosigs
            .into_iter()
            .filter(|c| Some(c.size) == latest)
            .collect(),
        checkpoint: cp,
        cosigned_by: by,
        cosigned_for: for_,
        equivocations,
        torn_tail_bytes: summary.torn.map(|t| t.bytes),
    })
}
