//! Witnessing the peer's log, and being witnessed (docs/protocol.md §8a).
//!
//! The peer signs its offers with its log key, so everything in one is
//! hostile: notes and proofs are size-checked before they are parsed, a
//! size-0 checkpoint must carry the empty root, and what we sign and log
//! for the peer (cosignatures, evidence) draws on its budget.

use super::budget::{Spend, Verdict};
use super::office::Core;
use super::output::{CoreEvent, Transmit};
use super::{Now, MAX_NOTE_LEN, MAX_PROOF_HASHES};
use crate::audit::checkpoint;
use crate::audit::evidence::Evidence;
use crate::audit::merkle::{verify_consistency, Hash, EMPTY_HASH};
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{
    frame::Body, log_entry::Event, CheckpointOffer, CheckpointRefused, Cosignature, Equivocation,
    PeerNote, SignedEnvelope,
};

impl Core {
    /// Witnessing: check a peer's checkpoint against the last one we
    /// cosigned, then cosign it, ask for a usable proof, or record evidence.
    pub(super) fn on_checkpoint_offer(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(ch) = self.channels.get(peer) else {
            return;
        };
        // The log key the offer names: the peer's current one, or the one
        // its card update replaced while that is retiring. The checkpoint
        // inside must be under the same key's origin.
        let (log_key, origin) = ch.log_key(&env.key_id, now.wall_ms);
        let origin = origin.to_string();
        let offer: CheckpointOffer = match envelope::open(&env, Domain::CheckpointOffer, &log_key) {
            Ok(o) => o,
            Err(e) => return self.report(now, peer, format!("checkpoint offer refused: {e}")),
        };
        if offer.note.len() > MAX_NOTE_LEN || offer.proof.len() > MAX_PROOF_HASHES {
            let detail = format!(
                "checkpoint offer out of limits: note {} bytes (limit {MAX_NOTE_LEN}), \
                 {} proof hashes (limit {MAX_PROOF_HASHES})",
                offer.note.len(),
                offer.proof.len()
            );
            return self.report(now, peer, detail);
        }
        let cp = match checkpoint::open(&offer.note, &origin, &log_key) {
            Ok(cp) => cp,
            Err(e) => return self.report(now, peer, format!("offered checkpoint refused: {e}")),
        };
        if cp.size == 0 && cp.root != EMPTY_HASH {
            // Not a contradiction of anything we vouched for: malformed.
            return self.report(
                now,
                peer,
                "checkpoint of size 0 with a root other than the empty tree's".into(),
            );
        }
        let earlier = ch.i_cosigned.clone();
        let (old_size, old_root) = earlier
            .as_ref()
            .map(|c| (c.size, c.root))
            .unwrap_or((0, EMPTY_HASH));
        if cp.size < old_size {
            return; // older than what we already vouched for: nothing to do
        }
        if cp.size == old_size {
            match earlier {
                // Our cosignature was lost on the way: send it again.
                Some(prev)
                    if cp.root == old_root
                        && self.spend(now, peer, Spend::Answer) == Verdict::Allowed =>
                {
                    self.out.transmit.push(Transmit::control(
                        peer,
                        Body::Cosignature(Cosignature { note: prev.note }),
                    ));
                }
                Some(_) if cp.root == old_root => {} // over budget
                Some(prev) => {
                    let ev = Evidence::conflicting_roots(
                        peer.as_str(),
                        &prev,
                        &cp,
                        self.me.as_str(),
                        now.wall_ms,
                    );
                    self.record_equivocation(now, peer, ev);
                }
                // Size 0 with the empty root, nothing cosigned: nothing to do.
                None => {}
            }
            return;
        }
        if offer.old_size != old_size {
            if self.spend(now, peer, Spend::Answer) == Verdict::Allowed {
                self.out.transmit.push(Transmit::control(
                    peer,
                    Body::CheckpointRefused(CheckpointRefused {
                        want_old_size: old_size,
                        reason: format!("last cosigned size is {old_size}, not {}", offer.old_size),
                    }),
                ));
            }
            return;
        }
        let proof: Option<Vec<Hash>> = offer
            .proof
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).ok().map(Hash))
            .collect();
        let consistent =
            proof.is_some_and(|p| verify_consistency(&p, old_size, old_root, cp.size, cp.root));
        if !consistent {
            let Some(earlier) = earlier else {
                // Nothing cosigned before: a proof from size 0 always holds,
                // so this is malformed rather than evidence.
                return self.report(now, peer, "checkpoint offer with a malformed proof".into());
            };
            let ev = Evidence::inconsistent_extension(
                peer.as_str(),
                &earlier,
                &cp,
                &env,
                self.me.as_str(),
                now.wall_ms,
            );
            return self.record_equivocation(now, peer, ev);
        }
        // Each cosignature is an entry in our log: at most the budget's rate.
        // A skipped offer costs nothing: the next one proves from the last
        // size we cosigned.
        if self.spend(now, peer, Spend::Cosignature) != Verdict::Allowed {
            return;
        }
        let cosigned =
            match checkpoint::cosign(&cp.note, &self.origin, &self.log_key, now.wall_ms / 1000) {
                Ok(n) => n,
                Err(e) => return self.report(now, peer, format!("cannot cosign: {e}")),
            };
        // Our latest cosignature of the peer's log by applying the entry.
        self.persist(
            now,
            Event::CosignatureIssued(PeerNote {
                peer: peer.to_string(),
                note: cosigned.clone(),
            }),
        );
        self.out.transmit.push(Transmit::control(
            peer,
            Body::Cosignature(Cosignature { note: cosigned }),
        ));
    }

    fn record_equivocation(&mut self, now: Now, peer: &OfficeName, ev: Evidence) {
        if self.spend(now, peer, Spend::Evidence) != Verdict::Allowed {
            return;
        }
        let bytes = ev.to_json();
        self.persist(
            now,
            Event::EquivocationDetected(Equivocation {
                peer: peer.to_string(),
                kind: ev.kind.clone(),
                evidence: bytes.clone(),
            }),
        );
        self.out.events.push(CoreEvent::Equivocation {
            peer: peer.clone(),
            kind: ev.kind,
            evidence: bytes,
        });
    }

    pub(super) fn on_cosignature(&mut self, now: Now, peer: &OfficeName, c: Cosignature) {
        let Some(ch) = self.channels.get(peer) else {
            return;
        };
        if c.note.len() > MAX_NOTE_LEN {
            let detail = format!(
                "cosignature note is {} bytes; the limit is {MAX_NOTE_LEN}",
                c.note.len()
            );
            return self.report(now, peer, detail);
        }
        let result = self.open_own_checkpoint(&c.note).and_then(|cp| {
            let mut r = Err(checkpoint::CheckpointError::Format);
            for (key, origin) in ch.log_keys(now.wall_ms) {
                r = checkpoint::verify_cosignature(&c.note, origin, &key);
                if r.is_ok() {
                    break;
                }
            }
            r.map(|_| cp)
        });
        let cp = match result {
            Ok(cp) => cp,
            Err(e) => return self.report(now, peer, format!("cosignature refused: {e}")),
        };
        if self.tree.root_at(cp.size) != Some(cp.root) || cp.size <= ch.peer_cosigned {
            return; // not ours as it stands, or nothing new
        }
        // How far the peer vouches for our log, by applying the entry.
        self.persist(
            now,
            Event::CosignatureReceived(PeerNote {
                peer: peer.to_string(),
                note: c.note,
            }),
        );
        self.out.events.push(CoreEvent::Cosigned {
            peer: peer.clone(),
            size: cp.size,
        });
    }
}
