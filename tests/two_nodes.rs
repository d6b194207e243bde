//! Two real nodes, separate processes of the built binary, over loopback
//! QUIC. 1,000 messages of mixed precedence while the receiver is SIGKILLed
//! and restarted mid-stream, then the sender too: every accepted message is
//! in the receiver's inbox exactly once, and the sender holds a signed
//! receipt for each that verifies against the receiver's card.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    assert_each_delivered_once, assert_logs_verify_and_agree, hotline, listen_addr, setup,
    setup_with, Node,
};
use hotline::control::SendRequest;
use hotline::core::OutState;
use hotline::identity::OfficeCard;
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{Receipt, SignedEnvelope};
use prost::Message as _;

const PRECEDENCES: [&str; 4] = ["flash", "immediate", "priority", "routine"];

/// Sends message `n`, retrying while the sender is briefly unavailable.
fn send(node: &Node, n: usize) -> String {
    let req = SendRequest {
        to: "pyongyang".into(),
        precedence: Some(PRECEDENCES[n % 4].into()),
        subject: format!("message {n}"),
        body: format!("body {n}"),
        ..Default::default()
    };
    node.client().send(&req).expect("send accepted").id
}

#[test]
fn thousand_messages_survive_sigkill_of_receiver_then_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = setup(tmp.path());
    let mut a = Node::start(&a_dir);
    let mut b = Node::start(&b_dir);

    let mut accepted: Vec<String> = Vec::new();
    for n in 0..1000 {
        match n {
            300 => b.kill9(),
            450 => b = Node::start(&b_dir),
            700 => {
                a.kill9();
                a = Node::start(&a_dir);
            }
            _ => {}
        }
        accepted.push(send(&a, n));
    }

    // Wait until the sender holds a receipt for everything (bounded).
    let deadline = Instant::now() + Duration::from_secs(180);
    let outbox = loop {
        let outbox = a.client().outbox().unwrap();
        let delivered = outbox
            .iter()
            .filter(|o| o.state == OutState::Delivered)
            .count();
        if delivered == accepted.len() {
            break outbox;
        }
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {} delivered after 180 s",
            accepted.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // Receiver: every accepted id exactly once.
    let inbox = b.client().inbox().unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &inbox {
        *counts.entry(m.id.as_str()).or_default() += 1;
    }
    assert_eq!(inbox.len(), 1000, "inbox holds {} messages", inbox.len());
    for id in &accepted {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "{id} in inbox {:?} times",
            counts.get(id.as_str())
        );
    }
    let by_id: HashMap<&str, _> = inbox.iter().map(|m| (m.id.as_str(), m)).collect();

    // Sender: a signed receipt for each, verified against the receiver's card.
    let b_card = OfficeCard::load(&b_dir.join("office-card.toml")).unwrap();
    let b_key = b_card.message_verifying_key().unwrap();
    for o in &outbox {
        let d = o.delivery.as_ref().expect("delivered has a receipt");
        let env = SignedEnvelope::decode(hex::decode(&d.receipt_hex).unwrap().as_slice()).unwrap();
        let r: Receipt = envelope::open(&env, Domain::Receipt, &b_key).expect("receipt verifies");
        assert_eq!(r.message_id, o.id);
        assert_eq!(
            r.log_index,
            by_id[o.id.as_str()].log_index,
            "receipt names the receiver's log entry"
        );
    }

    // Clean stop on SIGTERM, then the logs still read offline.
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let out = hotline(&[
        "inbox",
        "--dir",
        b_dir.to_str().unwrap(),
        "--json",
        "--limit",
        "1000",
    ]);
    assert!(out.status.success());
    let offline: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline.len(), 1000);
}

/// Messages over a line that loses 10 % of datagrams both ways (through the
/// drill proxy), with either node SIGKILLed and restarted at random points:
/// nothing lost, nothing twice, both logs verify and cross-check. The
/// default is a short run; the full one is
/// `HOTLINE_CRASH_MESSAGES=10000 HOTLINE_CRASH_KILLS=20 cargo test --release --test two_nodes lossy`.
#[test]
fn lossy_line_and_random_sigkills_lose_nothing() {
    use hotline::drill::proxy::{Faults, Line, Proxy};
    use rand::{Rng, SeedableRng};
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (messages, kills) = (
        env("HOTLINE_CRASH_MESSAGES", 600),
        env("HOTLINE_CRASH_KILLS", 4),
    );
    let seed = env("HOTLINE_CRASH_SEED", 10) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let line = Line::new(
        Faults {
            loss: 0.10,
            delay: Duration::from_millis(2),
            ..Faults::default()
        },
        seed,
        false,
    );
    let to_p = rt.block_on(Proxy::bind(line.clone())).unwrap();
    let to_w = rt.block_on(Proxy::bind(line.clone())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = setup_with(
        tmp.path(),
        Some((to_p.addr.to_string(), to_w.addr.to_string())),
    );
    to_p.set_target(listen_addr(&b_dir));
    to_w.set_target(listen_addr(&a_dir));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kill_at: Vec<(usize, bool)> = (0..kills)
        .map(|_| (rng.gen_range(1..messages), rng.gen_bool(0.5)))
        .collect();
    kill_at.sort();
    let mut a = Node::start(&a_dir);
    let mut b = Node::start(&b_dir);
    let mut accepted: Vec<String> = Vec::new();
    for n in 0..messages {
        for (_, sender) in kill_at.iter().filter(|(at, _)| *at == n) {
            if *sender {
                a.kill9();
                a = Node::start(&a_dir);
            } else {
                b.kill9();
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
                b = Node::start(&b_dir);
            }
        }
        accepted.push(send(&a, n));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pending = a.client().status().unwrap().peers[0].outbox;
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} of {messages} still unreceipted after 600 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let (passed, dropped) = line.counts();
    assert!(
        dropped > 0 && passed > dropped,
        "the line lost datagrams: {passed} passed, {dropped} dropped"
    );

    assert_each_delivered_once(&accepted, &a_dir, &b_dir);
    assert_logs_verify_and_agree(&a_dir, &b_dir);
    eprintln!("{messages} messages, {kills} kills, datagrams passed {passed}, dropped {dropped}");
}
