//! A hostile office against one honest core, frame by frame.
//!
//! The test holds the peer's real keys and signs whatever it likes; the
//! core under test sees exactly what a node would. Each test asserts what
//! the core logs, sends and keeps, and that replaying its log rebuilds the
//! same state.

use ed25519_dalek::SigningKey;
use hotline::audit::checkpoint;
use hotline::audit::merkle::Tree;
use hotline::audit::Persisted;
use hotline::core::{Core, CoreEvent, Draft, Now, OfficeKeys, OutState, PeerKeys, Timing};
use hotline::identity::OfficeName;
use hotline::sim::OfficeHistory;
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{
    frame::Body, log_entry::Event, CheckpointOffer, Cosignature, Frame, Hello, Message, NackReason,
    NegativeReceipt, Precedence, Receipt, SignedEnvelope,
};
use hotline::wire::{sha256, MessageId};
use prost::Message as _;
use rustls::pki_types::pem::PemObject;

const WALL: u64 = 1_750_000_000_000;

struct Peer {
    name: OfficeName,
    key: SigningKey,
    log_key: SigningKey,
}

/// Pyongyang's core, with washington played by the test.
struct Bench {
    core: Core,
    keys: OfficeKeys,
    peer: Peer,
    now: u64,
    log: Vec<Persisted>,
    sent: Vec<Frame>,
    events: Vec<CoreEvent>,
}

fn office(n: &str) -> OfficeName {
    OfficeName::new(n).unwrap()
}

impl Bench {
    fn new() -> Self {
        Self::pinning(&[])
    }

    /// As [`Bench::new`], the core started with these peer fingerprints.
    fn pinning(fingerprints: &[(OfficeName, String)]) -> Self {
        let keys = OfficeKeys {
            message: SigningKey::from_bytes(&[2; 32]),
            log: SigningKey::from_bytes(&[3; 32]),
            seal: [4; 32],
        };
        let peer = Peer {
            name: office("washington"),
            key: SigningKey::from_bytes(&[5; 32]),
            log_key: SigningKey::from_bytes(&[6; 32]),
        };
        let mut b = Bench {
            core: Self::core(&keys, &peer),
            keys,
            peer,
            now: 1_000,
            log: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
        };
        b.core.start(b.at(), "test", None, fingerprints);
        b.flush();
        b.core.link_up(b.at(), &b.peer.name.clone(), "test");
        b.hello(0, 0);
        b.flush();
        b
    }

    fn core(keys: &OfficeKeys, peer: &Peer) -> Core {
        Core::new(
            office("pyongyang"),
            keys.clone(),
            [PeerKeys {
                office: peer.name.clone(),
                message: peer.key.verifying_key(),
                log: peer.log_key.verifying_key(),
                seal: [7; 32],
                relays: vec![],
            }],
            Timing::default(),
        )
    }

    fn at(&self) -> Now {
        Now {
            mono_ms: self.now,
            wall_ms: WALL + self.now,
        }
    }

    fn flush(&mut self) {
        let out = self.core.take_output();
        self.log.extend(out.persist);
        self.sent.extend(out.transmit.into_iter().map(|t| t.frame));
        self.events.extend(out.events);
    }

    fn frame(&mut self, body: Body) {
        self.now += 1;
        let peer = self.peer.name.clone();
        self.core
            .handle_frame(self.at(), &peer, Frame { body: Some(body) });
        self.flush();
    }

    fn hello(&mut self, received_through: u64, receipted_through: u64) {
        self.frame(Body::Hello(Hello {
            protocol_version: 1,
            office: "washington".into(),
            received_through,
            receipted_through,
            reply: false,
            cosigned_size: 0,
        }));
    }

    fn signed(&self, m: &Message) -> SignedEnvelope {
        envelope::seal_proto(Domain::Message, m, &self.peer.key)
    }

    fn send(&mut self, m: &Message) -> SignedEnvelope {
        let env = self.signed(m);
        self.frame(Body::Message(env.clone()));
        env
    }

    /// Frames sent since `from`, taken.
    fn take_sent(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.sent)
    }

    fn receipts(frames: &[Frame], key: &SigningKey) -> Vec<Receipt> {
        frames
            .iter()
            .filter_map(|f| match &f.body {
                Some(Body::Receipt(e)) => {
                    Some(envelope::open(e, Domain::Receipt, &key.verifying_key()).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn nacks(frames: &[Frame], key: &SigningKey) -> Vec<NegativeReceipt> {
        frames
            .iter()
            .filter_map(|f| match &f.body {
                Some(Body::NegativeReceipt(e)) => {
                    Some(envelope::open(e, Domain::NegativeReceipt, &key.verifying_key()).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn logged_messages(&self) -> Vec<u64> {
        self.log
            .iter()
            .filter_map(|p| match &p.entry.event {
                Some(Event::MessageReceived(pe)) => Some(
                    Message::decode(pe.envelope.as_ref().unwrap().payload.as_slice())
                        .unwrap()
                        .sequence,
                ),
                _ => None,
            })
            .collect()
    }

    /// A fresh core that replays this one's log.
    fn replayed(&self) -> Core {
        let mut c = Self::core(&self.keys, &self.peer);
        for p in &self.log {
            c.replay(&p.entry, &p.bytes).unwrap();
        }
        c
    }
}

fn routine(seq: u64, ps: u64) -> Message {
    Message {
        id: MessageId::new(WALL, [seq as u8; 10]).to_string(),
        sequence: seq,
        from: "washington".into(),
        to: "pyongyang".into(),
        precedence: Precedence::Routine as i32,
        body: format!("message {seq}"),
        language: "en".into(),
        precedence_sequence: ps,
        ..Default::default()
    }
}

#[test]
fn a_refused_message_settles_its_numbers_and_later_ones_flow_in_order() {
    let mut b = Bench::new();
    b.take_sent();
    let mut bad = routine(1, 1);
    bad.language = "x".repeat(100); // over the 64-byte limit: refused for good
    let bad_env = b.send(&bad);
    let nacks = Bench::nacks(&b.take_sent(), &b.keys.message);
    assert_eq!(nacks.len(), 1);
    let n = &nacks[0];
    assert_eq!(n.reason, NackReason::Malformed as i32);
    assert!(n.settles, "{n:?}");
    assert_eq!((n.sequence, n.precedence_sequence), (1, 1));
    assert_eq!(n.precedence, Precedence::Routine as i32);
    assert_eq!(n.payload_hash, sha256(&bad_env.payload).to_vec());
    // The next ROUTINE message is delivered, not held.
    b.send(&routine(2, 2));
    let r = Bench::receipts(&b.take_sent(), &b.keys.message);
    assert_eq!(r.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![2]);
    assert_eq!(b.logged_messages(), vec![2]);
    assert_eq!(b.core.status()[0].received_through, 2);
    // A retransmission of the refused one gets the same refusal, byte for
    // byte, and logs nothing.
    let log_len = b.log.len();
    b.frame(Body::Message(bad_env.clone()));
    let again = b.take_sent();
    assert_eq!(again.len(), 1);
    match (&again[0].body, nacks_env(&b.log)) {
        (Some(Body::NegativeReceipt(e)), Some(first)) => assert_eq!(e, &first),
        other => panic!("expected the same negative receipt, got {other:?}"),
    }
    assert_eq!(b.log.len(), log_len);
    // Replay rebuilds the same numbers: 3 follows 2 at once.
    let mut c = b.replayed();
    assert_eq!(c.status()[0].received_through, 2);
    c.link_up(b.at(), &office("washington"), "replay");
    let m3 = b.signed(&routine(3, 3));
    c.handle_frame(
        b.at(),
        &office("washington"),
        Frame {
            body: Some(Body::Hello(Hello {
                protocol_version: 1,
                office: "washington".into(),
                ..Default::default()
            })),
        },
    );
    c.handle_frame(
        b.at(),
        &office("washington"),
        Frame {
            body: Some(Body::Message(m3)),
        },
    );
    let out = c.take_output();
    assert!(out
        .persist
        .iter()
        .any(|p| matches!(&p.entry.event, Some(Event::MessageReceived(_)))));
}

fn nacks_env(log: &[Persisted]) -> Option<SignedEnvelope> {
    log.iter().find_map(|p| match &p.entry.event {
        Some(Event::NegativeReceiptSent(pe)) => pe.envelope.clone(),
        _ => None,
    })
}

#[test]
fn a_settling_refusal_releases_what_was_held_behind_it() {
    let mut b = Bench::new();
    b.send(&routine(3, 3)); // held: 1 and 2 not yet here
    assert!(b.logged_messages().is_empty());
    b.send(&routine(1, 1));
    assert_eq!(b.logged_messages(), vec![1]);
    let mut bad = routine(2, 2);
    bad.thread = "t".repeat(300);
    b.send(&bad);
    // 2 is refused and settled; 3 is released at once.
    assert_eq!(b.logged_messages(), vec![1, 3]);
    assert_eq!(b.core.status()[0].received_through, 3);
}

#[test]
fn two_payloads_with_one_precedence_number_are_both_refused_and_later_ones_flow_after_a_restart() {
    let mut b = Bench::new();
    b.take_sent();
    // Held: ROUTINE 1 is not here yet.
    let mut first = routine(2, 2);
    first.body = "first claim on precedence sequence 2".into();
    b.send(&first);
    // The peer signs a second message with the same precedence sequence.
    b.send(&routine(3, 2));
    let nacks = Bench::nacks(&b.take_sent(), &b.keys.message);
    let mut got: Vec<(u64, u64, bool, i32)> = nacks
        .iter()
        .map(|n| (n.sequence, n.precedence_sequence, n.settles, n.reason))
        .collect();
    got.sort();
    let conflict = NackReason::SequenceConflict as i32;
    // Both are refused for good; the number is settled once, by the second.
    assert_eq!(got, vec![(2, 0, true, conflict), (3, 2, true, conflict)]);
    assert_eq!(b.core.status()[0].held, 0);
    // ROUTINE 3 is held behind 1, then this node restarts: what was held is
    // gone, and the sender's next connection brings 1 and 3 again. The
    // refusals in the log keep precedence sequence 2 settled, so nothing
    // waits for a message the peer will never send again.
    b.send(&routine(4, 3));
    assert!(b.logged_messages().is_empty());
    b.core = b.replayed();
    b.core.link_up(b.at(), &office("washington"), "restart");
    b.hello(0, 0);
    b.send(&routine(1, 1));
    b.send(&routine(4, 3));
    assert_eq!(b.logged_messages(), vec![1, 4]);
    assert_eq!(b.core.status()[0].received_through, 4);
}

#[test]
fn refusals_that_settle_nothing_leave_the_numbers_open() {
    let mut b = Bench::new();
    b.take_sent();
    // Signed by another key: nothing can be read, nothing settles.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let forged = envelope::seal_proto(Domain::Message, &routine(1, 1), &stranger);
    b.frame(Body::Message(forged));
    // Addressed to another office: not on this channel.
    let mut elsewhere = routine(1, 1);
    elsewhere.to = "stockholm".into();
    b.send(&elsewhere);
    let nacks = Bench::nacks(&b.take_sent(), &b.keys.message);
    assert_eq!(nacks.len(), 2);
    assert!(nacks
        .iter()
        .all(|n| !n.settles && n.precedence_sequence == 0));
    assert_eq!(b.core.status()[0].received_through, 0);
    // The real message 1 still gets through.
    b.send(&routine(1, 1));
    assert_eq!(b.logged_messages(), vec![1]);
}

#[test]
fn a_sender_whose_message_was_refused_settles_it_and_keeps_sending() {
    // Here the core under test is the sender: pyongyang sends to
    // washington, and washington (the test) refuses the first message.
    let mut b = Bench::new();
    let draft = |s: &str| Draft {
        to: "washington".into(),
        precedence: Precedence::Routine,
        subject: s.into(),
        body: "b".into(),
        ..Default::default()
    };
    b.take_sent();
    let now = b.at();
    b.core
        .submit(now, MessageId::new(WALL, [1; 10]), draft("one"))
        .unwrap();
    b.core
        .submit(now, MessageId::new(WALL, [2; 10]), draft("two"))
        .unwrap();
    b.flush();
    let msgs: Vec<SignedEnvelope> = b
        .take_sent()
        .into_iter()
        .filter_map(|f| match f.body {
            Some(Body::Message(e)) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 2);
    let first: Message = Message::decode(msgs[0].payload.as_slice()).unwrap();
    let nack = NegativeReceipt {
        payload_hash: sha256(&msgs[0].payload).to_vec(),
        message_id: first.id.clone(),
        sequence: first.sequence,
        from: "washington".into(),
        to: "pyongyang".into(),
        time_unix_ms: WALL,
        reason: NackReason::Malformed as i32,
        detail: "refused".into(),
        settles: true,
        precedence: first.precedence,
        precedence_sequence: first.precedence_sequence,
    };
    let nenv = envelope::seal_proto(Domain::NegativeReceipt, &nack, &b.peer.key);
    b.frame(Body::NegativeReceipt(nenv.clone()));
    let second: Message = Message::decode(msgs[1].payload.as_slice()).unwrap();
    let receipt = Receipt {
        message_id: second.id.clone(),
        message_hash: sha256(&msgs[1].payload).to_vec(),
        sequence: 2,
        from: "washington".into(),
        to: "pyongyang".into(),
        received_unix_ms: WALL,
        log_index: 5,
        log_size: 6,
        log_root: vec![0; 32],
    };
    b.frame(Body::Receipt(envelope::seal_proto(
        Domain::Receipt,
        &receipt,
        &b.peer.key,
    )));
    let states: Vec<OutState> = OfficeHistory::of(&b.log, Some(&b.core))
        .outbox()
        .iter()
        .map(|o| o.state)
        .collect();
    assert_eq!(states, vec![OutState::Refused, OutState::Delivered]);
    // The same refusal again changes and logs nothing.
    let log_len = b.log.len();
    b.frame(Body::NegativeReceipt(nenv));
    assert_eq!(b.log.len(), log_len);
    // No retransmission of the refused message, ever.
    b.take_sent();
    for _ in 0..40 {
        b.now += 1_000;
        let now = b.at();
        b.core.handle_timeout(now);
        b.flush();
    }
    assert!(!b
        .take_sent()
        .iter()
        .any(|f| matches!(f.body, Some(Body::Message(_)))));
    // The next connection's hello says both are settled.
    let peer = b.peer.name.clone();
    let now = b.at();
    b.core.link_down(now, &peer, "test");
    b.core.link_up(now, &peer, "test");
    b.flush();
    let hello = b
        .take_sent()
        .into_iter()
        .find_map(|f| match f.body {
            Some(Body::Hello(h)) => Some(h),
            _ => None,
        })
        .unwrap();
    assert_eq!(hello.receipted_through, 2);
    // And so does a core rebuilt from the log.
    let c = b.replayed();
    assert_eq!(c.status()[0].outbox_len, 0, "nothing open after replay");
    assert_eq!(
        c.pending_state(peer.as_str(), 1).map(|s| s.0),
        Some(OutState::Refused)
    );
    assert_eq!(
        c.pending_state(peer.as_str(), 2).map(|s| s.0),
        Some(OutState::Delivered)
    );
}

#[test]
fn a_refusal_detail_quoting_multibyte_peer_text_does_not_panic() {
    let mut b = Bench::new();
    b.take_sent();
    let mut m = routine(1, 1);
    m.from = format!("a{}", "é".repeat(300));
    b.send(&m);
    let nacks = Bench::nacks(&b.take_sent(), &b.keys.message);
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].reason, NackReason::WrongSender as i32);
    assert!(nacks[0].detail.len() <= 256);
    // Control characters in peer text are escaped in the detail.
    let mut m = routine(5, 0);
    m.id = "\x1b[2Jowned".into();
    b.send(&m);
    let nacks = Bench::nacks(&b.take_sent(), &b.keys.message);
    assert!(!nacks[0].detail.contains('\x1b'), "{:?}", nacks[0].detail);
    // The line still works.
    b.send(&routine(1, 1));
    assert_eq!(b.logged_messages(), vec![1]);
}

#[test]
fn hostile_hello_numbers_neither_panic_nor_flood_nor_lie_about_cosigning() {
    let mut b = Bench::new();
    for s in 1..=3 {
        b.send(&routine(s, s));
    }
    b.take_sent();
    let peer = b.peer.name.clone();
    let now = b.at();
    b.core.link_down(now, &peer, "test");
    b.core.link_up(now, &peer, "test");
    b.flush();
    b.take_sent();
    // receipted_through = u64::MAX: + 1 would overflow. Nothing to resend.
    b.frame(Body::Hello(Hello {
        protocol_version: 1,
        office: "washington".into(),
        received_through: u64::MAX,
        receipted_through: u64::MAX,
        reply: false,
        cosigned_size: u64::MAX,
    }));
    let sent = b.take_sent();
    assert!(Bench::receipts(&sent, &b.keys.message).is_empty());
    assert_eq!(
        b.core.status()[0].peer_cosigned_size,
        0,
        "a hello is not a cosignature"
    );
    // A genuine cosignature is still recorded afterwards.
    let now = b.at();
    b.core.issue_checkpoint(now);
    b.flush();
    let cp = b.core.latest_checkpoint().unwrap().clone();
    let ours = checkpoint::origin(&office("pyongyang"), &b.keys.log.verifying_key());
    let theirs = checkpoint::origin(&b.peer.name, &b.peer.log_key.verifying_key());
    assert_eq!(cp.origin, ours);
    let cosigned = checkpoint::cosign(&cp.note, &theirs, &b.peer.log_key, 1).unwrap();
    b.frame(Body::Cosignature(Cosignature { note: cosigned }));
    assert_eq!(b.core.status()[0].peer_cosigned_size, cp.size);
}

fn offer(b: &Bench, size: u64, root: [u8; 32], old_size: u64, proof: Vec<Vec<u8>>) -> Body {
    let origin = checkpoint::origin(&b.peer.name, &b.peer.log_key.verifying_key());
    let cp = checkpoint::sign(
        &origin,
        size,
        hotline::audit::merkle::Hash(root),
        &b.peer.log_key,
    );
    let offer = CheckpointOffer {
        note: cp.note,
        old_size,
        proof,
    };
    Body::CheckpointOffer(envelope::seal_proto(
        Domain::CheckpointOffer,
        &offer,
        &b.peer.log_key,
    ))
}

#[test]
fn hostile_checkpoint_offers_neither_panic_nor_grow_the_log_past_the_budget() {
    let mut b = Bench::new();
    // Size 0 with a root that is not the empty tree's, nothing cosigned yet.
    let body = offer(&b, 0, [7; 32], 0, vec![]);
    b.frame(body);
    assert!(b.events.iter().any(
        |e| matches!(e, CoreEvent::ProtocolError { detail, .. } if detail.contains("size 0"))
    ));
    // A consistent offer is cosigned; then a flood of growing offers is
    // cosigned only within the cosignature budget.
    let mut tree = Tree::new();
    let before = b.log.len();
    let mut offered = 0;
    for i in 0..200u64 {
        tree.push(format!("leaf {i}").as_bytes());
        let old = b.core.status()[0].we_cosigned_size;
        let proof = tree
            .consistency_proof(old, tree.size())
            .unwrap()
            .iter()
            .map(|h| h.0.to_vec())
            .collect();
        let body = offer(&b, tree.size(), tree.root().0, old, proof);
        b.frame(body);
        offered += 1;
    }
    let cosigned = b.log[before..]
        .iter()
        .filter(|p| matches!(p.entry.event, Some(Event::CosignatureIssued(_))))
        .count();
    let (burst, per) = hotline::core::Spend::Cosignature.rate();
    assert!(cosigned >= 1, "a consistent offer is cosigned");
    assert!(
        cosigned as u64 <= u64::from(burst) + 200 / per + 1,
        "{cosigned} of {offered} cosigned"
    );
    // A note over the size limit is refused before it is parsed.
    let body = Body::CheckpointOffer(envelope::seal_proto(
        Domain::CheckpointOffer,
        &CheckpointOffer {
            note: vec![b'x'; 100_000],
            old_size: 0,
            proof: vec![],
        },
        &b.peer.log_key,
    ));
    let before = b.log.len();
    b.frame(body);
    assert_eq!(b.log.len(), before);
}

#[test]
fn an_inconsistent_extension_after_a_padded_checkpoint_is_logged_within_the_entry_limit() {
    let mut b = Bench::new();
    let mut tree = Tree::new();
    for i in 0..4u64 {
        tree.push(format!("leaf {i}").as_bytes());
    }
    let proof = tree
        .consistency_proof(0, 4)
        .unwrap()
        .iter()
        .map(|h| h.0.to_vec())
        .collect();
    let body = offer(&b, 4, tree.root().0, 0, proof);
    b.frame(body);
    assert_eq!(b.core.status()[0].we_cosigned_size, 4);
    // A later offer whose proof does not hold, padded with the most proof
    // hashes allowed: evidence, bounded.
    let junk = vec![vec![0xee; 32]; hotline::core::MAX_PROOF_HASHES];
    let body = offer(&b, 9, [1; 32], 4, junk);
    b.frame(body);
    let ev = b
        .log
        .iter()
        .find(|p| matches!(p.entry.event, Some(Event::EquivocationDetected(_))))
        .expect("evidence logged");
    assert!(ev.bytes.len() < 64 * 1024, "{} bytes", ev.bytes.len());
    // A proof longer than any tree needs is refused outright.
    let junk = vec![vec![0xee; 32]; hotline::core::MAX_PROOF_HASHES + 1];
    let before = b.log.len();
    let body = offer(&b, 10, [1; 32], 4, junk);
    b.frame(body);
    assert_eq!(b.log.len(), before);
}

#[test]
fn a_signed_flood_of_every_kind_stays_within_the_stated_log_bound() {
    use hotline::wire::proto::{AlertLevel, AlertLevelNotice, LineCheck};
    let mut b = Bench::new();
    let start_bytes: usize = b.log.iter().map(|p| p.bytes.len()).sum();
    // One simulated minute of everything, 50 frames of each kind per second.
    for tick in 0..60_000u64 / 20 {
        let i = tick;
        let mut bad = routine(1_000_000 + i, 0);
        bad.body = "x".repeat(70_000); // over the body limit
        b.send(&bad);
        let nack = NegativeReceipt {
            payload_hash: vec![1; 32],
            from: "washington".into(),
            to: "pyongyang".into(),
            reason: NackReason::BadSignature as i32,
            detail: "d".repeat(100_000),
            ..Default::default()
        };
        let body = Body::NegativeReceipt(envelope::seal_proto(
            Domain::NegativeReceipt,
            &nack,
            &b.peer.key,
        ));
        b.frame(body);
        let level = if i % 2 == 0 {
            AlertLevel::Crisis
        } else {
            AlertLevel::Elevated
        };
        let notice = AlertLevelNotice {
            from: "washington".into(),
            to: "pyongyang".into(),
            level: level as i32,
            time_unix_ms: WALL,
            reason: "r".repeat(200),
        };
        let body = Body::AlertLevel(envelope::seal_proto(
            Domain::AlertLevel,
            &notice,
            &b.peer.key,
        ));
        b.frame(body);
        let lc = LineCheck {
            from: "washington".into(),
            to: "pyongyang".into(),
            sequence: i,
            ..Default::default()
        };
        let body = Body::LineCheck(envelope::seal_proto(Domain::LineCheck, &lc, &b.peer.key));
        b.frame(body);
        b.now += 16;
    }
    let bytes: usize = b.log.iter().map(|p| p.bytes.len()).sum::<usize>() - start_bytes;
    // Refusals: 100 a minute plus the burst; notices: the burst plus one a
    // minute; each entry well under 1 KiB (details are cut to 256 bytes).
    let bound = (2 * 100 + 32 + 2) * 1024;
    assert!(
        bytes < bound,
        "{bytes} log bytes in a minute (bound {bound})"
    );
    let st = &b.core.status()[0];
    assert!(st.input_dropped > 1_000, "{st:?}");
    // Replies to line checks are bounded by the answer budget.
    let replies = b
        .sent
        .iter()
        .filter(|f| matches!(f.body, Some(Body::LineCheck(_))))
        .count();
    assert!(
        replies <= 64 + 60_000 / 50 + 10,
        "{replies} line-check replies"
    );
}

#[test]
fn a_flood_of_resynchronisation_hellos_resends_each_message_at_most_once_a_second() {
    // Pyongyang (the core under test) has 20 messages out that washington
    // never receipts; washington then floods it with hellos asking to
    // resynchronise. Each request that is acted on re-sends the messages
    // once; requests are acted on at most once per resend timeout (1 s),
    // and answered within the answer budget.
    let mut b = Bench::new();
    b.take_sent();
    let now = b.at();
    for n in 1..=20u8 {
        let d = Draft {
            to: "washington".into(),
            precedence: Precedence::Routine,
            subject: format!("m{n}"),
            body: "b".into(),
            ..Default::default()
        };
        b.core
            .submit(now, MessageId::new(WALL, [n; 10]), d)
            .unwrap();
    }
    b.flush();
    let count = |frames: &[Frame]| {
        let m = frames
            .iter()
            .filter(|f| matches!(f.body, Some(Body::Message(_))))
            .count();
        let h = frames
            .iter()
            .filter(|f| matches!(f.body, Some(Body::Hello(_))))
            .count();
        (m, h)
    };
    assert_eq!(count(&b.take_sent()), (20, 0), "each message once");
    // 500 requests within half a second (b.frame advances 1 ms each).
    for _ in 0..500 {
        b.hello(0, 0);
    }
    let (messages, replies) = count(&b.take_sent());
    assert_eq!(messages, 20, "one resynchronisation acted on");
    // The answer budget: a burst of 64, then one per 50 ms of the 500 ms.
    assert!(
        (1..=75).contains(&replies),
        "{replies} replies: within the answer budget"
    );
    // A second later a request is acted on again, once.
    b.now += 1_000;
    b.hello(0, 0);
    b.hello(0, 0);
    assert_eq!(count(&b.take_sent()).0, 20);
    let h = OfficeHistory::of(&b.log, Some(&b.core));
    assert!(h.outbox().iter().all(|o| o.attempts == 3));
}

/// Washington's card as the bench's core knows it (its keys, seal key
/// [7; 32]) with a CA and node certificate of its own.
fn washington_card() -> (hotline::identity::OfficeCard, String) {
    let m = hotline::identity::tls_material::generate(&office("washington")).unwrap();
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(m.node_cert_pem.as_bytes()).unwrap();
    let card = hotline::identity::OfficeCard::new(
        office("washington"),
        "office",
        "127.0.0.1:1".into(),
        &SigningKey::from_bytes(&[5; 32]).verifying_key(),
        &SigningKey::from_bytes(&[6; 32]).verifying_key(),
        &[7; 32],
        m.ca_cert_pem.clone(),
        der.as_ref(),
    )
    .unwrap();
    (card, m.ca_key_pem)
}

/// A new card for washington: a reissued node certificate, same keys.
fn reissued(card: &hotline::identity::OfficeCard, ca_key: &str) -> hotline::identity::OfficeCard {
    let (pem, _) =
        hotline::identity::tls_material::reissue_node_cert(&office("washington"), ca_key).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut c = card.clone();
    c.node_cert_sha256 = hex::encode(sha256(der.as_ref()));
    c.fingerprint = c.compute_fingerprint().unwrap();
    c
}

fn card_entries(b: &Bench) -> usize {
    b.log
        .iter()
        .filter(|p| {
            matches!(
                p.entry.event,
                Some(Event::CardUpdateReceived(_)) | Some(Event::CardUpdateAcceptedSent(_))
            )
        })
        .count()
}

fn acceptances(frames: &[Frame]) -> Vec<hotline::wire::proto::CardUpdateAccepted> {
    let key = SigningKey::from_bytes(&[2; 32]).verifying_key();
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::CardUpdateAccepted(e)) => {
                Some(envelope::open(e, Domain::CardUpdateAccepted, &key).unwrap())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_card_update_is_pinned_only_when_signed_by_the_pinned_key_and_keeping_the_ca() {
    let (card, ca_key) = washington_card();
    let mut b = Bench::pinning(&[(office("washington"), card.fingerprint.clone())]);
    b.take_sent();
    let good = reissued(&card, &ca_key);
    let update = |c: &hotline::identity::OfficeCard, old: &hotline::identity::OfficeCard| {
        c.to_update(old, WALL)
    };
    let sign = |u: &hotline::wire::proto::CardUpdate, k: &SigningKey| {
        envelope::seal_proto(Domain::CardUpdate, u, k)
    };
    // Signed by a key that is not washington's.
    b.frame(Body::CardUpdate(sign(
        &update(&good, &card),
        &SigningKey::from_bytes(&[9; 32]),
    )));
    // Replacing a card that is not the one pinned.
    let other = reissued(&card, &ca_key);
    b.frame(Body::CardUpdate(sign(&update(&good, &other), &b.peer.key)));
    // Naming the pinned card but other old keys (its old fields do not
    // hash to the old fingerprint).
    let mut liar = update(&good, &card);
    liar.old_message_key = hex::encode(SigningKey::from_bytes(&[8; 32]).verifying_key().as_bytes());
    b.frame(Body::CardUpdate(sign(&liar, &b.peer.key)));
    // Changing the role (signed with the real key).
    let mut relay = good.clone();
    relay.role = "relay".into();
    relay.fingerprint = relay.compute_fingerprint().unwrap();
    b.frame(Body::CardUpdate(sign(&update(&relay, &card), &b.peer.key)));
    // A fingerprint that is not the contents'.
    let mut lying = update(&good, &card);
    lying.new_fingerprint = card.fingerprint.clone();
    b.frame(Body::CardUpdate(sign(&lying, &b.peer.key)));
    // Over the size limit.
    let mut big = update(&good, &card);
    big.ca_cert = "x".repeat(hotline::core::MAX_CARD_UPDATE_BYTES);
    b.frame(Body::CardUpdate(sign(&big, &b.peer.key)));
    assert_eq!(card_entries(&b), 0, "nothing refused is logged");
    assert!(acceptances(&b.take_sent()).is_empty());
    assert!(!b
        .events
        .iter()
        .any(|e| matches!(e, CoreEvent::PeerCardUpdated { .. })));

    // The genuine update: logged, pinned, answered, and told to the node.
    let env = sign(&update(&good, &card), &b.peer.key);
    b.frame(Body::CardUpdate(env.clone()));
    assert_eq!(card_entries(&b), 2);
    let acc = acceptances(&b.take_sent());
    assert_eq!(acc.len(), 1);
    assert_eq!(
        (
            acc[0].from.as_str(),
            acc[0].to.as_str(),
            acc[0].new_fingerprint.as_str()
        ),
        ("pyongyang", "washington", good.fingerprint.as_str())
    );
    assert!(b.events.iter().any(|e| matches!(
        e,
        CoreEvent::PeerCardUpdated { card, .. } if card.fingerprint == good.fingerprint
    )));
    // A repeat (our answer was lost) is answered again, not logged again.
    b.frame(Body::CardUpdate(env.clone()));
    assert_eq!(card_entries(&b), 2);
    assert_eq!(acceptances(&b.take_sent()).len(), 1);
    // After a restart the replayed core knows the new card: the repeat is
    // still only answered.
    let mut r = b.replayed();
    r.handle_frame(
        b.at(),
        &office("washington"),
        Frame {
            body: Some(Body::CardUpdate(env)),
        },
    );
    let out = r.take_output();
    assert!(out.persist.is_empty());
    // A chain of further updates draws on the card-update budget: at most
    // one more within the burst of two, then none this hour.
    let mut last = good;
    for _ in 0..5 {
        let next = reissued(&last, &ca_key);
        b.frame(Body::CardUpdate(sign(&update(&next, &last), &b.peer.key)));
        if card_entries(&b) > 4 {
            panic!("over the budget");
        }
        if b.events.iter().any(|e| matches!(e, CoreEvent::PeerCardUpdated { card, .. } if card.fingerprint == next.fingerprint)) {
            last = next;
        }
    }
    assert_eq!(card_entries(&b), 4, "two updates within the burst");
}

#[test]
fn a_card_update_with_new_keys_is_pinned_and_the_old_keys_retire_a_day_after_the_new_are_seen() {
    let (card, _) = washington_card();
    let mut b = Bench::pinning(&[(office("washington"), card.fingerprint.clone())]);
    b.take_sent();
    let new_key = SigningKey::from_bytes(&[15; 32]);
    let new_log = SigningKey::from_bytes(&[16; 32]);
    let mut rekeyed = card.clone();
    rekeyed.message_key = hex::encode(new_key.verifying_key().as_bytes());
    rekeyed.log_key = hex::encode(new_log.verifying_key().as_bytes());
    rekeyed.seal_key = hex::encode([17u8; 32]);
    rekeyed.fingerprint = rekeyed.compute_fingerprint().unwrap();
    let sign = |u: &hotline::wire::proto::CardUpdate, k: &SigningKey| {
        envelope::seal_proto(Domain::CardUpdate, u, k)
    };
    // Signed with the new key only: not washington's pinned key.
    b.frame(Body::CardUpdate(sign(
        &rekeyed.to_update(&card, WALL),
        &new_key,
    )));
    assert_eq!(card_entries(&b), 0);
    // The genuine one, signed with the pinned key.
    b.frame(Body::CardUpdate(sign(
        &rekeyed.to_update(&card, WALL),
        &b.peer.key,
    )));
    assert_eq!(card_entries(&b), 2, "logged and answered");
    b.take_sent();
    let me = b.keys.message.clone();
    let by =
        |m: &Message, k: &SigningKey| Body::Message(envelope::seal_proto(Domain::Message, m, k));
    let delivered = |b: &mut Bench| {
        let sent = b.take_sent();
        (
            Bench::receipts(&sent, &me).len(),
            Bench::nacks(&sent, &me).len(),
        )
    };
    // Washington still signs with its old key (it switches once all its
    // peers accepted): accepted.
    b.frame(by(&routine(1, 1), &b.peer.key.clone()));
    assert_eq!(delivered(&mut b), (1, 0), "old key before the switch");
    // Then with the new one.
    b.frame(by(&routine(2, 2), &new_key));
    assert_eq!(delivered(&mut b), (1, 0), "new key");
    // An envelope it signed before switching, retransmitted: still accepted
    // within the day.
    b.frame(by(&routine(3, 3), &b.peer.key.clone()));
    assert_eq!(delivered(&mut b), (1, 0), "old key within the overlap");
    // A day after the new key was first seen, the old one is refused.
    b.now += hotline::core::KEY_OVERLAP_MS;
    b.frame(by(&routine(4, 4), &b.peer.key.clone()));
    assert_eq!(delivered(&mut b), (0, 1), "old key after the overlap");
    assert_eq!(b.logged_messages(), vec![1, 2, 3]);
    // A fresh core replaying the log, built from the old card (the node
    // stopped before storing the new one), takes the new keys from it.
    let mut r = b.replayed();
    r.start(
        b.at(),
        "test",
        None,
        &[(office("washington"), rekeyed.fingerprint.clone())],
    );
    r.link_up(b.at(), &office("washington"), "test");
    r.handle_frame(
        b.at(),
        &office("washington"),
        Frame {
            body: Some(by(&routine(4, 4), &new_key)),
        },
    );
    let out = r.take_output();
    let frames: Vec<Frame> = out.transmit.into_iter().map(|t| t.frame).collect();
    assert_eq!(
        Bench::receipts(&frames, &me).len(),
        1,
        "replayed core knows the new key"
    );
}

#[test]
fn a_peer_whose_updates_need_confirmation_has_them_held_until_the_operator_confirms_the_fingerprint(
) {
    let (card, ca_key) = washington_card();
    let mut b = Bench::pinning(&[(office("washington"), card.fingerprint.clone())]);
    b.core
        .require_card_confirmation(&office("washington"), true);
    b.take_sent();
    let good = reissued(&card, &ca_key);
    let env = envelope::seal_proto(
        Domain::CardUpdate,
        &good.to_update(&card, WALL),
        &b.peer.key,
    );
    // Signed and correct, but held: nothing logged or answered yet.
    b.frame(Body::CardUpdate(env.clone()));
    b.frame(Body::CardUpdate(env.clone()));
    assert_eq!(card_entries(&b), 0);
    assert!(acceptances(&b.take_sent()).is_empty());
    let held: Vec<_> = b
        .events
        .iter()
        .filter(|e| matches!(e, CoreEvent::CardUpdateHeld { fingerprint, .. } if *fingerprint == good.fingerprint))
        .collect();
    assert_eq!(held.len(), 1, "told once, though offered twice");
    assert_eq!(b.core.held_card_updates().len(), 1);
    assert!(!b
        .events
        .iter()
        .any(|e| matches!(e, CoreEvent::PeerCardUpdated { .. })));
    // A fingerprint misread is refused; nothing changes.
    let now = b.at();
    let wrong = b
        .core
        .confirm_card(now, &office("washington"), &card.fingerprint);
    assert!(matches!(
        wrong,
        Err(hotline::core::ConfirmError::Mismatch { .. })
    ));
    let nothing = b
        .core
        .confirm_card(now, &office("pyongyang"), &good.fingerprint);
    assert!(matches!(
        nothing,
        Err(hotline::core::ConfirmError::NothingHeld(_))
    ));
    b.flush();
    assert_eq!(card_entries(&b), 0);
    // Confirmed: pinned, logged and answered.
    b.core
        .confirm_card(now, &office("washington"), &good.fingerprint)
        .unwrap();
    b.flush();
    assert_eq!(card_entries(&b), 2);
    assert_eq!(acceptances(&b.take_sent()).len(), 1);
    assert!(b.core.held_card_updates().is_empty());
    assert!(b.events.iter().any(|e| matches!(
        e,
        CoreEvent::PeerCardUpdated { card, .. } if card.fingerprint == good.fingerprint
    )));
}
