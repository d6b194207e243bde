//! Snapshots with real node processes: a node killed at random points over
//! many snapshot cycles (some of them mid-write) restarts to exactly the
//! state a full replay of its log gives, and a damaged snapshot is set
//! aside loudly with nothing lost.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hotline::control::api::SendRequest;
use hotline::control::ControlClient;
use hotline::identity::OfficeDir;
use hotline::node::offline;
use rand::{Rng, SeedableRng};

/// Checkpoints every few entries and snapshots every few more, so that a
/// short run goes through many snapshot cycles.
fn snapshot_often(dir: &Path) {
    let d = OfficeDir::new(dir);
    let mut cfg = d.load_config().unwrap();
    cfg.timing.checkpoint_every = 4;
    cfg.timing.checkpoint_interval_ms = 200;
    cfg.timing.snapshot_every = 6;
    d.save_config(&cfg).unwrap();
}

/// Where the state a node starts with (from its snapshot when it can)
/// differs from a full replay of its log, line by line; and whether it
/// started from a snapshot. Reads the directory exactly as a node does at
/// start (it cuts a torn tail off, catches its index up).
fn start_state_vs_full_replay(dir: &Path) -> (Option<String>, Option<u64>) {
    let office = OfficeDir::new(dir).load().unwrap();
    let load = offline::open_for_node(&office).unwrap();
    let full = offline::replay_all(&office).unwrap();
    let (a, b) = (load.core.fold_digest(), full.fold_digest());
    let diff = (a != b).then(|| {
        a.lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(6)
            .map(|(x, y)| format!("start  {x}\nreplay {y}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    (diff, load.snapshot.map(|(k, _)| k))
}

/// Sends to `to` through `dir`'s node until told to stop, keeping the ids
/// the node accepted; a killed node's refusals are expected and skipped.
fn keep_sending(
    dir: PathBuf,
    to: &'static str,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(c) = ControlClient::from_dir(&OfficeDir::new(&dir)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            n += 1;
            let req = SendRequest {
                to: to.into(),
                subject: format!("snapshot cycle message {n}"),
                body: "x".repeat(200),
                ..Default::default()
            };
            match c.send(&req) {
                Ok(r) => accepted.lock().unwrap().push(r.id),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

#[test]
fn a_node_killed_at_random_points_restarts_from_its_snapshot_to_exactly_the_full_replay() {
    let seed: u64 = std::env::var("HOTLINE_SNAPSHOT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (HOTLINE_SNAPSHOT_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = setup(tmp.path());
    snapshot_often(&a);
    snapshot_often(&b);
    let mut nodes = [Node::start(&a), Node::start(&b)];
    let dirs = [a.clone(), b.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = [
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    ];
    let senders = [
        keep_sending(a.clone(), "pyongyang", stop.clone(), sent[0].clone()),
        keep_sending(b.clone(), "washington", stop.clone(), sent[1].clone()),
    ];

    const CYCLES: usize = 12;
    let mut from_snapshot = 0;
    for cycle in 0..CYCLES {
        let v = cycle % 2;
        // Kill the victim at a random moment of its traffic: between
        // snapshots, or while one is written.
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_500)));
        nodes[v].kill9();
        let (diff, snapshot) = start_state_vs_full_replay(&dirs[v]);
        if let Some(diff) = diff {
            panic!("seed {seed}, cycle {cycle}: the start state is not the full replay's:\n{diff}");
        }
        if snapshot.is_some() {
            from_snapshot += 1;
        }
        nodes[v] = Node::start(&dirs[v]);
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert!(
        from_snapshot >= CYCLES / 2,
        "seed {seed}: only {from_snapshot} of {CYCLES} restarts started from a snapshot"
    );

    // Nothing was lost or doubled through all of it.
    let accepted: Vec<Vec<String>> = sent.iter().map(|s| s.lock().unwrap().clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && nodes.iter().any(|n| {
            n.client()
                .status()
                .map(|s| s.peers.iter().any(|p| p.outbox > 0))
                .unwrap_or(true)
        })
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for n in &mut nodes {
        assert!(n.terminate().success());
    }
    assert!(accepted[0].len() > 20 && accepted[1].len() > 20);
    assert_each_delivered_once(&accepted[0], &a, &b);
    assert_each_delivered_once(&accepted[1], &b, &a);
    assert_logs_verify_and_agree(&a, &b);
    // A clean stop leaves a snapshot the next start uses, equal to a full
    // replay.
    for dir in [&a, &b] {
        let (diff, snapshot) = start_state_vs_full_replay(dir);
        assert_eq!(diff, None);
        assert!(snapshot.is_some(), "no snapshot after a clean stop");
    }
}

#[test]
fn a_damaged_snapshot_is_set_aside_loudly_and_the_node_starts_from_the_whole_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = setup(tmp.path());
    snapshot_often(&a);
    snapshot_often(&b);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    let c = na.client();
    let mut ids = Vec::new();
    for n in 0..30 {
        let r = c
            .send(&SendRequest {
                to: "pyongyang".into(),
                subject: format!("before the damage {n}"),
                body: "body".into(),
                wait: true,
                ..Default::default()
            })
            .unwrap();
        ids.push(r.id);
    }
    assert!(nb.terminate().success());
    let d = OfficeDir::new(&b);
    let (_, snapshot) = start_state_vs_full_replay(&b);
    assert!(snapshot.is_some(), "pyongyang wrote no snapshot");
    let inbox_before = nb_inbox(&b);
    assert_eq!(inbox_before.len(), 30);

    // A bit flips in the newest snapshot.
    let mut bytes = std::fs::read(d.snapshot()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(d.snapshot(), &bytes).unwrap();

    let log = tmp.path().join("pyongyang-after.log");
    let mut nb = Node::start_logging_to(&b, &log);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("cannot be used") && said.contains("replaying the whole log"),
        "the node did not say it set the snapshot aside:\n{said}"
    );
    assert!(said.contains("no usable snapshot; replayed all"), "{said}");
    // Nothing lost: the same inbox, and more traffic flows.
    let r = c
        .send(&SendRequest {
            to: "pyongyang".into(),
            subject: "after the damage".into(),
            body: "body".into(),
            wait: true,
            ..Default::default()
        })
        .unwrap();
    assert!(r.delivered.is_some());
    ids.push(r.id);
    let inbox = nb.client().inbox().unwrap();
    assert_eq!(inbox.len(), 31);
    for id in &inbox_before {
        assert!(inbox.iter().any(|m| &m.id == id), "{id} lost");
    }
    assert!(nb.terminate().success());
    assert!(na.terminate().success());
    assert_each_delivered_once(&ids, &a, &b);
    assert_logs_verify_and_agree(&a, &b);
    // The stop wrote a good snapshot again.
    let (diff, snapshot) = start_state_vs_full_replay(&b);
    assert_eq!(diff, None);
    assert!(snapshot.is_some());
}

/// The ids in an office's inbox, read while its node is stopped.
fn nb_inbox(dir: &Path) -> Vec<String> {
    let out = hotline(&[
        "inbox",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
        "--limit",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .or_else(|| v["messages"].as_array())
        .expect("an array of messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}
