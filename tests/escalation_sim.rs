//! The escalation flow under the virtual clock: each ladder step fires
//! exactly at its deadline and never after what it waits for has arrived;
//! pending deadlines survive a restart; line-check health changes at the
//! right count; alert levels travel to the peer.

use hotline::core::{CoreEvent, Draft, Health};
use hotline::sim::{Faults, Sim, WALL_BASE};
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{
    frame::Body, log_entry::Event, AlertLevel, AlertLevelNotice, Frame, LogEntry, Precedence,
    Response,
};
use hotline::wire::MessageId;

const S: u64 = 1_000;
const MIN: u64 = 60 * S;

fn flash() -> Draft {
    Draft {
        precedence: Precedence::Flash,
        subject: "Launch detected".into(),
        body: "Request immediate clarification.".into(),
        ..Default::default()
    }
}

fn entries(sim: &Sim, i: usize) -> Vec<LogEntry> {
    sim.offices[i]
        .disk
        .iter()
        .map(|p| p.entry.clone())
        .collect()
}

/// (action, waiting, ms since t0) of every escalation entry at office `i`.
fn steps(sim: &Sim, i: usize, t0: u64) -> Vec<(String, String, u64)> {
    entries(sim, i)
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::Escalation(s)) => {
                Some((s.action, s.waiting_for, e.time_unix_ms - WALL_BASE - t0))
            }
            _ => None,
        })
        .collect()
}

fn st(a: &str, w: &str, t: u64) -> (String, String, u64) {
    (a.into(), w.into(), t)
}

#[test]
fn flash_ladder_fires_each_step_exactly_at_its_deadline_when_the_line_is_dead() {
    let mut sim = Sim::new(21, Faults::clean(10));
    let t0 = sim.now;
    sim.submit(0, flash()).unwrap();
    sim.run_for(13 * MIN);
    assert_eq!(
        steps(&sim, 0, t0),
        vec![
            st("retransmit", "receipt", 5 * S),
            st("reroute", "receipt", 10 * S),
            st("alert", "receipt", 15 * S),
            st("raise-alert-level", "receipt", 30 * S),
            st("alert", "acknowledgement", 10 * MIN),
            st("raise-alert-level", "acknowledgement", 12 * MIN),
        ]
    );
    // The ladder raised the level twice: NORMAL -> ELEVATED -> CRISIS.
    let levels: Vec<(i32, String)> = entries(&sim, 0)
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::AlertLevelChanged(a)) => Some((a.level, a.by)),
            _ => None,
        })
        .collect();
    assert_eq!(
        levels,
        vec![
            (AlertLevel::Elevated as i32, "ladder".into()),
            (AlertLevel::Crisis as i32, "ladder".into())
        ]
    );
    let alerts = sim.offices[0]
        .events
        .iter()
        .filter(|e| matches!(e, CoreEvent::Alert { id: Some(_), .. }))
        .count();
    assert_eq!(alerts, 2);
}

#[test]
fn steps_never_fire_after_the_receipt_or_acknowledgement_they_wait_for() {
    let mut sim = Sim::new(22, Faults::clean(10));
    let t0 = sim.now;
    let id = sim.submit(0, flash()).unwrap();
    // The line comes up at 7 s: the receipt arrives before the 10 s step.
    sim.run_for(7 * S);
    sim.connect();
    sim.run_for(2 * MIN);
    // Pyongyang's duty officer acknowledges at about 2 minutes.
    let ack_id = MessageId::new(WALL_BASE + sim.now, [9; 10]);
    sim.acknowledge(1, ack_id, &id, "Seen; call follows.", Response::WillComply)
        .unwrap()
        .unwrap();
    sim.run_for(20 * MIN);
    assert_eq!(steps(&sim, 0, t0), vec![st("retransmit", "receipt", 5 * S)]);
    let acked = sim.offices[0]
        .events
        .iter()
        .any(|e| matches!(e, CoreEvent::Acknowledged { id: got, .. } if *got == id));
    assert!(acked);
    let core = sim.offices[0].core.as_ref().unwrap();
    assert_eq!(sim.history(0).acknowledged(&id), Some(Response::WillComply));
    assert!(core
        .overdue(hotline::core::Now {
            mono_ms: sim.now,
            wall_ms: WALL_BASE + sim.now
        })
        .is_empty());
    let (received, _) = sim.history(1).find_received(&id).unwrap();
    assert!(received.acknowledged);
}

#[test]
fn pending_deadlines_survive_a_restart() {
    let mut sim = Sim::new(23, Faults::clean(10));
    let t0 = sim.now;
    sim.submit(0, flash()).unwrap();
    sim.run_for(6 * S);
    sim.crash(0);
    sim.run_for(14 * S); // t = 20 s: the 10 s and 15 s steps came due while down
    sim.restart(0);
    sim.run_for(20 * S);
    assert_eq!(
        steps(&sim, 0, t0),
        vec![
            st("retransmit", "receipt", 5 * S),
            st("reroute", "receipt", 20 * S),
            st("alert", "receipt", 20 * S),
            st("raise-alert-level", "receipt", 30 * S),
        ]
    );
}

fn health(sim: &Sim, i: usize) -> Vec<(String, u32, u64)> {
    entries(sim, i)
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::LinkHealth(h)) => Some((h.state, h.missed, e.time_unix_ms - WALL_BASE)),
            _ => None,
        })
        .collect()
}

#[test]
fn line_check_health_goes_degraded_then_silent_at_the_right_count_and_back_up() {
    let mut sim = Sim::new(24, Faults::clean(10));
    sim.connect();
    sim.run_for(3 * MIN + 30 * S);
    assert!(
        health(&sim, 0).is_empty(),
        "answered checks keep the line up"
    );
    let status = sim.offices[0].core.as_ref().unwrap().status();
    assert_eq!(status[0].health, Health::Up);
    assert!(status[0].line_check_rtt_ms.is_some_and(|r| r >= 20));
    sim.cut(); // at 3:30; checks are due at whole minutes after the start
    sim.run_for(4 * MIN);
    let h = health(&sim, 0);
    assert_eq!(h.len(), 2, "{h:?}");
    // One miss is no news (hysteresis); two make it DEGRADED.
    assert_eq!((h[0].0.as_str(), h[0].1), ("degraded", 2));
    assert_eq!((h[1].0.as_str(), h[1].1), ("silent", 3));
    assert_eq!(
        h[1].2 - h[0].2,
        MIN,
        "one more interval from degraded to silent"
    );
    sim.connect();
    sim.run_for(5 * S);
    let h = health(&sim, 0);
    assert_eq!(h.last().unwrap().0, "up");
}

#[test]
fn unacknowledged_message_alerts_while_line_checks_stay_up() {
    let mut sim = Sim::new(25, Faults::clean(10));
    sim.connect();
    let t0 = sim.now;
    let id = sim.submit(0, flash()).unwrap();
    let at = |sim: &Sim| hotline::core::Now {
        mono_ms: sim.now,
        wall_ms: WALL_BASE + sim.now,
    };
    sim.run_for(7 * MIN);
    assert!(sim.offices[0]
        .core
        .as_ref()
        .unwrap()
        .approaching(at(&sim))
        .is_empty());
    sim.run_for(MIN + 30 * S); // 8.5 of 10 minutes: in the last fifth
    let soon = sim.offices[0].core.as_ref().unwrap().approaching(at(&sim));
    assert_eq!(soon.len(), 1);
    assert_eq!((soon[0].id, soon[0].late_ms), (id, 90 * S));
    sim.run_for(2 * MIN + 30 * S);
    assert!(health(&sim, 0).is_empty(), "the machines answer");
    assert_eq!(
        steps(&sim, 0, t0),
        vec![st("alert", "acknowledgement", 10 * MIN)]
    );
    let now = hotline::core::Now {
        mono_ms: sim.now,
        wall_ms: WALL_BASE + sim.now,
    };
    let overdue = sim.offices[0].core.as_ref().unwrap().overdue(now);
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].id, id);
    assert_eq!(
        overdue[0].waiting,
        hotline::core::policy::Waiting::Acknowledgement
    );
    assert!(overdue[0].late_ms >= 59 * S);
}

#[test]
fn an_operators_alert_level_reaches_the_peer_and_speeds_up_line_checks() {
    let mut sim = Sim::new(26, Faults::clean(10));
    sim.connect();
    sim.run_for(5 * S);
    sim.with_core(0, |core, now| {
        let peer = hotline::identity::OfficeName::new("pyongyang").unwrap();
        core.set_alert_level(now, &peer, AlertLevel::Crisis, "border incident")
            .unwrap();
    });
    let before = sim.offices[0].line_check_frames_sent;
    sim.run_for(10 * S);
    for (i, by) in [(0, "operator"), (1, "peer")] {
        let got: Vec<(i32, String)> = entries(&sim, i)
            .into_iter()
            .filter_map(|e| match e.event {
                Some(Event::AlertLevelChanged(a)) => Some((a.level, a.by)),
                _ => None,
            })
            .collect();
        assert_eq!(got, vec![(AlertLevel::Crisis as i32, by.to_string())]);
        assert_eq!(
            sim.offices[i].core.as_ref().unwrap().status()[0].alert_level,
            AlertLevel::Crisis
        );
    }
    // CRISIS: each side checks every second, so washington sends about ten
    // checks and ten replies in ten seconds (at NORMAL it would be none).
    let sent = sim.offices[0].line_check_frames_sent - before;
    assert!(
        (18..=22).contains(&sent),
        "{sent} line-check frames in 10 s"
    );
}

fn level_of(sim: &Sim, i: usize) -> (AlertLevel, AlertLevel, AlertLevel) {
    let st = &sim.offices[i].core.as_ref().unwrap().status()[0];
    (st.alert_level, st.own_alert_level, st.peer_alert_level)
}

fn set_level(sim: &mut Sim, i: usize, level: AlertLevel) {
    let peer = sim.offices[1 - i].name.clone();
    sim.with_core(i, |core, now| {
        core.set_alert_level(now, &peer, level, "operator").unwrap()
    });
}

/// Each office owns its level. The peer's level can raise how closely we
/// watch the line, never lower it below what our operator set, and the two
/// never latch each other at the higher one.
#[test]
fn the_peer_can_raise_our_watch_on_the_line_but_never_lower_it() {
    use AlertLevel::{Crisis, Elevated, Normal};
    let mut sim = Sim::new(27, Faults::clean(10));
    sim.connect();
    sim.run_for(5 * S);
    set_level(&mut sim, 0, Crisis);
    sim.run_for(S);
    // Pyongyang watches at CRISIS too, because washington's level raised
    // its effective one; its own stays NORMAL.
    assert_eq!(level_of(&sim, 0), (Crisis, Crisis, Normal));
    assert_eq!(level_of(&sim, 1), (Crisis, Normal, Crisis));
    // Pyongyang's operator goes to ELEVATED and back to NORMAL, and a
    // signed notice from pyongyang says NORMAL: washington stays at CRISIS
    // and keeps checking every second.
    set_level(&mut sim, 1, Elevated);
    sim.run_for(S);
    set_level(&mut sim, 1, Normal);
    let notice = AlertLevelNotice {
        from: "pyongyang".into(),
        to: "washington".into(),
        level: Normal as i32,
        time_unix_ms: 1,
        reason: "stand down".into(),
    };
    let env = envelope::seal_proto(Domain::AlertLevel, &notice, sim.signing_key(1));
    sim.inject(
        1,
        Frame {
            body: Some(Body::AlertLevel(env)),
        },
    );
    let before = sim.offices[0].line_check_frames_sent;
    sim.run_for(10 * S);
    assert_eq!(level_of(&sim, 0), (Crisis, Crisis, Normal));
    let sent = sim.offices[0].line_check_frames_sent - before;
    assert!(sent >= 18, "{sent} line-check frames in 10 s at CRISIS");
    // Washington stands down: both sides are at NORMAL, nothing latched.
    set_level(&mut sim, 0, Normal);
    sim.run_for(S);
    assert_eq!(level_of(&sim, 0), (Normal, Normal, Normal));
    assert_eq!(level_of(&sim, 1), (Normal, Normal, Normal));
    // Now pyongyang raises: washington's watch follows, its own level does
    // not change, and its operator cannot talk the peer's level down.
    set_level(&mut sim, 1, Crisis);
    sim.run_for(S);
    assert_eq!(level_of(&sim, 0), (Crisis, Normal, Crisis));
    // A reconnection restates levels without logging them again.
    let logged = |sim: &Sim, i: usize| {
        entries(sim, i)
            .into_iter()
            .filter(|e| matches!(e.event, Some(Event::AlertLevelChanged(_))))
            .count()
    };
    let (w, p) = (logged(&sim, 0), logged(&sim, 1));
    sim.cut();
    sim.run_for(S);
    sim.connect();
    sim.run_for(5 * S);
    assert_eq!((logged(&sim, 0), logged(&sim, 1)), (w, p));
    assert_eq!(level_of(&sim, 0), (Crisis, Normal, Crisis));
    // Both levels come back from the log after a restart.
    sim.crash(0);
    sim.restart(0);
    assert_eq!(level_of(&sim, 0), (Crisis, Normal, Crisis));
}

/// With `peer_raises_level = false`, the peer's level is shown and logged
/// but changes nothing here.
#[test]
fn a_policy_can_keep_the_peers_level_from_raising_ours() {
    use AlertLevel::{Crisis, Normal};
    let mut sim = Sim::new(28, Faults::clean(10));
    sim.with_core(0, |core, _| {
        let mut p = core.policy().clone();
        p.peer_raises_level = false;
        core.set_policy(p);
    });
    sim.connect();
    sim.run_for(5 * S);
    set_level(&mut sim, 1, Crisis);
    sim.run_for(S);
    assert_eq!(level_of(&sim, 0), (Normal, Normal, Crisis));
}

/// A node restarted while its line is cut does not claim the line is up:
/// it shows CHECKING until a line check is answered, and counts misses
/// from there as usual.
#[test]
fn a_restart_during_a_cut_starts_checking_not_up() {
    let mut sim = Sim::new(29, Faults::clean(10));
    sim.connect();
    sim.run_for(5 * S);
    let health = |sim: &Sim| sim.offices[0].core.as_ref().unwrap().status()[0].health;
    assert_eq!(health(&sim), Health::Up);
    sim.cut();
    sim.crash(0);
    sim.restart(0);
    assert_eq!(health(&sim), Health::Checking);
    // At NORMAL the first check falls due after 60 s: one miss is not yet
    // news, the second is.
    sim.run_for(61 * S);
    assert_eq!(health(&sim), Health::Checking);
    sim.run_for(60 * S);
    assert_eq!(health(&sim), Health::Degraded);
    sim.connect();
    sim.run_for(5 * S);
    assert_eq!(health(&sim), Health::Up);
}

/// Replies to our line checks are lost, but the peer's other frames keep
/// arriving (its own checks, receipts): that is proof of life, and the line
/// stays UP instead of crying wolf. Without any frame it goes SILENT.
#[test]
fn any_frame_from_the_peer_answers_a_line_check() {
    let mut sim = Sim::new(30, Faults::clean(10));
    sim.connect();
    sim.run_for(5 * S);
    set_level(&mut sim, 0, AlertLevel::Crisis);
    // Every line-check reply from pyongyang to washington is lost.
    sim.set_tamper(Box::new(|from, to, f: &mut Frame| {
        if (from, to) == (1, 0) {
            if let Some(Body::LineCheck(env)) = &f.body {
                let lc: hotline::wire::proto::LineCheck =
                    prost::Message::decode(env.payload.as_slice()).unwrap();
                if lc.reply {
                    f.body = None;
                }
            }
        }
    }));
    let health = |sim: &Sim| {
        let st = &sim.offices[0].core.as_ref().unwrap().status()[0];
        (st.health, st.missed_line_checks)
    };
    for _ in 0..30 {
        sim.run_for(S);
        assert_eq!(health(&sim), (Health::Up, 0));
    }
    // Pyongyang stops altogether: silence is still caught within seconds.
    sim.crash(1);
    sim.run_for(5 * S);
    assert_eq!(health(&sim).0, Health::Silent);
}

/// At CRISIS (a check every second, SILENT after three) a cut is seen three
/// intervals after the last frame heard, wherever in the check rhythm it
/// falls: not up to a further interval later, when the next check would
/// have fallen due, and never before two intervals of real silence.
#[test]
fn a_cut_at_crisis_is_seen_three_intervals_after_the_last_frame_wherever_it_falls() {
    let mut worst = 0;
    for offset in (0..1_000).step_by(100) {
        let mut sim = Sim::new(31, Faults::clean(10));
        sim.connect();
        sim.run_for(5 * S);
        set_level(&mut sim, 0, AlertLevel::Crisis);
        sim.run_for(5 * S + offset);
        let health = |sim: &Sim| sim.offices[0].core.as_ref().unwrap().status()[0].health;
        assert_eq!(health(&sim), Health::Up);
        sim.cut();
        let mut waited = 0;
        while health(&sim) != Health::Silent {
            assert!(
                waited < 10 * S,
                "no SILENT within 10 s of a cut at +{offset} ms"
            );
            sim.run_for(10);
            waited += 10;
        }
        assert!(
            (2 * S..=3 * S + 30).contains(&waited),
            "cut at +{offset} ms seen after {waited} ms"
        );
        worst = worst.max(waited);
    }
    eprintln!("worst cut-to-SILENT at CRISIS over the check rhythm: {worst} ms");
}

#[test]
fn a_message_with_the_longest_subject_can_still_be_acknowledged() {
    // "ACK: " before a subject at the limit would exceed it; the
    // acknowledgement's subject is cut (on a character boundary) instead
    // of the acknowledgement being refused.
    let mut sim = Sim::new(31, Faults::clean(10));
    sim.connect();
    let limit = hotline::core::MAX_SUBJECT_LEN;
    let subject = "я".repeat(limit / 2);
    assert_eq!(subject.len(), limit);
    let id = sim.submit(0, Draft { subject, ..flash() }).unwrap();
    sim.run_for(5 * S);
    let ack_id = MessageId::new(WALL_BASE + sim.now, [3; 10]);
    sim.acknowledge(1, ack_id, &id, "Seen.", Response::WillComply)
        .unwrap()
        .unwrap();
    sim.run_for(5 * S);
    let (ack, _) = sim.history(0).find_received(&ack_id).unwrap();
    assert!(ack.subject.starts_with("ACK: яя"), "{}", ack.subject);
    assert!(ack.subject.len() <= limit && ack.subject.len() > limit - 2);
    assert_eq!(sim.history(0).acknowledged(&id), Some(Response::WillComply));
}

#[test]
fn an_acknowledgement_waits_for_its_receipt_only() {
    // An acknowledgement is not itself acknowledged: once receipted it
    // leaves the acknowledging office's ladder, and no "no acknowledgement"
    // step ever fires for it.
    let mut sim = Sim::new(23, Faults::clean(10));
    sim.connect();
    let id = sim.submit(0, flash()).unwrap();
    sim.run_for(5 * S);
    let t0 = sim.now;
    let ack_id = MessageId::new(WALL_BASE + sim.now, [5; 10]);
    sim.acknowledge(1, ack_id, &id, "Seen.", Response::Information)
        .unwrap()
        .unwrap();
    sim.run_for(5 * S);
    let awaiting =
        |sim: &Sim, i: usize| sim.offices[i].core.as_ref().unwrap().status()[0].awaiting_ack;
    assert_eq!(awaiting(&sim, 1), 0, "the acknowledgement was receipted");
    assert_eq!(awaiting(&sim, 0), 0, "the message was acknowledged");
    // Past FLASH's acknowledgement deadline (10 min) and its last step.
    sim.run_for(30 * MIN);
    assert_eq!(steps(&sim, 1, t0), vec![]);
    // And a core replayed from the log agrees.
    sim.crash(1);
    sim.restart(1);
    sim.connect();
    sim.run_for(S);
    assert_eq!(awaiting(&sim, 1), 0);
    assert!(sim.fold_mismatch(1).is_none());
}
