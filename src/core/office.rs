//! [`Core`]: one office's protocol state across all its peers.
//!
//! The core owns the log's next index, because receipts name the log
//! position of the message they acknowledge: it assigns indexes to the
//! entries it asks the caller to persist, so it can sign a receipt in the
//! same step that logs the message (one fsync on the receive path).

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::budget::{Spend, Verdict};
use super::channel::{Channel, ChannelStatus, OutState};
use super::output::{CoreEvent, Output, StreamClass, Transmit};
use super::policy::Policy;
use super::send::transmit_message;
use super::{Now, MAX_RETRANSMIT_BURST};
use crate::audit::checkpoint::{self, SignedCheckpoint};
use crate::audit::merkle::Tree;
use crate::audit::Persisted;
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::Response;
use crate::wire::proto::{
    frame::Body, log_entry::Event, CheckpointIssued, CheckpointOffer, Frame, Kind, LogEntry,
    NodeStarted, NodeStopped, PeerAdded, PeerEnvelope, Precedence, Receipt, Recovery,
    SignedEnvelope,
};

/// Protocol timing and checkpoint cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First retransmission timeout, ms.
    pub rto_ms: u64,
    /// Cap after doubling, ms.
    pub rto_max_ms: u64,
    /// Issue a checkpoint after this many new entries.
    pub checkpoint_every: u64,
    /// ... or this long (ms) after the first entry it does not cover.
    pub checkpoint_interval_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rto_ms: 1_000,
            rto_max_ms: 16_000,
            checkpoint_every: 256,
            checkpoint_interval_ms: 10_000,
        }
    }
}

/// An office's two signing keys.
#[derive(Clone)]
pub struct OfficeKeys {
    /// Signs messages, receipts, negative receipts.
    pub message: SigningKey,
    /// Signs checkpoints, cosignatures and checkpoint offers.
    pub log: SigningKey,
    /// X25519 private key that opens frames sealed to this office.
    pub seal: [u8; 32],
}

/// A pinned peer's public keys.
#[derive(Debug, Clone)]
pub struct PeerKeys {
    /// Office.
    pub office: OfficeName,
    /// Message key.
    pub message: VerifyingKey,
    /// Log key.
    pub log: VerifyingKey,
    /// X25519 seal key (frames relayed to it are sealed to this).
    pub seal: [u8; 32],
    /// Relays that may carry frames to it.
    pub relays: Vec<OfficeName>,
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
    /// For replies: what the sender will do.
    pub response: Response,
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
    /// No received message has this id.
    #[error("no message {0} in the inbox")]
    UnknownMessage(String),
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

/// Answers to each peer's latest sequences kept in memory by default.
pub const RECENT_ANSWERS: usize = super::channel::RecentAnswers::CAP;

/// Seal keys kept besides the current one (see [`Core::add_seal_opener`]).
pub const MAX_SEAL_OPENERS: usize = 2;

/// One office's protocol state machine.
pub struct Core {
    pub(super) me: OfficeName,
    pub(super) key: SigningKey,
    pub(super) log_key: SigningKey,
    pub(super) origin: String,
    pub(super) timing: Timing,
    pub(super) next_index: u64,
    pub(super) tree: Tree,
    pub(super) latest_checkpoint: Option<SignedCheckpoint>,
    pub(super) next_checkpoint_at: Option<u64>,
    pub(super) channels: BTreeMap<OfficeName, Channel>,
    pub(super) pinned: BTreeMap<String, String>,
    /// Received messages whose receipt entry was lost in a torn tail:
    /// (peer, sequence, log index, time, hash, id).
    pub(super) unreceipted: Vec<(OfficeName, u64, u64, u64, [u8; 32], String)>,
    pub(super) out: Output,
    pub(super) policy: Policy,
    pub(super) seal_private: [u8; 32],
    /// Other seal keys that still open frames sealed to us: the one a key
    /// rotation replaced, and the next one while peers learn it.
    pub(super) seal_openers: Vec<[u8; 32]>,
    pub(super) is_relay: bool,
    pub(super) spool: BTreeMap<[u8; 32], super::relay::Spooled>,
    /// Set while processing a frame that arrived sealed through this relay.
    pub(super) receiving_via: Option<OfficeName>,
    /// Where the core's only random bytes (HPKE ephemeral keys) come from.
    pub(super) randomness: Randomness,
    /// Card updates offered and pinned (docs/protocol.md §8d).
    pub(super) card_updates: super::card_update::CardUpdates,
}

/// The source of the core's random bytes. Ids are made by the caller and
/// signatures are deterministic, so this feeds only the ephemeral keys of
/// sealed frames. A node uses the operating system; a simulation seeds it,
/// so that a seed replays byte for byte.
pub enum Randomness {
    /// The operating system's generator.
    Os,
    /// A seeded generator (simulations and tests only).
    Seeded(Box<rand::rngs::StdRng>),
}

impl Randomness {
    /// Fills `b` with random bytes.
    pub fn fill(&mut self, b: &mut [u8]) {
        use rand::RngCore;
        match self {
            Randomness::Os => rand::rngs::OsRng.fill_bytes(b),
            Randomness::Seeded(r) => r.fill_bytes(b),
        }
    }
}

impl Core {
    /// A core for office `me` with its message-signing key and its peers'
    /// message keys. Call [`Core::replay`] for each log entry, then
    /// [`Core::start`].
    pub fn new(
        me: OfficeName,
        keys: OfficeKeys,
        peers: impl IntoIterator<Item = PeerKeys>,
        timing: Timing,
    ) -> Self {
        Core {
            origin: checkpoint::origin(&me, &keys.log.verifying_key()),
            me,
            key: keys.message,
            log_key: keys.log,
            timing,
            next_index: 0,
            tree: Tree::new(),
            latest_checkpoint: None,
            next_checkpoint_at: None,
            channels: peers
                .into_iter()
                .map(|p| {
                    let mut ch = Channel::new(p.office.clone(), p.message, p.log);
                    ch.seal_key = p.seal;
                    ch.relays = p.relays;
                    (p.office, ch)
                })
                .collect(),
            pinned: BTreeMap::new(),
            unreceipted: Vec::new(),
            out: Output::default(),
            policy: Policy::default(),
            seal_private: keys.seal,
            seal_openers: Vec::new(),
            is_relay: false,
            spool: BTreeMap::new(),
            receiving_via: None,
            randomness: Randomness::Os,
            card_updates: Default::default(),
        }
    }

    /// Draws the core's random bytes from a generator seeded with `seed`
    /// instead of the operating system (simulations only: a seed then
    /// replays exactly).
    pub fn seed_randomness(&mut self, seed: u64) {
        use rand::SeedableRng;
        self.randomness = Randomness::Seeded(Box::new(rand::rngs::StdRng::seed_from_u64(seed)));
    }

    /// Opens frames sealed to `secret` too (besides the current seal key):
    /// the key a rotation replaced, or the one it introduces. At most
    /// [`MAX_SEAL_OPENERS`] are kept, the newest.
    pub fn add_seal_opener(&mut self, secret: [u8; 32]) {
        if secret == self.seal_private || self.seal_openers.contains(&secret) {
            return;
        }
        if self.seal_openers.len() >= MAX_SEAL_OPENERS {
            self.seal_openers.remove(0);
        }
        self.seal_openers.push(secret);
    }

    /// Opens one of our own checkpoints (a peer returns it cosigned): under
    /// our current log key, or the one our last card update replaced.
    pub(super) fn open_own_checkpoint(
        &self,
        note: &[u8],
    ) -> Result<SignedCheckpoint, checkpoint::CheckpointError> {
        let current = checkpoint::open(note, &self.origin, &self.log_key.verifying_key());
        match (&current, self.card_updates.own_previous_log) {
            (Err(_), Some(old)) => {
                let origin = checkpoint::origin(&self.me, &old);
                checkpoint::open(note, &origin, &old).or(current)
            }
            _ => current,
        }
    }

    /// The message key of `peer` that `key_id` names, if the peer may
    /// sign with it now (its current key, or the one its last card update
    /// replaced while that is retiring); a current-key signature starts
    /// the old key's retirement.
    pub(super) fn peer_message_key(
        &mut self,
        now: Now,
        peer: &OfficeName,
        key_id: &[u8],
    ) -> Option<VerifyingKey> {
        let ch = self.channels.get_mut(peer)?;
        ch.saw_current_key(key_id, now.wall_ms);
        Some(ch.message_key(key_id, now.wall_ms))
    }

    /// This office.
    pub fn office(&self) -> &OfficeName {
        &self.me
    }

    /// The index the next persisted entry will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Replaces the escalation policy (before replay).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The escalation policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// This office's log origin (the checkpoint origin line).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The Merkle tree over every entry so far (persisted or pending).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// How many of its answers to each peer's latest sequences the core
    /// keeps (default [`RECENT_ANSWERS`]; older ones are recalled from the
    /// log, see [`super::Recall`]). Tests set it low to exercise recall.
    pub fn set_answers_kept(&mut self, n: usize) {
        for ch in self.channels.values_mut() {
            ch.answers.set_cap(n);
        }
    }

    /// Keeps the Merkle tree's stored hashes in the file at `path` rather
    /// than in memory (a running node's memory then does not grow with its
    /// log). Only before the first entry: the file is rewritten from the
    /// start as the log replays.
    pub fn keep_tree_in(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        if self.tree.size() != 0 {
            return Err(std::io::Error::other(
                "the tree's file must be chosen before the log is replayed",
            ));
        }
        self.tree = Tree::with_file(path)?;
        Ok(())
    }

    /// The latest checkpoint this office issued.
    pub fn latest_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.latest_checkpoint.as_ref()
    }

    /// After replay: checks that the log still matches the latest checkpoint
    /// it holds (a checkpoint fixes the prefix it covers).
    pub fn check_own_checkpoint(&self) -> Result<(), ReplayError> {
        let Some(cp) = &self.latest_checkpoint else {
            return Ok(());
        };
        match self.tree.root_at(cp.size) {
            Some(root) if root == cp.root => Ok(()),
            Some(_) => Err(ReplayError {
                index: cp.size,
                why: format!(
                    "the first {} entries no longer hash to the root this office signed in its checkpoint: the log was altered",
                    cp.size
                ),
            }),
            None => Err(ReplayError {
                index: self.tree.size(),
                why: format!("the log holds {} entries but its checkpoint covers {}", self.tree.size(), cp.size),
            }),
        }
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
                // Pinned by applying the entry (apply.rs).
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
            // The same fields as the receipt signed when the message was
            // logged, so the same bytes: the tree as it stood just after it.
            let receipt = Receipt {
                message_id: id,
                message_hash: hash.to_vec(),
                sequence: seq,
                from: self.me.to_string(),
                to: peer.to_string(),
                received_unix_ms: time,
                log_index: index,
                log_size: index.saturating_add(1),
                log_root: match self.tree.root_at(index.saturating_add(1)) {
                    Some(root) => root.0.to_vec(),
                    None => continue, // replay put every entry in the tree
                },
            };
            let env = envelope::seal_proto(Domain::Receipt, &receipt, &self.key);
            self.persist(now, Event::ReceiptSent(peer_env(&peer, env)));
        }
        self.start_watch(now);
    }

    /// Records a clean stop and issues a final checkpoint covering it.
    pub fn stop(&mut self, now: Now, reason: &str) {
        self.persist(
            now,
            Event::NodeStopped(NodeStopped {
                reason: reason.to_string(),
            }),
        );
        self.issue_checkpoint(now);
    }

    /// Signs a checkpoint of the log as it stands, logs it, and offers it to
    /// every resumed peer.
    pub fn issue_checkpoint(&mut self, now: Now) {
        let size = self.tree.size();
        if self.latest_checkpoint.as_ref().map(|c| c.size) == Some(size) {
            return;
        }
        let cp = checkpoint::sign(&self.origin, size, self.tree.root(), &self.log_key);
        // It becomes the latest by applying the entry (apply.rs).
        self.next_checkpoint_at = None;
        self.persist(
            now,
            Event::CheckpointIssued(CheckpointIssued { note: cp.note }),
        );
        // The entry recording the checkpoint must not schedule another.
        self.next_checkpoint_at = None;
        let peers: Vec<OfficeName> = self
            .channels
            .values()
            .filter(|c| c.connected && c.resumed)
            .map(|c| c.peer.clone())
            .collect();
        for p in peers {
            let from = self.channels.get(&p).map(|c| c.peer_cosigned).unwrap_or(0);
            self.offer_checkpoint(&p, from);
        }
    }

    pub(super) fn maybe_checkpoint(&mut self, now: Now) {
        let covered = self.latest_checkpoint.as_ref().map(|c| c.size).unwrap_or(0);
        let due_by_count = self.tree.size() >= covered.saturating_add(self.timing.checkpoint_every);
        let due_by_time = self.next_checkpoint_at.is_some_and(|t| t <= now.mono_ms);
        if due_by_count || due_by_time {
            self.issue_checkpoint(now);
        }
    }

    pub(super) fn offer_checkpoint(&mut self, peer: &OfficeName, from: u64) {
        let Some(cp) = self.latest_checkpoint.clone() else {
            return;
        };
        let from = if from > cp.size { 0 } else { from };
        if from == cp.size {
            return; // already cosigned
        }
        let Some(proof) = self.tree.consistency_proof(from, cp.size) else {
            return; // from <= cp.size <= the tree's size: not reached
        };
        let offer = CheckpointOffer {
            note: cp.note,
            old_size: from,
            proof: proof.iter().map(|h| h.0.to_vec()).collect(),
        };
        let env = envelope::seal_proto(Domain::CheckpointOffer, &offer, &self.log_key);
        self.out.transmit.push(Transmit {
            datagram: false,
            message: None,
            peer: peer.clone(),
            class: StreamClass::Control,
            frame: Frame {
                body: Some(Body::CheckpointOffer(env)),
            },
        });
    }

    // ------------------------------------------------------------------
    // Operator input.

    // ------------------------------------------------------------------
    // Transport input.

    /// A frame arrived from the authenticated `peer`.
    pub fn handle_frame(&mut self, now: Now, peer: &OfficeName, frame: Frame) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.last_heard_wall = Some(now.wall_ms);
        ch.last_heard_mono = Some(now.mono_ms);
        match frame.body {
            Some(Body::Hello(h)) => self.on_hello(now, peer, h),
            Some(Body::Message(env)) => self.on_message(now, peer, env),
            Some(Body::Receipt(env)) => self.on_receipt(now, peer, env),
            Some(Body::NegativeReceipt(env)) => self.on_nack(now, peer, env),
            Some(Body::CheckpointOffer(env)) => self.on_checkpoint_offer(now, peer, env),
            Some(Body::Cosignature(c)) => self.on_cosignature(now, peer, c),
            Some(Body::Sealed(sealed)) => self.on_sealed(now, peer, sealed),
            Some(Body::RelayReceipt(env)) => self.on_relay_receipt(now, peer, env),
            Some(Body::RelayTaken(t)) => self.on_relay_taken(now, peer, t),
            Some(Body::LineCheck(env)) => self.on_line_check(now, peer, env),
            Some(Body::AlertLevel(env)) => self.on_alert_level(now, peer, env),
            Some(Body::CardUpdate(env)) => self.on_card_update(now, peer, env),
            Some(Body::CardUpdateAccepted(env)) => self.on_card_update_accepted(now, peer, env),
            Some(Body::CheckpointRefused(r)) => {
                let ours = self.latest_checkpoint.as_ref().map(|c| c.size).unwrap_or(0);
                if r.want_old_size <= ours
                    && self.spend(now, peer, Spend::Answer) == Verdict::Allowed
                {
                    self.offer_checkpoint(peer, r.want_old_size);
                }
            }
            None => {} // a frame type from a later version: ignored
        }
        self.maybe_checkpoint(now);
    }

    /// Fires due resends, escalation steps, line checks and checkpoints.
    pub fn handle_timeout(&mut self, now: Now) {
        self.maybe_checkpoint(now);
        self.expire_spooled(now);
        self.fire_due_steps(now);
        self.line_checks_due(now);
        self.silence_due(now);
        for ch in self.channels.values_mut() {
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
                ch.set_timer(seq, None);
                transmit_message(&mut self.out, ch, seq);
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
        let steps = self.channels.values().filter_map(|c| {
            c.esc_timers
                .first()
                .map(|(d, _)| u64::try_from(*d).unwrap_or(0))
        });
        let checks = self.channels.values().filter_map(|c| c.next_check_at);
        let silences = self
            .channels
            .values()
            .filter_map(|c| super::escalation::silence_deadline(&self.policy, c));
        retransmit
            .chain(steps)
            .chain(checks)
            .chain(silences)
            .chain(self.next_checkpoint_at)
            .min()
    }

    /// Bytes of log entries waiting in the output.
    pub fn pending_persist_bytes(&self) -> usize {
        self.out
            .persist
            .iter()
            .fold(0usize, |a, p| a.saturating_add(p.bytes.len()))
    }

    /// Whether the core has output waiting to be taken.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
            || !self.out.spool_write.is_empty()
            || !self.out.spool_delete.is_empty()
    }

    /// Takes what the caller must do (see the module docs for the rule).
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    // ------------------------------------------------------------------
    // Views.

    /// What only the running core knows of our message `seq` to `peer`:
    /// while unsettled, `Queued` (never handed to the transport) or `Sent`;
    /// with its transmissions this run either way.
    pub fn pending_state(&self, peer: &str, seq: u64) -> Option<(OutState, u32)> {
        let ch = self.channels.get(&OfficeName::new(peer).ok()?)?;
        let Some(p) = ch.pending.get(&seq) else {
            // Settled recently: its transmissions this run still count.
            return ch.settled.get(seq);
        };
        let state = if p.attempts == 0 {
            OutState::Queued
        } else {
            OutState::Sent
        };
        Some((state, p.attempts))
    }

    /// Our message `seq` to `peer`, while it is unsettled: what a shell that
    /// held a transmission back (its send queue was full) hands over later.
    pub fn pending_envelope(&self, peer: &OfficeName, seq: u64) -> Option<&SignedEnvelope> {
        Some(&self.channels.get(peer)?.pending.get(&seq)?.envelope)
    }

    /// Per-peer status.
    pub fn status(&self) -> Vec<ChannelStatus> {
        self.channels.values().map(Channel::status).collect()
    }

    // ------------------------------------------------------------------
    // Frame handlers.

    /// Whether the line to `peer` is up and resumed.
    pub(super) fn is_resumed(&self, peer: &OfficeName) -> bool {
        self.channels
            .get(peer)
            .is_some_and(|c| c.connected && c.resumed)
    }

    /// Takes one token of `kind` from `peer`'s budget; the first input
    /// over budget raises one alert, the rest are only counted.
    pub(super) fn spend(&mut self, now: Now, peer: &OfficeName, kind: Spend) -> Verdict {
        let Some(ch) = self.channels.get_mut(peer) else {
            return Verdict::Dropped;
        };
        let verdict = ch.budgets.spend(kind, now.mono_ms);
        if verdict == Verdict::FirstDropped {
            let (burst, per) = kind.rate();
            self.out.events.push(CoreEvent::Alert {
                peer: peer.clone(),
                id: None,
                detail: format!(
                    "{peer} is over its {kind} budget ({burst} at once, then one every {per} ms): \
                     the rest are counted in status, not acted on"
                ),
            });
        }
        verdict
    }

    /// Reports bad input from `peer` to the operator, within its budget.
    pub(super) fn report(&mut self, now: Now, peer: &OfficeName, detail: String) {
        if self.spend(now, peer, Spend::Report) == Verdict::Allowed {
            let mut detail = detail;
            crate::text::truncate(&mut detail, super::MAX_DETAIL_LEN);
            self.out.events.push(CoreEvent::ProtocolError {
                peer: peer.clone(),
                detail,
            });
        }
    }

    pub(super) fn persist(&mut self, now: Now, event: Event) {
        let entry = Persisted::new(LogEntry {
            index: self.next_index,
            time_unix_ms: now.wall_ms,
            event: Some(event),
        });
        self.next_index = self.next_index.saturating_add(1);
        self.tree.push(&entry.bytes);
        // Our own entry: it applies (see apply.rs).
        let _ = self.apply(&entry.entry, Some(now));
        self.out.persist.push(entry);
        if self.next_checkpoint_at.is_none() {
            self.next_checkpoint_at = Some(
                now.mono_ms
                    .saturating_add(self.timing.checkpoint_interval_ms),
            );
        }
    }
}

pub(super) fn peer_env(peer: &OfficeName, env: SignedEnvelope) -> PeerEnvelope {
    PeerEnvelope {
        peer: peer.to_string(),
        envelope: Some(env),
        via: String::new(),
    }
}
