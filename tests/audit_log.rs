//! The tamper-evident log end to end: two real nodes (in-process, on
//! loopback) exchange traffic and stop; then the audit commands are run on
//! their directories, before and after the logs are tampered with.

use std::path::{Path, PathBuf};
use std::process::Command;

use hotline::audit::{self, record, verify, Persisted};
use hotline::control::SendRequest;
use hotline::demo;
use hotline::identity::OfficeDir;
use hotline::wire::proto::{log_entry::Event, LogEntry, Message};
use prost::Message as _;

const BIN: &str = env!("CARGO_BIN_EXE_hotline");

fn hotline(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run hotline")
}

/// Two offices that exchanged `n` messages each way and stopped cleanly.
async fn traffic(root: &Path, n: usize) -> (PathBuf, PathBuf) {
    let (a, b) = demo::start_pair(root, "washington", "pyongyang")
        .await
        .unwrap();
    for i in 0..n {
        for (node, to) in [(&a, "pyongyang"), (&b, "washington")] {
            node.handle
                .send(SendRequest {
                    to: to.into(),
                    precedence: Some(["flash", "routine"][i % 2].into()),
                    subject: format!("message {i}"),
                    body: format!("body {i}"),
                    wait: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    // Washington stops first, so pyongyang cosigns its final checkpoint.
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    (root.join("washington"), root.join("pyongyang"))
}

fn entries(path: &Path) -> Vec<(u64, LogEntry)> {
    let mut v = vec![];
    audit::scan(path, |e| v.push((e.offset, e.entry))).unwrap();
    v
}

fn write_log(path: &Path, entries: &[LogEntry]) {
    let mut out = vec![];
    for e in entries {
        record::frame(&Persisted::new(e.clone()).bytes, &mut out).unwrap();
    }
    std::fs::write(path, out).unwrap();
}

fn verify_dir(dir: &Path) -> verify::VerifyReport {
    let (_, card, peers) = OfficeDir::new(dir).load_public().unwrap();
    verify::verify(&OfficeDir::new(dir).log(), &card, &peers).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_verify_and_cross_check_until_a_received_message_is_altered() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = traffic(tmp.path(), 20).await;
    for dir in [&a, &b] {
        let out = hotline(&["audit", "verify", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let r = verify_dir(dir);
        assert!(r.ok());
        assert!(r.signatures >= 80, "{} signatures", r.signatures);
        assert!(r.checkpoints >= 1 && r.cosignatures >= 1, "{r:?}");
    }
    let out = hotline(&[
        "audit",
        "cross-check",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let cc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cc["messages"], serde_json::json!([20, 20]));
    assert!(cc["discrepancies"].as_array().unwrap().is_empty());

    // Pyongyang quietly edits its copy of a message it received (and fixes
    // the checksums, as a careful forger would).
    let log = OfficeDir::new(&b).log();
    let mut all: Vec<LogEntry> = entries(&log).into_iter().map(|e| e.1).collect();
    let (pos, id) = all
        .iter()
        .enumerate()
        .find_map(|(i, e)| match &e.event {
            Some(Event::MessageReceived(pe)) => {
                let m = Message::decode(pe.envelope.as_ref().unwrap().payload.as_slice()).unwrap();
                Some((i, m.id))
            }
            _ => None,
        })
        .unwrap();
    if let Some(Event::MessageReceived(pe)) = &mut all[pos].event {
        let env = pe.envelope.as_mut().unwrap();
        let mut m = Message::decode(env.payload.as_slice()).unwrap();
        m.body = "We accept your proposal.".into();
        env.payload = m.encode_to_vec();
    }
    write_log(&log, &all);

    let out = hotline(&[
        "audit",
        "cross-check",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("message {id}")) && text.contains("differs"),
        "{text}"
    );
    // Its own verify catches it too, at that entry.
    let r = verify_dir(&b);
    assert_eq!(
        r.failure.as_ref().map(|f| f.index),
        Some(pos as u64),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_any_byte_fails_verify_at_the_right_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _b) = traffic(tmp.path(), 5).await;
    let log = OfficeDir::new(&a).log();
    let original = std::fs::read(&log).unwrap();
    let offsets: Vec<u64> = entries(&log).iter().map(|e| e.0).collect();
    let entry_at = |off: u64| offsets.iter().rposition(|&o| o <= off).unwrap() as u64;
    let mut tried = 0;
    for off in (0..original.len()).step_by(7) {
        let mut bytes = original.clone();
        bytes[off] ^= 0x01;
        std::fs::write(&log, &bytes).unwrap();
        let r = verify_dir(&a);
        let f = r
            .failure
            .unwrap_or_else(|| panic!("flip at {off} went unnoticed"));
        assert_eq!(
            f.index,
            entry_at(off as u64),
            "flip at byte {off}: {}",
            f.what
        );
        tried += 1;
    }
    assert!(tried > 100);
    std::fs::write(&log, &original).unwrap();
    assert!(verify_dir(&a).ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_at_boundaries_is_an_older_log_and_inside_the_last_record_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _b) = traffic(tmp.path(), 3).await;
    let log = OfficeDir::new(&a).log();
    let original = std::fs::read(&log).unwrap();
    let offsets: Vec<u64> = entries(&log).iter().map(|e| e.0).collect();
    // Every record boundary: a shorter log that verifies on its own.
    for (k, &off) in offsets.iter().enumerate() {
        std::fs::write(&log, &original[..off as usize]).unwrap();
        let r = verify_dir(&a);
        assert!(r.ok(), "cut at entry {k}: {:?}", r.failure);
        assert_eq!(r.entries, k as u64);
    }
    // Inside the last record: a torn tail, reported by verify, removed and
    // recorded by the node at start.
    let last = *offsets.last().unwrap() as usize;
    for cut in [last + 1, last + 7, original.len() - 1] {
        std::fs::write(&log, &original[..cut]).unwrap();
        let r = verify_dir(&a);
        let f = r.failure.expect("torn tail is reported");
        assert_eq!(f.index, offsets.len() as u64 - 1);
        assert!(f.what.contains("torn"), "{}", f.what);
    }
    let node = hotline::node::start(OfficeDir::new(&a).load().unwrap(), Default::default())
        .await
        .unwrap();
    node.stop().await.unwrap();
    let recovered = entries(&log)
        .into_iter()
        .any(|(_, e)| matches!(e.event, Some(Event::Recovery(_))));
    assert!(recovered);
    assert!(verify_dir(&a).ok(), "after recovery the log verifies again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rewrites_its_history_is_refused_a_cosignature_and_leaves_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = traffic(tmp.path(), 10).await;
    // Washington checkpoints often from now on.
    let da = OfficeDir::new(&a);
    let mut cfg = da.load_config().unwrap();
    cfg.timing.checkpoint_every = 8;
    da.save_config(&cfg).unwrap();
    let cosigned = hotline::audit::info::info(&OfficeDir::new(&b).log())
        .unwrap()
        .cosigned_for["washington"];
    assert!(
        cosigned > 20,
        "pyongyang cosigned washington up to {cosigned}"
    );

    // Washington rewrites history: it keeps its first 12 entries, changes
    // the 12th, and carries on as if the rest never happened.
    let log = da.log();
    let mut all: Vec<LogEntry> = entries(&log).into_iter().map(|e| e.1).take(12).collect();
    all[11].time_unix_ms += 1;
    write_log(&log, &all);
    assert!(verify_dir(&a).ok(), "the rewritten log is self-consistent");

    // Both run again; washington's log grows past what pyongyang cosigned.
    let na = hotline::node::start(
        da.load().unwrap(),
        hotline::node::NodeOptions { control_api: false },
    )
    .await
    .unwrap();
    let db = OfficeDir::new(&b);
    db.add_peer(&da.card(), Some(na.quic_addr.to_string()), false)
        .unwrap();
    let nb = hotline::node::start(db.load().unwrap(), Default::default())
        .await
        .unwrap();
    demo::wait_up(&na, "pyongyang").await.unwrap();
    for i in 0..(cosigned as usize) {
        na.handle
            .send(SendRequest {
                to: "pyongyang".into(),
                body: format!("after the rewrite {i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let evidence_dir = b.join("evidence");
    let mut found = None;
    for _ in 0..200 {
        if let Ok(mut rd) = std::fs::read_dir(&evidence_dir) {
            if let Some(Ok(e)) = rd.next() {
                found = Some(e.path());
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    nb.stop().await.unwrap();
    na.stop().await.unwrap();
    let file = found.expect("pyongyang wrote an evidence file");
    let out = hotline(&[
        "audit",
        "verify-evidence",
        file.to_str().unwrap(),
        "--card",
        da.card().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PROVEN"));
    // Pyongyang never cosigned past the rewrite, and its log says why.
    let info = hotline::audit::info::info(&db.log()).unwrap();
    assert_eq!(info.cosigned_for["washington"], cosigned);
    assert!(info.equivocations >= 1);
    // The evidence does not convict pyongyang with its own card.
    let out = hotline(&[
        "audit",
        "verify-evidence",
        file.to_str().unwrap(),
        "--card",
        db.card().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(6));
}
