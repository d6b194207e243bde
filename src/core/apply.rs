//! The core's state as a fold over its log: [`Core::apply`] is what each
//! entry does to the state, run on every entry the core persists live and
//! on every entry read back at start ([`Core::replay`]), so that the two
//! cannot drift. A live handler checks what arrived, persists the entry
//! (which applies it), then does only what belongs to this run: transmit,
//! arm timers, tell the operator.

use std::collections::BTreeMap;

use prost::Message as _;

use super::channel::{Answer, Channel, Pending};
use super::office::{Core, ReplayError};
use super::output::CoreEvent;
use super::receipts::{mark_delivered, mark_refused};
use super::receive::settle_refused;
use super::Now;
use super::OutState;
use crate::audit::checkpoint::{self, SignedCheckpoint};
use crate::identity::OfficeName;
use crate::wire::proto::{
    log_entry::Event, LogEntry, NegativeReceipt, PeerEnvelope, Receipt, SignedEnvelope,
};
use crate::wire::store::MessageHead;
use crate::wire::{sha256, MessageId};

impl Core {
    /// Applies one entry read back from the log (`bytes` is its exact
    /// stored encoding). Produces no output.
    pub fn replay(&mut self, entry: &LogEntry, bytes: &[u8]) -> Result<(), ReplayError> {
        if entry.index != self.next_index {
            return Err(ReplayError {
                index: entry.index,
                why: format!("expected index {}", self.next_index),
            });
        }
        self.next_index = self.next_index.saturating_add(1);
        self.tree.push(bytes);
        self.apply(entry, None).map_err(|why| ReplayError {
            index: entry.index,
            why,
        })
    }

    /// What `entry` does to the state; `live` is the time when the core
    /// persists it now, `None` when it is read back at start (timers are
    /// then armed by [`Core::start`]).
    pub(super) fn apply(&mut self, entry: &LogEntry, live: Option<Now>) -> Result<(), String> {
        let bad = |why: String| why;
        let Some(event) = &entry.event else {
            return Ok(());
        };
        match event {
            Event::MessageSent(pe) => {
                let (env, msg) = own_message_head(pe).map_err(bad)?;
                let Some(ch) = channel_for(&mut self.channels, &pe.peer) else {
                    return Ok(()); // peer since removed from config: history only
                };
                let seq = msg.sequence;
                ch.next_seq = ch.next_seq.max(seq.saturating_add(1));
                let ps = ch.prec_sent.get_mut(msg.precedence);
                *ps = (*ps).max(msg.precedence_sequence);
                // Our own entries hold ids we made; one that does not parse
                // is a damaged log, which replay refuses.
                let id = MessageId::parse(&msg.id)
                    .ok_or_else(|| bad(format!("our message has id {:?}", msg.id)))?;
                ch.pending.insert(
                    seq,
                    Pending {
                        id,
                        envelope: env.clone(),
                        hash: sha256(&env.payload),
                        precedence: precedence_of(msg.precedence),
                        attempts: 0,
                        on_link: false,
                        deadline: None,
                    },
                );
                let peer = ch.peer.clone();
                let base_mono = live.map_or(0, |n| n.mono_ms as i64);
                let awaits_ack = msg.kind != crate::wire::proto::Kind::Acknowledgement as i32;
                self.track_sent(
                    &peer,
                    seq,
                    id,
                    (precedence_of(msg.precedence), awaits_ack),
                    entry.time_unix_ms,
                    base_mono,
                );
            }
            Event::ReceiptReceived(pe) => {
                let r: Receipt = decode_env(pe).map_err(bad)?;
                if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                    mark_delivered(ch, r.sequence);
                    let peer = ch.peer.clone();
                    self.track_receipted(&peer, r.sequence);
                }
            }
            Event::NegativeReceiptReceived(pe) => {
                let n: NegativeReceipt = decode_env(pe).map_err(bad)?;
                if n.settles {
                    if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                        let peer = ch.peer.clone();
                        if mark_refused(ch, n.sequence, &n.payload_hash) {
                            self.track_refused(&peer, n.sequence);
                        }
                    }
                }
            }
            Event::MessageReceived(pe) => {
                let env = pe.envelope.clone().unwrap_or_default();
                let msg =
                    MessageHead::decode(env.payload.as_slice()).map_err(|e| bad(e.to_string()))?;
                let Some(ch) = channel_for(&mut self.channels, &pe.peer) else {
                    return Ok(());
                };
                let hash = sha256(&env.payload);
                ch.received.insert(msg.sequence);
                ch.received_count = ch.received_count.saturating_add(1);
                if msg.precedence_sequence != 0 {
                    ch.prec_received
                        .get_mut(msg.precedence)
                        .insert(msg.precedence_sequence);
                }
                self.unreceipted.push((
                    ch.peer.clone(),
                    msg.sequence,
                    entry.index,
                    entry.time_unix_ms,
                    hash,
                    msg.id.clone(),
                ));
                let peer = ch.peer.clone();
                if !msg.reply_to.is_empty() {
                    let answered = self.track_acknowledged(&peer, &msg.reply_to);
                    // Live, the operator hears of it; read back, it is history.
                    if let (Some(id), Some(_)) = (answered, live) {
                        self.out.events.push(CoreEvent::Acknowledged {
                            peer: peer.clone(),
                            id,
                        });
                    }
                }
            }
            Event::ReceiptSent(pe) => {
                let r: Receipt = decode_env(pe).map_err(bad)?;
                if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                    let hash: [u8; 32] = r.message_hash.as_slice().try_into().unwrap_or([0; 32]);
                    let env = pe.envelope.clone().unwrap_or_default();
                    ch.answers.insert(r.sequence, Answer::Receipt(env), hash);
                    self.unreceipted
                        .retain(|u| !(u.0 == ch.peer && u.1 == r.sequence));
                }
            }
            Event::NegativeReceiptSent(pe) => {
                let n: NegativeReceipt = decode_env(pe).map_err(bad)?;
                if let (true, Some(ch), Some(env)) = (
                    n.settles,
                    channel_for(&mut self.channels, &pe.peer),
                    pe.envelope.as_ref(),
                ) {
                    let hash = <[u8; 32]>::try_from(n.payload_hash.as_slice()).unwrap_or([0; 32]);
                    settle_refused(ch, &n, env.clone(), hash);
                }
            }
            Event::CheckpointIssued(c) => {
                let (origin, size, root) =
                    checkpoint::peek(&c.note).ok_or_else(|| bad("unreadable checkpoint".into()))?;
                self.latest_checkpoint = Some(SignedCheckpoint {
                    origin,
                    size,
                    root,
                    note: c.note.clone(),
                });
            }
            Event::CosignatureIssued(n) => {
                if let Some(ch) = channel_for(&mut self.channels, &n.peer) {
                    if let Some((origin, size, root)) = checkpoint::peek(&n.note) {
                        ch.i_cosigned = Some(SignedCheckpoint {
                            origin,
                            size,
                            root,
                            note: n.note.clone(),
                        });
                    }
                }
            }
            Event::CosignatureReceived(n) => {
                if let Some(ch) = channel_for(&mut self.channels, &n.peer) {
                    if let Some((_, size, _)) = checkpoint::peek(&n.note) {
                        ch.peer_cosigned = ch.peer_cosigned.max(size);
                    }
                }
            }
            Event::PeerAdded(p) => {
                self.pinned
                    .insert(p.office.clone(), p.card_fingerprint.clone());
            }
            Event::AlertLevelChanged(_) => self.apply_watch(event),
            Event::CardUpdateSent(_)
            | Event::CardUpdateReceived(_)
            | Event::CardUpdateAcceptedSent(_)
            | Event::CardUpdateAcceptedReceived(_) => self.apply_card_update(event),
            Event::RelayAccepted(_) | Event::RelayHandedOver(_) | Event::RelayExpired(_) => {
                self.apply_relay(event, entry.time_unix_ms)
            }
            // The step taken; the live handler has already scheduled the
            // next one, which `start` does after a replay.
            Event::Escalation(_) => self.apply_watch(event),
            // History only.
            Event::RelayReceiptReceived(_) => {}
            Event::NodeStarted(_)
            | Event::NodeStopped(_)
            | Event::LinkChanged(_)
            | Event::LinkHealth(_)
            | Event::EquivocationDetected(_)
            | Event::Recovery(_) => {}
        }
        Ok(())
    }
}

pub(super) fn channel_for<'a>(
    channels: &'a mut BTreeMap<OfficeName, Channel>,
    peer: &str,
) -> Option<&'a mut Channel> {
    let name = OfficeName::new(peer).ok()?;
    channels.get_mut(&name)
}

pub(super) fn decode_env<M: prost::Message + Default>(pe: &PeerEnvelope) -> Result<M, String> {
    let env = pe.envelope.as_ref().ok_or("entry has no envelope")?;
    M::decode(env.payload.as_slice()).map_err(|e| e.to_string())
}

/// A precedence number as the wire's enum (unspecified when unknown, as
/// prost's accessor reads it).
fn precedence_of(p: i32) -> crate::wire::proto::Precedence {
    crate::wire::proto::Precedence::try_from(p).unwrap_or_default()
}

/// Our logged message's envelope and the fields the fold reads.
fn own_message_head(pe: &PeerEnvelope) -> Result<(&SignedEnvelope, MessageHead), String> {
    let env = pe.envelope.as_ref().ok_or("entry has no envelope")?;
    let msg = MessageHead::decode(env.payload.as_slice()).map_err(|e| e.to_string())?;
    Ok((env, msg))
}

impl Core {
    /// The state the log determines, as text: what a core replayed from
    /// the same log must hold too. Leaves out what belongs to this run
    /// (links, timers, retransmission attempts, health). Tests and the
    /// simulator compare a live core with one replayed from its log.
    pub fn fold_digest(&self) -> String {
        use std::fmt::Write as _;
        let mut d = String::new();
        let _ = writeln!(
            d,
            "index {} tree {} {} checkpoint {:?}",
            self.next_index,
            self.tree.size(),
            hex::encode(self.tree.root().0),
            self.latest_checkpoint
                .as_ref()
                .map(|c| (c.size, hex::encode(sha256(&c.note))))
        );
        let _ = writeln!(d, "pinned {:?}", self.pinned);
        let _ = writeln!(d, "card updates {}", self.card_updates.digest());
        let _ = writeln!(d, "unreceipted {:?}", self.unreceipted);
        let spool: Vec<(String, &str, &str, u64)> = self
            .spool
            .iter()
            .map(|(h, s)| {
                (
                    hex::encode(h),
                    s.from.as_str(),
                    s.to.as_str(),
                    s.accepted_unix_ms,
                )
            })
            .collect();
        let _ = writeln!(d, "spool {spool:?}");
        for (name, ch) in &self.channels {
            let _ = writeln!(
                d,
                "channel {name}: next {} delivered {} received {:?} count {} receipted {:?}",
                ch.next_seq, ch.delivered, ch.received, ch.received_count, ch.receipted
            );
            let _ = writeln!(
                d,
                "  prec sent {:?} received {:?}",
                ch.prec_sent, ch.prec_received
            );
            for (seq, p) in &ch.pending {
                let _ = writeln!(
                    d,
                    "  pending {seq} {} {} {:?}",
                    p.id,
                    hex::encode(p.hash),
                    p.precedence
                );
            }
            let answers = ch.answers.digest();
            let forgotten = ch.answers.forgotten_through;
            let tracks: Vec<(u64, String)> = ch
                .tracks
                .iter()
                .map(|(s, t)| (*s, t.id.to_string()))
                .collect();
            let _ = writeln!(d, "  answers {answers:?} forgotten through {forgotten}");
            let _ = writeln!(d, "  tracks {tracks:?}");
            for (s, t) in &ch.tracks {
                let _ = writeln!(
                    d,
                    "  track {s} {:?} awaits ack {} accepted {} next step {} receipted {}",
                    t.precedence, t.awaits_ack, t.base_wall, t.next_n, t.receipted
                );
            }
            let settled: Vec<(u64, OutState)> = ch.settled.in_order().collect();
            let _ = writeln!(d, "  settled {settled:?}");
            let _ = writeln!(
                d,
                "  keys {} {} seal {} previous {:?}",
                hex::encode(ch.key.to_bytes()),
                hex::encode(ch.log_key.to_bytes()),
                hex::encode(ch.seal_key),
                ch.previous.as_ref().map(|p| (
                    hex::encode(p.key.to_bytes()),
                    hex::encode(p.log_key.to_bytes())
                ))
            );
            let _ = writeln!(
                d,
                "  cosigned by us {:?} by peer {} levels {:?} {:?} {:?}",
                ch.i_cosigned
                    .as_ref()
                    .map(|c| (c.size, hex::encode(sha256(&c.note)))),
                ch.peer_cosigned,
                ch.level,
                ch.own_level,
                ch.peer_level
            );
        }
        d
    }
}
