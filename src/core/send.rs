//! Sending: an operator's draft becomes a signed, logged message, handed
//! to the transport when the line is up (docs/protocol.md §5, §8).

use super::channel::Channel;
use super::output::{Output, StreamClass, Transmit};
use super::{Now, MAX_BODY_LEN, MAX_OUTBOX, MAX_SUBJECT_LEN};
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{frame::Body, log_entry::Event, Frame, Kind, Message, Precedence};
use crate::wire::MessageId;

use super::office::{peer_env, Core, Draft, SubmitError};

impl Core {
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
        let Some(ch) = self.channels.get_mut(&peer) else {
            return Err(SubmitError::UnknownPeer(draft.to.clone()));
        };
        if ch.pending.len() >= MAX_OUTBOX {
            return Err(SubmitError::OutboxFull {
                peer: peer.to_string(),
                limit: MAX_OUTBOX,
            });
        }
        let seq = ch.next_seq;
        ch.next_seq = ch.next_seq.saturating_add(1);
        let precedence = match draft.precedence {
            Precedence::Unspecified => Precedence::Routine,
            p => p,
        };
        let ps = ch.prec_sent.get_mut(precedence as i32);
        *ps = ps.saturating_add(1);
        let precedence_sequence = *ps;
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
            response: draft.response as i32,
            precedence_sequence,
        };
        let env = envelope::seal_proto(Domain::Message, &msg, &self.key);
        // The outbox entry and the escalation track come from applying the
        // entry (apply.rs).
        self.persist(now, Event::MessageSent(peer_env(&peer, env)));
        if let Some(ch) = self.channels.get_mut(&peer) {
            if ch.connected && ch.resumed {
                transmit_message(&mut self.out, ch, seq);
            }
        }
        self.maybe_checkpoint(now);
        Ok(seq)
    }
}

/// Hands our message `seq` to the transport, unless the current connection
/// already carries it: within a live QUIC connection delivery is QUIC's
/// job, and a second copy would only compete with the first for the line
/// (docs/protocol.md §8). Nothing is sent on a line not resumed. Returns
/// whether it was handed over now.
pub(super) fn transmit_message(out: &mut Output, ch: &mut Channel, seq: u64) -> bool {
    if !(ch.connected && ch.resumed) {
        return false;
    }
    let Some(p) = ch.pending.get_mut(&seq) else {
        return false;
    };
    if p.on_link {
        return false;
    }
    let class = StreamClass::for_precedence(p.precedence);
    p.on_link = true;
    p.attempts = p.attempts.saturating_add(1);
    out.transmit.push(Transmit {
        datagram: false,
        message: Some(seq),
        peer: ch.peer.clone(),
        class,
        frame: Frame {
            body: Some(Body::Message(p.envelope.clone())),
        },
    });
    ch.set_timer(seq, None);
    true
}
