//! Card updates (docs/protocol.md §8d): an office replaces its card in
//! band, signed with the message key of the card it replaces, so that a
//! peer holding only the old card can pin the new one without a second
//! exchange out of band.
//!
//! What may change: the node certificate (reissued by the same CA) and the
//! message, log and seal keys. The CA and the role must stay. An update
//! names the keys it replaces, so each log holds its offices' key history:
//! the peer keeps accepting the replaced keys (see
//! [`super::channel::KEY_OVERLAP_MS`]) and `audit verify` checks older
//! entries under them.
//!
//! The offering office keeps using its old certificate and keys until every
//! peer has accepted (a signed [`CardUpdateAccepted`], logged by both); the
//! node then switches ([`Core::switch_own_keys`]). Each side logs what it
//! sent and what it received, so the change is in both logs.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use prost::Message as _;

use super::budget::{Spend, Verdict};
use super::office::Core;
use super::office::OfficeKeys;
use super::output::{CoreEvent, Transmit};
use super::Now;
use crate::identity::{OfficeCard, OfficeName};
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{
    frame::Body, log_entry::Event, CardUpdate, CardUpdateAccepted, PeerEnvelope, SignedEnvelope,
};

/// The largest card update payload accepted (a card with a P-256 CA
/// certificate is about 1.5 KiB).
pub const MAX_CARD_UPDATE_BYTES: usize = 6_144;

/// Our own update in progress, and what we pinned of the peers'.
#[derive(Debug, Default)]
pub(crate) struct CardUpdates {
    /// The new fingerprint we offered and its signed envelope.
    offered: Option<(String, SignedEnvelope)>,
    /// Peers that have not yet accepted it.
    waiting: BTreeSet<OfficeName>,
    /// The latest new card each peer gave us (its fingerprint), and the
    /// update it came in.
    pinned_from: BTreeMap<OfficeName, String>,
    pinned_updates: BTreeMap<OfficeName, CardUpdate>,
    /// Each peer's CA certificate (SHA-256 of the DER) and role, when the
    /// node told us: an update must keep them.
    peer_ca: BTreeMap<OfficeName, ([u8; 32], String)>,
    /// Our log key before our last update changed it: a cosignature of a
    /// checkpoint signed with it may still arrive.
    pub(super) own_previous_log: Option<VerifyingKey>,
    /// Peers whose updates wait for the operator's confirmation.
    confirm: BTreeSet<OfficeName>,
    /// Each such peer's latest update that passed every check, waiting
    /// (one per peer: a later one replaces it). Not logged until confirmed.
    held: BTreeMap<OfficeName, (CardUpdate, SignedEnvelope)>,
    /// Set for the moment a confirmed update is processed.
    confirming: Option<(OfficeName, String)>,
}

/// A card update waiting for its operator (see [`Core::held_card_updates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCardUpdate {
    /// The peer.
    pub peer: OfficeName,
    /// The card it replaces.
    pub old_fingerprint: String,
    /// The new card's fingerprint: read it aloud with the peer.
    pub fingerprint: String,
}

/// Why a held update could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// Nothing from that peer is waiting.
    #[error("no card update from {0} is waiting for confirmation")]
    NothingHeld(String),
    /// The fingerprint given is not the one waiting.
    #[error("the card update from {peer} waiting is {held}, not {given}: read the fingerprint aloud again")]
    Mismatch {
        /// Peer.
        peer: String,
        /// Waiting.
        held: String,
        /// Given.
        given: String,
    },
}

/// Why an update could not be offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// An earlier one is still waiting for peers.
    #[error("card {fingerprint} is still waiting for {waiting} to accept it")]
    Pending {
        /// The card offered before.
        fingerprint: String,
        /// Peers that have not accepted it.
        waiting: String,
    },
    /// The update is not a card of this office.
    #[error("not a card update of this office: {0}")]
    Invalid(String),
}

fn payload_of(pe: &PeerEnvelope) -> &[u8] {
    pe.envelope.as_ref().map_or(&[], |e| e.payload.as_slice())
}

impl Core {
    /// Offers our new card to every peer. `update` is built from the new
    /// card (its `old_fingerprint` our current card's); it is signed with
    /// our current message key.
    pub fn offer_card(&mut self, now: Now, update: CardUpdate) -> Result<(), OfferError> {
        if let Some((fp, _)) = &self.card_updates.offered {
            if !self.card_updates.waiting.is_empty() {
                return Err(OfferError::Pending {
                    fingerprint: fp.clone(),
                    waiting: self
                        .card_updates
                        .waiting
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        if update.office != self.me.as_str() {
            return Err(OfferError::Invalid(format!("it names {}", update.office)));
        }
        let env = envelope::seal_proto(Domain::CardUpdate, &update, &self.key);
        if env.payload.len() > MAX_CARD_UPDATE_BYTES {
            return Err(OfferError::Invalid(format!(
                "{} bytes; the limit is {MAX_CARD_UPDATE_BYTES}",
                env.payload.len()
            )));
        }
        let peers: Vec<OfficeName> = self.channels.keys().cloned().collect();
        // The offer and the peers it waits for come from applying the
        // entries (apply.rs).
        for peer in &peers {
            self.persist(
                now,
                Event::CardUpdateSent(PeerEnvelope {
                    peer: peer.to_string(),
                    envelope: Some(env.clone()),
                    via: String::new(),
                }),
            );
        }
        for peer in &peers {
            self.send_card_update(peer);
        }
        Ok(())
    }

    /// Holds `peer`'s card updates for the operator's confirmation instead
    /// of pinning them on the signature alone (the office's policy).
    pub fn require_card_confirmation(&mut self, peer: &OfficeName, on: bool) {
        if on {
            self.card_updates.confirm.insert(peer.clone());
        } else {
            self.card_updates.confirm.remove(peer);
        }
    }

    /// Card updates waiting for the operator's confirmation.
    pub fn held_card_updates(&self) -> Vec<HeldCardUpdate> {
        self.card_updates
            .held
            .iter()
            .map(|(peer, (u, _))| HeldCardUpdate {
                peer: peer.clone(),
                old_fingerprint: u.old_fingerprint.clone(),
                fingerprint: u.new_fingerprint.clone(),
            })
            .collect()
    }

    /// The operator confirmed `peer`'s held update with `fingerprint`
    /// (compared by voice): it is checked again, pinned, logged and
    /// answered.
    pub fn confirm_card(
        &mut self,
        now: Now,
        peer: &OfficeName,
        fingerprint: &str,
    ) -> Result<(), ConfirmError> {
        let Some((u, env)) = self.card_updates.held.get(peer).cloned() else {
            return Err(ConfirmError::NothingHeld(peer.to_string()));
        };
        if u.new_fingerprint != fingerprint {
            return Err(ConfirmError::Mismatch {
                peer: peer.to_string(),
                held: u.new_fingerprint,
                given: fingerprint.into(),
            });
        }
        self.card_updates.held.remove(peer);
        self.card_updates.confirming = Some((peer.clone(), u.new_fingerprint));
        self.on_card_update(now, peer, env);
        self.card_updates.confirming = None;
        Ok(())
    }

    /// Tells the core `peer`'s pinned CA (SHA-256 of its DER) and role, so
    /// that a card update that changes either is refused.
    pub fn pin_peer_ca(&mut self, peer: &OfficeName, ca_sha256: [u8; 32], role: &str) {
        self.card_updates
            .peer_ca
            .insert(peer.clone(), (ca_sha256, role.to_string()));
    }

    /// The card we offered and the peers that have not accepted it yet
    /// (empty when all have: the node may switch to it).
    pub fn card_offer(&self) -> Option<(&str, Vec<OfficeName>)> {
        self.card_updates.offered.as_ref().map(|(fp, _)| {
            (
                fp.as_str(),
                self.card_updates.waiting.iter().cloned().collect(),
            )
        })
    }

    /// The latest card update the log says we pinned for each peer. A node
    /// that stopped between logging one and storing the card finds here
    /// what to store at its next start.
    pub fn pinned_card_updates(&self) -> impl Iterator<Item = (&OfficeName, &CardUpdate)> {
        self.card_updates.pinned_updates.iter()
    }

    /// Sends our pending update to `peer` if it has not accepted it (on
    /// every resumed connection until it does).
    pub(super) fn send_card_update(&mut self, peer: &OfficeName) {
        let (Some((_, env)), true) = (
            &self.card_updates.offered,
            self.card_updates.waiting.contains(peer),
        ) else {
            return;
        };
        let connected = self
            .channels
            .get(peer)
            .is_some_and(|c| c.connected && c.resumed);
        if connected {
            self.out
                .transmit
                .push(Transmit::control(peer, Body::CardUpdate(env.clone())));
        }
    }

    /// A peer's new card.
    pub(super) fn on_card_update(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        if env.payload.len() > MAX_CARD_UPDATE_BYTES {
            let detail = format!(
                "card update of {} bytes; the limit is {MAX_CARD_UPDATE_BYTES}",
                env.payload.len()
            );
            return self.report(now, peer, detail);
        }
        let Some(u) =
            self.open_from::<CardUpdate>(now, peer, &env, Domain::CardUpdate, "card update")
        else {
            return;
        };
        if u.office != peer.as_str() {
            let detail = format!(
                "card update for {} on the line to {peer}",
                crate::text::quote(&u.office, 48)
            );
            return self.report(now, peer, detail);
        }
        if self.card_updates.pinned_from.get(peer) == Some(&u.new_fingerprint) {
            // Already pinned: our acceptance was lost. Answer again.
            if self.spend(now, peer, Spend::Answer) == Verdict::Allowed {
                self.accept_card(now, peer, &u.new_fingerprint, false);
            }
            return;
        }
        let Some(pinned) = self.pinned.get(peer.as_str()).cloned() else {
            return self.report(now, peer, "card update, but no card of it is pinned".into());
        };
        if u.old_fingerprint != pinned {
            let detail = format!(
                "card update replaces card {} but {pinned} is pinned",
                crate::text::quote(&u.old_fingerprint, 32)
            );
            return self.report(now, peer, detail);
        }
        let card = match OfficeCard::from_update(&u, String::new()) {
            Ok(c) => c,
            Err(e) => return self.report(now, peer, format!("card update refused: {e}")),
        };
        // The card it says it replaces must be the one we hold, field by
        // field: the log then holds the keys it retires.
        let old = match OfficeCard::replaced_by_update(&u) {
            Ok(c) => c,
            Err(e) => {
                return self.report(now, peer, format!("card update's old card refused: {e}"))
            }
        };
        let Some(ch) = self.channels.get(peer) else {
            return;
        };
        let same_ca = match (self.card_updates.peer_ca.get(peer), card.ca_cert_der()) {
            (Some((pinned, role)), Ok(ca)) => {
                crate::wire::sha256(ca.as_ref()) == *pinned && *role == card.role
            }
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        };
        let old_matches = old.message_verifying_key().ok() == Some(ch.key)
            && old.log_verifying_key().ok() == Some(ch.log_key)
            && old.seal_public().ok() == Some(ch.seal_key);
        if !old_matches {
            return self.report(
                now,
                peer,
                "card update's old keys are not the keys pinned for it".into(),
            );
        }
        if !same_ca {
            return self.report(
                now,
                peer,
                "card update changes the CA or the role: exchange the new card out of band".into(),
            );
        }
        let confirmed = self
            .card_updates
            .confirming
            .as_ref()
            .is_some_and(|(p, fp)| p == peer && *fp == u.new_fingerprint);
        if self.card_updates.confirm.contains(peer) && !confirmed {
            let again = self
                .card_updates
                .held
                .get(peer)
                .is_some_and(|(h, _)| h.new_fingerprint == u.new_fingerprint);
            // A resend of what waits costs nothing; a new one spends from
            // the budget like a pin would, and replaces it.
            if again || self.spend(now, peer, Spend::CardUpdate) != Verdict::Allowed {
                return;
            }
            self.out.events.push(CoreEvent::CardUpdateHeld {
                peer: peer.clone(),
                old_fingerprint: u.old_fingerprint.clone(),
                fingerprint: u.new_fingerprint.clone(),
            });
            self.card_updates.held.insert(peer.clone(), (u, env));
            return;
        }
        if !confirmed && self.spend(now, peer, Spend::CardUpdate) != Verdict::Allowed {
            return;
        }
        self.card_updates.held.remove(peer);
        self.persist(
            now,
            Event::CardUpdateReceived(PeerEnvelope {
                peer: peer.to_string(),
                envelope: Some(env),
                via: String::new(),
            }),
        );
        // Pinned, with the channel's keys changed over, by applying the
        // entry logged above (apply.rs).
        self.accept_card(now, peer, &card.fingerprint, true);
        self.out.events.push(CoreEvent::PeerCardUpdated {
            peer: peer.clone(),
            card: Box::new(card),
        });
    }

    /// Signs, sends and (when `log`) logs our acceptance of `peer`'s card.
    fn accept_card(&mut self, now: Now, peer: &OfficeName, fingerprint: &str, log: bool) {
        let a = CardUpdateAccepted {
            from: self.me.to_string(),
            to: peer.to_string(),
            new_fingerprint: fingerprint.into(),
            time_unix_ms: now.wall_ms,
        };
        let env = envelope::seal_proto(Domain::CardUpdateAccepted, &a, &self.key);
        if log {
            self.persist(
                now,
                Event::CardUpdateAcceptedSent(PeerEnvelope {
                    peer: peer.to_string(),
                    envelope: Some(env.clone()),
                    via: String::new(),
                }),
            );
        }
        self.out
            .transmit
            .push(Transmit::control(peer, Body::CardUpdateAccepted(env)));
    }

    /// A peer accepted our new card.
    pub(super) fn on_card_update_accepted(
        &mut self,
        now: Now,
        peer: &OfficeName,
        env: SignedEnvelope,
    ) {
        let Some(a) = self.open_from::<CardUpdateAccepted>(
            now,
            peer,
            &env,
            Domain::CardUpdateAccepted,
            "card update acceptance",
        ) else {
            return;
        };
        let ours = self
            .card_updates
            .offered
            .as_ref()
            .map(|(fp, _)| fp.as_str());
        if a.from != peer.as_str()
            || a.to != self.me.as_str()
            || ours != Some(a.new_fingerprint.as_str())
            || !self.card_updates.waiting.contains(peer)
        {
            return; // stale or stray: nothing to log
        }
        self.persist(
            now,
            Event::CardUpdateAcceptedReceived(PeerEnvelope {
                peer: peer.to_string(),
                envelope: Some(env),
                via: String::new(),
            }),
        );
        self.out.events.push(CoreEvent::CardUpdateAccepted {
            peer: peer.clone(),
            fingerprint: a.new_fingerprint,
            all: self.card_updates.waiting.is_empty(),
        });
    }

    /// A logged update of `peer`'s card, replayed: the channel takes the
    /// new keys and keeps the old as retiring, when the keys it was built
    /// with (from the card on file) are either. A card pinned by hand
    /// since then stays as it is.
    fn replay_rekey(&mut self, peer: &OfficeName, u: &CardUpdate) {
        let (Ok(new), Ok(old)) = (
            OfficeCard::from_update(u, String::new()),
            OfficeCard::replaced_by_update(u),
        ) else {
            return;
        };
        let (Ok(key), Ok(log_key), Ok(seal)) = (
            new.message_verifying_key(),
            new.log_verifying_key(),
            new.seal_public(),
        ) else {
            return;
        };
        let (Ok(old_key), Ok(old_log)) = (old.message_verifying_key(), old.log_verifying_key())
        else {
            return;
        };
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        let at_new = ch.key == key && ch.log_key == log_key;
        let at_old = ch.key == old_key && ch.log_key == old_log;
        if !(at_new || at_old) {
            return;
        }
        ch.key = old_key;
        ch.log_key = old_log;
        ch.origin = crate::audit::checkpoint::origin(peer, &old_log);
        ch.previous = None;
        ch.rekey(key, log_key, seal);
    }

    /// Our card update was accepted by every peer and the node switched
    /// to its keys: sign and open with them from now on. Our old seal key
    /// still opens frames sealed before the peers learned the new one,
    /// and our old log key still checks cosignatures of checkpoints made
    /// with it.
    pub fn switch_own_keys(&mut self, keys: OfficeKeys) {
        if keys.log.verifying_key() != self.log_key.verifying_key() {
            self.card_updates.own_previous_log = Some(self.log_key.verifying_key());
        }
        let old_seal = std::mem::replace(&mut self.seal_private, keys.seal);
        // After the replacement: an opener equal to the current key is skipped.
        self.add_seal_opener(old_seal);
        self.origin = crate::audit::checkpoint::origin(&self.me, &keys.log.verifying_key());
        self.key = keys.message;
        self.log_key = keys.log;
    }

    /// What a card-update entry does to the state (live and replayed).
    pub(super) fn apply_card_update(&mut self, event: &Event) {
        match event {
            Event::CardUpdateSent(pe) => {
                let Ok(u) = CardUpdate::decode(payload_of(pe)) else {
                    return;
                };
                let Ok(peer) = OfficeName::new(&pe.peer) else {
                    return;
                };
                let same = self
                    .card_updates
                    .offered
                    .as_ref()
                    .is_some_and(|(fp, _)| *fp == u.new_fingerprint);
                if !same {
                    self.card_updates.waiting.clear();
                }
                if u.old_log_key != u.log_key {
                    self.card_updates.own_previous_log =
                        crate::identity::keys::parse_public(&u.old_log_key);
                }
                if let Some(env) = &pe.envelope {
                    self.card_updates.offered = Some((u.new_fingerprint, env.clone()));
                }
                if self.channels.contains_key(&peer) {
                    self.card_updates.waiting.insert(peer);
                }
            }
            Event::CardUpdateAcceptedReceived(pe) => {
                if let Ok(peer) = OfficeName::new(&pe.peer) {
                    self.card_updates.waiting.remove(&peer);
                }
            }
            Event::CardUpdateReceived(pe) => {
                let (Ok(u), Ok(peer)) = (
                    CardUpdate::decode(payload_of(pe)),
                    OfficeName::new(&pe.peer),
                ) else {
                    return;
                };
                self.pinned
                    .insert(peer.to_string(), u.new_fingerprint.clone());
                self.replay_rekey(&peer, &u);
                self.card_updates
                    .pinned_from
                    .insert(peer.clone(), u.new_fingerprint.clone());
                // One per peer, the latest: bounded by the number of peers.
                self.card_updates.pinned_updates.insert(peer, u);
            }
            _ => {}
        }
    }
}

impl CardUpdates {
    /// What the log determines of card updates, for a snapshot (what waits
    /// for the operator, and the CA facts the node supplies, are not).
    pub(super) fn to_snapshot(&self) -> crate::wire::store::CardUpdates {
        use crate::wire::store::{CardUpdates as S, PinnedUpdate};
        let (offered_fingerprint, offered_envelope) = match &self.offered {
            Some((fp, env)) => (fp.clone(), env.encode_to_vec()),
            None => (String::new(), Vec::new()),
        };
        S {
            offered_fingerprint,
            offered_envelope,
            waiting: self.waiting.iter().map(|p| p.to_string()).collect(),
            pinned: self
                .pinned_from
                .iter()
                .map(|(peer, fp)| PinnedUpdate {
                    peer: peer.to_string(),
                    fingerprint: fp.clone(),
                    update: self
                        .pinned_updates
                        .get(peer)
                        .map(|u| u.encode_to_vec())
                        .unwrap_or_default(),
                })
                .collect(),
            own_previous_log_key: self
                .own_previous_log
                .map(|k| k.to_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Restores what [`CardUpdates::to_snapshot`] wrote.
    pub(super) fn restore(&mut self, s: &crate::wire::store::CardUpdates) -> Result<(), String> {
        self.offered = if s.offered_envelope.is_empty() {
            None
        } else {
            let env = SignedEnvelope::decode(s.offered_envelope.as_slice())
                .map_err(|e| format!("offered card update: {e}"))?;
            Some((s.offered_fingerprint.clone(), env))
        };
        self.waiting = s
            .waiting
            .iter()
            .map(|p| OfficeName::new(p).map_err(|e| format!("waiting peer {p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        self.pinned_from.clear();
        self.pinned_updates.clear();
        for p in &s.pinned {
            let peer = OfficeName::new(&p.peer).map_err(|e| format!("pinned peer: {e}"))?;
            self.pinned_from.insert(peer.clone(), p.fingerprint.clone());
            if !p.update.is_empty() {
                let u = CardUpdate::decode(p.update.as_slice())
                    .map_err(|e| format!("{peer}'s card update: {e}"))?;
                self.pinned_updates.insert(peer, u);
            }
        }
        self.own_previous_log = match s.own_previous_log_key.as_slice() {
            [] => None,
            b => Some(super::snapshot::verifying_key(b, "our previous log key")?),
        };
        Ok(())
    }

    /// The log-determined part as text, for the fold digest.
    pub(super) fn digest(&self) -> String {
        format!(
            "offered {:?} waiting {:?} pinned {:?} updates {:?} previous log {:?}",
            self.offered.as_ref().map(|(fp, _)| fp),
            self.waiting,
            self.pinned_from,
            self.pinned_updates
                .iter()
                .map(|(p, u)| (p, &u.new_fingerprint))
                .collect::<Vec<_>>(),
            self.own_previous_log.map(|k| hex::encode(k.to_bytes()))
        )
    }
}
