//! The core's fold state written out and read back (`proto/snapshot.proto`),
//! so that a node can start from a snapshot and replay only the log's tail.
//!
//! A snapshot holds exactly what [`Core::apply`](super::apply) builds from
//! the log and nothing a run adds (links, timers, retransmission counts,
//! line health): a core restored from it and fed the rest of the log must
//! equal one that replayed the whole log, which [`Core::fold_digest`]
//! compares. Restoring checks what it can without the log (the office,
//! the tree's size and root, our own checkpoint's signature and its root in
//! the tree); the shell checks the log against the snapshot's boundary.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;
use prost::Message as _;

use super::channel::{Answer, Channel, Pending, Track, Watermark};
use super::office::Core;
use super::OutState;
use crate::audit::checkpoint::{self, SignedCheckpoint};
use crate::audit::merkle::Tree;
use crate::identity::OfficeName;
use crate::wire::proto::{AlertLevel, Precedence, SignedEnvelope};
use crate::wire::store::{self, Snapshot};
use crate::wire::{sha256, MessageId};

/// The snapshot layout this build writes and reads.
pub const SNAPSHOT_LAYOUT: u32 = 1;

/// Why a snapshot cannot be used (the node then replays the whole log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

/// When a shell writes a snapshot: once a peer has cosigned a checkpoint
/// of ours newer than the last snapshot's, and at least `every` entries
/// were logged since it. A cosigned checkpoint is a point both offices
/// have fixed; the spacing bounds the cost (a snapshot holds every open
/// message and about 1 MiB of answers per peer).
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    every: u64,
    last_entries: u64,
    last_cosigned: u64,
}

impl SnapshotSchedule {
    /// A schedule writing at most one snapshot per `every` entries.
    pub fn new(every: u64) -> Self {
        SnapshotSchedule {
            every: every.max(1),
            last_entries: 0,
            last_cosigned: 0,
        }
    }

    /// Whether `core` (all of whose entries are durable) is due one.
    pub fn due(&self, core: &Core) -> bool {
        core.cosigned_size() > self.last_cosigned
            && core.next_index() >= self.last_entries.saturating_add(self.every)
    }

    /// Whether a node that is stopping should write one: a peer cosigned a
    /// checkpoint of ours newer than the last snapshot's (its final one, as
    /// a rule), however few entries since.
    pub fn due_at_stop(&self, core: &Core) -> bool {
        core.cosigned_size() > self.last_cosigned && core.next_index() > self.last_entries
    }

    /// Records a snapshot written (or found at start): its entries and
    /// the cosigned size it recorded.
    pub fn taken(&mut self, entries: u64, cosigned: u64) {
        self.last_entries = entries;
        self.last_cosigned = cosigned;
    }
}

impl Core {
    /// The largest size of our log a peer has cosigned, as far as we know.
    pub fn cosigned_size(&self) -> u64 {
        self.channels
            .values()
            .map(|c| c.peer_cosigned)
            .max()
            .unwrap_or(0)
    }

    /// Writes the Merkle hashes the core holds in memory to the tree's file
    /// and returns a handle to sync before a snapshot is written (`None`
    /// when the tree is in memory).
    pub fn flush_tree_file(&mut self) -> std::io::Result<Option<std::fs::File>> {
        self.tree.flush_file()
    }

    /// The core's fold state after the log's first [`Core::next_index`]
    /// entries. Take it only when every entry the core has made is durable
    /// (the log holds exactly `next_index` entries), with where entry
    /// `next_index` and the one before it start in the log.
    pub fn snapshot(&self, log_offset: u64, last_entry_offset: u64) -> Snapshot {
        Snapshot {
            layout: SNAPSHOT_LAYOUT,
            office: self.me.to_string(),
            entries: self.next_index,
            log_offset,
            last_entry_offset,
            root: self.tree.root().0.to_vec(),
            checkpoint_note: note_of(self.latest_checkpoint.as_ref()),
            cosigned_size: self.cosigned_size(),
            pinned: self
                .pinned
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            unreceipted: self
                .unreceipted
                .iter()
                .map(
                    |(peer, sequence, log_index, time, hash, id)| store::Unreceipted {
                        peer: peer.to_string(),
                        sequence: *sequence,
                        log_index: *log_index,
                        time_unix_ms: *time,
                        hash: hash.to_vec(),
                        id: id.clone(),
                    },
                )
                .collect(),
            spool: self
                .spool
                .iter()
                .map(|(h, s)| store::Spooled {
                    sealed_hash: h.to_vec(),
                    from: s.from.to_string(),
                    to: s.to.to_string(),
                    accepted_unix_ms: s.accepted_unix_ms,
                })
                .collect(),
            card_updates: Some(self.card_updates.to_snapshot()),
            channels: self.channels.values().map(channel_state).collect(),
        }
    }

    /// Restores a fresh core (made with this office's keys, peers and
    /// policy, nothing replayed) to the state `s` records, with `tree` the
    /// Merkle tree of the same entries. Then feed it the log's entries from
    /// `s.entries` on, as after [`Core::replay`] of the ones before.
    pub fn restore(&mut self, s: &Snapshot, tree: Tree) -> Result<(), SnapshotError> {
        let bad = |why: String| SnapshotError(why);
        if self.next_index != 0 {
            return Err(bad("the core has already replayed entries".into()));
        }
        if s.layout != SNAPSHOT_LAYOUT {
            return Err(bad(format!(
                "layout {} (this build reads {SNAPSHOT_LAYOUT})",
                s.layout
            )));
        }
        if s.office != self.me.as_str() {
            return Err(bad(format!("it is {:?}'s, not {}'s", s.office, self.me)));
        }
        if tree.size() != s.entries || tree.root().0.as_slice() != s.root.as_slice() {
            return Err(bad(format!(
                "its tree does not match: {} entries in the tree, {} in the snapshot",
                tree.size(),
                s.entries
            )));
        }
        // A peer configured now that the snapshot lacks may have history in
        // the log before it, which only a full replay folds in.
        let known: BTreeSet<&str> = s.channels.iter().map(|c| c.peer.as_str()).collect();
        if let Some(new) = self.channels.keys().find(|p| !known.contains(p.as_str())) {
            return Err(bad(format!("peer {new} was added after it was taken")));
        }
        self.latest_checkpoint = match s.checkpoint_note.as_slice() {
            [] => None,
            note => Some(
                self.open_own_checkpoint(note)
                    .map_err(|e| bad(format!("its checkpoint does not open: {e}")))?,
            ),
        };
        self.tree = tree;
        self.next_index = s.entries;
        self.check_own_checkpoint()
            .map_err(|e| bad(format!("its checkpoint does not match the tree: {}", e.why)))?;
        self.pinned = s
            .pinned
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.unreceipted = s
            .unreceipted
            .iter()
            .map(|u| {
                Ok((
                    name(&u.peer)?,
                    u.sequence,
                    u.log_index,
                    u.time_unix_ms,
                    hash32(&u.hash, "an unreceipted message's hash")?,
                    u.id.clone(),
                ))
            })
            .collect::<Result<_, SnapshotError>>()?;
        self.spool.clear();
        for sp in &s.spool {
            self.spool.insert(
                hash32(&sp.sealed_hash, "a spooled frame's hash")?,
                super::relay::Spooled {
                    from: name(&sp.from)?,
                    to: name(&sp.to)?,
                    sealed: None,
                    accepted_unix_ms: sp.accepted_unix_ms,
                },
            );
        }
        if let Some(c) = &s.card_updates {
            self.card_updates.restore(c).map_err(bad)?;
        }
        let policy = self.policy.clone();
        for cs in &s.channels {
            let Ok(peer) = OfficeName::new(&cs.peer) else {
                return Err(bad(format!("peer name {:?}", cs.peer)));
            };
            // A peer since removed from the configuration: its entries are
            // history only, as in a replay.
            let Some(ch) = self.channels.get_mut(&peer) else {
                continue;
            };
            restore_channel(ch, cs, &policy)?;
        }
        Ok(())
    }
}

fn note_of(c: Option<&SignedCheckpoint>) -> Vec<u8> {
    c.map(|c| c.note.clone()).unwrap_or_default()
}

fn channel_state(ch: &Channel) -> store::ChannelState {
    let watermark = |w: &Watermark| store::SequenceSet {
        through: w.through,
        above: w.above.iter().copied().collect(),
    };
    store::ChannelState {
        peer: ch.peer.to_string(),
        message_key: ch.key.to_bytes().to_vec(),
        log_key: ch.log_key.to_bytes().to_vec(),
        seal_key: ch.seal_key.to_vec(),
        previous_message_key: ch
            .previous
            .as_ref()
            .map(|p| p.key.to_bytes().to_vec())
            .unwrap_or_default(),
        previous_log_key: ch
            .previous
            .as_ref()
            .map(|p| p.log_key.to_bytes().to_vec())
            .unwrap_or_default(),
        i_cosigned_note: note_of(ch.i_cosigned.as_ref()),
        peer_cosigned: ch.peer_cosigned,
        own_level: ch.own_level as i32,
        peer_level: ch.peer_level as i32,
        next_seq: ch.next_seq,
        prec_sent: ch.prec_sent.values().into_iter().copied().collect(),
        pending: ch
            .pending
            .iter()
            .map(|(seq, p)| store::Pending {
                sequence: *seq,
                id: p.id.to_string(),
                envelope: p.envelope.encode_to_vec(),
                precedence: p.precedence as i32,
            })
            .collect(),
        tracks: ch
            .tracks
            .iter()
            .map(|(seq, t)| store::Track {
                sequence: *seq,
                id: t.id.to_string(),
                precedence: t.precedence as i32,
                awaits_ack: t.awaits_ack,
                base_wall_ms: t.base_wall,
                next_step: t.next_n,
                receipted: t.receipted,
            })
            .collect(),
        settled: ch
            .settled
            .in_order()
            .map(|(sequence, state)| store::Settled {
                sequence,
                state: match state {
                    OutState::Refused => 3,
                    _ => 2,
                },
            })
            .collect(),
        receipted: Some(watermark(&ch.receipted)),
        delivered: ch.delivered,
        received: Some(watermark(&ch.received)),
        prec_received: ch
            .prec_received
            .values()
            .into_iter()
            .map(watermark)
            .collect(),
        answers: ch
            .answers
            .iter()
            .map(|(seq, (a, hash))| {
                let (refusal, env) = match a {
                    Answer::Receipt(e) => (false, e),
                    Answer::Refusal(e) => (true, e),
                };
                store::Answer {
                    sequence: *seq,
                    refusal,
                    envelope: env.encode_to_vec(),
                    hash: hash.to_vec(),
                }
            })
            .collect(),
        answers_forgotten_through: ch.answers.forgotten_through,
        received_count: ch.received_count,
    }
}

fn restore_channel(
    ch: &mut Channel,
    cs: &store::ChannelState,
    policy: &super::policy::Policy,
) -> Result<(), SnapshotError> {
    let key = verifying_key(&cs.message_key, "message key").map_err(SnapshotError)?;
    let log_key = verifying_key(&cs.log_key, "log key").map_err(SnapshotError)?;
    let previous = match (
        cs.previous_message_key.as_slice(),
        cs.previous_log_key.as_slice(),
    ) {
        ([], []) => None,
        (k, l) => Some((
            verifying_key(k, "previous message key").map_err(SnapshotError)?,
            verifying_key(l, "previous log key").map_err(SnapshotError)?,
        )),
    };
    // Keys as a replay leaves them: the logged card updates apply to the
    // card on file when it is the one they replaced or installed; a card
    // pinned by hand since then stays (replay_rekey in card_update.rs).
    let at_new = ch.key == key && ch.log_key == log_key;
    let at_old = previous.is_some_and(|(k, l)| ch.key == k && ch.log_key == l);
    if at_new || at_old {
        if let Some((k, l)) = previous {
            ch.key = k;
            ch.log_key = l;
            ch.origin = checkpoint::origin(&ch.peer, &l);
        }
        let seal = hash32(&cs.seal_key, "seal key")?;
        if previous.is_some() {
            ch.previous = None;
            ch.rekey(key, log_key, seal);
        } else {
            ch.seal_key = seal;
        }
    }
    ch.i_cosigned = match cs.i_cosigned_note.as_slice() {
        [] => None,
        note => {
            let (origin, size, root) = checkpoint::peek(note)
                .ok_or_else(|| SnapshotError("a cosigned checkpoint does not read".into()))?;
            Some(SignedCheckpoint {
                origin,
                size,
                root,
                note: note.to_vec(),
            })
        }
    };
    ch.peer_cosigned = cs.peer_cosigned;
    ch.own_level = AlertLevel::try_from(cs.own_level).unwrap_or(AlertLevel::Normal);
    ch.peer_level = AlertLevel::try_from(cs.peer_level).unwrap_or(AlertLevel::Normal);
    ch.level = policy.effective_level(ch.own_level, ch.peer_level);
    ch.next_seq = cs.next_seq;
    for (p, v) in (0i32..).zip(&cs.prec_sent) {
        *ch.prec_sent.get_mut(p) = *v;
    }
    for (p, w) in (0i32..).zip(&cs.prec_received) {
        *ch.prec_received.get_mut(p) = watermark(w);
    }
    ch.pending.clear();
    for p in &cs.pending {
        let envelope = SignedEnvelope::decode(p.envelope.as_slice())
            .map_err(|e| SnapshotError(format!("pending message {}: {e}", p.sequence)))?;
        ch.pending.insert(
            p.sequence,
            Pending {
                id: message_id(&p.id)?,
                hash: sha256(&envelope.payload),
                envelope,
                precedence: Precedence::try_from(p.precedence).unwrap_or(Precedence::Unspecified),
                attempts: 0,
                on_link: false,
                deadline: None,
            },
        );
    }
    for t in &cs.tracks {
        ch.track(
            t.sequence,
            Track {
                id: message_id(&t.id)?,
                precedence: Precedence::try_from(t.precedence).unwrap_or(Precedence::Unspecified),
                awaits_ack: t.awaits_ack,
                base_wall: t.base_wall_ms,
                base: 0,
                next_n: t.next_step,
                receipted: t.receipted,
                timer: None,
            },
        );
        super::escalation::schedule(policy, ch, t.sequence);
    }
    for s in &cs.settled {
        let state = if s.state == 3 {
            OutState::Refused
        } else {
            OutState::Delivered
        };
        ch.settled.push(s.sequence, state, 0);
    }
    ch.receipted = cs.receipted.as_ref().map(watermark).unwrap_or_default();
    ch.delivered = cs.delivered;
    ch.received = cs.received.as_ref().map(watermark).unwrap_or_default();
    for a in &cs.answers {
        let env = SignedEnvelope::decode(a.envelope.as_slice())
            .map_err(|e| SnapshotError(format!("answer to {}: {e}", a.sequence)))?;
        let answer = if a.refusal {
            Answer::Refusal(env)
        } else {
            Answer::Receipt(env)
        };
        ch.answers
            .insert(a.sequence, answer, hash32(&a.hash, "an answer's hash")?);
    }
    ch.answers.forgotten_through = ch
        .answers
        .forgotten_through
        .max(cs.answers_forgotten_through);
    ch.received_count = cs.received_count;
    Ok(())
}

fn watermark(s: &store::SequenceSet) -> Watermark {
    Watermark {
        through: s.through,
        above: s.above.iter().copied().filter(|&a| a > s.through).collect(),
    }
}

fn name(s: &str) -> Result<OfficeName, SnapshotError> {
    OfficeName::new(s).map_err(|e| SnapshotError(format!("office name {s:?}: {e}")))
}

fn message_id(s: &str) -> Result<MessageId, SnapshotError> {
    MessageId::parse(s).ok_or_else(|| SnapshotError(format!("message id {s:?}")))
}

fn hash32(b: &[u8], what: &str) -> Result<[u8; 32], SnapshotError> {
    <[u8; 32]>::try_from(b).map_err(|_| SnapshotError(format!("{what} is {} bytes", b.len())))
}

/// An Ed25519 public key from its 32 bytes.
pub(super) fn verifying_key(b: &[u8], what: &str) -> Result<VerifyingKey, String> {
    let bytes = <[u8; 32]>::try_from(b).map_err(|_| format!("{what} is {} bytes", b.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{what}: {e}"))
}
