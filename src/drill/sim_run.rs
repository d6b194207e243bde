//! The deterministic runner: every party's sans-IO core on the one
//! simulator ([`crate::sim`]), its lines modelled as QUIC connections, a
//! virtual clock, one seeded RNG.
//!
//! The virtual clock runs at the drill's time scale (a virtual ms is a real
//! ms of a live run), so the cores see exactly the policy a live node
//! would. The simulator models each line as a QUIC connection: a lost
//! packet costs a retransmission delay rather than the frame, a cut line
//! holds frames until it returns or the idle timeout closes the connection,
//! and a closed connection is re-dialled after the reconnect delay. This
//! runner adds what a drill does on top: the script, the scheduled faults,
//! the duty officers who acknowledge. At the end the logs are written into
//! each party's directory, so the report and every `hotline audit` command
//! read them exactly as they read a live run's.

use std::collections::BTreeMap;

use rand::Rng;

use crate::audit::LogWriter;
use crate::core::CoreEvent;
use crate::identity::OfficeName;
use crate::sim::{LineModel, LineSpec, OfficeSpec, QuicLine, Sim};
use crate::wire::proto::{Kind, Response};
use crate::wire::MessageId;

use super::record::Intervention;
use super::scenario::{LinkAction, NodeAction, Scenario};
use super::script::{self, Planned};
use super::setup::{drill_timing, PartyDir};
use super::DrillError;

/// Wall-clock time at virtual time zero (fixed, so reports are identical).
pub const WALL_BASE: u64 = crate::sim::WALL_BASE;

/// What a simulated run leaves besides the logs.
pub struct SimOutcome {
    /// Message id to script label.
    pub labels: BTreeMap<String, String>,
    /// What the runner did.
    pub interventions: Vec<Intervention>,
}

/// A party's duty officer.
struct Officer {
    acking: bool,
    ack_after: Option<u64>,
}

enum Job {
    Planned(Planned),
    AutoAck(usize, String),
}

struct World<'a> {
    s: &'a Scenario,
    scale: f64,
    sim: Sim,
    names: Vec<String>,
    officers: Vec<Officer>,
    /// Scenario link index to simulator line ends.
    links: Vec<(usize, usize)>,
    jobs: BTreeMap<(u64, u64), Job>,
    order: u64,
    /// Per office, how many of its events were looked at.
    seen: Vec<usize>,
    ids: BTreeMap<String, String>,
    out: SimOutcome,
}

/// Runs `s` on simulated cores; `parties` are the fresh directories.
pub fn run(s: &Scenario, parties: &[PartyDir], seed: u64) -> Result<SimOutcome, DrillError> {
    let virt = |drill_ms: u64| (drill_ms as f64 * s.time_scale).round() as u64;
    let mut sorted: Vec<&PartyDir> = parties.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = sorted.iter().map(|p| p.name.clone()).collect();
    let mut specs = Vec::new();
    let mut officers = Vec::new();
    for p in &sorted {
        let office = p.dir.load()?;
        let ack_after = s.party(&p.name).and_then(|(party, _)| party.ack_after);
        officers.push(Officer {
            acking: true,
            ack_after: ack_after.map(|d| d.0),
        });
        let fingerprints = office
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.card.fingerprint.clone()))
            .collect();
        let seal_public = office
            .card
            .seal_public()
            .map_err(|e| DrillError::Setup(e.to_string()))?;
        specs.push(OfficeSpec {
            name: office.config.office.clone(),
            key: office.message_key.clone(),
            log_key: office.log_key.clone(),
            seal_public,
            start_label: "hotline-drill-sim".into(),
            fingerprints,
            make: Box::new(move || crate::node::offline::new_core(&office)),
        });
    }
    let index = |n: &str| names.iter().position(|x| x == n);
    let t = drill_timing();
    let mut lines = Vec::new();
    let mut links = Vec::new();
    for l in &s.links {
        let (Some(a), Some(b)) = (index(&l.between[0]), index(&l.between[1])) else {
            return Err(DrillError::Setup(format!(
                "line {}–{} names a party that does not exist",
                l.between[0], l.between[1]
            )));
        };
        links.push((a, b));
        lines.push(LineSpec {
            a,
            b,
            cut: l.down,
            model: LineModel::Quic(QuicLine {
                delay_ms: virt(l.delay.0),
                jitter_ms: virt(l.jitter.0),
                loss: l.loss,
                duplicate: l.duplicate,
                reorder: l.reorder,
                bandwidth_kbps: l.bandwidth_kbps,
                idle_timeout_ms: t.idle_timeout_ms,
                reconnect_min_ms: t.reconnect_min_ms,
                reconnect_max_ms: t.reconnect_max_ms,
            }),
        });
    }
    let n = names.len();
    let mut w = World {
        s,
        scale: s.time_scale,
        sim: Sim::custom(seed, specs, lines),
        names,
        officers,
        links,
        jobs: BTreeMap::new(),
        order: 0,
        seen: vec![0; n],
        ids: BTreeMap::new(),
        out: SimOutcome {
            labels: BTreeMap::new(),
            interventions: Vec::new(),
        },
    };
    for i in 0..n {
        w.schedule_unanswered_acks(i);
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

    fn schedule(&mut self, at: u64, job: Job) {
        self.order += 1;
        self.jobs.insert((at, self.order), job);
    }

    fn note(&mut self, party: &str, what: String, failed: bool) {
        let at_ms = self.drill(self.sim.now);
        self.out.interventions.push(Intervention {
            at_ms,
            party: party.to_string(),
            what,
            failed,
        });
    }

    /// The drill's own jobs go first when they fall due with the network's.
    fn run_until(&mut self, end: u64) {
        loop {
            let tj = self.jobs.keys().next().map(|k| k.0);
            let ts = self.sim.next_time();
            let next = match (tj, ts) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            if tj == Some(next) {
                self.sim.advance_to(next);
                if let Some((&k, _)) = self.jobs.iter().next() {
                    if let Some(job) = self.jobs.remove(&k) {
                        self.do_job(job);
                    }
                }
            } else {
                self.sim.step();
            }
            self.look_at_events();
        }
        self.sim.advance_to(end);
    }

    /// What the offices reported since last time: a received message is
    /// for the duty officer to acknowledge.
    fn look_at_events(&mut self) {
        for i in 0..self.names.len() {
            let o = &self.sim.offices[i];
            let received: Vec<String> = o
                .events
                .get(self.seen[i]..)
                .unwrap_or_default()
                .iter()
                .filter_map(|ev| match ev {
                    // An acknowledgement is not itself acknowledged.
                    CoreEvent::Received { id, kind, .. } if *kind != Kind::Acknowledgement => {
                        Some(id.to_string())
                    }
                    _ => None,
                })
                .collect();
            self.seen[i] = o.events.len();
            for id in received {
                self.schedule_ack(i, &id);
            }
        }
    }

    fn do_job(&mut self, job: Job) {
        match job {
            Job::Planned(p) => self.planned(p),
            Job::AutoAck(office, id) => self.auto_ack(office, &id),
        }
    }

    fn planned(&mut self, p: Planned) {
        match p {
            Planned::Line(link, action) => {
                let Some(&(i, j)) = self.links.get(link) else {
                    return;
                };
                let (a, b) = (self.names[i].clone(), self.names[j].clone());
                match action {
                    LinkAction::Cut => {
                        self.note(&a, format!("line {a}–{b} cut"), false);
                        self.sim.cut_line(i, j);
                    }
                    LinkAction::Restore => {
                        self.note(&a, format!("line {a}–{b} restored"), false);
                        self.sim.restore_line(i, j);
                    }
                }
            }
            Planned::Event(e) => {
                let ev = &self.s.events[e];
                let (who, action) = (ev.office.clone(), ev.action);
                let Some(i) = self.names.iter().position(|n| *n == who) else {
                    return;
                };
                match action {
                    NodeAction::Crash => {
                        if !self.sim.is_up(i) {
                            self.note(&who, format!("{who} is already down"), true);
                        } else {
                            self.note(&who, format!("{who} crashed"), false);
                            self.sim.crash(i);
                        }
                    }
                    NodeAction::Restart => {
                        if self.sim.is_up(i) {
                            self.note(&who, format!("{who} is running: restart skipped"), true);
                        } else {
                            self.note(&who, format!("{who} restarted"), false);
                            self.sim.restart(i);
                            self.look_at_events();
                            self.schedule_unanswered_acks(i);
                        }
                    }
                    NodeAction::StopAcknowledging => {
                        self.note(&who, format!("{who} stops acknowledging"), false);
                        self.officers[i].acking = false;
                    }
                    NodeAction::ResumeAcknowledging => {
                        self.note(&who, format!("{who} acknowledges again"), false);
                        self.officers[i].acking = true;
                        self.schedule_unanswered_acks(i);
                    }
                }
            }
            Planned::Script(i) => self.script_step(i),
        }
    }

    fn script_step(&mut self, k: usize) {
        let step = self.s.script[k].clone();
        let words = script::describe(&step);
        let Some(i) = self.names.iter().position(|n| *n == step.from) else {
            return;
        };
        if !self.sim.is_up(i) {
            self.note(
                &step.from,
                format!("{words}: not done, the office is down"),
                true,
            );
            return;
        }
        if let Some(req) = script::send_request(&step, &self.ids) {
            let wall = WALL_BASE + self.sim.now;
            let id = MessageId::new(wall, self.sim.rng().gen());
            let draft = req.to_draft().expect("validated with the scenario");
            let r = self.sim.with_core(i, |core, now| {
                let r = core.submit(now, id, draft);
                if let (Ok(seq), Some(via), Ok(peer)) =
                    (&r, &req.via, OfficeName::new(req.to.clone()))
                {
                    let via = OfficeName::new(via.clone()).ok();
                    core.send_via_relay(&peer, *seq, via.as_ref());
                }
                r
            });
            match r {
                Some(Ok(_)) => {
                    if !step.label.is_empty() {
                        self.ids.insert(step.label.clone(), id.to_string());
                        self.out.labels.insert(id.to_string(), step.label.clone());
                    }
                    self.note(&step.from, words, false);
                }
                Some(Err(e)) => self.note(&step.from, format!("{words}: refused: {e}"), true),
                None => self.note(
                    &step.from,
                    format!("{words}: not done, the office is down"),
                    true,
                ),
            }
        } else if let Some(label) = &step.ack {
            if !self.officers[i].acking {
                self.note(
                    &step.from,
                    format!("{words}: not done, {} is not acknowledging", step.from),
                    true,
                );
                return;
            }
            let target = self.ids.get(label).cloned().unwrap_or_default();
            match self.acknowledge(i, &target) {
                Ok(()) => self.note(&step.from, words, false),
                Err(e) => self.note(&step.from, format!("{words}: not done: {e}"), true),
            }
        } else if let Some(level) = &step.alert_level {
            let lv = crate::control::api::parse_alert_level(level).expect("validated");
            let peer = OfficeName::new(step.to.clone()).expect("validated");
            let r = self.sim.with_core(i, |core, now| {
                core.set_alert_level(now, &peer, lv, "drill script")
            });
            match r {
                Some(Ok(())) => self.note(&step.from, words, false),
                Some(Err(e)) => self.note(&step.from, format!("{words}: refused: {e}"), true),
                None => self.note(
                    &step.from,
                    format!("{words}: not done, the office is down"),
                    true,
                ),
            }
        }
    }

    fn acknowledge(&mut self, office: usize, id: &str) -> Result<(), String> {
        let msg = MessageId::parse(id).ok_or("the message was never sent")?;
        if !self.sim.is_up(office) {
            return Err("the office is down".into());
        }
        if self
            .sim
            .history(office)
            .find_received(&msg)
            .is_some_and(|(e, _)| e.acknowledged)
        {
            return Ok(());
        }
        let wall = WALL_BASE + self.sim.now;
        let ack_id = MessageId::new(wall, self.sim.rng().gen());
        let r = self
            .sim
            .acknowledge(office, ack_id, &msg, "acknowledged", Response::Unspecified)
            .ok_or("the office is down")?;
        r.map(|_| ()).map_err(|e| match e {
            crate::core::SubmitError::UnknownMessage(_) => "it has not arrived".to_string(),
            e => e.to_string(),
        })
    }

    fn schedule_ack(&mut self, office: usize, id: &str) {
        let o = &self.officers[office];
        let (Some(after), true) = (o.ack_after, o.acking) else {
            return;
        };
        let at = self.sim.now + self.virt(after);
        self.schedule(at, Job::AutoAck(office, id.to_string()));
    }

    fn schedule_unanswered_acks(&mut self, office: usize) {
        if !self.sim.is_up(office) {
            return;
        }
        let pending: Vec<String> = self
            .sim
            .history(office)
            .inbox()
            .into_iter()
            .filter(|i| {
                !i.acknowledged && i.kind != crate::control::api::kind_name(Kind::Acknowledgement)
            })
            .map(|i| i.id)
            .collect();
        for id in pending {
            self.schedule_ack(office, &id);
        }
    }

    fn auto_ack(&mut self, office: usize, id: &str) {
        if !self.officers[office].acking || !self.sim.is_up(office) {
            return;
        }
        if self.acknowledge(office, id).is_ok() {
            let label = self
                .out
                .labels
                .get(id)
                .cloned()
                .unwrap_or(id[..8].to_string());
            let name = self.names[office].clone();
            self.note(
                &name,
                format!("{name}'s duty officer acknowledges {label}"),
                false,
            );
        }
    }

    fn finish(&mut self, parties: &[PartyDir]) -> Result<(), DrillError> {
        for i in 0..self.names.len() {
            self.sim
                .with_core(i, |core, now| core.stop(now, "drill over"));
        }
        for p in parties {
            let Some(i) = self.names.iter().position(|n| *n == p.name) else {
                continue;
            };
            let (mut w, _) = LogWriter::open(&p.dir.log(), |_| {})?;
            w.append_durable(&self.sim.offices[i].disk)?;
        }
        Ok(())
    }
}
