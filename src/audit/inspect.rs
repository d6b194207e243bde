//! One flat, readable summary per log entry, for `audit show`, `export`
//! and `timeline`.

use prost::Message as _;
use serde::Serialize;

use super::checkpoint;
use crate::control::api::{kind_name, precedence_name};
use crate::wire::proto::{
    log_entry::Event, LinkState, LogEntry, Message, NackReason, NegativeReceipt, Receipt,
};

/// An entry, flattened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntrySummary {
    /// Log index.
    pub index: u64,
    /// Writer's wall clock.
    pub time_unix_ms: u64,
    /// Kind, e.g. `message-sent`.
    pub kind: &'static str,
    /// The other office, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Message id the entry is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The message's sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Precedence (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precedence: Option<String>,
    /// Thread (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Drill traffic (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exercise: Option<bool>,
    /// One line for people.
    pub detail: String,
}

/// All entry kinds, for `--kind` help and validation.
pub const KINDS: &[&str] = &[
    "node-started",
    "node-stopped",
    "peer-added",
    "link-up",
    "link-down",
    "message-sent",
    "message-received",
    "receipt-sent",
    "receipt-received",
    "nack-sent",
    "nack-received",
    "recovery",
    "checkpoint",
    "cosignature-issued",
    "cosignature-received",
    "equivocation",
    "escalation",
    "line-health",
    "alert-level",
    "relay-accepted",
    "relay-handed-over",
    "relay-receipt",
    "relay-expired",
];

/// Summarizes `entry`.
pub fn summarize(entry: &LogEntry) -> EntrySummary {
    let mut s = EntrySummary {
        index: entry.index,
        time_unix_ms: entry.time_unix_ms,
        kind: "unknown",
        peer: None,
        msg: None,
        sequence: None,
        precedence: None,
        thread: None,
        exercise: None,
        detail: String::new(),
    };
    let Some(event) = &entry.event else {
        s.detail = "entry of a later version".into();
        return s;
    };
    let payload = |pe: &crate::wire::proto::PeerEnvelope| {
        pe.envelope
            .as_ref()
            .map(|e| e.payload.clone())
            .unwrap_or_default()
    };
    match event {
        Event::NodeStarted(n) => {
            s.kind = "node-started";
            s.detail = format!("{} started ({})", n.office, n.software);
        }
        Event::NodeStopped(n) => {
            s.kind = "node-stopped";
            s.detail = format!("stopped: {}", n.reason);
        }
        Event::PeerAdded(p) => {
            s.kind = "peer-added";
            s.peer = Some(p.office.clone());
            s.detail = format!("pinned {} (fingerprint {})", p.office, p.card_fingerprint);
        }
        Event::LinkChanged(l) => {
            s.kind = if l.state == LinkState::Up as i32 {
                "link-up"
            } else {
                "link-down"
            };
            s.peer = Some(l.peer.clone());
            s.detail = l.detail.clone();
        }
        Event::MessageSent(pe) | Event::MessageReceived(pe) => {
            s.kind = if matches!(event, Event::MessageSent(_)) {
                "message-sent"
            } else {
                "message-received"
            };
            s.peer = Some(pe.peer.clone());
            if let Ok(m) = Message::decode(payload(pe).as_slice()) {
                s.msg = Some(m.id.clone());
                s.sequence = Some(m.sequence);
                s.precedence = Some(precedence_name(m.precedence()).into());
                s.thread = Some(m.thread.clone()).filter(|t| !t.is_empty());
                s.exercise = Some(m.exercise);
                s.detail = format!(
                    "{}{} {} {}: {}",
                    if m.exercise { "[EXERCISE] " } else { "" },
                    precedence_name(m.precedence()).to_uppercase(),
                    kind_name(m.kind()),
                    m.subject,
                    m.body.chars().take(80).collect::<String>()
                );
            }
        }
        Event::ReceiptSent(pe) | Event::ReceiptReceived(pe) => {
            s.kind = if matches!(event, Event::ReceiptSent(_)) {
                "receipt-sent"
            } else {
                "receipt-received"
            };
            s.peer = Some(pe.peer.clone());
            if let Ok(r) = Receipt::decode(payload(pe).as_slice()) {
                s.msg = Some(r.message_id.clone());
                s.sequence = Some(r.sequence);
                s.detail = format!(
                    "{} logged it at entry {} (log size {})",
                    r.from, r.log_index, r.log_size
                );
            }
        }
        Event::NegativeReceiptSent(pe) | Event::NegativeReceiptReceived(pe) => {
            s.kind = if matches!(event, Event::NegativeReceiptSent(_)) {
                "nack-sent"
            } else {
                "nack-received"
            };
            s.peer = Some(pe.peer.clone());
            if let Ok(n) = NegativeReceipt::decode(payload(pe).as_slice()) {
                s.msg = Some(n.message_id.clone()).filter(|m| !m.is_empty());
                s.sequence = Some(n.sequence).filter(|q| *q != 0);
                let reason = NackReason::try_from(n.reason)
                    .map(|r| r.as_str_name())
                    .unwrap_or("?");
                s.detail = format!("{reason}: {}", n.detail);
            }
        }
        Event::Recovery(r) => {
            s.kind = "recovery";
            s.detail = format!(
                "removed a torn tail of {} bytes at offset {}",
                r.truncated_bytes, r.truncated_at_offset
            );
        }
        Event::CheckpointIssued(c) => {
            s.kind = "checkpoint";
            if let Some((_, size, root)) = checkpoint::peek(&c.note) {
                s.detail = format!("size {size}, root {}", hex::encode(root.0));
            }
        }
        Event::CosignatureIssued(n) | Event::CosignatureReceived(n) => {
            let issued = matches!(event, Event::CosignatureIssued(_));
            s.kind = if issued {
                "cosignature-issued"
            } else {
                "cosignature-received"
            };
            s.peer = Some(n.peer.clone());
            if let Some((_, size, _)) = checkpoint::peek(&n.note) {
                s.detail = if issued {
                    format!("cosigned {}'s log at size {size}", n.peer)
                } else {
                    format!("{} cosigned this log at size {size}", n.peer)
                };
            }
        }
        Event::Escalation(e) => {
            s.kind = "escalation";
            s.peer = Some(e.peer.clone());
            s.msg = Some(e.message_id.clone());
            s.sequence = Some(e.sequence);
            s.detail = format!(
                "step {}: {} (no {}) {}",
                e.step, e.action, e.waiting_for, e.detail
            );
        }
        Event::LinkHealth(h) => {
            s.kind = "line-health";
            s.peer = Some(h.peer.clone());
            s.detail = format!("{}: {}", h.state, h.detail);
        }
        Event::AlertLevelChanged(a) => {
            s.kind = "alert-level";
            s.peer = Some(a.peer.clone());
            let level = crate::wire::proto::AlertLevel::try_from(a.level).unwrap_or_default();
            s.detail = format!(
                "{} (by {}): {}",
                crate::control::api::alert_level_name(level).to_uppercase(),
                a.by,
                a.reason
            );
        }
        Event::CardUpdateSent(pe) | Event::CardUpdateReceived(pe) => {
            let sent = matches!(event, Event::CardUpdateSent(_));
            s.kind = if sent {
                "card-update-sent"
            } else {
                "card-update-received"
            };
            s.peer = Some(pe.peer.clone());
            if let Ok(u) = crate::wire::proto::CardUpdate::decode(payload(pe).as_slice()) {
                s.detail = if sent {
                    format!(
                        "offered {} our new card {} (replacing {})",
                        pe.peer, u.new_fingerprint, u.old_fingerprint
                    )
                } else {
                    format!(
                        "pinned {}'s new card {} (replacing {})",
                        u.office, u.new_fingerprint, u.old_fingerprint
                    )
                };
            }
        }
        Event::CardUpdateAcceptedSent(pe) | Event::CardUpdateAcceptedReceived(pe) => {
            let sent = matches!(event, Event::CardUpdateAcceptedSent(_));
            s.kind = if sent {
                "card-update-accepted-sent"
            } else {
                "card-update-accepted-received"
            };
            s.peer = Some(pe.peer.clone());
            if let Ok(a) = crate::wire::proto::CardUpdateAccepted::decode(payload(pe).as_slice()) {
                s.detail = format!("{} accepted {}'s card {}", a.from, a.to, a.new_fingerprint);
            }
        }
        Event::RelayAccepted(p) | Event::RelayHandedOver(p) | Event::RelayExpired(p) => {
            let accepted = matches!(event, Event::RelayAccepted(_));
            s.kind = match event {
                Event::RelayAccepted(_) => "relay-accepted",
                Event::RelayHandedOver(_) => "relay-handed-over",
                _ => "relay-expired",
            };
            s.peer = Some(if accepted {
                p.from.clone()
            } else {
                p.to.clone()
            });
            s.msg = Some(p.message_id.clone());
            s.detail = format!(
                "{} -> {}: sealed frame {} ({} bytes)",
                p.from,
                p.to,
                hex::encode(p.sealed_hash.get(..8).unwrap_or(&p.sealed_hash)),
                p.size
            );
        }
        Event::RelayReceiptReceived(pe) => {
            s.kind = "relay-receipt";
            s.peer = Some(pe.peer.clone());
            if let Ok(r) = crate::wire::proto::RelayReceipt::decode(payload(pe).as_slice()) {
                s.msg = Some(r.message_id.clone());
                let state = crate::wire::proto::RelayState::try_from(r.state)
                    .map(|x| x.as_str_name())
                    .unwrap_or("?");
                s.detail = format!("{} says {state} {}", r.relay, r.reason);
            }
        }
        Event::EquivocationDetected(e) => {
            s.kind = "equivocation";
            s.peer = Some(e.peer.clone());
            s.detail = format!(
                "{} presented contradictory checkpoints ({})",
                e.peer, e.kind
            );
        }
    }
    s
}

/// What `audit show` filters on. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entry kinds (a prefix such as `message` matches `message-sent` and `message-received`).
    pub kind: Option<String>,
    /// Peer office.
    pub peer: Option<String>,
    /// Precedence name.
    pub precedence: Option<String>,
    /// Thread.
    pub thread: Option<String>,
    /// Message id (or a unique prefix of one).
    pub msg: Option<String>,
    /// From this time (Unix ms, inclusive).
    pub since_ms: Option<u64>,
    /// Until this time (Unix ms, exclusive).
    pub until_ms: Option<u64>,
}

impl Filter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &EntrySummary) -> bool {
        let opt_eq = |want: &Option<String>, got: &Option<String>| match want {
            None => true,
            Some(w) => got.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(w)),
        };
        self.kind
            .as_ref()
            .is_none_or(|k| s.kind.starts_with(k.as_str()))
            && opt_eq(&self.peer, &s.peer)
            && opt_eq(&self.precedence, &s.precedence)
            && opt_eq(&self.thread, &s.thread)
            && self
                .msg
                .as_ref()
                .is_none_or(|m| s.msg.as_deref().is_some_and(|g| g.starts_with(m.as_str())))
            && self.since_ms.is_none_or(|t| s.time_unix_ms >= t)
            && self.until_ms.is_none_or(|t| s.time_unix_ms < t)
    }
}

/// Parses a time given as RFC 3339 (`2026-11-28T09:00:00Z`) or Unix ms.
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
