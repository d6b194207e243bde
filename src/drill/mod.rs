//! Crisis drills: run two or three offices (and relays) through a crisis
//! drawn from history, with faults on the lines, and check what must hold.
//!
//! # Layout
//! - [`scenario`]: the scenario file, strictly parsed (docs/drills.md).
//! - [`script`]: the timetable both runners follow.
//! - [`setup`]: fresh identities, one office directory per party.
//! - [`sim_run`]: the deterministic runner on the sans-IO cores.
//! - [`live_run`] and [`proxy`]: real nodes over loopback QUIC through
//!   fault-injecting UDP proxies.
//! - [`record`]: what happened, read back from the audit logs.
//! - [`expect`]: expectations and invariants checked against the record.
//! - [`report`] and [`html`]: report.json, report.md, report.html.
//! - [`bundled`]: the drills that ship with hotline.
//!
//! A run directory holds `scenario.toml` (the scenario as run),
//! `report.json`, `report.md`, `report.html` and one office directory per
//! party; `drill replay` needs nothing else.

pub mod bundled;
pub mod duration;
pub mod expect;
pub mod html;
pub mod live_run;
pub mod proxy;
pub mod record;
pub mod report;
pub mod scenario;
pub mod script;
pub mod setup;
pub mod sim_run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

/// Why a drill could not run (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The scenario is malformed.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Creating or loading a party's directory.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Writing or reading a log.
    #[error(transparent)]
    Log(#[from] crate::audit::LogError),
    /// Files.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
    /// A live node would not start or answer.
    #[error("{0}")]
    Node(String),
    /// The run directory is not usable.
    #[error("{0}")]
    RunDir(String),
    /// The parties cannot be set up as the scenario says.
    #[error("{0}")]
    Setup(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DrillError + '_ {
    move |source| DrillError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub enum Mode {
    /// On the sans-IO cores with a virtual clock.
    Sim,
    /// Real nodes: `exe` is the hotline binary to start for each party.
    Live {
        /// The hotline binary.
        exe: PathBuf,
        /// Extra speed-up over the scenario's time scale.
        speed: f64,
    },
}

/// Options for [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory to create (must not exist or be empty).
    pub out: PathBuf,
    /// Simulated or live.
    pub mode: Mode,
    /// Seed (default: the scenario's).
    pub seed: Option<u64>,
    /// Print progress lines to stderr.
    pub progress: bool,
}

/// Runs a scenario (`text` is its source, kept in the run directory) and
/// writes the run directory. The report says whether it passed.
pub fn run(s: &Scenario, text: &str, opts: &RunOptions) -> Result<Report, DrillError> {
    prepare_out(&opts.out)?;
    std::fs::write(opts.out.join("scenario.toml"), text).map_err(io(&opts.out))?;
    let seed = opts.seed.unwrap_or(s.seed);
    let (mode, speed, parties, labels, interventions, clock, live) = match &opts.mode {
        Mode::Sim => {
            let parties = setup::create(s, &opts.out, s.time_scale, |_, _| String::new())?;
            let out = sim_run::run(s, &parties, seed)?;
            let clock = record::Clock {
                t0_wall_ms: sim_run::WALL_BASE,
                scale: s.time_scale,
            };
            (
                "sim",
                1.0,
                parties,
                out.labels,
                out.interventions,
                clock,
                None,
            )
        }
        Mode::Live { exe, speed } => {
            let out = live_run::run(s, &opts.out, exe, *speed, seed, opts.progress)?;
            let clock = record::Clock {
                t0_wall_ms: out.t0_wall_ms,
                scale: s.time_scale / speed,
            };
            let live = report::LiveInfo {
                started_unix_ms: out.t0_wall_ms,
                wall_seconds: out.wall_seconds,
            };
            (
                "live",
                *speed,
                out.parties,
                out.labels,
                out.interventions,
                clock,
                Some(live),
            )
        }
    };
    let logs: Vec<(String, PathBuf)> = parties
        .iter()
        .map(|p| (p.name.clone(), p.dir.log()))
        .collect();
    let entries = record::read_logs(&logs)?;
    let rec = record::build(&entries, &labels, clock);
    let (log_checks, pair_checks) = expect::verify_logs(&parties);
    let expectations = expect::check_all(s, &rec, &log_checks, &pair_checks);
    let mut invariants = expect::invariants(&rec, &log_checks, &pair_checks);
    invariants.retain(|i| !expectations.iter().any(|e| e.what == i.what));
    let passed = expectations.iter().chain(&invariants).all(|c| c.held);
    let report = Report {
        format: report::FORMAT.into(),
        scenario: s.name.clone(),
        description: s.description.trim().to_string(),
        mode: mode.into(),
        seed,
        time_scale: s.time_scale,
        speed,
        duration_ms: s.end_ms(),
        passed,
        expectations,
        invariants,
        parties: parties
            .iter()
            .map(|p| report::PartyInfo {
                name: p.name.clone(),
                role: if p.relay { "relay" } else { "office" }.into(),
            })
            .collect(),
        logs: log_checks,
        pairs: pair_checks,
        record: rec,
        interventions,
        live,
    };
    let write = |name: &str, body: String| {
        let p = opts.out.join(name);
        std::fs::write(&p, body).map_err(io(&p))
    };
    write("report.json", report.to_json())?;
    write("report.md", report.to_markdown())?;
    write("report.html", html::render(&report))?;
    Ok(report)
}

fn prepare_out(out: &Path) -> Result<(), DrillError> {
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty {
            return Err(DrillError::RunDir(format!(
                "{} exists and is not empty: choose another --out or remove it",
                out.display()
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))
}

/// A recorded run: its scenario and report.
pub struct Recorded {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Its text.
    pub text: String,
    /// The report.
    pub report: Report,
}

/// Reads a run directory.
pub fn load_run(dir: &Path) -> Result<Recorded, DrillError> {
    let sp = dir.join("scenario.toml");
    let text = std::fs::read_to_string(&sp).map_err(|e| {
        DrillError::RunDir(format!(
            "{}: {e}: is {} a drill run directory?",
            sp.display(),
            dir.display()
        ))
    })?;
    let scenario = Scenario::parse(&text, &sp.display().to_string())?;
    let rp = dir.join("report.json");
    let rtext = std::fs::read_to_string(&rp).map_err(io(&rp))?;
    let report = Report::from_json(&rtext)
        .map_err(|e| DrillError::RunDir(format!("{}: {e}", rp.display())))?;
    Ok(Recorded {
        scenario,
        text,
        report,
    })
}

/// Where a replay differs from its recording.
pub fn compare(recorded: &Report, again: &Report) -> Vec<String> {
    let mut diffs = Vec::new();
    if recorded.mode == "sim" {
        let (a, b) = (recorded.to_json(), again.to_json());
        if a != b {
            for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
                if x != y {
                    diffs.push(format!(
                        "report.json line {}: recorded {} / now {}",
                        i + 1,
                        x.trim(),
                        y.trim()
                    ));
                    if diffs.len() >= 10 {
                        break;
                    }
                }
            }
            if diffs.is_empty() {
                diffs.push("report.json differs in length".into());
            }
        }
        return diffs;
    }
    // Live: the same verdicts, the same deliveries, in the same order per
    // channel. Timings differ from run to run and are not compared.
    for (i, (x, y)) in recorded
        .expectations
        .iter()
        .zip(&again.expectations)
        .enumerate()
    {
        if x.held != y.held {
            diffs.push(format!(
                "expectation {} ({}): recorded {}, now {} ({})",
                i + 1,
                x.what,
                held(x.held),
                held(y.held),
                y.why
            ));
        }
    }
    for (x, y) in recorded.invariants.iter().zip(&again.invariants) {
        if x.held != y.held {
            diffs.push(format!(
                "invariant {}: recorded {}, now {} ({})",
                x.what,
                held(x.held),
                held(y.held),
                y.why
            ));
        }
    }
    let deliveries = |r: &Report| {
        let mut per: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut ms: Vec<_> = r
            .record
            .messages
            .iter()
            .filter(|m| m.received_ms.is_some())
            .collect();
        ms.sort_by_key(|m| m.received_ms);
        for m in ms {
            per.entry((m.from.clone(), m.to.clone()))
                .or_default()
                .push(if m.label.is_empty() {
                    m.subject.clone()
                } else {
                    m.label.clone()
                });
        }
        per
    };
    let (a, b) = (deliveries(recorded), deliveries(again));
    for key in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            diffs.push(format!(
                "deliveries {} → {}: recorded {:?}, now {:?}",
                key.0,
                key.1,
                x.cloned().unwrap_or_default(),
                y.cloned().unwrap_or_default()
            ));
        }
    }
    diffs
}

fn held(b: bool) -> &'static str {
    if b {
        "held"
    } else {
        "failed"
    }
}

/// One seed of [`fuzz`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FuzzResult {
    /// The seed.
    pub seed: u64,
    /// Every expectation and invariant held.
    pub passed: bool,
    /// What broke.
    pub failures: Vec<expect::Check>,
}

/// Runs `s` in simulation at every seed in `seeds` (each in a temporary
/// run directory) and calls `each` with the result as it comes.
pub fn fuzz(
    s: &Scenario,
    text: &str,
    seeds: std::ops::Range<u64>,
    mut each: impl FnMut(&FuzzResult),
) -> Result<Vec<FuzzResult>, DrillError> {
    let mut out = Vec::new();
    for seed in seeds {
        let tmp = tempfile::tempdir().map_err(io(Path::new("temporary directory")))?;
        let report = run(
            s,
            text,
            &RunOptions {
                out: tmp.path().join("run"),
                mode: Mode::Sim,
                seed: Some(seed),
                progress: false,
            },
        )?;
        let r = FuzzResult {
            seed,
            passed: report.passed,
            failures: report.failures().into_iter().cloned().collect(),
        };
        each(&r);
        out.push(r);
    }
    Ok(out)
}
