//! `hotline bench soak`: a long paced run between two node processes of
//! this binary, through the control API, reporting each node's resident
//! memory and the throughput every `report_every` messages.
//!
//! What it answers: does a node's memory stay flat as its history grows
//! (issue 12's target: under 64 MiB, flat, at 10^6 and 10^7 messages), and
//! does throughput stay flat (the last tenth within 10 % of the first)?
//!
//! The run is paced to stay under the unreceipted limit: senders pause
//! while the sender's outbox holds more than [`MAX_IN_FLIGHT`] messages,
//! or (when the receiver acknowledges) more than that await an
//! acknowledgement. By default the receiving office's officer acknowledges
//! every message as it arrives (an acknowledging thread reading the inbox
//! page by page), so that the history settles as on a working line; with
//! `acknowledge` off nobody does, and the sender keeps an escalation track
//! for each message.
//! Messages go one way (washington to pyongyang), ROUTINE, `size`-byte
//! bodies, from `senders` threads each with its own control connection.
//! Memory is VmRSS from `/proc/PID/status` (Linux).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench_line::{start_nodes, wait_resumed, wait_until};
use crate::control::api::SendRequest;
use crate::control::ControlClient;
use crate::demo::DemoError;
use crate::identity::{OfficeDir, OfficeName};

/// Unreceipted messages the sender may hold before the senders pause (well
/// under the core's limit of 100,000).
pub const MAX_IN_FLIGHT: usize = 5_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Messages in all.
    pub messages: u64,
    /// Body bytes.
    pub size: usize,
    /// A report row every this many messages.
    pub report_every: u64,
    /// Sending threads.
    pub senders: usize,
    /// The receiver acknowledges every message.
    pub acknowledge: bool,
    /// Print progress on stderr.
    pub progress: bool,
}

/// One report row.
#[derive(Debug, Clone, Serialize)]
pub struct SoakRow {
    /// Messages accepted so far.
    pub messages: u64,
    /// Seconds since the first send.
    pub elapsed_s: f64,
    /// Messages per second since the previous row.
    pub rate_per_s: f64,
    /// The sender's (washington's) resident memory, MiB.
    pub sender_rss_mib: f64,
    /// The receiver's (pyongyang's) resident memory, MiB.
    pub receiver_rss_mib: f64,
    /// Unreceipted at the sender when the row was taken.
    pub in_flight: usize,
    /// Awaiting acknowledgement at the sender when the row was taken.
    pub awaiting_ack: usize,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Messages.
    pub messages: u64,
    /// Body bytes.
    pub size: usize,
    /// Sending threads.
    pub senders: usize,
    /// Whether the receiver acknowledged every message.
    pub acknowledged: bool,
    /// Resident memory of each node right after its line came up, MiB.
    pub start_rss_mib: [f64; 2],
    /// A row every `report_every` messages, and one at the end (all
    /// delivered).
    pub rows: Vec<SoakRow>,
    /// Throughput of the last tenth of the rows over the first tenth.
    pub rate_last_over_first: Option<f64>,
    /// Memory growth per message from the first row to the last, bytes
    /// (sender, receiver).
    pub rss_bytes_per_message: [f64; 2],
    /// Bytes of each office's log at the end.
    pub log_bytes: [u64; 2],
}

/// Two offices on loopback that dial each other directly.
fn offices(root: &Path) -> Result<[OfficeDir; 2], DemoError> {
    let names = ["washington", "pyongyang"];
    let dirs = names.map(|n| OfficeDir::new(root.join(n)));
    for (dir, name) in dirs.iter().zip(names) {
        let name = OfficeName::new(name).map_err(|e| DemoError::Timeout(e.to_string()))?;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        dir.init_with_role(&name, &format!("127.0.0.1:{port}"), "office")?;
    }
    dirs[0].add_peer(&dirs[1].card(), None, false)?;
    dirs[1].add_peer(&dirs[0].card(), None, false)?;
    for d in &dirs {
        let mut cfg = d.load_config()?;
        cfg.control = "127.0.0.1:0".into();
        d.save_config(&cfg)?;
    }
    Ok(dirs)
}

/// Resident memory of process `pid`, MiB (0 when unreadable).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn in_flight(c: &ControlClient) -> Option<usize> {
    let s = c.status().ok()?;
    Some(s.peers.iter().map(|p| p.outbox).sum())
}

fn awaiting_ack(c: &ControlClient) -> Option<usize> {
    let s = c.status().ok()?;
    Some(s.peers.iter().map(|p| p.awaiting_ack).sum())
}

/// The receiving officer: acknowledges every message as it arrives, until
/// `total` are, or `stop` is set. Each round walks the inbox back from the
/// newest page to the last message it saw, so none is missed however far
/// it falls behind.
fn acknowledge_all(c: &ControlClient, total: u64, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use crate::history::views::Page;
    let mut acked = 0u64;
    // Messages at or below this log index were all seen.
    let mut seen_through: Option<u64> = None;
    while acked < total && !stop.load(Ordering::SeqCst) {
        let mut fresh = Vec::new();
        let mut before = None;
        'pages: loop {
            let page = Page {
                limit: 1000,
                before,
                ..Default::default()
            };
            let items = c.inbox_page(&page).unwrap_or_default();
            let full = items.len() == 1000;
            for e in items {
                if seen_through.is_some_and(|s| e.log_index <= s) {
                    break 'pages;
                }
                before = Some(e.log_index);
                fresh.push(e);
            }
            if !full {
                break;
            }
        }
        let Some(newest) = fresh.first().map(|e| e.log_index) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Oldest first, as an officer works through a queue.
        for e in fresh.iter().rev().filter(|e| !e.acknowledged) {
            let req = crate::control::api::AckRequest {
                id: e.id.clone(),
                note: "Seen.".into(),
                response: Some("information".into()),
            };
            // A failed acknowledgement is tried again a few times; one that
            // never succeeds leaves the run waiting, which then says so.
            for _ in 0..5 {
                if c.ack(&req).is_ok() {
                    acked += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        seen_through = Some(newest);
    }
    acked
}

/// Runs the soak with node processes of `exe`.
pub fn run(opts: &SoakOptions, exe: &Path) -> Result<SoakReport, DemoError> {
    let tmp = tempfile::tempdir()?;
    let dirs = offices(tmp.path())?;
    let nodes = start_nodes(exe, &dirs)?;
    let pids = [nodes[0].pid(), nodes[1].pid()];
    let client = wait_resumed(&dirs[0])?;
    wait_resumed(&dirs[1])?;
    let start_rss_mib = [rss_mib(pids[0]), rss_mib(pids[1])];

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let officer = if opts.acknowledge {
        let c = ControlClient::from_dir(&dirs[1])
            .map_err(|e| DemoError::Timeout(format!("control client: {e}")))?;
        let (total, stop) = (opts.messages, stop.clone());
        Some(std::thread::spawn(move || {
            acknowledge_all(&c, total, &stop)
        }))
    } else {
        None
    };
    let acknowledge = opts.acknowledge;
    let body = "x".repeat(opts.size);
    let t0 = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..opts.senders.max(1) {
        let c = ControlClient::from_dir(&dirs[0])
            .map_err(|e| DemoError::Timeout(format!("control client: {e}")))?;
        let (sent, failed, body, total) =
            (sent.clone(), failed.clone(), body.clone(), opts.messages);
        threads.push(std::thread::spawn(move || {
            let mut since_check = 0u32;
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return;
                }
                since_check += 1;
                if since_check >= 200 {
                    since_check = 0;
                    let busy = |c: &ControlClient| {
                        in_flight(c).is_some_and(|f| f > MAX_IN_FLIGHT)
                            || (acknowledge && awaiting_ack(c).is_some_and(|a| a > MAX_IN_FLIGHT))
                    };
                    while busy(&c) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                let req = SendRequest {
                    to: "pyongyang".into(),
                    precedence: Some("routine".into()),
                    subject: format!("soak {n}"),
                    body: body.clone(),
                    ..Default::default()
                };
                if c.send(&req).is_err() {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    let mut rows = Vec::new();
    let mut last = (0u64, 0.0f64);
    let mut row = |done: u64, rows: &mut Vec<SoakRow>| {
        let elapsed = t0.elapsed().as_secs_f64();
        let rate = (done - last.0) as f64 / (elapsed - last.1).max(1e-9);
        last = (done, elapsed);
        let r = SoakRow {
            messages: done,
            elapsed_s: elapsed,
            rate_per_s: rate,
            sender_rss_mib: rss_mib(pids[0]),
            receiver_rss_mib: rss_mib(pids[1]),
            in_flight: in_flight(&client).unwrap_or(0),
            awaiting_ack: awaiting_ack(&client).unwrap_or(0),
        };
        if opts.progress {
            eprintln!(
                "  {:>10} messages  {:>7.1} s  {:>8.0} msg/s  RSS sender {:>6.1} MiB  receiver {:>6.1} MiB  in flight {}  awaiting ack {}",
                r.messages, r.elapsed_s, r.rate_per_s, r.sender_rss_mib, r.receiver_rss_mib, r.in_flight, r.awaiting_ack
            );
        }
        rows.push(r);
    };
    let mut next = opts.report_every.max(1);
    loop {
        let done = sent.load(Ordering::SeqCst).min(opts.messages);
        if done >= next.min(opts.messages) && next <= opts.messages {
            row(done, &mut rows);
            next = next.saturating_add(opts.report_every.max(1));
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in threads {
        let _ = t.join();
    }
    let failures = failed.load(Ordering::SeqCst);
    if failures > 0 {
        return Err(DemoError::Timeout(format!("{failures} sends failed")));
    }
    wait_until(Duration::from_secs(600), "every receipt", || {
        (in_flight(&client)? == 0).then_some(())
    })?;
    if let Some(officer) = officer {
        let waited = wait_until(Duration::from_secs(600), "every acknowledgement", || {
            (awaiting_ack(&client)? == 0).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        let _ = officer.join();
        waited?;
    }
    row(opts.messages, &mut rows);

    let tenth = (rows.len() / 10).max(1);
    let rate_last_over_first = (rows.len() >= 4).then(|| {
        // The first and last full rows (the final one counts the drain).
        let full = &rows[..rows.len() - 1];
        let n = (full.len() / 10).max(1).min(tenth);
        let avg = |rs: &[SoakRow]| rs.iter().map(|r| r.rate_per_s).sum::<f64>() / rs.len() as f64;
        avg(&full[full.len() - n..]) / avg(&full[..n])
    });
    let per_message = |f: fn(&SoakRow) -> f64| match (rows.first(), rows.last()) {
        (Some(a), Some(b)) if b.messages > a.messages => {
            (f(b) - f(a)) * 1024.0 * 1024.0 / (b.messages - a.messages) as f64
        }
        _ => 0.0,
    };
    let log_bytes = [
        crate::audit::segments::total_len(&dirs[0].log()).unwrap_or(0),
        crate::audit::segments::total_len(&dirs[1].log()).unwrap_or(0),
    ];
    drop(nodes);
    Ok(SoakReport {
        messages: opts.messages,
        size: opts.size,
        senders: opts.senders.max(1),
        acknowledged: opts.acknowledge,
        start_rss_mib,
        rss_bytes_per_message: [
            per_message(|r| r.sender_rss_mib),
            per_message(|r| r.receiver_rss_mib),
        ],
        rows,
        rate_last_over_first,
        log_bytes,
    })
}
