//! The relay path in the sans-IO cores, wired by hand: a relay that alters
//! one ciphertext byte is caught, and a message that arrives both ways is
//! delivered once.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::SigningKey;
use hotline::audit::Persisted;
use hotline::core::{Core, CoreEvent, Draft, Now, OfficeKeys, PeerKeys, Timing};
use hotline::identity::OfficeName;
use hotline::wire::proto::{frame::Body, log_entry::Event, Frame, NackReason, Precedence};
use hotline::wire::{seal, MessageId};

struct Office {
    message: SigningKey,
    log: SigningKey,
    seal_ikm: [u8; 32],
}

struct Net {
    now: Now,
    cores: BTreeMap<String, Core>,
    disks: BTreeMap<String, Vec<Persisted>>,
    events: BTreeMap<String, Vec<CoreEvent>>,
    queue: VecDeque<(String, String, Frame)>,
    tamper: bool,
}

fn name(s: &str) -> OfficeName {
    OfficeName::new(s).unwrap()
}

impl Net {
    fn new() -> Net {
        let offices: BTreeMap<&str, Office> =
            [("washington", 1u8), ("pyongyang", 2), ("stockholm", 3)]
                .into_iter()
                .map(|(n, i)| {
                    (
                        n,
                        Office {
                            message: SigningKey::from_bytes(&[i; 32]),
                            log: SigningKey::from_bytes(&[i + 10; 32]),
                            seal_ikm: [i + 20; 32],
                        },
                    )
                })
                .collect();
        let mut cores = BTreeMap::new();
        for (me, o) in &offices {
            let peers = offices
                .iter()
                .filter(|(n, _)| *n != me)
                .map(|(n, p)| PeerKeys {
                    office: name(n),
                    message: p.message.verifying_key(),
                    log: p.log.verifying_key(),
                    seal: seal::derive_keypair(&p.seal_ikm).1,
                    relays: if *n == "stockholm" {
                        vec![]
                    } else {
                        vec![name("stockholm")]
                    },
                });
            let keys = OfficeKeys {
                message: o.message.clone(),
                log: o.log.clone(),
                seal: seal::derive_keypair(&o.seal_ikm).0,
            };
            let mut core = Core::new(name(me), keys, peers, Timing::default());
            core.set_relay_role(*me == "stockholm");
            cores.insert(me.to_string(), core);
        }
        let mut net = Net {
            now: Now {
                mono_ms: 0,
                wall_ms: 1_780_000_000_000,
            },
            cores,
            disks: BTreeMap::new(),
            events: BTreeMap::new(),
            queue: VecDeque::new(),
            tamper: false,
        };
        for c in net.cores.values_mut() {
            c.start(net.now, "test", None, &[]);
        }
        net.pump();
        net
    }

    fn link(&mut self, a: &str, b: &str) {
        let now = self.now;
        self.cores
            .get_mut(a)
            .unwrap()
            .link_up(now, &name(b), "test");
        self.cores
            .get_mut(b)
            .unwrap()
            .link_up(now, &name(a), "test");
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let names: Vec<String> = self.cores.keys().cloned().collect();
            for n in &names {
                let out = self.cores.get_mut(n).unwrap().take_output();
                self.disks.entry(n.clone()).or_default().extend(out.persist);
                self.events.entry(n.clone()).or_default().extend(out.events);
                for t in out.transmit {
                    self.queue
                        .push_back((n.clone(), t.peer.to_string(), t.frame));
                }
            }
            let Some((from, to, mut frame)) = self.queue.pop_front() else {
                break;
            };
            if self.tamper && from == "stockholm" && to == "pyongyang" {
                if let Some(Body::Sealed(s)) = &mut frame.body {
                    s.ciphertext[5] ^= 0x01;
                }
            }
            self.now.mono_ms += 1;
            self.now.wall_ms += 1;
            let now = self.now;
            self.cores
                .get_mut(&to)
                .unwrap()
                .handle_frame(now, &name(&from), frame);
        }
    }

    fn submit(&mut self, body: &str) -> (MessageId, u64) {
        let now = self.now;
        let id = MessageId::new(now.wall_ms, [7; 10]);
        let seq = self
            .cores
            .get_mut("washington")
            .unwrap()
            .submit(
                now,
                id,
                Draft {
                    to: "pyongyang".into(),
                    precedence: Precedence::Flash,
                    body: body.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        (id, seq)
    }

    fn via_relay(&mut self, seq: u64) {
        let r =
            self.cores
                .get_mut("washington")
                .unwrap()
                .send_via_relay(&name("pyongyang"), seq, None);
        assert_eq!(r, Some(name("stockholm")));
        self.pump();
    }

    fn entries(&self, office: &str) -> Vec<Event> {
        self.disks[office]
            .iter()
            .filter_map(|p| p.entry.event.clone())
            .collect()
    }
}

#[test]
fn a_relay_that_alters_one_ciphertext_byte_is_caught_and_the_logs_show_where() {
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    net.tamper = true;
    let (id, seq) = net.submit("Cross the parallel and we intervene.");
    net.pump();
    net.via_relay(seq);

    // Pyongyang refused it with a signed negative receipt, and logged that.
    let p = net.entries("pyongyang");
    assert!(net.cores["pyongyang"].inbox().is_empty());
    assert!(p.iter().any(|e| matches!(e, Event::NegativeReceiptSent(_))));
    // Washington got the refusal (sealed back through the relay) and logged it;
    // the message itself stays pending for another path.
    let w_events = &net.events["washington"];
    assert!(w_events.iter().any(|e| matches!(
        e,
        CoreEvent::NegativeReceipt { reason: NackReason::BadSeal, id: Some(got), .. } if *got == id
    )));
    assert!(net
        .entries("washington")
        .iter()
        .any(|e| matches!(e, Event::NegativeReceiptReceived(_))));
    assert_eq!(
        net.cores["washington"]
            .status()
            .iter()
            .find(|s| s.peer.as_str() == "pyongyang")
            .unwrap()
            .outbox_len,
        1
    );
    // The relay's log shows the passage (by hash): it accepted the frame and
    // handed it over, which places the alteration between hand-over and opening.
    let s = net.entries("stockholm");
    assert!(s
        .iter()
        .any(|e| matches!(e, Event::RelayAccepted(p) if p.message_id == id.to_string())));
    assert!(s
        .iter()
        .any(|e| matches!(e, Event::RelayHandedOver(p) if p.message_id == id.to_string())));
}

#[test]
fn a_message_sent_both_ways_is_delivered_once() {
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    net.link("washington", "pyongyang");
    let (id, seq) = net.submit("Line check by both paths.");
    net.pump(); // direct copy
    net.via_relay(seq); // relayed copy
    let inbox = net.cores["pyongyang"].inbox();
    assert_eq!(
        inbox
            .iter()
            .filter(|m| m.message.id == id.to_string())
            .count(),
        1
    );
    let received = net
        .entries("pyongyang")
        .iter()
        .filter(|e| matches!(e, Event::MessageReceived(_)))
        .count();
    assert_eq!(received, 1, "logged once");
    let delivered = net.events["washington"]
        .iter()
        .filter(|e| matches!(e, CoreEvent::Delivered { id: got, .. } if *got == id))
        .count();
    assert_eq!(delivered, 1);
}

#[test]
fn a_relay_cannot_slip_in_unsigned_frames() {
    // Anyone holding pyongyang's public seal key can seal a frame that claims
    // to be from washington; only signed frames are accepted that way.
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    let header = hotline::wire::proto::RoutingHeader {
        from: "washington".into(),
        to: "pyongyang".into(),
        message_id: String::new(),
        size: 0,
        relay: "stockholm".into(),
    };
    let hello = Frame {
        body: Some(Body::Hello(hotline::wire::proto::Hello {
            protocol_version: 1,
            office: "washington".into(),
            ..Default::default()
        })),
    };
    let (_, pk) = seal::derive_keypair(&[22; 32]);
    use prost::Message as _;
    let inner = hello.encode_to_vec();
    let mut header = header;
    header.size = inner.len() as u64 + 16;
    let s = seal::seal(&pk, &header.encode_to_vec(), &inner).unwrap();
    let frame = Frame {
        body: Some(Body::Sealed(hotline::wire::proto::Sealed {
            header: Some(header),
            enc: s.enc,
            ciphertext: s.ciphertext,
        })),
    };
    let now = net.now;
    net.cores
        .get_mut("pyongyang")
        .unwrap()
        .handle_frame(now, &name("stockholm"), frame);
    net.pump();
    assert!(net
        .entries("pyongyang")
        .iter()
        .any(|e| matches!(e, Event::NegativeReceiptSent(_))));
    let st = net.cores["pyongyang"].status();
    assert!(
        !st.iter()
            .find(|c| c.peer.as_str() == "washington")
            .unwrap()
            .resumed
    );
}

#[test]
fn a_frame_nobody_claims_expires_and_the_sender_is_told() {
    let mut net = Net::new();
    net.link("washington", "stockholm"); // pyongyang never connects
    let (id, seq) = net.submit("Is anyone there?");
    net.pump();
    net.via_relay(seq);
    assert!(net
        .entries("stockholm")
        .iter()
        .any(|e| matches!(e, Event::RelayAccepted(p) if p.message_id == id.to_string())));
    net.now.mono_ms += 8 * 24 * 3600 * 1000;
    net.now.wall_ms += 8 * 24 * 3600 * 1000;
    let now = net.now;
    net.cores.get_mut("stockholm").unwrap().handle_timeout(now);
    net.pump();
    assert!(net
        .entries("stockholm")
        .iter()
        .any(|e| matches!(e, Event::RelayExpired(p) if p.message_id == id.to_string())));
    let told = net.events["washington"].iter().any(|e| {
        matches!(e, CoreEvent::RelayReceipt { state, reason, message_id, .. }
            if state == "refused" && reason == "expired unclaimed" && *message_id == id.to_string())
    });
    assert!(told, "washington holds the relay's signed refusal");
}

#[test]
fn a_reroute_that_finds_no_relay_goes_through_the_first_one_that_comes_up() {
    let mut net = Net::new();
    net.link("pyongyang", "stockholm"); // washington has no line at all yet
    let (id, _) = net.submit("Warning: do not cross the parallel.");
    net.pump();
    // Run washington's clock past the FLASH reroute step (10 s).
    for _ in 0..30 {
        net.now.mono_ms += 1_000;
        net.now.wall_ms += 1_000;
        let now = net.now;
        net.cores.get_mut("washington").unwrap().handle_timeout(now);
        net.pump();
    }
    let steps: Vec<String> = net
        .entries("washington")
        .iter()
        .filter_map(|e| match e {
            Event::Escalation(s) if s.action == "reroute" => Some(s.detail.clone()),
            _ => None,
        })
        .collect();
    assert!(
        steps.iter().any(|d| d.contains("no relay reachable")),
        "{steps:?}"
    );
    assert!(net.cores["pyongyang"].inbox().is_empty());
    // The relay's line comes up: the warning goes through it at once.
    net.link("washington", "stockholm");
    let inbox = net.cores["pyongyang"].inbox();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message.id, id.to_string());
    let delivered = net.events["washington"]
        .iter()
        .any(|e| matches!(e, CoreEvent::Delivered { id: got, .. } if *got == id));
    assert!(delivered, "the receipt came back through the relay");
}
