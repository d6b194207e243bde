//! The scenario file: who takes part, the lines between them and their
//! faults, a timed script, and what must hold. Every field is documented in
//! `docs/drills.md`. Parsing is strict: an unknown field, a bad value or a
//! reference to an office that does not exist is an error naming the line
//! (for syntax and types) or the field path (for references).

use serde::Deserialize;

use super::duration::Millis;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, e.g. `kaesong-2020`.
    pub name: String,
    /// What it re-enacts and why.
    #[serde(default)]
    pub description: String,
    /// Seed for every random choice (faults, ids in simulation).
    #[serde(default)]
    pub seed: u64,
    /// Multiplies every deadline and interval in the offices' escalation
    /// policy and every time in the script (0.01: a minute takes 0.6 s).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// How long the drill runs (drill time); by default until two minutes
    /// after the last scheduled thing.
    #[serde(default)]
    pub duration: Option<Millis>,
    /// Offices.
    #[serde(rename = "office", default)]
    pub offices: Vec<Party>,
    /// Relays (protecting powers).
    #[serde(rename = "relay", default)]
    pub relays: Vec<Party>,
    /// Lines between parties.
    #[serde(rename = "link", default)]
    pub links: Vec<Link>,
    /// Node events: crash, restart, stop acknowledging.
    #[serde(rename = "event", default)]
    pub events: Vec<NodeEvent>,
    /// What the operators do, and when.
    #[serde(rename = "script", default)]
    pub script: Vec<Step>,
    /// What must hold.
    #[serde(rename = "expect", default)]
    pub expect: Vec<Expectation>,
}

fn one() -> f64 {
    1.0
}

/// An office or relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// Its name (a valid office name).
    pub name: String,
    /// For offices: relays that may carry to each peer (all peers).
    #[serde(default)]
    pub relays: Vec<String>,
    /// For offices: the duty officer acknowledges every received message
    /// this long (drill time) after it arrives. Absent: only scripted acks.
    #[serde(default)]
    pub ack_after: Option<Millis>,
}

/// A line and its faults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two parties it joins.
    pub between: [String; 2],
    /// Probability a packet is lost, 0..1.
    #[serde(default)]
    pub loss: f64,
    /// One-way delay.
    #[serde(default)]
    pub delay: Millis,
    /// Random extra delay up to this much.
    #[serde(default)]
    pub jitter: Millis,
    /// Probability a packet is duplicated, 0..1.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability a packet is held back (reordered), 0..1.
    #[serde(default)]
    pub reorder: f64,
    /// Bandwidth cap in kilobits per second (0: none).
    #[serde(default)]
    pub bandwidth_kbps: u64,
    /// The line does not exist at all (a partition from the start).
    #[serde(default)]
    pub down: bool,
    /// Scheduled cuts and restorations.
    #[serde(default)]
    pub schedule: Vec<LinkChange>,
}

/// A scheduled change to a line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    /// When, from the start.
    pub at: Millis,
    /// `cut` or `restore`.
    pub action: LinkAction,
}

/// What happens to a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkAction {
    /// The line goes dead.
    Cut,
    /// The line comes back.
    Restore,
}

/// Something that happens to a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEvent {
    /// When.
    pub at: Millis,
    /// Which office or relay.
    pub office: String,
    /// What.
    pub action: NodeAction,
}

/// What happens to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAction {
    /// Killed without warning.
    Crash,
    /// Started again.
    Restart,
    /// Its people stop acknowledging (its machines still answer).
    StopAcknowledging,
    /// Its people acknowledge again.
    ResumeAcknowledging,
}

/// One scripted action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When.
    pub at: Millis,
    /// The acting office.
    pub from: String,
    /// A name later steps and expectations use for this message.
    #[serde(default)]
    pub label: String,
    /// Send a message.
    #[serde(default)]
    pub send: Option<Send>,
    /// Acknowledge the message with this label.
    #[serde(default)]
    pub ack: Option<String>,
    /// Set the alert level towards `to`: normal, elevated, crisis.
    #[serde(default)]
    pub alert_level: Option<String>,
    /// The peer office (for send and alert_level).
    #[serde(default)]
    pub to: String,
}

/// A message to send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// flash, immediate, priority, routine.
    #[serde(default = "routine")]
    pub precedence: String,
    /// notification, inquiry, response, proposal, call-request, statement.
    #[serde(default = "notification")]
    pub kind: String,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Body.
    pub body: String,
    /// Thread.
    #[serde(default)]
    pub thread: String,
    /// Label of the message this replies to.
    #[serde(default)]
    pub reply_to: String,
    /// will-comply, cannot-comply, have-complied, information.
    #[serde(default)]
    pub response: Option<String>,
    /// Send it through this relay at once.
    #[serde(default)]
    pub via: Option<String>,
}

fn routine() -> String {
    "routine".into()
}
fn notification() -> String {
    "notification".into()
}

/// Something that must hold at the end of the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The message (label) this is about, for delivered / acknowledged /
    /// route / escalation.
    #[serde(default)]
    pub message: String,
    /// delivered, acknowledged, not-acknowledged, escalation, no-escalation,
    /// link-state, route, nothing-lost, logs-verify.
    pub what: ExpectKind,
    /// Within this long of being sent (delivered, acknowledged).
    #[serde(default)]
    pub within: Option<Millis>,
    /// For escalation: the action (retransmit, reroute, alert, raise-alert-level).
    #[serde(default)]
    pub action: String,
    /// For link-state: the office that observes it.
    #[serde(default)]
    pub office: String,
    /// For link-state: the peer; for route: the relay.
    #[serde(default)]
    pub peer: String,
    /// For link-state: up, degraded, silent.
    #[serde(default)]
    pub state: String,
}

/// What an expectation checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectKind {
    /// The message's signed receipt was held (within `within`).
    Delivered,
    /// It was acknowledged (within `within`).
    Acknowledged,
    /// It was never acknowledged.
    NotAcknowledged,
    /// An escalation step with `action` fired for it.
    Escalation,
    /// No escalation step fired for it.
    NoEscalation,
    /// `office` saw its line to `peer` reach `state`.
    LinkState,
    /// It arrived through relay `peer`.
    Route,
    /// Every accepted message was delivered exactly once.
    NothingLost,
    /// Every office's log verifies and each pair cross-checks.
    LogsVerify,
}

/// Why a scenario cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML, a wrong type, or an unknown field: the parser's
    /// message names the line, column and key.
    #[error("{origin}: {message}")]
    Parse {
        /// File or name.
        origin: String,
        /// What and where.
        message: String,
    },
    /// Valid TOML whose content does not hold together.
    #[error("{origin}: {field}: {why}")]
    Invalid {
        /// File or name.
        origin: String,
        /// The field path, e.g. `script[2].to`.
        field: String,
        /// What is wrong.
        why: String,
    },
}

impl Scenario {
    /// Parses and checks a scenario; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        s.validate()
            .map_err(|(field, why)| ScenarioError::Invalid {
                origin: origin.to_string(),
                field,
                why,
            })?;
        Ok(s)
    }

    /// Reads and checks a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Parse {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// When the drill ends (drill time, ms from the start).
    pub fn end_ms(&self) -> u64 {
        match self.duration {
            Some(d) => d.0,
            None => self.last_scheduled_ms() + 120_000,
        }
    }

    /// The time of the last script step, node event or line change.
    fn last_scheduled_ms(&self) -> u64 {
        self.script
            .iter()
            .map(|s| s.at.0)
            .chain(self.events.iter().map(|e| e.at.0))
            .chain(
                self.links
                    .iter()
                    .flat_map(|l| l.schedule.iter().map(|c| c.at.0)),
            )
            .max()
            .unwrap_or(0)
    }

    /// The party called `name` and whether it is a relay.
    pub fn party(&self, name: &str) -> Option<(&Party, bool)> {
        self.offices
            .iter()
            .find(|p| p.name == name)
            .map(|p| (p, false))
            .or_else(|| {
                self.relays
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| (p, true))
            })
    }

    /// The link between `a` and `b`, if the scenario has one.
    pub fn link(&self, a: &str, b: &str) -> Option<&Link> {
        self.links.iter().find(|l| {
            (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        use crate::identity::OfficeName;
        let bad = |f: String, w: String| Err((f, w));
        if !(self.time_scale > 0.0 && self.time_scale <= 1.0) {
            return bad(
                "time_scale".into(),
                format!("{} is not in (0, 1]", self.time_scale),
            );
        }
        if self.offices.len() < 2 {
            return bad("office".into(), "a drill needs at least two offices".into());
        }
        let mut names: Vec<&str> = Vec::new();
        for (kind, list) in [("office", &self.offices), ("relay", &self.relays)] {
            for (i, p) in list.iter().enumerate() {
                if OfficeName::new(p.name.clone()).is_err() {
                    return bad(
                        format!("{kind}[{i}].name"),
                        format!("{:?} is not a valid office name", p.name),
                    );
                }
                if names.contains(&p.name.as_str()) {
                    return bad(
                        format!("{kind}[{i}].name"),
                        format!("{:?} appears twice", p.name),
                    );
                }
                names.push(&p.name);
            }
        }
        let relay_names: Vec<&str> = self.relays.iter().map(|r| r.name.as_str()).collect();
        let office_names: Vec<&str> = self.offices.iter().map(|o| o.name.as_str()).collect();
        let known = |n: &str| names.contains(&n);
        for (i, o) in self.offices.iter().enumerate() {
            for (j, r) in o.relays.iter().enumerate() {
                if !relay_names.contains(&r.as_str()) {
                    return bad(
                        format!("office[{i}].relays[{j}]"),
                        format!("{r:?} is not a relay in this scenario"),
                    );
                }
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            for (j, n) in l.between.iter().enumerate() {
                if !known(n) {
                    return bad(
                        format!("link[{i}].between[{j}]"),
                        format!("{n:?} is not an office or relay here"),
                    );
                }
            }
            if l.between[0] == l.between[1] {
                return bad(
                    format!("link[{i}].between"),
                    "a line joins two different parties".into(),
                );
            }
            for (f, v) in [
                ("loss", l.loss),
                ("duplicate", l.duplicate),
                ("reorder", l.reorder),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return bad(
                        format!("link[{i}].{f}"),
                        format!("{v} is not a probability in [0, 1]"),
                    );
                }
            }
        }
        for (i, p) in self.relays.iter().enumerate() {
            if p.ack_after.is_some() || !p.relays.is_empty() {
                return bad(
                    format!("relay[{i}]"),
                    "a relay has no duty officer and no relays: drop ack_after and relays".into(),
                );
            }
        }
        for (i, e) in self.events.iter().enumerate() {
            if !known(&e.office) {
                return bad(
                    format!("event[{i}].office"),
                    format!("{:?} is not an office or relay here", e.office),
                );
            }
            let about_people = matches!(
                e.action,
                NodeAction::StopAcknowledging | NodeAction::ResumeAcknowledging
            );
            if about_people && !office_names.contains(&e.office.as_str()) {
                return bad(
                    format!("event[{i}].office"),
                    format!("{:?} is a relay: only offices acknowledge", e.office),
                );
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if self.links[..i].iter().any(|m| same_ends(m, l)) {
                return bad(
                    format!("link[{i}].between"),
                    "these two parties already have a line".into(),
                );
            }
        }
        if let Some(d) = self.duration {
            let last = self.last_scheduled_ms();
            if d.0 < last {
                return bad(
                    "duration".into(),
                    format!(
                        "ends at {} ms, before the last scheduled thing at {last} ms",
                        d.0
                    ),
                );
            }
        }
        let mut labels: Vec<&str> = Vec::new();
        for (i, s) in self.script.iter().enumerate() {
            if !office_names.contains(&s.from.as_str()) {
                return bad(
                    format!("script[{i}].from"),
                    format!("{:?} is not an office here", s.from),
                );
            }
            let actions = [s.send.is_some(), s.ack.is_some(), s.alert_level.is_some()];
            if actions.iter().filter(|a| **a).count() != 1 {
                return bad(
                    format!("script[{i}]"),
                    "give exactly one of send, ack, alert_level".into(),
                );
            }
            if (s.send.is_some() || s.alert_level.is_some())
                && !office_names.contains(&s.to.as_str())
            {
                return bad(
                    format!("script[{i}].to"),
                    format!("{:?} is not an office here", s.to),
                );
            }
            if let Some(send) = &s.send {
                if crate::control::api::parse_precedence(&send.precedence).is_none() {
                    return bad(
                        format!("script[{i}].send.precedence"),
                        format!(
                            "{:?} is not flash, immediate, priority or routine",
                            send.precedence
                        ),
                    );
                }
                if crate::control::api::parse_kind(&send.kind).is_none() {
                    return bad(
                        format!("script[{i}].send.kind"),
                        format!("{:?} is not a message kind", send.kind),
                    );
                }
                if !send.reply_to.is_empty() && !labels.contains(&send.reply_to.as_str()) {
                    return bad(
                        format!("script[{i}].send.reply_to"),
                        format!("no earlier step is labelled {:?}", send.reply_to),
                    );
                }
                if let Some(v) = &send.via {
                    if !relay_names.contains(&v.as_str()) {
                        return bad(
                            format!("script[{i}].send.via"),
                            format!("{v:?} is not a relay here"),
                        );
                    }
                }
            }
            if let Some(a) = &s.ack {
                if !labels.contains(&a.as_str()) {
                    return bad(
                        format!("script[{i}].ack"),
                        format!("no earlier step is labelled {a:?}"),
                    );
                }
            }
            if let Some(l) = &s.alert_level {
                if crate::control::api::parse_alert_level(l).is_none() {
                    return bad(
                        format!("script[{i}].alert_level"),
                        format!("{l:?} is not normal, elevated or crisis"),
                    );
                }
            }
            if !s.label.is_empty() {
                if labels.contains(&s.label.as_str()) {
                    return bad(
                        format!("script[{i}].label"),
                        format!("{:?} is used twice", s.label),
                    );
                }
                labels.push(&s.label);
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            let needs_message = matches!(
                e.what,
                ExpectKind::Delivered
                    | ExpectKind::Acknowledged
                    | ExpectKind::NotAcknowledged
                    | ExpectKind::Escalation
                    | ExpectKind::NoEscalation
                    | ExpectKind::Route
            );
            if needs_message && !labels.contains(&e.message.as_str()) {
                return bad(
                    format!("expect[{i}].message"),
                    format!("no script step is labelled {:?}", e.message),
                );
            }
            match e.what {
                ExpectKind::Escalation
                    if !["retransmit", "reroute", "alert", "raise-alert-level"]
                        .contains(&e.action.as_str()) =>
                {
                    return bad(
                        format!("expect[{i}].action"),
                        format!("{:?} is not an escalation action", e.action),
                    );
                }
                ExpectKind::LinkState => {
                    if !known(&e.office) || !known(&e.peer) {
                        return bad(
                            format!("expect[{i}]"),
                            "link-state needs office and peer from this scenario".into(),
                        );
                    }
                    if !["up", "degraded", "silent"].contains(&e.state.as_str()) {
                        return bad(
                            format!("expect[{i}].state"),
                            format!("{:?} is not up, degraded or silent", e.state),
                        );
                    }
                }
                ExpectKind::Route if !relay_names.contains(&e.peer.as_str()) => {
                    return bad(
                        format!("expect[{i}].peer"),
                        format!("{:?} is not a relay here", e.peer),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn same_ends(a: &Link, b: &Link) -> bool {
    let mut x = a.between.clone();
    let mut y = b.between.clone();
    x.sort();
    y.sort();
    x == y
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "kaesong-2020"
description = "Line checks answered, then the peer falls silent."
seed = 2020
time_scale = 0.01

[[office]]
name = "seoul"
[[office]]
name = "pyongyang"

[[link]]
between = ["seoul", "pyongyang"]
delay = "40ms"
schedule = [{ at = "10m", action = "cut" }, { at = "40m", action = "restore" }]

[[event]]
at = "5m"
office = "pyongyang"
action = "stop-acknowledging"

[[script]]
at = "1m"
from = "seoul"
to = "pyongyang"
label = "call"
send = { precedence = "immediate", kind = "call-request", body = "09:00 call." }

[[expect]]
what = "delivered"
message = "call"
within = "30s"

[[expect]]
what = "link-state"
office = "seoul"
peer = "pyongyang"
state = "silent"
"#;

    fn err(text: &str) -> String {
        Scenario::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/drills.md");
        let start = doc.find("```toml\nname =").expect("example") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed");
        Scenario::parse(&doc[start..end], "docs/drills.md").unwrap();
    }

    #[test]
    fn a_good_scenario_parses() {
        let s = Scenario::parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.offices.len(), 2);
        assert_eq!(s.links[0].delay, Millis(40));
        assert_eq!(s.links[0].schedule[1].at, Millis(2_400_000));
        assert_eq!(s.script[0].send.as_ref().unwrap().kind, "call-request");
    }

    #[test]
    fn each_class_of_mistake_names_its_line_or_field() {
        // Syntax: the line.
        assert!(err("name = \"x\"\n[[office]\n").contains("line 2"));
        // Unknown field: the line and the key.
        let e = err(&GOOD.replace("seed = 2020", "seeed = 2020"));
        assert!(e.contains("line 4") && e.contains("seeed"), "{e}");
        // Wrong type.
        let e = err(&GOOD.replace("seed = 2020", "seed = \"many\""));
        assert!(e.contains("line 4") && e.contains("seed"), "{e}");
        // Bad duration.
        let e = err(&GOOD.replace("\"40ms\"", "\"40 parsecs\""));
        assert!(e.contains("delay") || e.contains("line"), "{e}");
        // Unknown enum value.
        let e = err(&GOOD.replace("stop-acknowledging", "sulk"));
        assert!(e.contains("sulk") && e.contains("line"), "{e}");
        // References.
        assert!(
            err(&GOOD.replace("to = \"pyongyang\"", "to = \"pyonyang\"")).contains("script[0].to")
        );
        assert!(err(&GOOD.replace(
            "between = [\"seoul\", \"pyongyang\"]",
            "between = [\"seoul\", \"seoul\"]"
        ))
        .contains("link[0].between"));
        assert!(
            err(&GOOD.replace("message = \"call\"", "message = \"nope\""))
                .contains("expect[0].message")
        );
        assert!(
            err(&GOOD.replace("state = \"silent\"", "state = \"asleep\""))
                .contains("expect[1].state")
        );
        assert!(err(&GOOD.replace("time_scale = 0.01", "time_scale = 0")).contains("time_scale"));
        assert!(
            err(&GOOD.replace("precedence = \"immediate\"", "precedence = \"urgent\""))
                .contains("script[0].send.precedence")
        );
        let one_office = GOOD.replace("[[office]]\nname = \"pyongyang\"", "");
        assert!(err(&one_office).contains("office"));
    }
}
