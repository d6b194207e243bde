//! The hotline discipline in the core: escalation ladders per message,
//! acknowledgements, line checks and channel alert levels.
//!
//! Deadlines count from the moment a message was accepted (its log entry's
//! time), so they survive a restart: replay rebuilds each unacknowledged
//! message's track and the steps already fired, and [`Core::start`]
//! re-anchors them on the new run's clock.
//!
//! Arithmetic here is on our own clock, policy and counters: no value from
//! the peer reaches it (the peer's notices are checked and only ever select
//! a level), so plain operators stay where they read best.
#![allow(clippy::arithmetic_side_effects)]

use super::budget::{Spend, Verdict};
use super::channel::{Channel, Health, Track};
use super::office::Core;
use super::output::{CoreEvent, Transmit};
use super::policy::{Action, Policy, Waiting};
use super::{Now, SubmitError, MAX_DETAIL_LEN};
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{
    frame::Body, log_entry::Event, AlertLevel, AlertLevelChanged, AlertLevelNotice, EscalationStep,
    LineCheck, LinkHealth, Precedence, SignedEnvelope,
};
use crate::wire::MessageId;

/// A message past one of its deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// Recipient.
    pub peer: OfficeName,
    /// Message.
    pub id: MessageId,
    /// Sequence.
    pub sequence: u64,
    /// Precedence.
    pub precedence: Precedence,
    /// What has not arrived.
    pub waiting: Waiting,
    /// How late, ms.
    pub late_ms: u64,
}

impl Core {
    // ------------------------------------------------------------------
    // Tracks and the ladder.

    pub(super) fn track_sent(
        &mut self,
        peer: &OfficeName,
        seq: u64,
        id: MessageId,
        (precedence, awaits_ack): (Precedence, bool),
        base_wall: u64,
        base: i64,
    ) {
        let policy = self.policy.clone();
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.track(
            seq,
            Track {
                id,
                precedence,
                awaits_ack,
                base_wall,
                base,
                next_n: 0,
                receipted: false,
                timer: None,
            },
        );
        schedule(&policy, ch, seq);
    }

    pub(super) fn track_receipted(&mut self, peer: &OfficeName, seq: u64) {
        let policy = self.policy.clone();
        if let Some(ch) = self.channels.get_mut(peer) {
            if let Some(t) = ch.tracks.get_mut(&seq) {
                if !t.awaits_ack {
                    ch.untrack(seq); // its receipt was all it waited for
                    return;
                }
                t.receipted = true;
                schedule(&policy, ch, seq);
            }
        }
    }

    /// Our message `seq` was refused for good: it will be neither receipted
    /// nor acknowledged, so its ladder stops (the refusal itself reaches the
    /// operator as an event).
    pub(super) fn track_refused(&mut self, peer: &OfficeName, seq: u64) {
        if let Some(ch) = self.channels.get_mut(peer) {
            ch.untrack(seq);
        }
    }

    /// A reply from `peer` to our message `reply_to` acknowledges it: its
    /// track ends. Returns the id when this is the first reply to it.
    pub(super) fn track_acknowledged(
        &mut self,
        peer: &OfficeName,
        reply_to: &str,
    ) -> Option<MessageId> {
        let id = MessageId::parse(reply_to)?;
        let ch = self.channels.get_mut(peer)?;
        let seq = *ch.tracked_ids.get(&id)?;
        ch.untrack(seq).map(|t| t.id)
    }

    /// Fires every ladder step due at `now`.
    pub(super) fn fire_due_steps(&mut self, now: Now) {
        let peers: Vec<OfficeName> = self.channels.keys().cloned().collect();
        for peer in peers {
            while let Some(&(due, seq)) =
                self.channels.get(&peer).and_then(|c| c.esc_timers.first())
            {
                if due > now.mono_ms as i64 {
                    break;
                }
                self.fire_step(now, &peer, seq);
            }
        }
    }

    fn fire_step(&mut self, now: Now, peer: &OfficeName, seq: u64) {
        let policy = self.policy.clone();
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        let Some(track) = ch.tracks.get_mut(&seq) else {
            return;
        };
        if let Some(d) = track.timer.take() {
            ch.esc_timers.remove(&(d, seq));
        }
        let n = track.next_n;
        let Some((step, _)) = Policy::nth_step(policy.ladder(track.precedence), n) else {
            return;
        };
        track.next_n = n + 1;
        let id = track.id;
        let mut detail = String::new();
        match step.action {
            Action::Retransmit => {
                let on_link = ch.pending.get(&seq).is_some_and(|p| p.on_link);
                if super::send::transmit_message(&mut self.out, ch, seq) {
                    detail = "resent now".into();
                } else if on_link {
                    // QUIC still owns the copy this connection carries: a
                    // second one would only compete with it (§8).
                    detail = "the connection carries it; the transport resends it".into();
                } else {
                    detail = "line down: queued for the next connection".into();
                }
            }
            Action::Reroute => {}
            Action::Alert => {
                detail = format!(
                    "no {} for {} {}",
                    step.waiting.as_str(),
                    precedence_word(track.precedence),
                    id
                );
                self.out.events.push(CoreEvent::Alert {
                    peer: peer.clone(),
                    id: Some(id),
                    detail: detail.clone(),
                });
            }
            Action::RaiseAlertLevel => {}
        }
        let relays = ch.relays.clone();
        schedule(&policy, ch, seq);
        if step.action == Action::Reroute {
            detail = if relays.is_empty() {
                "no relay route to this peer is configured".into()
            } else {
                match self.send_via_relay(peer, seq, None) {
                    Some(r) => format!("sent sealed via {r}"),
                    None => {
                        if let Some(ch) = self.channels.get_mut(peer) {
                            ch.reroute_waiting.insert(seq);
                        }
                        format!(
                            "no relay reachable ({}): sent through the first that comes up",
                            relays
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                }
            };
        }
        self.persist(
            now,
            Event::Escalation(EscalationStep {
                peer: peer.to_string(),
                message_id: id.to_string(),
                sequence: seq,
                step: n,
                action: step.action.as_str().into(),
                waiting_for: step.waiting.as_str().into(),
                detail,
            }),
        );
        self.out.events.push(CoreEvent::Escalated {
            peer: peer.clone(),
            id,
            action: step.action,
            waiting: step.waiting,
        });
        if step.action == Action::RaiseAlertLevel {
            // The ladder raises our own level, from our own level.
            let current = self
                .channels
                .get(peer)
                .map_or(AlertLevel::Normal, |c| c.own_level);
            let next = match current {
                AlertLevel::Normal | AlertLevel::Unspecified => AlertLevel::Elevated,
                _ => AlertLevel::Crisis,
            };
            self.change_alert_level(
                now,
                peer,
                next,
                "ladder",
                &format!("no {} for {id}", step.waiting.as_str()),
            );
        }
    }

    /// Messages past their receipt or acknowledgement deadline at `now`.
    pub fn overdue(&self, now: Now) -> Vec<Overdue> {
        let mut out = Vec::new();
        for ch in self.channels.values() {
            for (&seq, t) in &ch.tracks {
                let l = self.policy.ladder(t.precedence);
                let age = now.mono_ms as i64 - t.base;
                let (waiting, deadline) = if t.receipted {
                    (Waiting::Acknowledgement, l.ack_deadline_ms)
                } else {
                    (Waiting::Receipt, l.receipt_deadline_ms)
                };
                if age > deadline as i64 {
                    out.push(Overdue {
                        peer: ch.peer.clone(),
                        id: t.id,
                        sequence: seq,
                        precedence: t.precedence,
                        waiting,
                        late_ms: (age - deadline as i64) as u64,
                    });
                }
            }
        }
        out.sort_by_key(|o| std::cmp::Reverse(o.late_ms));
        out
    }

    /// Messages whose next deadline falls within the last fifth of its span
    /// (for "deadline approaching" notices; nothing is logged).
    pub fn approaching(&self, now: Now) -> Vec<Overdue> {
        let mut out = Vec::new();
        for ch in self.channels.values() {
            for (&seq, t) in &ch.tracks {
                let l = self.policy.ladder(t.precedence);
                let age = now.mono_ms as i64 - t.base;
                let (waiting, deadline) = if t.receipted {
                    (Waiting::Acknowledgement, l.ack_deadline_ms as i64)
                } else {
                    (Waiting::Receipt, l.receipt_deadline_ms as i64)
                };
                if age <= deadline && age * 5 >= deadline * 4 {
                    out.push(Overdue {
                        peer: ch.peer.clone(),
                        id: t.id,
                        sequence: seq,
                        precedence: t.precedence,
                        waiting,
                        late_ms: (deadline - age) as u64, // here: time left
                    });
                }
            }
        }
        out
    }

    // ------------------------------------------------------------------
    // Acknowledgements.

    /// Acknowledges `msg`, a message `peer` sent us, with a signed
    /// acknowledgement message (kind ACKNOWLEDGEMENT, reply-to `msg`).
    /// The caller finds `msg` in the history index (the core keeps no
    /// received messages). Returns the acknowledgement's sequence.
    pub fn acknowledge(
        &mut self,
        now: Now,
        ack_id: MessageId,
        peer: &OfficeName,
        msg: &crate::wire::proto::Message,
        note: &str,
        response: crate::wire::proto::Response,
    ) -> Result<u64, SubmitError> {
        let draft = super::Draft {
            to: peer.to_string(),
            precedence: msg.precedence(),
            kind: crate::wire::proto::Kind::Acknowledgement,
            thread: msg.thread.clone(),
            reply_to: msg.id.clone(),
            subject: ack_subject(&msg.subject),
            body: note.to_string(),
            language: msg.language.clone(),
            exercise: msg.exercise,
            response,
        };
        self.submit(now, ack_id, draft)
    }

    // ------------------------------------------------------------------
    // Line checks.

    /// Sends line checks that are due and counts the unanswered ones.
    pub(super) fn line_checks_due(&mut self, now: Now) {
        let peers: Vec<OfficeName> = self.channels.keys().cloned().collect();
        for peer in peers {
            let Some(ch) = self.channels.get_mut(&peer) else {
                continue;
            };
            if ch.next_check_at.is_none_or(|t| t > now.mono_ms) {
                continue;
            }
            // Answered by its reply, or by any frame from the peer since the
            // check left (proof of life: bulk traffic or loss may delay the
            // reply itself past the next check).
            let proof_of_life = ch
                .lc_outstanding
                .is_some_and(|(_, sent)| ch.last_heard_mono.is_some_and(|h| h >= sent));
            let answered =
                (ch.lc_outstanding.is_none() || proof_of_life) && ch.connected && ch.resumed;
            if answered && proof_of_life {
                ch.lc_missed = 0;
                ch.alive_since_start = true;
            }
            if !answered {
                ch.lc_missed += 1;
            }
            let interval = self.policy.line_check_interval(ch.level);
            ch.next_check_at = Some(now.mono_ms + interval);
            ch.lc_outstanding = None;
            if ch.connected && ch.resumed {
                if ch.resync_wanted && ch.budgets.refilled(Spend::Refusal, now.mono_ms) {
                    // We dropped the peer's input unanswered; with room to
                    // answer again, ask it to resend what we lack (§7).
                    ch.resync_wanted = false;
                    super::resume::send_hello(&mut self.out, &self.me, ch, false);
                }
                self.send_line_check(now, &peer);
            }
            self.update_health(now, &peer);
        }
    }

    pub(super) fn send_line_check(&mut self, now: Now, peer: &OfficeName) {
        let (size, root) = (self.tree.size(), self.tree.root().0.to_vec());
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        ch.lc_seq += 1;
        ch.lc_outstanding = Some((ch.lc_seq, now.mono_ms));
        let lc = LineCheck {
            from: self.me.to_string(),
            to: peer.to_string(),
            sequence: ch.lc_seq,
            reply: false,
            time_unix_ms: now.wall_ms,
            level: ch.own_level as i32,
            log_size: size,
            log_root: root,
        };
        let env = envelope::seal_proto(Domain::LineCheck, &lc, &self.key);
        self.out
            .transmit
            .push(Transmit::line_check(peer, Body::LineCheck(env)));
    }

    pub(super) fn on_line_check(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(lc) =
            self.open_from::<LineCheck>(now, peer, &env, Domain::LineCheck, "line check")
        else {
            return;
        };
        if lc.from != peer.as_str() || lc.to != self.me.as_str() {
            return;
        }
        let Some(level) = self.channels.get(peer).map(|c| c.level) else {
            return;
        };
        if !lc.reply {
            // Each check arrives twice, by stream and by datagram (§8b):
            // the first copy is answered, and a copy of an older check than
            // one already answered is too late to matter.
            match self.channels.get_mut(peer) {
                Some(ch) if lc.sequence > ch.lc_answered => ch.lc_answered = lc.sequence,
                _ => return,
            }
            // Each answer costs a signature: within the peer's budget.
            if self.spend(now, peer, Spend::Answer) != Verdict::Allowed {
                return;
            }
            let reply = LineCheck {
                from: self.me.to_string(),
                to: peer.to_string(),
                sequence: lc.sequence,
                reply: true,
                time_unix_ms: now.wall_ms,
                level: level as i32,
                log_size: self.tree.size(),
                log_root: self.tree.root().0.to_vec(),
            };
            let env = envelope::seal_proto(Domain::LineCheck, &reply, &self.key);
            self.out
                .transmit
                .push(Transmit::line_check(peer, Body::LineCheck(env)));
            return;
        }
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        if let Some((seq, sent)) = ch.lc_outstanding {
            if seq == lc.sequence {
                ch.last_rtt_ms = Some(now.mono_ms.saturating_sub(sent));
                ch.lc_outstanding = None;
                ch.lc_missed = 0;
                ch.alive_since_start = true;
                self.update_health(now, peer);
            }
        }
    }

    /// Judges health for channels whose silence has just reached a
    /// threshold between two checks (see [`Core::silence_deadline`]).
    pub(super) fn silence_due(&mut self, now: Now) {
        let due: Vec<OfficeName> = self
            .channels
            .iter()
            .filter(|(_, ch)| silence_deadline(&self.policy, ch).is_some_and(|t| t <= now.mono_ms))
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            self.update_health(now, &peer);
        }
    }

    fn update_health(&mut self, now: Now, peer: &OfficeName) {
        let k = self.policy.line_checks.silent_after;
        let d = self.policy.line_checks.degraded_after.min(k);
        let interval = self
            .channels
            .get(peer)
            .map(|c| self.policy.line_check_interval(c.level));
        let (Some(ch), Some(interval)) = (self.channels.get_mut(peer), interval) else {
            return;
        };
        // Misses as counted at each check, or as many check intervals as
        // have passed with nothing at all heard from the peer: silence is
        // seen `k` intervals after the last frame, not up to one interval
        // later when the next check falls due. Below the DEGRADED
        // threshold the checks' own count stands (a frame a little over
        // one interval ago is the ordinary rhythm of replies).
        let quiet = quiet_intervals(ch, interval, now.mono_ms);
        let quiet = if quiet >= d { quiet } else { 0 };
        ch.missed_judged = ch.lc_missed.max(quiet);
        let health = match ch.missed_judged {
            // Up only on evidence: an answer since start.
            0 if !ch.alive_since_start => Health::Checking,
            0 => Health::Up,
            m if m >= k => Health::Silent,
            m if m >= d => Health::Degraded,
            // Fewer misses than the threshold: no news yet (hysteresis).
            _ => ch.health,
        };
        if health == ch.health {
            return;
        }
        let first_answer = ch.health == Health::Checking && health == Health::Up;
        ch.health = health;
        if first_answer {
            // The expected news after a start: shown, not logged or alerted.
            return;
        }
        let missed = ch.missed_judged;
        let detail = match (health, ch.connected) {
            (Health::Up, _) => "line checks answered".to_string(),
            (_, false) => format!("{missed} line checks missed: no transport to {peer}"),
            (_, true) => format!("{missed} line checks unanswered although the transport is up"),
        };
        self.persist(
            now,
            Event::LinkHealth(LinkHealth {
                peer: peer.to_string(),
                state: health.as_str().into(),
                missed,
                detail: detail.clone(),
            }),
        );
        self.out.events.push(CoreEvent::HealthChanged {
            peer: peer.clone(),
            health,
            missed,
        });
        if health != Health::Up {
            self.out.events.push(CoreEvent::Alert {
                peer: peer.clone(),
                id: None,
                detail,
            });
        }
    }

    // ------------------------------------------------------------------
    // Alert levels.

    /// An operator sets the channel's alert level; the peer is told.
    pub fn set_alert_level(
        &mut self,
        now: Now,
        peer: &OfficeName,
        level: AlertLevel,
        reason: &str,
    ) -> Result<(), SubmitError> {
        if !self.channels.contains_key(peer) {
            return Err(SubmitError::UnknownPeer(peer.to_string()));
        }
        self.change_alert_level(now, peer, level, "operator", reason);
        Ok(())
    }

    /// Sets our own level (`by` operator or ladder) or records the peer's
    /// (`by` "peer"), logs the change, and recomputes the effective level:
    /// a peer's notice can raise it (if the policy allows), never lower it
    /// below ours. Only a change of our own level is told to the peer.
    pub(super) fn change_alert_level(
        &mut self,
        now: Now,
        peer: &OfficeName,
        level: AlertLevel,
        by: &str,
        reason: &str,
    ) {
        let Some(ch) = self.channels.get_mut(peer) else {
            return;
        };
        let from_peer = by == "peer";
        let slot = if from_peer {
            &mut ch.peer_level
        } else {
            &mut ch.own_level
        };
        if *slot == level {
            return;
        }
        let before = ch.level;
        let notify = !from_peer && ch.connected && ch.resumed;
        // The levels change by applying the entry (apply.rs).
        self.persist(
            now,
            Event::AlertLevelChanged(AlertLevelChanged {
                peer: peer.to_string(),
                level: level as i32,
                by: by.into(),
                reason: reason.into(),
            }),
        );
        let interval = self
            .channels
            .get(peer)
            .map(|ch| self.policy.line_check_interval(ch.level));
        if let (Some(ch), Some(interval)) = (self.channels.get_mut(peer), interval) {
            if ch.level != before {
                ch.level_since_mono = now.mono_ms;
                // A shorter interval takes effect now, not after the old one runs out.
                ch.next_check_at = Some(
                    ch.next_check_at
                        .map_or(now.mono_ms.saturating_add(interval), |t| {
                            t.min(now.mono_ms.saturating_add(interval))
                        }),
                );
            }
        }
        self.out.events.push(CoreEvent::AlertLevelChanged {
            peer: peer.clone(),
            level,
            by: by.into(),
        });
        if notify {
            self.send_alert_level(now, peer, reason);
        }
    }

    /// Tells the peer our own level (never the effective one: echoing the
    /// peer's level back as ours would latch both sides at the higher one).
    pub(super) fn send_alert_level(&mut self, now: Now, peer: &OfficeName, reason: &str) {
        let Some(level) = self.channels.get(peer).map(|c| c.own_level) else {
            return;
        };
        let n = AlertLevelNotice {
            from: self.me.to_string(),
            to: peer.to_string(),
            level: level as i32,
            time_unix_ms: now.wall_ms,
            reason: reason.into(),
        };
        let env = envelope::seal_proto(Domain::AlertLevel, &n, &self.key);
        self.out
            .transmit
            .push(Transmit::control(peer, Body::AlertLevel(env)));
    }

    pub(super) fn on_alert_level(&mut self, now: Now, peer: &OfficeName, env: SignedEnvelope) {
        let Some(n) = self.open_from::<AlertLevelNotice>(
            now,
            peer,
            &env,
            Domain::AlertLevel,
            "alert-level notice",
        ) else {
            return;
        };
        if n.from != peer.as_str() || n.to != self.me.as_str() {
            return;
        }
        if n.reason.len() > MAX_DETAIL_LEN {
            let detail = format!(
                "alert-level notice reason is {} bytes; the limit is {MAX_DETAIL_LEN}",
                n.reason.len()
            );
            return self.report(now, peer, detail);
        }
        let level = AlertLevel::try_from(n.level).unwrap_or(AlertLevel::Normal);
        let unchanged = self
            .channels
            .get(peer)
            .is_none_or(|c| c.peer_level == level);
        // A change is a log entry: within the peer's notice budget.
        if unchanged || self.spend(now, peer, Spend::Notice) != Verdict::Allowed {
            return;
        }
        self.change_alert_level(now, peer, level, "peer", &n.reason);
    }

    /// Verifies and decodes an envelope `peer` signed with its message key;
    /// on failure reports a protocol error naming `what`.
    pub(super) fn open_from<M: prost::Message + Default>(
        &mut self,
        now: Now,
        peer: &OfficeName,
        env: &SignedEnvelope,
        domain: Domain,
        what: &str,
    ) -> Option<M> {
        let key = self.peer_message_key(now, peer, &env.key_id)?;
        match envelope::open(env, domain, &key) {
            Ok(m) => Some(m),
            Err(e) => {
                self.report(now, peer, format!("{what} refused: {e}"));
                None
            }
        }
    }

    // ------------------------------------------------------------------
    // Restart.

    /// Re-anchors replayed tracks on this run's clock and arms timers.
    pub(super) fn start_watch(&mut self, now: Now) {
        let policy = self.policy.clone();
        for ch in self.channels.values_mut() {
            let seqs: Vec<u64> = ch.tracks.keys().copied().collect();
            for seq in seqs {
                let Some(t) = ch.tracks.get_mut(&seq) else {
                    continue;
                };
                t.base = now.mono_ms as i64 - now.wall_ms.saturating_sub(t.base_wall) as i64;
                schedule(&policy, ch, seq);
            }
            ch.next_check_at = Some(now.mono_ms + policy.line_check_interval(ch.level));
        }
    }

    /// Replays the escalation-related part of an entry.
    /// What an escalation or alert-level entry does to the state, live and
    /// replayed (the live handler schedules the next step itself).
    pub(super) fn apply_watch(&mut self, event: &Event) {
        match event {
            Event::Escalation(e) => {
                if let Ok(name) = OfficeName::new(e.peer.clone()) {
                    if let Some(t) = self
                        .channels
                        .get_mut(&name)
                        .and_then(|c| c.tracks.get_mut(&e.sequence))
                    {
                        t.next_n = t.next_n.max(e.step.saturating_add(1));
                    }
                }
            }
            Event::AlertLevelChanged(a) => {
                if let Ok(name) = OfficeName::new(a.peer.clone()) {
                    if let Some(ch) = self.channels.get_mut(&name) {
                        let level = AlertLevel::try_from(a.level).unwrap_or(AlertLevel::Normal);
                        if a.by == "peer" {
                            ch.peer_level = level;
                        } else {
                            ch.own_level = level;
                        }
                        ch.level = self.policy.effective_level(ch.own_level, ch.peer_level);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The subject of an acknowledgement of a message with `subject`: "ACK: "
/// before it, cut (at a character boundary) to fit the subject limit.
fn ack_subject(subject: &str) -> String {
    let mut s = format!("ACK: {subject}");
    crate::text::truncate(&mut s, super::MAX_SUBJECT_LEN);
    s
}

fn precedence_word(p: Precedence) -> &'static str {
    crate::control::api::precedence_name(p)
}

/// Arms the timer for the next step of `seq` that can still apply.
pub(super) fn schedule(policy: &Policy, ch: &mut Channel, seq: u64) {
    let Some(t) = ch.tracks.get_mut(&seq) else {
        return;
    };
    if let Some(d) = t.timer.take() {
        ch.esc_timers.remove(&(d, seq));
    }
    let ladder = policy.ladder(t.precedence);
    while let Some((step, offset)) = Policy::nth_step(ladder, t.next_n) {
        let moot = match step.waiting {
            Waiting::Receipt => t.receipted,
            Waiting::Acknowledgement => !t.awaits_ack,
        };
        if moot {
            t.next_n += 1;
            continue;
        }
        let due = t.base + offset as i64;
        t.timer = Some(due);
        ch.esc_timers.insert((due, seq));
        return;
    }
}

/// Whole check intervals since the peer was last heard (or since the
/// interval last changed, if later); 0 before anything was heard since
/// start (a node restarted during a cut counts misses at its checks).
fn quiet_intervals(ch: &Channel, interval: u64, now_ms: u64) -> u32 {
    let Some(heard) = ch.last_heard_mono else {
        return 0;
    };
    let from = heard.max(ch.level_since_mono);
    let quiet = now_ms.saturating_sub(from) / interval.max(1);
    u32::try_from(quiet).unwrap_or(u32::MAX)
}

/// When the channel's silence next reaches the DEGRADED or SILENT
/// threshold without a check falling due, if it can.
pub(super) fn silence_deadline(policy: &Policy, ch: &Channel) -> Option<u64> {
    let heard = ch.last_heard_mono?;
    let k = policy.line_checks.silent_after;
    let d = policy.line_checks.degraded_after.min(k);
    let next = [d, k].into_iter().find(|&t| t > ch.missed_judged)?;
    let interval = policy.line_check_interval(ch.level).max(1);
    heard
        .max(ch.level_since_mono)
        .checked_add(interval.checked_mul(u64::from(next))?)
}
