//! Message history on disk: what was sent and received, and what became of
//! it, read from the log through an index.
//!
//! The log stays the only source of truth. [`History`] is a fold of its
//! entries into a small record per message (where its entry lies, its
//! receipt, its acknowledgement), kept in an embedded B-tree (redb) so that
//! the node's memory does not grow with years of traffic: views page
//! through the index and read the messages themselves from the log
//! ([`crate::audit::LogReader`]). The index can always be rebuilt from the
//! log; it records the log position it reflects ([`Position`]), with the
//! Merkle root there, so a node catches up from where it stopped and
//! rebuilds from scratch when the log is not the one it indexed.
//!
//! # Layout
//! - this file: the tables, the fold ([`History::apply`]) and the lookups;
//! - [`views`]: inbox and outbox pages, one message by id, as the control
//!   API shows them, and our old answers to a peer's sequences;
//! - [`recall`]: resolving the core's requests for answers it let go.

// The index reads what our own log holds; a damaged or hostile record must
// still never panic the node.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod recall;
pub mod views;

use std::path::Path;

use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::wire::proto::{log_entry::Event, LogEntry, Message, NegativeReceipt, Receipt};
use crate::wire::{sha256, MessageId};

/// The index's own records (`proto/store.proto`).
pub use crate::wire::store as record;
pub use record::{ReceivedRecord, SentRecord};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

impl Direction {
    fn code(self) -> u8 {
        match self {
            Direction::Sent => 0,
            Direction::Received => 1,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Direction::Sent),
            1 => Some(Direction::Received),
            _ => None,
        }
    }
}

/// [`SentRecord::state`] values.
pub mod sent_state {
    /// No receipt or settling refusal yet.
    pub const OPEN: u32 = 0;
    /// The peer's signed receipt is logged.
    pub const DELIVERED: u32 = 1;
    /// The peer's settling negative receipt is logged.
    pub const REFUSED: u32 = 2;
}

/// How far into the log the index reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Index of the first entry not yet folded in.
    pub next_index: u64,
    /// Its byte offset in the log.
    pub next_offset: u64,
    /// Root of the log's Merkle tree over the first `next_index` entries:
    /// tells whether the log is still the one indexed.
    pub root: [u8; 32],
}

/// What went wrong with the index. The log is never at risk: the index can
/// be deleted and rebuilt from it.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The embedded store refused or is damaged.
    #[error("history index {path}: {detail}; it is rebuilt from the log if you remove it")]
    Store {
        /// The index file (or "memory").
        path: String,
        /// What the store said.
        detail: String,
    },
}

// (peer, sequence) -> record bytes.
const SENT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("sent");
const RECEIVED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("received");
// (id, direction, peer) -> sequence: ids are unique per sender, so per
// (direction, peer); the same id from two offices is two messages.
const BY_ID: TableDefinition<(u128, u8, &str), u64> = TableDefinition::new("by_id");
// (direction, log index) -> (peer, sequence): pages in log order.
const ORDER: TableDefinition<(u8, u64), (&str, u64)> = TableDefinition::new("order");
// (peer, sequence) -> byte offset of the settling negative receipt we
// logged for a number of the peer's we never logged a message under (the
// answer a retransmission of it gets again).
const REFUSED: TableDefinition<(&str, u64), u64> = TableDefinition::new("refused");
// "next_index", "next_offset", "version" -> u64; "root" kept as 4 u64 words.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The index's layout: an index of another version is rebuilt.
/// 2: the REFUSED table.
pub const VERSION: u64 = 2;
const ROOT_WORDS: [&str; 4] = ["root0", "root1", "root2", "root3"];

/// Memory the store may use for its page cache. Kept small: the node's
/// memory must not grow with the history (docs/architecture.md).
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A message found in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Which way it went.
    pub direction: Direction,
    /// The other office.
    pub peer: String,
    /// Its sequence on that channel.
    pub sequence: u64,
}

/// One entry to fold in: the decoded entry and its byte offset in the log.
pub struct Indexed<'a> {
    /// The entry.
    pub entry: &'a LogEntry,
    /// Its record's byte offset.
    pub offset: u64,
}

/// The history index.
pub struct History {
    db: Database,
    path: String,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

impl History {
    /// Opens (creating if needed) the index file at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let name = path.display().to_string();
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| store_err(&name, e))?;
        let h = History { db, path: name };
        h.ensure_tables()?;
        Ok(h)
    }

    /// An index held in memory (the simulator, offline views, tests).
    pub fn in_memory() -> Result<Self, HistoryError> {
        let name = "memory".to_string();
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| store_err(&name, e))?;
        let h = History { db, path: name };
        h.ensure_tables()?;
        Ok(h)
    }

    fn err(&self, e: impl std::fmt::Display) -> HistoryError {
        store_err(&self.path, e)
    }

    fn ensure_tables(&self) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            tx.open_table(SENT).map_err(|e| self.err(e))?;
            tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
            tx.open_table(BY_ID).map_err(|e| self.err(e))?;
            tx.open_table(ORDER).map_err(|e| self.err(e))?;
            tx.open_table(REFUSED).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            // An empty index takes this version; one with entries and no
            // version predates versions (and is rebuilt, see `version`).
            let empty = meta.get("next_index").map_err(|e| self.err(e))?.is_none();
            let versioned = meta.get("version").map_err(|e| self.err(e))?.is_some();
            if empty && !versioned {
                meta.insert("version", VERSION).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The layout version the index was built with (1: before versions).
    pub fn version(&self) -> Result<u64, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let v = meta.get("version").map_err(|e| self.err(e))?;
        Ok(v.map_or(1, |v| v.value()))
    }

    /// Where the index stands in the log.
    pub fn position(&self) -> Result<Position, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let get = |k: &str| -> Result<u64, HistoryError> {
            Ok(meta
                .get(k)
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let mut root = [0u8; 32];
        for (chunk, k) in root.chunks_mut(8).zip(ROOT_WORDS) {
            chunk.copy_from_slice(&get(k)?.to_be_bytes());
        }
        Ok(Position {
            next_index: get("next_index")?,
            next_offset: get("next_offset")?,
            root,
        })
    }

    /// Empties the index (before a rebuild from the log's start).
    pub fn clear(&mut self) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.delete_table(SENT).map_err(|e| self.err(e))?;
        tx.delete_table(RECEIVED).map_err(|e| self.err(e))?;
        tx.delete_table(BY_ID).map_err(|e| self.err(e))?;
        tx.delete_table(ORDER).map_err(|e| self.err(e))?;
        tx.delete_table(REFUSED).map_err(|e| self.err(e))?;
        tx.delete_table(META).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.ensure_tables()
    }

    /// Folds `entries` (consecutive, from [`Position::next_index`]) into
    /// the index, which then stands at `after`, in one transaction.
    /// `durable` makes it survive a crash of the machine; otherwise it is
    /// kept if the process stops but may be lost with the machine, and the
    /// index then catches up from the log at the next start.
    pub fn apply<'a>(
        &mut self,
        entries: impl IntoIterator<Item = Indexed<'a>>,
        after: Position,
        durable: bool,
    ) -> Result<(), HistoryError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut t = Tables {
                sent: tx.open_table(SENT).map_err(|e| self.err(e))?,
                received: tx.open_table(RECEIVED).map_err(|e| self.err(e))?,
                by_id: tx.open_table(BY_ID).map_err(|e| self.err(e))?,
                order: tx.open_table(ORDER).map_err(|e| self.err(e))?,
                refused: tx.open_table(REFUSED).map_err(|e| self.err(e))?,
            };
            for e in entries {
                t.fold(e).map_err(|e| self.err(e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("next_index", after.next_index)
                .map_err(|e| self.err(e))?;
            meta.insert("next_offset", after.next_offset)
                .map_err(|e| self.err(e))?;
            for (chunk, k) in after.root.chunks(8).zip(ROOT_WORDS) {
                let word = <[u8; 8]>::try_from(chunk).unwrap_or_default();
                meta.insert(k, u64::from_be_bytes(word))
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every message with this id (normally one; the same id from two
    /// offices, or sent and received, is more).
    pub fn find(&self, id: &MessageId) -> Result<Vec<Found>, HistoryError> {
        let key = u128::from_be_bytes(id.0);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BY_ID).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let range = t
            .range((key, 0u8, "")..=(key, u8::MAX, "\u{10FFFF}"))
            .map_err(|e| self.err(e))?;
        for row in range {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (_, dir, peer) = k.value();
            if let Some(direction) = Direction::from_code(dir) {
                out.push(Found {
                    direction,
                    peer: peer.to_string(),
                    sequence: v.value(),
                });
            }
        }
        Ok(out)
    }

    /// Our message `seq` to `peer`.
    pub fn sent(&self, peer: &str, seq: u64) -> Result<Option<SentRecord>, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SENT).map_err(|e| self.err(e))?;
        let v = t.get((peer, seq)).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| SentRecord::decode(v.value()).ok()))
    }

    /// `peer`'s message `seq` to us.
    pub fn received(&self, peer: &str, seq: u64) -> Result<Option<ReceivedRecord>, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        let v = t.get((peer, seq)).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| ReceivedRecord::decode(v.value()).ok()))
    }

    /// Messages of one direction in log order, newest first: at most
    /// `limit`, all logged before log index `before` (a cursor: the
    /// smallest index of the previous page), as (log index, peer, seq).
    pub fn page(
        &self,
        direction: Direction,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String, u64)>, HistoryError> {
        let d = direction.code();
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ORDER).map_err(|e| self.err(e))?;
        let end = before.unwrap_or(u64::MAX);
        let range = t.range((d, 0u64)..(d, end)).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in range.rev().take(limit) {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (_, index) = k.value();
            let (peer, seq) = v.value();
            out.push((index, peer.to_string(), seq));
        }
        Ok(out)
    }

    /// Our answers to `peer`'s sequences from `from` on (the receipts and
    /// settling refusals we logged), in sequence order, at most `limit`:
    /// (sequence, byte offset of the answer's entry).
    pub fn answers_from(
        &self,
        peer: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let r = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        let f = tx.open_table(REFUSED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let range = r
            .range((peer, from)..=(peer, u64::MAX))
            .map_err(|e| self.err(e))?;
        for row in range {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let Ok(rec) = ReceivedRecord::decode(v.value()) else {
                continue;
            };
            if rec.receipt_index_plus_one != 0 {
                out.push((k.value().1, rec.receipt_offset));
                if out.len() >= limit {
                    break;
                }
            }
        }
        let range = f
            .range((peer, from)..=(peer, u64::MAX))
            .map_err(|e| self.err(e))?;
        for row in range.take(limit) {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().1, v.value()));
        }
        out.sort_unstable();
        out.truncate(limit);
        Ok(out)
    }

    /// How many messages each direction holds: (sent, received).
    pub fn counts(&self) -> Result<(u64, u64), HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let s = tx.open_table(SENT).map_err(|e| self.err(e))?;
        let r = tx.open_table(RECEIVED).map_err(|e| self.err(e))?;
        Ok((
            s.len().map_err(|e| self.err(e))?,
            r.len().map_err(|e| self.err(e))?,
        ))
    }
}

fn store_err(path: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Store {
        path: path.to_string(),
        detail: e.to_string(),
    }
}

struct Tables<'tx> {
    sent: redb::Table<'tx, (&'static str, u64), &'static [u8]>,
    received: redb::Table<'tx, (&'static str, u64), &'static [u8]>,
    by_id: redb::Table<'tx, (u128, u8, &'static str), u64>,
    order: redb::Table<'tx, (u8, u64), (&'static str, u64)>,
    refused: redb::Table<'tx, (&'static str, u64), u64>,
}

impl Tables<'_> {
    fn get_sent(&self, peer: &str, seq: u64) -> Result<Option<SentRecord>, redb::StorageError> {
        Ok(self
            .sent
            .get((peer, seq))?
            .and_then(|v| SentRecord::decode(v.value()).ok()))
    }

    fn get_received(
        &self,
        peer: &str,
        seq: u64,
    ) -> Result<Option<ReceivedRecord>, redb::StorageError> {
        Ok(self
            .received
            .get((peer, seq))?
            .and_then(|v| ReceivedRecord::decode(v.value()).ok()))
    }

    fn seq_of(
        &self,
        id: &str,
        dir: Direction,
        peer: &str,
    ) -> Result<Option<u64>, redb::StorageError> {
        let Some(id) = MessageId::parse(id) else {
            return Ok(None);
        };
        let key = (u128::from_be_bytes(id.0), dir.code(), peer);
        Ok(self.by_id.get(key)?.map(|v| v.value()))
    }

    /// What one entry does to the history. Entries the log holds were
    /// checked when they were logged; anything that does not decode or
    /// names nothing known is skipped, never trusted.
    fn fold(&mut self, e: Indexed<'_>) -> Result<(), redb::StorageError> {
        let index = e.entry.index;
        let Some(event) = &e.entry.event else {
            return Ok(());
        };
        match event {
            Event::MessageSent(pe) => {
                let Some(env) = &pe.envelope else {
                    return Ok(());
                };
                let Ok(msg) = Message::decode(env.payload.as_slice()) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                let rec = SentRecord {
                    log_index: index,
                    offset: e.offset,
                    hash: sha256(&env.payload).to_vec(),
                    ..Default::default()
                };
                self.sent
                    .insert((peer, msg.sequence), rec.encode_to_vec().as_slice())?;
                self.order
                    .insert((Direction::Sent.code(), index), (peer, msg.sequence))?;
                if let Some(id) = MessageId::parse(&msg.id) {
                    let key = (u128::from_be_bytes(id.0), Direction::Sent.code(), peer);
                    self.by_id.insert(key, msg.sequence)?;
                }
                // Our reply acknowledges the peer's message (the first does).
                if let Some(seq) = self.seq_of(&msg.reply_to, Direction::Received, peer)? {
                    if let Some(mut r) = self.get_received(peer, seq)? {
                        if r.acknowledged_by.is_empty() {
                            r.acknowledged_by = id_bytes(&msg.id);
                            self.received
                                .insert((peer, seq), r.encode_to_vec().as_slice())?;
                        }
                    }
                }
            }
            Event::ReceiptReceived(pe) => {
                let Some(r) = decode::<Receipt>(pe) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                if let Some(mut s) = self.get_sent(peer, r.sequence)? {
                    s.state = sent_state::DELIVERED;
                    s.receipt_index_plus_one = index.saturating_add(1);
                    s.receipt_offset = e.offset;
                    self.sent
                        .insert((peer, r.sequence), s.encode_to_vec().as_slice())?;
                }
            }
            Event::NegativeReceiptReceived(pe) => {
                let Some(n) = decode::<NegativeReceipt>(pe) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                if !n.settles {
                    return Ok(());
                }
                if let Some(mut s) = self.get_sent(peer, n.sequence)? {
                    if s.state == sent_state::OPEN && s.hash == n.payload_hash {
                        s.state = sent_state::REFUSED;
                        s.receipt_index_plus_one = index.saturating_add(1);
                        s.receipt_offset = e.offset;
                        self.sent
                            .insert((peer, n.sequence), s.encode_to_vec().as_slice())?;
                    }
                }
            }
            Event::MessageReceived(pe) => {
                let Some(env) = &pe.envelope else {
                    return Ok(());
                };
                let Ok(msg) = Message::decode(env.payload.as_slice()) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                let rec = ReceivedRecord {
                    log_index: index,
                    offset: e.offset,
                    ..Default::default()
                };
                self.received
                    .insert((peer, msg.sequence), rec.encode_to_vec().as_slice())?;
                self.order
                    .insert((Direction::Received.code(), index), (peer, msg.sequence))?;
                if let Some(id) = MessageId::parse(&msg.id) {
                    let key = (u128::from_be_bytes(id.0), Direction::Received.code(), peer);
                    self.by_id.insert(key, msg.sequence)?;
                }
                // The peer's reply acknowledges our message (the first does).
                if let Some(seq) = self.seq_of(&msg.reply_to, Direction::Sent, peer)? {
                    if let Some(mut s) = self.get_sent(peer, seq)? {
                        if s.acknowledged_by.is_empty() {
                            s.acknowledged_by = id_bytes(&msg.id);
                            s.response = msg.response;
                            self.sent
                                .insert((peer, seq), s.encode_to_vec().as_slice())?;
                        }
                    }
                }
            }
            Event::ReceiptSent(pe) => {
                let Some(r) = decode::<Receipt>(pe) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                if let Some(mut rec) = self.get_received(peer, r.sequence)? {
                    rec.receipt_index_plus_one = index.saturating_add(1);
                    rec.receipt_offset = e.offset;
                    self.received
                        .insert((peer, r.sequence), rec.encode_to_vec().as_slice())?;
                }
            }
            Event::NegativeReceiptSent(pe) => {
                // The core's rule (settle_refused): a settling refusal of a
                // number not yet settled becomes that number's answer.
                let Some(n) = decode::<NegativeReceipt>(pe) else {
                    return Ok(());
                };
                let peer = pe.peer.as_str();
                let key = (peer, n.sequence);
                if n.settles
                    && n.sequence != 0
                    && self.received.get(key)?.is_none()
                    && self.refused.get(key)?.is_none()
                {
                    self.refused.insert(key, e.offset)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn decode<M: prost::Message + Default>(pe: &crate::wire::proto::PeerEnvelope) -> Option<M> {
    M::decode(pe.envelope.as_ref()?.payload.as_slice()).ok()
}

/// A message id as its 16 bytes (a reply's id that is not one is kept as
/// a single zero byte: "acknowledged, by a reply without a proper id").
fn id_bytes(id: &str) -> Vec<u8> {
    MessageId::parse(id).map_or(vec![0], |i| i.0.to_vec())
}

/// Opens the index file at `path` (created 0600 if missing). A file the
/// store cannot open is damaged: it is replaced by an empty index, which
/// the caller then rebuilds from the log; `Ok((h, true))` says so.
pub fn open_or_replace(path: &Path) -> Result<(History, bool), HistoryError> {
    let create = || {
        crate::identity::files::private_open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| store_err(&path.display().to_string(), e))
    };
    if !path.exists() {
        create()?;
    }
    match History::open(path) {
        Ok(mut h) if h.version()? != VERSION => {
            h.clear()?;
            Ok((h, true))
        }
        Ok(h) => Ok((h, false)),
        Err(_) => {
            std::fs::remove_file(path).map_err(|e| store_err(&path.display().to_string(), e))?;
            create()?;
            Ok((History::open(path)?, true))
        }
    }
}

/// Folds a log into the index as the node reads it at start: entries
/// before the index's position are skipped (after checking, at the
/// position, that the log is still the one indexed), the rest are folded
/// in batches.
pub struct CatchUp {
    from: Position,
    batch: Vec<crate::audit::StoredEntry>,
    /// The log is not the one the index reflects (or ends before it).
    pub mismatch: bool,
    /// Entries folded.
    pub folded: u64,
    next_offset: u64,
}

/// Entries folded per index transaction while catching up.
const CATCH_UP_BATCH: usize = 4096;

impl CatchUp {
    /// Starts a catch-up from where `history` stands.
    pub fn new(history: &History) -> Result<Self, HistoryError> {
        let from = history.position()?;
        Ok(CatchUp {
            from,
            batch: Vec::new(),
            mismatch: false,
            folded: 0,
            next_offset: 0,
        })
    }

    /// Where the index stood when the catch-up began.
    pub fn position(&self) -> &Position {
        &self.from
    }

    /// Feeds the next entry of the log; `root_before` is the Merkle root
    /// of the log's entries before it (the caller's tree).
    pub fn feed(
        &mut self,
        history: &mut History,
        e: crate::audit::StoredEntry,
        root_before: impl FnOnce() -> [u8; 32],
        root_after: impl FnOnce() -> [u8; 32],
    ) -> Result<(), HistoryError> {
        let index = e.entry.index;
        if index == self.from.next_index
            && self.from.next_index > 0
            && (root_before() != self.from.root || e.offset != self.from.next_offset)
        {
            self.mismatch = true;
        }
        let end = e
            .offset
            .saturating_add(crate::audit::RECORD_HEADER_LEN as u64)
            .saturating_add(e.bytes.len() as u64);
        self.next_offset = end;
        if self.mismatch || index < self.from.next_index {
            return Ok(());
        }
        self.batch.push(e);
        if self.batch.len() >= CATCH_UP_BATCH {
            let after = Position {
                next_index: index.saturating_add(1),
                next_offset: end,
                root: root_after(),
            };
            self.flush(history, after, false)?;
        }
        Ok(())
    }

    /// Folds what is left once the log is read; `entries` is how many the
    /// log holds and `root` their Merkle root.
    pub fn finish(
        mut self,
        history: &mut History,
        entries: u64,
        root: [u8; 32],
    ) -> Result<Self, HistoryError> {
        if entries < self.from.next_index {
            self.mismatch = true;
        }
        if self.mismatch {
            return Ok(self);
        }
        let after = Position {
            next_index: entries,
            next_offset: self.next_offset.max(self.from.next_offset),
            root,
        };
        self.flush(history, after, true)?;
        Ok(self)
    }

    fn flush(
        &mut self,
        history: &mut History,
        after: Position,
        durable: bool,
    ) -> Result<(), HistoryError> {
        let batch = std::mem::take(&mut self.batch);
        self.folded = self.folded.saturating_add(batch.len() as u64);
        history.apply(
            batch.iter().map(|e| Indexed {
                entry: &e.entry,
                offset: e.offset,
            }),
            after,
            durable,
        )
    }
}

/// Folds entries just made durable (appended from byte `start` to `end`)
/// into the history index, which then stands at the core's tree `root`.
/// The index is made durable with each checkpoint; between them a machine
/// crash may lose its tail, which the next start folds in again.
pub fn fold_appended(
    h: &mut History,
    entries: &[crate::audit::Persisted],
    start: u64,
    end: u64,
    root: [u8; 32],
) -> Result<(), HistoryError> {
    let mut offset = start;
    let mut indexed = Vec::with_capacity(entries.len());
    let mut durable = false;
    for e in entries {
        indexed.push(Indexed {
            entry: &e.entry,
            offset,
        });
        durable |= matches!(
            e.entry.event,
            Some(crate::wire::proto::log_entry::Event::CheckpointIssued(_))
        );
        offset = offset
            .saturating_add(crate::audit::RECORD_HEADER_LEN as u64)
            .saturating_add(e.bytes.len() as u64);
    }
    let after = Position {
        next_index: entries
            .last()
            .map_or(0, |e| e.entry.index.saturating_add(1)),
        next_offset: end,
        root,
    };
    h.apply(indexed, after, durable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_of_an_older_layout_is_replaced_and_a_new_one_carries_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.redb");
        let (h, replaced) = open_or_replace(&path).unwrap();
        assert!(!replaced);
        assert_eq!(h.version().unwrap(), VERSION);
        // An index made before versions: entries folded in, no version.
        let after = Position {
            next_index: 3,
            next_offset: 300,
            root: [7; 32],
        };
        let mut h = h;
        h.apply(std::iter::empty(), after, true).unwrap();
        {
            let tx = h.db.begin_write().unwrap();
            tx.open_table(META).unwrap().remove("version").unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(h.version().unwrap(), 1);
        drop(h);
        let (h, replaced) = open_or_replace(&path).unwrap();
        assert!(replaced, "rebuilt from the log");
        assert_eq!(h.position().unwrap(), Position::default());
        assert_eq!(h.version().unwrap(), VERSION);
        // Reopened as it is now: kept.
        drop(h);
        let (_, replaced) = open_or_replace(&path).unwrap();
        assert!(!replaced);
    }
}
