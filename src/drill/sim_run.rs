//! The deterministic runner: every party's sans-IO core on a simulated
//! network with a virtual clock, driven by one seeded RNG.
//!
//! The virtual clock runs at the drill's time scale (a virtual ms is a real
//! ms of a live run), so the cores see exactly the policy a live node
//! would. Lines are modelled as QUIC connections: a lost packet costs a
//! retransmission delay rather than the frame, a cut line holds frames
//! until it returns or the idle timeout closes the connection, and a closed
//! connection is re-dialled after the reconnect delay. At the end the logs
//! are written into each party's directory, so the report and every
//! `hotline audit` command read them exactly as they read a live run's.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::audit::{LogWriter, Persisted};
use crate::core::{Core, CoreEvent, Now};
use crate::identity::{Office, OfficeName};
use crate::wire::proto::{Frame, Kind, Response};
use crate::wire::MessageId;

use super::record::Intervention;
use super::scenario::{LinkAction, NodeAction, Scenario};
use super::script::{self, Planned};
use super::setup::{drill_timing, PartyDir};
use super::DrillError;

/// Wall-clock time at virtual time zero (fixed, so reports are identical).
pub const WALL_BASE: u64 = 1_780_000_000_000;

/// What a simulated run leaves besides the logs.
pub struct SimOutcome {
    /// Message id to script label.
    pub labels: BTreeMap<String, String>,
    /// What the runner did.
    pub interventions: Vec<Intervention>,
}

struct Node {
    office: Office,
    core: Option<Core>,
    disk: Vec<Persisted>,
    spool: BTreeMap<[u8; 32], Vec<u8>>,
    acking: bool,
    ack_after: Option<u64>,
}

struct Line {
    a: String,
    b: String,
    link: usize,
    cut: bool,
    connected: bool,
    /// Bumped whenever the connection is replaced: frames of an older
    /// connection are dropped.
    epoch: u64,
    /// Bumped at every cut, so a stale idle-timeout does nothing.
    cut_gen: u64,
    /// Frames that arrived at a cut line, held for when it returns.
    held: Vec<(String, Frame)>,
    /// The side (party name) that has not yet noticed its peer crashed.
    stale_side: Option<String>,
    /// When each direction's wire is free again (bandwidth cap).
    busy_until: [u64; 2],
}

enum Job {
    Frame {
        to: String,
        from: String,
        line: usize,
        epoch: u64,
        frame: Frame,
    },
    Planned(Planned),
    Connect(usize),
    IdleTimeout(usize, u64),
    PeerTimeout(usize, u64),
    AutoAck(String, String),
}

struct World<'a> {
    s: &'a Scenario,
    scale: f64,
    now: u64,
    rng: StdRng,
    nodes: BTreeMap<String, Node>,
    lines: Vec<Line>,
    jobs: BTreeMap<(u64, u64), Job>,
    order: u64,
    ids: BTreeMap<String, String>,
    out: SimOutcome,
}

/// Runs `s` on simulated cores; `parties` are the fresh directories.
pub fn run(s: &Scenario, parties: &[PartyDir], seed: u64) -> Result<SimOutcome, DrillError> {
    let mut nodes = BTreeMap::new();
    for p in parties {
        let office = p.dir.load()?;
        let ack_after = s.party(&p.name).and_then(|(party, _)| party.ack_after);
        nodes.insert(
            p.name.clone(),
            Node {
                office,
                core: None,
                disk: Vec::new(),
                spool: BTreeMap::new(),
                acking: true,
                ack_after: ack_after.map(|d| d.0),
            },
        );
    }
    let lines = s
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| Line {
            a: l.between[0].clone(),
            b: l.between[1].clone(),
            link: i,
            cut: l.down,
            connected: false,
            epoch: 0,
            cut_gen: 0,
            held: Vec::new(),
            stale_side: None,
            busy_until: [0; 2],
        })
        .collect();
    let mut w = World {
        s,
        scale: s.time_scale,
        now: 0,
        rng: StdRng::seed_from_u64(seed),
        nodes,
        lines,
        jobs: BTreeMap::new(),
        order: 0,
        ids: BTreeMap::new(),
        out: SimOutcome {
            labels: BTreeMap::new(),
            interventions: Vec::new(),
        },
    };
    let names: Vec<String> = w.nodes.keys().cloned().collect();
    for n in &names {
        w.boot(n);
    }
    for (at, p) in script::timetable(s) {
        let t = w.virt(at);
        w.schedule(t, Job::Planned(p));
    }
    let end = w.virt(s.end_ms());
    w.run_until(end);
    w.finish(parties)?;
    Ok(w.out)
}

impl World<'_> {
    fn virt(&self, drill_ms: u64) -> u64 {
        (drill_ms as f64 * self.scale).round() as u64
    }

    fn drill(&self, virt: u64) -> u64 {
        (virt as f64 / self.scale).round() as u64
    }

    fn clock(&self) -> Now {
        Now {
            mono_ms: self.now,
            wall_ms: WALL_BASE + self.now,
        }
    }

    fn schedule(&mut self, at: u64, job: Job) {
        self.order += 1;
        self.jobs.insert((at, self.order), job);
    }

    fn note(&mut self, party: &str, what: String, failed: bool) {
        let at_ms = self.drill(self.now);
        self.out.interventions.push(Intervention {
            at_ms,
            party: party.to_string(),
            what,
            failed,
        });
    }

    fn run_until(&mut self, end: u64) {
        loop {
            let next_job = self.jobs.keys().next().copied();
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|(n, node)| Some((node.core.as_ref()?.poll_timeout()?, n.clone())))
                .min();
            let tj = next_job.map(|k| k.0).unwrap_or(u64::MAX);
            let tt = next_timer.as_ref().map(|t| t.0).unwrap_or(u64::MAX);
            let t = tj.min(tt);
            if t > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(t);
            if tj <= tt {
                let job = self.jobs.remove(&next_job.expect("some")).expect("present");
                self.do_job(job);
            } else {
                let name = next_timer.expect("some").1;
                let now = self.clock();
                if let Some(core) = self.nodes.get_mut(&name).and_then(|n| n.core.as_mut()) {
                    core.handle_timeout(now);
                }
                self.flush(&name);
            }
        }
    }

    fn do_job(&mut self, job: Job) {
        match job {
            Job::Frame {
                to,
                from,
                line,
                epoch,
                frame,
            } => {
                let l = &mut self.lines[line];
                if l.epoch != epoch || !l.connected {
                    return;
                }
                if l.cut {
                    l.held.push((to, frame));
                    return;
                }
                self.deliver(&from, &to, frame);
            }
            Job::Planned(p) => self.planned(p),
            Job::Connect(i) => self.connect(i),
            Job::IdleTimeout(i, gen) => {
                let l = &self.lines[i];
                if l.cut && l.cut_gen == gen && l.connected {
                    self.disconnect(i, "idle timeout: the line is dead");
                }
            }
            Job::PeerTimeout(i, epoch) => {
                let l = &mut self.lines[i];
                if l.epoch == epoch {
                    if let Some(side) = l.stale_side.take() {
                        let peer = if side == l.a {
                            l.b.clone()
                        } else {
                            l.a.clone()
                        };
                        self.link_down(&side, &peer, "idle timeout: the peer went quiet");
                    }
                }
            }
            Job::AutoAck(office, id) => self.auto_ack(&office, &id),
        }
    }

    fn deliver(&mut self, from: &str, to: &str, frame: Frame) {
        let now = self.clock();
        let Ok(peer) = OfficeName::new(from.to_string()) else {
            return;
        };
        if let Some(core) = self.nodes.get_mut(to).and_then(|n| n.core.as_mut()) {
            core.handle_frame(now, &peer, frame);
            self.flush(to);
        }
    }

    fn viable(&self, i: usize) -> bool {
        let l = &self.lines[i];
        !l.cut
            && [&l.a, &l.b]
                .iter()
                .all(|n| self.nodes.get(*n).is_some_and(|n| n.core.is_some()))
    }

    fn handshake_delay(&mut self, i: usize) -> u64 {
        let link = &self.s.links[self.lines[i].link];
        self.virt(2 * link.delay.0) + self.rng.gen_range(0..=drill_timing().reconnect_min_ms * 2)
    }

    fn plan_connect(&mut self, i: usize, extra: u64) {
        let d = self.handshake_delay(i) + extra;
        self.schedule(self.now + d, Job::Connect(i));
    }

    fn connect(&mut self, i: usize) {
        if !self.viable(i) || self.lines[i].connected {
            return;
        }
        let (a, b) = (self.lines[i].a.clone(), self.lines[i].b.clone());
        if let Some(stale) = self.lines[i].stale_side.take() {
            let other = if stale == a { b.clone() } else { a.clone() };
            self.link_down(&stale, &other, "replaced by a new connection");
        }
        let l = &mut self.lines[i];
        l.connected = true;
        l.epoch += 1;
        l.held.clear();
        self.link_up(&a, &b);
        self.link_up(&b, &a);
    }

    fn disconnect(&mut self, i: usize, why: &str) {
        let l = &mut self.lines[i];
        l.connected = false;
        l.epoch += 1;
        l.held.clear();
        let (a, b) = (l.a.clone(), l.b.clone());
        self.link_down(&a, &b, why);
        self.link_down(&b, &a, why);
    }

    fn link_up(&mut self, me: &str, peer: &str) {
        let now = self.clock();
        let Ok(p) = OfficeName::new(peer.to_string()) else {
            return;
        };
        if let Some(core) = self.nodes.get_mut(me).and_then(|n| n.core.as_mut()) {
            core.link_up(now, &p, "drill line");
            self.flush(me);
        }
    }

    fn link_down(&mut self, me: &str, peer: &str, why: &str) {
        let now = self.clock();
        let Ok(p) = OfficeName::new(peer.to_string()) else {
            return;
        };
        if let Some(core) = self.nodes.get_mut(me).and_then(|n| n.core.as_mut()) {
            core.link_down(now, &p, why);
            self.flush(me);
        }
    }

    fn line_between(&self, a: &str, b: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    fn boot(&mut self, name: &str) {
        let now = self.clock();
        let node = self.nodes.get_mut(name).expect("known");
        let mut core = crate::node::offline::new_core(&node.office);
        for e in &node.disk {
            core.replay(&e.entry, &e.bytes)
                .expect("a drill log replays into its own core");
        }
        for hash in core.spool_needed() {
            if let Some(bytes) = node.spool.get(&hash) {
                core.restore_spooled(hash, bytes);
            }
        }
        let fingerprints: Vec<_> = node
            .office
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.card.fingerprint.clone()))
            .collect();
        core.start(now, "hotline-drill-sim", None, &fingerprints);
        node.core = Some(core);
        self.flush(name);
        for i in 0..self.lines.len() {
            let l = &self.lines[i];
            if (l.a == name || l.b == name) && !l.connected {
                self.plan_connect(i, 0);
            }
        }
        self.schedule_unanswered_acks(name);
    }

    fn flush(&mut self, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let out = core.take_output();
        node.disk.extend(out.persist);
        for (hash, bytes) in out.spool_write {
            node.spool.insert(hash, bytes);
        }
        for hash in out.spool_delete {
            node.spool.remove(&hash);
        }
        let mut received = Vec::new();
        for ev in out.events {
            if let CoreEvent::Received { id, .. } = ev {
                received.push(id.to_string());
            }
        }
        for id in received {
            self.maybe_schedule_ack(name, &id);
        }
        for t in out.transmit {
            self.send(name, t.peer.as_str(), t.frame);
        }
    }

    fn send(&mut self, from: &str, to: &str, frame: Frame) {
        let Some(i) = self.line_between(from, to) else {
            return;
        };
        let l = &mut self.lines[i];
        if !l.connected {
            return; // no connection: the core sends again after the next hello
        }
        if l.cut {
            // QUIC keeps unacknowledged data and sends it again once the
            // path works, as long as the connection lives.
            l.held.push((to.to_string(), frame));
            return;
        }
        let link = self.s.links[l.link].clone();
        let epoch = l.epoch;
        let dir = usize::from(l.a != from);
        let copies = if self.rng.gen_bool(link.duplicate) {
            2
        } else {
            1
        };
        let delay = self.virt(link.delay.0);
        let jitter = self.virt(link.jitter.0);
        let pto = 2 * delay + jitter + 50;
        for _ in 0..copies {
            let mut at = self.now;
            if link.bandwidth_kbps > 0 {
                let bits = 8 * (prost::Message::encoded_len(&frame) as u64 + 40);
                let start = at.max(self.lines[i].busy_until[dir]);
                let done = start + bits.div_ceil(link.bandwidth_kbps);
                self.lines[i].busy_until[dir] = done;
                at = done;
            }
            at += delay + self.rng.gen_range(0..=jitter);
            let mut tries = 0;
            while tries < 12 && self.rng.gen_bool(link.loss.min(0.95)) {
                at += pto << tries.min(4);
                tries += 1;
            }
            if self.rng.gen_bool(link.reorder) {
                at += self.rng.gen_range(0..=delay + jitter + 20);
            }
            self.schedule(
                at,
                Job::Frame {
                    to: to.to_string(),
                    from: from.to_string(),
                    line: i,
                    epoch,
                    frame: frame.clone(),
                },
            );
        }
    }

    fn planned(&mut self, p: Planned) {
        match p {
            Planned::Line(link, action) => {
                let Some(i) = self.lines.iter().position(|l| l.link == link) else {
                    return;
                };
                let (a, b) = (self.lines[i].a.clone(), self.lines[i].b.clone());
                match action {
                    LinkAction::Cut => {
                        self.note(&a, format!("line {a}–{b} cut"), false);
                        let l = &mut self.lines[i];
                        if l.cut {
                            return;
                        }
                        l.cut = true;
                        l.cut_gen += 1;
                        let gen = l.cut_gen;
                        let idle = drill_timing().idle_timeout_ms;
                        self.schedule(self.now + idle, Job::IdleTimeout(i, gen));
                    }
                    LinkAction::Restore => {
                        self.note(&a, format!("line {a}–{b} restored"), false);
                        let l = &mut self.lines[i];
                        if !l.cut {
                            return;
                        }
                        l.cut = false;
                        if l.connected {
                            let held = std::mem::take(&mut l.held);
                            let epoch = l.epoch;
                            let delay = self.virt(self.s.links[link].delay.0);
                            for (to, frame) in held {
                                let from = if to == a { b.clone() } else { a.clone() };
                                self.schedule(
                                    self.now + delay,
                                    Job::Frame {
                                        to,
                                        from,
                                        line: i,
                                        epoch,
                                        frame,
                                    },
                                );
                            }
                        } else {
                            let backoff = self.rng.gen_range(0..=drill_timing().reconnect_max_ms);
                            self.plan_connect(i, backoff);
                        }
                    }
                }
            }
            Planned::Event(e) => {
                let ev = &self.s.events[e];
                let (who, action) = (ev.office.clone(), ev.action);
                match action {
                    NodeAction::Crash => self.crash(&who),
                    NodeAction::Restart => {
                        if self.nodes[&who].core.is_some() {
                            self.note(&who, format!("{who} is running: restart skipped"), true);
                        } else {
                            self.note(&who, format!("{who} restarted"), false);
                            self.boot(&who);
                        }
                    }
                    NodeAction::StopAcknowledging => {
                        self.note(&who, format!("{who} stops acknowledging"), false);
                        self.nodes.get_mut(&who).expect("known").acking = false;
                    }
                    NodeAction::ResumeAcknowledging => {
                        self.note(&who, format!("{who} acknowledges again"), false);
                        self.nodes.get_mut(&who).expect("known").acking = true;
                        self.schedule_unanswered_acks(&who);
                    }
                }
            }
            Planned::Script(i) => self.script_step(i),
        }
    }

    fn crash(&mut self, who: &str) {
        if self.nodes[who].core.is_none() {
            self.note(who, format!("{who} is already down"), true);
            return;
        }
        self.note(who, format!("{who} crashed"), false);
        self.nodes.get_mut(who).expect("known").core = None;
        let idle = drill_timing().idle_timeout_ms;
        for i in 0..self.lines.len() {
            let l = &mut self.lines[i];
            if (l.a == who || l.b == who) && l.connected {
                l.connected = false;
                l.epoch += 1;
                l.held.clear();
                let other = if l.a == who { l.b.clone() } else { l.a.clone() };
                l.stale_side = Some(other);
                let epoch = l.epoch;
                self.schedule(self.now + idle, Job::PeerTimeout(i, epoch));
            }
        }
    }

    fn script_step(&mut self, i: usize) {
        let step = self.s.script[i].clone();
        let words = script::describe(&step);
        let now = self.clock();
        if self.nodes[&step.from].core.is_none() {
            self.note(
                &step.from,
                format!("{words}: not done, the office is down"),
                true,
            );
            return;
        }
        if let Some(req) = script::send_request(&step, &self.ids) {
            let id = MessageId::new(now.wall_ms, self.rng.gen());
            let draft = req.to_draft().expect("validated with the scenario");
            let core = self.core(&step.from);
            match core.submit(now, id, draft) {
                Ok(seq) => {
                    if let (Some(via), Ok(peer)) = (&req.via, OfficeName::new(req.to.clone())) {
                        let via = OfficeName::new(via.clone()).ok();
                        core.send_via_relay(&peer, seq, via.as_ref());
                    }
                    if !step.label.is_empty() {
                        self.ids.insert(step.label.clone(), id.to_string());
                        self.out.labels.insert(id.to_string(), step.label.clone());
                    }
                    self.note(&step.from, words, false);
                }
                Err(e) => self.note(&step.from, format!("{words}: refused: {e}"), true),
            }
            self.flush(&step.from);
        } else if let Some(label) = &step.ack {
            if !self.nodes[&step.from].acking {
                self.note(
                    &step.from,
                    format!("{words}: not done, {} is not acknowledging", step.from),
                    true,
                );
                return;
            }
            let target = self.ids.get(label).cloned().unwrap_or_default();
            match self.acknowledge(&step.from, &target) {
                Ok(()) => self.note(&step.from, words, false),
                Err(e) => self.note(&step.from, format!("{words}: not done: {e}"), true),
            }
        } else if let Some(level) = &step.alert_level {
            let lv = crate::control::api::parse_alert_level(level).expect("validated");
            let peer = OfficeName::new(step.to.clone()).expect("validated");
            let r = self
                .core(&step.from)
                .set_alert_level(now, &peer, lv, "drill script");
            self.flush(&step.from);
            match r {
                Ok(()) => self.note(&step.from, words, false),
                Err(e) => self.note(&step.from, format!("{words}: refused: {e}"), true),
            }
        }
    }

    fn core(&mut self, name: &str) -> &mut Core {
        self.nodes
            .get_mut(name)
            .and_then(|n| n.core.as_mut())
            .expect("checked running")
    }

    fn acknowledge(&mut self, office: &str, id: &str) -> Result<(), String> {
        let msg = MessageId::parse(id).ok_or("the message was never sent")?;
        let now = self.clock();
        let ack_id = MessageId::new(now.wall_ms, self.rng.gen());
        let core = self
            .nodes
            .get_mut(office)
            .and_then(|n| n.core.as_mut())
            .ok_or("the office is down")?;
        if core
            .inbox()
            .iter()
            .any(|i| i.message.id == id && i.acknowledged)
        {
            return Ok(());
        }
        let r = core.acknowledge(now, ack_id, &msg, "acknowledged", Response::Unspecified);
        self.flush(office);
        r.map(|_| ()).map_err(|e| match e {
            crate::core::SubmitError::UnknownMessage(_) => "it has not arrived".to_string(),
            e => e.to_string(),
        })
    }

    fn maybe_schedule_ack(&mut self, office: &str, id: &str) {
        let node = &self.nodes[office];
        let (Some(after), true) = (node.ack_after, node.acking) else {
            return;
        };
        let is_ack = node.core.as_ref().is_some_and(|c| {
            c.inbox()
                .iter()
                .any(|i| i.message.id == id && i.message.kind() == Kind::Acknowledgement)
        });
        if !is_ack {
            let at = self.now + self.virt(after);
            self.schedule(at, Job::AutoAck(office.to_string(), id.to_string()));
        }
    }

    fn schedule_unanswered_acks(&mut self, office: &str) {
        let pending: Vec<String> = self.nodes[office]
            .core
            .as_ref()
            .map(|c| {
                c.inbox()
                    .iter()
                    .filter(|i| !i.acknowledged && i.message.kind() != Kind::Acknowledgement)
                    .map(|i| i.message.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in pending {
            self.maybe_schedule_ack(office, &id);
        }
    }

    fn auto_ack(&mut self, office: &str, id: &str) {
        let node = &self.nodes[office];
        if !node.acking || node.core.is_none() {
            return;
        }
        if self.acknowledge(office, id).is_ok() {
            let label = self
                .out
                .labels
                .get(id)
                .cloned()
                .unwrap_or(id[..8].to_string());
            self.note(
                office,
                format!("{office}'s duty officer acknowledges {label}"),
                false,
            );
        }
    }

    fn finish(&mut self, parties: &[PartyDir]) -> Result<(), DrillError> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in &names {
            let now = self.clock();
            if let Some(core) = self.nodes.get_mut(n).and_then(|x| x.core.as_mut()) {
                core.stop(now, "drill over");
            }
            let node = self.nodes.get_mut(n).expect("known");
            if let Some(core) = node.core.as_mut() {
                node.disk.extend(core.take_output().persist);
            }
        }
        for p in parties {
            let node = &self.nodes[&p.name];
            let (mut w, _) = LogWriter::open(&p.dir.log(), |_| {})?;
            w.append_durable(&node.disk)?;
        }
        Ok(())
    }
}
