//! What a simulated office's operator would see: its durable log folded
//! into an in-memory history index and read through the same views the node
//! serves (the core keeps no history, so tests look here, as users do).

use crate::audit::merkle::Tree;
use crate::audit::{LogReader, Persisted};
use crate::control::api::{InboxEntry, OutboxEntry};
use crate::core::{Core, OutState};
use crate::history::views::{self, PageWalk};
use crate::history::{History, Indexed, Position, SentRecord};
use prost::Message as _;

use crate::wire::proto::{log_entry::Event, Message, Response, SignedEnvelope};
use crate::wire::MessageId;

/// An office's history as its views show it, with its running core (when
/// up) for what only the core knows: whether an open message went out,
/// and how often this run.
pub struct OfficeHistory<'a> {
    /// The index over the office's durable log.
    pub history: History,
    /// The log's bytes.
    pub log: LogReader,
    core: Option<&'a Core>,
}

impl<'a> OfficeHistory<'a> {
    /// Folds `disk` (a durable log, oldest first) into a fresh index.
    ///
    /// # Panics
    /// When the in-memory index fails, which only a bug can cause.
    pub fn of(disk: &[Persisted], core: Option<&'a Core>) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(disk.len());
        let mut tree = Tree::new();
        for p in disk {
            offsets.push(bytes.len() as u64);
            crate::audit::record::frame(&p.bytes, &mut bytes).expect("entries fit a record");
            tree.push(&p.bytes);
        }
        let mut history = History::in_memory().expect("in-memory index");
        let after = Position {
            next_index: disk.len() as u64,
            next_offset: bytes.len() as u64,
            root: tree.root().0,
        };
        let entries = disk.iter().zip(&offsets).map(|(p, &offset)| Indexed {
            entry: &p.entry,
            offset,
        });
        history
            .apply(entries, after, true)
            .expect("in-memory index folds");
        OfficeHistory {
            history,
            log: LogReader::in_memory(bytes),
            core,
        }
    }

    fn pending(&self, peer: &str, seq: u64) -> Option<(OutState, u32)> {
        self.core?.pending_state(peer, seq)
    }

    /// Every received message, oldest first.
    pub fn inbox(&self) -> Vec<InboxEntry> {
        let mut walk = PageWalk::default();
        loop {
            let page = views::inbox(&self.history, &self.log, walk.next()).expect("inbox view");
            if let Some(all) = walk.take(page.items, |e| e.log_index) {
                return all;
            }
        }
    }

    /// Every sent message, oldest first.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        let pending = |peer: &str, seq: u64| self.pending(peer, seq);
        let mut walk = PageWalk::default();
        loop {
            let page = views::outbox(&self.history, &self.log, walk.next(), &pending)
                .expect("outbox view");
            if let Some(all) = walk.take(page.items, |e| e.log_index) {
                return all;
            }
        }
    }

    /// Our sent message `id`.
    pub fn find_sent(&self, id: &MessageId) -> Option<OutboxEntry> {
        let pending = |peer: &str, seq: u64| self.pending(peer, seq);
        views::find_sent(&self.history, &self.log, id, &pending, None).expect("find sent")
    }

    /// A received message `id`, with the message itself.
    pub fn find_received(&self, id: &MessageId) -> Option<(InboxEntry, Message)> {
        views::find_received(&self.history, &self.log, id).expect("find received")
    }

    /// The index record of our message `id`.
    pub fn sent_record(&self, id: &MessageId) -> Option<SentRecord> {
        let o = self.find_sent(id)?;
        self.history.sent(&o.to, o.sequence).expect("sent record")
    }

    /// Our sent message `id` as signed and logged.
    pub fn sent_envelope(&self, id: &MessageId) -> Option<SignedEnvelope> {
        let r = self.sent_record(id)?;
        match self.log.read_at(r.offset).expect("log entry").entry.event {
            Some(Event::MessageSent(pe)) => pe.envelope,
            _ => None,
        }
    }

    /// The receipt our message `id` was delivered with.
    pub fn receipt(&self, id: &MessageId) -> Option<SignedEnvelope> {
        let hex = self.find_sent(id)?.delivery?.receipt_hex;
        SignedEnvelope::decode(hex::decode(hex).ok()?.as_slice()).ok()
    }

    /// The response the peer stated in its first reply to our message
    /// `id`, when it has replied.
    pub fn acknowledged(&self, id: &MessageId) -> Option<Response> {
        let r = self.sent_record(id)?;
        (!r.acknowledged_by.is_empty()).then(|| Response::try_from(r.response).unwrap_or_default())
    }
}
