//! What `audit verify` keeps so that a later `audit verify
//! --from-checkpoint` need not read the whole log again.
//!
//! At the latest checkpoint that seals a segment (the last entry of a
//! segment that is no longer written, [`super::segments`]) reached with
//! nothing wrong before it, verify saves its own state there: the Merkle
//! tree's right edge over the entries before the checkpoint, the office's
//! checkpoints so far (cosignatures may name any of them), the keys the
//! log's card updates added, and its counts. It goes beside the log, in
//! `hotline.verified.json`.
//!
//! An incremental verify checks that checkpoint again (its signature under
//! the office's keys, and that its root is the saved tree's) and then
//! everything after it. What it trusts is this file: that the entries
//! before the checkpoint were verified once. Only a full verify reads them
//! again, so it stays the independent check.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::merkle::{Frontier, Hash};
use super::verify::{KeySet, Keys, Resume, VerifyReport};
use crate::identity::OfficeName;
use crate::wire::proto::log_entry::Event;

/// The layout this build writes and reads.
pub const LAYOUT: u32 = 1;

/// Verify's state at a sealing checkpoint, before that checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedState {
    /// [`LAYOUT`].
    pub layout: u32,
    /// The office whose log it is.
    pub office: String,
    /// The sealing checkpoint entry: its index and byte offset.
    pub checkpoint_index: u64,
    /// Its byte offset.
    pub checkpoint_offset: u64,
    /// The right edge of the tree of the entries before it, as
    /// (stored-hash index, hex hash).
    pub tree_edge: Vec<(u64, String)>,
    /// The office's checkpoints before it: (size, hex root).
    pub own_checkpoints: Vec<(u64, String)>,
    /// Message and log keys (hex) of the office and of each peer, the
    /// card's and those card updates in the log replaced.
    pub keys: BTreeMap<String, SavedKeys>,
    /// Checkpoints, signatures, cosignatures and unchecked entries counted
    /// before it.
    pub counts: [u64; 4],
}

/// One office's keys, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedKeys {
    /// Message keys.
    pub message: Vec<String>,
    /// Log keys.
    pub log: Vec<String>,
}

fn saved_keys(set: &KeySet) -> SavedKeys {
    SavedKeys {
        message: set
            .message
            .iter()
            .map(|k| hex::encode(k.to_bytes()))
            .collect(),
        log: set
            .log
            .iter()
            .map(|(k, _)| hex::encode(k.to_bytes()))
            .collect(),
    }
}

fn key_set(office: &str, s: &SavedKeys) -> Result<KeySet, String> {
    let parse = |h: &String| -> Result<VerifyingKey, String> {
        crate::identity::keys::parse_public(h).ok_or_else(|| format!("key {h:?}"))
    };
    let name = OfficeName::new(office).map_err(|e| e.to_string())?;
    let message: Vec<VerifyingKey> = s.message.iter().map(parse).collect::<Result<_, _>>()?;
    let log: Vec<(VerifyingKey, String)> = s
        .log
        .iter()
        .map(|h| parse(h).map(|k| (k, super::checkpoint::origin(&name, &k))))
        .collect::<Result<_, _>>()?;
    if message.is_empty() || log.is_empty() {
        return Err(format!("no keys for {office}"));
    }
    Ok(KeySet { message, log })
}

fn hash(h: &str) -> Option<Hash> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(h, &mut b).ok()?;
    Some(Hash(b))
}

impl VerifiedState {
    pub(super) fn capture(
        keys: &Keys,
        (checkpoint_index, checkpoint_offset): (u64, u64),
        frontier: &Frontier,
        own_checkpoints: &BTreeMap<u64, Hash>,
        report: &VerifyReport,
    ) -> Self {
        let mut saved = BTreeMap::new();
        saved.insert(keys.me.clone(), saved_keys(&keys.own));
        for (name, set) in &keys.peers {
            saved.insert(name.clone(), saved_keys(set));
        }
        VerifiedState {
            layout: LAYOUT,
            office: keys.me.clone(),
            checkpoint_index,
            checkpoint_offset,
            tree_edge: frontier
                .edge()
                .into_iter()
                .map(|(i, h)| (i, hex::encode(h.0)))
                .collect(),
            own_checkpoints: own_checkpoints
                .iter()
                .map(|(s, r)| (*s, hex::encode(r.0)))
                .collect(),
            keys: saved,
            counts: [
                report.checkpoints,
                report.signatures,
                report.cosignatures,
                report.unchecked,
            ],
        }
    }

    /// Where to start verifying the log at `path` of `office`, given the
    /// keys of its card and pinned peers: the saved state, if it fits this
    /// log (else why not).
    pub(super) fn resume(
        &self,
        path: &Path,
        office: &OfficeName,
        card_keys: &Keys,
    ) -> Result<Resume, String> {
        if self.layout != LAYOUT {
            return Err(format!(
                "layout {} (this build reads {LAYOUT})",
                self.layout
            ));
        }
        if self.office != office.as_str() {
            return Err(format!("it is {:?}'s, not {office}'s", self.office));
        }
        let edge: Vec<(u64, Hash)> = self
            .tree_edge
            .iter()
            .map(|(i, h)| hash(h).map(|h| (*i, h)))
            .collect::<Option<_>>()
            .ok_or("a tree hash does not read")?;
        let frontier = Frontier::from_edge(self.checkpoint_index, &edge)
            .ok_or("its tree is not the right edge of its size")?;
        let own_checkpoints: BTreeMap<u64, Hash> = self
            .own_checkpoints
            .iter()
            .map(|(s, r)| hash(r).map(|r| (*s, r)))
            .collect::<Option<_>>()
            .ok_or("a checkpoint root does not read")?;
        let own = self
            .keys
            .get(&self.office)
            .ok_or("no keys for the office")
            .and_then(|k| key_set(&self.office, k).map_err(|_| "the office's keys do not read"))?;
        let mut peers = HashMap::new();
        for (name, k) in self.keys.iter().filter(|(n, _)| **n != self.office) {
            peers.insert(name.clone(), key_set(name, k)?);
        }
        let mut keys = Keys {
            me: self.office.clone(),
            own,
            peers,
        };
        // The card's current keys too: it may have been replaced since the
        // state was saved, and a full verify would know its keys.
        keys.own.absorb(&card_keys.own);
        // The checkpoint it stands at must be in this log, where it says,
        // signed by the office, over exactly the saved tree.
        let reader = super::LogReader::open(path).map_err(|e| e.to_string())?;
        let e = reader
            .read_at(self.checkpoint_offset)
            .map_err(|e| format!("no entry where its checkpoint was: {e}"))?;
        if e.entry.index != self.checkpoint_index {
            return Err(format!(
                "the entry at byte {} is entry {}, not {}",
                self.checkpoint_offset, e.entry.index, self.checkpoint_index
            ));
        }
        let Some(Event::CheckpointIssued(c)) = &e.entry.event else {
            return Err(format!(
                "entry {} is not a checkpoint",
                self.checkpoint_index
            ));
        };
        let cp = keys
            .own
            .open_checkpoint(&c.note)
            .map_err(|e| format!("its checkpoint does not open: {e}"))?;
        if cp.size != self.checkpoint_index || cp.root != frontier.root() {
            return Err(
                "its checkpoint does not sign the saved tree: the log before it differs".into(),
            );
        }
        Ok(Resume {
            start: super::store::ScanStart {
                offset: self.checkpoint_offset,
                index: self.checkpoint_index,
                covered: self.checkpoint_index,
                last_entry_offset: 0,
            },
            frontier,
            own_checkpoints,
            keys,
            counts: self.counts,
        })
    }
}

/// Where verify keeps its state for the log at `log`: beside it, as
/// `hotline.verified.json` for `hotline.log`.
pub fn path_for(log: &Path) -> PathBuf {
    super::segments::beside(log, "verified.json")
}

/// The saved state for the log at `log`: `Ok(None)` when there is none.
pub fn load(log: &Path) -> Result<Option<VerifiedState>, String> {
    let path = path_for(log);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves `state` for the log at `log` (mode 0600, replacing the old one).
pub fn save(log: &Path, state: &VerifiedState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    crate::identity::files::write_private(&path_for(log), &bytes)
}
