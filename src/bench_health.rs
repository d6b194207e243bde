//! `hotline bench health`: does line health tell the truth on a working
//! lossy line, and does it still see a cut in time?
//!
//! Two node processes of this binary, joined only through a drill proxy
//! line with the profile's faults, both operators at the given alert level
//! (CRISIS by default: line checks every second, the cadence that cries
//! wolf first). Two phases:
//!
//! 1. **Watch**: for `minutes`, the offices trade a 256-byte message every
//!    two seconds, alternately each way and of PRIORITY, ROUTINE or
//!    IMMEDIATE precedence. Afterwards both logs are read: every DEGRADED
//!    or SILENT health entry in that span is a false alarm, since the line
//!    was never cut. Rates are per hour of watching.
//! 2. **Cuts**: `cuts` times, the line is cut (every datagram dropped) and
//!    washington's status is polled every 20 ms until it shows SILENT; the
//!    time from the cut is the detection time. The line is then restored
//!    and the bench waits for UP before the next cut.
//!
//! Nothing here is a pass/fail: the figures are what docs/reliability.md
//! quotes, with the command that printed them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench_line::{offices, start_nodes, wait_resumed, wait_until, LineProfile, Spread};
use crate::control::api::{AlertLevelRequest, SendRequest};
use crate::control::ControlClient;
use crate::core::OutState;
use crate::demo::DemoError;
use crate::drill::proxy::Line;
use crate::identity::OfficeDir;
use crate::wire::proto::log_entry::Event;

/// What to run.
#[derive(Debug, Clone)]
pub struct HealthBenchOptions {
    /// The line.
    pub profile: LineProfile,
    /// Minutes of watching the working line.
    pub minutes: f64,
    /// Cuts to time.
    pub cuts: usize,
    /// Both operators' alert level: normal, elevated or crisis.
    pub level: String,
    /// Progress on stderr.
    pub progress: bool,
}

/// False alarms at one office over the watch.
#[derive(Debug, Clone, Serialize)]
pub struct FalseAlarms {
    /// The office whose log this is.
    pub office: String,
    /// Entries to DEGRADED.
    pub degraded: u64,
    /// Entries to SILENT.
    pub silent: u64,
    /// Connections lost (the transport gave up and redialled).
    pub reconnections: u64,
}

/// The bench's result.
#[derive(Debug, Clone, Serialize)]
pub struct HealthBenchReport {
    /// The line.
    pub profile: LineProfile,
    /// Both operators' level.
    pub level: String,
    /// Minutes watched.
    pub minutes: f64,
    /// Messages sent over the watch, both ways.
    pub messages: usize,
    /// Of those, not receipted by the end of the watch (plus a grace).
    pub undelivered: usize,
    /// Per office.
    pub offices: Vec<FalseAlarms>,
    /// DEGRADED entries per hour, both offices together.
    pub degraded_per_hour: f64,
    /// SILENT entries per hour, both offices together.
    pub silent_per_hour: f64,
    /// Each cut's detection time in seconds (cut to SILENT in washington's
    /// status).
    pub cut_detection_s: Vec<f64>,
    /// min / median / max of those.
    pub cut_detection: Spread,
}

/// Runs the bench; `exe` is the hotline binary to run the nodes with.
pub fn run(opts: &HealthBenchOptions, exe: &Path) -> Result<HealthBenchReport, DemoError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    let line = Line::new(opts.profile.faults(), 2_000, false);
    let (dirs, _proxies) = offices(&rt, tmp.path(), &line)?;
    let _nodes = start_nodes(exe, &dirs)?;
    let clients = [wait_resumed(&dirs[0])?, wait_resumed(&dirs[1])?];
    let peers = ["pyongyang", "washington"];
    for (c, peer) in clients.iter().zip(peers) {
        c.alert_level(&AlertLevelRequest {
            peer: peer.into(),
            level: opts.level.clone(),
            reason: "bench health".into(),
        })
        .map_err(|e| DemoError::Timeout(format!("alert-level: {e}")))?;
    }
    // Let the new cadence start before the watch counts.
    std::thread::sleep(Duration::from_secs(5));

    let watch_from = unix_ms();
    let t0 = Instant::now();
    let span = Duration::from_secs_f64(opts.minutes.max(0.0) * 60.0);
    let precedences = ["priority", "routine", "immediate"];
    let mut ids: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut i = 0usize;
    let mut last_report = Instant::now();
    while t0.elapsed() < span {
        let side = i % 2;
        let req = SendRequest {
            to: peers[side].into(),
            precedence: Some(precedences[(i / 2) % 3].into()),
            subject: format!("bench health {i}"),
            body: "x".repeat(256),
            ..Default::default()
        };
        let sent = clients[side]
            .send(&req)
            .map_err(|e| DemoError::Timeout(format!("send: {e}")))?;
        ids[side].push(sent.id);
        i += 1;
        if opts.progress && last_report.elapsed() > Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "  watching: {:.0} of {:.0} s, {i} messages sent",
                t0.elapsed().as_secs_f64(),
                span.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let watched = t0.elapsed();
    // A grace for the last ones' receipts, then what is still open.
    let undelivered = wait_until(Duration::from_secs(60), "the last receipts", || {
        let open = undelivered(&clients[0], &ids[0])? + undelivered(&clients[1], &ids[1])?;
        (open == 0).then_some(0)
    })
    .or_else(|_| {
        Ok::<usize, DemoError>(
            undelivered(&clients[0], &ids[0]).unwrap_or(ids[0].len())
                + undelivered(&clients[1], &ids[1]).unwrap_or(ids[1].len()),
        )
    })?;
    let watch_to = unix_ms();
    let alarms: Vec<FalseAlarms> = dirs
        .iter()
        .map(|d| false_alarms(d, watch_from, watch_to))
        .collect::<Result<_, _>>()?;

    let mut detection = Vec::new();
    for c in 0..opts.cuts {
        if opts.progress {
            eprintln!("cut {} of {}...", c + 1, opts.cuts);
        }
        let client = &clients[0];
        wait_until(Duration::from_secs(120), "health up before the cut", || {
            peer_health(client).filter(|h| h == "up")
        })?;
        line.set_cut(true);
        let cut_at = Instant::now();
        let took = wait_until(Duration::from_secs(600), "silent after the cut", || {
            peer_health(client)
                .filter(|h| h == "silent")
                .map(|_| cut_at.elapsed())
        })?;
        detection.push(took.as_secs_f64());
        if opts.progress {
            eprintln!("  SILENT after {:.2} s", took.as_secs_f64());
        }
        line.set_cut(false);
        wait_until(
            Duration::from_secs(180),
            "the line back after the cut",
            || {
                let s = client.status().ok()?;
                s.peers
                    .first()
                    .filter(|p| p.resumed && p.health == "up")
                    .map(|_| ())
            },
        )?;
        // Not on the heels of the reconnection.
        std::thread::sleep(Duration::from_secs(3));
    }

    let hours = watched.as_secs_f64() / 3_600.0;
    let per_hour = |n: u64| if hours > 0.0 { n as f64 / hours } else { 0.0 };
    Ok(HealthBenchReport {
        profile: opts.profile,
        level: opts.level.clone(),
        minutes: watched.as_secs_f64() / 60.0,
        messages: i,
        undelivered,
        degraded_per_hour: per_hour(alarms.iter().map(|a| a.degraded).sum()),
        silent_per_hour: per_hour(alarms.iter().map(|a| a.silent).sum()),
        offices: alarms,
        cut_detection: Spread::of(detection.clone()),
        cut_detection_s: detection,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn peer_health(c: &ControlClient) -> Option<String> {
    c.status().ok()?.peers.first().map(|p| p.health.clone())
}

/// How many of `ids` the node's outbox does not show as delivered.
fn undelivered(c: &ControlClient, ids: &[String]) -> Option<usize> {
    let outbox = c.outbox().ok()?;
    let delivered: std::collections::HashSet<&str> = outbox
        .iter()
        .filter(|o| o.state == OutState::Delivered)
        .map(|o| o.id.as_str())
        .collect();
    Some(
        ids.iter()
            .filter(|id| !delivered.contains(id.as_str()))
            .count(),
    )
}

/// The DEGRADED and SILENT entries and lost connections in `dir`'s log
/// between `from` and `to` (Unix ms).
fn false_alarms(dir: &OfficeDir, from: u64, to: u64) -> Result<FalseAlarms, DemoError> {
    let mut a = FalseAlarms {
        office: dir
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        degraded: 0,
        silent: 0,
        reconnections: 0,
    };
    crate::audit::scan(&dir.log(), |e| {
        if !(from..=to).contains(&e.entry.time_unix_ms) {
            return;
        }
        match &e.entry.event {
            Some(Event::LinkHealth(h)) if h.state == "degraded" => a.degraded += 1,
            Some(Event::LinkHealth(h)) if h.state == "silent" => a.silent += 1,
            Some(Event::LinkChanged(l))
                if l.state == crate::wire::proto::LinkState::Down as i32 =>
            {
                a.reconnections += 1
            }
            _ => {}
        }
    })
    .map_err(|e| DemoError::Timeout(format!("reading {}: {e}", dir.log().display())))?;
    Ok(a)
}
