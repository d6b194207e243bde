//! A deterministic network of offices for the sans-IO core.
//!
//! One simulator for every schedule: N offices, one line per pair, a
//! virtual clock and one seeded RNG that also seeds each core's own
//! randomness, so a failing schedule replays exactly from its seed (in the
//! spirit of quinn-proto's test `Pair`). A line can drop, duplicate and delay
//! (and so reorder) frames, and can be cut and restored; an office can crash,
//! optionally in the middle of a log write (a torn write: only a prefix of
//! the batch reaches the disk, and none of the batch's frames or events
//! happen). A restart rebuilds the core from its disk, just as the real node
//! does from its log file. One office can act as a relay for the others.
//!
//! In hostile mode an office is Byzantine: its honest core keeps running
//! (so it also sends genuine traffic), a [`hostile::HostileOffice`] signs
//! whatever it likes with its real keys and floods its peers, and a share
//! of its genuine frames are withheld.

pub mod hostile;

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::audit::Persisted;
use crate::core::{Core, CoreEvent, Draft, Now, OfficeKeys, PeerKeys, Timing};
use crate::identity::OfficeName;
use crate::wire::proto::{frame::Body, Frame};
use crate::wire::MessageId;

use hostile::HostileOffice;

/// Network fault probabilities and delays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability a frame is lost.
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
    /// The core, `None` while crashed.
    pub core: Option<Core>,
    /// Durable log entries.
    pub disk: Vec<Persisted>,
    /// Ids whose submission became durable (the API would have returned).
    pub accepted: Vec<MessageId>,
    /// Delivered events seen, per id.
    pub delivered: BTreeMap<MessageId, u32>,
    /// Transmit count, for tests that watch the wire.
    pub frames_sent: u64,
    /// Of those, message frames.
    pub message_frames_sent: u64,
    /// Of those, line checks and their replies.
    pub line_check_frames_sent: u64,
    /// Events reported (after durability), in order.
    pub events: Vec<CoreEvent>,
    /// Virtual times at which this office crashed.
    pub crashes: Vec<u64>,
    crash_on_flush: bool,
}

struct InFlight {
    at: u64,
    order: u64,
    from: usize,
    to: usize,
    line: usize,
    epoch: u64,
    frame: Frame,
}

/// The line between two offices.
struct Line {
    a: usize,
    b: usize,
    /// Brought up whenever both ends run, until cut.
    wanted: bool,
    up: bool,
    /// Bumped whenever the line goes up or down: frames of an older
    /// connection are lost.
    epoch: u64,
}

/// A Byzantine office: its generators (one per target) and how much of its
/// honest traffic it withholds.
struct Byzantine {
    office: usize,
    targets: Vec<(usize, HostileOffice)>,
    withhold: f64,
}

/// Who the offices are.
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
    in_flight: Vec<InFlight>,
    order: u64,
    /// Current faults (every line).
    pub faults: Faults,
    timing: Timing,
    relay: Option<usize>,
    byzantine: Option<Byzantine>,
    tamper: Option<Tamper>,
}

/// Wall-clock time at virtual time zero.
pub const WALL_BASE: u64 = 1_750_000_000_000;

impl Sim {
    /// Two offices, "washington" (0) and "pyongyang" (1), with keys derived
    /// from `seed`, not yet connected.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self::network(seed, faults, Setup::offices(&["washington", "pyongyang"]))
    }

    /// The offices of `setup`, with keys derived from `seed`, not yet
    /// connected.
    pub fn network(seed: u64, faults: Faults, setup: Setup) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let offices: Vec<SimOffice> = setup
            .names
            .iter()
            .map(|n| SimOffice {
                name: OfficeName::new(n.clone()).expect("simulation office names are valid"),
                key: SigningKey::from_bytes(&rng.gen()),
                log_key: SigningKey::from_bytes(&rng.gen()),
                core: None,
                disk: Vec::new(),
                accepted: Vec::new(),
                delivered: BTreeMap::new(),
                frames_sent: 0,
                message_frames_sent: 0,
                line_check_frames_sent: 0,
                events: Vec::new(),
                crashes: Vec::new(),
                crash_on_flush: false,
            })
            .collect();
        let n = offices.len();
        let lines = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .map(|(a, b)| Line {
                a,
                b,
                wanted: false,
                up: false,
                epoch: 0,
            })
            .collect();
        let relay = setup
            .relay
            .as_ref()
            .and_then(|r| setup.names.iter().position(|n| n == r));
        let mut sim = Sim {
            now: 0,
            rng,
            offices,
            lines,
            in_flight: Vec::new(),
            order: 0,
            faults,
            timing: setup.timing,
            relay,
            byzantine: None,
            tamper: None,
        };
        for i in 0..n {
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

    fn seal_pair(&self, i: usize) -> ([u8; 32], [u8; 32]) {
        crate::wire::seal::derive_keypair(&self.offices[i].log_key.to_bytes())
    }

    fn boot(&mut self, i: usize) {
        let peers: Vec<PeerKeys> = (0..self.offices.len())
            .filter(|&j| j != i)
            .map(|j| PeerKeys {
                office: self.offices[j].name.clone(),
                message: self.offices[j].key.verifying_key(),
                log: self.offices[j].log_key.verifying_key(),
                seal: self.seal_pair(j).1,
                relays: match self.relay {
                    Some(r) if r != j && r != i => vec![self.offices[r].name.clone()],
                    _ => Vec::new(),
                },
            })
            .collect();
        let o = &self.offices[i];
        let keys = OfficeKeys {
            message: o.key.clone(),
            log: o.log_key.clone(),
            seal: self.seal_pair(i).0,
        };
        let mut core = Core::new(o.name.clone(), keys, peers, self.timing);
        core.set_relay_role(self.relay == Some(i));
        core.seed_randomness(self.rng.gen());
        for e in &o.disk {
            core.replay(&e.entry, &e.bytes).expect("sim log replays");
        }
        core.check_own_checkpoint()
            .expect("sim log matches its checkpoint");
        core.start(self.now(), "sim", None, &[]);
        self.offices[i].core = Some(core);
        self.flush(i);
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

    /// Office `i`'s seal (HPKE) public key.
    pub fn seal_public(&self, i: usize) -> [u8; 32] {
        self.seal_pair(i).1
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

    /// Brings every line up (now, and after every restart) until
    /// [`Sim::cut`].
    pub fn connect(&mut self) {
        for l in 0..self.lines.len() {
            self.lines[l].wanted = true;
            self.try_line_up(l);
        }
    }

    /// Cuts every line: both sides see it go down; frames in flight are
    /// lost.
    pub fn cut(&mut self) {
        for l in 0..self.lines.len() {
            self.lines[l].wanted = false;
            self.line_down(l, "cut");
        }
    }

    fn line_of(&self, i: usize, j: usize) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| (l.a, l.b) == (i.min(j), i.max(j)))
    }

    /// Cuts the line between `i` and `j` only.
    pub fn cut_line(&mut self, i: usize, j: usize) {
        if let Some(l) = self.line_of(i, j) {
            self.lines[l].wanted = false;
            self.line_down(l, "cut");
        }
    }

    /// Restores the line between `i` and `j`.
    pub fn restore_line(&mut self, i: usize, j: usize) {
        if let Some(l) = self.line_of(i, j) {
            self.lines[l].wanted = true;
            self.try_line_up(l);
        }
    }

    fn try_line_up(&mut self, l: usize) {
        let (a, b) = (self.lines[l].a, self.lines[l].b);
        let line = &self.lines[l];
        if line.up
            || !line.wanted
            || self.offices[a].core.is_none()
            || self.offices[b].core.is_none()
        {
            return;
        }
        self.lines[l].up = true;
        self.lines[l].epoch += 1;
        let now = self.now();
        for (me, peer) in [(a, b), (b, a)] {
            let peer = self.offices[peer].name.clone();
            if let Some(core) = self.offices[me].core.as_mut() {
                core.link_up(now, &peer, "sim");
            }
            self.flush(me);
        }
    }

    fn line_down(&mut self, l: usize, why: &str) {
        if !self.lines[l].up {
            return;
        }
        self.lines[l].up = false;
        self.lines[l].epoch += 1;
        let (a, b) = (self.lines[l].a, self.lines[l].b);
        let now = self.now();
        for (me, peer) in [(a, b), (b, a)] {
            let peer = self.offices[peer].name.clone();
            if let Some(core) = self.offices[me].core.as_mut() {
                core.link_down(now, &peer, why);
                self.flush(me);
            }
        }
    }

    /// Crashes office `i` now: its unsynced state is gone.
    pub fn crash(&mut self, i: usize) {
        if self.offices[i].core.is_some() {
            self.offices[i].crashes.push(self.now);
        }
        self.offices[i].core = None;
        for l in 0..self.lines.len() {
            if self.lines[l].a == i || self.lines[l].b == i {
                self.line_down(l, "peer crashed");
            }
        }
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
        for l in 0..self.lines.len() {
            self.try_line_up(l);
        }
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
                        self.seal_pair(t).1,
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
                self.put_on_line(byz.office, *t, f);
            }
        }
        self.byzantine = Some(byz);
    }

    /// The Byzantine office turns honest again: no more hostile frames, and
    /// its honest core's frames all go out.
    pub fn end_hostility(&mut self) {
        self.byzantine = None;
    }

    /// Sets a hook that may alter any frame on the wire.
    pub fn set_tamper(&mut self, f: Tamper) {
        self.tamper = Some(f);
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
        self.offices[i].disk.extend(out.persist);
        for ev in out.events {
            if let CoreEvent::Delivered { id, .. } = &ev {
                *self.offices[i].delivered.entry(*id).or_default() += 1;
            }
            self.offices[i].events.push(ev);
        }
        for t in out.transmit {
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
            self.put_on_line(i, to, t.frame);
        }
        true
    }

    /// Puts a frame from `from` to `to` on their line, under the faults.
    fn put_on_line(&mut self, from: usize, to: usize, mut frame: Frame) {
        let Some(line) = self.line_of(from, to) else {
            return;
        };
        if !self.lines[line].up {
            return;
        }
        if let Some(t) = self.tamper.as_mut() {
            t(from, to, &mut frame);
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.gen_bool(self.faults.drop) {
                continue;
            }
            let mut at = self.now + self.faults.latency_ms;
            if self.rng.gen_bool(self.faults.reorder) {
                at += self.rng.gen_range(0..=self.faults.reorder_ms);
            }
            self.order += 1;
            self.in_flight.push(InFlight {
                at,
                order: self.order,
                from,
                to,
                line,
                epoch: self.lines[line].epoch,
                frame: frame.clone(),
            });
        }
    }

    /// Runs the world for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next_frame = self
                .in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| (f.at, f.order))
                .map(|(pos, f)| (f.at, pos));
            let next_timer = (0..self.offices.len())
                .filter_map(|i| Some((self.offices[i].core.as_ref()?.poll_timeout()?, i)))
                .min();
            let t_frame = next_frame.map(|f| f.0).unwrap_or(u64::MAX);
            let t_timer = next_timer.map(|t| t.0).unwrap_or(u64::MAX);
            let t = t_frame.min(t_timer);
            if t > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(t);
            if let (Some((_, pos)), true) = (next_frame, t_frame <= t_timer) {
                let f = self.in_flight.swap_remove(pos);
                let line = &self.lines[f.line];
                if f.epoch != line.epoch || !line.up {
                    continue;
                }
                let from = self.offices[f.from].name.clone();
                let now = self.now();
                if let Some(core) = self.offices[f.to].core.as_mut() {
                    core.handle_frame(now, &from, f.frame);
                    self.flush(f.to);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now();
                if let Some(core) = self.offices[i].core.as_mut() {
                    core.handle_timeout(now);
                }
                self.flush(i);
            }
        }
    }

    /// Whether nothing is in flight and no office has unreceipted messages.
    pub fn quiet(&self) -> bool {
        self.in_flight.is_empty()
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
