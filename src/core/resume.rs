//! The line coming and going: link up and down, the hello, and what a
//! resumed connection resends (docs/protocol.md §7).

use super::budget::{Spend, Verdict};
use super::channel::Channel;
use super::output::{Output, Recall, StreamClass, Transmit};
use super::{Now, MAX_RETRANSMIT_BURST};
use crate::identity::OfficeName;
use crate::wire::proto::AlertLevel;
use crate::wire::proto::{frame::Body, log_entry::Event, Frame, Hello, LinkChanged, LinkState};
use crate::wire::PROTOCOL_VERSION;

use super::office::Core;
use super::send::transmit_message;

impl Core {
    /// The transport to `peer` is up (authenticated). Sends our hello.
    pub fn link_up(&mut self, now: Now, peer: &OfficeName, detail: &str) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.connected = true;
        ch.resumed = false;
        // The peer's check counter restarts with its process, which a new
        // connection may mean.
        ch.lc_answered = 0;
        // A connection that replaced another: what the old one carried is
        // lost with it, as on `link_down`.
        let seqs: Vec<u64> = ch.pending.keys().copied().collect();
        for s in seqs {
            ch.set_timer(s, None);
            if let Some(p) = ch.pending.get_mut(&s) {
                p.on_link = false;
            }
        }
        // The transport delivers this hello or ends the connection, so it
        // is sent once per connection (§7).
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
        // What this connection carried is lost with it: the next one's
        // resumption decides what to send again.
        let seqs: Vec<u64> = ch.pending.keys().copied().collect();
        for s in seqs {
            ch.set_timer(s, None);
            if let Some(p) = ch.pending.get_mut(&s) {
                p.on_link = false;
            }
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

    pub(super) fn on_hello(&mut self, now: Now, peer: &OfficeName, h: Hello) {
        if h.office != peer.as_str() || h.protocol_version != PROTOCOL_VERSION {
            let detail = format!(
                "hello from {} version {} on the line to {peer}",
                crate::text::quote(&h.office, 48),
                h.protocol_version
            );
            return self.report(now, peer, detail);
        }
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        if !ch.resumed {
            if !h.reply {
                send_hello(&mut self.out, &self.me, ch, true);
            }
            ch.resumed = true;
            self.resume(now, peer, &h, false);
            return self.send_card_update(peer);
        }
        if h.reply {
            return; // the answer to our hello on a line already resumed
        }
        // A hello with reply = false on a resumed connection asks us to
        // resynchronise (§7): the peer lost frames this connection carried
        // (its core was rebuilt, or it dropped our input over its budget).
        // It is answered within the peer's budget, and acted on at most once
        // per resend timeout, so a hostile peer cannot make us hand our
        // whole outbox to the transport at will.
        if self.spend(now, peer, Spend::Answer) != Verdict::Allowed {
            return;
        }
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        send_hello(&mut self.out, &self.me, ch, true);
        let due = ch
            .last_resync_mono
            .is_none_or(|t| now.mono_ms >= t.saturating_add(self.timing.rto_ms));
        if !due {
            return;
        }
        ch.last_resync_mono = Some(now.mono_ms);
        for p in ch.pending.values_mut() {
            p.on_link = false;
        }
        self.resume(now, peer, &h, true);
    }

    /// Resumption (§7) from the peer's hello `h`: our answers it lacks, our
    /// messages it lacks, and, on a new connection, what a line that came
    /// up needs (checkpoint offer, relay work, a line check, our level).
    fn resume(&mut self, now: Now, peer: &OfficeName, h: &Hello, resync: bool) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        // The peer lacks our answers above its receipted_through: resend the
        // receipts and settling refusals we signed, oldest first, at most a
        // burst (a hostile hello of 0 must not make us resend all history;
        // the rest come back as answers to the sender's resends).
        if let Some(from) = h.receipted_through.checked_add(1) {
            if from <= ch.answers.forgotten_through {
                // Some of them are in the log only: the caller reads them all
                // from there (the log holds the kept ones too).
                self.out.recall.push(Recall::Answers {
                    peer: peer.clone(),
                    from,
                    limit: MAX_RETRANSMIT_BURST,
                });
            } else {
                let answers: Vec<Body> = ch
                    .answers
                    .range(from)
                    .take(MAX_RETRANSMIT_BURST)
                    .map(|(_, (a, _))| a.body())
                    .collect();
                for body in answers {
                    self.out.transmit.push(Transmit::control(peer, body));
                }
            }
        }
        // Our messages. The peer answers (as above) every sequence it settled
        // from our receipted_through + 1, at least the next 1,024: those
        // answers are on their way, so such a message waits for its answer
        // (a backstop timer sends it once if none comes). Any other pending
        // message is handed to the transport now, in sequence order.
        let answered_through = h.received_through.min(
            ch.receipted
                .through
                .saturating_add(MAX_RETRANSMIT_BURST as u64),
        );
        let seqs: Vec<u64> = ch.pending.keys().copied().collect();
        for seq in seqs {
            if seq > answered_through {
                transmit_message(&mut self.out, ch, seq);
            } else {
                let wait = self.timing.rto_max_ms;
                ch.set_timer(seq, Some(now.mono_ms.saturating_add(wait)));
            }
        }
        if resync {
            return;
        }
        // Offer our latest checkpoint from the size the peer says it last
        // cosigned. That is only where to start the proof: what the peer has
        // cosigned is what its verified cosignatures say, never its hello.
        self.offer_checkpoint(peer, h.cosigned_size);
        // A relay forwards what it holds for this office.
        self.forward_spooled(peer);
        // A relay came up: send what earlier reroute steps could not.
        self.reroute_waiting_via(peer);
        // Check the line at once, and restate a raised alert level.
        self.send_line_check(now, peer);
        if self
            .channels
            .get(peer)
            .is_some_and(|c| c.own_level != AlertLevel::Normal)
        {
            self.send_alert_level(now, peer, "restated on reconnection");
        }
    }
}

pub(super) fn send_hello(out: &mut Output, me: &OfficeName, ch: &Channel, reply: bool) {
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        office: me.to_string(),
        received_through: ch.received.through,
        receipted_through: ch.receipted.through,
        reply,
        cosigned_size: ch.i_cosigned.as_ref().map(|c| c.size).unwrap_or(0),
    };
    out.transmit.push(Transmit {
        datagram: false,
        message: None,
        peer: ch.peer.clone(),
        class: StreamClass::Control,
        frame: Frame {
            body: Some(Body::Hello(hello)),
        },
    });
}
