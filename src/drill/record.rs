//! What happened in a drill, read back from the parties' audit logs.
//!
//! Both runners leave the same thing behind: one signed, hash-chained log
//! per party. The record is built from those logs alone (plus the labels
//! the script gave its messages and what the runner itself did), so the
//! report shows what the offices can prove, not what the harness believed.
//! Times are drill time: milliseconds from the start, divided by the
//! effective time scale, so they read like the scenario file.

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::audit::{self, LogError};
use crate::control::api::{alert_level_name, kind_name, precedence_name};
use crate::wire::proto::{log_entry::Event, AlertLevel, Kind, LinkState, LogEntry, Message};

/// One message the script sent, as the logs tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The script's label (empty for messages the script did not name).
    pub label: String,
    /// Message id.
    pub id: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// flash, immediate, priority, routine.
    pub precedence: String,
    /// Message kind.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Thread.
    pub thread: String,
    /// Label (or id) of the message it answers.
    pub reply_to: String,
    /// Marked as drill traffic.
    pub exercise: bool,
    /// When the sender logged it.
    pub sent_ms: u64,
    /// When the recipient logged it (first time).
    pub received_ms: Option<u64>,
    /// How many times the recipient logged it (1 is right).
    pub received_count: u32,
    /// The relay it came through (empty: direct).
    pub route: String,
    /// When the sender logged the signed receipt.
    pub receipted_ms: Option<u64>,
    /// When the sender logged the recipient's acknowledgement or reply.
    pub acknowledged_ms: Option<u64>,
    /// Escalation steps the sender's ladder fired for it.
    pub escalations: Vec<EscalationMark>,
}

/// A ladder step that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationMark {
    /// When.
    pub at_ms: u64,
    /// retransmit, reroute, alert, raise-alert-level.
    pub action: String,
    /// receipt or acknowledgement.
    pub waiting: String,
}

/// A change in how one party saw its line to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkMark {
    /// When.
    pub at_ms: u64,
    /// Who saw it.
    pub office: String,
    /// About which peer.
    pub peer: String,
    /// connected, disconnected (transport); up, degraded, silent (line checks).
    pub state: String,
}

/// A change of a channel's alert level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelMark {
    /// When.
    pub at_ms: u64,
    /// Whose channel.
    pub office: String,
    /// Towards whom.
    pub peer: String,
    /// normal, elevated, crisis.
    pub level: String,
}

/// A relay's passage entry (hash only; relays never see content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayMark {
    /// When.
    pub at_ms: u64,
    /// The relay.
    pub relay: String,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// The message id on the sealed header.
    pub message_id: String,
    /// accepted, handed-over, expired.
    pub state: String,
}

/// Everything the logs say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Messages, by time sent.
    pub messages: Vec<MessageRecord>,
    /// Link observations, by time.
    pub links: Vec<LinkMark>,
    /// Alert-level changes, by time.
    pub levels: Vec<LevelMark>,
    /// Relay passages, by time.
    pub relays: Vec<RelayMark>,
    /// Entries per party's log.
    pub log_entries: BTreeMap<String, u64>,
}

/// Converts log wall times to drill time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock ms at drill time zero.
    pub t0_wall_ms: u64,
    /// Effective time scale (real ms per drill ms).
    pub scale: f64,
}

impl Clock {
    /// Drill ms for a wall time.
    pub fn drill_ms(&self, wall_ms: u64) -> u64 {
        (wall_ms.saturating_sub(self.t0_wall_ms) as f64 / self.scale).round() as u64
    }
}

/// Reads every party's log (`logs`: party name and log path).
pub fn read_logs(
    logs: &[(String, std::path::PathBuf)],
) -> Result<BTreeMap<String, Vec<LogEntry>>, LogError> {
    let mut out = BTreeMap::new();
    for (name, path) in logs {
        let mut entries = Vec::new();
        audit::scan(path, |e| entries.push(e.entry))?;
        out.insert(name.clone(), entries);
    }
    Ok(out)
}

fn decode(pe: &crate::wire::proto::PeerEnvelope) -> Option<Message> {
    Message::decode(pe.envelope.as_ref()?.payload.as_slice()).ok()
}

/// Builds the record. `labels` maps message ids to the script's labels.
pub fn build(
    logs: &BTreeMap<String, Vec<LogEntry>>,
    labels: &BTreeMap<String, String>,
    clock: Clock,
) -> Record {
    let mut r = Record::default();
    // Receiving side first: (sender, id) -> (first time, count, via).
    let mut received: BTreeMap<(String, String), (u64, u32, String)> = BTreeMap::new();
    // Acknowledgements and replies the sender logged: (sender, id) -> time.
    let mut answered: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut receipts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut escalations: BTreeMap<(String, String), Vec<EscalationMark>> = BTreeMap::new();
    for (party, entries) in logs {
        r.log_entries.insert(party.clone(), entries.len() as u64);
        for e in entries {
            let at = clock.drill_ms(e.time_unix_ms);
            match &e.event {
                Some(Event::MessageReceived(pe)) => {
                    let Some(m) = decode(pe) else { continue };
                    let slot = received.entry((m.from.clone(), m.id.clone())).or_insert((
                        at,
                        0,
                        pe.via.clone(),
                    ));
                    slot.1 += 1;
                    if !m.reply_to.is_empty() {
                        // `party` (the original sender) now holds the answer.
                        answered
                            .entry((party.clone(), m.reply_to.clone()))
                            .or_insert(at);
                    }
                }
                Some(Event::ReceiptReceived(pe)) => {
                    if let Some(env) = &pe.envelope {
                        if let Ok(rc) = crate::wire::proto::Receipt::decode(env.payload.as_slice())
                        {
                            receipts.entry((party.clone(), rc.message_id)).or_insert(at);
                        }
                    }
                }
                Some(Event::Escalation(s)) => {
                    escalations
                        .entry((party.clone(), s.message_id.clone()))
                        .or_default()
                        .push(EscalationMark {
                            at_ms: at,
                            action: s.action.clone(),
                            waiting: s.waiting_for.clone(),
                        });
                }
                Some(Event::LinkChanged(l)) => r.links.push(LinkMark {
                    at_ms: at,
                    office: party.clone(),
                    peer: l.peer.clone(),
                    state: if l.state == LinkState::Up as i32 {
                        "connected"
                    } else {
                        "disconnected"
                    }
                    .into(),
                }),
                Some(Event::LinkHealth(h)) => r.links.push(LinkMark {
                    at_ms: at,
                    office: party.clone(),
                    peer: h.peer.clone(),
                    state: h.state.clone(),
                }),
                Some(Event::AlertLevelChanged(a)) => r.levels.push(LevelMark {
                    at_ms: at,
                    office: party.clone(),
                    peer: a.peer.clone(),
                    level: alert_level_name(
                        AlertLevel::try_from(a.level).unwrap_or(AlertLevel::Normal),
                    )
                    .into(),
                }),
                Some(Event::RelayAccepted(p))
                | Some(Event::RelayHandedOver(p))
                | Some(Event::RelayExpired(p)) => r.relays.push(RelayMark {
                    at_ms: at,
                    relay: party.clone(),
                    from: p.from.clone(),
                    to: p.to.clone(),
                    message_id: p.message_id.clone(),
                    state: match &e.event {
                        Some(Event::RelayAccepted(_)) => "accepted",
                        Some(Event::RelayHandedOver(_)) => "handed-over",
                        _ => "expired",
                    }
                    .into(),
                }),
                _ => {}
            }
        }
    }
    for (party, entries) in logs {
        for e in entries {
            let Some(Event::MessageSent(pe)) = &e.event else {
                continue;
            };
            let Some(m) = decode(pe) else { continue };
            let kind = Kind::try_from(m.kind).unwrap_or(Kind::Notification);
            if kind == Kind::Acknowledgement {
                continue; // shown as the acknowledged time of what it answers
            }
            let key = (party.clone(), m.id.clone());
            let recv = received.get(&key);
            r.messages.push(MessageRecord {
                label: labels.get(&m.id).cloned().unwrap_or_default(),
                id: m.id.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                precedence: precedence_name(m.precedence()).into(),
                kind: kind_name(kind).into(),
                subject: m.subject.clone(),
                thread: m.thread.clone(),
                reply_to: labels
                    .get(&m.reply_to)
                    .cloned()
                    .unwrap_or(m.reply_to.clone()),
                exercise: m.exercise,
                sent_ms: clock.drill_ms(e.time_unix_ms),
                received_ms: recv.map(|r| r.0),
                received_count: recv.map(|r| r.1).unwrap_or(0),
                route: recv.map(|r| r.2.clone()).unwrap_or_default(),
                receipted_ms: receipts.get(&key).copied(),
                acknowledged_ms: answered.get(&key).copied(),
                escalations: escalations.remove(&key).unwrap_or_default(),
            });
        }
    }
    r.messages
        .sort_by(|a, b| (a.sent_ms, &a.from, &a.id).cmp(&(b.sent_ms, &b.from, &b.id)));
    r.links
        .sort_by(|a, b| (a.at_ms, &a.office, &a.peer).cmp(&(b.at_ms, &b.office, &b.peer)));
    r.levels
        .sort_by(|a, b| (a.at_ms, &a.office, &a.peer).cmp(&(b.at_ms, &b.office, &b.peer)));
    r.relays.sort_by(|a, b| {
        (a.at_ms, &a.relay, &a.message_id).cmp(&(b.at_ms, &b.relay, &b.message_id))
    });
    r
}

/// Something the runner did or could not do (a script step, a fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    /// When (drill time).
    pub at_ms: u64,
    /// The party it concerns.
    pub party: String,
    /// What, in words.
    pub what: String,
    /// It could not be done (the reason is in `what`).
    pub failed: bool,
}
