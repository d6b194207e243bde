//! Checking a scenario's expectations, and the invariants every run must
//! keep, against the record built from the logs.

use serde::{Deserialize, Serialize};

use super::duration::format as t;
use super::record::{MessageRecord, Record};
use super::scenario::{ExpectKind, Expectation, Scenario};
use super::setup::PartyDir;

/// One expectation or invariant and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was expected, in words.
    pub what: String,
    /// Whether it held.
    pub held: bool,
    /// The evidence either way.
    pub why: String,
}

/// `audit verify` on one party's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCheck {
    /// The party.
    pub party: String,
    /// Entries read.
    pub entries: u64,
    /// Whether it verified.
    pub ok: bool,
    /// The first problem, if any.
    pub problem: String,
}

/// `audit cross-check` between two offices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairCheck {
    /// One office.
    pub a: String,
    /// The other.
    pub b: String,
    /// Whether the logs agree.
    pub ok: bool,
    /// Where they disagree.
    pub discrepancies: Vec<String>,
}

/// Verifies every party's log and cross-checks every pair of offices.
pub fn verify_logs(parties: &[PartyDir]) -> (Vec<LogCheck>, Vec<PairCheck>) {
    let mut logs = Vec::new();
    for p in parties {
        let res = p
            .dir
            .load_public()
            .map_err(|e| e.to_string())
            .and_then(|(_, card, peers)| {
                crate::audit::verify::verify(&p.dir.log(), &card, &peers).map_err(|e| e.to_string())
            });
        logs.push(match res {
            Ok(v) => LogCheck {
                party: p.name.clone(),
                entries: v.entries,
                ok: v.ok(),
                problem: v
                    .failure
                    .map(|f| format!("entry {}: {}", f.index, f.what))
                    .unwrap_or_default(),
            },
            Err(e) => LogCheck {
                party: p.name.clone(),
                entries: 0,
                ok: false,
                problem: e,
            },
        });
    }
    let offices: Vec<&PartyDir> = parties.iter().filter(|p| !p.relay).collect();
    let mut pairs = Vec::new();
    for (i, a) in offices.iter().enumerate() {
        for b in &offices[i + 1..] {
            let c =
                crate::audit::compare::cross_check(&a.dir.log(), &a.name, &b.dir.log(), &b.name);
            pairs.push(match c {
                Ok(c) => PairCheck {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    ok: c.ok(),
                    discrepancies: c.discrepancies,
                },
                Err(e) => PairCheck {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    ok: false,
                    discrepancies: vec![e.to_string()],
                },
            });
        }
    }
    (logs, pairs)
}

fn find<'a>(r: &'a Record, label: &str) -> Option<&'a MessageRecord> {
    r.messages.iter().find(|m| m.label == label)
}

fn within(what: &str, m: &MessageRecord, at: Option<u64>, limit: Option<u64>) -> (bool, String) {
    match (at, limit) {
        (None, _) => (
            false,
            format!("no {what} by the end (sent at {})", t(m.sent_ms)),
        ),
        (Some(at), Some(l)) if at.saturating_sub(m.sent_ms) > l => (
            false,
            format!(
                "{what} at {}, {} after sending: later than {}",
                t(at),
                t(at - m.sent_ms),
                t(l)
            ),
        ),
        (Some(at), _) => (
            true,
            format!(
                "{what} at {}, {} after sending",
                t(at),
                t(at.saturating_sub(m.sent_ms))
            ),
        ),
    }
}

/// Checks one expectation.
pub fn check_one(e: &Expectation, r: &Record, logs: &[LogCheck], pairs: &[PairCheck]) -> Check {
    let limit = e.within.map(|w| w.0);
    let lim = |s: &str| match limit {
        Some(l) => format!("{s} within {}", t(l)),
        None => s.to_string(),
    };
    let msg = find(r, &e.message);
    let missing = |what: String| Check {
        what,
        held: false,
        why: format!("{:?} was never sent (its step did not run)", e.message),
    };
    match e.what {
        ExpectKind::Delivered => {
            let what = lim(&format!("{} delivered", e.message));
            let Some(m) = msg else { return missing(what) };
            let (held, why) = within("signed receipt", m, m.receipted_ms, limit);
            Check { what, held, why }
        }
        ExpectKind::Acknowledged => {
            let what = lim(&format!("{} acknowledged", e.message));
            let Some(m) = msg else { return missing(what) };
            let (held, why) = within("acknowledgement", m, m.acknowledged_ms, limit);
            Check { what, held, why }
        }
        ExpectKind::NotAcknowledged => {
            let what = format!("{} never acknowledged", e.message);
            let Some(m) = msg else { return missing(what) };
            match m.acknowledged_ms {
                None => Check {
                    what,
                    held: true,
                    why: "no acknowledgement or reply in the sender's log".into(),
                },
                Some(at) => Check {
                    what,
                    held: false,
                    why: format!("acknowledged at {}", t(at)),
                },
            }
        }
        ExpectKind::Escalation | ExpectKind::NoEscalation => {
            let want = e.what == ExpectKind::Escalation;
            let what = if want {
                format!("{} escalates: {}", e.message, e.action)
            } else {
                format!("{} needs no escalation", e.message)
            };
            let Some(m) = msg else { return missing(what) };
            let fired: Vec<&super::record::EscalationMark> = m
                .escalations
                .iter()
                .filter(|s| !want || s.action == e.action)
                .collect();
            let list = fired
                .iter()
                .map(|s| format!("{} ({}) at {}", s.action, s.waiting, t(s.at_ms)))
                .collect::<Vec<_>>()
                .join(", ");
            match (want, fired.is_empty()) {
                (true, false) => Check {
                    what,
                    held: true,
                    why: format!("fired: {list}"),
                },
                (true, true) => Check {
                    what,
                    held: false,
                    why: format!(
                        "no {} step fired; steps that did: {}",
                        e.action,
                        if m.escalations.is_empty() {
                            "none".to_string()
                        } else {
                            m.escalations
                                .iter()
                                .map(|s| s.action.clone())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                },
                (false, true) => Check {
                    what,
                    held: true,
                    why: "no ladder step fired".into(),
                },
                (false, false) => Check {
                    what,
                    held: false,
                    why: format!("fired: {list}"),
                },
            }
        }
        ExpectKind::LinkState => {
            let what = format!("{} sees its line to {} {}", e.office, e.peer, e.state);
            let marks: Vec<_> = r
                .links
                .iter()
                .filter(|l| l.office == e.office && l.peer == e.peer)
                .collect();
            let hit = marks
                .iter()
                .find(|l| l.state == e.state || (e.state == "up" && l.state == "connected"));
            match hit {
                Some(l) => Check {
                    what,
                    held: true,
                    why: format!("{} at {}", l.state, t(l.at_ms)),
                },
                None => Check {
                    what,
                    held: false,
                    why: format!(
                        "states seen: {}",
                        if marks.is_empty() {
                            "none".to_string()
                        } else {
                            marks
                                .iter()
                                .map(|l| format!("{} at {}", l.state, t(l.at_ms)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                },
            }
        }
        ExpectKind::Route => {
            let what = format!("{} arrives through {}", e.message, e.peer);
            let Some(m) = msg else { return missing(what) };
            match (m.received_ms, m.route.as_str()) {
                (None, _) => Check {
                    what,
                    held: false,
                    why: "never arrived".into(),
                },
                (Some(at), r) if r == e.peer => Check {
                    what,
                    held: true,
                    why: format!("logged by {} at {} via {r}", m.to, t(at)),
                },
                (Some(at), "") => Check {
                    what,
                    held: false,
                    why: format!("arrived directly at {}", t(at)),
                },
                (Some(at), r) => Check {
                    what,
                    held: false,
                    why: format!("arrived via {r} at {}", t(at)),
                },
            }
        }
        ExpectKind::NothingLost => nothing_lost(r),
        ExpectKind::LogsVerify => logs_verify(logs, pairs),
    }
}

/// Every message the offices accepted was delivered, and exactly once.
pub fn nothing_lost(r: &Record) -> Check {
    let bad: Vec<String> = r
        .messages
        .iter()
        .filter(|m| m.received_count != 1 || m.receipted_ms.is_none())
        .map(|m| {
            let name = if m.label.is_empty() { &m.id } else { &m.label };
            match (m.received_count, m.receipted_ms) {
                (0, _) => format!("{name} never arrived"),
                (1, None) => format!("{name} arrived but its receipt never came back"),
                (n, _) => format!("{name} logged {n} times"),
            }
        })
        .collect();
    Check {
        what: "nothing lost, nothing twice".into(),
        held: bad.is_empty(),
        why: if bad.is_empty() {
            format!(
                "all {} messages delivered once and receipted",
                r.messages.len()
            )
        } else {
            bad.join("; ")
        },
    }
}

/// Every log verifies and every pair of offices cross-checks.
pub fn logs_verify(logs: &[LogCheck], pairs: &[PairCheck]) -> Check {
    let mut bad: Vec<String> = logs
        .iter()
        .filter(|l| !l.ok)
        .map(|l| format!("{}: {}", l.party, l.problem))
        .collect();
    for p in pairs.iter().filter(|p| !p.ok) {
        bad.push(format!(
            "{} vs {}: {}",
            p.a,
            p.b,
            p.discrepancies.join("; ")
        ));
    }
    Check {
        what: "logs verify and cross-check".into(),
        held: bad.is_empty(),
        why: if bad.is_empty() {
            format!(
                "{} logs verified ({} entries); {} pairs agree",
                logs.len(),
                logs.iter().map(|l| l.entries).sum::<u64>(),
                pairs.len()
            )
        } else {
            bad.join("; ")
        },
    }
}

/// Checks every expectation of `s`.
pub fn check_all(s: &Scenario, r: &Record, logs: &[LogCheck], pairs: &[PairCheck]) -> Vec<Check> {
    s.expect
        .iter()
        .map(|e| check_one(e, r, logs, pairs))
        .collect()
}

/// The invariants every run keeps, whatever the scenario expects: nothing
/// delivered twice, and logs that verify and agree.
pub fn invariants(r: &Record, logs: &[LogCheck], pairs: &[PairCheck]) -> Vec<Check> {
    let twice: Vec<String> = r
        .messages
        .iter()
        .filter(|m| m.received_count > 1)
        .map(|m| format!("{} logged {} times", m.id, m.received_count))
        .collect();
    vec![
        Check {
            what: "nothing delivered twice".into(),
            held: twice.is_empty(),
            why: if twice.is_empty() {
                "every message logged at most once by its recipient".into()
            } else {
                twice.join("; ")
            },
        },
        logs_verify(logs, pairs),
    ]
}
