//! Inbox and outbox as the operator sees them: index records joined with
//! the messages and receipts the log holds, and with what only the running
//! core knows (whether an unreceipted message has gone out yet).

use prost::Message as _;

use super::{sent_state, Direction, History, HistoryError, ReceivedRecord, SentRecord};
use crate::audit::{LogError, LogReader};
use crate::control::api::{self, InboxEntry, OutboxEntry};
use crate::core::OutState;
use crate::wire::proto::{
    frame::Body, log_entry::Event, Message, NegativeReceipt, Receipt, SignedEnvelope,
};
use crate::wire::MessageId;

/// Most entries one page may hold, whatever the caller asks.
pub const MAX_PAGE: usize = 1000;

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The index failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The log could not be read where the index points.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What the running core knows of a message it sent: its state (`Queued`
/// or `Sent` while unreceipted) and its transmissions this run.
pub type PendingState<'a> = &'a dyn Fn(&str, u64) -> Option<(OutState, u32)>;

/// A page request: newest first, at most `limit`, logged before log index
/// `before`, and (when set) logged at or after `since_unix_ms`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    /// Most entries (capped at [`MAX_PAGE`]; 0 means the default, 100).
    pub limit: usize,
    /// Cursor: only entries before this log index.
    pub before: Option<u64>,
    /// Only entries logged at or after this wall time.
    pub since_unix_ms: Option<u64>,
}

impl Page {
    fn limit(&self) -> usize {
        match self.limit {
            0 => 100,
            n => n.min(MAX_PAGE),
        }
    }
}

/// A page of results and the cursor for the next (older) one.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    /// The entries, newest first.
    pub items: Vec<T>,
    /// Pass as `before` for the next page; `None` when this was the last.
    pub next_before: Option<u64>,
}

fn message_at(log: &LogReader, offset: u64) -> Result<(LogEntryTime, Message), LogError> {
    let e = log.read_at(offset)?;
    let env = match e.entry.event {
        Some(Event::MessageSent(pe)) | Some(Event::MessageReceived(pe)) => pe.envelope,
        _ => None,
    };
    let msg = env
        .and_then(|env| Message::decode(env.payload.as_slice()).ok())
        .unwrap_or_default();
    Ok((
        LogEntryTime {
            index: e.entry.index,
            unix_ms: e.entry.time_unix_ms,
        },
        msg,
    ))
}

struct LogEntryTime {
    index: u64,
    unix_ms: u64,
}

fn envelope_at(log: &LogReader, offset: u64) -> Result<Option<SignedEnvelope>, LogError> {
    let e = log.read_at(offset)?;
    Ok(match e.entry.event {
        Some(Event::ReceiptReceived(pe)) | Some(Event::ReceiptSent(pe)) => pe.envelope,
        _ => None,
    })
}

/// The inbox entry for a received record.
pub fn inbox_entry(
    log: &LogReader,
    peer: &str,
    rec: &ReceivedRecord,
) -> Result<InboxEntry, LogError> {
    let (at, m) = message_at(log, rec.offset)?;
    Ok(InboxEntry {
        from: peer.to_string(),
        id: m.id.clone(),
        sequence: m.sequence,
        precedence: api::precedence_name(m.precedence()).into(),
        kind: api::kind_name(m.kind()).into(),
        subject: m.subject.clone(),
        body: m.body.clone(),
        thread: m.thread.clone(),
        reply_to: m.reply_to.clone(),
        language: m.language.clone(),
        exercise: m.exercise,
        created_unix_ms: m.created_unix_ms,
        received_unix_ms: at.unix_ms,
        log_index: at.index,
        acknowledged: !rec.acknowledged_by.is_empty(),
    })
}

/// The outbox entry for a sent record.
pub fn outbox_entry(
    log: &LogReader,
    peer: &str,
    rec: &SentRecord,
    pending: PendingState<'_>,
    elapsed_us: Option<u64>,
) -> Result<OutboxEntry, LogError> {
    let (at, m) = message_at(log, rec.offset)?;
    let run_attempts = pending(peer, m.sequence).map_or(0, |(_, a)| a);
    let (state, attempts) = match rec.state {
        sent_state::DELIVERED => (OutState::Delivered, run_attempts),
        sent_state::REFUSED => (OutState::Refused, run_attempts),
        // Open: the core says whether it went out; a message the core no
        // longer holds as pending (its peer was removed) shows as sent.
        _ => pending(peer, m.sequence).unwrap_or((OutState::Sent, 0)),
    };
    let delivery = if rec.state == sent_state::DELIVERED {
        envelope_at(log, rec.receipt_offset)?.map(|r| api::delivery(&r, elapsed_us))
    } else {
        None
    };
    Ok(OutboxEntry {
        to: peer.to_string(),
        id: m.id.clone(),
        sequence: m.sequence,
        precedence: api::precedence_name(m.precedence()).into(),
        subject: m.subject.clone(),
        state,
        attempts,
        created_unix_ms: m.created_unix_ms,
        delivery,
        exercise: m.exercise,
        log_index: at.index,
    })
}

/// A page of the inbox.
pub fn inbox(
    history: &History,
    log: &LogReader,
    page: Page,
) -> Result<Paged<InboxEntry>, ViewError> {
    let mut items = Vec::new();
    let rows = history.page(Direction::Received, page.before, page.limit())?;
    let next_before = next_cursor(&rows, page.limit());
    for (_, peer, seq) in &rows {
        if let Some(rec) = history.received(peer, *seq)? {
            let e = inbox_entry(log, peer, &rec)?;
            if page.since_unix_ms.is_some_and(|s| e.received_unix_ms < s) {
                return Ok(Paged {
                    items,
                    next_before: None,
                });
            }
            items.push(e);
        }
    }
    Ok(Paged { items, next_before })
}

/// A page of the outbox.
pub fn outbox(
    history: &History,
    log: &LogReader,
    page: Page,
    pending: PendingState<'_>,
) -> Result<Paged<OutboxEntry>, ViewError> {
    let mut items = Vec::new();
    let rows = history.page(Direction::Sent, page.before, page.limit())?;
    let next_before = next_cursor(&rows, page.limit());
    for (_, peer, seq) in &rows {
        if let Some(rec) = history.sent(peer, *seq)? {
            if page.since_unix_ms.is_some() {
                let at = log.read_at(rec.offset)?.entry.time_unix_ms;
                if page.since_unix_ms.is_some_and(|s| at < s) {
                    return Ok(Paged {
                        items,
                        next_before: None,
                    });
                }
            }
            items.push(outbox_entry(log, peer, &rec, pending, None)?);
        }
    }
    Ok(Paged { items, next_before })
}

/// Walks every page of a view, oldest first at the end: ask for
/// [`PageWalk::next`], hand each page to [`PageWalk::take`] until it
/// returns the whole list.
#[derive(Debug)]
pub struct PageWalk<T> {
    all: Vec<T>,
    before: Option<u64>,
}

impl<T> Default for PageWalk<T> {
    fn default() -> Self {
        PageWalk {
            all: Vec::new(),
            before: None,
        }
    }
}

impl<T> PageWalk<T> {
    /// The next page to ask for (the largest there is).
    pub fn next(&self) -> Page {
        Page {
            limit: MAX_PAGE,
            before: self.before,
            since_unix_ms: None,
        }
    }

    /// Takes a page (newest first); `log_index` reads an entry's cursor.
    /// Returns everything, oldest first, once a page comes back short.
    pub fn take(&mut self, items: Vec<T>, log_index: impl Fn(&T) -> u64) -> Option<Vec<T>> {
        let done = items.len() < MAX_PAGE;
        self.before = items.last().map(log_index);
        self.all.extend(items);
        if done || self.before.is_none() {
            let mut all = std::mem::take(&mut self.all);
            all.reverse();
            return Some(all);
        }
        None
    }
}

fn next_cursor(rows: &[(u64, String, u64)], limit: usize) -> Option<u64> {
    if rows.len() < limit {
        return None;
    }
    rows.last().map(|(i, _, _)| *i)
}

/// An answer we logged to one of a peer's sequences, ready to go on the
/// wire again: a retransmission of the message gets the same answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAnswer {
    /// The peer's sequence.
    pub sequence: u64,
    /// Our signed receipt or settling negative receipt.
    pub body: Body,
    /// The message hash it names (a receipt's message hash, a refusal's
    /// payload hash): a copy with another hash is not the message answered.
    pub hash: [u8; 32],
}

/// Our answers to `peer`'s sequences from `from` on, in order, at most
/// `limit` (what a resumption resends, and a duplicate's answer).
pub fn answers_from(
    history: &History,
    log: &LogReader,
    peer: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<LoggedAnswer>, ViewError> {
    let mut out = Vec::new();
    for (sequence, offset) in history.answers_from(peer, from, limit)? {
        let e = log.read_at(offset)?;
        let answer = match e.entry.event {
            Some(Event::ReceiptSent(pe)) => pe.envelope.and_then(|env| {
                let r = Receipt::decode(env.payload.as_slice()).ok()?;
                Some((Body::Receipt(env), r.message_hash))
            }),
            Some(Event::NegativeReceiptSent(pe)) => pe.envelope.and_then(|env| {
                let n = NegativeReceipt::decode(env.payload.as_slice()).ok()?;
                Some((Body::NegativeReceipt(env), n.payload_hash))
            }),
            _ => None,
        };
        if let Some((body, hash)) = answer {
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                out.push(LoggedAnswer {
                    sequence,
                    body,
                    hash,
                });
            }
        }
    }
    Ok(out)
}

/// Our sent message `id`, if we sent one.
pub fn find_sent(
    history: &History,
    log: &LogReader,
    id: &MessageId,
    pending: PendingState<'_>,
    elapsed_us: Option<u64>,
) -> Result<Option<OutboxEntry>, ViewError> {
    for f in history.find(id)? {
        if f.direction == Direction::Sent {
            if let Some(rec) = history.sent(&f.peer, f.sequence)? {
                return Ok(Some(outbox_entry(log, &f.peer, &rec, pending, elapsed_us)?));
            }
        }
    }
    Ok(None)
}

/// A received message `id`: the first office's, if two sent that id.
pub fn find_received(
    history: &History,
    log: &LogReader,
    id: &MessageId,
) -> Result<Option<(InboxEntry, Message)>, ViewError> {
    for f in history.find(id)? {
        if f.direction == Direction::Received {
            if let Some(rec) = history.received(&f.peer, f.sequence)? {
                let (_, m) = message_at(log, rec.offset)?;
                return Ok(Some((inbox_entry(log, &f.peer, &rec)?, m)));
            }
        }
    }
    Ok(None)
}
