//! Receiving a message: the checks of docs/protocol.md §5 in their order,
//! order within a precedence, and refusals that settle a number.
//!
//! Every value here comes from the peer's signed payload and is hostile:
//! the checks run before anything is stored, numbers are compared with
//! saturating arithmetic, and peer text is quoted through [`crate::text`]
//! before it reaches a refusal's detail.
//!
//! A refusal of a message that is genuinely on this channel (verified,
//! decoded, from the peer to us, its sequence not yet settled) *settles* its
//! numbers, as a delivery would: `received_through` moves past it, and a
//! message held for order behind it is released. Without that one refused
//! number would stall its precedence for good (§6).

use prost::Message as _;

use super::budget::{Spend, Verdict};
use super::channel::{prec_index, Channel, HeldMessage};
use super::office::{peer_env, Core};
use super::output::{CoreEvent, Recall, StreamClass, Transmit};
use super::{
    Now, MAX_BODY_LEN, MAX_DETAIL_LEN, MAX_HELD, MAX_HELD_BYTES, MAX_LANGUAGE_LEN, MAX_SUBJECT_LEN,
    MAX_THREAD_LEN, RECEIVE_WINDOW,
};
use crate::identity::OfficeName;
use crate::text;
use crate::wire::envelope::{self, Domain, EnvelopeError};
use crate::wire::proto::{
    frame::Body, log_entry::Event, Frame, Message, NackReason, NegativeReceipt, Precedence,
    Receipt, SignedEnvelope,
};
use crate::wire::{sha256, MessageId};

/// What a refusal names and settles.
pub(super) enum Refusal<'a> {
    /// The payload did not verify or decode: nothing is named or settled.
    Unread,
    /// A decoded message whose numbers stay unsettled (not on this channel,
    /// a number already taken, or "try later").
    Unsettled(&'a Message),
    /// A message on this channel: its sequence is settled, and its
    /// precedence sequence too when `precedence_sequence` is not 0.
    Settles {
        /// The refused message.
        msg: &'a Message,
        /// The precedence sequence this refusal settles (0: none).
        precedence_sequence: u64,
    },
}

/// Peer values quoted in our refusal details are cut to this many bytes.
const QUOTE_MAX: usize = 48;

impl Core {
    pub(super) fn on_message(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(key) = self.peer_message_key(now, peer, &env.key_id) else {
            return;
        };
        let hash = sha256(&env.payload);
        // 1. Verify before decoding.
        if let Err(e) = envelope::verify(&env, Domain::Message, &key) {
            let reason = match e {
                EnvelopeError::UnknownKey { .. } => NackReason::UnknownKey,
                _ => NackReason::BadSignature,
            };
            return self.refuse(now, peer, hash, Refusal::Unread, reason, e.to_string());
        }
        // 2. Decode.
        let msg = match Message::decode(env.payload.as_slice()) {
            Ok(m) => m,
            Err(e) => {
                return self.refuse(
                    now,
                    peer,
                    hash,
                    Refusal::Unread,
                    NackReason::Malformed,
                    e.to_string(),
                )
            }
        };
        // 3. On this channel at all?
        if msg.from != peer.as_str() {
            let detail = format!(
                "message claims to be from {} but arrived from {peer}",
                text::quote(&msg.from, QUOTE_MAX)
            );
            return self.refuse(
                now,
                peer,
                hash,
                Refusal::Unsettled(&msg),
                NackReason::WrongSender,
                detail,
            );
        }
        if msg.to != self.me.as_str() {
            let detail = format!(
                "message is addressed to {}, this is {}",
                text::quote(&msg.to, QUOTE_MAX),
                self.me
            );
            return self.refuse(
                now,
                peer,
                hash,
                Refusal::Unsettled(&msg),
                NackReason::WrongRecipient,
                detail,
            );
        }
        let seq = msg.sequence;
        if seq == 0 {
            return self.refuse(
                now,
                peer,
                hash,
                Refusal::Unsettled(&msg),
                NackReason::Malformed,
                "sequence 0".into(),
            );
        }
        let Some(ch) = self.channels.get(peer) else {
            return;
        };
        // 4. A number already settled: a duplicate gets the same answer again.
        if ch.received.contains(seq) {
            match ch.answers.get(seq) {
                Some((answer, h)) if *h == hash => {
                    let body = answer.body();
                    self.out.transmit.push(Transmit::control(peer, body));
                }
                // Answered long ago: the shell reads the answer from the
                // log, and hands the copy back if it names another message
                // ([`Core::duplicate_unanswered`]).
                None if seq <= ch.answers.forgotten_through => {
                    self.out.recall.push(Recall::Duplicate {
                        peer: peer.clone(),
                        sequence: seq,
                        hash,
                        envelope: env,
                    });
                }
                _ => self.refuse_conflict(now, peer, &msg, hash),
            }
            return;
        }
        // 5. The window.
        let through = ch.received.through;
        if seq > through.saturating_add(RECEIVE_WINDOW) {
            return self.refuse(
                now,
                peer,
                hash,
                Refusal::Unsettled(&msg),
                NackReason::OutOfWindow,
                format!("sequence {seq} is more than {RECEIVE_WINDOW} past {through}"),
            );
        }
        // 6. The fields. A message with a bad field is refused for good, and
        //    that settles its numbers.
        if let Err(detail) = check_fields(&msg) {
            let ps = settleable_precedence_sequence(ch, &msg);
            self.refuse(
                now,
                peer,
                hash,
                Refusal::Settles {
                    msg: &msg,
                    precedence_sequence: ps,
                },
                NackReason::Malformed,
                detail,
            );
            self.after_settling_refusal(now, peer, &msg, ps, hash);
            return;
        }
        // 7. Order within a precedence: a message ahead of an earlier one of
        //    its precedence waits, unlogged and unreceipted, for that one.
        let via = self.receiving_via.clone();
        let ps = msg.precedence_sequence;
        let precedence = msg.precedence;
        if ps != 0 {
            let settled = ch.prec_received.get(precedence);
            if settled.contains(ps) {
                return self.refuse(
                    now,
                    peer,
                    hash,
                    Refusal::Settles {
                        msg: &msg,
                        precedence_sequence: 0,
                    },
                    NackReason::SequenceConflict,
                    format!("precedence sequence {ps} was already used"),
                );
            }
            if ps > settled.next() {
                let pi = prec_index(precedence);
                let size = env.payload.len();
                match ch.held.get(&(pi, ps)) {
                    Some(h) if h.hash != hash => {
                        // The peer signed two messages with this precedence
                        // sequence. Neither can be accepted: this refusal
                        // settles the number, and the held one is refused
                        // too. Leaving the number to the held message would
                        // block the precedence for good if that one were
                        // lost in a restart and never sent again.
                        let ps = settleable_precedence_sequence(ch, &msg);
                        self.refuse(
                            now,
                            peer,
                            hash,
                            Refusal::Settles {
                                msg: &msg,
                                precedence_sequence: ps,
                            },
                            NackReason::SequenceConflict,
                            format!("precedence sequence {ps} already holds a different message"),
                        );
                        return self.after_settling_refusal(now, peer, &msg, ps, hash);
                    }
                    Some(_) => {}
                    None if ch.held.len() >= MAX_HELD
                        || ch.held_bytes.saturating_add(size) > MAX_HELD_BYTES =>
                    {
                        return self.refuse(
                            now,
                            peer,
                            hash,
                            Refusal::Unsettled(&msg),
                            NackReason::OutOfWindow,
                            format!(
                                "{} messages ({} bytes) already wait for earlier ones",
                                ch.held.len(),
                                ch.held_bytes
                            ),
                        )
                    }
                    None => {
                        if let Some(ch) = self.channels.get_mut(peer) {
                            ch.held_bytes = ch.held_bytes.saturating_add(size);
                            ch.held.insert(
                                (pi, ps),
                                HeldMessage {
                                    env,
                                    msg,
                                    hash,
                                    via,
                                },
                            );
                        }
                    }
                }
                return;
            }
        }
        self.accept_message(now, peer, env, msg, hash, via);
        if ps != 0 {
            self.release_held(now, peer, precedence);
        }
    }

    /// After a refusal of `msg` that was to settle its precedence sequence
    /// `ps` (0: none): once `ps` is settled, a message held with it can
    /// never be accepted. Another payload is refused (settling its channel
    /// sequence); a copy of `msg` was answered by the refusal. Then the
    /// messages behind `ps` follow.
    fn after_settling_refusal(
        &mut self,
        now: Now,
        peer: &OfficeName,
        msg: &Message,
        ps: u64,
        hash: [u8; 32],
    ) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        if ps == 0 || !ch.prec_received.get(msg.precedence).contains(ps) {
            return; // over budget: nothing was settled
        }
        if let Some(h) = ch.held.remove(&(prec_index(msg.precedence), ps)) {
            ch.held_bytes = ch.held_bytes.saturating_sub(h.env.payload.len());
            if h.hash != hash {
                self.refuse(
                    now,
                    peer,
                    h.hash,
                    Refusal::Settles {
                        msg: &h.msg,
                        precedence_sequence: 0,
                    },
                    NackReason::SequenceConflict,
                    format!("precedence sequence {ps} was signed for another message"),
                );
            }
        }
        self.release_held(now, peer, msg.precedence);
    }

    /// Accepts, in order, every held message of `precedence` that is now
    /// next (a delivery or a settling refusal made room).
    fn release_held(&mut self, now: Now, peer: &OfficeName, precedence: i32) {
        let pi = prec_index(precedence);
        loop {
            let Some(ch) = self.channels.get_mut(peer) else {
                return;
            };
            let next = ch.prec_received.get(precedence).next();
            let Some(h) = ch.held.remove(&(pi, next)) else {
                return;
            };
            ch.held_bytes = ch.held_bytes.saturating_sub(h.env.payload.len());
            if ch.received.contains(h.msg.sequence) {
                // The peer reused this message's channel sequence for another
                // message accepted while this one was held. The refusal
                // settles the precedence sequence, so later ones still flow.
                let detail = format!(
                    "sequence {} already holds a different message",
                    h.msg.sequence
                );
                self.refuse(
                    now,
                    peer,
                    h.hash,
                    Refusal::Settles {
                        msg: &h.msg,
                        precedence_sequence: next,
                    },
                    NackReason::SequenceConflict,
                    detail,
                );
                if self
                    .channels
                    .get(peer)
                    .is_some_and(|c| !c.prec_received.get(precedence).contains(next))
                {
                    // The refusal was over budget and settled nothing: keep
                    // the rest held; the sender's retransmissions bring them.
                    return;
                }
                continue;
            }
            self.accept_message(now, peer, h.env, h.msg, h.hash, h.via);
        }
    }

    /// Logs a new message and, in the same batch, signs and logs its
    /// receipt; then sends the receipt and delivers it.
    fn accept_message(
        &mut self,
        now: Now,
        peer: &OfficeName,
        env: SignedEnvelope,
        msg: Message,
        hash: [u8; 32],
        via: Option<OfficeName>,
    ) {
        let Some(id) = MessageId::parse(&msg.id) else {
            return; // check_fields refused it already
        };
        let seq = msg.sequence;
        let index = self.next_index;
        self.out.events.push(CoreEvent::Received {
            peer: peer.clone(),
            id,
            sequence: seq,
            precedence: msg.precedence(),
            kind: msg.kind(),
            subject: msg.subject.clone(),
        });
        let mut received = peer_env(peer, env);
        received.via = via.as_ref().map(|r| r.to_string()).unwrap_or_default();
        // The inbox, the windows and the acknowledgement of what it answers
        // come from applying the entry (apply.rs); so does the receipt's
        // place in the channel.
        self.persist(now, Event::MessageReceived(received));
        let receipt = Receipt {
            message_id: msg.id.clone(),
            message_hash: hash.to_vec(),
            sequence: seq,
            from: self.me.to_string(),
            to: peer.to_string(),
            received_unix_ms: now.wall_ms,
            log_index: index,
            log_size: self.tree.size(),
            log_root: self.tree.root().0.to_vec(),
        };
        let renv = envelope::seal_proto(Domain::Receipt, &receipt, &self.key);
        self.persist(now, Event::ReceiptSent(peer_env(peer, renv.clone())));
        self.out.transmit.push(Transmit {
            datagram: false,
            message: None,
            peer: peer.clone(),
            class: StreamClass::Control,
            frame: Frame {
                body: Some(Body::Receipt(renv)),
            },
        });
    }

    /// Signs, logs and sends a negative receipt, within the peer's refusal
    /// budget; a settling one settles its numbers as it is logged.
    pub(super) fn refuse(
        &mut self,
        now: Now,
        peer: &OfficeName,
        hash: [u8; 32],
        what: Refusal<'_>,
        reason: NackReason,
        detail: String,
    ) {
        let mut detail = detail;
        text::truncate(&mut detail, MAX_DETAIL_LEN);
        match self.spend(now, peer, Spend::Refusal) {
            Verdict::Allowed => {}
            Verdict::FirstDropped | Verdict::Dropped => {
                // Unanswered, the sender would wait for good (it does not
                // resend within a connection): ask it to resynchronise once
                // the budget has refilled (§8).
                if let Some(ch) = self.channels.get_mut(peer) {
                    ch.resync_wanted = true;
                }
                return;
            }
        }
        let (msg, settles, precedence_sequence) = match what {
            Refusal::Unread => (None, false, 0),
            Refusal::Unsettled(m) => (Some(m), false, 0),
            Refusal::Settles {
                msg,
                precedence_sequence,
            } => (Some(msg), true, precedence_sequence),
        };
        let nack = NegativeReceipt {
            payload_hash: hash.to_vec(),
            // Only an id that is one: a refusal never echoes the peer's
            // text past the limits of §11 (its own peer would reject it).
            message_id: msg
                .filter(|m| MessageId::parse(&m.id).is_some())
                .map(|m| m.id.clone())
                .unwrap_or_default(),
            sequence: msg.map(|m| m.sequence).unwrap_or(0),
            from: self.me.to_string(),
            to: peer.to_string(),
            time_unix_ms: now.wall_ms,
            reason: reason as i32,
            detail: detail.clone(),
            settles,
            precedence: if settles {
                msg.map(|m| m.precedence).unwrap_or(0)
            } else {
                0
            },
            precedence_sequence,
        };
        let nenv = envelope::seal_proto(Domain::NegativeReceipt, &nack, &self.key);
        // A settling one settles its numbers by applying the entry.
        self.persist(
            now,
            Event::NegativeReceiptSent(peer_env(peer, nenv.clone())),
        );
        self.out.transmit.push(Transmit {
            datagram: false,
            message: None,
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
}

impl Core {
    /// A duplicate of `peer`'s message `envelope` (the core asked with
    /// [`Recall::Duplicate`]) whose number's logged answer names another
    /// message: the peer signed two messages with one number.
    pub fn duplicate_unanswered(&mut self, now: Now, peer: &OfficeName, envelope: SignedEnvelope) {
        let hash = sha256(&envelope.payload);
        if let Ok(msg) = Message::decode(envelope.payload.as_slice()) {
            self.refuse_conflict(now, peer, &msg, hash);
        }
    }

    /// `peer` signed two messages with the number of `msg`, which can never
    /// be accepted: the refusal settles it for the sender and settles its
    /// precedence sequence here (when free), so that the peer's later
    /// messages of that precedence are not held behind it for good (the
    /// same rule as for a held message whose number was taken meanwhile,
    /// `release_held`).
    fn refuse_conflict(&mut self, now: Now, peer: &OfficeName, msg: &Message, hash: [u8; 32]) {
        let Some(ch) = self.channels.get(peer) else {
            return;
        };
        let ps = settleable_precedence_sequence(ch, msg);
        self.refuse(
            now,
            peer,
            hash,
            Refusal::Settles {
                msg,
                precedence_sequence: ps,
            },
            NackReason::SequenceConflict,
            format!(
                "sequence {} already holds a different message",
                msg.sequence
            ),
        );
        self.after_settling_refusal(now, peer, msg, ps, hash);
    }
}

/// Settles the numbers a logged negative receipt of ours names (the one
/// rule for live refusals and for replay): the channel sequence, and the
/// precedence sequence when it is not 0; a retransmission of the refused
/// payload then gets this negative receipt again.
pub(super) fn settle_refused(
    ch: &mut Channel,
    nack: &NegativeReceipt,
    env: SignedEnvelope,
    hash: [u8; 32],
) {
    if nack.sequence == 0 {
        return;
    }
    if !ch.received.contains(nack.sequence) {
        ch.received.insert(nack.sequence);
        ch.answers
            .insert(nack.sequence, super::channel::Answer::Refusal(env), hash);
    }
    if nack.precedence_sequence != 0 {
        ch.prec_received
            .get_mut(nack.precedence)
            .insert(nack.precedence_sequence);
    }
}

/// The precedence sequence a refusal of `msg` may settle: its own, if its
/// precedence is known, the number is not settled yet and within the
/// window; else 0. A message held with that number is refused with it
/// (`after_settling_refusal`).
fn settleable_precedence_sequence(ch: &Channel, msg: &Message) -> u64 {
    let ps = msg.precedence_sequence;
    if ps == 0 || !known_precedence(msg.precedence) {
        return 0;
    }
    let settled = ch.prec_received.get(msg.precedence);
    if settled.contains(ps) || ps > settled.through.saturating_add(RECEIVE_WINDOW) {
        return 0;
    }
    ps
}

fn known_precedence(p: i32) -> bool {
    matches!(
        Precedence::try_from(p),
        Ok(Precedence::Flash | Precedence::Immediate | Precedence::Priority | Precedence::Routine)
    )
}

/// The field checks of §5 step 3 after the numbers: `Err` says which.
fn check_fields(msg: &Message) -> Result<(), String> {
    if MessageId::parse(&msg.id).is_none() {
        return Err(format!(
            "id {} is not 32 lowercase hex digits",
            text::quote(&msg.id, QUOTE_MAX)
        ));
    }
    if !known_precedence(msg.precedence) {
        return Err(format!("precedence {} is not defined", msg.precedence));
    }
    let over = |what: &str, len: usize, max: usize| {
        (len > max).then(|| format!("{what} is {len} bytes; the limit is {max}"))
    };
    let checks = [
        over("body", msg.body.len(), MAX_BODY_LEN),
        over("subject", msg.subject.len(), MAX_SUBJECT_LEN),
        over("thread", msg.thread.len(), MAX_THREAD_LEN),
        over("language", msg.language.len(), MAX_LANGUAGE_LEN),
    ];
    if let Some(e) = checks.into_iter().flatten().next() {
        return Err(e);
    }
    if !msg.reply_to.is_empty() && MessageId::parse(&msg.reply_to).is_none() {
        return Err(format!(
            "reply_to {} is not a message id",
            text::quote(&msg.reply_to, QUOTE_MAX)
        ));
    }
    Ok(())
}
