//! Three real nodes on loopback: washington and pyongyang have no direct
//! line; stockholm, a relay both trust to deliver but not to read, carries a
//! FLASH message sealed end to end, and the signed receipt back.

use std::path::Path;
use std::time::Duration;

use hotline::control::SendRequest;
use hotline::demo;
use hotline::identity::{OfficeDir, OfficeName};
use hotline::node::{self, NodeOptions, RunningNode};
use hotline::wire::proto::{log_entry::Event, RelayReceipt, RelayState};
use prost::Message as _;

fn init(dir: &OfficeDir, name: &str, role: &str) {
    dir.init_with_role(&OfficeName::new(name).unwrap(), "127.0.0.1:0", role)
        .unwrap();
}

async fn start(dir: &OfficeDir) -> RunningNode {
    node::start(dir.load().unwrap(), NodeOptions { control_api: true })
        .await
        .unwrap()
}

fn all_bytes_under(root: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

/// Washington and pyongyang pin each other and stockholm but never dial
/// (no direct line); stockholm, the relay, dials both. `time_scale` scales
/// the offices' escalation policy.
struct Three {
    w: OfficeDir,
    p: OfficeDir,
    s: OfficeDir,
    nw: RunningNode,
    np: RunningNode,
    ns: RunningNode,
}

async fn three_offices(root: &Path, time_scale: f64) -> Three {
    let (w, p, s) = (
        OfficeDir::new(root.join("washington")),
        OfficeDir::new(root.join("pyongyang")),
        OfficeDir::new(root.join("stockholm")),
    );
    init(&w, "washington", "office");
    init(&p, "pyongyang", "office");
    init(&s, "stockholm", "relay");
    for (me, other) in [(&w, &p), (&p, &w)] {
        me.add_peer(&other.card(), Some(String::new()), false)
            .unwrap();
        me.add_peer(&s.card(), Some(String::new()), false).unwrap();
        let mut cfg = me.load_config().unwrap();
        let other_name = other.load_config().unwrap().office.to_string();
        cfg.peers.get_mut(&other_name).unwrap().relays = vec!["stockholm".into()];
        cfg.escalation.time_scale = time_scale;
        me.save_config(&cfg).unwrap();
    }
    let (nw, np) = (start(&w).await, start(&p).await);
    s.add_peer(&w.card(), Some(nw.quic_addr.to_string()), false)
        .unwrap();
    s.add_peer(&p.card(), Some(np.quic_addr.to_string()), false)
        .unwrap();
    let ns = start(&s).await;
    demo::wait_up(&nw, "stockholm").await.unwrap();
    demo::wait_up(&np, "stockholm").await.unwrap();
    Three {
        w,
        p,
        s,
        nw,
        np,
        ns,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_message_crosses_a_dead_direct_line_through_the_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let Three {
        w,
        p,
        s,
        nw,
        np,
        ns,
    } = three_offices(tmp.path(), 1.0).await;

    let body = "Chinese forces will enter the war if UN troops cross the 38th parallel.";
    let sent = nw
        .handle
        .send(SendRequest {
            to: "pyongyang".into(),
            precedence: Some("flash".into()),
            subject: "Warning".into(),
            body: body.into(),
            via: Some("stockholm".into()),
            wait: true,
            wait_ms: Some(20_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        sent.delivered.is_some(),
        "the recipient's signed receipt came back through the relay"
    );
    let inbox = np.handle.inbox().await.unwrap();
    assert_eq!(inbox.iter().filter(|m| m.id == sent.id).count(), 1);
    assert_eq!(inbox[0].body, body);
    // The direct line never came up.
    let st = nw.handle.status().await.unwrap();
    assert_eq!(
        st.peers
            .iter()
            .find(|x| x.office == "pyongyang")
            .unwrap()
            .link,
        "down"
    );

    // The sender holds the relay's signed receipts: accepted, then handed over.
    let mut states = Vec::new();
    for _ in 0..200 {
        states.clear();
        hotline::audit::scan(&w.log(), |e| {
            if let Some(Event::RelayReceiptReceived(pe)) = e.entry.event {
                let r = RelayReceipt::decode(pe.envelope.unwrap().payload.as_slice()).unwrap();
                if r.message_id == sent.id {
                    states.push(r.state);
                }
            }
        })
        .unwrap();
        if states.contains(&(RelayState::HandedOver as i32)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        states.contains(&(RelayState::Accepted as i32)),
        "{states:?}"
    );
    assert!(
        states.contains(&(RelayState::HandedOver as i32)),
        "{states:?}"
    );

    ns.stop().await.unwrap();
    np.stop().await.unwrap();
    nw.stop().await.unwrap();
    // Nothing in the relay's directory (log, spool, anything) holds the text.
    let everything = all_bytes_under(s.root());
    assert!(!everything.windows(body.len()).any(|w| w == body.as_bytes()));
    assert!(!everything.windows(7).any(|w| w == b"Warning"));
    // Its log records the passage by hash, both ways.
    let kinds: Vec<String> = {
        let mut v = vec![];
        hotline::audit::scan(&s.log(), |e| {
            v.push(
                hotline::audit::inspect::summarize(&e.entry)
                    .kind
                    .to_string(),
            )
        })
        .unwrap();
        v
    };
    assert!(
        kinds.iter().filter(|k| *k == "relay-accepted").count() >= 2,
        "{kinds:?}"
    );
    assert!(
        kinds.iter().filter(|k| *k == "relay-handed-over").count() >= 2,
        "{kinds:?}"
    );
    // The merged timeline shows the path and the relay's receipts.
    let rows =
        hotline::audit::compare::timeline(&w.log(), "washington", &p.log(), "pyongyang").unwrap();
    let events: Vec<&str> = rows
        .iter()
        .filter(|r| r.msg == sent.id)
        .map(|r| r.event.as_str())
        .collect();
    assert!(
        events.contains(&"received from washington via stockholm"),
        "{events:?}"
    );
    assert!(events.contains(&"relay stockholm: accepted"), "{events:?}");
    assert!(
        events.contains(&"relay stockholm: handed_over"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_reroutes_through_the_relay_when_the_receipt_is_late() {
    let tmp = tempfile::tempdir().unwrap();
    // FLASH reroutes after 10 s * 0.01 = 100 ms without a receipt.
    let Three { w, nw, np, ns, .. } = three_offices(tmp.path(), 0.01).await;
    let sent = nw
        .handle
        .send(SendRequest {
            to: "pyongyang".into(),
            precedence: Some("flash".into()),
            body: "No direct line: the ladder must find the relay.".into(),
            wait: true,
            wait_ms: Some(20_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        sent.delivered.is_some(),
        "delivered through the relay by the reroute step"
    );
    ns.stop().await.unwrap();
    np.stop().await.unwrap();
    nw.stop().await.unwrap();
    let mut reroute = None;
    hotline::audit::scan(&w.log(), |e| {
        if let Some(Event::Escalation(x)) = e.entry.event {
            if x.message_id == sent.id && x.action == "reroute" {
                reroute = Some(x.detail);
            }
        }
    })
    .unwrap();
    assert_eq!(reroute.as_deref(), Some("sent sealed via stockholm"));
    // The sender holds the relay's signed receipt too.
    let mut accepted = false;
    hotline::audit::scan(&w.log(), |e| {
        if let Some(Event::RelayReceiptReceived(pe)) = e.entry.event {
            let r = RelayReceipt::decode(pe.envelope.unwrap().payload.as_slice()).unwrap();
            accepted |= r.message_id == sent.id && r.state == RelayState::Accepted as i32;
        }
    })
    .unwrap();
    assert!(accepted);
}
