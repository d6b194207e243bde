//! The escalation flow on two real nodes over loopback QUIC, with every
//! deadline scaled down (time_scale 0.002: FLASH steps at 10, 20, 30 and
//! 60 ms, acknowledgement due at 1.2 s, line checks every 120 ms).

use std::time::Duration;

use hotline::control::{AckRequest, SendRequest};
use hotline::demo;
use hotline::identity::OfficeDir;
use hotline::wire::proto::{log_entry::Event, LogEntry};

fn scaled(cfg: &mut hotline::identity::Config) {
    cfg.escalation.time_scale = 0.002;
}

fn log_entries(dir: &std::path::Path) -> Vec<LogEntry> {
    let mut v = vec![];
    hotline::audit::scan(&OfficeDir::new(dir).log(), |e| v.push(e.entry)).unwrap();
    v
}

fn flash(body: &str) -> SendRequest {
    SendRequest {
        to: "pyongyang".into(),
        precedence: Some("flash".into()),
        subject: "Launch detected".into(),
        body: body.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_stopped_the_line_goes_silent_and_the_flash_ladder_runs_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let alerts_file = tmp.path().join("alerts.txt");
    let cmd = format!(
        "echo \"$HOTLINE_PEER $HOTLINE_ALERT\" >> {}",
        alerts_file.display()
    );
    let (a, b) = demo::start_pair_with(tmp.path(), "washington", "pyongyang", |cfg| {
        scaled(cfg);
        cfg.escalation.alert_command = Some(cmd.clone());
    })
    .await
    .unwrap();
    b.stop().await.unwrap();
    let sent = a
        .handle
        .send(flash("Request immediate clarification."))
        .await
        .unwrap();
    // Wait (bounded) until washington reports the line SILENT.
    let mut silent = false;
    for _ in 0..200 {
        let s = a.handle.status().await.unwrap();
        if s.peers[0].health == "silent" {
            silent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(silent, "the line never went silent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = a.handle.status().await.unwrap();
    assert_eq!(status.peers[0].link, "down");
    assert!(status
        .overdue
        .iter()
        .any(|o| o.id == sent.id && o.waiting_for == "receipt"));
    a.stop().await.unwrap();

    let entries = log_entries(&tmp.path().join("washington"));
    let accepted = entries
        .iter()
        .find(|e| matches!(&e.event, Some(Event::MessageSent(_))))
        .unwrap()
        .time_unix_ms;
    let steps: Vec<(String, u64)> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Escalation(s)) if s.message_id == sent.id => {
                Some((s.action.clone(), e.time_unix_ms))
            }
            _ => None,
        })
        .collect();
    let actions: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        actions,
        ["retransmit", "reroute", "alert", "raise-alert-level"]
    );
    // Never before its deadline (10, 20, 30, 60 ms after acceptance). The
    // deadlines run on the monotonic clock and the log records whole wall
    // milliseconds, each truncated on its own: they can disagree by 1 ms.
    for ((_, t), deadline) in steps.iter().zip([10, 20, 30, 60]) {
        assert!(
            *t + 1 >= accepted + deadline,
            "a step fired early: {t} < {accepted} + {deadline}"
        );
    }
    let health: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::LinkHealth(h)) => Some(h.state.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(health, ["degraded", "silent"]);
    // The duty officer's local alert command ran for the ladder's alert.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&alerts_file).unwrap_or_default();
        if text.contains("no receipt") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains("pyongyang no receipt for flash"), "{text:?}");
}

/// As `scaled`, but line checks every second: a loaded machine must not
/// miss one by accident in a test about people, not machines.
fn scaled_patient_checks(cfg: &mut hotline::identity::Config) {
    scaled(cfg);
    cfg.escalation.policy.line_checks.normal_ms = 500_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_acknowledging_raises_the_ack_overdue_alert_while_line_checks_stay_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) =
        demo::start_pair_with(tmp.path(), "washington", "pyongyang", scaled_patient_checks)
            .await
            .unwrap();
    let mut req = flash("Request a call within the hour.");
    req.wait = true;
    let sent = a.handle.send(req).await.unwrap();
    assert!(
        sent.delivered.is_some(),
        "the machines answer: a signed receipt"
    );
    // Wait (bounded) for the acknowledgement alert.
    let mut alerted = false;
    let mut after = 0;
    for _ in 0..100 {
        for e in a.handle.events(after, Duration::from_millis(200)).await {
            after = after.max(e.seq);
            if e.kind == "alert"
                && e.msg.as_deref() == Some(&sent.id)
                && e.detail.contains("acknowledgement")
            {
                alerted = true;
            }
        }
        if alerted {
            break;
        }
    }
    assert!(alerted, "no acknowledgement-overdue alert");
    let status = a.handle.status().await.unwrap();
    assert_eq!(status.peers[0].health, "up", "line checks are answered");
    assert!(status.peers[0].line_check_rtt_ms.is_some());
    assert!(status
        .overdue
        .iter()
        .any(|o| o.id == sent.id && o.waiting_for == "acknowledgement"));

    // Pyongyang's officer finally acknowledges: washington sees it.
    b.handle
        .ack(AckRequest {
            id: sent.id.clone(),
            note: "Seen. Call at 10:00.".into(),
            response: Some("will-comply".into()),
        })
        .await
        .unwrap();
    let mut acked = false;
    for _ in 0..100 {
        let out = a.handle.outbox().await.unwrap();
        if out.iter().any(|o| o.id == sent.id)
            && a.handle.status().await.unwrap().overdue.is_empty()
        {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acked, "the acknowledgement cleared the overdue item");
    let before_stop = hotline::node::wall_ms();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    // While pyongyang ran, washington's line checks never degraded.
    let entries = log_entries(&tmp.path().join("washington"));
    assert!(!entries
        .iter()
        .any(|e| e.time_unix_ms < before_stop && matches!(&e.event, Some(Event::LinkHealth(_)))));
}
