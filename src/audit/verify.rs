//! `hotline audit verify`: everything a log claims, checked in one pass.
//!
//! One streaming pass over the file: every record's checksum and index
//! (via [`scan`]), the Merkle tree (a [`Frontier`], so memory stays flat),
//! every checkpoint's signature and root against the entries before it,
//! every envelope signature (messages, receipts, negative receipts;
//! batch-verified), every cosignature. Successive checkpoints are
//! consistent by construction once each matches the log prefix it covers.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use super::checkpoint::{self, CheckpointError};
use super::merkle::{Frontier, Hash};
use super::store::{scan_from, LogError, StoredEntry};
pub use super::verified::VerifiedState;
use crate::identity::{keys, OfficeCard, OfficeName, Peer};
use crate::wire::envelope::{Domain, KeyId};
use crate::wire::proto::{log_entry::Event, CardUpdate, PeerEnvelope};
use prost::Message as _;

/// Signatures verified per batch.
pub const BATCH: usize = 256;

/// The first thing found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// Entry index.
    pub index: u64,
    /// Byte offset of its record.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// What verify found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// Bytes of good records.
    pub bytes: u64,
    /// Root over all entries read (hex).
    pub root: String,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Envelope signatures checked.
    pub signatures: u64,
    /// Cosignatures checked (both directions).
    pub cosignatures: u64,
    /// Entries whose peer has no pinned card (not checkable here).
    pub unchecked: u64,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// Peak resident memory of this process so far, KiB (Linux only).
    pub peak_rss_kib: Option<u64>,
    /// Set when this was an incremental check: the index of the sealing
    /// checkpoint it started from. The entries before it were checked by
    /// an earlier verify, whose saved state vouches for them; they were
    /// not read again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<u64>,
    /// Why an incremental check could not start where asked, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// This process's peak resident set size in KiB, from `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl VerifyReport {
    /// Whether everything held.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// One office's keys over the log's life: its card's, and those its card
/// updates in the log replaced (docs/protocol.md §8d).
#[derive(Clone)]
pub(super) struct KeySet {
    pub(super) message: Vec<VerifyingKey>,
    /// Log keys with their origins.
    pub(super) log: Vec<(VerifyingKey, String)>,
}

impl KeySet {
    /// Adds the keys `other` holds that these lack, within
    /// [`MAX_KEY_HISTORY`].
    pub(super) fn absorb(&mut self, other: &KeySet) {
        for k in &other.message {
            if !self.message.contains(k) && self.message.len() < MAX_KEY_HISTORY {
                self.message.push(*k);
            }
        }
        for (k, origin) in &other.log {
            if !self.log.iter().any(|(l, _)| l == k) && self.log.len() < MAX_KEY_HISTORY {
                self.log.push((*k, origin.clone()));
            }
        }
    }

    /// The checkpoint under whichever of the log keys signed it (for a
    /// saved state's check).
    pub(super) fn open_checkpoint(
        &self,
        note: &[u8],
    ) -> Result<checkpoint::SignedCheckpoint, CheckpointError> {
        self.open(note)
    }

    pub(super) fn new(office: &OfficeName, message: VerifyingKey, log: VerifyingKey) -> Self {
        KeySet {
            message: vec![message],
            log: vec![(log, checkpoint::origin(office, &log))],
        }
    }

    /// Adds the keys an update of `office`'s card replaced (at most
    /// [`MAX_KEY_HISTORY`]: a log cannot make verify hold more).
    fn add_replaced(&mut self, office: &OfficeName, u: &CardUpdate) {
        let (Some(m), Some(l)) = (
            keys::parse_public(&u.old_message_key),
            keys::parse_public(&u.old_log_key),
        ) else {
            return;
        };
        if !self.message.contains(&m) && self.message.len() < MAX_KEY_HISTORY {
            self.message.push(m);
        }
        if !self.log.iter().any(|(k, _)| *k == l) && self.log.len() < MAX_KEY_HISTORY {
            self.log.push((l, checkpoint::origin(office, &l)));
        }
    }

    fn message_key(&self, key_id: &[u8]) -> Option<VerifyingKey> {
        self.message
            .iter()
            .copied()
            .find(|k| key_id == KeyId::of(k).0)
    }

    /// The checkpoint under whichever of the log keys signed it.
    fn open(&self, note: &[u8]) -> Result<checkpoint::SignedCheckpoint, CheckpointError> {
        let mut r = Err(CheckpointError::Format);
        for (key, origin) in &self.log {
            r = checkpoint::open(note, origin, key);
            if r.is_ok() {
                break;
            }
        }
        r
    }

    /// A cosignature by whichever of the log keys made it.
    fn cosigned(&self, note: &[u8]) -> Result<u64, CheckpointError> {
        let mut r = Err(CheckpointError::Format);
        for (key, origin) in &self.log {
            r = checkpoint::verify_cosignature(note, origin, key);
            if r.is_ok() {
                break;
            }
        }
        r
    }
}

/// Keys kept per office: the card's and this many replaced ones.
pub const MAX_KEY_HISTORY: usize = 64;

pub(super) struct Keys {
    pub(super) me: String,
    pub(super) own: KeySet,
    pub(super) peers: HashMap<String, KeySet>,
}

impl Keys {
    /// Adds the keys `other` holds that these lack (a saved state's,
    /// collected from the log before it), within [`MAX_KEY_HISTORY`].
    fn absorb(&mut self, other: &Keys) {
        self.own.absorb(&other.own);
        for (name, set) in &other.peers {
            if let Some(mine) = self.peers.get_mut(name) {
                mine.absorb(set);
            }
        }
    }
}

struct Pending {
    index: u64,
    offset: u64,
    input: Vec<u8>,
    sig: Signature,
    key: VerifyingKey,
}

struct Verifier {
    keys: Keys,
    frontier: Frontier,
    own_checkpoints: BTreeMap<u64, Hash>,
    batch: Vec<Pending>,
    report: VerifyReport,
    /// Global offsets where a sealed segment ends.
    seals: Vec<u64>,
    /// The state at the latest sealing checkpoint reached with nothing
    /// wrong before it.
    saved: Option<VerifiedState>,
}

impl Verifier {
    fn fail(&mut self, index: u64, offset: u64, what: String) {
        let earlier = self
            .report
            .failure
            .as_ref()
            .is_some_and(|f| f.index <= index);
        if !earlier {
            self.report.failure = Some(Failure {
                index,
                offset,
                what,
            });
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let msgs: Vec<&[u8]> = self.batch.iter().map(|p| p.input.as_slice()).collect();
        let sigs: Vec<Signature> = self.batch.iter().map(|p| p.sig).collect();
        let keys: Vec<VerifyingKey> = self.batch.iter().map(|p| p.key).collect();
        self.report.signatures = self
            .report
            .signatures
            .saturating_add(self.batch.len() as u64);
        if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_err() {
            // Find the culprit, strictly.
            let bad = self
                .batch
                .iter()
                .find(|p| p.key.verify_strict(&p.input, &p.sig).is_err())
                .map(|p| (p.index, p.offset));
            if let Some((i, o)) = bad {
                self.fail(i, o, "signature does not verify".into());
            }
        }
        self.batch.clear();
    }

    fn envelope(&mut self, e: &StoredEntry, pe: &PeerEnvelope, domain: Domain, ours: bool) {
        let set = if ours {
            Some(&self.keys.own)
        } else {
            self.keys.peers.get(&pe.peer)
        };
        let Some(set) = set else {
            self.report.unchecked = self.report.unchecked.saturating_add(1);
            return;
        };
        let Some(env) = &pe.envelope else {
            return self.fail(e.entry.index, e.offset, "entry holds no envelope".into());
        };
        let Some(key) = set.message_key(&env.key_id) else {
            let who = if ours {
                self.keys.me.clone()
            } else {
                pe.peer.clone()
            };
            return self.fail(
                e.entry.index,
                e.offset,
                format!("envelope is not signed with any message key of {who}'s card or its logged card updates"),
            );
        };
        let Ok(sig) = Signature::from_slice(&env.signature) else {
            return self.fail(e.entry.index, e.offset, "malformed signature".into());
        };
        self.batch.push(Pending {
            index: e.entry.index,
            offset: e.offset,
            input: domain.signing_input(&env.payload),
            sig,
            key,
        });
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// A card update must say truly which card it replaces: its old
    /// fields must hash to its `old_fingerprint`.
    fn card_update(&mut self, e: &StoredEntry, pe: &PeerEnvelope) {
        let payload = pe.envelope.as_ref().map_or(&[][..], |env| &env.payload);
        let ok = CardUpdate::decode(payload)
            .ok()
            .is_some_and(|u| OfficeCard::replaced_by_update(&u).is_ok());
        if !ok {
            self.fail(
                e.entry.index,
                e.offset,
                "card update whose old card does not match its old fingerprint".into(),
            );
        }
    }

    /// At a checkpoint that seals a segment, before it is checked: keeps
    /// what a later incremental verify needs to start here, if everything
    /// before it verified.
    fn at_seal(&mut self, e: &StoredEntry) {
        let end = e
            .offset
            .saturating_add(super::RECORD_HEADER_LEN as u64)
            .saturating_add(e.bytes.len() as u64);
        if self.seals.binary_search(&end).is_err() {
            return;
        }
        self.flush();
        if self.report.failure.is_some() {
            return;
        }
        self.saved = Some(VerifiedState::capture(
            &self.keys,
            (e.entry.index, e.offset),
            &self.frontier,
            &self.own_checkpoints,
            &self.report,
        ));
    }

    fn entry(&mut self, e: StoredEntry) {
        let (index, offset) = (e.entry.index, e.offset);
        if matches!(e.entry.event, Some(Event::CheckpointIssued(_))) {
            self.at_seal(&e);
        }
        match &e.entry.event {
            Some(Event::MessageSent(pe)) => self.envelope(&e, pe, Domain::Message, true),
            Some(Event::MessageReceived(pe)) => self.envelope(&e, pe, Domain::Message, false),
            Some(Event::ReceiptSent(pe)) => self.envelope(&e, pe, Domain::Receipt, true),
            Some(Event::ReceiptReceived(pe)) => self.envelope(&e, pe, Domain::Receipt, false),
            Some(Event::NegativeReceiptSent(pe)) => {
                self.envelope(&e, pe, Domain::NegativeReceipt, true)
            }
            Some(Event::NegativeReceiptReceived(pe)) => {
                self.envelope(&e, pe, Domain::NegativeReceipt, false)
            }
            Some(Event::CardUpdateSent(pe)) => {
                self.card_update(&e, pe);
                self.envelope(&e, pe, Domain::CardUpdate, true)
            }
            Some(Event::CardUpdateReceived(pe)) => {
                self.card_update(&e, pe);
                self.envelope(&e, pe, Domain::CardUpdate, false)
            }
            Some(Event::CardUpdateAcceptedSent(pe)) => {
                self.envelope(&e, pe, Domain::CardUpdateAccepted, true)
            }
            Some(Event::CardUpdateAcceptedReceived(pe)) => {
                self.envelope(&e, pe, Domain::CardUpdateAccepted, false)
            }
            Some(Event::CheckpointIssued(c)) => {
                self.report.checkpoints = self.report.checkpoints.saturating_add(1);
                match self.keys.own.open(&c.note) {
                    Err(err) => self.fail(index, offset, format!("checkpoint: {err}")),
                    Ok(cp) if cp.size != index => self.fail(
                        index,
                        offset,
                        format!("checkpoint of size {} recorded at entry {index}", cp.size),
                    ),
                    Ok(cp) if cp.root != self.frontier.root() => self.fail(
                        index,
                        offset,
                        format!(
                            "checkpoint root does not match entries 0..{}: an entry before {index} was altered",
                            cp.size
                        ),
                    ),
                    Ok(cp) => {
                        self.own_checkpoints.insert(cp.size, cp.root);
                    }
                }
            }
            Some(Event::CosignatureIssued(n)) => {
                self.report.cosignatures = self.report.cosignatures.saturating_add(1);
                let Some(peer) = self.keys.peers.get(&n.peer) else {
                    self.report.unchecked = self.report.unchecked.saturating_add(1);
                    return self.frontier.push(&e.bytes);
                };
                let r = peer
                    .open(&n.note)
                    .and_then(|_| self.keys.own.cosigned(&n.note));
                if let Err(err) = r {
                    self.fail(index, offset, format!("cosignature issued: {err}"));
                }
            }
            Some(Event::CosignatureReceived(n)) => {
                self.report.cosignatures = self.report.cosignatures.saturating_add(1);
                let Some(peer) = self.keys.peers.get(&n.peer) else {
                    self.report.unchecked = self.report.unchecked.saturating_add(1);
                    return self.frontier.push(&e.bytes);
                };
                let r = self
                    .keys
                    .own
                    .open(&n.note)
                    .and_then(|cp| peer.cosigned(&n.note).map(|_| cp));
                match r {
                    Err(err) => self.fail(index, offset, format!("cosignature received: {err}")),
                    Ok(cp) if self.own_checkpoints.get(&cp.size) != Some(&cp.root) => self.fail(
                        index,
                        offset,
                        format!(
                            "{} cosigned a checkpoint of size {} this log never issued",
                            n.peer, cp.size
                        ),
                    ),
                    Ok(_) => {}
                }
            }
            _ => {}
        }
        self.frontier.push(&e.bytes);
    }
}

/// Verifies the log at `path` for the office with `card`, whose pinned
/// peers are `peers`.
pub fn verify(
    path: &std::path::Path,
    card: &OfficeCard,
    peers: &[Peer],
) -> Result<VerifyReport, LogError> {
    verify_saving(path, card, peers).map(|(r, _)| r)
}

/// Verifies the log at `path` of office `office` (message key `message`,
/// log key `log`) whose peers are `peers` (name, message key, log key).
/// [`verify`] does the same from the office's card and pinned peers.
pub fn verify_with_keys(
    path: &std::path::Path,
    office: &OfficeName,
    message: &VerifyingKey,
    log: &VerifyingKey,
    peers: &[(OfficeName, VerifyingKey, VerifyingKey)],
) -> Result<VerifyReport, LogError> {
    let keys = Keys {
        me: office.to_string(),
        own: KeySet::new(office, *message, *log),
        peers: peers
            .iter()
            .map(|(name, m, l)| (name.to_string(), KeySet::new(name, *m, *l)))
            .collect(),
    };
    run(path, office, keys, None).map(|(r, _)| r)
}

/// Verifies the log at `path` as [`verify`] does, and returns besides the
/// report the state at its latest sealing checkpoint reached with nothing
/// wrong before it (to save for [`verify_from_checkpoint`]).
pub fn verify_saving(
    path: &std::path::Path,
    card: &OfficeCard,
    peers: &[Peer],
) -> Result<(VerifyReport, Option<VerifiedState>), LogError> {
    let keys = card_keys(path, card, peers)?;
    run(path, &card.office, keys, None)
}

/// Verifies only the log after the sealing checkpoint where `state` (saved
/// by an earlier verify of this log) stands: that checkpoint is checked
/// again, signature and root, against the state's tree, then everything
/// after it. When the state does not fit this log, the whole log is
/// verified and the report's `note` says why.
pub fn verify_from_checkpoint(
    path: &std::path::Path,
    card: &OfficeCard,
    peers: &[Peer],
    state: &VerifiedState,
) -> Result<(VerifyReport, Option<VerifiedState>), LogError> {
    let keys = card_keys(path, card, peers)?;
    match state.resume(path, &card.office, &keys) {
        Ok(resume) => run(path, &card.office, keys, Some(resume)),
        Err(why) => {
            let (mut r, saved) = run(path, &card.office, keys, None)?;
            r.note = Some(format!(
                "the saved state cannot be used ({why}); verified the whole log"
            ));
            Ok((r, saved))
        }
    }
}

fn card_keys(path: &std::path::Path, card: &OfficeCard, peers: &[Peer]) -> Result<Keys, LogError> {
    let bad = |e: String| LogError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let log = card.log_verifying_key().map_err(|e| bad(e.to_string()))?;
    let message = card
        .message_verifying_key()
        .map_err(|e| bad(e.to_string()))?;
    Ok(Keys {
        me: card.office.to_string(),
        own: KeySet::new(&card.office, message, log),
        peers: peers
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    KeySet::new(&p.name, p.message_key, p.log_key),
                )
            })
            .collect(),
    })
}

/// Where an incremental verify starts.
pub(super) struct Resume {
    pub(super) start: super::store::ScanStart,
    pub(super) frontier: Frontier,
    pub(super) own_checkpoints: BTreeMap<u64, Hash>,
    pub(super) keys: Keys,
    pub(super) counts: [u64; 4],
}

fn run(
    path: &std::path::Path,
    office: &OfficeName,
    mut keys: Keys,
    resume: Option<Resume>,
) -> Result<(VerifyReport, Option<VerifiedState>), LogError> {
    let start = resume.as_ref().map(|r| r.start).unwrap_or_default();
    if let Some(r) = &resume {
        keys.absorb(&r.keys);
    }
    // The keys the log's card updates replaced sign what came before them
    // (and what the peer sent while it changed over): collect them first.
    // A first pass decodes only those entries' payloads.
    let _ = scan_from(path, start, |e| {
        let (pe, set, name) = match &e.entry.event {
            Some(Event::CardUpdateSent(pe)) => (pe, Some(&mut keys.own), office.clone()),
            Some(Event::CardUpdateReceived(pe)) => {
                let Ok(name) = OfficeName::new(&pe.peer) else {
                    return;
                };
                (pe, keys.peers.get_mut(&pe.peer), name)
            }
            _ => return,
        };
        let payload = pe.envelope.as_ref().map_or(&[][..], |env| &env.payload);
        if let (Some(set), Ok(u)) = (set, CardUpdate::decode(payload)) {
            set.add_replaced(&name, &u);
        }
    });
    let seals: Vec<u64> = match super::segments::list(path) {
        Ok(segs) => {
            let n = segs.len().saturating_sub(1);
            segs.iter().take(n).map(|s| s.end()).collect()
        }
        Err(_) => Vec::new(),
    };
    let from_checkpoint = resume.as_ref().map(|r| r.start.index);
    let (frontier, own_checkpoints, counts) = match resume {
        Some(r) => (r.frontier, r.own_checkpoints, r.counts),
        None => (Frontier::new(), BTreeMap::new(), [0; 4]),
    };
    let mut v = Verifier {
        keys,
        frontier,
        own_checkpoints,
        batch: Vec::with_capacity(BATCH),
        report: VerifyReport {
            entries: 0,
            bytes: 0,
            root: String::new(),
            checkpoints: counts[0],
            signatures: counts[1],
            cosignatures: counts[2],
            unchecked: counts[3],
            failure: None,
            peak_rss_kib: None,
            from_checkpoint,
            note: None,
        },
        seals,
        saved: None,
    };
    let scanned = scan_from(path, start, |e| v.entry(e));
    v.flush();
    match scanned {
        Ok(summary) => {
            v.report.entries = summary.entries;
            v.report.bytes = summary.good_len;
            if let Some(t) = summary.torn {
                v.fail(
                    summary.entries,
                    t.offset,
                    format!(
                        "torn tail of {} bytes ({}); a node would truncate it at start",
                        t.bytes, t.why
                    ),
                );
            }
        }
        Err(LogError::Corrupt {
            offset, index, why, ..
        }) => {
            v.report.entries = index;
            v.report.bytes = offset;
            v.fail(index, offset, why);
        }
        Err(e) => return Err(e),
    }
    v.report.root = hex::encode(v.frontier.root().0);
    v.report.peak_rss_kib = peak_rss_kib();
    // A state is worth keeping only if nothing failed before it.
    let saved = v.saved.filter(|s| {
        v.report
            .failure
            .as_ref()
            .is_none_or(|f| f.index >= s.checkpoint_index)
    });
    Ok((v.report, saved))
}
