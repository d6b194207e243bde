//! The drill report: one structure, written as report.json (for scripts
//! and `drill replay`), report.md (for people and tickets) and report.html
//! (with the timeline picture; see `html.rs`).
//!
//! A simulated run's report holds nothing that depends on the machine or
//! the moment (no paths, no wall-clock times, no hashes over fresh keys),
//! so the same scenario and seed give the same bytes.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::duration::format as t;
use super::expect::{Check, LogCheck, PairCheck};
use super::record::{Intervention, Record};

/// The format tag of report.json.
pub const FORMAT: &str = "hotline-drill-report/1";

/// A party in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartyInfo {
    /// Name.
    pub name: String,
    /// office or relay.
    pub role: String,
}

/// Facts only a live run has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveInfo {
    /// Wall-clock start, Unix ms.
    pub started_unix_ms: u64,
    /// Real seconds the run took.
    pub wall_seconds: f64,
}

/// Everything about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// `sim` or `live`.
    pub mode: String,
    /// The seed used.
    pub seed: u64,
    /// The scenario's time scale.
    pub time_scale: f64,
    /// Extra speed-up of a live run (1 for simulation).
    pub speed: f64,
    /// Drill time covered.
    pub duration_ms: u64,
    /// Every expectation and invariant held.
    pub passed: bool,
    /// The scenario's expectations, in file order.
    pub expectations: Vec<Check>,
    /// Invariants every run keeps.
    pub invariants: Vec<Check>,
    /// Offices and relays.
    pub parties: Vec<PartyInfo>,
    /// `audit verify` per party.
    pub logs: Vec<LogCheck>,
    /// `audit cross-check` per pair of offices.
    pub pairs: Vec<PairCheck>,
    /// What the logs say happened.
    pub record: Record,
    /// What the runner did.
    pub interventions: Vec<Intervention>,
    /// Live runs only.
    pub live: Option<LiveInfo>,
}

impl Report {
    /// report.json's text.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }

    /// Reads report.json.
    pub fn from_json(text: &str) -> Result<Report, String> {
        let r: Report = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if r.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", r.format));
        }
        Ok(r)
    }

    /// Failed expectations and invariants.
    pub fn failures(&self) -> Vec<&Check> {
        self.expectations
            .iter()
            .chain(&self.invariants)
            .filter(|c| !c.held)
            .collect()
    }

    /// One line saying how it went.
    pub fn verdict(&self) -> String {
        let held = self.expectations.iter().filter(|c| c.held).count();
        let inv = self.invariants.iter().all(|c| c.held);
        format!(
            "{}: {} of {} expectations held{}",
            if self.passed { "PASSED" } else { "FAILED" },
            held,
            self.expectations.len(),
            if inv { "" } else { "; an invariant broke" }
        )
    }

    /// report.md's text.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Drill report: {}\n", self.scenario);
        if !self.description.is_empty() {
            let _ = writeln!(m, "{}\n", self.description.trim());
        }
        let _ = writeln!(m, "**{}**\n", self.verdict());
        let mode = match self.mode.as_str() {
            "sim" => format!("simulated, seed {}", self.seed),
            _ => format!(
                "live on loopback QUIC, seed {}, speed ×{}",
                self.seed, self.speed
            ),
        };
        let _ = writeln!(
            m,
            "- Mode: {mode}\n- Time scale: {} (drill time below)\n- Drill time covered: {}",
            self.time_scale,
            t(self.duration_ms)
        );
        if let Some(l) = &self.live {
            let _ = writeln!(m, "- Real time taken: {:.1} s", l.wall_seconds);
        }
        let _ = writeln!(
            m,
            "- Parties: {}\n",
            self.parties
                .iter()
                .map(|p| format!("{} ({})", p.name, p.role))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            m,
            "## Expectations\n\n| | expectation | evidence |\n|---|---|---|"
        );
        for c in self.expectations.iter().chain(&self.invariants) {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                if c.held { "held" } else { "**FAILED**" },
                cell(&c.what),
                cell(&c.why)
            );
        }
        let _ = writeln!(
            m,
            "\n## Messages\n\nAll drill traffic carries the exercise flag (EXERCISE).\n\n\
             | label | from → to | precedence | kind | subject | sent | received | receipt | acknowledged | route | escalations |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
        let opt = |v: Option<u64>| v.map(t).unwrap_or_else(|| "—".into());
        for msg in &self.record.messages {
            let _ = writeln!(
                m,
                "| {} | {} → {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                cell(&msg.label),
                msg.from,
                msg.to,
                msg.precedence.to_uppercase(),
                msg.kind,
                if msg.exercise { "EXERCISE " } else { "" },
                cell(&msg.subject),
                t(msg.sent_ms),
                opt(msg.received_ms),
                opt(msg.receipted_ms),
                opt(msg.acknowledged_ms),
                if msg.route.is_empty() {
                    "direct".to_string()
                } else {
                    format!("via {}", msg.route)
                },
                msg.escalations
                    .iter()
                    .map(|e| format!("{} {}", e.action, t(e.at_ms)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            m,
            "\n## Lines\n\n| time | office | peer | state |\n|---|---|---|---|"
        );
        for l in &self.record.links {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                t(l.at_ms),
                l.office,
                l.peer,
                l.state
            );
        }
        if !self.record.levels.is_empty() {
            let _ = writeln!(
                m,
                "\n## Alert levels\n\n| time | office | towards | level |\n|---|---|---|---|"
            );
            for l in &self.record.levels {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} |",
                    t(l.at_ms),
                    l.office,
                    l.peer,
                    l.level
                );
            }
        }
        if !self.record.relays.is_empty() {
            let _ = writeln!(
                m,
                "\n## Relay passages\n\n| time | relay | from → to | message | state |\n|---|---|---|---|---|"
            );
            for r in &self.record.relays {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} → {} | {} | {} |",
                    t(r.at_ms),
                    r.relay,
                    r.from,
                    r.to,
                    short(&r.message_id),
                    r.state
                );
            }
        }
        let _ = writeln!(
            m,
            "\n## What the runner did\n\n| time | party | what |\n|---|---|---|"
        );
        for i in &self.interventions {
            let _ = writeln!(
                m,
                "| {} | {} | {}{} |",
                t(i.at_ms),
                i.party,
                if i.failed { "**not done:** " } else { "" },
                cell(&i.what)
            );
        }
        let _ = writeln!(
            m,
            "\n## Logs\n\n| party | entries | verify |\n|---|---|---|"
        );
        for l in &self.logs {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                l.party,
                l.entries,
                if l.ok {
                    "ok".to_string()
                } else {
                    format!("**FAILED**: {}", cell(&l.problem))
                }
            );
        }
        for p in &self.pairs {
            let _ = writeln!(
                m,
                "\nCross-check {} / {}: {}",
                p.a,
                p.b,
                if p.ok {
                    "the logs agree".to_string()
                } else {
                    p.discrepancies.join("; ")
                }
            );
        }
        let _ = writeln!(
            m,
            "\nEvery party's directory is next to this report, so the audit commands work on it:\n\
             `hotline audit verify RUN_DIR/<party>`, `hotline audit cross-check RUN_DIR/<a> RUN_DIR/<b>`,\n\
             `hotline audit timeline RUN_DIR/<a> RUN_DIR/<b>`."
        );
        m
    }
}

/// The first 8 hex digits of an id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
