//! A deterministic network of offices for the sans-IO core.
//!
//! One simulator for every schedule (the core tests, the relay tests, the
//! Byzantine schedules and the drills): N offices, lines between them, a
//! virtual clock and one seeded RNG that also seeds each core's own
//! randomness, so a failing schedule replays exactly from its seed (in the
//! spirit of quinn-proto's test `Pair`). The driver either runs the world
//! for a while or steps it one event at a time ([`Sim::next_time`],
//! [`Sim::step`]) to interleave its own actions.
//!
//! A line is one of two models. A *datagram* line drops, duplicates and
//! delays (and so reorders) frames, and a cut loses what is in flight: the
//! worst a core must survive. A *QUIC* line behaves like the connection a
//! node runs on: a lost packet costs a retransmission delay, not the frame;
//! a cut holds frames until the line returns or the idle timeout closes the
//! connection; a closed connection is re-dialled after a handshake delay;
//! a crashed peer is noticed only at the idle timeout; a bandwidth cap
//! queues frames. An office can crash, optionally in the middle of a log
//! write (a torn write: only a prefix of the batch reaches the disk, and
//! none of the batch's frames or events happen). A restart rebuilds the
//! core from its disk (and a relay's spool), just as the real node does
//! from its log file. One office can act as a relay for the others.
//!
//! In hostile mode an office is Byzantine: its honest core keeps running
//! (so it also sends genuine traffic), a [`hostile::HostileOffice`] signs
//! whatever it likes with its real keys and floods its peers, and a share
//! of its genuine frames are withheld.

pub mod hostile;
pub mod views;

pub use views::OfficeHistory;

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::audit::Persisted;
use crate::core::{
    Core, CoreEvent, Draft, Now, OfficeKeys, PeerKeys, StreamClass, Timing, Transmit,
};
use crate::identity::OfficeName;
use crate::wire::proto::{frame::Body, Frame};
use crate::wire::MessageId;

use hostile::HostileOffice;

/// Network fault probabilities and delays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability a frame's packet is lost. As on a QUIC connection, the
    /// transport sends it again (it arrives a probe timeout later, perhaps
    /// after others), and one loss in [`RESET_PER_LOSSES`] breaks the
    /// connection instead, losing everything it carried.
    pub drop: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is held back by up to `reorder_ms` extra.
    pub reorder: f64,
    /// Extra delay for reordered frames.
    pub reorder_ms: u64,
    /// One-way latency.
    pub latency_ms: u64,
}

/// On a datagram line, one packet loss in this many ends the connection.
pub const RESET_PER_LOSSES: f64 = 16.0;

impl Faults {
    /// A perfect line with `latency_ms` one-way delay.
    pub fn clean(latency_ms: u64) -> Self {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms: 0,
            latency_ms,
        }
    }
}

/// One simulated office.
pub struct SimOffice {
    /// Its name.
    pub name: OfficeName,
    key: SigningKey,
    log_key: SigningKey,
    seal_public: [u8; 32],
    make: CoreMaker,
    start_label: String,
    fingerprints: Vec<(OfficeName, String)>,
    /// The core, `None` while crashed.
    pub core: Option<Core>,
    /// Durable log entries.
    pub disk: Vec<Persisted>,
    /// A relay's durable spool of sealed frames.
    pub spool: BTreeMap<[u8; 32], Vec<u8>>,
    /// Ids whose submission became durable (the API would have returned).
    pub accepted: Vec<MessageId>,
    /// Delivered events seen, per id.
    pub delivered: BTreeMap<MessageId, u32>,
    /// Transmit count, for tests that watch the wire.
    pub frames_sent: u64,
    /// Answers its core had let go and recalled from its log (sent again).
    pub answers_recalled: u64,
    /// Of those, message frames.
    pub message_frames_sent: u64,
    /// Of those, line checks and their replies.
    pub line_check_frames_sent: u64,
    /// Events reported (after durability), in order.
    pub events: Vec<CoreEvent>,
    /// The virtual time of each of `events`.
    pub event_times: Vec<u64>,
    /// Virtual times at which this office crashed.
    pub crashes: Vec<u64>,
    crash_on_flush: bool,
    /// Its newest snapshot (encoded), taken as a node takes one; a restart
    /// starts from it and replays only the log after it.
    pub snapshot: Option<Vec<u8>>,
    snapshots: crate::core::SnapshotSchedule,
    /// Restarts that started from a snapshot.
    pub restored_from_snapshot: u64,
}

/// Makes a fresh core for an office (keys, peers, timing, policy), before
/// its log is replayed.
pub type CoreMaker = Box<dyn Fn() -> Core>;

/// An office to simulate.
pub struct OfficeSpec {
    /// Its name.
    pub name: OfficeName,
    /// Its message key.
    pub key: SigningKey,
    /// Its log key.
    pub log_key: SigningKey,
    /// Its seal public key.
    pub seal_public: [u8; 32],
    /// Its core, fresh.
    pub make: CoreMaker,
    /// What its start entry names as the software.
    pub start_label: String,
    /// Its pinned peers' card fingerprints (for the start entries).
    pub fingerprints: Vec<(OfficeName, String)>,
}

/// How a line behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LineModel {
    /// Frames dropped, duplicated and reordered under [`Sim::faults`]; a
    /// cut or a crash loses what is in flight.
    Datagram,
    /// A QUIC connection over a lossy path.
    Quic(QuicLine),
}

/// A QUIC line's path and the transport's reflexes, in virtual ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuicLine {
    /// One-way delay.
    pub delay_ms: u64,
    /// Random extra delay up to this much.
    pub jitter_ms: u64,
    /// Probability a packet is lost (it costs a retransmission delay).
    pub loss: f64,
    /// Probability a frame arrives twice.
    pub duplicate: f64,
    /// Probability a frame is held back.
    pub reorder: f64,
    /// Bandwidth cap (0: none).
    pub bandwidth_kbps: u64,
    /// A connection that hears nothing this long is closed.
    pub idle_timeout_ms: u64,
    /// Handshake extra delay range, and the backoff after a cut.
    pub reconnect_min_ms: u64,
    /// Most backoff before re-dialling after a restored cut.
    pub reconnect_max_ms: u64,
}

/// A line to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineSpec {
    /// One end (office index).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Its behaviour.
    pub model: LineModel,
    /// Cut from the start.
    pub cut: bool,
}

enum Job {
    Frame {
        from: usize,
        to: usize,
        line: usize,
        epoch: u64,
        frame: Frame,
    },
    Connect(usize),
    /// A datagram line's connection `epoch` breaks; a new one comes up.
    Reset(usize, u64),
    IdleTimeout(usize, u64),
    PeerTimeout(usize, u64),
}

/// The line between two offices.
struct Line {
    a: usize,
    b: usize,
    model: LineModel,
    /// Not cut.
    wanted: bool,
    /// Connected (both sides have seen it come up).
    up: bool,
    /// Bumped whenever the connection is replaced: frames of an older one
    /// are lost.
    epoch: u64,
    /// QUIC: bumped at every cut, so a stale idle timeout does nothing.
    cut_gen: u64,
    /// QUIC: frames that reached a cut line, held for when it returns.
    held: Vec<(usize, usize, Frame)>,
    /// QUIC: the side that has not yet noticed its peer crashed.
    stale_side: Option<usize>,
    /// QUIC: when each direction's wire is free again (bandwidth cap).
    busy_until: [u64; 2],
    /// QUIC: per direction and stream class, when the last frame arrives
    /// (streams deliver in order).
    stream_tail: [[u64; 5]; 2],
}

/// A Byzantine office: its generators (one per target) and how much of its
/// honest traffic it withholds.
struct Byzantine {
    office: usize,
    targets: Vec<(usize, HostileOffice)>,
    withhold: f64,
}

/// Who the offices are, for [`Sim::network`].
#[derive(Debug, Clone)]
pub struct Setup {
    /// Office names, in index order.
    pub names: Vec<String>,
    /// The office that relays for the others, if any.
    pub relay: Option<String>,
    /// Protocol timing for every core.
    pub timing: Timing,
}

impl Setup {
    /// Offices `names`, all pinned to each other, no relay, the quick
    /// simulation timing.
    pub fn offices(names: &[&str]) -> Self {
        Setup {
            names: names.iter().map(|n| n.to_string()).collect(),
            relay: None,
            timing: Timing {
                rto_ms: 500,
                rto_max_ms: 4_000,
                checkpoint_every: 64,
                checkpoint_interval_ms: 2_000,
            },
        }
    }
}

/// Frame tampering on the wire: `(from, to, frame)`.
pub type Tamper = Box<dyn FnMut(usize, usize, &mut Frame)>;

/// The simulated world: the offices and the lines between them.
pub struct Sim {
    /// Virtual monotonic time in ms.
    pub now: u64,
    rng: StdRng,
    /// The offices.
    pub offices: Vec<SimOffice>,
    lines: Vec<Line>,
    jobs: BTreeMap<(u64, u64), Job>,
    order: u64,
    /// Current faults of datagram lines.
    pub faults: Faults,
    byzantine: Option<Byzantine>,
    tamper: Option<Tamper>,
    /// `(office, time)` where a core kept asking to be woken at a time
    /// already handled, [`STALL_LIMIT`] times running. A live node would
    /// spin on such a deadline, so tests treat any entry as a core bug; the
    /// simulation crashes that office so that the run still ends.
    pub timer_stalls: Vec<(usize, u64)>,
    /// The office and time of the last timeout, and how many ran there.
    repeat_timeouts: (usize, u64, u32),
    /// Answers each core keeps per peer ([`Core::set_answers_kept`]), when
    /// a test sets it (low, to make cores recall answers from the log).
    answers_kept: Option<usize>,
}

/// Timeouts one office may take at one virtual instant before the
/// simulation calls it a stall. Bursts that are capped per timeout (the
/// retransmission burst) legitimately take a few; thousands means no
/// progress.
pub const STALL_LIMIT: u32 = 1_000;

/// Entries between an office's snapshots in the simulation: small, so
/// that restarts start from snapshots and the tail after them often.
pub const SIM_SNAPSHOT_EVERY: u64 = 24;

/// Wall-clock time at virtual time zero.
pub const WALL_BASE: u64 = 1_750_000_000_000;

impl Sim {
    /// Two offices, "washington" (0) and "pyongyang" (1), with keys derived
    /// from `seed`, not yet connected.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self::network(seed, faults, Setup::offices(&["washington", "pyongyang"]))
    }

    /// The offices of `setup`, all pinned to each other over datagram
    /// lines, with keys derived from `seed`, not yet connected.
    pub fn network(seed: u64, faults: Faults, setup: Setup) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<(OfficeName, SigningKey, SigningKey)> = setup
            .names
            .iter()
            .map(|n| {
                (
                    OfficeName::new(n.clone()).expect("simulation office names are valid"),
                    SigningKey::from_bytes(&rng.gen()),
                    SigningKey::from_bytes(&rng.gen()),
                )
            })
            .collect();
        let seal = |log: &SigningKey| crate::wire::seal::derive_keypair(&log.to_bytes());
        let relay = setup
            .relay
            .as_ref()
            .and_then(|r| setup.names.iter().position(|n| n == r));
        let offices = (0..keys.len())
            .map(|i| {
                let (name, key, log_key) = keys[i].clone();
                let peers: Vec<PeerKeys> = (0..keys.len())
                    .filter(|&j| j != i)
                    .map(|j| PeerKeys {
                        office: keys[j].0.clone(),
                        message: keys[j].1.verifying_key(),
                        log: keys[j].2.verifying_key(),
                        seal: seal(&keys[j].2).1,
                        relays: match relay {
                            Some(r) if r != j && r != i => vec![keys[r].0.clone()],
                            _ => Vec::new(),
                        },
                    })
                    .collect();
                let own = OfficeKeys {
                    message: key.clone(),
                    log: log_key.clone(),
                    seal: seal(&log_key).0,
                };
                let (me, timing, is_relay) = (name.clone(), setup.timing, relay == Some(i));
                OfficeSpec {
                    name,
                    seal_public: seal(&log_key).1,
                    key,
                    log_key,
                    make: Box::new(move || {
                        let mut core = Core::new(me.clone(), own.clone(), peers.clone(), timing);
                        core.set_relay_role(is_relay);
                        core
                    }),
                    start_label: "sim".into(),
                    fingerprints: Vec::new(),
                }
            })
            .collect();
        let n = keys.len();
        let lines = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .map(|(a, b)| LineSpec {
                a,
                b,
                model: LineModel::Datagram,
                cut: true,
            })
            .collect();
        Self::build(rng, faults, offices, lines)
    }

    /// The offices and lines given, driven by `seed`; every office boots,
    /// and every line not cut starts dialling.
    pub fn custom(seed: u64, offices: Vec<OfficeSpec>, lines: Vec<LineSpec>) -> Self {
        Self::build(
            StdRng::seed_from_u64(seed),
            Faults::clean(0),
            offices,
            lines,
        )
    }

    fn build(rng: StdRng, faults: Faults, offices: Vec<OfficeSpec>, lines: Vec<LineSpec>) -> Self {
        let offices: Vec<SimOffice> = offices
            .into_iter()
            .map(|o| SimOffice {
                name: o.name,
                key: o.key,
                log_key: o.log_key,
                seal_public: o.seal_public,
                make: o.make,
                start_label: o.start_label,
                fingerprints: o.fingerprints,
                core: None,
                disk: Vec::new(),
                answers_recalled: 0,
                spool: BTreeMap::new(),
                accepted: Vec::new(),
                delivered: BTreeMap::new(),
                frames_sent: 0,
                message_frames_sent: 0,
                line_check_frames_sent: 0,
                events: Vec::new(),
                event_times: Vec::new(),
                crashes: Vec::new(),
                crash_on_flush: false,
                snapshot: None,
                snapshots: crate::core::SnapshotSchedule::new(SIM_SNAPSHOT_EVERY),
                restored_from_snapshot: 0,
            })
            .collect();
        let lines = lines
            .into_iter()
            .map(|l| Line {
                a: l.a.min(l.b),
                b: l.a.max(l.b),
                model: l.model,
                wanted: !l.cut,
                up: false,
                epoch: 0,
                cut_gen: 0,
                held: Vec::new(),
                stale_side: None,
                busy_until: [0; 2],
                stream_tail: [[0; 5]; 2],
            })
            .collect();
        let mut sim = Sim {
            now: 0,
            rng,
            offices,
            lines,
            jobs: BTreeMap::new(),
            order: 0,
            faults,
            byzantine: None,
            tamper: None,
            timer_stalls: Vec::new(),
            repeat_timeouts: (usize::MAX, 0, 0),
            answers_kept: None,
        };
        for i in 0..sim.offices.len() {
            sim.boot(i);
        }
        sim
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.now,
            wall_ms: WALL_BASE + self.now,
        }
    }

    /// Index of the office called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.offices.iter().position(|o| o.name.as_str() == name)
    }

    fn boot(&mut self, i: usize) {
        let seed = self.rng.gen();
        let now = self.now();
        let o = &mut self.offices[i];
        let mut core = (o.make)();
        if let Some(n) = self.answers_kept {
            core.set_answers_kept(n);
        }
        core.seed_randomness(seed);
        let snap = o.snapshot.as_deref().map(|bytes| {
            <crate::wire::store::Snapshot as prost::Message>::decode(bytes)
                .expect("sim snapshot decodes")
        });
        let mut from = 0;
        if let Some(snap) = snap {
            let k = usize::try_from(snap.entries).expect("entries fit");
            let mut tree = crate::audit::merkle::Tree::new();
            for e in o.disk.iter().take(k) {
                tree.push(&e.bytes);
            }
            // A log rewritten under the snapshot (a test playing a
            // dishonest office) is replayed whole, as a node does.
            if tree.size() == snap.entries && tree.root().0.as_slice() == snap.root.as_slice() {
                core.restore(&snap, tree).expect("sim snapshot restores");
                o.restored_from_snapshot += 1;
                from = k;
            } else {
                o.snapshot = None;
                o.snapshots = crate::core::SnapshotSchedule::new(SIM_SNAPSHOT_EVERY);
            }
        }
        for e in o.disk.iter().skip(from) {
            core.replay(&e.entry, &e.bytes).expect("sim log replays");
        }
        core.check_own_checkpoint()
            .expect("sim log matches its checkpoint");
        for hash in core.spool_needed() {
            if let Some(bytes) = o.spool.get(&hash) {
                core.restore_spooled(hash, bytes);
            }
        }
        core.start(now, &o.start_label, None, &o.fingerprints);
        o.core = Some(core);
        self.flush(i);
        for l in 0..self.lines.len() {
            if self.lines[l].a == i || self.lines[l].b == i {
                self.line_wanted(l);
            }
        }
    }

    /// The message-signing public key of office `i`.
    pub fn public_key(&self, i: usize) -> ed25519_dalek::VerifyingKey {
        self.offices[i].key.verifying_key()
    }

    /// The log public key of office `i`.
    pub fn log_public_key(&self, i: usize) -> ed25519_dalek::VerifyingKey {
        self.offices[i].log_key.verifying_key()
    }

    /// Office `i`'s log key (tests use it to play a dishonest office).
    pub fn log_signing_key(&self, i: usize) -> &SigningKey {
        &self.offices[i].log_key
    }

    /// Office `i`'s message key (tests use it to play a dishonest office).
    pub fn signing_key(&self, i: usize) -> &SigningKey {
        &self.offices[i].key
    }

    /// Office `i`'s seal (HPKE) public key.
    pub fn seal_public(&self, i: usize) -> [u8; 32] {
        self.offices[i].seal_public
    }

    /// Takes office `i`'s snapshot when one is due, as a node does: only
    /// when every entry its core made is durable.
    fn maybe_snapshot(&mut self, i: usize) {
        let o = &mut self.offices[i];
        let Some(core) = o.core.as_ref() else {
            return;
        };
        if core.next_index() != o.disk.len() as u64 || !o.snapshots.due(core) {
            return;
        }
        let record = |e: &Persisted| (crate::audit::RECORD_HEADER_LEN + e.bytes.len()) as u64;
        let end: u64 = o.disk.iter().map(record).sum();
        let last_start = end - o.disk.last().map_or(0, record);
        let snap = core.snapshot(end, last_start);
        o.snapshots.taken(snap.entries, snap.cosigned_size);
        o.snapshot = Some(prost::Message::encode_to_vec(&snap));
    }

    /// Where a core restored from a snapshot of office `i`'s durable log
    /// after its first `k` entries (taken from a core that replayed them)
    /// and fed the rest differs from one that replayed it all; `None` when
    /// they agree.
    pub fn snapshot_mismatch(&self, i: usize, k: usize) -> Option<String> {
        let o = &self.offices[i];
        let fresh = || {
            let mut c = (o.make)();
            if let Some(n) = self.answers_kept {
                c.set_answers_kept(n);
            }
            c
        };
        let mut full = fresh();
        let mut head = fresh();
        let mut tree = crate::audit::merkle::Tree::new();
        for (n, e) in o.disk.iter().enumerate() {
            full.replay(&e.entry, &e.bytes).ok()?;
            if n < k {
                head.replay(&e.entry, &e.bytes).ok()?;
                tree.push(&e.bytes);
            }
        }
        let snap = head.snapshot(0, 0);
        let snap: crate::wire::store::Snapshot =
            prost::Message::decode(prost::Message::encode_to_vec(&snap).as_slice()).ok()?;
        let mut restored = fresh();
        if let Err(e) = restored.restore(&snap, tree) {
            return Some(format!(
                "the snapshot after {k} entries does not restore: {e}"
            ));
        }
        for e in o.disk.iter().skip(k) {
            if let Err(e) = restored.replay(&e.entry, &e.bytes) {
                return Some(format!("the tail after {k} does not replay: {e:?}"));
            }
        }
        digest_diff(
            "restored",
            &restored.fold_digest(),
            "replayed",
            &full.fold_digest(),
        )
    }

    /// Where office `i`'s live core differs from a core replayed from its
    /// durable log ([`Core::fold_digest`]), the first few lines of each;
    /// `None` when they agree or the office is down.
    pub fn fold_mismatch(&self, i: usize) -> Option<String> {
        let o = &self.offices[i];
        let live = o.core.as_ref()?.fold_digest();
        let mut replayed = (o.make)();
        if let Some(n) = self.answers_kept {
            replayed.set_answers_kept(n);
        }
        for e in &o.disk {
            if let Err(e) = replayed.replay(&e.entry, &e.bytes) {
                return Some(format!("its log does not replay: {e:?}"));
            }
        }
        digest_diff("live", &live, "replayed", &replayed.fold_digest())
    }

    /// Every core (those running now and those started later) keeps its
    /// answers to only the `n` latest sequences per peer, recalling older
    /// ones from its log as a node does.
    pub fn set_answers_kept(&mut self, n: usize) {
        self.answers_kept = Some(n);
        for o in &mut self.offices {
            if let Some(c) = o.core.as_mut() {
                c.set_answers_kept(n);
            }
        }
    }

    /// Office `i`'s history as its operator sees it (inbox, outbox, by id),
    /// from its durable log.
    pub fn history(&self, i: usize) -> OfficeHistory<'_> {
        let o = &self.offices[i];
        OfficeHistory::of(&o.disk, o.core.as_ref())
    }

    /// Office `i`'s officer acknowledges received message `msg` (found in
    /// its history, as the node finds it): `None` when the office is down.
    pub fn acknowledge(
        &mut self,
        i: usize,
        ack_id: MessageId,
        msg: &MessageId,
        note: &str,
        response: crate::wire::proto::Response,
    ) -> Option<Result<u64, crate::core::SubmitError>> {
        let found = self.history(i).find_received(msg);
        let Some((entry, message)) = found else {
            let e = crate::core::SubmitError::UnknownMessage(msg.to_string());
            return self.is_up(i).then_some(Err(e));
        };
        let peer = OfficeName::new(entry.from).ok()?;
        self.with_core(i, |core, now| {
            core.acknowledge(now, ack_id, &peer, &message, note, response)
        })
    }

    /// Office `i`'s own keys, as its core was made with them.
    pub fn office_keys(&self, i: usize) -> OfficeKeys {
        let o = &self.offices[i];
        OfficeKeys {
            message: o.key.clone(),
            log: o.log_key.clone(),
            seal: crate::wire::seal::derive_keypair(&o.log_key.to_bytes()).0,
        }
    }

    /// Runs `f` on office `i`'s core while it is up, then applies the
    /// output under the durability rule (tests use it to act as an operator).
    /// Returns what `f` returned, or `None` while the office is down.
    pub fn with_core<R>(&mut self, i: usize, f: impl FnOnce(&mut Core, Now) -> R) -> Option<R> {
        let now = self.now();
        let core = self.offices[i].core.as_mut()?;
        let r = f(core, now);
        self.flush(i);
        Some(r)
    }

    /// Moves the clock on by `ms` at once: timers that fell due meanwhile
    /// fire once, at the next [`Sim::run_for`], as after a long sleep.
    pub fn jump(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Submits a draft at office `from`. With two offices it goes to the
    /// other one; otherwise to `draft.to`. Returns the id if the submission
    /// became durable.
    pub fn submit(&mut self, from: usize, mut draft: Draft) -> Option<MessageId> {
        let id = MessageId::new(WALL_BASE + self.now, self.rng.gen());
        if self.offices.len() == 2 {
            draft.to = self.offices[1 - from].name.to_string();
        }
        let now = self.now();
        let core = self.offices[from].core.as_mut()?;
        core.submit(now, id, draft).ok()?;
        if self.flush(from) {
            self.offices[from].accepted.push(id);
            Some(id)
        } else {
            None
        }
    }

    /// Restores every line (now, and after every restart) until
    /// [`Sim::cut`].
    pub fn connect(&mut self) {
        for l in 0..self.lines.len() {
            self.restore(l);
        }
    }

    /// Cuts every line.
    pub fn cut(&mut self) {
        for l in 0..self.lines.len() {
            self.cut_index(l);
        }
    }

    fn line_of(&self, i: usize, j: usize) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| (l.a, l.b) == (i.min(j), i.max(j)))
    }

    /// Cuts the line between `i` and `j`. A datagram line goes down at
    /// once and loses what is in flight; a QUIC line holds what is sent
    /// until it returns or its idle timeout closes the connection.
    pub fn cut_line(&mut self, i: usize, j: usize) {
        if let Some(l) = self.line_of(i, j) {
            self.cut_index(l);
        }
    }

    /// Gives the line between `i` and `j` another model (before it comes
    /// up: a live connection keeps the model it was made with).
    pub fn set_line_model(&mut self, i: usize, j: usize, model: LineModel) {
        if let Some(l) = self.line_of(i, j) {
            if !self.lines[l].up {
                self.lines[l].model = model;
            }
        }
    }

    /// Restores the line between `i` and `j`.
    pub fn restore_line(&mut self, i: usize, j: usize) {
        if let Some(l) = self.line_of(i, j) {
            self.restore(l);
        }
    }

    fn cut_index(&mut self, l: usize) {
        if !self.lines[l].wanted {
            return;
        }
        self.lines[l].wanted = false;
        match self.lines[l].model {
            LineModel::Datagram => self.line_down(l, "cut"),
            LineModel::Quic(q) => {
                let line = &mut self.lines[l];
                line.cut_gen += 1;
                let gen = line.cut_gen;
                self.schedule(self.now + q.idle_timeout_ms, Job::IdleTimeout(l, gen));
            }
        }
    }

    fn restore(&mut self, l: usize) {
        if self.lines[l].wanted {
            return;
        }
        self.lines[l].wanted = true;
        match self.lines[l].model {
            LineModel::Datagram => self.line_wanted(l),
            LineModel::Quic(q) => {
                if self.lines[l].up {
                    // The connection lived through the cut: QUIC sends what
                    // it holds once the path works again.
                    let held = std::mem::take(&mut self.lines[l].held);
                    for (from, to, frame) in held {
                        self.schedule_frame(self.now + q.delay_ms, l, from, to, frame);
                    }
                } else {
                    let backoff = self.rng.gen_range(0..=q.reconnect_max_ms);
                    self.plan_connect(l, backoff);
                }
            }
        }
    }

    /// The line may come up: a datagram line does at once when both ends
    /// run; a QUIC line dials after a handshake delay.
    fn line_wanted(&mut self, l: usize) {
        match self.lines[l].model {
            LineModel::Datagram => self.line_up(l, "sim"),
            LineModel::Quic(_) => {
                if !self.lines[l].up {
                    self.plan_connect(l, 0);
                }
            }
        }
    }

    fn viable(&self, l: usize) -> bool {
        let line = &self.lines[l];
        line.wanted && self.offices[line.a].core.is_some() && self.offices[line.b].core.is_some()
    }

    fn plan_connect(&mut self, l: usize, extra: u64) {
        let LineModel::Quic(q) = self.lines[l].model else {
            return;
        };
        let d = 2 * q.delay_ms + self.rng.gen_range(0..=q.reconnect_min_ms * 2) + extra;
        self.schedule(self.now + d, Job::Connect(l));
    }

    fn line_up(&mut self, l: usize, detail: &str) {
        if self.lines[l].up || !self.viable(l) {
            return;
        }
        let (a, b) = (self.lines[l].a, self.lines[l].b);
        if let Some(stale) = self.lines[l].stale_side.take() {
            let other = if stale == a { b } else { a };
            self.link_event(stale, other, false, "replaced by a new connection");
        }
        let line = &mut self.lines[l];
        line.up = true;
        line.epoch += 1;
        line.held.clear();
        line.stream_tail = [[0; 5]; 2];
        self.link_event(a, b, true, detail);
        self.link_event(b, a, true, detail);
    }

    fn line_down(&mut self, l: usize, why: &str) {
        if !self.lines[l].up {
            return;
        }
        let line = &mut self.lines[l];
        line.up = false;
        line.epoch += 1;
        line.held.clear();
        line.stream_tail = [[0; 5]; 2];
        let (a, b) = (line.a, line.b);
        self.link_event(a, b, false, why);
        self.link_event(b, a, false, why);
    }

    fn link_event(&mut self, me: usize, peer: usize, up: bool, detail: &str) {
        let now = self.now();
        let peer = self.offices[peer].name.clone();
        if let Some(core) = self.offices[me].core.as_mut() {
            if up {
                core.link_up(now, &peer, detail);
            } else {
                core.link_down(now, &peer, detail);
            }
            self.flush(me);
        }
    }

    /// Crashes office `i` now: its unsynced state is gone. Its datagram
    /// lines go down at once; on a QUIC line the peer notices only at the
    /// idle timeout.
    pub fn crash(&mut self, i: usize) {
        if self.offices[i].core.is_none() {
            return;
        }
        self.offices[i].crashes.push(self.now);
        self.offices[i].core = None;
        for l in 0..self.lines.len() {
            let line = &self.lines[l];
            if !(line.a == i || line.b == i) || !line.up {
                continue;
            }
            match line.model {
                LineModel::Datagram => self.line_down(l, "peer crashed"),
                LineModel::Quic(q) => {
                    let line = &mut self.lines[l];
                    line.up = false;
                    line.epoch += 1;
                    line.held.clear();
                    line.stale_side = Some(if line.a == i { line.b } else { line.a });
                    let epoch = line.epoch;
                    self.schedule(self.now + q.idle_timeout_ms, Job::PeerTimeout(l, epoch));
                }
            }
        }
    }

    /// Whether office `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.offices[i].core.is_some()
    }

    /// Crashes office `i` during its next log write: a random prefix of
    /// that batch reaches the disk and nothing else of it happens.
    pub fn crash_during_next_write(&mut self, i: usize) {
        self.offices[i].crash_on_flush = true;
    }

    /// Restarts a crashed office from its disk.
    pub fn restart(&mut self, i: usize) {
        if self.offices[i].core.is_some() {
            return;
        }
        self.boot(i);
    }

    /// Injects a frame as if office `from` had sent it to the other one
    /// (two offices).
    pub fn inject(&mut self, from: usize, frame: Frame) {
        self.inject_to(from, 1 - from, frame);
    }

    /// Injects a frame as if office `from` had sent it to office `to`, now,
    /// whatever the line does.
    pub fn inject_to(&mut self, from: usize, to: usize, frame: Frame) {
        let peer = self.offices[from].name.clone();
        let now = self.now();
        if let Some(core) = self.offices[to].core.as_mut() {
            core.handle_frame(now, &peer, frame);
            self.flush(to);
        }
    }

    /// Makes office `office` Byzantine towards `targets`: see
    /// [`Sim::attack`]. `withhold` is the share of its honest core's frames
    /// it never sends.
    pub fn make_hostile(&mut self, office: usize, targets: &[usize], withhold: f64) {
        let targets = targets
            .iter()
            .map(|&t| {
                let o = &self.offices[office];
                (
                    t,
                    HostileOffice::new(
                        o.name.clone(),
                        o.key.clone(),
                        o.log_key.clone(),
                        self.offices[t].name.clone(),
                        self.offices[t].seal_public,
                    ),
                )
            })
            .collect();
        self.byzantine = Some(Byzantine {
            office,
            targets,
            withhold,
        });
    }

    /// The Byzantine office sends `n` hostile frames to each target, signed
    /// with its real keys, over the line (so faults apply).
    pub fn attack(&mut self, n: usize) {
        let Some(mut byz) = self.byzantine.take() else {
            return;
        };
        let wall = WALL_BASE + self.now;
        for (t, gen) in byz.targets.iter_mut() {
            for _ in 0..n {
                let f = gen.frame(&mut self.rng, wall);
                self.put_on_line(byz.office, *t, StreamClass::Control, f);
            }
        }
        self.byzantine = Some(byz);
    }

    /// The Byzantine office turns honest again: no more hostile frames, and
    /// its honest core's frames all go out. It leaves its connections and
    /// comes back on new ones: what it withheld on the old ones is resumed
    /// there, as after any reconnection.
    pub fn end_hostility(&mut self) {
        let Some(byz) = self.byzantine.take() else {
            return;
        };
        for l in 0..self.lines.len() {
            let line = &self.lines[l];
            if (line.a == byz.office || line.b == byz.office) && line.up {
                self.line_down(l, "connection lost");
                self.line_wanted(l);
            }
        }
    }

    /// Sets a hook that may alter any frame on the wire.
    pub fn set_tamper(&mut self, f: Tamper) {
        self.tamper = Some(f);
    }

    fn schedule(&mut self, at: u64, job: Job) {
        self.order += 1;
        self.jobs.insert((at, self.order), job);
    }

    /// Applies the core's output under the durability rule. Returns whether
    /// the batch became durable.
    fn flush(&mut self, i: usize) -> bool {
        let Some(core) = self.offices[i].core.as_mut() else {
            return false;
        };
        let out = core.take_output();
        if self.offices[i].crash_on_flush && !out.persist.is_empty() {
            self.offices[i].crash_on_flush = false;
            let keep = self.rng.gen_range(0..out.persist.len());
            self.offices[i]
                .disk
                .extend(out.persist.into_iter().take(keep));
            self.crash(i);
            return false;
        }
        let o = &mut self.offices[i];
        o.disk.extend(out.persist);
        for (hash, bytes) in out.spool_write {
            o.spool.insert(hash, bytes);
        }
        for hash in out.spool_delete {
            o.spool.remove(&hash);
        }
        for ev in out.events {
            if let CoreEvent::Delivered { id, .. } = &ev {
                *o.delivered.entry(*id).or_default() += 1;
            }
            o.events.push(ev);
            o.event_times.push(self.now);
        }
        let mut transmit = out.transmit;
        if !out.recall.is_empty() {
            transmit.extend(self.recall(i, out.recall));
        }
        for t in transmit {
            let o = &mut self.offices[i];
            o.frames_sent += 1;
            match t.frame.body {
                Some(Body::Message(_)) => o.message_frames_sent += 1,
                Some(Body::LineCheck(_)) => o.line_check_frames_sent += 1,
                _ => {}
            }
            let Some(to) = self.index(t.peer.as_str()) else {
                continue;
            };
            if let Some(byz) = self.byzantine.as_mut() {
                if byz.office == i && self.rng.gen_bool(byz.withhold) {
                    continue;
                }
                if byz.office == to {
                    for (target, gen) in byz.targets.iter_mut() {
                        if *target == i {
                            gen.observe(&t.frame);
                        }
                    }
                }
            }
            self.put_on_line(i, to, t.class, t.frame);
        }
        self.maybe_snapshot(i);
        true
    }

    /// Answers office `i`'s core asked for from its log, as the node reads
    /// them: through the history index over its durable log. A duplicate
    /// whose logged answer names another message goes back to the core.
    fn recall(&mut self, i: usize, recalls: Vec<crate::core::Recall>) -> Vec<Transmit> {
        use crate::history::recall::{resolve, Resolved};
        let mut out = Vec::new();
        let mut conflicts = Vec::new();
        {
            let h = self.history(i);
            for r in recalls {
                match resolve(&h.history, &h.log, r).expect("answers view") {
                    Resolved::Send(t) => out.extend(t),
                    Resolved::Conflict(peer, env) => conflicts.push((peer, env)),
                    Resolved::Missing { .. } => {}
                }
            }
        }
        self.offices[i].answers_recalled += out.len() as u64;
        for (peer, env) in conflicts {
            self.with_core(i, |core, now| core.duplicate_unanswered(now, &peer, env));
        }
        out
    }

    /// Puts a frame from `from` to `to` on their line.
    fn put_on_line(&mut self, from: usize, to: usize, class: StreamClass, mut frame: Frame) {
        let Some(l) = self.line_of(from, to) else {
            return;
        };
        if !self.lines[l].up {
            return; // no connection: the core sends again after the next hello
        }
        if let Some(t) = self.tamper.as_mut() {
            t(from, to, &mut frame);
        }
        if let LineModel::Quic(_) = self.lines[l].model {
            if !self.lines[l].wanted {
                // QUIC keeps unacknowledged data and sends it again once the
                // path works, as long as the connection lives.
                self.lines[l].held.push((from, to, frame));
                return;
            }
        }
        for at in self.arrivals(l, from, class, &frame) {
            self.schedule_frame(at, l, from, to, frame.clone());
        }
    }

    /// A frame arrives at `at` over line `l`'s current connection (lost if
    /// the connection is replaced meanwhile).
    fn schedule_frame(&mut self, at: u64, l: usize, from: usize, to: usize, frame: Frame) {
        let epoch = self.lines[l].epoch;
        self.schedule(
            at,
            Job::Frame {
                from,
                to,
                line: l,
                epoch,
                frame,
            },
        );
    }

    /// When the copies of a frame put on line `l` now arrive: none (lost),
    /// one, or two (duplicated).
    fn arrivals(&mut self, l: usize, from: usize, class: StreamClass, frame: &Frame) -> Vec<u64> {
        let mut out = Vec::new();
        match self.lines[l].model {
            LineModel::Datagram => {
                let f = self.faults;
                let copies = if self.rng.gen_bool(f.duplicate) { 2 } else { 1 };
                let pto = 2 * f.latency_ms + 20;
                for _ in 0..copies {
                    let mut at = self.now + f.latency_ms;
                    let mut tries = 0;
                    while tries < 8 && self.rng.gen_bool(f.drop.clamp(0.0, 0.95)) {
                        if self.rng.gen_bool((1.0 / RESET_PER_LOSSES).clamp(0.0, 1.0)) {
                            let epoch = self.lines[l].epoch;
                            self.schedule(self.now + f.latency_ms, Job::Reset(l, epoch));
                            return Vec::new();
                        }
                        at += pto << tries.min(3);
                        tries += 1;
                    }
                    if self.rng.gen_bool(f.reorder) {
                        at += self.rng.gen_range(0..=f.reorder_ms);
                    }
                    out.push(at);
                }
            }
            LineModel::Quic(q) => {
                let dir = usize::from(self.lines[l].a != from);
                let copies = if self.rng.gen_bool(q.duplicate) { 2 } else { 1 };
                let pto = 2 * q.delay_ms + q.jitter_ms + 50;
                for _ in 0..copies {
                    let mut at = self.now;
                    if q.bandwidth_kbps > 0 {
                        let bits = 8 * (prost::Message::encoded_len(frame) as u64 + 40);
                        let start = at.max(self.lines[l].busy_until[dir]);
                        let done = start + bits.div_ceil(q.bandwidth_kbps);
                        self.lines[l].busy_until[dir] = done;
                        at = done;
                    }
                    at += q.delay_ms + self.rng.gen_range(0..=q.jitter_ms);
                    // A lost packet is sent again after a probe timeout,
                    // backing off as QUIC does.
                    let mut tries = 0;
                    while tries < 12 && self.rng.gen_bool(q.loss.min(0.95)) {
                        at += pto << tries.min(4);
                        tries += 1;
                    }
                    if self.rng.gen_bool(q.reorder) {
                        at += self.rng.gen_range(0..=q.delay_ms + q.jitter_ms + 20);
                    }
                    // A QUIC stream delivers in order: a late frame holds
                    // back the ones behind it on its stream, not on others.
                    let tail = &mut self.lines[l].stream_tail[dir][class.index()];
                    at = at.max(*tail);
                    *tail = at;
                    out.push(at);
                }
            }
        }
        out
    }

    /// When the next event happens (a frame, a line's job or a core's
    /// timer), if any.
    pub fn next_time(&self) -> Option<u64> {
        let job = self.jobs.keys().next().map(|k| k.0);
        let timer = self
            .offices
            .iter()
            .filter_map(|o| o.core.as_ref()?.poll_timeout())
            .min();
        match (job, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles the next event, moving the clock to it (never back).
    pub fn step(&mut self) {
        let job = self.jobs.keys().next().copied();
        let timer = (0..self.offices.len())
            .filter_map(|i| Some((self.offices[i].core.as_ref()?.poll_timeout()?, i)))
            .min();
        match (job, timer) {
            (Some(k), t) if t.is_none_or(|t| k.0 <= t.0) => {
                self.now = self.now.max(k.0);
                if let Some(job) = self.jobs.remove(&k) {
                    self.do_job(job);
                }
            }
            (_, Some((t, i))) => {
                self.now = self.now.max(t);
                let now = self.now();
                if let Some(core) = self.offices[i].core.as_mut() {
                    core.handle_timeout(now);
                    let (office, at, n) = self.repeat_timeouts;
                    let n = if (office, at) == (i, t) { n + 1 } else { 1 };
                    self.repeat_timeouts = (i, t, n);
                    let stalled = n >= STALL_LIMIT && core.poll_timeout().is_some_and(|d| d <= t);
                    self.flush(i);
                    if stalled {
                        if self.timer_stalls.len() < 64 {
                            self.timer_stalls.push((i, t));
                        }
                        self.crash(i);
                    }
                }
            }
            _ => {}
        }
    }

    fn do_job(&mut self, job: Job) {
        match job {
            Job::Frame {
                from,
                to,
                line,
                epoch,
                frame,
            } => {
                let l = &mut self.lines[line];
                if l.epoch != epoch || !l.up {
                    return;
                }
                if matches!(l.model, LineModel::Quic(_)) && !l.wanted {
                    l.held.push((from, to, frame));
                    return;
                }
                let peer = self.offices[from].name.clone();
                let now = self.now();
                if let Some(core) = self.offices[to].core.as_mut() {
                    core.handle_frame(now, &peer, frame);
                    self.flush(to);
                }
            }
            Job::Connect(l) => self.line_up(l, "sim"),
            Job::Reset(l, epoch) => {
                if self.lines[l].epoch == epoch && self.lines[l].up {
                    self.line_down(l, "connection lost");
                    self.line_up(l, "sim");
                }
            }
            Job::IdleTimeout(l, gen) => {
                let line = &self.lines[l];
                if !line.wanted && line.cut_gen == gen && line.up {
                    self.line_down(l, "idle timeout: the line is dead");
                }
            }
            Job::PeerTimeout(l, epoch) => {
                let line = &mut self.lines[l];
                if line.epoch == epoch {
                    if let Some(side) = line.stale_side.take() {
                        let peer = if side == line.a { line.b } else { line.a };
                        self.link_event(side, peer, false, "idle timeout: the peer went quiet");
                    }
                }
            }
        }
    }

    /// Moves the clock to `t` (never back) without handling what falls due:
    /// the driver acts first at `t`.
    pub fn advance_to(&mut self, t: u64) {
        self.now = self.now.max(t);
    }

    /// Runs the world for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs the world until virtual time `end`.
    pub fn run_until(&mut self, end: u64) {
        while let Some(t) = self.next_time() {
            if t > end {
                break;
            }
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Whether nothing is in flight and no office has unreceipted messages.
    pub fn quiet(&self) -> bool {
        !self.jobs.values().any(|j| matches!(j, Job::Frame { .. }))
            && self.offices.iter().all(|o| {
                o.core
                    .as_ref()
                    .is_some_and(|c| c.status().iter().all(|s| s.outbox_len == 0))
            })
    }

    /// Heals everything (faults off, every office up, every line up) and
    /// runs until quiet or `limit_ms` passes. Returns whether it became
    /// quiet.
    pub fn heal(&mut self, limit_ms: u64) -> bool {
        self.faults = Faults::clean(self.faults.latency_ms);
        for i in 0..self.offices.len() {
            self.offices[i].crash_on_flush = false;
            self.restart(i);
        }
        self.connect();
        let end = self.now + limit_ms;
        while self.now < end {
            self.run_for(100);
            if self.quiet() {
                return true;
            }
        }
        false
    }

    /// Draws from the world's RNG (for test schedules).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

/// The first lines where two fold digests differ, each labelled; `None`
/// when they are equal.
fn digest_diff(a_name: &str, a: &str, b_name: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let mut lines: Vec<String> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .take(4)
        .map(|(x, y)| format!("{a_name:<9}{x}\n{b_name:<9}{y}"))
        .collect();
    if lines.is_empty() {
        lines.push(format!(
            "{a_name} has {} lines, {b_name} {}",
            a.lines().count(),
            b.lines().count()
        ));
    }
    Some(lines.join("\n"))
}
