//! Per-peer channel state: what we sent and what we received.
//!
//! Outgoing: sequence numbers from 1, the outbox of unreceipted messages
//! with their retransmission deadlines, and the escalation tracks of those
//! not yet acknowledged. Incoming: a contiguous watermark plus a sparse set
//! above it, with the receipt we signed for each sequence so a duplicate gets
//! the same receipt again.
//!
//! Settled messages leave the channel: the history index on disk
//! (src/history/) holds them, so memory follows what is open, not how long
//! the office has run.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::budget::{Budgets, Spend};
use crate::audit::checkpoint::SignedCheckpoint;
use crate::identity::OfficeName;
use crate::wire::proto::{AlertLevel, Message, Precedence, SignedEnvelope};
use crate::wire::{KeyId, MessageId};

/// Delivery state of a message we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutState {
    /// Durable here, never transmitted.
    Queued,
    /// Transmitted at least once, no receipt yet.
    Sent,
    /// Signed receipt held.
    Delivered,
    /// The peer sent a negative receipt; not retransmitted.
    Refused,
}

/// A channel's state for status views.
#[derive(Debug, Clone)]
pub struct ChannelStatus {
    /// Peer.
    pub peer: OfficeName,
    /// Transport connected.
    pub connected: bool,
    /// Peer's hello received on this connection.
    pub resumed: bool,
    /// Next sequence we will use.
    pub next_sequence: u64,
    /// Unreceipted messages.
    pub outbox_len: usize,
    /// Of those, never transmitted.
    pub queued: usize,
    /// Highest contiguous sequence received from the peer.
    pub received_through: u64,
    /// Messages received from the peer.
    pub received: u64,
    /// Messages delivered to the peer (receipt held).
    pub delivered: u64,
    /// Last time (wall) we heard anything from the peer.
    pub last_heard_unix_ms: Option<u64>,
    /// Largest size of our log the peer has cosigned.
    pub peer_cosigned_size: u64,
    /// Size of the peer's latest checkpoint we cosigned.
    pub we_cosigned_size: u64,
    /// The channel's effective alert level (line checks follow it).
    pub alert_level: AlertLevel,
    /// Our own level (operator and ladders).
    pub own_alert_level: AlertLevel,
    /// The peer's level, as it last told us.
    pub peer_alert_level: AlertLevel,
    /// Line-check health.
    pub health: Health,
    /// Consecutive line checks unanswered.
    pub missed_line_checks: u32,
    /// Last line-check round trip, ms.
    pub line_check_rtt_ms: Option<u64>,
    /// Sent messages awaiting acknowledgement.
    pub awaiting_ack: usize,
    /// Refusals beyond the per-minute budget: counted, not logged or sent.
    pub refusals_suppressed: u64,
    /// All of the peer's input dropped over its budgets (refusals, notices,
    /// cosignatures, evidence, answers, reports): counted, not acted on.
    pub input_dropped: u64,
    /// The peer's messages held in memory for order, and their bytes
    /// (bounded by MAX_HELD and MAX_HELD_BYTES).
    pub held: usize,
    /// Bytes of those.
    pub held_bytes: usize,
    /// Relays that may carry frames to this peer.
    pub relays: Vec<OfficeName>,
}

/// A message held until an earlier one of its precedence arrives.
#[derive(Debug, Clone)]
pub(crate) struct HeldMessage {
    pub env: SignedEnvelope,
    pub msg: Message,
    pub hash: [u8; 32],
    /// The relay it came through, if any.
    pub via: Option<OfficeName>,
}

/// The index of a precedence in keys per precedence (0 for an unknown one).
pub(crate) fn prec_index(p: i32) -> usize {
    usize::try_from(p).unwrap_or(0).min(4)
}

/// One value per precedence (and one for "unspecified"), addressed by the
/// wire's precedence number: no index a peer value could push out of range.
#[derive(Debug, Default, Clone)]
pub(crate) struct PerPrecedence<T> {
    unspecified: T,
    flash: T,
    immediate: T,
    priority: T,
    routine: T,
}

impl<T> PerPrecedence<T> {
    /// The values by precedence number, 0 to 4 (a snapshot stores them so).
    pub fn values(&self) -> [&T; 5] {
        [
            &self.unspecified,
            &self.flash,
            &self.immediate,
            &self.priority,
            &self.routine,
        ]
    }

    pub fn get(&self, p: i32) -> &T {
        match p {
            1 => &self.flash,
            2 => &self.immediate,
            3 => &self.priority,
            4 => &self.routine,
            _ => &self.unspecified,
        }
    }

    pub fn get_mut(&mut self, p: i32) -> &mut T {
        match p {
            1 => &mut self.flash,
            2 => &mut self.immediate,
            3 => &mut self.priority,
            4 => &mut self.routine,
            _ => &mut self.unspecified,
        }
    }
}

/// An unreceipted outgoing message.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: MessageId,
    /// The signed message, as logged and transmitted.
    pub envelope: SignedEnvelope,
    pub hash: [u8; 32],
    pub precedence: Precedence,
    pub attempts: u32,
    /// A copy was handed to the transport on the current connection: QUIC
    /// owns its delivery until that connection ends (docs/protocol.md §8).
    pub on_link: bool,
    /// Monotonic time to hand it to the transport again, when the peer
    /// showed it lacks the message (a refusal that settles nothing) or may
    /// lack its answer (resumption); never while `on_link`.
    pub deadline: Option<u64>,
}

/// Line-check health of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not known yet: no line check has been answered since this node
    /// started (a node restarted during a cut must not claim the line is
    /// up).
    Checking,
    /// Line checks answered.
    Up,
    /// One or more missed, fewer than the silence threshold.
    Degraded,
    /// The silence threshold reached.
    Silent,
}

impl Health {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Checking => "checking",
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Silent => "silent",
        }
    }
}

/// Escalation tracking for one sent message, until it is acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    pub id: MessageId,
    pub precedence: Precedence,
    /// Whether it waits for an acknowledgement too: an acknowledgement is
    /// not itself acknowledged, so its track ends with its receipt.
    pub awaits_ack: bool,
    /// Acceptance time, wall clock (from the log entry).
    pub base_wall: u64,
    /// Acceptance time on the monotonic clock (may be negative after a
    /// restart: the message is older than this run).
    pub base: i64,
    /// Next ladder firing to consider (counting repeats).
    pub next_n: u32,
    pub receipted: bool,
    pub timer: Option<i64>,
}

pub(crate) struct Channel {
    pub peer: OfficeName,
    pub key: VerifyingKey,
    /// The peer's log key and log origin.
    pub log_key: VerifyingKey,
    pub origin: String,
    /// The latest of the peer's checkpoints we cosigned (note carries our
    /// cosignature).
    pub i_cosigned: Option<SignedCheckpoint>,
    /// The largest size of our log the peer has cosigned, as far as we know.
    pub peer_cosigned: u64,
    /// The peer's X25519 seal key and the relays that may carry to it.
    pub seal_key: [u8; 32],
    pub relays: Vec<OfficeName>,
    /// The peer's keys before its last card update changed them, still
    /// accepted while it changes over (docs/protocol.md §8d).
    pub previous: Option<RetiringKeys>,
    /// The channel's effective alert level (what line checks follow):
    /// `own_level`, raised to `peer_level` if the policy allows.
    pub level: AlertLevel,
    /// Our own level: set by our operator and our ladders only.
    pub own_level: AlertLevel,
    /// The level the peer last told us it set.
    pub peer_level: AlertLevel,
    /// Line-check health.
    pub health: Health,
    pub lc_seq: u64,
    /// Outstanding line check: (sequence, sent at mono ms).
    pub lc_outstanding: Option<(u64, u64)>,
    /// Checks that fell due unanswered, counted at each check (§8b).
    pub lc_missed: u32,
    /// The highest check sequence of the peer's answered on this
    /// connection: each check comes twice (stream and datagram) and is
    /// answered once.
    pub lc_answered: u64,
    /// Misses as health last judged them: the larger of `lc_missed` and
    /// the check intervals passed with nothing heard (what status shows).
    pub missed_judged: u32,
    /// When the effective level (and so the check interval) last changed,
    /// monotonic ms: silence is not counted in the new interval from
    /// before it.
    pub level_since_mono: u64,
    pub next_check_at: Option<u64>,
    pub last_rtt_ms: Option<u64>,
    /// Sent messages not yet acknowledged, by sequence.
    pub tracks: BTreeMap<u64, Track>,
    /// The same, by id: a reply names the message it answers by id.
    pub tracked_ids: BTreeMap<MessageId, u64>,
    pub esc_timers: BTreeSet<(i64, u64)>,
    /// Messages whose reroute step found no relay reachable: sent through
    /// the first of this peer's relays that comes up.
    pub reroute_waiting: BTreeSet<u64>,
    /// Sending: the last precedence sequence used, per precedence.
    pub prec_sent: PerPrecedence<u64>,
    /// Receiving: the precedence sequences settled, per precedence (logged
    /// in order, or refused with a settling negative receipt).
    pub prec_received: PerPrecedence<Watermark>,
    /// Receiving: verified messages that arrived ahead of an earlier one
    /// of their precedence, held (not logged, not receipted) until it comes.
    pub held: BTreeMap<(usize, u64), HeldMessage>,
    /// Bytes of the payloads in `held`.
    pub held_bytes: usize,
    /// What this peer may still make us log, sign and report.
    pub budgets: Budgets,
    pub connected: bool,
    pub resumed: bool,
    /// We dropped the peer's input unanswered (over the refusal budget):
    /// ask it to resynchronise once the budget allows (§8).
    pub resync_wanted: bool,
    /// When we last acted on the peer's resynchronisation request.
    pub last_resync_mono: Option<u64>,
    pub last_heard_wall: Option<u64>,
    /// When we last received any frame from the peer (monotonic ms): proof
    /// of life, which answers a line check as well as its reply does.
    pub last_heard_mono: Option<u64>,
    /// Whether the line has been shown alive since start (a reply or proof
    /// of life); until then health is CHECKING.
    pub alive_since_start: bool,
    // Outgoing.
    pub next_seq: u64,
    pub pending: BTreeMap<u64, Pending>,
    pub timers: BTreeSet<(u64, u64)>,
    /// How our most recently settled messages ended and how often this run
    /// handed each to the transport (views show it; bounded).
    pub settled: RecentlySettled,
    pub receipted: Watermark,
    pub delivered: u64,
    // Incoming.
    pub received: Watermark,
    /// Our answers to the peer's most recent sequences (the receipt, or the
    /// settling negative receipt, with the hash it names): a retransmission
    /// gets the same one again. Older answers are read from the log.
    pub answers: RecentAnswers,
    pub received_count: u64,
}

/// How long a peer's replaced message and log keys stay accepted after it
/// is first seen signing with the new ones: envelopes it signed before it
/// switched may still be retransmitted (docs/protocol.md §8d).
pub const KEY_OVERLAP_MS: u64 = 24 * 3_600_000;

/// A peer's message and log keys before a card update replaced them.
#[derive(Debug, Clone)]
pub(crate) struct RetiringKeys {
    pub key: VerifyingKey,
    pub log_key: VerifyingKey,
    pub origin: String,
    /// Wall time after which they are refused; unset until the peer is
    /// seen signing with its new message key.
    pub until_wall_ms: Option<u64>,
}

impl RetiringKeys {
    fn live(&self, wall_ms: u64) -> bool {
        self.until_wall_ms.is_none_or(|t| wall_ms < t)
    }
}

impl Channel {
    /// The peer's message key that `key_id` names, if it may sign with it
    /// at `wall_ms`; otherwise the current one (which then fails to
    /// verify, with the usual error).
    pub fn message_key(&self, key_id: &[u8], wall_ms: u64) -> VerifyingKey {
        match &self.previous {
            Some(p) if p.live(wall_ms) && key_id == KeyId::of(&p.key).0 => p.key,
            _ => self.key,
        }
    }

    /// The peer's log key that `key_id` names and its origin, as
    /// [`Channel::message_key`].
    pub fn log_key(&self, key_id: &[u8], wall_ms: u64) -> (VerifyingKey, &str) {
        match &self.previous {
            Some(p) if p.live(wall_ms) && key_id == KeyId::of(&p.log_key).0 => {
                (p.log_key, p.origin.as_str())
            }
            _ => (self.log_key, self.origin.as_str()),
        }
    }

    /// The peer's log keys it may use at `wall_ms`, current first, with
    /// their origins.
    pub fn log_keys(&self, wall_ms: u64) -> Vec<(VerifyingKey, &str)> {
        let mut v = vec![(self.log_key, self.origin.as_str())];
        if let Some(p) = self.previous.as_ref().filter(|p| p.live(wall_ms)) {
            v.push((p.log_key, p.origin.as_str()));
        }
        v
    }

    /// The peer signed with its current message key at `wall_ms`: its
    /// previous keys are retired [`KEY_OVERLAP_MS`] later.
    pub fn saw_current_key(&mut self, key_id: &[u8], wall_ms: u64) {
        if key_id != KeyId::of(&self.key).0 {
            return;
        }
        if let Some(p) = self.previous.as_mut().filter(|p| p.until_wall_ms.is_none()) {
            p.until_wall_ms = Some(wall_ms.saturating_add(KEY_OVERLAP_MS));
        }
    }

    /// Replaces the peer's keys with those of its new card, keeping the
    /// old ones as retiring when they differ.
    pub fn rekey(&mut self, key: VerifyingKey, log_key: VerifyingKey, seal_key: [u8; 32]) {
        if key != self.key || log_key != self.log_key {
            self.previous = Some(RetiringKeys {
                key: self.key,
                log_key: self.log_key,
                origin: self.origin.clone(),
                until_wall_ms: None,
            });
        }
        self.origin = crate::audit::checkpoint::origin(&self.peer, &log_key);
        self.key = key;
        self.log_key = log_key;
        self.seal_key = seal_key;
    }

    pub fn new(peer: OfficeName, key: VerifyingKey, log_key: VerifyingKey) -> Self {
        Channel {
            origin: crate::audit::checkpoint::origin(&peer, &log_key),
            peer,
            key,
            log_key,
            i_cosigned: None,
            peer_cosigned: 0,
            seal_key: [0; 32],
            relays: Vec::new(),
            previous: None,
            level: AlertLevel::Normal,
            own_level: AlertLevel::Normal,
            peer_level: AlertLevel::Normal,
            health: Health::Checking,
            lc_seq: 0,
            lc_outstanding: None,
            lc_missed: 0,
            lc_answered: 0,
            missed_judged: 0,
            level_since_mono: 0,
            next_check_at: None,
            last_rtt_ms: None,
            tracks: BTreeMap::new(),
            tracked_ids: BTreeMap::new(),
            esc_timers: BTreeSet::new(),
            reroute_waiting: BTreeSet::new(),
            prec_sent: PerPrecedence::default(),
            prec_received: Default::default(),
            held: BTreeMap::new(),
            held_bytes: 0,
            budgets: Budgets::default(),
            connected: false,
            resumed: false,
            resync_wanted: false,
            last_resync_mono: None,
            last_heard_wall: None,
            last_heard_mono: None,
            alive_since_start: false,
            next_seq: 1,
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            settled: RecentlySettled::default(),
            receipted: Watermark::default(),
            delivered: 0,
            received: Watermark::default(),
            answers: RecentAnswers::default(),
            received_count: 0,
        }
    }

    pub fn set_timer(&mut self, seq: u64, deadline: Option<u64>) {
        if let Some(p) = self.pending.get_mut(&seq) {
            if let Some(old) = p.deadline.take() {
                self.timers.remove(&(old, seq));
            }
            p.deadline = deadline;
            if let Some(d) = deadline {
                self.timers.insert((d, seq));
            }
        }
    }

    /// Removes `seq` from the outbox as settled (`Delivered` or
    /// `Refused`), remembering its transmissions this run.
    pub fn settle_pending(&mut self, seq: u64, state: OutState) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if let Some(d) = p.deadline {
            self.timers.remove(&(d, seq));
        }
        self.settled.push(seq, state, p.attempts);
        Some(p)
    }

    /// Starts tracking our message `seq` for escalation.
    pub fn track(&mut self, seq: u64, track: Track) {
        self.untrack(seq);
        self.tracked_ids.insert(track.id, seq);
        self.tracks.insert(seq, track);
    }

    /// Stops tracking `seq` (acknowledged or refused): its timer goes too.
    pub fn untrack(&mut self, seq: u64) -> Option<Track> {
        let t = self.tracks.remove(&seq)?;
        self.tracked_ids.remove(&t.id);
        if let Some(d) = t.timer {
            self.esc_timers.remove(&(d, seq));
        }
        self.reroute_waiting.remove(&seq);
        Some(t)
    }

    pub fn status(&self) -> ChannelStatus {
        ChannelStatus {
            peer: self.peer.clone(),
            connected: self.connected,
            resumed: self.resumed,
            next_sequence: self.next_seq,
            outbox_len: self.pending.len(),
            queued: self.pending.values().filter(|p| p.attempts == 0).count(),
            received_through: self.received.through,
            received: self.received_count,
            delivered: self.delivered,
            last_heard_unix_ms: self.last_heard_wall,
            peer_cosigned_size: self.peer_cosigned,
            we_cosigned_size: self.i_cosigned.as_ref().map(|c| c.size).unwrap_or(0),
            alert_level: self.level,
            own_alert_level: self.own_level,
            peer_alert_level: self.peer_level,
            health: self.health,
            missed_line_checks: self.missed_judged,
            line_check_rtt_ms: self.last_rtt_ms,
            awaiting_ack: self.tracks.len(),
            refusals_suppressed: self.budgets.dropped(Spend::Refusal),
            input_dropped: self.budgets.dropped_total(),
            held: self.held.len(),
            held_bytes: self.held_bytes,
            relays: self.relays.clone(),
        }
    }
}

/// Settled messages whose end this run still remembers, at most
/// [`RecentlySettled::CAP`] per channel (the oldest are forgotten: views
/// then show no transmissions for them, which is what a restarted node
/// shows too).
#[derive(Debug, Default, Clone)]
pub(crate) struct RecentlySettled {
    by_seq: BTreeMap<u64, (OutState, u32)>,
    order: std::collections::VecDeque<u64>,
}

impl RecentlySettled {
    /// Most remembered per channel.
    pub const CAP: usize = 4096;

    pub fn push(&mut self, seq: u64, state: OutState, attempts: u32) {
        if self.by_seq.insert(seq, (state, attempts)).is_none() {
            self.order.push_back(seq);
        }
        while self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.by_seq.remove(&old);
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<(OutState, u32)> {
        self.by_seq.get(&seq).copied()
    }

    /// (sequence, how it ended), oldest first.
    pub fn in_order(&self) -> impl Iterator<Item = (u64, OutState)> + '_ {
        self.order
            .iter()
            .filter_map(|s| self.by_seq.get(s).map(|(state, _)| (*s, *state)))
    }
}

/// Our answer to one of the peer's sequences.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Receipt(SignedEnvelope),
    /// A settling negative receipt.
    Refusal(SignedEnvelope),
}

impl Answer {
    pub fn body(&self) -> crate::wire::proto::frame::Body {
        use crate::wire::proto::frame::Body;
        match self {
            Answer::Receipt(e) => Body::Receipt(e.clone()),
            Answer::Refusal(e) => Body::NegativeReceipt(e.clone()),
        }
    }
}

/// The answers to a peer's highest sequences, at most `cap` (the lowest
/// are let go first; the log keeps them all).
#[derive(Debug, Clone)]
pub(crate) struct RecentAnswers {
    by_seq: BTreeMap<u64, (Answer, [u8; 32])>,
    cap: usize,
    /// The highest sequence whose answer was let go: an answer at or below
    /// it may be in the log only.
    pub forgotten_through: u64,
}

impl Default for RecentAnswers {
    fn default() -> Self {
        RecentAnswers {
            by_seq: BTreeMap::new(),
            cap: RecentAnswers::CAP,
            forgotten_through: 0,
        }
    }
}

impl RecentAnswers {
    /// Answers kept per channel by default: enough for the retransmissions
    /// and resumptions of a working line (a resumption resends at most
    /// `MAX_RETRANSMIT_BURST`), about 1 MiB.
    pub const CAP: usize = 4096;

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.trim();
    }

    pub fn insert(&mut self, seq: u64, answer: Answer, hash: [u8; 32]) {
        self.by_seq.insert(seq, (answer, hash));
        self.trim();
    }

    fn trim(&mut self) {
        while self.by_seq.len() > self.cap {
            if let Some((seq, _)) = self.by_seq.pop_first() {
                self.forgotten_through = self.forgotten_through.max(seq);
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<&(Answer, [u8; 32])> {
        self.by_seq.get(&seq)
    }

    /// Kept answers from `from` on, in order.
    pub fn range(&self, from: u64) -> impl Iterator<Item = (&u64, &(Answer, [u8; 32]))> {
        self.by_seq.range(from..)
    }

    /// Every kept answer, in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &(Answer, [u8; 32]))> {
        self.by_seq.iter()
    }

    /// (sequence, hash) of each kept answer, for the fold digest.
    pub fn digest(&self) -> Vec<(u64, String, bool)> {
        self.by_seq
            .iter()
            .map(|(s, (a, h))| (*s, hex::encode(h), matches!(a, Answer::Receipt(_))))
            .collect()
    }
}

/// A set of sequence numbers stored as "all of 1..=through" plus the ones
/// above it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Watermark {
    pub through: u64,
    pub above: BTreeSet<u64>,
}

impl Watermark {
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.through || self.above.contains(&seq)
    }

    /// The first number not yet in the set above the contiguous prefix
    /// (`through + 1`, saturating).
    pub fn next(&self) -> u64 {
        self.through.saturating_add(1)
    }

    pub fn insert(&mut self, seq: u64) {
        if seq <= self.through {
            return;
        }
        self.above.insert(seq);
        // `through` < `seq` <= u64::MAX here, so `through + 1` cannot wrap.
        while let Some(next) = self.through.checked_add(1) {
            if !self.above.remove(&next) {
                break;
            }
            self.through = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn watermark_closes_gaps() {
        let mut w = Watermark::default();
        for s in [3, 1, 5, 2] {
            w.insert(s);
        }
        assert_eq!(w.through, 3);
        assert!(w.contains(5) && !w.contains(4));
        w.insert(4);
        assert_eq!((w.through, w.above.len()), (5, 0));
    }
}
