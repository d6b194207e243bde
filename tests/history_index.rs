//! The history index (src/history/) against a plain reading of the log:
//! after seeded runs with lost, duplicated and reordered frames, crashes
//! and replies, the views the index builds from an office's log must show
//! exactly what a scan of every entry finds, page by page; and an index
//! caught up in steps, closed and reopened, must equal one built in a
//! single pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hotline::audit::merkle::Tree;
use hotline::audit::{LogReader, Persisted, RECORD_HEADER_LEN};
use hotline::control::api::OutboxEntry;
use hotline::core::{Core, Draft, OutState};
use hotline::history::views::{self, Page};
use hotline::history::{History, Indexed, Position};
use hotline::sim::{Faults, Sim};
use hotline::wire::proto::{Precedence, Response};
use hotline::wire::MessageId;
use rand::Rng;

/// Writes `disk` as a log file; returns each entry's byte offset and the
/// offset past the last.
fn write_log(disk: &[Persisted], path: &Path) -> (Vec<u64>, u64) {
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for p in disk {
        offsets.push(buf.len() as u64);
        hotline::audit::record::frame(&p.bytes, &mut buf).unwrap();
    }
    std::fs::write(path, &buf).unwrap();
    (offsets, buf.len() as u64)
}

/// Folds entries `from..to` of `disk` into `h`.
fn fold(h: &mut History, disk: &[Persisted], offsets: &[u64], from: usize, to: usize) {
    let mut tree = Tree::new();
    for p in &disk[..to] {
        tree.push(&p.bytes);
    }
    let next_offset = if to == disk.len() {
        offsets.last().map_or(0, |o| {
            o + (RECORD_HEADER_LEN + disk.last().unwrap().bytes.len()) as u64
        })
    } else {
        offsets[to]
    };
    let after = Position {
        next_index: to as u64,
        next_offset,
        root: tree.root().0,
    };
    let entries = (from..to).map(|i| Indexed {
        entry: &disk[i].entry,
        offset: offsets[i],
    });
    h.apply(entries, after, to == disk.len()).unwrap();
}

fn run(seed: u64) -> Sim {
    let faults = Faults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        reorder_ms: 40,
        latency_ms: 20,
    };
    let mut sim = Sim::new(seed, faults);
    sim.connect();
    let precs = [
        Precedence::Flash,
        Precedence::Immediate,
        Precedence::Priority,
        Precedence::Routine,
    ];
    for n in 0..80u64 {
        let from = (n % 2) as usize;
        let p = precs[sim.rng().gen_range(0..4)];
        sim.submit(
            from,
            Draft {
                precedence: p,
                subject: format!("subject {n}"),
                body: format!("body {n} from office {from}"),
                exercise: n % 3 == 0,
                ..Default::default()
            },
        );
        let pause = sim.rng().gen_range(0..300);
        sim.run_for(pause);
        if n == 20 {
            // Washington's key signs a message far ahead of its sequence
            // with a subject over the limit: pyongyang refuses it, and the
            // refusal settles that number (its answer is the refusal).
            let msg = hotline::wire::proto::Message {
                id: MessageId::new(1_750_000_000_000, [4; 10]).to_string(),
                sequence: 1_000,
                from: "washington".into(),
                to: "pyongyang".into(),
                precedence: Precedence::Routine as i32,
                subject: "x".repeat(hotline::core::MAX_SUBJECT_LEN + 1),
                ..Default::default()
            };
            let key = sim.signing_key(0).clone();
            let env = hotline::wire::envelope::seal_proto(
                hotline::wire::envelope::Domain::Message,
                &msg,
                &key,
            );
            sim.inject(
                0,
                hotline::wire::proto::Frame {
                    body: Some(hotline::wire::proto::frame::Body::Message(env)),
                },
            );
        }
        if n == 40 {
            sim.crash(1);
            sim.run_for(500);
            sim.restart(1);
            sim.connect();
        }
        // Now and then an officer answers the newest unanswered message.
        if n % 7 == 3 {
            let office = sim.rng().gen_range(0..2);
            let ack_id = MessageId::new(1_750_000_000_000 + sim.now, sim.rng().gen());
            let unanswered = sim
                .history(office)
                .inbox()
                .into_iter()
                .rev()
                .find(|i| !i.acknowledged)
                .and_then(|i| MessageId::parse(&i.id));
            if let Some(id) = unanswered {
                let _ = sim.acknowledge(office, ack_id, &id, "seen", Response::WillComply);
            }
        }
    }
    assert!(sim.heal(600_000), "seed {seed}: the run did not settle");
    sim
}

fn all_pages<T>(mut page: impl FnMut(Option<u64>) -> views::Paged<T>) -> Vec<T> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let p = page(before);
        out.extend(p.items);
        match p.next_before {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

fn outbox_key(o: &OutboxEntry) -> String {
    format!(
        "{} {} {} {:?} {} {} {} {:?}",
        o.to,
        o.id,
        o.sequence,
        o.state,
        o.precedence,
        o.subject,
        o.exercise,
        o.delivery.as_ref().map(|d| d.receipt_hex.clone())
    )
}

/// What the log says, read the plain way: every entry scanned in order.
#[derive(Default)]
struct Scan {
    /// Received: (peer, id, log index, time), in log order.
    received: Vec<(String, String, u64, u64)>,
    /// Sent: (peer, sequence) -> (id, log index).
    sent: BTreeMap<(String, u64), (String, u64)>,
    /// Our messages' receipts: (peer, sequence) -> receipt envelope bytes.
    receipts: BTreeMap<(String, u64), Vec<u8>>,
    /// Our messages refused for good: (peer, sequence).
    refused: BTreeSet<(String, u64)>,
    /// Our answers to each peer's sequences: the first receipt or
    /// settling refusal logged for a number (peer, sequence) -> hash named.
    answers: BTreeMap<(String, u64), Vec<u8>>,
    /// Ids answered: (peer who replied, id replied to).
    replies_sent: BTreeSet<(String, String)>,
    replies_received: BTreeSet<(String, String)>,
}

fn scan(disk: &[Persisted]) -> Scan {
    use hotline::wire::proto::{log_entry::Event, Message, NegativeReceipt, Receipt};
    use prost::Message as _;
    let mut s = Scan::default();
    let payload =
        |pe: &hotline::wire::proto::PeerEnvelope| pe.envelope.as_ref().unwrap().payload.clone();
    for p in disk {
        match &p.entry.event {
            Some(Event::MessageSent(pe)) => {
                let m = Message::decode(payload(pe).as_slice()).unwrap();
                s.sent
                    .insert((pe.peer.clone(), m.sequence), (m.id, p.entry.index));
                if !m.reply_to.is_empty() {
                    s.replies_sent.insert((pe.peer.clone(), m.reply_to));
                }
            }
            Some(Event::MessageReceived(pe)) => {
                let m = Message::decode(payload(pe).as_slice()).unwrap();
                s.received
                    .push((pe.peer.clone(), m.id, p.entry.index, p.entry.time_unix_ms));
                if !m.reply_to.is_empty() {
                    s.replies_received.insert((pe.peer.clone(), m.reply_to));
                }
            }
            Some(Event::ReceiptReceived(pe)) => {
                let r = Receipt::decode(payload(pe).as_slice()).unwrap();
                let env = pe.envelope.as_ref().unwrap();
                s.receipts
                    .entry((pe.peer.clone(), r.sequence))
                    .or_insert_with(|| env.encode_to_vec());
            }
            Some(Event::ReceiptSent(pe)) => {
                let r = Receipt::decode(payload(pe).as_slice()).unwrap();
                s.answers
                    .entry((pe.peer.clone(), r.sequence))
                    .or_insert(r.message_hash);
            }
            Some(Event::NegativeReceiptSent(pe)) => {
                let n = NegativeReceipt::decode(payload(pe).as_slice()).unwrap();
                if n.settles && n.sequence != 0 {
                    s.answers
                        .entry((pe.peer.clone(), n.sequence))
                        .or_insert(n.payload_hash);
                }
            }
            Some(Event::NegativeReceiptReceived(pe)) => {
                let n = NegativeReceipt::decode(payload(pe).as_slice()).unwrap();
                if n.settles {
                    s.refused.insert((pe.peer.clone(), n.sequence));
                }
            }
            _ => {}
        }
    }
    s
}

fn check_office(sim: &Sim, i: usize, dir: &Path) {
    let office = &sim.offices[i];
    let core: &Core = office.core.as_ref().unwrap();
    let path = dir.join(format!("log-{i}"));
    let (offsets, _) = write_log(&office.disk, &path);
    let log = LogReader::open(&path).unwrap();
    let mut h = History::in_memory().unwrap();
    fold(&mut h, &office.disk, &offsets, 0, office.disk.len());
    let pending = |peer: &str, seq: u64| core.pending_state(peer, seq);
    let plain = scan(&office.disk);

    // Inbox: every received message, newest first, acknowledged when we
    // replied to it.
    let page = |before| {
        views::inbox(
            &h,
            &log,
            Page {
                limit: 7,
                before,
                since_unix_ms: None,
            },
        )
        .unwrap()
    };
    let mut from_index = all_pages(page);
    from_index.reverse();
    let shown: Vec<_> = from_index
        .iter()
        .map(|e| {
            (
                e.from.clone(),
                e.id.clone(),
                e.log_index,
                e.received_unix_ms,
                e.acknowledged,
            )
        })
        .collect();
    let expected: Vec<_> = plain
        .received
        .iter()
        .map(|(peer, id, index, at)| {
            let acked = plain.replies_sent.contains(&(peer.clone(), id.clone()));
            (peer.clone(), id.clone(), *index, *at, acked)
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(shown, expected, "office {i}: inbox");
    assert!(
        expected.iter().any(|e| e.4) && expected.iter().any(|e| !e.4),
        "the run should answer some messages and not others"
    );

    // Outbox: every message sent, in the state its receipts and refusals
    // put it, with the receipt it was delivered with.
    let page = |before| {
        views::outbox(
            &h,
            &log,
            Page {
                limit: 5,
                before,
                since_unix_ms: None,
            },
            &pending,
        )
        .unwrap()
    };
    let outbox = all_pages(page);
    assert_eq!(outbox.len(), plain.sent.len(), "office {i}: outbox size");
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outbox {
        let key = (o.to.clone(), o.sequence);
        let (id, index) = &plain.sent[&key];
        assert_eq!((&o.id, o.log_index), (id, *index));
        let receipt = plain.receipts.get(&key).map(hex::encode);
        let want = if receipt.is_some() {
            OutState::Delivered
        } else if plain.refused.contains(&key) {
            OutState::Refused
        } else {
            core.pending_state(&o.to, o.sequence).unwrap().0
        };
        assert_eq!(o.state, want, "office {i}: {} state", o.id);
        assert_eq!(
            o.delivery.as_ref().map(|d| d.receipt_hex.clone()),
            receipt,
            "office {i}: {} receipt",
            o.id
        );
        *states.entry(format!("{:?}", o.state)).or_default() += 1;

        // The same by id, and its acknowledgement.
        let mid = MessageId::parse(&o.id).unwrap();
        let got = views::find_sent(&h, &log, &mid, &pending, None)
            .unwrap()
            .unwrap();
        assert_eq!(outbox_key(&got), outbox_key(o));
        let ack = h.sent(&o.to, o.sequence).unwrap().unwrap().acknowledged_by;
        assert_eq!(
            !ack.is_empty(),
            plain
                .replies_received
                .contains(&(o.to.clone(), o.id.clone())),
            "office {i}: ack of {}",
            o.id
        );
    }
    assert!(states.contains_key("Delivered"), "{states:?}");
    for (peer, id, index, _) in &plain.received {
        let mid = MessageId::parse(id).unwrap();
        let (e, msg) = views::find_received(&h, &log, &mid).unwrap().unwrap();
        assert_eq!((&e.from, e.log_index, &msg.id), (peer, *index, id));
    }
    // Our answers, as a resumption reads them back: every number's first.
    let peers: BTreeSet<&String> = plain.answers.keys().map(|(p, _)| p).collect();
    for peer in peers {
        let got: Vec<(u64, Vec<u8>)> = views::answers_from(&h, &log, peer, 1, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|a| (a.sequence, a.hash.to_vec()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = plain
            .answers
            .iter()
            .filter(|((p, _), _)| p == peer)
            .map(|((_, s), h)| (*s, h.clone()))
            .collect();
        assert_eq!(got, want, "office {i}: answers to {peer}");
        if i == 1 && peer == "washington" {
            assert!(got.iter().any(|a| a.0 == 1_000), "the settling refusal");
        }
        let some = views::answers_from(&h, &log, peer, 3, 4).unwrap();
        assert!(some.len() <= 4 && some.iter().all(|a| a.sequence >= 3));
    }
    let (sent, received) = h.counts().unwrap();
    assert_eq!(sent as usize, plain.sent.len());
    assert_eq!(received as usize, plain.received.len());
}

#[test]
fn the_index_shows_what_the_log_says_after_faulty_runs() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=4 {
        let sim = run(seed);
        for i in 0..2 {
            check_office(&sim, i, dir.path());
        }
    }
}

#[test]
fn an_index_caught_up_in_steps_and_reopened_equals_one_built_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = run(7);
    let disk = &sim.offices[0].disk;
    let (offsets, end) = write_log(disk, &dir.path().join("log"));
    let log = LogReader::open(&dir.path().join("log")).unwrap();

    let mut whole = History::in_memory().unwrap();
    fold(&mut whole, disk, &offsets, 0, disk.len());

    let path = dir.path().join("history.redb");
    let cuts = [0, 13, disk.len() / 3, disk.len() / 2 + 1, disk.len()];
    for w in cuts.windows(2) {
        let mut h = History::open(&path).unwrap();
        assert_eq!(h.position().unwrap().next_index, w[0] as u64);
        fold(&mut h, disk, &offsets, w[0], w[1]);
    }
    let stepped = History::open(&path).unwrap();
    let pos = stepped.position().unwrap();
    assert_eq!((pos.next_index, pos.next_offset), (disk.len() as u64, end));
    let mut tree = Tree::new();
    for p in disk {
        tree.push(&p.bytes);
    }
    assert_eq!(pos.root, tree.root().0);
    let show = |h: &History| {
        let core = sim.offices[0].core.as_ref().unwrap();
        let pending = |peer: &str, seq: u64| core.pending_state(peer, seq);
        let big = Page {
            limit: 1000,
            ..Default::default()
        };
        (
            serde_json::to_string(&views::inbox(h, &log, big).unwrap().items).unwrap(),
            views::outbox(h, &log, big, &pending)
                .unwrap()
                .items
                .iter()
                .map(outbox_key)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(show(&stepped), show(&whole));

    // Cleared, the index starts again from the log's first entry.
    let mut cleared = stepped;
    cleared.clear().unwrap();
    assert_eq!(cleared.position().unwrap(), Position::default());
    assert_eq!(cleared.counts().unwrap(), (0, 0));
}
