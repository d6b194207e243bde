//! The history index in real node processes: inbox and outbox page through
//! it (API cursor and CLI flags), and an index that is missing (an office
//! made before it existed), damaged or stale is rebuilt from the log at
//! start, loudly, with nothing lost.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{hotline, setup, Node};
use hotline::control::{InboxEntry, SendRequest};
use hotline::core::OutState;
use hotline::history::views::Page;
use hotline::identity::OfficeDir;

const MESSAGES: usize = 230;

fn ids(items: &[InboxEntry]) -> Vec<String> {
    items.iter().map(|e| e.id.clone()).collect()
}

fn page(limit: usize, before: Option<u64>) -> Page {
    Page {
        limit,
        before,
        since_unix_ms: None,
    }
}

fn node_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn views_page_through_the_index_and_a_lost_or_damaged_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = setup(tmp.path());
    let mut a = Node::start(&a_dir);
    let mut b = Node::start(&b_dir);
    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        let req = SendRequest {
            to: "pyongyang".into(),
            precedence: Some(["flash", "routine"][n % 2].into()),
            subject: format!("message {n}"),
            body: format!("body {n}"),
            ..Default::default()
        };
        sent.push(a.client().send(&req).unwrap().id);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = a.client().outbox().unwrap();
        if out.len() == MESSAGES && out.iter().all(|o| o.state == OutState::Delivered) {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The whole inbox, oldest first (in arrival order: a FLASH may
    // overtake a ROUTINE sent before it), holds each message sent once.
    let c = b.client();
    let all = c.inbox().unwrap();
    let order = ids(&all);
    let (mut got, mut want) = (order.clone(), sent.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Pages of 100, newest first, follow the cursor to the start.
    let p1 = c.inbox_page(&page(100, None)).unwrap();
    let p2 = c
        .inbox_page(&page(100, p1.last().map(|e| e.log_index)))
        .unwrap();
    let p3 = c
        .inbox_page(&page(100, p2.last().map(|e| e.log_index)))
        .unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (100, 100, MESSAGES - 200));
    let mut paged: Vec<InboxEntry> = p1.into_iter().chain(p2).chain(p3).collect();
    paged.reverse();
    assert_eq!(ids(&paged), order);
    // The outbox pages the same way, with the receipts.
    let out = a.client().outbox_page(&page(7, None)).unwrap();
    assert_eq!(out.len(), 7);
    assert_eq!(
        out[0].id,
        *sent.last().unwrap(),
        "the outbox is in the order sent"
    );
    assert!(out.iter().all(|o| o.delivery.is_some()));

    // The CLI: a page of 10, shown oldest first, and where to go on.
    let b_str = b_dir.to_str().unwrap();
    let o = hotline(&["inbox", "--dir", b_str, "--limit", "10", "--json"]);
    assert!(o.status.success());
    let shown: Vec<InboxEntry> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids(&shown), order[MESSAGES - 10..]);
    let hint = String::from_utf8_lossy(&o.stderr);
    let cursor = format!("--before {}", shown[0].log_index);
    assert!(hint.contains(&cursor), "{hint}");
    let o = hotline(&[
        "inbox",
        "--dir",
        b_str,
        "--limit",
        "10",
        "--json",
        "--before",
        &shown[0].log_index.to_string(),
    ]);
    let older: Vec<InboxEntry> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids(&older), order[MESSAGES - 20..MESSAGES - 10]);
    let o = hotline(&["inbox", "--dir", b_str, "--since", "soon"]);
    assert_eq!(o.status.code(), Some(2), "a bad --since is bad usage");
    let o = hotline(&["inbox", "--dir", b_str, "--since", "1h", "--json"]);
    let recent: Vec<InboxEntry> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        recent.len(),
        100,
        "all are within the hour; the page is 100"
    );

    // Read while no node runs: from the log and the index.
    b.terminate();
    let o = hotline(&["inbox", "--dir", b_str, "--limit", "1000", "--json"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node running"));
    let offline: Vec<InboxEntry> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids(&offline), order);

    // An office from before the index: no index file. Rebuilt at start.
    let index = OfficeDir::new(&b_dir).history();
    std::fs::remove_file(&index).unwrap();
    let b = Node::start_logging_to(&b_dir, &b_dir.join("missing.log"));
    assert_eq!(ids(&b.client().inbox().unwrap()), order);
    assert!(node_log(&b_dir, "missing.log").contains("history index: caught up"));
    let mut b = b;
    b.terminate();

    // A damaged index: replaced and rebuilt, and the node says so.
    std::fs::write(&index, vec![0xA5; 8192]).unwrap();
    let b = Node::start_logging_to(&b_dir, &b_dir.join("damaged.log"));
    assert_eq!(ids(&b.client().inbox().unwrap()), order);
    assert!(node_log(&b_dir, "damaged.log")
        .contains("could not be opened or has an older layout; rebuilding it from the log"));
    let mut b = b;
    b.terminate();

    // A stale index, from another log: found out by its root, rebuilt.
    // (Pyongyang's index put beside washington's log.)
    let a_index = OfficeDir::new(&a_dir).history();
    a.terminate();
    std::fs::copy(&index, &a_index).unwrap();
    let a = Node::start_logging_to(&a_dir, &a_dir.join("stale.log"));
    let out = a.client().outbox().unwrap();
    assert_eq!(
        out.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        sent,
        "washington's outbox after the rebuild"
    );
    assert!(a.client().inbox().unwrap().is_empty());
    assert!(node_log(&a_dir, "stale.log").contains("does not match this log"));
    let mut a = a;
    a.terminate();
}
