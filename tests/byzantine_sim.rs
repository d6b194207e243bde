//! A Byzantine office in the simulator.
//!
//! Three offices: washington (the honest node under test), beijing (honest)
//! and pyongyang, whose honest core keeps running while a hostile generator
//! signs whatever it likes with pyongyang's real keys (every frame kind,
//! mutated and replayed frames, split-view checkpoints, floods) and a share
//! of pyongyang's genuine frames is withheld. Lines drop, duplicate and
//! reorder; washington crashes, sometimes in the middle of a write.
//!
//! Over every seed: washington never panics; what it logs because of
//! pyongyang stays within the budget bound; every message between
//! washington and beijing is delivered exactly once and in order; every
//! message washington sends pyongyang is settled once the hostility ends;
//! and a refusal never blocks a later message: each of pyongyang's genuine
//! messages is settled, unless pyongyang itself signed another message
//! with the same number.
//!
//! `HOTLINE_BYZANTINE_SEEDS=10000 cargo test --release --test byzantine_sim`
//! runs the scale run (docs/reliability.md).

use std::collections::{BTreeMap, BTreeSet};

use hotline::core::{log_bound_bytes, Draft, OutState};
use hotline::sim::{Faults, Setup, Sim};
use hotline::wire::proto::{log_entry::Event, Message, NegativeReceipt, Precedence};
use hotline::wire::sha256;
use prost::Message as _;
use rand::Rng;

const W: usize = 0;
const P: usize = 1;
const B: usize = 2;
const NAMES: [&str; 3] = ["washington", "pyongyang", "beijing"];

const PRECEDENCES: [Precedence; 4] = [
    Precedence::Flash,
    Precedence::Immediate,
    Precedence::Priority,
    Precedence::Routine,
];

fn draft(to: usize, n: u64, precedence: Precedence) -> Draft {
    Draft {
        to: NAMES[to].into(),
        precedence,
        subject: format!("message {n}"),
        body: format!("body of message {n}"),
        ..Default::default()
    }
}

fn schedule(seed: u64) -> Result<(), String> {
    let mut sim = Sim::network(seed, Faults::clean(10), Setup::offices(&NAMES));
    let r = sim.rng();
    let faults = Faults {
        drop: r.gen_range(0.0..0.15),
        duplicate: r.gen_range(0.0..0.1),
        reorder: r.gen_range(0.0..0.2),
        reorder_ms: 150,
        latency_ms: 10,
    };
    let withhold = r.gen_range(0.0..0.5);
    sim.faults = faults;
    sim.make_hostile(P, &[W], withhold);
    sim.connect();
    for step in 0..60u64 {
        let action = sim.rng().gen_range(0..100);
        let p = PRECEDENCES[sim.rng().gen_range(0..4)];
        match action {
            0..=19 => {
                sim.submit(W, draft(B, step, p));
            }
            20..=29 => {
                sim.submit(B, draft(W, step, p));
            }
            30..=39 => {
                sim.submit(W, draft(P, step, p));
            }
            40..=49 => {
                sim.submit(P, draft(W, step, p));
            }
            50..=84 => {
                let n = sim.rng().gen_range(1..30);
                sim.attack(n);
            }
            85..=87 => sim.attack(300), // a flood
            88..=90 => sim.cut_line(W, P),
            91..=93 => sim.restore_line(W, P),
            94..=95 => sim.crash(W),
            96 => sim.crash_during_next_write(W),
            _ => sim.restart(W),
        }
        let dt = sim.rng().gen_range(1..1_500);
        sim.run_for(dt);
        // Whatever the hostile peer sends, washington's live state is
        // exactly what its log replays to (one fold, src/core/apply.rs).
        if step % 20 == 19 {
            if let Some(diff) = sim.fold_mismatch(W) {
                return Err(format!("washington's live state is not its log's:\n{diff}"));
            }
            let n = sim.offices[W].disk.len();
            if let Some(diff) = sim.snapshot_mismatch(W, n / 2) {
                return Err(format!("washington from a snapshot at {}:\n{diff}", n / 2));
            }
        }
        // Memory the peer can make us hold stays within its caps.
        if let Some(c) = sim.offices[W].core.as_ref() {
            for st in c.status() {
                if st.held > hotline::core::MAX_HELD
                    || st.held_bytes > hotline::core::MAX_HELD_BYTES
                {
                    return Err(format!(
                        "{} held ({} bytes) for {}",
                        st.held, st.held_bytes, st.peer
                    ));
                }
            }
        }
    }
    let hostile_for = sim.now;
    // Pyongyang turns honest; every line comes back with fresh hellos.
    sim.end_hostility();
    sim.restart(W);
    sim.cut();
    sim.heal(60_000);
    if std::env::var("HOTLINE_BYZANTINE_DUMP").is_ok() {
        dump(&sim);
    }
    check(&sim, hostile_for + 60_000)
}

/// Pyongyang's refusals and what it reported about washington's frames.
fn dump(sim: &Sim) {
    for p in &sim.offices[P].disk {
        if let Some(Event::NegativeReceiptSent(e)) = &p.entry.event {
            if let Some(Ok(n)) = e
                .envelope
                .as_ref()
                .map(|env| NegativeReceipt::decode(env.payload.as_slice()))
            {
                eprintln!(
                    "pyongyang refused {}'s {}: reason {} settles {} {}",
                    e.peer, n.sequence, n.reason, n.settles, n.detail
                );
            }
        }
    }
    for p in &sim.offices[W].disk {
        if let Some(Event::NegativeReceiptSent(e)) = &p.entry.event {
            if let Some(Ok(n)) = e
                .envelope
                .as_ref()
                .map(|env| NegativeReceipt::decode(env.payload.as_slice()))
            {
                if n.sequence <= 10 {
                    eprintln!(
                        "washington refused {}'s {}: reason {} settles {} ps {} {}",
                        e.peer, n.sequence, n.reason, n.settles, n.precedence_sequence, n.detail
                    );
                }
            }
        }
    }
    let h = sim.history(P);
    for id in &sim.offices[P].accepted {
        if let Some(i) = h.find_sent(id) {
            if i.to == NAMES[W] {
                eprintln!(
                    "pyongyang sent seq {} {} {:?}",
                    i.sequence, i.precedence, i.state
                );
            }
        }
    }
    for (id, prec, ps) in received(sim, W, P) {
        eprintln!("washington received {id} prec {prec} ps {ps}");
    }
}

/// Pyongyang-caused entries in washington's log, by kind and size.
fn check_log_bound(sim: &Sim, duration_ms: u64) -> Result<(), String> {
    let mut bytes = 0u64;
    for p in &sim.offices[W].disk {
        let from_peer = match &p.entry.event {
            Some(Event::NegativeReceiptSent(e))
            | Some(Event::NegativeReceiptReceived(e))
            | Some(Event::RelayReceiptReceived(e)) => e.peer == NAMES[P],
            Some(Event::CosignatureIssued(n)) => n.peer == NAMES[P],
            Some(Event::EquivocationDetected(e)) => e.peer == NAMES[P],
            Some(Event::AlertLevelChanged(a)) => a.peer == NAMES[P] && a.by == "peer",
            _ => false,
        };
        if from_peer {
            if p.bytes.len() > 65_536 {
                return Err(format!("a {}-byte entry", p.bytes.len()));
            }
            bytes += p.bytes.len() as u64;
        }
    }
    // Each restart refills the buckets: allow their bursts again.
    let restarts = sim.offices[W].crashes.len() as u64 + 2;
    let bound = log_bound_bytes(duration_ms) + restarts * log_bound_bytes(0);
    if bytes > bound {
        return Err(format!("{bytes} log bytes from pyongyang, bound {bound}"));
    }
    Ok(())
}

/// Messages of `from` in `to`'s log, in log order: (id, precedence, ps).
fn received(sim: &Sim, to: usize, from: usize) -> Vec<(String, i32, u64)> {
    sim.offices[to]
        .disk
        .iter()
        .filter_map(|p| match &p.entry.event {
            Some(Event::MessageReceived(e)) if e.peer == NAMES[from] => {
                let m = Message::decode(e.envelope.as_ref()?.payload.as_slice()).ok()?;
                Some((m.id, m.precedence, m.precedence_sequence))
            }
            _ => None,
        })
        .collect()
}

/// Every message `from` sent `to` was delivered once, in order.
fn check_honest_pair(sim: &Sim, from: usize, to: usize) -> Result<(), String> {
    let got = received(sim, to, from);
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    for (id, _, _) in &got {
        *count.entry(id).or_default() += 1;
    }
    if let Some((id, n)) = count.iter().find(|(_, n)| **n > 1) {
        return Err(format!("{id} logged {n} times by {}", NAMES[to]));
    }
    if !sim.is_up(from) {
        return Err("sender down".into());
    }
    let h = sim.history(from);
    for id in &sim.offices[from].accepted {
        let Some(item) = h.find_sent(id) else {
            continue;
        };
        if item.to != NAMES[to] {
            continue;
        }
        if item.state != OutState::Delivered || !count.contains_key(id.to_string().as_str()) {
            return Err(format!(
                "{}→{} {id} is {:?}",
                NAMES[from], NAMES[to], item.state
            ));
        }
    }
    let mut last: BTreeMap<i32, u64> = BTreeMap::new();
    for (id, prec, ps) in got {
        let l = last.entry(prec).or_default();
        if ps != 0 && ps <= *l {
            return Err(format!("{id} (ps {ps}) logged after ps {l}"));
        }
        *l = ps.max(*l);
    }
    Ok(())
}

fn check(sim: &Sim, duration_ms: u64) -> Result<(), String> {
    if let Some((i, t)) = sim.timer_stalls.first() {
        return Err(format!("office {i} stalled on its timer at {t} ms"));
    }
    check_log_bound(sim, duration_ms)?;
    check_honest_pair(sim, W, B)?;
    check_honest_pair(sim, B, W)?;
    // Washington's messages to pyongyang all settle once it is honest,
    // except behind one of its lies: a receipt or refusal that pyongyang's
    // generator signed for a message its core never saw leaves its core
    // waiting, for order, for a message washington will not send again.
    let w = sim.offices[W].core.as_ref().ok_or("washington down")?;
    if !sim.is_up(P) {
        return Err("pyongyang down".into());
    }
    let p_refused: BTreeSet<u64> = sim.offices[P]
        .disk
        .iter()
        .filter_map(|e| match &e.entry.event {
            Some(Event::NegativeReceiptSent(n)) if n.peer == NAMES[W] => {
                NegativeReceipt::decode(n.envelope.as_ref()?.payload.as_slice())
                    .ok()
                    .map(|n| n.sequence)
            }
            _ => None,
        })
        .collect();
    let w_history = sim.history(W);
    let p_inbox: Vec<String> = sim.history(P).inbox().into_iter().map(|m| m.id).collect();
    let lies: Vec<(String, u64)> = w_history
        .outbox()
        .into_iter()
        .filter(|i| i.to == NAMES[P])
        .filter(|i| matches!(i.state, OutState::Delivered | OutState::Refused))
        .filter(|i| !p_refused.contains(&i.sequence) && !p_inbox.contains(&i.id))
        .map(|i| (i.precedence, i.sequence))
        .collect();
    for id in &sim.offices[W].accepted {
        if let Some(item) = w_history.find_sent(id) {
            let behind_a_lie = lies
                .iter()
                .any(|(p, s)| *p == item.precedence && *s < item.sequence);
            if item.to == NAMES[P]
                && !matches!(item.state, OutState::Delivered | OutState::Refused)
                && !behind_a_lie
            {
                let got = p_inbox.iter().filter(|m| **m == id.to_string()).count();
                return Err(format!(
                    "washington→pyongyang {id} (seq {}) is {:?} after {} attempts; \
                     pyongyang holds it {got} times; washington: {:?}; pyongyang: {:?}",
                    item.sequence,
                    item.state,
                    item.attempts,
                    w.status().iter().find(|s| s.peer.as_str() == NAMES[P]),
                    sim.offices[P]
                        .core
                        .as_ref()
                        .map(|c| c.status().into_iter().find(|s| s.peer.as_str() == NAMES[W]))
                ));
            }
        }
    }
    // Numbers washington settled for pyongyang, with the payload that
    // settled each first (a later settling refusal of another payload with
    // the same number is a conflict, which settles it for its sender only).
    let mut settled: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    let mut logged: BTreeSet<u64> = BTreeSet::new();
    for p in &sim.offices[W].disk {
        match &p.entry.event {
            Some(Event::MessageReceived(e)) if e.peer == NAMES[P] => {
                if let Some(env) = &e.envelope {
                    if let Ok(m) = Message::decode(env.payload.as_slice()) {
                        if !logged.insert(m.sequence) {
                            return Err(format!("pyongyang's {} logged twice", m.sequence));
                        }
                        settled.entry(m.sequence).or_insert(sha256(&env.payload));
                    }
                }
            }
            Some(Event::NegativeReceiptSent(e)) if e.peer == NAMES[P] => {
                if let Some(env) = &e.envelope {
                    if let Ok(n) = NegativeReceipt::decode(env.payload.as_slice()) {
                        if n.settles && n.payload_hash.len() == 32 {
                            let mut h = [0u8; 32];
                            h.copy_from_slice(&n.payload_hash);
                            settled.entry(n.sequence).or_insert(h);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Pyongyang's genuine messages: settled, unless pyongyang itself took
    // the number for another payload.
    let p = sim.offices[P].core.as_ref().ok_or("pyongyang down")?;
    let p_history = sim.history(P);
    for id in &sim.offices[P].accepted {
        let Some(item) = p_history.find_sent(id) else {
            continue;
        };
        if matches!(item.state, OutState::Delivered | OutState::Refused) {
            continue;
        }
        let hash = p_history
            .sent_record(id)
            .map(|r| r.hash)
            .unwrap_or_default();
        let hijacked = settled
            .get(&item.sequence)
            .is_some_and(|h| h.as_slice() != hash.as_slice());
        if !hijacked {
            return Err(format!(
                "pyongyang's {id} (seq {}) is {:?} after {} attempts: washington settled {:?}; \
                 pyongyang: {:?}; washington: {:?}",
                item.sequence,
                item.state,
                item.attempts,
                settled.get(&item.sequence),
                p.status().iter().find(|s| s.peer.as_str() == NAMES[W]),
                w.status().iter().find(|s| s.peer.as_str() == NAMES[P]),
            ));
        }
    }
    Ok(())
}

#[test]
fn a_byzantine_office_neither_crashes_nor_stalls_nor_floods_an_honest_one() {
    // The scale run sets HOTLINE_BYZANTINE_SEEDS=10000 (docs/reliability.md).
    let n: u64 = std::env::var("HOTLINE_BYZANTINE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("HOTLINE_BYZANTINE_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let failures: Vec<String> = (first..first + n)
        .filter_map(|s| schedule(s).err().map(|e| format!("seed {s}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} schedules failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Replays one schedule with diagnostics:
/// `HOTLINE_BYZANTINE_FIRST=162 HOTLINE_BYZANTINE_DUMP=1 cargo test --test byzantine_sim
/// replay_one_seed -- --ignored --nocapture`
#[test]
#[ignore = "replays the seed in HOTLINE_BYZANTINE_FIRST"]
fn replay_one_seed() {
    let seed: u64 = std::env::var("HOTLINE_BYZANTINE_FIRST")
        .expect("set HOTLINE_BYZANTINE_FIRST")
        .parse()
        .expect("a number");
    schedule(seed).unwrap();
}
