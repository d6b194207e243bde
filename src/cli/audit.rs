//! `hotline audit ...`: read-only inspection of a node's log. Works whether
//! or not the node runs; never writes to the log.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Subcommand;

use super::commands::Failure;
use super::{exit, render};
use hotline::audit::{self, compare, evidence::Evidence, info, inspect, proof, verify};
use hotline::identity::{OfficeCard, OfficeDir};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Size, root, latest checkpoint and its cosignatures.
    Info {
        /// Office directory.
        dir: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Entries as a table, filtered.
    Show(ShowArgs),
    /// Check every checksum, root, signature and cosignature; names the first bad entry.
    ///
    /// A full check reads the whole log, every segment, and saves its state at the
    /// newest sealed segment (log/hotline.verified.json). With --from-checkpoint it
    /// starts from that saved state instead: it checks the sealing checkpoint again
    /// against the saved tree, then only the segments after it.
    Verify {
        /// Office directory.
        dir: PathBuf,
        /// Start from the state the last verify saved at a sealed segment (falls back
        /// to a full check, saying why, when there is none or it does not fit).
        #[arg(long)]
        from_checkpoint: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Check that two offices' logs agree; lists every discrepancy.
    CrossCheck {
        /// First office directory.
        dir_a: PathBuf,
        /// Second office directory.
        dir_b: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One merged timeline of both offices' message traffic.
    Timeline {
        /// First office directory.
        dir_a: PathBuf,
        /// Second office directory.
        dir_b: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write an offline proof that a message is in this office's log.
    Prove {
        /// Office directory.
        dir: PathBuf,
        /// Message id (or a prefix of at least 8 digits).
        #[arg(long)]
        msg: String,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a proof file with the office's card (and the peer's, for its cosignature).
    VerifyProof {
        /// The proof file.
        file: PathBuf,
        /// The card of the office whose log it is.
        #[arg(long)]
        card: PathBuf,
        /// The peer's card: checks its cosignature and a received envelope.
        #[arg(long)]
        peer_card: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Every entry as one JSON object per line.
    Export {
        /// Office directory.
        dir: PathBuf,
        /// Output format.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
    /// Check an equivocation evidence file with only the accused office's card.
    VerifyEvidence {
        /// The evidence file.
        file: PathBuf,
        /// The accused office's card.
        #[arg(long)]
        card: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Office directory.
    dir: PathBuf,
    /// Entry kind, or a prefix (message, receipt, nack, link, checkpoint, cosignature, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only entries about this peer office.
    #[arg(long)]
    peer: Option<String>,
    /// flash, immediate, priority or routine.
    #[arg(long)]
    precedence: Option<String>,
    /// Only this thread.
    #[arg(long)]
    thread: Option<String>,
    /// Only entries about this message id (or prefix).
    #[arg(long)]
    msg: Option<String>,
    /// From this time (RFC 3339, e.g. 2026-11-28T09:00:00Z, or Unix ms).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    until: Option<String>,
    /// At most this many entries (the latest ones).
    #[arg(long)]
    limit: Option<usize>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

type Res = Result<u8, Failure>;

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn log_path(dir: &Path) -> Result<PathBuf, Failure> {
    let od = OfficeDir::new(dir);
    od.load_config()?;
    Ok(od.log())
}

fn office_name(dir: &Path) -> Result<String, Failure> {
    Ok(OfficeDir::new(dir).load_config()?.office.to_string())
}

fn verdict(ok: bool) -> u8 {
    if ok {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    }
}

pub fn run(cmd: AuditCommand) -> Res {
    match cmd {
        AuditCommand::Info { dir, json } => {
            let i = info::info(&log_path(&dir)?)?;
            if json {
                print_json(&i);
            } else {
                render::audit_info(&office_name(&dir)?, &i);
            }
            Ok(exit::OK)
        }
        AuditCommand::Show(a) => show(a),
        AuditCommand::Verify {
            dir,
            from_checkpoint,
            json,
        } => {
            let (_, card, peers) = OfficeDir::new(&dir).load_public()?;
            let log = OfficeDir::new(&dir).log();
            let saved = if from_checkpoint {
                hotline::audit::verified::load(&log).unwrap_or_else(|why| {
                    eprintln!("note: the saved verify state cannot be read ({why})");
                    None
                })
            } else {
                None
            };
            let (mut r, state) = match &saved {
                Some(s) => verify::verify_from_checkpoint(&log, &card, &peers, s)?,
                None => verify::verify_saving(&log, &card, &peers)?,
            };
            if from_checkpoint && saved.is_none() && r.note.is_none() {
                r.note = Some(
                    "no saved verify state (a full verify saves one once the log has a sealed segment); verified the whole log"
                        .into(),
                );
            }
            // Best effort: a reader without write access still verifies.
            if let Some(state) = state.filter(|s| saved.as_ref() != Some(s)) {
                if let Err(e) = hotline::audit::verified::save(&log, &state) {
                    eprintln!("note: could not save the verify state for --from-checkpoint: {e}");
                }
            }
            if json {
                print_json(&r);
            } else {
                render::verify_report(&r);
            }
            Ok(verdict(r.ok()))
        }
        AuditCommand::CrossCheck { dir_a, dir_b, json } => {
            let (a, b) = (office_name(&dir_a)?, office_name(&dir_b)?);
            let r = compare::cross_check(&log_path(&dir_a)?, &a, &log_path(&dir_b)?, &b)?;
            if json {
                print_json(&r);
            } else {
                render::cross_check(&r);
            }
            Ok(verdict(r.ok()))
        }
        AuditCommand::Timeline { dir_a, dir_b, json } => {
            let (a, b) = (office_name(&dir_a)?, office_name(&dir_b)?);
            let rows = compare::timeline(&log_path(&dir_a)?, &a, &log_path(&dir_b)?, &b)?;
            if json {
                print_json(&rows);
            } else {
                render::timeline(&rows);
            }
            Ok(exit::OK)
        }
        AuditCommand::Prove { dir, msg, out } => {
            let p = proof::prove(&log_path(&dir)?, &office_name(&dir)?, &msg)?;
            let text = serde_json::to_string_pretty(&p).expect("serializable");
            match out {
                Some(path) => {
                    std::fs::write(&path, text + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote a proof that entry {} is in {}'s log (checkpoint cosigned by {}) to {}",
                        p.index,
                        p.office,
                        if p.cosigners.is_empty() { "nobody yet".to_string() } else { p.cosigners.join(", ") },
                        path.display()
                    );
                }
                None => println!("{text}"),
            }
            Ok(exit::OK)
        }
        AuditCommand::VerifyProof {
            file,
            card,
            peer_card,
            json,
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let p: proof::ProofFile = serde_json::from_slice(&text)
                .map_err(|e| anyhow!("{} is not a proof file: {e}", file.display()))?;
            let card = OfficeCard::load(&card)?;
            let peer = peer_card.map(|p| OfficeCard::load(&p)).transpose()?;
            match proof::verify_proof(&p, &card, peer.as_ref()) {
                Ok(v) => {
                    if json {
                        print_json(&serde_json::json!({"valid": true, "proved": v}));
                    } else {
                        println!(
                            "valid: entry {} ({}) is in {}'s log at checkpoint size {}",
                            v.entry.index, v.entry.kind, card.office, v.checkpoint_size
                        );
                        println!("  {}", render::t(&v.entry.detail));
                        if !v.verified_cosigners.is_empty() {
                            println!("  cosigned by {}", v.verified_cosigners.join(", "));
                        }
                        if let Some(ok) = v.envelope_verified {
                            println!(
                                "  signature inside the entry: {}",
                                if ok { "verified" } else { "DOES NOT VERIFY" }
                            );
                        }
                    }
                    Ok(exit::OK)
                }
                Err(e) => {
                    if json {
                        print_json(&serde_json::json!({"valid": false, "error": e.to_string()}));
                    } else {
                        println!("INVALID: {e}");
                    }
                    Ok(exit::VERIFY_FAILED)
                }
            }
        }
        AuditCommand::Export { dir, format: _ } => {
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut werr = None;
            audit::scan(&log_path(&dir)?, |e| {
                if werr.is_some() {
                    return;
                }
                let mut v =
                    serde_json::to_value(inspect::summarize(&e.entry)).expect("serializable");
                v["entry_hex"] = serde_json::Value::String(hex::encode(&e.bytes));
                if let Err(err) = writeln!(out, "{v}") {
                    werr = Some(err);
                }
            })?;
            if let Some(e) = werr {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
            Ok(exit::OK)
        }
        AuditCommand::VerifyEvidence { file, card, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let card = OfficeCard::load(&card)?;
            let result = Evidence::from_json(&bytes).and_then(|e| e.verify(&card));
            match result {
                Ok(p) => {
                    if json {
                        print_json(
                            &serde_json::json!({"proven": true, "kind": p.kind, "sizes": [p.sizes.0, p.sizes.1]}),
                        );
                    } else {
                        println!(
                            "PROVEN: {} signed contradictory checkpoints ({}, sizes {} and {})",
                            card.office, p.kind, p.sizes.0, p.sizes.1
                        );
                    }
                    Ok(exit::OK)
                }
                Err(e) => {
                    if json {
                        print_json(&serde_json::json!({"proven": false, "error": e.to_string()}));
                    } else {
                        println!("NOT PROVEN: {e}");
                    }
                    Ok(exit::VERIFY_FAILED)
                }
            }
        }
    }
}

fn show(a: ShowArgs) -> Res {
    let parse = |s: &Option<String>, what: &str| -> Result<Option<u64>, Failure> {
        s.as_ref()
            .map(|t| {
                inspect::parse_time(t)
                    .ok_or_else(|| anyhow!("--{what} {t:?} is neither RFC 3339 (2026-11-28T09:00:00Z) nor Unix milliseconds").into())
            })
            .transpose()
    };
    if let Some(k) = &a.kind {
        if !inspect::KINDS.iter().any(|x| x.starts_with(k.as_str())) {
            return Err(anyhow!(
                "--kind {k:?} matches no entry kind; kinds: {}",
                inspect::KINDS.join(", ")
            )
            .into());
        }
    }
    let filter = inspect::Filter {
        kind: a.kind.clone(),
        peer: a.peer.clone(),
        precedence: a.precedence.clone(),
        thread: a.thread.clone(),
        msg: a.msg.clone(),
        since_ms: parse(&a.since, "since")?,
        until_ms: parse(&a.until, "until")?,
    };
    let mut rows = std::collections::VecDeque::new();
    let limit = a.limit.unwrap_or(usize::MAX);
    audit::scan(&log_path(&a.dir)?, |e| {
        let s = inspect::summarize(&e.entry);
        if filter.matches(&s) {
            if rows.len() == limit {
                rows.pop_front();
            }
            rows.push_back(s);
        }
    })?;
    if a.json {
        print_json(&rows);
    } else {
        render::entries(rows.make_contiguous());
    }
    Ok(exit::OK)
}
