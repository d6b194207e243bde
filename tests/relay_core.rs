//! The relay path in the sans-IO cores, wired by hand: a relay that alters
//! one ciphertext byte is caught, and a message that arrives both ways is
//! delivered once.

use hotline::core::{Core, CoreEvent, Draft, Timing};
use hotline::identity::OfficeName;
use hotline::sim::{Faults, Setup, Sim};
use hotline::wire::proto::{frame::Body, log_entry::Event, Frame, NackReason, Precedence};
use hotline::wire::{seal, MessageId};

/// The three offices on the one simulator: washington (0) and pyongyang
/// (1) pin stockholm (2) as their relay. Names keep the tests readable.
struct Net {
    sim: Sim,
}

const W: usize = 0;
const P: usize = 1;
const S: usize = 2;

fn idx(s: &str) -> usize {
    ["washington", "pyongyang", "stockholm"]
        .iter()
        .position(|n| *n == s)
        .unwrap()
}

impl Net {
    fn new() -> Net {
        let mut setup = Setup::offices(&["washington", "pyongyang", "stockholm"]);
        setup.relay = Some("stockholm".into());
        setup.timing = Timing::default();
        let mut sim = Sim::network(1, Faults::clean(1), setup);
        sim.run_for(10);
        Net { sim }
    }

    fn link(&mut self, a: &str, b: &str) {
        self.sim.restore_line(idx(a), idx(b));
        self.pump();
    }

    /// Lets every frame in flight arrive (and what they cause).
    fn pump(&mut self) {
        self.sim.run_for(100);
    }

    /// Alters one ciphertext byte of every sealed frame the relay hands
    /// to pyongyang.
    fn tamper(&mut self) {
        self.sim.set_tamper(Box::new(|from, to, frame: &mut Frame| {
            if (from, to) == (S, P) {
                if let Some(Body::Sealed(s)) = &mut frame.body {
                    s.ciphertext[5] ^= 0x01;
                }
            }
        }));
    }

    fn core(&self, office: &str) -> &Core {
        self.sim.offices[idx(office)].core.as_ref().unwrap()
    }

    /// Ids of the messages `office` received, oldest first (its inbox).
    fn inbox(&self, office: &str) -> Vec<String> {
        let h = self.sim.history(idx(office));
        h.inbox().into_iter().map(|m| m.id).collect()
    }

    fn events(&self, office: &str) -> &[CoreEvent] {
        &self.sim.offices[idx(office)].events
    }

    fn submit(&mut self, body: &str) -> (MessageId, u64) {
        let id = MessageId::new(1_780_000_000_000, [7; 10]);
        let seq = self
            .sim
            .with_core(W, |core, now| {
                core.submit(
                    now,
                    id,
                    Draft {
                        to: "pyongyang".into(),
                        precedence: Precedence::Flash,
                        body: body.into(),
                        ..Default::default()
                    },
                )
            })
            .unwrap()
            .unwrap();
        (id, seq)
    }

    fn via_relay(&mut self, seq: u64) {
        let r = self.sim.with_core(W, |core, _| {
            core.send_via_relay(&name("pyongyang"), seq, None)
        });
        assert_eq!(r, Some(Some(name("stockholm"))));
        self.pump();
    }

    fn entries(&self, office: &str) -> Vec<Event> {
        self.sim.offices[idx(office)]
            .disk
            .iter()
            .filter_map(|p| p.entry.event.clone())
            .collect()
    }
}

fn name(s: &str) -> OfficeName {
    OfficeName::new(s).unwrap()
}

#[test]
fn a_relay_that_alters_one_ciphertext_byte_is_caught_and_the_logs_show_where() {
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    net.tamper();
    let (id, seq) = net.submit("Cross the parallel and we intervene.");
    net.pump();
    net.via_relay(seq);

    // Pyongyang refused it with a signed negative receipt, and logged that.
    let p = net.entries("pyongyang");
    assert!(net.inbox("pyongyang").is_empty());
    assert!(p.iter().any(|e| matches!(e, Event::NegativeReceiptSent(_))));
    // Washington got the refusal (sealed back through the relay) and logged it;
    // the message itself stays pending for another path.
    let w_events = &net.events("washington");
    assert!(w_events.iter().any(|e| matches!(
        e,
        CoreEvent::NegativeReceipt { reason: NackReason::BadSeal, id: Some(got), .. } if *got == id
    )));
    assert!(net
        .entries("washington")
        .iter()
        .any(|e| matches!(e, Event::NegativeReceiptReceived(_))));
    assert_eq!(
        net.core("washington")
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
    // Both copies leave while the message is still pending (a delivered one
    // is never relayed): the direct one and the relayed one.
    net.via_relay(seq);
    assert!(
        net.entries("stockholm")
            .iter()
            .any(|e| matches!(e, Event::RelayHandedOver(p) if p.message_id == id.to_string())),
        "the relayed copy reached pyongyang too"
    );
    let inbox = net.inbox("pyongyang");
    assert_eq!(inbox.iter().filter(|m| **m == id.to_string()).count(), 1);
    let received = net
        .entries("pyongyang")
        .iter()
        .filter(|e| matches!(e, Event::MessageReceived(_)))
        .count();
    assert_eq!(received, 1, "logged once");
    let delivered = net
        .events("washington")
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
    let pk = net.sim.seal_public(P);
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
    net.sim.inject_to(S, P, frame);
    net.pump();
    assert!(net
        .entries("pyongyang")
        .iter()
        .any(|e| matches!(e, Event::NegativeReceiptSent(_))));
    let st = net.core("pyongyang").status();
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
    net.sim.jump(8 * 24 * 3600 * 1000);
    net.pump();
    assert!(net
        .entries("stockholm")
        .iter()
        .any(|e| matches!(e, Event::RelayExpired(p) if p.message_id == id.to_string())));
    let told = net.events("washington").iter().any(|e| {
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
    net.sim.run_for(30_000);
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
    assert!(net.inbox("pyongyang").is_empty());
    // The relay's line comes up: the warning goes through it at once.
    net.link("washington", "stockholm");
    let inbox = net.inbox("pyongyang");
    assert_eq!(inbox, vec![id.to_string()]);
    let delivered = net
        .events("washington")
        .iter()
        .any(|e| matches!(e, CoreEvent::Delivered { id: got, .. } if *got == id));
    assert!(delivered, "the receipt came back through the relay");
}

#[test]
fn a_frame_sealed_to_the_seal_key_a_rotation_replaced_still_opens() {
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    // Pyongyang switches to a new seal key (its rotation completed) while
    // washington still seals to the old one, as it would for a frame it
    // sealed before it pinned the new card.
    let mut keys = net.sim.office_keys(P);
    let old = keys.seal;
    keys.seal = hotline::wire::seal::derive_keypair(&[0x5a; 32]).0;
    assert_ne!(keys.seal, old);
    net.sim
        .with_core(P, |core, _| core.switch_own_keys(keys.clone()))
        .unwrap();
    let (id, seq) = net.submit("Sealed to the key before.");
    net.pump();
    net.via_relay(seq);
    assert!(
        net.inbox("pyongyang").contains(&id.to_string()),
        "opened with the replaced seal key"
    );
    // Without that key kept, the same frame would not open: a core whose
    // only seal key is the new one refuses it.
    let mut net = Net::new();
    net.link("washington", "stockholm");
    net.link("pyongyang", "stockholm");
    net.sim.with_core(P, |core, _| {
        let fresh = hotline::core::MAX_SEAL_OPENERS;
        // Push the replaced key out with unrelated ones.
        core.switch_own_keys(keys.clone());
        for b in 0..fresh as u8 {
            core.add_seal_opener(hotline::wire::seal::derive_keypair(&[b; 32]).0);
        }
    });
    let (id, seq) = net.submit("Sealed to a key no longer kept.");
    net.pump();
    net.via_relay(seq);
    assert!(!net.inbox("pyongyang").contains(&id.to_string()));
}
