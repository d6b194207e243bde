//! The relay path: frames sealed end to end and carried by a protecting
//! power that can neither read nor forge them.
//!
//! An office seals a whole frame (a message, or the receipt for one that
//! came by relay) to the recipient's X25519 key with the routing header as
//! associated data and hands it to a relay. The relay checks the header
//! against who gave it the frame, stores it by hash (its log records the
//! hash, never the content), answers with a signed relay receipt, and
//! forwards it when the recipient is connected. The recipient opens it,
//! verifies the sender's signature inside as if the frame had come direct,
//! and tells the relay it has it; the relay logs the hand-over and tells
//! the sender. A copy that arrives both ways is a duplicate like any other:
//! delivered once.

use prost::Message as _;

use super::office::Core;
use super::output::{CoreEvent, Transmit};
use super::Now;
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{
    frame::Body, log_entry::Event, Frame, RelayPassage, RelayReceipt, RelayState, RelayTaken,
    RoutingHeader, Sealed, SignedEnvelope,
};
use crate::wire::{seal, sha256};

/// Most frames a relay holds for one office.
pub const MAX_SPOOL_PER_OFFICE: usize = 10_000;
/// How long a relay keeps a frame nobody claims (7 days), then drops it
/// and tells the submitter.
pub const MAX_SPOOL_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest sealed frame a relay accepts (a message frame plus sealing).
pub const MAX_SEALED_LEN: usize = crate::wire::MAX_FRAME_LEN;

/// A frame a relay holds.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Who gave it.
    pub from: OfficeName,
    /// For whom.
    pub to: OfficeName,
    /// The sealed frame (header and ciphertext).
    pub sealed: Option<Sealed>,
    /// When it was accepted (relay's wall clock).
    pub accepted_unix_ms: u64,
}

/// What a relay logs about a frame: everything but its content.
fn passage(hash: &[u8; 32], h: &RoutingHeader) -> RelayPassage {
    RelayPassage {
        sealed_hash: hash.to_vec(),
        from: h.from.clone(),
        to: h.to.clone(),
        message_id: h.message_id.clone(),
        size: h.size,
    }
}

fn header_bytes(h: &RoutingHeader) -> Vec<u8> {
    h.encode_to_vec()
}

impl Core {
    /// Makes this core a relay: it stores and forwards sealed frames
    /// between its pinned offices.
    pub fn set_relay_role(&mut self, relay: bool) {
        self.is_relay = relay;
    }

    /// Seals `frame` to `to` and hands it to `relay`. Returns false when
    /// the relay is not connected.
    pub(super) fn send_sealed(
        &mut self,
        to: &OfficeName,
        relay: &OfficeName,
        message_id: &str,
        frame: &Frame,
    ) -> bool {
        let (Some(dest), Some(r)) = (self.channels.get(to), self.channels.get(relay)) else {
            return false;
        };
        if !(r.connected && r.resumed) {
            return false;
        }
        let plaintext = frame.encode_to_vec();
        let mut header = RoutingHeader {
            from: self.me.to_string(),
            to: to.to_string(),
            message_id: message_id.to_string(),
            size: 0,
            relay: relay.to_string(),
        };
        // The size is of the ciphertext, which is plaintext + 16 (the tag).
        header.size = (plaintext.len() as u64).saturating_add(16);
        let randomness = &mut self.randomness;
        let Ok(s) = seal::seal_with(&dest.seal_key, &header_bytes(&header), &plaintext, |b| {
            randomness.fill(b)
        }) else {
            return false;
        };
        self.out.transmit.push(Transmit::control(
            relay,
            Body::Sealed(Sealed {
                header: Some(header),
                enc: s.enc,
                ciphertext: s.ciphertext,
            }),
        ));
        true
    }

    /// `relay`'s line is resumed: every message whose reroute step found no
    /// relay reachable, and that is still unreceipted, goes through it now.
    pub(super) fn reroute_waiting_via(&mut self, relay: &OfficeName) {
        let peers: Vec<OfficeName> = self
            .channels
            .values()
            .filter(|c| !c.reroute_waiting.is_empty() && c.relays.contains(relay))
            .map(|c| c.peer.clone())
            .collect();
        for peer in peers {
            let Some(ch) = self.channels.get_mut(&peer) else {
                continue;
            };
            let waiting = std::mem::take(&mut ch.reroute_waiting);
            for seq in waiting {
                if !self
                    .channels
                    .get(&peer)
                    .is_some_and(|c| c.pending.contains_key(&seq))
                {
                    continue; // receipted meanwhile
                }
                if self.send_via_relay(&peer, seq, Some(relay)).is_none() {
                    if let Some(ch) = self.channels.get_mut(&peer) {
                        ch.reroute_waiting.insert(seq);
                    }
                }
            }
        }
    }

    /// Sends message `seq` to `peer` through one of its relays now.
    /// Returns the relay used.
    pub fn send_via_relay(
        &mut self,
        peer: &OfficeName,
        seq: u64,
        only: Option<&OfficeName>,
    ) -> Option<OfficeName> {
        let ch = self.channels.get(peer)?;
        let item = ch.pending.get(&seq)?;
        let frame = Frame {
            body: Some(Body::Message(item.envelope.clone())),
        };
        let id = item.id.to_string();
        let relays: Vec<OfficeName> = ch
            .relays
            .iter()
            .filter(|r| only.is_none_or(|o| o == *r))
            .cloned()
            .collect();
        relays
            .into_iter()
            .find(|relay| self.send_sealed(peer, relay, &id, &frame))
    }

    pub(super) fn on_sealed(&mut self, now: Now, from_peer: &OfficeName, sealed: Sealed) {
        let Some(header) = sealed.header.clone() else {
            return;
        };
        if header.to == self.me.as_str() {
            self.open_sealed(now, from_peer, sealed, header);
        } else if self.is_relay {
            self.relay_sealed(now, from_peer, sealed, header);
        }
    }

    /// Relay side: check, store, acknowledge, forward.
    fn relay_sealed(
        &mut self,
        now: Now,
        submitter: &OfficeName,
        sealed: Sealed,
        header: RoutingHeader,
    ) {
        let bytes = sealed.encode_to_vec();
        let hash = sha256(&bytes);
        let refuse = |reason: &str| reason.to_string();
        let to = OfficeName::new(header.to.clone())
            .ok()
            .filter(|t| self.channels.contains_key(t));
        let problem = if header.from != submitter.as_str() {
            Some(refuse("the header names another sender"))
        } else if header.relay != self.me.as_str() {
            Some(refuse("the header names another relay"))
        } else if to.is_none() {
            Some(refuse("the recipient is not an office this relay serves"))
        } else if bytes.len() > MAX_SEALED_LEN || header.size != sealed.ciphertext.len() as u64 {
            Some(refuse("size over the limit or not as declared"))
        } else if self
            .spool
            .values()
            .filter(|s| Some(&s.to) == to.as_ref())
            .count()
            >= MAX_SPOOL_PER_OFFICE
        {
            Some(refuse("the queue for that office is full; try later"))
        } else {
            None
        };
        if let Some(reason) = problem {
            return self.relay_receipt(
                now,
                submitter,
                &hash,
                &header,
                RelayState::Refused,
                &reason,
            );
        }
        let Some(to) = to else {
            return; // refused above
        };
        if !self.spool.contains_key(&hash) {
            // Spooled by applying the entry (apply.rs); the frame itself
            // is this run's to hold (the caller writes it to the spool).
            self.persist(now, Event::RelayAccepted(passage(&hash, &header)));
            self.out.spool_write.push((hash, bytes));
            if let Some(s) = self.spool.get_mut(&hash) {
                s.sealed = Some(sealed.clone());
            }
        }
        self.relay_receipt(now, submitter, &hash, &header, RelayState::Accepted, "");
        if self.is_resumed(&to) {
            self.out
                .transmit
                .push(Transmit::control(&to, Body::Sealed(sealed)));
        }
    }

    fn relay_receipt(
        &mut self,
        now: Now,
        to: &OfficeName,
        hash: &[u8; 32],
        header: &RoutingHeader,
        state: RelayState,
        reason: &str,
    ) {
        let r = RelayReceipt {
            sealed_hash: hash.to_vec(),
            message_id: header.message_id.clone(),
            relay: self.me.to_string(),
            submitter: header.from.clone(),
            to: header.to.clone(),
            state: state as i32,
            reason: reason.into(),
            time_unix_ms: now.wall_ms,
        };
        let env = envelope::seal_proto(Domain::RelayReceipt, &r, &self.key);
        self.out
            .transmit
            .push(Transmit::control(to, Body::RelayReceipt(env)));
    }

    /// Relay side: everything spooled for `peer`, on resumption.
    pub(super) fn forward_spooled(&mut self, peer: &OfficeName) {
        if !self.is_relay {
            return;
        }
        let frames: Vec<Sealed> = self
            .spool
            .values()
            .filter(|s| &s.to == peer)
            .filter_map(|s| s.sealed.clone())
            .collect();
        for s in frames {
            self.out
                .transmit
                .push(Transmit::control(peer, Body::Sealed(s)));
        }
    }

    pub(super) fn on_relay_taken(&mut self, now: Now, peer: &OfficeName, t: RelayTaken) {
        let Ok(hash) = <[u8; 32]>::try_from(t.sealed_hash.as_slice()) else {
            return;
        };
        let Some(item) = self.spool.get(&hash) else {
            return;
        };
        if &item.to != peer {
            return;
        }
        self.release_spooled(now, hash, RelayState::HandedOver);
    }

    /// Relay side: a spooled frame leaves (handed over, or expired): log it
    /// by hash, drop the stored copy, and tell the submitter if it is there.
    fn release_spooled(&mut self, now: Now, hash: [u8; 32], outcome: RelayState) {
        // Removed from the spool by applying the entry (apply.rs).
        let Some(item) = self.spool.get(&hash).cloned() else {
            return;
        };
        let header = item
            .sealed
            .as_ref()
            .and_then(|s| s.header.clone())
            .unwrap_or_default();
        let (event, reason) = if outcome == RelayState::HandedOver {
            (Event::RelayHandedOver(passage(&hash, &header)), "")
        } else {
            (
                Event::RelayExpired(passage(&hash, &header)),
                "expired unclaimed",
            )
        };
        self.persist(now, event);
        self.out.spool_delete.push(hash);
        if self
            .channels
            .get(&item.from)
            .is_some_and(|c| c.connected && c.resumed)
        {
            self.relay_receipt(now, &item.from, &hash, &header, outcome, reason);
        }
    }

    /// Recipient side: open, check the header against the inside, process
    /// the inner frame as if it came direct, and answer the same way.
    fn open_sealed(&mut self, now: Now, relay: &OfficeName, sealed: Sealed, header: RoutingHeader) {
        let hash = sha256(&sealed.encode_to_vec());
        let claimed = OfficeName::new(header.from.clone())
            .ok()
            .filter(|f| self.channels.contains_key(f));
        let frame = seal::Sealed {
            enc: sealed.enc.clone(),
            ciphertext: sealed.ciphertext.clone(),
        };
        let aad = header_bytes(&header);
        // The current seal key, then any a key rotation keeps (a frame
        // sealed before the sender learned our new key, or after it learned
        // the one we are about to switch to).
        let mut opened = seal::open(&self.seal_private, &aad, &frame);
        for secret in &self.seal_openers {
            if opened.is_ok() {
                break;
            }
            opened = seal::open(secret, &aad, &frame);
        }
        let (Some(from), Ok(plain)) = (claimed.clone(), opened) else {
            // Altered in transit (or not for us): refuse, and say so to the
            // claimed sender through the same relay.
            if let Some(from) = claimed {
                self.refuse_sealed(now, &from, relay, hash, &header);
            }
            return;
        };
        let Ok(inner) = Frame::decode(plain.as_slice()) else {
            return self.refuse_sealed(now, &from, relay, hash, &header);
        };
        // HPKE base mode does not say who sealed a frame, so only frames
        // that carry their sender's own signature may come this way.
        if !matches!(
            inner.body,
            Some(Body::Message(_)) | Some(Body::Receipt(_)) | Some(Body::NegativeReceipt(_))
        ) {
            return self.refuse_sealed(now, &from, relay, hash, &header);
        }
        // The header may not lie about the inside.
        if let Some(Body::Message(env)) = &inner.body {
            let ok = crate::wire::proto::Message::decode(env.payload.as_slice())
                .is_ok_and(|m| m.from == header.from && m.id == header.message_id);
            if !ok {
                return self.refuse_sealed(now, &from, relay, hash, &header);
            }
        }
        let before = self.out.transmit.len();
        self.receiving_via = Some(relay.clone());
        self.handle_frame(now, &from, inner);
        self.receiving_via = None;
        // Answers to `from` produced just now go back through the relay when
        // there is no direct line.
        let direct = self.is_resumed(&from);
        if !direct {
            let answers: Vec<Transmit> = self.out.transmit.drain(before..).collect();
            for t in answers {
                if t.peer == from {
                    let id = header.message_id.clone();
                    self.send_sealed(&from, relay, &id, &t.frame);
                } else {
                    self.out.transmit.push(t);
                }
            }
        }
        self.out.transmit.push(Transmit::control(
            relay,
            Body::RelayTaken(RelayTaken {
                sealed_hash: hash.to_vec(),
            }),
        ));
    }

    fn refuse_sealed(
        &mut self,
        now: Now,
        from: &OfficeName,
        relay: &OfficeName,
        hash: [u8; 32],
        header: &RoutingHeader,
    ) {
        if self.spend(now, from, super::budget::Spend::Refusal) != super::budget::Verdict::Allowed {
            return;
        }
        let nack = crate::wire::proto::NegativeReceipt {
            payload_hash: hash.to_vec(),
            message_id: header.message_id.clone(),
            sequence: 0,
            from: self.me.to_string(),
            to: from.to_string(),
            time_unix_ms: now.wall_ms,
            reason: crate::wire::proto::NackReason::BadSeal as i32,
            detail: format!("a frame relayed by {relay} does not open: altered in transit"),
            ..Default::default()
        };
        let env = envelope::seal_proto(Domain::NegativeReceipt, &nack, &self.key);
        self.persist(
            now,
            Event::NegativeReceiptSent(crate::wire::proto::PeerEnvelope {
                peer: from.to_string(),
                envelope: Some(env.clone()),
                ..Default::default()
            }),
        );
        self.out.events.push(CoreEvent::Refused {
            peer: from.clone(),
            reason: crate::wire::proto::NackReason::BadSeal,
            detail: format!("sealed frame via {relay} does not open"),
        });
        if self.is_resumed(from) {
            self.out
                .transmit
                .push(Transmit::control(from, Body::NegativeReceipt(env)));
        } else {
            let frame = Frame {
                body: Some(Body::NegativeReceipt(env)),
            };
            let id = header.message_id.clone();
            self.send_sealed(from, relay, &id, &frame);
        }
        // The relay may drop it: it was delivered, if not intact.
        self.out.transmit.push(Transmit::control(
            relay,
            Body::RelayTaken(RelayTaken {
                sealed_hash: hash.to_vec(),
            }),
        ));
    }

    pub(super) fn on_relay_receipt(&mut self, now: Now, relay: &OfficeName, env: SignedEnvelope) {
        let Some(key) = self.peer_message_key(now, relay, &env.key_id) else {
            return;
        };
        let Ok(r) = envelope::open::<RelayReceipt>(&env, Domain::RelayReceipt, &key) else {
            return self.out.events.push(CoreEvent::ProtocolError {
                peer: relay.clone(),
                detail: "relay receipt does not verify".into(),
            });
        };
        if r.relay != relay.as_str() || r.submitter != self.me.as_str() {
            return;
        }
        self.persist(
            now,
            Event::RelayReceiptReceived(crate::wire::proto::PeerEnvelope {
                peer: relay.to_string(),
                envelope: Some(env),
                ..Default::default()
            }),
        );
        let state = match RelayState::try_from(r.state).unwrap_or_default() {
            RelayState::Accepted => "accepted",
            RelayState::HandedOver => "handed-over",
            RelayState::Refused => "refused",
            RelayState::Unspecified => "unknown",
        };
        self.out.events.push(CoreEvent::RelayReceipt {
            relay: relay.clone(),
            message_id: r.message_id,
            state: state.into(),
            reason: r.reason,
        });
    }

    /// Relay side: rebuilds the spool index from the log; the shell then
    /// gives back each stored frame with [`Core::restore_spooled`].
    /// What a relay-passage entry does to the spool (live and replayed).
    pub(super) fn apply_relay(&mut self, event: &Event, time_unix_ms: u64) {
        match event {
            Event::RelayExpired(p) => {
                if let Ok(hash) = <[u8; 32]>::try_from(p.sealed_hash.as_slice()) {
                    self.spool.remove(&hash);
                }
            }
            Event::RelayAccepted(p) => {
                if let (Ok(hash), Ok(from), Ok(to)) = (
                    <[u8; 32]>::try_from(p.sealed_hash.as_slice()),
                    OfficeName::new(p.from.clone()),
                    OfficeName::new(p.to.clone()),
                ) {
                    self.spool.insert(
                        hash,
                        Spooled {
                            from,
                            to,
                            sealed: None,
                            accepted_unix_ms: time_unix_ms,
                        },
                    );
                }
            }
            Event::RelayHandedOver(p) => {
                if let Ok(hash) = <[u8; 32]>::try_from(p.sealed_hash.as_slice()) {
                    self.spool.remove(&hash);
                }
            }
            _ => {}
        }
    }

    /// Relay side: drops frames nobody claimed within the age limit, and
    /// tells their submitters why.
    pub(super) fn expire_spooled(&mut self, now: Now) {
        if !self.is_relay {
            return;
        }
        let old: Vec<[u8; 32]> = self
            .spool
            .iter()
            .filter(|(_, s)| {
                s.accepted_unix_ms > 0
                    && now.wall_ms.saturating_sub(s.accepted_unix_ms) > MAX_SPOOL_AGE_MS
            })
            .map(|(h, _)| *h)
            .collect();
        for hash in old {
            self.release_spooled(now, hash, RelayState::Refused);
        }
    }

    /// Hashes of spooled frames whose bytes the shell must restore.
    pub fn spool_needed(&self) -> Vec<[u8; 32]> {
        self.spool
            .iter()
            .filter(|(_, s)| s.sealed.is_none())
            .map(|(h, _)| *h)
            .collect()
    }

    /// Gives back a stored frame after a restart.
    pub fn restore_spooled(&mut self, hash: [u8; 32], bytes: &[u8]) -> bool {
        let Some(item) = self.spool.get_mut(&hash) else {
            return false;
        };
        if sha256(bytes) != hash {
            return false;
        }
        item.sealed = Sealed::decode(bytes).ok();
        item.sealed.is_some()
    }
}
