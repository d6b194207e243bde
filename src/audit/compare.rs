//! Two offices' logs side by side: `cross-check` (do they agree?) and
//! `timeline` (what happened, in order, on both sides).

use std::collections::BTreeMap;

use prost::Message as _;
use serde::Serialize;

use super::checkpoint;
use super::merkle::Tree;
use super::store::{scan, LogError};
use crate::control::api::precedence_name;
use crate::wire::proto::{log_entry::Event, Message, PeerEnvelope, Receipt, SignedEnvelope};

/// What one log says about its traffic with one peer.
#[derive(Default)]
struct Side {
    office: String,
    tree: Tree,
    /// msg id -> (index, time, envelope bytes, message)
    sent: BTreeMap<String, (u64, u64, Vec<u8>, Message)>,
    received: BTreeMap<String, (u64, u64, Vec<u8>, Message)>,
    /// msg id -> (index, time, receipt envelope bytes, receipt)
    receipts_sent: BTreeMap<String, (u64, u64, Vec<u8>, Receipt)>,
    receipts_received: BTreeMap<String, (u64, u64, Vec<u8>, Receipt)>,
    /// Received message id -> relay it came through.
    via: BTreeMap<String, String>,
    /// Relay receipts held: (time, message id, relay, state).
    relay_receipts: Vec<(u64, String, String, String)>,
    /// notes
    cosigned_by_peer: Vec<(u64, Vec<u8>)>,
    cosigned_for_peer: Vec<(u64, Vec<u8>)>,
}

fn env_bytes(pe: &PeerEnvelope) -> (Vec<u8>, SignedEnvelope) {
    let env = pe.envelope.clone().unwrap_or_default();
    (env.encode_to_vec(), env)
}

fn load(path: &std::path::Path, office: &str, peer: &str) -> Result<Side, LogError> {
    let mut s = Side {
        office: office.to_string(),
        ..Default::default()
    };
    scan(path, |e| {
        s.tree.push(&e.bytes);
        let (i, t) = (e.entry.index, e.entry.time_unix_ms);
        match &e.entry.event {
            Some(Event::MessageSent(pe)) | Some(Event::MessageReceived(pe)) if pe.peer == peer => {
                let (bytes, env) = env_bytes(pe);
                if let Ok(m) = Message::decode(env.payload.as_slice()) {
                    if !pe.via.is_empty() {
                        s.via.insert(m.id.clone(), pe.via.clone());
                    }
                    let map = if matches!(e.entry.event, Some(Event::MessageSent(_))) {
                        &mut s.sent
                    } else {
                        &mut s.received
                    };
                    map.insert(m.id.clone(), (i, t, bytes, m));
                }
            }
            Some(Event::ReceiptSent(pe)) | Some(Event::ReceiptReceived(pe)) if pe.peer == peer => {
                let (bytes, env) = env_bytes(pe);
                if let Ok(r) = Receipt::decode(env.payload.as_slice()) {
                    let map = if matches!(e.entry.event, Some(Event::ReceiptSent(_))) {
                        &mut s.receipts_sent
                    } else {
                        &mut s.receipts_received
                    };
                    map.entry(r.message_id.clone()).or_insert((i, t, bytes, r));
                }
            }
            Some(Event::RelayReceiptReceived(pe)) => {
                let (_, env) = env_bytes(pe);
                if let Ok(r) = crate::wire::proto::RelayReceipt::decode(env.payload.as_slice()) {
                    if r.to == peer {
                        let state = crate::wire::proto::RelayState::try_from(r.state)
                            .map(|x| {
                                x.as_str_name()
                                    .trim_start_matches("RELAY_STATE_")
                                    .to_lowercase()
                            })
                            .unwrap_or_default();
                        s.relay_receipts.push((t, r.message_id, r.relay, state));
                    }
                }
            }
            Some(Event::CosignatureReceived(n)) if n.peer == peer => {
                s.cosigned_by_peer.push((i, n.note.clone()))
            }
            Some(Event::CosignatureIssued(n)) if n.peer == peer => {
                s.cosigned_for_peer.push((i, n.note.clone()))
            }
            _ => {}
        }
    })?;
    Ok(s)
}

/// The result of comparing two logs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CrossCheck {
    /// First office.
    pub a: String,
    /// Second office.
    pub b: String,
    /// Messages compared, a to b and b to a.
    pub messages: (usize, usize),
    /// Receipts compared.
    pub receipts: usize,
    /// Cosigned checkpoints compared.
    pub cosignatures: usize,
    /// Not yet settled (in flight when the logs were taken); not errors.
    pub pending: Vec<String>,
    /// Where the logs disagree.
    pub discrepancies: Vec<String>,
}

impl CrossCheck {
    /// Whether the logs agree.
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

fn one_way(from: &Side, to: &Side, out: &mut CrossCheck) -> usize {
    let (f, t) = (&from.office, &to.office);
    for (id, (i, _, bytes, _)) in &from.sent {
        match to.received.get(id) {
            Some((j, _, theirs, _)) if theirs != bytes => out.discrepancies.push(format!(
                "message {id}: {f} sent (entry {i}) differs from what {t} logged as received (entry {j})"
            )),
            Some(_) => {}
            None if from.receipts_received.contains_key(id) => out.discrepancies.push(format!(
                "message {id}: {f} holds {t}'s receipt (entry {i}) but {t}'s log has no such message"
            )),
            None => out.pending.push(format!("message {id} from {f}: not (yet) in {t}'s log")),
        }
    }
    for (id, (j, ..)) in &to.received {
        if !from.sent.contains_key(id) {
            out.discrepancies.push(format!(
                "message {id}: {t} logged it as received from {f} (entry {j}) but {f}'s log never sent it"
            ));
        }
    }
    for (id, (i, _, bytes, _)) in &from.receipts_received {
        out.receipts = out.receipts.saturating_add(1);
        match to.receipts_sent.get(id) {
            Some((_, _, theirs, _)) if theirs != bytes => out.discrepancies.push(format!(
                "receipt for {id}: the copy {f} holds (entry {i}) differs from the one {t} logged"
            )),
            Some(_) => {}
            None => out.discrepancies.push(format!(
                "receipt for {id}: {f} holds one (entry {i}) that {t}'s log never issued"
            )),
        }
    }
    for id in to.receipts_sent.keys() {
        if !from.receipts_received.contains_key(id) {
            out.pending
                .push(format!("receipt for {id} from {t}: not (yet) in {f}'s log"));
        }
    }
    // Checkpoints of `from` that `to` cosigned must still match `from`'s log.
    for (j, note) in &to.cosigned_for_peer {
        out.cosignatures = out.cosignatures.saturating_add(1);
        if let Some((_, size, root)) = checkpoint::peek(note) {
            if from.tree.root_at(size) != Some(root) {
                out.discrepancies.push(format!(
                    "{t} cosigned {f}'s log at size {size} (its entry {j}), but {f}'s log no longer has that root there: history was rewritten"
                ));
            }
            let held = from.cosigned_by_peer.iter().any(|(_, n)| n == note);
            if !held {
                out.pending.push(format!(
                    "{t}'s cosignature of {f} at size {size}: not (yet) in {f}'s log"
                ));
            }
        }
    }
    for (i, note) in &from.cosigned_by_peer {
        if !to.cosigned_for_peer.iter().any(|(_, n)| n == note) {
            let size = checkpoint::peek(note).map(|c| c.1).unwrap_or(0);
            out.discrepancies.push(format!(
                "{f} holds a cosignature by {t} at size {size} (entry {i}) that {t}'s log never issued"
            ));
        }
    }
    from.sent.len()
}

/// Compares the logs of offices `a` and `b`.
pub fn cross_check(
    a_log: &std::path::Path,
    a: &str,
    b_log: &std::path::Path,
    b: &str,
) -> Result<CrossCheck, LogError> {
    let sa = load(a_log, a, b)?;
    let sb = load(b_log, b, a)?;
    let mut out = CrossCheck {
        a: a.into(),
        b: b.into(),
        ..Default::default()
    };
    let ab = one_way(&sa, &sb, &mut out);
    let ba = one_way(&sb, &sa, &mut out);
    out.messages = (ab, ba);
    Ok(out)
}

/// One row of the merged timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    /// Wall clock of the office that logged it.
    pub time_unix_ms: u64,
    /// Office whose log it is from.
    pub office: String,
    /// sent, received, receipted.
    pub event: String,
    /// Message id.
    pub msg: String,
    /// Precedence.
    pub precedence: String,
    /// Subject.
    pub subject: String,
    /// Milliseconds since the message was created (sender's clock).
    pub since_created_ms: Option<i64>,
}

/// Both logs' message events, merged by time.
pub fn timeline(
    a_log: &std::path::Path,
    a: &str,
    b_log: &std::path::Path,
    b: &str,
) -> Result<Vec<TimelineRow>, LogError> {
    let sa = load(a_log, a, b)?;
    let sb = load(b_log, b, a)?;
    let mut rows = Vec::new();
    for (side, other) in [(&sa, &sb), (&sb, &sa)] {
        for (id, (_, t, _, m)) in &side.sent {
            rows.push(row(
                *t,
                &side.office,
                format!("sent to {}", other.office),
                id,
                m,
            ));
        }
        for (id, (_, t, _, m)) in &side.received {
            let via = side
                .via
                .get(id)
                .map(|r| format!(" via {r}"))
                .unwrap_or_default();
            rows.push(row(
                *t,
                &side.office,
                format!("received from {}{via}", other.office),
                id,
                m,
            ));
        }
        for (t, id, relay, state) in &side.relay_receipts {
            if let Some((_, _, _, m)) = side.sent.get(id) {
                rows.push(row(
                    *t,
                    &side.office,
                    format!("relay {relay}: {state}"),
                    id,
                    m,
                ));
            }
        }
        for (id, (_, t, _, _)) in &side.receipts_received {
            if let Some((_, _, _, m)) = side.sent.get(id) {
                rows.push(row(
                    *t,
                    &side.office,
                    format!("receipt from {}", other.office),
                    id,
                    m,
                ));
            }
        }
    }
    // Same millisecond: sent before received before receipt.
    let rank = |r: &TimelineRow| match r.event.split(' ').next() {
        Some("sent") => 0,
        Some("received") => 1,
        _ => 2,
    };
    rows.sort_by(|x, y| (x.time_unix_ms, rank(x), &x.msg).cmp(&(y.time_unix_ms, rank(y), &y.msg)));
    Ok(rows)
}

fn row(t: u64, office: &str, event: String, id: &str, m: &Message) -> TimelineRow {
    TimelineRow {
        time_unix_ms: t,
        office: office.to_string(),
        event,
        msg: id.to_string(),
        precedence: precedence_name(m.precedence()).to_string(),
        subject: m.subject.clone(),
        since_created_ms: Some((t as i64).saturating_sub(m.created_unix_ms as i64)),
    }
}
