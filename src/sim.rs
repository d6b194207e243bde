//! A deterministic two-office network for the sans-IO core.
//!
//! Everything is driven by one seeded RNG and a virtual clock, so a failing
//! schedule replays exactly from its seed. The network can drop, duplicate
//! and delay (and so reorder) frames, cut and restore the line, and crash
//! either office, optionally in the middle of a log write (a torn write:
//! only a prefix of the batch reaches the disk, and none of the batch's
//! frames or events happen). A restart rebuilds the core from its disk, just
//! as the real node does from its log file.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::audit::Persisted;
use crate::core::{Core, CoreEvent, Draft, Now, OfficeKeys, PeerKeys, Timing};
use crate::identity::OfficeName;
use crate::wire::proto::Frame;
use crate::wire::MessageId;

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
    to: usize,
    epoch: u64,
    frame: Frame,
}

/// The simulated world: two offices and the line between them.
pub struct Sim {
    /// Virtual monotonic time in ms.
    pub now: u64,
    rng: StdRng,
    /// The two offices.
    pub offices: [SimOffice; 2],
    in_flight: Vec<InFlight>,
    order: u64,
    epoch: u64,
    line_wanted: bool,
    line_up: bool,
    /// Current faults.
    pub faults: Faults,
    timing: Timing,
}

/// Wall-clock time at virtual time zero.
pub const WALL_BASE: u64 = 1_750_000_000_000;

impl Sim {
    /// Two offices, "washington" (0) and "pyongyang" (1), with keys derived
    /// from `seed`, not yet connected.
    pub fn new(seed: u64, faults: Faults) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let names = ["washington", "pyongyang"].map(|n| OfficeName::new(n).expect("valid"));
        let keys: [SigningKey; 2] = [
            SigningKey::from_bytes(&rng.gen()),
            SigningKey::from_bytes(&rng.gen()),
        ];
        let log_keys: [SigningKey; 2] = [
            SigningKey::from_bytes(&rng.gen()),
            SigningKey::from_bytes(&rng.gen()),
        ];
        let timing = Timing {
            rto_ms: 500,
            rto_max_ms: 4_000,
            checkpoint_every: 64,
            checkpoint_interval_ms: 2_000,
        };
        let offices = [0, 1].map(|i| SimOffice {
            name: names[i].clone(),
            key: keys[i].clone(),
            log_key: log_keys[i].clone(),
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
        });
        let mut sim = Sim {
            now: 0,
            rng,
            offices,
            in_flight: Vec::new(),
            order: 0,
            epoch: 0,
            line_wanted: false,
            line_up: false,
            faults,
            timing,
        };
        sim.boot(0);
        sim.boot(1);
        sim
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.now,
            wall_ms: WALL_BASE + self.now,
        }
    }

    fn boot(&mut self, i: usize) {
        let other = 1 - i;
        let peer = PeerKeys {
            office: self.offices[other].name.clone(),
            message: self.offices[other].key.verifying_key(),
            log: self.offices[other].log_key.verifying_key(),
            seal: crate::wire::seal::derive_keypair(&self.offices[other].log_key.to_bytes()).1,
            relays: Vec::new(),
        };
        let o = &self.offices[i];
        let keys = OfficeKeys {
            message: o.key.clone(),
            log: o.log_key.clone(),
            seal: crate::wire::seal::derive_keypair(&o.log_key.to_bytes()).0,
        };
        let mut core = Core::new(o.name.clone(), keys, [peer], self.timing);
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

    /// Runs `f` on office `i`'s core while it is up, then applies the
    /// output under the durability rule (tests use it to act as an operator).
    pub fn with_core(&mut self, i: usize, f: impl FnOnce(&mut Core, Now)) {
        let now = self.now();
        if let Some(core) = self.offices[i].core.as_mut() {
            f(core, now);
            self.flush(i);
        }
    }

    /// Submits a draft at office `from` to the other office. Returns the id
    /// if the submission became durable.
    pub fn submit(&mut self, from: usize, mut draft: Draft) -> Option<MessageId> {
        let id = MessageId::new(WALL_BASE + self.now, self.rng.gen());
        draft.to = self.offices[1 - from].name.to_string();
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

    /// Brings the line up (now, and after every restart) until [`Sim::cut`].
    pub fn connect(&mut self) {
        self.line_wanted = true;
        self.try_line_up();
    }

    /// Cuts the line: both sides see it go down; frames in flight are lost.
    pub fn cut(&mut self) {
        self.line_wanted = false;
        self.line_down("cut");
    }

    fn try_line_up(&mut self) {
        if self.line_up || !self.line_wanted || self.offices.iter().any(|o| o.core.is_none()) {
            return;
        }
        self.line_up = true;
        self.epoch += 1;
        let now = self.now();
        for i in 0..2 {
            let peer = self.offices[1 - i].name.clone();
            self.offices[i]
                .core
                .as_mut()
                .expect("up")
                .link_up(now, &peer, "sim");
            self.flush(i);
        }
    }

    fn line_down(&mut self, why: &str) {
        if !self.line_up {
            return;
        }
        self.line_up = false;
        self.epoch += 1;
        let now = self.now();
        for i in 0..2 {
            let peer = self.offices[1 - i].name.clone();
            if let Some(core) = self.offices[i].core.as_mut() {
                core.link_down(now, &peer, why);
                self.flush(i);
            }
        }
    }

    /// Crashes office `i` now: its unsynced state is gone.
    pub fn crash(&mut self, i: usize) {
        if self.offices[i].core.is_some() {
            self.offices[i].crashes.push(self.now);
        }
        self.offices[i].core = None;
        self.line_down("peer crashed");
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
        self.try_line_up();
    }

    /// Injects a frame as if office `from` had sent it to the other one.
    pub fn inject(&mut self, from: usize, frame: Frame) {
        let to = 1 - from;
        let peer = self.offices[from].name.clone();
        let now = self.now();
        if let Some(core) = self.offices[to].core.as_mut() {
            core.handle_frame(now, &peer, frame);
            self.flush(to);
        }
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
            self.offices[i].frames_sent += 1;
            match t.frame.body {
                Some(crate::wire::proto::frame::Body::Message(_)) => {
                    self.offices[i].message_frames_sent += 1
                }
                Some(crate::wire::proto::frame::Body::LineCheck(_)) => {
                    self.offices[i].line_check_frames_sent += 1
                }
                _ => {}
            }
            if !self.line_up {
                continue;
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
                    to: 1 - i,
                    epoch: self.epoch,
                    frame: t.frame.clone(),
                });
            }
        }
        true
    }

    /// Runs the world for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next_frame = self.in_flight.iter().map(|f| (f.at, f.order)).min();
            let next_timer = (0..2)
                .filter_map(|i| {
                    self.offices[i]
                        .core
                        .as_ref()?
                        .poll_timeout()
                        .map(|t| (t, i))
                })
                .min();
            let t_frame = next_frame.map(|f| f.0).unwrap_or(u64::MAX);
            let t_timer = next_timer.map(|t| t.0).unwrap_or(u64::MAX);
            let t = t_frame.min(t_timer);
            if t > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(t);
            if t_frame <= t_timer {
                let key = next_frame.expect("some");
                let pos = self
                    .in_flight
                    .iter()
                    .position(|f| (f.at, f.order) == key)
                    .expect("present");
                let f = self.in_flight.swap_remove(pos);
                if f.epoch != self.epoch || !self.line_up {
                    continue;
                }
                let from = self.offices[1 - f.to].name.clone();
                let now = self.now();
                if let Some(core) = self.offices[f.to].core.as_mut() {
                    core.handle_frame(now, &from, f.frame);
                    self.flush(f.to);
                }
            } else {
                let i = next_timer.expect("some").1;
                let now = self.now();
                self.offices[i]
                    .core
                    .as_mut()
                    .expect("live")
                    .handle_timeout(now);
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

    /// Heals everything (faults off, both offices up, line up) and runs
    /// until quiet or `limit_ms` passes. Returns whether it became quiet.
    pub fn heal(&mut self, limit_ms: u64) -> bool {
        self.faults = Faults::clean(self.faults.latency_ms);
        for i in 0..2 {
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
