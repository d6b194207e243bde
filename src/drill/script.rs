//! The drill's timetable, shared by both runners: script steps, node
//! events and line changes merged in time order, and the request a script
//! step makes of its office.

use std::collections::BTreeMap;

use crate::control::api::SendRequest;

use super::scenario::{LinkAction, Scenario, Step};

/// One scheduled thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// `script[i]`.
    Script(usize),
    /// `event[i]`.
    Event(usize),
    /// `link[i]` is cut or restored.
    Line(usize, LinkAction),
}

/// Everything scheduled, by drill time; ties keep file order (lines, then
/// events, then the script), so a cut at the same moment as a send comes
/// first.
pub fn timetable(s: &Scenario) -> Vec<(u64, Planned)> {
    let mut t: Vec<(u64, Planned)> = Vec::new();
    for (i, l) in s.links.iter().enumerate() {
        for c in &l.schedule {
            t.push((c.at.0, Planned::Line(i, c.action)));
        }
    }
    for (i, e) in s.events.iter().enumerate() {
        t.push((e.at.0, Planned::Event(i)));
    }
    for (i, st) in s.script.iter().enumerate() {
        t.push((st.at.0, Planned::Script(i)));
    }
    t.sort_by_key(|(at, _)| *at);
    t
}

/// The send request for a script step with `send`; `ids` maps earlier
/// labels to message ids. Drill traffic always carries the exercise flag.
pub fn send_request(step: &Step, ids: &BTreeMap<String, String>) -> Option<SendRequest> {
    let send = step.send.as_ref()?;
    Some(SendRequest {
        to: step.to.clone(),
        precedence: Some(send.precedence.clone()),
        kind: Some(send.kind.clone()),
        subject: send.subject.clone(),
        body: send.body.clone(),
        thread: send.thread.clone(),
        reply_to: ids.get(&send.reply_to).cloned().unwrap_or_default(),
        language: "en".into(),
        exercise: true,
        response: send.response.clone(),
        via: send.via.clone(),
        wait: false,
        wait_ms: None,
    })
}

/// Words for a script step, for progress and the report.
pub fn describe(step: &Step) -> String {
    if let Some(send) = &step.send {
        let label = if step.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", step.label)
        };
        let via = send
            .via
            .as_ref()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        return format!(
            "{} sends {} {} to {}{via}{label}: {}",
            step.from,
            send.precedence.to_uppercase(),
            send.kind,
            step.to,
            if send.subject.is_empty() {
                &send.body
            } else {
                &send.subject
            }
        );
    }
    if let Some(a) = &step.ack {
        return format!("{} acknowledges {a}", step.from);
    }
    if let Some(l) = &step.alert_level {
        return format!(
            "{} sets the alert level towards {} to {l}",
            step.from, step.to
        );
    }
    String::new()
}
