//! [`Core`]: one office's protocol state across all its peers.
//!
//! The core owns the log's next index, because receipts name the log
//! position of the message they acknowledge: it assigns indexes to the
//! entries it asks the caller to persist, so it can sign a receipt in the
//! same step that logs the message (one fsync on the receive path).

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message as _;

use super::channel::{Channel, ChannelStatus, InboxItem, OutState, OutboxItem, Pending};
use super::output::{CoreEvent, Output, StreamClass, Transmit};
use super::{Now, MAX_BODY_LEN, MAX_OUTBOX, MAX_RETRANSMIT_BURST, MAX_SUBJECT_LEN, RECEIVE_WINDOW};
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain, EnvelopeError};
use crate::wire::proto::{
    frame::Body, log_entry::Event, Frame, Hello, Kind, LinkChanged, LinkState, LogEntry, Message,
    NackReason, NegativeReceipt, NodeStarted, NodeStopped, PeerAdded, PeerEnvelope, Precedence,
    Receipt, Recovery, SignedEnvelope,
};
use crate::wire::{sha256, MessageId, PROTOCOL_VERSION};

/// Retransmission timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First retransmission timeout.
    pub rto_ms: u64,
    /// Cap after doubling.
    pub rto_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rto_ms: 1_000,
            rto_max_ms: 16_000,
        }
    }
}

/// A message an operator wants sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// Recipient office.
    pub to: String,
    /// Precedence (unspecified is taken as ROUTINE).
    pub precedence: Precedence,
    /// Kind (unspecified is taken as NOTIFICATION).
    pub kind: Kind,
    /// Thread id.
    pub thread: String,
    /// Id of the message this replies to.
    pub reply_to: String,
    /// Subject.
    pub subject: String,
    /// Body text.
    pub body: String,
    /// Language tag.
    pub language: String,
    /// Drill traffic.
    pub exercise: bool,
}

/// Why `submit` refused a draft. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The recipient is not a pinned peer.
    #[error("unknown peer {0:?}: pin its card first with `hotline peer add`")]
    UnknownPeer(String),
    /// Body over [`MAX_BODY_LEN`].
    #[error("body is {len} bytes; the limit is {max}")]
    BodyTooLarge {
        /// Actual.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Subject over [`MAX_SUBJECT_LEN`].
    #[error("subject is {len} bytes; the limit is {max}")]
    SubjectTooLarge {
        /// Actual.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// `reply_to` is not a message id.
    #[error("reply-to {0:?} is not a message id (32 hex digits)")]
    BadReplyTo(String),
    /// Too many unreceipted messages to this peer.
    #[error("outbox to {peer} holds {limit} unreceipted messages; wait for the line to recover")]
    OutboxFull {
        /// Peer.
        peer: String,
        /// Limit.
        limit: usize,
    },
}

/// The log could not be replayed into a consistent state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log entry {index} cannot be replayed: {why}")]
pub struct ReplayError {
    /// Entry index.
    pub index: u64,
    /// What is wrong.
    pub why: String,
}

/// One office's protocol state machine.
pub struct Core {
    me: OfficeName,
    key: SigningKey,
    timing: Timing,
    next_index: u64,
    channels: BTreeMap<OfficeName, Channel>,
    inbox: Vec<InboxItem>,
    pinned: BTreeMap<String, String>,
    /// Received messages whose receipt entry was lost in a torn tail:
    /// (peer, sequence, log index, time, hash, id).
    unreceipted: Vec<(OfficeName, u64, u64, u64, [u8; 32], String)>,
    out: Output,
}

impl Core {
    /// A core for office `me` with its message-signing key and its peers'
    /// message keys. Call [`Core::replay`] for each log entry, then
    /// [`Core::start`].
    pub fn new(
        me: OfficeName,
        key: SigningKey,
        peers: impl IntoIterator<Item = (OfficeName, VerifyingKey)>,
        timing: Timing,
    ) -> Self {
        Core {
            me,
            key,
            timing,
            next_index: 0,
            channels: peers
                .into_iter()
                .map(|(n, k)| (n.clone(), Channel::new(n, k)))
                .collect(),
            inbox: Vec::new(),
            pinned: BTreeMap::new(),
            unreceipted: Vec::new(),
            out: Output::default(),
        }
    }

    /// This office.
    pub fn office(&self) -> &OfficeName {
        &self.me
    }

    /// The index the next persisted entry will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    // ------------------------------------------------------------------
    // Rebuilding state from the log.

    /// Applies one entry read back from the log. Produces no output.
    pub fn replay(&mut self, entry: &LogEntry) -> Result<(), ReplayError> {
        let bad = |why: String| ReplayError {
            index: entry.index,
            why,
        };
        if entry.index != self.next_index {
            return Err(bad(format!("expected index {}", self.next_index)));
        }
        self.next_index += 1;
        let Some(event) = &entry.event else {
            return Ok(());
        };
        match event {
            Event::PeerAdded(p) => {
                self.pinned
                    .insert(p.office.clone(), p.card_fingerprint.clone());
            }
            Event::MessageSent(pe) => {
                let (env, msg) = own_message(pe).map_err(bad)?;
                let Some(ch) = channel_for(&mut self.channels, &pe.peer) else {
                    return Ok(()); // peer since removed from config: history only
                };
                let seq = msg.sequence;
                ch.next_seq = ch.next_seq.max(seq + 1);
                ch.pending.insert(
                    seq,
                    Pending {
                        hash: sha256(&env.payload),
                        precedence: msg.precedence(),
                        attempts: 0,
                        deadline: None,
                    },
                );
                ch.history
                    .insert(seq, outbox_item(&ch.peer, &msg, env.clone()));
            }
            Event::ReceiptReceived(pe) => {
                let r: Receipt = decode_env(pe).map_err(bad)?;
                if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                    mark_delivered(ch, r.sequence, pe.envelope.clone().unwrap_or_default());
                }
            }
            Event::NegativeReceiptReceived(pe) => {
                let n: NegativeReceipt = decode_env(pe).map_err(bad)?;
                if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                    mark_refused(ch, n.sequence, &n.payload_hash);
                }
            }
            Event::MessageReceived(pe) => {
                let env = pe.envelope.clone().unwrap_or_default();
                let msg =
                    Message::decode(env.payload.as_slice()).map_err(|e| bad(e.to_string()))?;
                let Some(ch) = channel_for(&mut self.channels, &pe.peer) else {
                    return Ok(());
                };
                let hash = sha256(&env.payload);
                ch.received.insert(msg.sequence);
                ch.received_count += 1;
                self.unreceipted.push((
                    ch.peer.clone(),
                    msg.sequence,
                    entry.index,
                    entry.time_unix_ms,
                    hash,
                    msg.id.clone(),
                ));
                self.inbox.push(InboxItem {
                    peer: ch.peer.clone(),
                    log_index: entry.index,
                    received_unix_ms: entry.time_unix_ms,
                    message: msg,
                    envelope: env,
                });
            }
            Event::ReceiptSent(pe) => {
                let r: Receipt = decode_env(pe).map_err(bad)?;
                if let Some(ch) = channel_for(&mut self.channels, &pe.peer) {
                    let hash: [u8; 32] = r.message_hash.as_slice().try_into().unwrap_or([0; 32]);
                    ch.receipts
                        .insert(r.sequence, (pe.envelope.clone().unwrap_or_default(), hash));
                    self.unreceipted
                        .retain(|u| !(u.0 == ch.peer && u.1 == r.sequence));
                }
            }
            Event::NodeStarted(_)
            | Event::NodeStopped(_)
            | Event::LinkChanged(_)
            | Event::NegativeReceiptSent(_)
            | Event::Recovery(_) => {}
        }
        Ok(())
    }

    /// Starts the office after replay: records the start (and a torn tail
    /// that recovery removed), newly pinned peers, and re-signs receipts
    /// that a torn tail lost.
    pub fn start(
        &mut self,
        now: Now,
        software: &str,
        torn: Option<(u64, u64)>,
        peer_fingerprints: &[(OfficeName, String)],
    ) {
        self.persist(
            now,
            Event::NodeStarted(NodeStarted {
                office: self.me.to_string(),
                software: software.to_string(),
            }),
        );
        if let Some((offset, bytes)) = torn {
            self.persist(
                now,
                Event::Recovery(Recovery {
                    truncated_at_offset: offset,
                    truncated_bytes: bytes,
                }),
            );
        }
        for (name, fp) in peer_fingerprints {
            if self.pinned.get(name.as_str()) != Some(fp) {
                self.pinned.insert(name.to_string(), fp.clone());
                self.persist(
                    now,
                    Event::PeerAdded(PeerAdded {
                        office: name.to_string(),
                        card_fingerprint: fp.clone(),
                    }),
                );
            }
        }
        for (peer, seq, index, time, hash, id) in std::mem::take(&mut self.unreceipted) {
            let receipt = Receipt {
                message_id: id,
                message_hash: hash.to_vec(),
                sequence: seq,
                from: self.me.to_string(),
                to: peer.to_string(),
                received_unix_ms: time,
                log_index: index,
            };
            let env = envelope::seal_proto(Domain::Receipt, &receipt, &self.key);
            self.persist(now, Event::ReceiptSent(peer_env(&peer, env.clone())));
            if let Some(ch) = self.channels.get_mut(&peer) {
                ch.receipts.insert(seq, (env, hash));
            }
        }
    }

    /// Records a clean stop.
    pub fn stop(&mut self, now: Now, reason: &str) {
        self.persist(
            now,
            Event::NodeStopped(NodeStopped {
                reason: reason.to_string(),
            }),
        );
    }

    // ------------------------------------------------------------------
    // Operator input.

    /// Queues a message: signs it, persists it, and sends it if the line is
    /// up. Returns its sequence. The message is *accepted* only once this
    /// call's output has been made durable.
    pub fn submit(&mut self, now: Now, id: MessageId, draft: Draft) -> Result<u64, SubmitError> {
        let peer = OfficeName::new(draft.to.clone())
            .ok()
            .filter(|p| self.channels.contains_key(p))
            .ok_or_else(|| SubmitError::UnknownPeer(draft.to.clone()))?;
        if draft.body.len() > MAX_BODY_LEN {
            return Err(SubmitError::BodyTooLarge {
                len: draft.body.len(),
                max: MAX_BODY_LEN,
            });
        }
        if draft.subject.len() > MAX_SUBJECT_LEN {
            return Err(SubmitError::SubjectTooLarge {
                len: draft.subject.len(),
                max: MAX_SUBJECT_LEN,
            });
        }
        if !draft.reply_to.is_empty() && MessageId::parse(&draft.reply_to).is_none() {
            return Err(SubmitError::BadReplyTo(draft.reply_to));
        }
        let ch = self.channels.get_mut(&peer).expect("checked");
        if ch.pending.len() >= MAX_OUTBOX {
            return Err(SubmitError::OutboxFull {
                peer: peer.to_string(),
                limit: MAX_OUTBOX,
            });
        }
        let seq = ch.next_seq;
        ch.next_seq += 1;
        let precedence = match draft.precedence {
            Precedence::Unspecified => Precedence::Routine,
            p => p,
        };
        let kind = match draft.kind {
            Kind::Unspecified => Kind::Notification,
            k => k,
        };
        let msg = Message {
            id: id.to_string(),
            sequence: seq,
            from: self.me.to_string(),
            to: peer.to_string(),
            created_unix_ms: now.wall_ms,
            precedence: precedence as i32,
            kind: kind as i32,
            thread: draft.thread,
            reply_to: draft.reply_to,
            subject: draft.subject,
            body: draft.body,
            language: if draft.language.is_empty() {
                "en".into()
            } else {
                draft.language
            },
            exercise: draft.exercise,
        };
        let env = envelope::seal_proto(Domain::Message, &msg, &self.key);
        ch.pending.insert(
            seq,
            Pending {
                hash: sha256(&env.payload),
                precedence,
                attempts: 0,
                deadline: None,
            },
        );
        ch.history
            .insert(seq, outbox_item(&peer, &msg, env.clone()));
        self.persist(now, Event::MessageSent(peer_env(&peer, env)));
        let ch = self.channels.get_mut(&peer).expect("checked");
        if ch.connected && ch.resumed {
            transmit_message(&mut self.out, ch, seq, now, self.timing);
        }
        Ok(seq)
    }

    // ------------------------------------------------------------------
    // Transport input.

    /// The transport to `peer` is up (authenticated). Sends our hello.
    pub fn link_up(&mut self, now: Now, peer: &OfficeName, detail: &str) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.connected = true;
        ch.resumed = false;
        ch.hello_retry = Some((now.mono_ms + self.timing.rto_ms, 0));
        send_hello(&mut self.out, &self.me, ch, false);
        self.persist(
            now,
            Event::LinkChanged(LinkChanged {
                peer: peer.to_string(),
                state: LinkState::Up as i32,
                detail: detail.to_string(),
            }),
        );
    }

    /// The transport to `peer` is gone.
    pub fn link_down(&mut self, now: Now, peer: &OfficeName, detail: &str) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        if !ch.connected {
            return;
        }
        ch.connected = false;
        ch.resumed = false;
        ch.hello_retry = None;
        let seqs: Vec<u64> = ch.pending.keys().copied().collect();
        for s in seqs {
            ch.set_timer(s, None);
        }
        self.persist(
            now,
            Event::LinkChanged(LinkChanged {
                peer: peer.to_string(),
                state: LinkState::Down as i32,
                detail: detail.to_string(),
            }),
        );
    }

    /// A frame arrived from the authenticated `peer`.
    pub fn handle_frame(&mut self, now: Now, peer: &OfficeName, frame: Frame) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.last_heard_wall = Some(now.wall_ms);
        match frame.body {
            Some(Body::Hello(h)) => self.on_hello(now, peer, h),
            Some(Body::Message(env)) => self.on_message(now, peer, env),
            Some(Body::Receipt(env)) => self.on_receipt(now, peer, env),
            Some(Body::NegativeReceipt(env)) => self.on_nack(now, peer, env),
            None => {} // a frame type from a later version: ignored
        }
    }

    /// Fires due retransmissions.
    pub fn handle_timeout(&mut self, now: Now) {
        for ch in self.channels.values_mut() {
            if let Some((at, n)) = ch.hello_retry {
                if at <= now.mono_ms {
                    let n = n + 1;
                    let wait = self
                        .timing
                        .rto_ms
                        .saturating_mul(1 << n.min(16))
                        .min(self.timing.rto_max_ms);
                    ch.hello_retry = Some((now.mono_ms + wait, n));
                    send_hello(&mut self.out, &self.me, ch, false);
                }
            }
            if !(ch.connected && ch.resumed) {
                continue;
            }
            let due: Vec<u64> = ch
                .timers
                .iter()
                .take_while(|(d, _)| *d <= now.mono_ms)
                .take(MAX_RETRANSMIT_BURST)
                .map(|(_, s)| *s)
                .collect();
            for seq in due {
                transmit_message(&mut self.out, ch, seq, now, self.timing);
            }
        }
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let retransmit = self
            .channels
            .values()
            .filter(|c| c.connected && c.resumed)
            .filter_map(|c| c.timers.first().map(|(d, _)| *d));
        let hello = self
            .channels
            .values()
            .filter_map(|c| c.hello_retry.map(|h| h.0));
        retransmit.chain(hello).min()
    }

    /// Takes what the caller must do (see the module docs for the rule).
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    // ------------------------------------------------------------------
    // Views.

    /// Received messages, in log order.
    pub fn inbox(&self) -> &[InboxItem] {
        &self.inbox
    }

    /// Sent messages per peer, by sequence.
    pub fn outbox(&self) -> impl Iterator<Item = &OutboxItem> {
        self.channels.values().flat_map(|c| c.history.values())
    }

    /// One sent message by id.
    pub fn find_sent(&self, id: &MessageId) -> Option<&OutboxItem> {
        self.outbox().find(|o| &o.id == id)
    }

    /// Per-peer status.
    pub fn status(&self) -> Vec<ChannelStatus> {
        self.channels.values().map(Channel::status).collect()
    }

    // ------------------------------------------------------------------
    // Frame handlers.

    fn on_hello(&mut self, now: Now, peer: &OfficeName, h: Hello) {
        let ch = self.channels.get_mut(peer).expect("caller checked");
        if h.office != peer.as_str() || h.protocol_version != PROTOCOL_VERSION {
            self.out.events.push(CoreEvent::ProtocolError {
                peer: peer.clone(),
                detail: format!(
                    "hello from {:?} version {} on the line to {peer}",
                    h.office, h.protocol_version
                ),
            });
            return;
        }
        if !h.reply {
            send_hello(&mut self.out, &self.me, ch, true);
        }
        if ch.resumed {
            // A retried or answering hello on a line already resumed: the
            // retransmission timers cover anything still outstanding.
            return;
        }
        ch.resumed = true;
        ch.hello_retry = None;
        // The peer lacks our receipts above its receipted_through: resend them.
        for (_, (env, _)) in ch.receipts.range(h.receipted_through + 1..) {
            self.out.transmit.push(Transmit {
                peer: peer.clone(),
                class: StreamClass::Control,
                frame: Frame {
                    body: Some(Body::Receipt(env.clone())),
                },
            });
        }
        // Resume: send what the peer does not hold, in sequence order; for
        // what it holds, its receipts are on their way, so only arm timers.
        let seqs: Vec<u64> = ch.pending.keys().copied().collect();
        for seq in seqs {
            if seq > h.received_through {
                transmit_message(&mut self.out, ch, seq, now, self.timing);
            } else {
                let rto = self.timing.rto_ms;
                ch.set_timer(seq, Some(now.mono_ms + rto));
            }
        }
    }

    fn on_message(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let key = self.channels[peer].key;
        let hash = sha256(&env.payload);
        // Verify before decoding.
        if let Err(e) = envelope::verify(&env, Domain::Message, &key) {
            let reason = match e {
                EnvelopeError::UnknownKey { .. } => NackReason::UnknownKey,
                _ => NackReason::BadSignature,
            };
            return self.refuse(now, peer, hash, None, reason, e.to_string());
        }
        let msg = match Message::decode(env.payload.as_slice()) {
            Ok(m) => m,
            Err(e) => {
                return self.refuse(now, peer, hash, None, NackReason::Malformed, e.to_string())
            }
        };
        if let Err((reason, detail)) = self.check_message(peer, &msg) {
            return self.refuse(now, peer, hash, Some(&msg), reason, detail);
        }
        let ch = self.channels.get_mut(peer).expect("checked");
        let seq = msg.sequence;
        if ch.received.contains(seq) {
            match ch.receipts.get(&seq) {
                Some((receipt, h)) if *h == hash => {
                    // A duplicate: never delivered twice; the same receipt again.
                    self.out.transmit.push(Transmit {
                        peer: peer.clone(),
                        class: StreamClass::Control,
                        frame: Frame {
                            body: Some(Body::Receipt(receipt.clone())),
                        },
                    });
                    return;
                }
                _ => {
                    return self.refuse(
                        now,
                        peer,
                        hash,
                        Some(&msg),
                        NackReason::SequenceConflict,
                        format!("sequence {seq} already holds a different message"),
                    )
                }
            }
        }
        let through = ch.received.through;
        if seq > through + RECEIVE_WINDOW {
            return self.refuse(
                now,
                peer,
                hash,
                Some(&msg),
                NackReason::OutOfWindow,
                format!("sequence {seq} is more than {RECEIVE_WINDOW} past {through}"),
            );
        }
        // New message: log it, and in the same batch sign and log its receipt.
        let index = self.next_index;
        self.persist(now, Event::MessageReceived(peer_env(peer, env.clone())));
        let receipt = Receipt {
            message_id: msg.id.clone(),
            message_hash: hash.to_vec(),
            sequence: seq,
            from: self.me.to_string(),
            to: peer.to_string(),
            received_unix_ms: now.wall_ms,
            log_index: index,
        };
        let renv = envelope::seal_proto(Domain::Receipt, &receipt, &self.key);
        self.persist(now, Event::ReceiptSent(peer_env(peer, renv.clone())));
        let ch = self.channels.get_mut(peer).expect("checked");
        ch.received.insert(seq);
        ch.received_count += 1;
        ch.receipts.insert(seq, (renv.clone(), hash));
        self.out.transmit.push(Transmit {
            peer: peer.clone(),
            class: StreamClass::Control,
            frame: Frame {
                body: Some(Body::Receipt(renv)),
            },
        });
        self.out.events.push(CoreEvent::Received {
            peer: peer.clone(),
            id: MessageId::parse(&msg.id).expect("checked"),
            sequence: seq,
            precedence: msg.precedence(),
        });
        self.inbox.push(InboxItem {
            peer: peer.clone(),
            log_index: index,
            received_unix_ms: now.wall_ms,
            message: msg,
            envelope: env,
        });
    }

    fn check_message(&self, peer: &OfficeName, msg: &Message) -> Result<(), (NackReason, String)> {
        if msg.from != peer.as_str() {
            return Err((
                NackReason::WrongSender,
                format!(
                    "message claims to be from {:?} but arrived from {peer}",
                    msg.from
                ),
            ));
        }
        if msg.to != self.me.as_str() {
            return Err((
                NackReason::WrongRecipient,
                format!("message is addressed to {:?}, this is {}", msg.to, self.me),
            ));
        }
        let malformed = |d: String| Err((NackReason::Malformed, d));
        if msg.sequence == 0 {
            return malformed("sequence 0".into());
        }
        if MessageId::parse(&msg.id).is_none() {
            return malformed(format!("id {:?} is not 32 hex digits", msg.id));
        }
        if msg.body.len() > MAX_BODY_LEN || msg.subject.len() > MAX_SUBJECT_LEN {
            return malformed("body or subject over the limit".into());
        }
        if Precedence::try_from(msg.precedence).is_err() || msg.precedence == 0 {
            return malformed(format!("precedence {} is not defined", msg.precedence));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        now: Now,
        peer: &OfficeName,
        hash: [u8; 32],
        msg: Option<&Message>,
        reason: NackReason,
        detail: String,
    ) {
        let mut detail = detail;
        detail.truncate(256);
        let nack = NegativeReceipt {
            payload_hash: hash.to_vec(),
            message_id: msg.map(|m| m.id.clone()).unwrap_or_default(),
            sequence: msg.map(|m| m.sequence).unwrap_or(0),
            from: self.me.to_string(),
            to: peer.to_string(),
            time_unix_ms: now.wall_ms,
            reason: reason as i32,
            detail: detail.clone(),
        };
        let nenv = envelope::seal_proto(Domain::NegativeReceipt, &nack, &self.key);
        self.persist(
            now,
            Event::NegativeReceiptSent(peer_env(peer, nenv.clone())),
        );
        self.out.transmit.push(Transmit {
            peer: peer.clone(),
            class: StreamClass::Control,
            frame: Frame {
                body: Some(Body::NegativeReceipt(nenv)),
            },
        });
        self.out.events.push(CoreEvent::Refused {
            peer: peer.clone(),
            reason,
            detail,
        });
    }

    fn on_receipt(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let ch = self.channels.get_mut(peer).expect("caller checked");
        let r: Receipt = match envelope::open(&env, Domain::Receipt, &ch.key) {
            Ok(r) => r,
            Err(e) => {
                return self.out.events.push(CoreEvent::ProtocolError {
                    peer: peer.clone(),
                    detail: format!("receipt refused: {e}"),
                })
            }
        };
        let error = |d: String| CoreEvent::ProtocolError {
            peer: peer.clone(),
            detail: d,
        };
        if r.from != peer.as_str() || r.to != self.me.as_str() {
            return self.out.events.push(error(format!(
                "receipt from {:?} to {:?} on the line to {peer}",
                r.from, r.to
            )));
        }
        let Some(p) = ch.pending.get(&r.sequence) else {
            if ch.history.get(&r.sequence).map(|h| h.state) != Some(OutState::Delivered) {
                self.out.events.push(error(format!(
                    "receipt for sequence {} which was never sent",
                    r.sequence
                )));
            }
            return; // duplicate receipt for a delivered message
        };
        let item = &ch.history[&r.sequence];
        if r.message_hash.as_slice() != p.hash || r.message_id != item.id.to_string() {
            return self.out.events.push(error(format!(
                "receipt for sequence {} names another message",
                r.sequence
            )));
        }
        let id = item.id;
        mark_delivered(ch, r.sequence, env.clone());
        self.persist(now, Event::ReceiptReceived(peer_env(peer, env)));
        self.out.events.push(CoreEvent::Delivered {
            peer: peer.clone(),
            id,
            sequence: r.sequence,
        });
    }

    fn on_nack(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let ch = self.channels.get_mut(peer).expect("caller checked");
        let n: NegativeReceipt = match envelope::open(&env, Domain::NegativeReceipt, &ch.key) {
            Ok(n) => n,
            Err(e) => {
                return self.out.events.push(CoreEvent::ProtocolError {
                    peer: peer.clone(),
                    detail: format!("negative receipt refused: {e}"),
                })
            }
        };
        let reason = NackReason::try_from(n.reason).unwrap_or(NackReason::Unspecified);
        // Out-of-window is "try later": keep retransmitting.
        if reason != NackReason::OutOfWindow {
            mark_refused(ch, n.sequence, &n.payload_hash);
        }
        self.persist(now, Event::NegativeReceiptReceived(peer_env(peer, env)));
        self.out.events.push(CoreEvent::NegativeReceipt {
            peer: peer.clone(),
            id: MessageId::parse(&n.message_id),
            reason,
            detail: n.detail,
        });
    }

    fn persist(&mut self, now: Now, event: Event) {
        let entry = LogEntry {
            index: self.next_index,
            time_unix_ms: now.wall_ms,
            event: Some(event),
        };
        self.next_index += 1;
        self.out.persist.push(entry);
    }
}

fn channel_for<'a>(
    channels: &'a mut BTreeMap<OfficeName, Channel>,
    peer: &str,
) -> Option<&'a mut Channel> {
    let name = OfficeName::new(peer).ok()?;
    channels.get_mut(&name)
}

fn peer_env(peer: &OfficeName, env: SignedEnvelope) -> PeerEnvelope {
    PeerEnvelope {
        peer: peer.to_string(),
        envelope: Some(env),
    }
}

fn decode_env<M: prost::Message + Default>(pe: &PeerEnvelope) -> Result<M, String> {
    let env = pe.envelope.as_ref().ok_or("entry has no envelope")?;
    M::decode(env.payload.as_slice()).map_err(|e| e.to_string())
}

fn own_message(pe: &PeerEnvelope) -> Result<(&SignedEnvelope, Message), String> {
    let env = pe.envelope.as_ref().ok_or("entry has no envelope")?;
    let msg = Message::decode(env.payload.as_slice()).map_err(|e| e.to_string())?;
    Ok((env, msg))
}

fn outbox_item(peer: &OfficeName, msg: &Message, env: SignedEnvelope) -> OutboxItem {
    OutboxItem {
        peer: peer.clone(),
        id: MessageId::parse(&msg.id).unwrap_or(MessageId([0; 16])),
        sequence: msg.sequence,
        precedence: msg.precedence(),
        subject: msg.subject.clone(),
        state: OutState::Queued,
        created_unix_ms: msg.created_unix_ms,
        attempts: 0,
        receipt: None,
        envelope: env,
    }
}

fn mark_delivered(ch: &mut Channel, seq: u64, receipt: SignedEnvelope) {
    if ch.remove_pending(seq).is_some() {
        ch.delivered += 1;
    }
    ch.receipted.insert(seq);
    if let Some(h) = ch.history.get_mut(&seq) {
        h.state = OutState::Delivered;
        h.receipt = Some(receipt);
    }
}

fn mark_refused(ch: &mut Channel, seq: u64, payload_hash: &[u8]) {
    // Match by hash: a refusal of an unverifiable payload carries no sequence.
    let target = if seq != 0 {
        Some(seq)
    } else {
        ch.pending
            .iter()
            .find(|(_, p)| p.hash.as_slice() == payload_hash)
            .map(|(s, _)| *s)
    };
    let Some(seq) = target else { return };
    if ch.pending.get(&seq).map(|p| p.hash.as_slice()) != Some(payload_hash) {
        return;
    }
    // Refused messages leave the outbox (no more retransmissions) but stay
    // in the history with their state.
    ch.remove_pending(seq);
    if let Some(h) = ch.history.get_mut(&seq) {
        h.state = OutState::Refused;
    }
}

fn send_hello(out: &mut Output, me: &OfficeName, ch: &Channel, reply: bool) {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        office: me.to_string(),
        received_through: ch.received.through,
        receipted_through: ch.receipted.through,
        reply,
    };
    out.transmit.push(Transmit {
        peer: ch.peer.clone(),
        class: StreamClass::Control,
        frame: Frame {
            body: Some(Body::Hello(hello)),
        },
    });
}

fn transmit_message(out: &mut Output, ch: &mut Channel, seq: u64, now: Now, timing: Timing) {
    let Some(p) = ch.pending.get_mut(&seq) else {
        return;
    };
    let class = StreamClass::for_precedence(p.precedence);
    p.attempts = p.attempts.saturating_add(1);
    let shift = (p.attempts - 1).min(16);
    let rto = timing
        .rto_ms
        .saturating_mul(1 << shift)
        .min(timing.rto_max_ms);
    let item = ch
        .history
        .get_mut(&seq)
        .expect("history holds every pending message");
    item.attempts = p.attempts;
    if item.state == OutState::Queued {
        item.state = OutState::Sent;
    }
    out.transmit.push(Transmit {
        peer: ch.peer.clone(),
        class,
        frame: Frame {
            body: Some(Body::Message(item.envelope.clone())),
        },
    });
    ch.set_timer(seq, Some(now.mono_ms + rto));
}
