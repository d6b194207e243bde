//! What the peer says about our messages: receipts settle them as
//! delivered, settling negative receipts as refused (docs/protocol.md §6).
//!
//! The peer signs these, so they prove what it claims, not that the claim
//! is about a message we sent: each is matched to a pending message by
//! sequence, id and hash before it changes anything or reaches the log, and
//! what matches nothing is reported (within budget) and dropped.

use super::budget::{Spend, Verdict};
use super::channel::{Channel, OutState};
use super::office::{peer_env, Core};
use super::output::CoreEvent;
use super::{Now, MAX_DETAIL_LEN};
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{log_entry::Event, NackReason, NegativeReceipt, Receipt, SignedEnvelope};
use crate::wire::MessageId;

impl Core {
    pub(super) fn on_receipt(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(key) = self.peer_message_key(now, peer, &env.key_id) else {
            return;
        };
        let r: Receipt = match envelope::open(&env, Domain::Receipt, &key) {
            Ok(r) => r,
            Err(e) => return self.report(now, peer, format!("receipt refused: {e}")),
        };
        if r.from != peer.as_str() || r.to != self.me.as_str() {
            let detail = format!(
                "receipt from {} to {} on the line to {peer}",
                crate::text::quote(&r.from, 48),
                crate::text::quote(&r.to, 48)
            );
            return self.report(now, peer, detail);
        }
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        let Some(p) = ch.pending.get(&r.sequence) else {
            if !ch.receipted.contains(r.sequence) {
                let detail = format!("receipt for sequence {} which is not pending", r.sequence);
                self.report(now, peer, detail);
            }
            return; // a duplicate receipt for a settled message
        };
        let Some(id) = Some(p.id)
            .filter(|id| r.message_hash.as_slice() == p.hash && r.message_id == id.to_string())
        else {
            let detail = format!("receipt for sequence {} names another message", r.sequence);
            return self.report(now, peer, detail);
        };
        // Delivered, and its escalation track closed, by applying the
        // entry (apply.rs).
        self.persist(now, Event::ReceiptReceived(peer_env(peer, env.clone())));
        self.out.events.push(CoreEvent::Delivered {
            peer: peer.clone(),
            id,
            sequence: r.sequence,
            receipt: env,
        });
    }

    pub(super) fn on_nack(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(key) = self.peer_message_key(now, peer, &env.key_id) else {
            return;
        };
        let n: NegativeReceipt = match envelope::open(&env, Domain::NegativeReceipt, &key) {
            Ok(n) => n,
            Err(e) => return self.report(now, peer, format!("negative receipt refused: {e}")),
        };
        if n.from != peer.as_str() || n.to != self.me.as_str() {
            let detail = format!(
                "negative receipt from {} to {} on the line to {peer}",
                crate::text::quote(&n.from, 48),
                crate::text::quote(&n.to, 48)
            );
            return self.report(now, peer, detail);
        }
        if n.detail.len() > MAX_DETAIL_LEN || n.payload_hash.len() != 32 || n.message_id.len() > 32
        {
            let detail = format!(
                "negative receipt out of limits: detail {} bytes (limit {MAX_DETAIL_LEN}), \
                 hash {} bytes, id {} bytes",
                n.detail.len(),
                n.payload_hash.len(),
                n.message_id.len()
            );
            return self.report(now, peer, detail);
        }
        let reason = NackReason::try_from(n.reason).unwrap_or(NackReason::Unspecified);
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        if n.settles {
            // Settled by applying the entry (apply.rs), when it names a
            // message pending with that payload.
            if !settles_pending(ch, n.sequence, &n.payload_hash) {
                // Settled already (this refusal again, or one for a message
                // receipted meanwhile): nothing new, and nothing to report.
                if !ch.receipted.contains(n.sequence) {
                    let detail = format!(
                        "settling negative receipt for sequence {} names no message pending",
                        n.sequence
                    );
                    self.report(now, peer, detail);
                }
                return; // the same refusal again: nothing new
            }
        } else {
            // The peer says it does not hold this message: hand it to the
            // transport again after a back-off (§8), whatever our notice
            // budget says about logging the refusal.
            let (rto, cap) = (self.timing.rto_ms, self.timing.rto_max_ms);
            if let Some(p) = ch
                .pending
                .get_mut(&n.sequence)
                .filter(|p| p.hash.as_slice() == n.payload_hash.as_slice())
            {
                p.on_link = false;
                let shift = p.attempts.saturating_sub(1).min(16);
                let wait = rto.saturating_mul(1 << shift).min(cap);
                ch.set_timer(n.sequence, Some(now.mono_ms.saturating_add(wait)));
            }
        }
        if !n.settles && self.spend(now, peer, Spend::Notice) != Verdict::Allowed {
            // A refusal that settles nothing changes nothing here: our
            // message (if it names one) stays pending and is retransmitted.
            return;
        }
        self.persist(now, Event::NegativeReceiptReceived(peer_env(peer, env)));
        self.out.events.push(CoreEvent::NegativeReceipt {
            peer: peer.clone(),
            id: MessageId::parse(&n.message_id),
            refused_sequence: n.settles.then_some(n.sequence),
            reason,
            detail: n.detail,
        });
    }
}

pub(super) fn mark_delivered(ch: &mut Channel, seq: u64) {
    if ch.settle_pending(seq, OutState::Delivered).is_some() {
        ch.delivered = ch.delivered.saturating_add(1);
    }
    ch.receipted.insert(seq);
}

/// Whether a settling refusal of `seq` names a message of ours still
/// pending with this payload hash.
fn settles_pending(ch: &Channel, seq: u64, payload_hash: &[u8]) -> bool {
    seq != 0 && ch.pending.get(&seq).map(|p| p.hash.as_slice()) == Some(payload_hash)
}

/// Settles our message `seq` as refused if it is pending with this payload
/// hash: no more retransmissions, and `receipted_through` moves past it.
/// Returns whether it did.
pub(super) fn mark_refused(ch: &mut Channel, seq: u64, payload_hash: &[u8]) -> bool {
    if !settles_pending(ch, seq, payload_hash) {
        return false;
    }
    // Refused messages leave the outbox; the history index keeps them.
    ch.settle_pending(seq, OutState::Refused);
    ch.receipted.insert(seq);
    true
}
