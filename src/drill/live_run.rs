//! The live runner: every party a real `hotline node run` process with its
//! own directory, every line a pair of fault-injecting UDP proxies on
//! loopback, the script played through each node's control API on the
//! real clock (scaled), crashes by SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::api::{AckRequest, AlertLevelRequest};
use crate::control::ControlClient;
use crate::identity::OfficeDir;

use super::duration::format as t;
use super::proxy::{Faults, Line, Proxy};
use super::record::Intervention;
use super::scenario::{LinkAction, NodeAction, Scenario};
use super::script::{self, Planned};
use super::setup::{self, PartyDir};
use super::DrillError;

/// What a live run leaves besides the logs.
pub struct LiveOutcome {
    /// The parties' directories.
    pub parties: Vec<PartyDir>,
    /// Message id to script label.
    pub labels: BTreeMap<String, String>,
    /// What the runner did.
    pub interventions: Vec<Intervention>,
    /// Wall clock at drill time zero, Unix ms.
    pub t0_wall_ms: u64,
    /// Real seconds taken.
    pub wall_seconds: f64,
}

struct Node {
    dir: OfficeDir,
    child: Option<Child>,
    client: Option<ControlClient>,
    ack_after: Option<u64>,
    acking: bool,
}

struct Live<'a> {
    s: &'a Scenario,
    exe: PathBuf,
    scale: f64,
    start: Instant,
    t0_wall_ms: u64,
    progress: bool,
    nodes: BTreeMap<String, Node>,
    lines: Vec<Line>,
    /// (dialler, target) -> proxy.
    proxies: BTreeMap<(String, String), Proxy>,
    ids: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// Received ids an auto-acknowledgement is planned or done for, per office.
    seen: BTreeMap<String, BTreeSet<String>>,
    acks_due: Vec<(Instant, String, String)>,
    notes: Vec<Intervention>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `s` live into `out` (already created).
pub fn run(
    s: &Scenario,
    out: &Path,
    exe: &Path,
    speed: f64,
    seed: u64,
    progress: bool,
) -> Result<LiveOutcome, DrillError> {
    let scale = s.time_scale / speed;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| DrillError::Node(format!("tokio runtime: {e}")))?;
    let real = |drill_ms: u64| Duration::from_micros((drill_ms as f64 * scale * 1000.0) as u64);
    // Lines and their proxies first: the parties' configs dial the proxies.
    let mut lines = Vec::new();
    let mut proxies = BTreeMap::new();
    for (i, l) in s.links.iter().enumerate() {
        let faults = Faults {
            loss: l.loss,
            delay: real(l.delay.0),
            jitter: real(l.jitter.0),
            duplicate: l.duplicate,
            reorder: l.reorder,
            bandwidth_kbps: l.bandwidth_kbps,
        };
        let line = Line::new(
            faults,
            seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            l.down,
        );
        for (a, b) in [
            (&l.between[0], &l.between[1]),
            (&l.between[1], &l.between[0]),
        ] {
            let p = rt
                .block_on(Proxy::bind(line.clone()))
                .map_err(|e| DrillError::Node(format!("proxy for {a}–{b}: {e}")))?;
            proxies.insert((a.clone(), b.clone()), p);
        }
        lines.push(line);
    }
    let addr = |a: &str, b: &str| {
        proxies
            .get(&(a.to_string(), b.to_string()))
            .map(|p| p.addr.to_string())
            .unwrap_or_default()
    };
    let parties = setup::create(s, out, scale, addr)?;
    let _guard = rt.enter();
    let mut live = Live {
        s,
        exe: exe.to_path_buf(),
        scale,
        start: Instant::now(),
        t0_wall_ms: 0,
        progress,
        nodes: parties
            .iter()
            .map(|p| {
                let ack_after = s
                    .party(&p.name)
                    .and_then(|(party, _)| party.ack_after)
                    .map(|d| d.0);
                (
                    p.name.clone(),
                    Node {
                        dir: p.dir.clone(),
                        child: None,
                        client: None,
                        ack_after,
                        acking: true,
                    },
                )
            })
            .collect(),
        lines,
        proxies,
        ids: BTreeMap::new(),
        labels: BTreeMap::new(),
        seen: BTreeMap::new(),
        acks_due: Vec::new(),
        notes: Vec::new(),
    };
    let names: Vec<String> = live.nodes.keys().cloned().collect();
    let mut result = Ok(());
    for n in &names {
        if let Err(e) = live.start_node(n) {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        live.start = Instant::now();
        live.t0_wall_ms = wall_ms();
        if progress {
            eprintln!(
                "[{:>8}] {} parties running; drill time runs {:.0}× real time",
                t(0),
                names.len(),
                1.0 / scale
            );
        }
        live.play();
    }
    let wall_seconds = live.start.elapsed().as_secs_f64();
    live.stop_all();
    result?;
    Ok(LiveOutcome {
        parties,
        labels: live.labels,
        interventions: live.notes,
        t0_wall_ms: live.t0_wall_ms,
        wall_seconds,
    })
}

impl Live<'_> {
    fn at(&self, drill_ms: u64) -> Instant {
        self.start + Duration::from_micros((drill_ms as f64 * self.scale * 1000.0) as u64)
    }

    fn drill_now(&self) -> u64 {
        (self.start.elapsed().as_secs_f64() * 1000.0 / self.scale).round() as u64
    }

    fn note(&mut self, party: &str, what: String, failed: bool) {
        let at_ms = self.drill_now();
        if self.progress {
            eprintln!(
                "[{:>8}] {}{what}",
                t(at_ms),
                if failed { "NOT DONE: " } else { "" }
            );
        }
        self.notes.push(Intervention {
            at_ms,
            party: party.to_string(),
            what,
            failed,
        });
    }

    fn start_node(&mut self, name: &str) -> Result<(), DrillError> {
        let node = self.nodes.get_mut(name).expect("known");
        let dir = node.dir.clone();
        let _ = std::fs::remove_file(dir.control_addr());
        let _ = std::fs::remove_file(dir.quic_addr());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.root().join("node-output.log"))
            .map_err(|e| DrillError::Node(format!("{}: {e}", dir.root().display())))?;
        let child = Command::new(&self.exe)
            .args(["node", "run", "--dir"])
            .arg(dir.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| DrillError::Node(format!("starting {}: {e}", self.exe.display())))?;
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (client, quic) = loop {
            let ready = ControlClient::from_dir(&dir)
                .ok()
                .filter(|c| c.status().is_ok())
                .and_then(|c| {
                    let q = std::fs::read_to_string(dir.quic_addr()).ok()?;
                    Some((c, q.trim().parse::<SocketAddr>().ok()?))
                });
            if let Some(r) = ready {
                break r;
            }
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(DrillError::Node(format!(
                    "the node for {name} did not start (see {}/node-output.log)",
                    dir.root().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        node.client = Some(client);
        for ((_, target), p) in &self.proxies {
            if target == name {
                p.set_target(quic);
            }
        }
        Ok(())
    }

    fn play(&mut self) {
        let plan = script::timetable(self.s);
        let end = self.at(self.s.end_ms());
        let mut next = 0;
        let mut next_poll = Instant::now();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if next < plan.len() && self.at(plan[next].0) <= now {
                let p = plan[next].1;
                next += 1;
                self.planned(p);
                continue;
            }
            if let Some(pos) = self.acks_due.iter().position(|(at, ..)| *at <= now) {
                let (_, office, id) = self.acks_due.remove(pos);
                self.auto_ack(&office, &id);
                continue;
            }
            if now >= next_poll {
                self.poll_inboxes();
                next_poll = now + Duration::from_millis(25);
                continue;
            }
            let mut wake = end.min(next_poll);
            if next < plan.len() {
                wake = wake.min(self.at(plan[next].0));
            }
            for (at, ..) in &self.acks_due {
                wake = wake.min(*at);
            }
            std::thread::sleep(wake.saturating_duration_since(now));
        }
    }

    fn planned(&mut self, p: Planned) {
        match p {
            Planned::Line(i, action) => {
                let l = &self.s.links[i];
                let (a, b) = (l.between[0].clone(), l.between[1].clone());
                match action {
                    LinkAction::Cut => {
                        self.lines[i].set_cut(true);
                        self.note(&a, format!("line {a}–{b} cut"), false);
                    }
                    LinkAction::Restore => {
                        self.lines[i].set_cut(false);
                        self.note(&a, format!("line {a}–{b} restored"), false);
                    }
                }
            }
            Planned::Event(e) => {
                let ev = &self.s.events[e];
                let (who, action) = (ev.office.clone(), ev.action);
                match action {
                    NodeAction::Crash => {
                        let node = self.nodes.get_mut(&who).expect("known");
                        match node.child.take() {
                            Some(mut c) => {
                                let _ = c.kill();
                                let _ = c.wait();
                                node.client = None;
                                self.note(&who, format!("{who} crashed"), false);
                            }
                            None => self.note(&who, format!("{who} is already down"), true),
                        }
                    }
                    NodeAction::Restart => {
                        if self.nodes[&who].child.is_some() {
                            self.note(&who, format!("{who} is running: restart skipped"), true);
                        } else {
                            match self.start_node(&who) {
                                Ok(()) => {
                                    self.note(&who, format!("{who} restarted"), false);
                                    // Its inbox is read afresh: acknowledge what waits.
                                    self.seen.remove(&who);
                                }
                                Err(e) => self.note(&who, format!("{who} restart: {e}"), true),
                            }
                        }
                    }
                    NodeAction::StopAcknowledging => {
                        self.nodes.get_mut(&who).expect("known").acking = false;
                        self.note(&who, format!("{who} stops acknowledging"), false);
                    }
                    NodeAction::ResumeAcknowledging => {
                        self.nodes.get_mut(&who).expect("known").acking = true;
                        self.seen.remove(&who);
                        self.note(&who, format!("{who} acknowledges again"), false);
                    }
                }
            }
            Planned::Script(i) => self.script_step(i),
        }
    }

    fn script_step(&mut self, i: usize) {
        let step = self.s.script[i].clone();
        let words = script::describe(&step);
        let Some(client) = self.nodes[&step.from].client.as_ref() else {
            self.note(
                &step.from,
                format!("{words}: not done, the office is down"),
                true,
            );
            return;
        };
        if let Some(req) = script::send_request(&step, &self.ids) {
            match client.send(&req) {
                Ok(r) => {
                    if !step.label.is_empty() {
                        self.ids.insert(step.label.clone(), r.id.clone());
                        self.labels.insert(r.id.clone(), step.label.clone());
                    }
                    self.note(&step.from, words, false);
                }
                Err(e) => self.note(&step.from, format!("{words}: refused: {e}"), true),
            }
        } else if let Some(label) = &step.ack {
            if !self.nodes[&step.from].acking {
                let who = step.from.clone();
                self.note(
                    &who,
                    format!("{words}: not done, {who} is not acknowledging"),
                    true,
                );
                return;
            }
            let id = self.ids.get(label).cloned().unwrap_or_default();
            let r = client.ack(&AckRequest {
                id: id.clone(),
                note: "acknowledged".into(),
                response: None,
            });
            self.seen.entry(step.from.clone()).or_default().insert(id);
            match r {
                Ok(_) => self.note(&step.from, words, false),
                Err(e) => self.note(&step.from, format!("{words}: not done: {e}"), true),
            }
        } else if let Some(level) = &step.alert_level {
            let r = client.alert_level(&AlertLevelRequest {
                peer: step.to.clone(),
                level: level.clone(),
                reason: "drill script".into(),
            });
            match r {
                Ok(_) => self.note(&step.from, words, false),
                Err(e) => self.note(&step.from, format!("{words}: refused: {e}"), true),
            }
        }
    }

    /// The duty officers: new messages in an acknowledging office's inbox
    /// are acknowledged `ack_after` later.
    fn poll_inboxes(&mut self) {
        let now = Instant::now();
        for (name, node) in &self.nodes {
            let (Some(after), true, Some(client)) = (node.ack_after, node.acking, &node.client)
            else {
                continue;
            };
            let Ok(inbox) = client.inbox() else { continue };
            let seen = self.seen.entry(name.clone()).or_default();
            for m in inbox {
                if m.kind == "acknowledgement" || m.acknowledged || !seen.insert(m.id.clone()) {
                    continue;
                }
                let due = now + Duration::from_micros((after as f64 * self.scale * 1000.0) as u64);
                self.acks_due.push((due, name.clone(), m.id));
            }
        }
    }

    fn auto_ack(&mut self, office: &str, id: &str) {
        let node = &self.nodes[office];
        let (true, Some(client)) = (node.acking, &node.client) else {
            // Not now; looked at again after a restart or resume.
            if let Some(seen) = self.seen.get_mut(office) {
                seen.remove(id);
            }
            return;
        };
        if client
            .ack(&AckRequest {
                id: id.to_string(),
                note: "acknowledged".into(),
                response: None,
            })
            .is_ok()
        {
            let label = self
                .labels
                .get(id)
                .cloned()
                .unwrap_or(id[..id.len().min(8)].to_string());
            self.note(
                office,
                format!("{office}'s duty officer acknowledges {label}"),
                false,
            );
        }
    }

    fn stop_all(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(c) = &node.client {
                let _ = c.shutdown();
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
            node.client = None;
        }
    }
}
