//! `hotline drill ...`: run, list, fuzz and replay crisis drills.

use std::path::PathBuf;

use clap::Subcommand;

use super::commands::{print_json, Res};
use super::exit;
use hotline::drill::{self, bundled, Mode, RunOptions};

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Run a drill (a scenario file or a bundled drill's name), check its
    /// expectations and write a run directory with reports and every
    /// party's office directory. Exit 0 only if every expectation held.
    Run {
        /// A scenario file, or the name of a bundled drill (`hotline drill list`).
        scenario: String,
        /// The run directory to create [default: drill-runs/NAME-MODE-TIME].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Simulate: sans-IO cores, virtual clock, byte-identical reports per seed.
        #[arg(long)]
        sim: bool,
        /// Seed for faults (and, simulated, everything) [default: the scenario's].
        #[arg(long)]
        seed: Option<u64>,
        /// Live runs: run this many times faster than the scenario's time scale.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print the report as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// List the bundled drills.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a drill in simulation at many seeds; report each seed that breaks
    /// an expectation or an invariant, with the command that replays it.
    Fuzz {
        /// A scenario file or a bundled drill's name.
        scenario: String,
        /// How many seeds.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a recorded drill again (same scenario, seed and mode) and say
    /// where the outcome differs: simulated runs must match byte for byte,
    /// live runs in verdicts and in the order of deliveries.
    Replay {
        /// A run directory written by `drill run`.
        run_dir: PathBuf,
        /// Where to put the new run [default: RUN_DIR/replay-N].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DrillCommand) -> Res {
    match cmd {
        DrillCommand::Run {
            scenario,
            out,
            sim,
            seed,
            speed,
            json,
        } => {
            let (s, text) = bundled::load(&scenario)?;
            if !(speed > 0.0 && speed <= 100.0) {
                return Err(anyhow::anyhow!("--speed {speed}: use a number in (0, 100]").into());
            }
            let mode = if sim {
                Mode::Sim
            } else {
                Mode::Live {
                    exe: std::env::current_exe()?,
                    speed,
                }
            };
            let out = out.unwrap_or_else(|| default_out(&s.name, sim));
            if !json {
                eprintln!(
                    "drill {} ({}): run directory {}",
                    s.name,
                    if sim { "simulated" } else { "live" },
                    out.display()
                );
            }
            let report = drill::run(
                &s,
                &text,
                &RunOptions {
                    out: out.clone(),
                    mode,
                    seed,
                    progress: !json,
                },
            )?;
            if json {
                print_json(&report);
            } else {
                summary(&report);
                println!(
                    "\nreports: {}/report.html, report.md, report.json",
                    out.display()
                );
            }
            Ok(if report.passed {
                exit::OK
            } else {
                exit::DRILL_FAILED
            })
        }
        DrillCommand::List { json } => {
            let rows: Vec<serde_json::Value> = bundled::DRILLS
                .iter()
                .map(|(name, text)| {
                    let s = drill::Scenario::parse(text, name).expect("bundled drills parse");
                    serde_json::json!({
                        "name": name,
                        "offices": s.offices.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
                        "relays": s.relays.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
                        "drill_time": drill::duration::format(s.end_ms()),
                        "real_time_s": (s.end_ms() as f64 * s.time_scale / 1000.0).round(),
                        "summary": first_sentence(&s.description),
                    })
                })
                .collect();
            if json {
                print_json(&rows);
            } else {
                for r in &rows {
                    println!(
                        "{:<22} {:>8} drill time, ~{:>3} s live   {}",
                        r["name"].as_str().unwrap_or(""),
                        r["drill_time"].as_str().unwrap_or(""),
                        r["real_time_s"],
                        r["summary"].as_str().unwrap_or("")
                    );
                }
                println!(
                    "\nrun one:  hotline drill run kaesong-2020   (add --sim for a simulated run)"
                );
            }
            Ok(exit::OK)
        }
        DrillCommand::Fuzz {
            scenario,
            seeds,
            from,
            json,
        } => {
            let (s, text) = bundled::load(&scenario)?;
            let results = drill::fuzz(&s, &text, from..from + seeds, |r| {
                if !json {
                    if r.passed {
                        eprintln!("seed {}: passed", r.seed);
                    } else {
                        eprintln!("seed {}: FAILED", r.seed);
                        for f in &r.failures {
                            eprintln!("  {}: {}", f.what, f.why);
                        }
                        eprintln!(
                            "  replay: hotline drill run {scenario} --sim --seed {}",
                            r.seed
                        );
                    }
                }
            })?;
            let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
            if json {
                print_json(&results);
            } else {
                println!(
                    "{} seeds from {from}: {} passed, {} failed",
                    results.len(),
                    results.len() - failed.len(),
                    failed.len()
                );
            }
            Ok(if failed.is_empty() {
                exit::OK
            } else {
                exit::DRILL_FAILED
            })
        }
        DrillCommand::Replay { run_dir, out, json } => {
            let rec = drill::load_run(&run_dir)?;
            let out = out.unwrap_or_else(|| {
                (1..)
                    .map(|n| run_dir.join(format!("replay-{n}")))
                    .find(|p| !p.exists())
                    .expect("a free name")
            });
            let mode = if rec.report.mode == "sim" {
                Mode::Sim
            } else {
                Mode::Live {
                    exe: std::env::current_exe()?,
                    speed: rec.report.speed,
                }
            };
            if !json {
                eprintln!(
                    "replaying {} ({}, seed {}) into {}",
                    rec.report.scenario,
                    rec.report.mode,
                    rec.report.seed,
                    out.display()
                );
            }
            let again = drill::run(
                &rec.scenario,
                &rec.text,
                &RunOptions {
                    out: out.clone(),
                    mode,
                    seed: Some(rec.report.seed),
                    progress: !json,
                },
            )?;
            let diffs = drill::compare(&rec.report, &again);
            if json {
                print_json(&serde_json::json!({
                    "run_dir": run_dir,
                    "replay_dir": out,
                    "mode": rec.report.mode,
                    "agrees": diffs.is_empty(),
                    "differences": diffs,
                }));
            } else if diffs.is_empty() {
                println!(
                    "the replay agrees with the recording ({})",
                    if rec.report.mode == "sim" {
                        "report.json identical"
                    } else {
                        "same verdicts, same deliveries in the same order"
                    }
                );
            } else {
                println!("the replay differs from the recording:");
                for d in &diffs {
                    println!("  {d}");
                }
            }
            Ok(if diffs.is_empty() {
                exit::OK
            } else {
                exit::DRILL_FAILED
            })
        }
    }
}

fn default_out(name: &str, sim: bool) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    PathBuf::from("drill-runs").join(format!(
        "{name}-{}-{stamp}",
        if sim { "sim" } else { "live" }
    ))
}

fn first_sentence(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..=i].to_string(),
        None => flat,
    }
}

fn summary(r: &drill::Report) {
    use hotline::drill::duration::format as t;
    println!("\n{}  ({})", r.scenario, r.verdict());
    let rows: Vec<Vec<String>> = r
        .expectations
        .iter()
        .chain(&r.invariants)
        .map(|c| {
            vec![
                if c.held { "held" } else { "FAILED" }.to_string(),
                c.what.clone(),
                c.why.clone(),
            ]
        })
        .collect();
    super::render::table(&["", "expectation", "evidence"], rows);
    println!();
    let msgs: Vec<Vec<String>> = r
        .record
        .messages
        .iter()
        .map(|m| {
            vec![
                m.label.clone(),
                format!("{} → {}", m.from, m.to),
                format!(
                    "{}{}",
                    m.precedence.to_uppercase(),
                    if m.exercise { " EXERCISE" } else { "" }
                ),
                t(m.sent_ms),
                m.receipted_ms.map(t).unwrap_or_else(|| "—".into()),
                m.acknowledged_ms.map(t).unwrap_or_else(|| "—".into()),
                if m.route.is_empty() {
                    "direct".into()
                } else {
                    format!("via {}", m.route)
                },
            ]
        })
        .collect();
    super::render::table(
        &[
            "message",
            "from → to",
            "precedence",
            "sent",
            "receipt",
            "acknowledged",
            "route",
        ],
        msgs,
    );
}
