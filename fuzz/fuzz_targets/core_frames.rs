//! The honest core against a hostile peer that holds real keys.
//!
//! Washington's core is driven by a sequence of operations read from the
//! fuzzer's input: frames from pyongyang made by the simulator's
//! `HostileOffice` (so they are correctly signed with pyongyang's real
//! message and log keys and get past every signature check), timer ticks,
//! line cuts and submissions of washington's own messages (which the
//! hostile office then receipts, refuses or cosigns at will).
//!
//! Nothing may panic; every log entry stays within the writer's entry
//! limit; and the log the core wrote replays into a fresh core whose
//! status matches.
#![no_main]
use arbitrary::Unstructured;
use ed25519_dalek::SigningKey;
use hotline::core::{Core, Draft, Now, OfficeKeys, PeerKeys, Timing};
use hotline::identity::OfficeName;
use hotline::sim::hostile::{Choices, HostileOffice};
use hotline::wire::proto::{Hello, Precedence};
use hotline::wire::{seal, MessageId};
use libfuzzer_sys::fuzz_target;

const WALL: u64 = 1_750_000_000_000;

struct Fuzzed<'a, 'b>(&'b mut Unstructured<'a>);

impl Choices for Fuzzed<'_, '_> {
    fn below(&mut self, n: u64) -> u64 {
        self.0.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.0.int_in_range(0..=max).unwrap_or(0);
        self.0.bytes(n).map(|b| b.to_vec()).unwrap_or_default()
    }
}

fn name(s: &str) -> OfficeName {
    OfficeName::new(s).unwrap()
}

fn washington(peer: &SigningKey, peer_log: &SigningKey) -> Core {
    let keys = OfficeKeys {
        message: SigningKey::from_bytes(&[1; 32]),
        log: SigningKey::from_bytes(&[2; 32]),
        seal: seal::derive_keypair(&[3; 32]).0,
    };
    Core::new(
        name("washington"),
        keys,
        [PeerKeys {
            office: name("pyongyang"),
            message: peer.verifying_key(),
            log: peer_log.verifying_key(),
            seal: seal::derive_keypair(&[6; 32]).1,
            relays: vec![],
        }],
        Timing::default(),
    )
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let p_key = SigningKey::from_bytes(&[4; 32]);
    let p_log = SigningKey::from_bytes(&[5; 32]);
    let pyongyang = name("pyongyang");
    let mut core = washington(&p_key, &p_log);
    let mut hostile = HostileOffice::new(
        pyongyang.clone(),
        p_key.clone(),
        p_log.clone(),
        name("washington"),
        seal::derive_keypair(&[3; 32]).1,
    );
    let mut t = 1_000u64;
    let at = |t: u64| Now {
        mono_ms: t,
        wall_ms: WALL + t,
    };
    let mut log = Vec::new();
    core.start(at(t), "fuzz", None, &[]);
    core.link_up(at(t), &pyongyang, "fuzz");
    core.handle_frame(
        at(t),
        &pyongyang,
        hotline::wire::proto::Frame {
            body: Some(hotline::wire::proto::frame::Body::Hello(Hello {
                protocol_version: 1,
                office: "pyongyang".into(),
                ..Default::default()
            })),
        },
    );
    let mut submitted = 0u8;
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let op = u.int_in_range(0..=15u8).unwrap_or(0);
        match op {
            0..=11 => {
                let f = hostile.frame(&mut Fuzzed(&mut u), WALL + t);
                core.handle_frame(at(t), &pyongyang, f);
            }
            12 => {
                t += u64::from(u.arbitrary::<u16>().unwrap_or(0));
                core.handle_timeout(at(t));
            }
            13 => {
                core.link_down(at(t), &pyongyang, "fuzz");
                core.link_up(at(t), &pyongyang, "fuzz");
            }
            _ => {
                submitted = submitted.wrapping_add(1);
                let precedence = match submitted % 4 {
                    0 => Precedence::Flash,
                    1 => Precedence::Immediate,
                    2 => Precedence::Priority,
                    _ => Precedence::Routine,
                };
                let _ = core.submit(
                    at(t),
                    MessageId::new(WALL + t, [submitted; 10]),
                    Draft {
                        to: "pyongyang".into(),
                        precedence,
                        subject: "s".into(),
                        body: "b".into(),
                        ..Default::default()
                    },
                );
            }
        }
        t += 1;
        let out = core.take_output();
        for tx in &out.transmit {
            hostile.observe(&tx.frame);
        }
        for p in out.persist {
            assert!(p.bytes.len() <= 1 << 20, "a {}-byte log entry", p.bytes.len());
            log.push(p);
        }
    }
    // The log replays into a fresh core that agrees.
    let mut again = washington(&p_key, &p_log);
    for p in &log {
        again
            .replay(&p.entry, &p.bytes)
            .unwrap_or_else(|e| panic!("the core's own log does not replay: {e}"));
    }
    again.check_own_checkpoint().unwrap();
    let (a, b) = (core.status(), again.status());
    assert_eq!(a[0].received_through, b[0].received_through);
    assert_eq!(a[0].next_sequence, b[0].next_sequence);
    assert_eq!(a[0].delivered, b[0].delivered);
});
