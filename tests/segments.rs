//! The segmented log with real node processes: sealed segments end with a
//! checkpoint, every audit verb reads across them, `audit verify
//! --from-checkpoint` starts at the newest sealed segment, and a node
//! whose log is one file (the layout before segments) keeps working.

mod common;

use std::path::Path;

use common::*;
use hotline::audit::segments;
use hotline::control::api::SendRequest;
use hotline::identity::OfficeDir;
use hotline::wire::proto::log_entry::Event;

fn configure(dir: &Path, segment_bytes: u64) {
    let d = OfficeDir::new(dir);
    let mut cfg = d.load_config().unwrap();
    cfg.storage.segment_bytes = segment_bytes;
    cfg.timing.checkpoint_every = 8;
    d.save_config(&cfg).unwrap();
}

fn send_n(from: &Node, n: usize, tag: &str) -> Vec<String> {
    let c = from.client();
    (0..n)
        .map(|i| {
            let r = c
                .send(&SendRequest {
                    to: "pyongyang".into(),
                    subject: format!("{tag} {i}"),
                    body: "y".repeat(300),
                    wait: true,
                    ..Default::default()
                })
                .unwrap();
            assert!(r.delivered.is_some());
            r.id
        })
        .collect()
}

fn run_json(args: &[&str]) -> (i32, serde_json::Value) {
    let out = hotline(args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// (index, is a checkpoint) of the last entry of each sealed segment.
fn seal_entries(log: &Path) -> Vec<(u64, bool)> {
    let segs = segments::list(log).unwrap();
    let mut last_in: Vec<Option<(u64, bool)>> = vec![None; segs.len()];
    hotline::audit::scan(log, |e| {
        let k = segs.partition_point(|s| s.start <= e.offset) - 1;
        last_in[k] = Some((
            e.entry.index,
            matches!(e.entry.event, Some(Event::CheckpointIssued(_))),
        ));
    })
    .unwrap();
    let sealed = segs.len() - 1;
    last_in
        .into_iter()
        .take(sealed)
        .map(Option::unwrap)
        .collect()
}

#[test]
fn sealed_segments_end_at_checkpoints_and_every_audit_verb_reads_across_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = setup(tmp.path());
    configure(&a, 4096);
    configure(&b, 4096);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    let ids = send_n(&na, 60, "segmented");
    assert!(nb.terminate().success());
    let log = OfficeDir::new(&b).log();
    let segs = segments::list(&log).unwrap();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let seals = seal_entries(&log);
    assert!(
        seals.iter().all(|(_, cp)| *cp),
        "a sealed segment ends with something other than a checkpoint: {seals:?}"
    );
    // A restart from the snapshot reads on into the segments.
    let mut nb = Node::start(&b);
    let more = send_n(&na, 5, "after restart");
    assert!(nb.terminate().success());
    assert!(na.terminate().success());
    let dir = b.to_str().unwrap();

    // Full verify: every segment, and it saves its state at the newest seal.
    let (code, full) = run_json(&["audit", "verify", dir, "--json"]);
    assert_eq!(code, 0, "{full}");
    let entries = full["entries"].as_u64().unwrap();
    let mut scanned = 0;
    hotline::audit::scan(&log, |_| scanned += 1).unwrap();
    assert_eq!(entries, scanned);
    assert!(full.get("from_checkpoint").is_none());
    let state = hotline::audit::verified::load(&log)
        .unwrap()
        .expect("state saved");
    let last_seal = seal_entries(&log).last().unwrap().0;
    assert_eq!(state.checkpoint_index, last_seal);

    // Incremental: from that seal, the same verdict, root and totals.
    let (code, inc) = run_json(&["audit", "verify", dir, "--from-checkpoint", "--json"]);
    assert_eq!(code, 0, "{inc}");
    assert_eq!(inc["from_checkpoint"].as_u64(), Some(last_seal));
    for k in [
        "entries",
        "root",
        "checkpoints",
        "signatures",
        "cosignatures",
    ] {
        assert_eq!(inc[k], full[k], "{k}");
    }

    // Export and prove reach the first segment and the last.
    let out = hotline(&["audit", "export", dir]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        entries
    );
    for id in [&ids[0], more.last().unwrap()] {
        let proof = tmp.path().join(format!("{id}.proof.json"));
        let out = hotline(&[
            "audit",
            "prove",
            dir,
            "--msg",
            id,
            "--out",
            proof.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = hotline(&[
            "audit",
            "verify-proof",
            proof.to_str().unwrap(),
            "--card",
            b.join("office-card.toml").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_each_delivered_once(&[ids, more].concat(), &a, &b);
    assert_logs_verify_and_agree(&a, &b);

    // Damage after the seal fails the incremental check too.
    let last = segments::list(&log).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&last.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&last.path, &bytes).unwrap();
    let (code, inc) = run_json(&["audit", "verify", dir, "--from-checkpoint", "--json"]);
    assert_ne!(code, 0, "{inc}");
    assert!(inc["failure"].is_object());
    bytes[at] ^= 0x10;
    std::fs::write(&last.path, &bytes).unwrap();

    // Damage before it is what only the full check reads: it fails there,
    // while the incremental check trusts its saved state (and says so).
    let first = &segments::list(&log).unwrap()[0];
    let mut bytes = std::fs::read(&first.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&first.path, &bytes).unwrap();
    let (code, _) = run_json(&["audit", "verify", dir, "--json"]);
    assert_ne!(
        code, 0,
        "a full verify must catch damage in a sealed segment"
    );
    let out = hotline(&["audit", "verify", dir, "--from-checkpoint"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("incremental"));
}

#[test]
fn a_node_whose_log_is_one_file_keeps_working_and_grows_segments_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = setup(tmp.path());
    // The layout before segments: one file, however large.
    configure(&a, 1 << 40);
    configure(&b, 1 << 40);
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    let before = send_n(&na, 30, "one file");
    assert!(nb.terminate().success());
    let log = OfficeDir::new(&b).log();
    assert_eq!(segments::list(&log).unwrap().len(), 1);
    assert_eq!(log.file_name().unwrap(), "hotline.log");
    let old_bytes = std::fs::read(&log).unwrap();
    assert!(old_bytes.len() > 8192);

    // Upgraded: segments of 2 KiB from now on. The old file is the first
    // segment; it is sealed at the next checkpoint and never rewritten.
    configure(&b, 2048);
    let mut nb = Node::start(&b);
    let after = send_n(&na, 30, "segmented");
    let inbox = nb.client().inbox().unwrap();
    for id in before.iter().chain(&after) {
        assert!(inbox.iter().any(|m| &m.id == id), "{id} not in the inbox");
    }
    assert!(nb.terminate().success());
    assert!(na.terminate().success());
    let segs = segments::list(&log).unwrap();
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let first = std::fs::read(&log).unwrap();
    assert_eq!(&first[..old_bytes.len()], &old_bytes[..]);
    assert!(seal_entries(&log).iter().all(|(_, cp)| *cp));
    assert_each_delivered_once(&[before, after].concat(), &a, &b);
    assert_logs_verify_and_agree(&a, &b);
}
