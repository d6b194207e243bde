//! Two real node processes on the emulated long, lossy line: the
//! project's fault-injecting proxy with 100±30 ms each way, 10 % loss, 1 %
//! duplication and 5 % reordering (the satellite profile), and on a
//! narrowband backup circuit (64 kbit/s, 300 ms each way, 2 % loss). QUIC
//! and TLS run end to end through it.
//!
//! What is asserted is behaviour (one copy per message, no class starved,
//! deadlines met, levels kept, health honest, exit codes); wall-clock
//! waits are bounds, several times what the behaviour needs. The figures
//! these runs print are quoted in docs/reliability.md.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    assert_each_delivered_once, assert_logs_verify_and_agree, hotline, listen_addr, setup_with,
    Node, BIN,
};
use hotline::bench_line::LineProfile;
use hotline::control::api::AlertLevelRequest;
use hotline::control::SendRequest;
use hotline::core::OutState;
use hotline::drill::proxy::{Faults, Line, Proxy};

/// The satellite hop of the issue (the bench's `satellite` profile).
fn satellite() -> Faults {
    LineProfile::Satellite.faults()
}

/// Two offices joined only through the emulated line (both dial through
/// it). The runtime drives the proxies and must outlive the test.
struct World {
    _rt: tokio::runtime::Runtime,
    _proxies: (Proxy, Proxy),
    line: Line,
    _tmp: tempfile::TempDir,
    a_dir: PathBuf,
    b_dir: PathBuf,
}

fn world(faults: Faults, seed: u64) -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let line = Line::new(faults, seed, false);
    let to_b = rt.block_on(Proxy::bind(line.clone())).unwrap();
    let to_a = rt.block_on(Proxy::bind(line.clone())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = setup_with(
        tmp.path(),
        Some((to_b.addr.to_string(), to_a.addr.to_string())),
    );
    to_b.set_target(listen_addr(&b_dir));
    to_a.set_target(listen_addr(&a_dir));
    World {
        _rt: rt,
        _proxies: (to_b, to_a),
        line,
        _tmp: tmp,
        a_dir,
        b_dir,
    }
}

/// Waits (bounded) until `f` holds for washington's view of pyongyang.
fn wait_status(
    node: &Node,
    what: &str,
    bound: Duration,
    f: impl Fn(&hotline::control::api::PeerStatus) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = node.client().status() {
            if s.peers.first().is_some_and(&f) {
                return t0.elapsed();
            }
        }
        assert!(t0.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(node: &Node, precedence: &str, n: usize, body_len: usize) -> String {
    let req = SendRequest {
        to: "pyongyang".into(),
        precedence: Some(precedence.into()),
        subject: format!("{precedence} {n}"),
        body: "x".repeat(body_len),
        ..Default::default()
    };
    node.client().send(&req).expect("send accepted").id
}

fn set_level(dir: &Path, level: &str) {
    let c =
        hotline::control::ControlClient::from_dir(&hotline::identity::OfficeDir::new(dir)).unwrap();
    c.alert_level(&AlertLevelRequest {
        peer: peer_of(dir),
        level: level.into(),
        reason: "drill".into(),
    })
    .expect("level set");
}

fn peer_of(dir: &Path) -> String {
    if dir.ends_with("washington") {
        "pyongyang".into()
    } else {
        "washington".into()
    }
}

#[test]
fn a_backlog_on_the_lossy_line_drains_without_copies_and_starves_no_class() {
    let report = backlog_drains_then_idle_meets_deadlines(satellite(), 18, 300, 400);
    eprintln!("satellite line: {report}");
}

#[test]
fn a_backlog_on_the_narrowband_circuit_drains_without_copies_and_starves_no_class() {
    let report =
        backlog_drains_then_idle_meets_deadlines(LineProfile::Narrowband.faults(), 64, 20, 300);
    eprintln!("narrowband circuit: {report}");
}

/// `n` PRIORITY and `n` ROUTINE messages of 1,500 B submitted at once
/// drain within `bound_s` with one copy each and ROUTINE moving while
/// PRIORITY still has a backlog; then one new message of each precedence
/// is receipted within its first deadline. Returns the figures.
fn backlog_drains_then_idle_meets_deadlines(
    faults: Faults,
    seed: u64,
    n: usize,
    bound_s: u64,
) -> String {
    let w = world(faults, seed);
    let a = Node::start(&w.a_dir);
    let _b = Node::start(&w.b_dir);
    wait_status(&a, "line up", Duration::from_secs(60), |p| p.resumed);
    let body = 1_500;
    let t0 = Instant::now();
    let mut precedence_of = HashMap::new();
    for i in 0..n {
        precedence_of.insert(send(&a, "priority", i, body), "priority");
        precedence_of.insert(send(&a, "routine", i, body), "routine");
    }
    // Watch the outbox: when each message was first seen delivered.
    let mut delivered_at: HashMap<String, Duration> = HashMap::new();
    let outbox = loop {
        let outbox = a.client().outbox().unwrap();
        for o in &outbox {
            if o.state == OutState::Delivered {
                delivered_at.entry(o.id.clone()).or_insert(t0.elapsed());
            }
        }
        if delivered_at.len() == 2 * n {
            break outbox;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(bound_s),
            "only {} of {} delivered after {bound_s} s",
            delivered_at.len(),
            2 * n
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let drained = t0.elapsed();
    // One copy each: QUIC retransmitted what the line lost.
    let copies: Vec<u32> = outbox.iter().map(|o| o.attempts).collect();
    assert!(
        copies.iter().all(|&c| c == 1),
        "one copy per message on a connection that lived; most {:?}",
        copies.iter().max()
    );
    // ROUTINE made progress while PRIORITY still had a backlog.
    let last = |p: &str| {
        delivered_at
            .iter()
            .filter(|(id, _)| precedence_of[id.as_str()] == p)
            .map(|(_, t)| *t)
            .max()
            .unwrap()
    };
    let last_priority = last("priority");
    let routine_before = delivered_at
        .iter()
        .filter(|(id, t)| precedence_of[id.as_str()] == "routine" && **t < last_priority)
        .count();
    assert!(
        routine_before >= n / 3,
        "only {routine_before} of {n} ROUTINE delivered before the PRIORITY backlog drained"
    );
    // Bytes on the wire, both ways, for about 2n × 1.6 KB of messages.
    let (up, down) = w.line.bytes();
    let wire = up + down;
    let payload = (2 * n * body) as u64;
    assert!(
        wire < 3 * payload,
        "{wire} bytes on the wire for {payload} bytes of bodies"
    );
    // After the backlog: a new message of each precedence on the idle
    // channel is receipted within its first deadline.
    let mut idle = Vec::new();
    for (p, deadline_s) in [
        ("flash", 5),
        ("immediate", 10),
        ("priority", 30),
        ("routine", 60),
    ] {
        let t = Instant::now();
        let out = hotline(&[
            "send",
            "--dir",
            w.a_dir.to_str().unwrap(),
            "--to",
            "pyongyang",
            "--precedence",
            p,
            "--subject",
            "after the backlog",
            "one more",
            "--wait",
            "--timeout",
            &deadline_s.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{p} after the backlog not receipted within {deadline_s} s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        idle.push((p, t.elapsed()));
    }
    format!(
        "{} messages of {body} B drained in {drained:.1?}; ROUTINE before the last \
         PRIORITY: {routine_before}/{n}; wire {wire} B for {payload} B of bodies ({:.2}×); \
         after the backlog: {idle:?}",
        2 * n,
        wire as f64 / payload as f64
    )
}

#[test]
fn the_peer_lowering_its_level_leaves_ours_and_a_cut_is_still_seen_at_crisis_speed() {
    let w = world(satellite(), 19);
    let a = Node::start(&w.a_dir);
    let _b = Node::start(&w.b_dir);
    wait_status(&a, "line up", Duration::from_secs(60), |p| p.resumed);
    set_level(&w.a_dir, "crisis");
    set_level(&w.b_dir, "crisis");
    set_level(&w.b_dir, "normal");
    wait_status(
        &a,
        "the peer's NORMAL arrives",
        Duration::from_secs(60),
        |p| p.peer_alert_level == "normal",
    );
    let p = &a.client().status().unwrap().peers[0];
    assert_eq!(
        (p.own_alert_level.as_str(), p.alert_level.as_str()),
        ("crisis", "crisis"),
        "the peer cannot lower our level"
    );
    // Checks stay at the CRISIS cadence: a cut is SILENT within seconds,
    // not the ~3 minutes NORMAL would take.
    wait_status(&a, "health up", Duration::from_secs(60), |p| {
        p.health == "up"
    });
    w.line.set_cut(true);
    let took = wait_status(&a, "silent after the cut", Duration::from_secs(30), |p| {
        p.health == "silent"
    });
    eprintln!("cut seen as SILENT after {took:.2?} at CRISIS");
}

#[test]
fn a_node_restarted_during_a_cut_starts_checking_not_up() {
    let w = world(satellite(), 20);
    let mut a = Node::start(&w.a_dir);
    let _b = Node::start(&w.b_dir);
    wait_status(&a, "health up", Duration::from_secs(60), |p| {
        p.health == "up"
    });
    w.line.set_cut(true);
    a.kill9();
    let a = Node::start(&w.a_dir);
    let p = &a.client().status().unwrap().peers[0];
    assert_eq!(
        (p.link.as_str(), p.health.as_str()),
        ("down", "checking"),
        "a restart forgets nothing it did not know"
    );
    w.line.set_cut(false);
    wait_status(&a, "up once answered", Duration::from_secs(120), |p| {
        p.health == "up"
    });
}

#[test]
fn send_wait_past_two_minutes_with_the_peer_down_exits_4_with_the_id() {
    let w = world(satellite(), 21);
    let _a = Node::start(&w.a_dir); // pyongyang never starts
    let t = Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "send",
            "--dir",
            w.a_dir.to_str().unwrap(),
            "--to",
            "pyongyang",
            "--subject",
            "are you there",
            "x",
            "--wait",
            "--timeout",
            "125",
        ])
        .output()
        .unwrap();
    let waited = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "the id on stdout: {id:?}"
    );
    assert!(
        waited >= Duration::from_secs(125),
        "waited as long as asked: {waited:?}"
    );
}

/// The chaos run on the satellite line: messages both ways while
/// either node is SIGKILLed and restarted and the line is cut and restored.
/// Afterwards every message is delivered exactly once, both logs verify
/// and agree, and the time from the last heal (the last restart or
/// restore) to the last receipt is printed. Sends are paced
/// (`HOTLINE_CHAOS_PER_SECOND`, default 20) so that the kills and cuts
/// fall among traffic the line could carry, as in the run, rather
/// than after a burst it could not. The default is a short run;
/// docs/reliability.md quotes the full one:
/// `HOTLINE_CHAOS_MESSAGES=2500 HOTLINE_CHAOS_KILLS=15 HOTLINE_CHAOS_CUTS=2
/// cargo test --release --test lossy_line chaos -- --nocapture`.
#[test]
fn chaos_on_the_satellite_line_loses_nothing_and_settles_soon_after_the_last_heal() {
    use rand::{Rng, SeedableRng};
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let messages = env("HOTLINE_CHAOS_MESSAGES", 200).max(20);
    let kills = env("HOTLINE_CHAOS_KILLS", 3);
    let cuts = env("HOTLINE_CHAOS_CUTS", 1);
    let seed = env("HOTLINE_CHAOS_SEED", 1962) as u64;
    let per_second = env("HOTLINE_CHAOS_PER_SECOND", 20).max(1) as f64;
    let w = world(satellite(), seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // What happens before message i: a kill of side 0 or 1, or a cut.
    #[derive(Debug, PartialEq)]
    enum Chaos {
        Kill(usize),
        Cut,
        Restore,
    }
    let mut plan: Vec<(usize, Chaos)> = (0..kills)
        .map(|_| (rng.gen_range(1..messages), Chaos::Kill(rng.gen_range(0..2))))
        .collect();
    let cut_len = (messages / 20).max(10);
    for _ in 0..cuts {
        let at = rng.gen_range(1..messages.saturating_sub(cut_len).max(2));
        plan.push((at, Chaos::Cut));
        plan.push((at + cut_len, Chaos::Restore));
    }
    plan.sort_by_key(|(at, c)| (*at, matches!(c, Chaos::Restore)));
    let dirs = [w.a_dir.clone(), w.b_dir.clone()];
    let peers = ["pyongyang", "washington"];
    let mut nodes = [Node::start(&dirs[0]), Node::start(&dirs[1])];
    wait_status(&nodes[0], "line up", Duration::from_secs(60), |p| p.resumed);
    let precedences = ["routine", "priority", "immediate", "routine", "priority"];
    let mut accepted: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let t0 = Instant::now();
    let mut last_heal = t0;
    let mut cut_open = 0usize;
    for i in 0..messages {
        let due = t0 + Duration::from_secs_f64(i as f64 / per_second);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        for (_, c) in plan.iter().filter(|(at, _)| *at == i) {
            match c {
                Chaos::Kill(s) => {
                    nodes[*s].kill9();
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
                    nodes[*s] = Node::start(&dirs[*s]);
                    last_heal = Instant::now();
                }
                Chaos::Cut => {
                    cut_open += 1;
                    w.line.set_cut(true);
                }
                Chaos::Restore => {
                    cut_open = cut_open.saturating_sub(1);
                    if cut_open == 0 {
                        w.line.set_cut(false);
                        last_heal = Instant::now();
                    }
                }
            }
        }
        let side = i % 2;
        let precedence = if i % 97 == 0 {
            "flash"
        } else {
            precedences[(i / 2) % precedences.len()]
        };
        let req = SendRequest {
            to: peers[side].into(),
            precedence: Some(precedence.into()),
            subject: format!("chaos {i}"),
            body: "x".repeat(256),
            ..Default::default()
        };
        accepted[side].push(nodes[side].client().send(&req).expect("send accepted").id);
    }
    let sent_all = Instant::now();
    let bound = Duration::from_secs(300 + messages as u64 / 5);
    loop {
        let open: usize = nodes
            .iter()
            .map(|n| n.client().status().unwrap().peers[0].outbox)
            .sum();
        if open == 0 {
            break;
        }
        assert!(
            t0.elapsed() < bound + sent_all.duration_since(t0),
            "{open} of {messages} still unreceipted {:?} after the last send",
            sent_all.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_heal = last_heal.elapsed();
    let after_send = sent_all.elapsed();
    for n in &mut nodes {
        assert!(n.terminate().success());
    }
    assert_each_delivered_once(&accepted[0], &dirs[0], &dirs[1]);
    assert_each_delivered_once(&accepted[1], &dirs[1], &dirs[0]);
    assert_logs_verify_and_agree(&dirs[0], &dirs[1]);
    eprintln!(
        "chaos: {messages} messages both ways, {kills} kills, {cuts} cuts, sent in {:.1?}; \
         all receipted {after_heal:.1?} after the last heal, {after_send:.1?} after the last send",
        sent_all.duration_since(t0)
    );
}
