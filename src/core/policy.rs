//! The escalation policy: per precedence, deadlines and a ladder of steps;
//! line-check intervals per alert level.
//!
//! All durations are milliseconds of the caller's clock. A drill's time
//! scale is applied once, by [`Policy::scaled`].

use serde::{Deserialize, Serialize};

use crate::wire::proto::{AlertLevel, Precedence};

/// What a step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Waiting {
    /// The signed delivery receipt.
    Receipt,
    /// The operator's acknowledgement (or any reply).
    Acknowledgement,
}

impl Waiting {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Receipt => "receipt",
            Waiting::Acknowledgement => "acknowledgement",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Send the message again now.
    Retransmit,
    /// Send it by a relay (no relay yet: records that no route exists).
    Reroute,
    /// Raise a duty-officer alert.
    Alert,
    /// Raise the channel's alert level one step.
    RaiseAlertLevel,
}

impl Action {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retransmit => "retransmit",
            Action::Reroute => "reroute",
            Action::Alert => "alert",
            Action::RaiseAlertLevel => "raise-alert-level",
        }
    }
}

/// One rung: "after `after_ms` without `waiting`, do `action`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Time since the message was accepted.
    pub after_ms: u64,
    /// What must not have arrived yet.
    pub waiting: Waiting,
    /// What to do.
    pub action: Action,
}

/// The policy for one precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    /// A receipt later than this makes the message overdue.
    pub receipt_deadline_ms: u64,
    /// An acknowledgement later than this makes the message overdue.
    pub ack_deadline_ms: u64,
    /// Steps, in the order they fire (sorted by `after_ms`).
    pub steps: Vec<Step>,
    /// Run the ladder this many more times after its last step, each run
    /// starting where the previous one ended.
    #[serde(default)]
    pub repeat: u32,
}

/// Line-check intervals and the silence threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineChecks {
    /// Interval at NORMAL.
    pub normal_ms: u64,
    /// Interval at ELEVATED.
    pub elevated_ms: u64,
    /// Interval at CRISIS.
    pub crisis_ms: u64,
    /// Consecutive misses that make a line DEGRADED: more than one, so
    /// that one check delayed by loss on a working line is not news.
    pub degraded_after: u32,
    /// Consecutive misses that make a line SILENT.
    pub silent_after: u32,
}

/// The whole policy. Parts left out of the config take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// FLASH.
    pub flash: Ladder,
    /// IMMEDIATE.
    pub immediate: Ladder,
    /// PRIORITY.
    pub priority: Ladder,
    /// ROUTINE.
    pub routine: Ladder,
    /// Line checks.
    pub line_checks: LineChecks,
    /// Whether the peer's alert level may raise the channel's effective
    /// level above ours (never lower it): on by default, so that an office
    /// that sees a crisis makes both ends watch the line closely.
    pub peer_raises_level: bool,
}

const S: u64 = 1_000;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;

fn step(after_ms: u64, waiting: Waiting, action: Action) -> Step {
    Step {
        after_ms,
        waiting,
        action,
    }
}

impl Default for Policy {
    /// Receipts within seconds; acknowledgements per ACP 127 (FLASH 10 min,
    /// IMMEDIATE 30 min, PRIORITY 3 h, ROUTINE 6 h).
    fn default() -> Self {
        use Action::*;
        use Waiting::*;
        Policy {
            flash: Ladder {
                receipt_deadline_ms: 5 * S,
                ack_deadline_ms: 10 * MIN,
                steps: vec![
                    step(5 * S, Receipt, Retransmit),
                    step(10 * S, Receipt, Reroute),
                    step(15 * S, Receipt, Alert),
                    step(30 * S, Receipt, RaiseAlertLevel),
                    step(10 * MIN, Acknowledgement, Alert),
                    step(12 * MIN, Acknowledgement, RaiseAlertLevel),
                ],
                repeat: 0,
            },
            immediate: Ladder {
                receipt_deadline_ms: 10 * S,
                ack_deadline_ms: 30 * MIN,
                steps: vec![
                    step(10 * S, Receipt, Retransmit),
                    step(30 * S, Receipt, Reroute),
                    step(60 * S, Receipt, Alert),
                    step(30 * MIN, Acknowledgement, Alert),
                ],
                repeat: 0,
            },
            priority: Ladder {
                receipt_deadline_ms: 30 * S,
                ack_deadline_ms: 3 * H,
                steps: vec![
                    step(30 * S, Receipt, Retransmit),
                    step(5 * MIN, Receipt, Alert),
                    step(3 * H, Acknowledgement, Alert),
                ],
                repeat: 0,
            },
            routine: Ladder {
                receipt_deadline_ms: 60 * S,
                ack_deadline_ms: 6 * H,
                steps: vec![
                    step(60 * S, Receipt, Retransmit),
                    step(15 * MIN, Receipt, Alert),
                    step(6 * H, Acknowledgement, Alert),
                ],
                repeat: 0,
            },
            line_checks: LineChecks {
                normal_ms: 60 * S,
                elevated_ms: 10 * S,
                crisis_ms: S,
                degraded_after: 2,
                silent_after: 3,
            },
            peer_raises_level: true,
        }
    }
}

impl Default for LineChecks {
    fn default() -> Self {
        Policy::default().line_checks
    }
}

impl Policy {
    /// The ladder for `p`.
    pub fn ladder(&self, p: Precedence) -> &Ladder {
        match p {
            Precedence::Flash => &self.flash,
            Precedence::Immediate => &self.immediate,
            Precedence::Priority => &self.priority,
            Precedence::Routine | Precedence::Unspecified => &self.routine,
        }
    }

    /// Line-check interval at `level`.
    pub fn line_check_interval(&self, level: AlertLevel) -> u64 {
        match level {
            AlertLevel::Crisis => self.line_checks.crisis_ms,
            AlertLevel::Elevated => self.line_checks.elevated_ms,
            AlertLevel::Normal | AlertLevel::Unspecified => self.line_checks.normal_ms,
        }
    }

    /// Every duration multiplied by `scale` (a drill at `scale` 0.01 runs
    /// a 10-minute deadline in 6 s), with ladders sorted by time.
    pub fn scaled(&self, scale: f64) -> Policy {
        let f = |ms: u64| ((ms as f64) * scale).round().max(1.0) as u64;
        let ladder = |l: &Ladder| {
            let mut steps: Vec<Step> = l
                .steps
                .iter()
                .map(|s| Step {
                    after_ms: f(s.after_ms),
                    ..*s
                })
                .collect();
            steps.sort_by_key(|s| s.after_ms);
            Ladder {
                receipt_deadline_ms: f(l.receipt_deadline_ms),
                ack_deadline_ms: f(l.ack_deadline_ms),
                steps,
                repeat: l.repeat,
            }
        };
        Policy {
            flash: ladder(&self.flash),
            immediate: ladder(&self.immediate),
            priority: ladder(&self.priority),
            routine: ladder(&self.routine),
            line_checks: LineChecks {
                normal_ms: f(self.line_checks.normal_ms),
                elevated_ms: f(self.line_checks.elevated_ms),
                crisis_ms: f(self.line_checks.crisis_ms),
                degraded_after: self.line_checks.degraded_after.max(1),
                silent_after: self.line_checks.silent_after.max(1),
            },
            peer_raises_level: self.peer_raises_level,
        }
    }

    /// The channel's effective level: ours, raised to the peer's when the
    /// policy lets the peer raise it; never below ours.
    pub fn effective_level(&self, own: AlertLevel, peer: AlertLevel) -> AlertLevel {
        let rank = |l: AlertLevel| match l {
            AlertLevel::Crisis => 3,
            AlertLevel::Elevated => 2,
            AlertLevel::Normal | AlertLevel::Unspecified => 1,
        };
        if self.peer_raises_level && rank(peer) > rank(own) {
            peer
        } else if own == AlertLevel::Unspecified {
            AlertLevel::Normal
        } else {
            own
        }
    }

    /// The `n`th firing of `ladder` (counting repeats): its step and time
    /// offset from acceptance, or `None` when the ladder is exhausted.
    pub fn nth_step(ladder: &Ladder, n: u32) -> Option<(Step, u64)> {
        let len = u32::try_from(ladder.steps.len()).ok()?;
        if len == 0 || n >= len.saturating_mul(ladder.repeat.saturating_add(1)) {
            return None;
        }
        let round = n.checked_div(len)?;
        let step = *ladder
            .steps
            .get(usize::try_from(n.checked_rem(len)?).ok()?)?;
        let period = ladder.steps.last().map(|s| s.after_ms).unwrap_or(0);
        Some((
            step,
            step.after_ms
                .saturating_add(u64::from(round).saturating_mul(period)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_continue_from_the_last_step() {
        let l = Ladder {
            receipt_deadline_ms: 1,
            ack_deadline_ms: 1,
            steps: vec![
                step(10, Waiting::Receipt, Action::Retransmit),
                step(30, Waiting::Receipt, Action::Alert),
            ],
            repeat: 1,
        };
        let times: Vec<u64> = (0..5)
            .filter_map(|n| Policy::nth_step(&l, n).map(|s| s.1))
            .collect();
        assert_eq!(times, vec![10, 30, 40, 60]);
    }

    #[test]
    fn scaling_keeps_order_and_defaults_follow_acp127() {
        let p = Policy::default();
        assert_eq!(p.flash.ack_deadline_ms, 10 * MIN);
        assert_eq!(p.routine.ack_deadline_ms, 6 * H);
        let s = p.scaled(0.001);
        assert_eq!(s.flash.ack_deadline_ms, 600);
        assert!(s
            .flash
            .steps
            .windows(2)
            .all(|w| w[0].after_ms <= w[1].after_ms));
    }
}
