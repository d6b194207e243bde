//! The real binary's human-readable commands against running in-process
//! nodes: each exits 0 and shows what it should.

use std::process::Command;

use hotline::control::SendRequest;
use hotline::demo;

fn hotline(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_render_and_act() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = demo::start_pair(tmp.path(), "washington", "pyongyang")
        .await
        .unwrap();
    let (w, p) = (tmp.path().join("washington"), tmp.path().join("pyongyang"));
    let (w, p) = (
        w.to_str().unwrap().to_string(),
        p.to_str().unwrap().to_string(),
    );
    let sent = a
        .handle
        .send(SendRequest {
            to: "pyongyang".into(),
            precedence: Some("flash".into()),
            subject: "Launch detected".into(),
            body: "Request immediate clarification.".into(),
            exercise: true,
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();

    let run = |args: Vec<&str>| {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                hotline(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };
    let (code, text) = run(vec!["inbox", "--dir", &p]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Launch detected") && text.contains("FLASH"),
        "{text}"
    );

    let (code, text) = run(vec![
        "ack",
        "--dir",
        &p,
        &sent.id,
        "--note",
        "Seen",
        "--response",
        "will-comply",
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(vec![
        "alert-level",
        "--dir",
        &w,
        "--peer",
        "pyongyang",
        "elevated",
        "--reason",
        "drill",
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(vec![
        "alert-level",
        "--dir",
        &w,
        "--peer",
        "pyongyang",
        "panic",
    ])
    .await;
    assert_eq!(code, 5, "a bad level is refused: {text}");

    let mut seen = false;
    for _ in 0..100 {
        let (code, text) = run(vec!["status", "--dir", &w]).await;
        assert_eq!(code, 0, "{text}");
        if text.contains("ELEVATED") && text.contains("UP") {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "status shows the level and health");
    let (code, text) = run(vec!["outbox", "--dir", &w]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("delivered"), "{text}");
    // Drill traffic is marked wherever a message is shown.
    assert!(text.contains("[EXERCISE] Launch detected"), "{text}");
    let (_, text) = run(vec!["inbox", "--dir", &p]).await;
    assert!(text.contains("[EXERCISE]"), "{text}");
    let (_, json) = run(vec!["outbox", "--dir", &w, "--json"]).await;
    assert!(json.contains("\"exercise\": true"), "{json}");

    b.stop().await.unwrap();
    a.stop().await.unwrap();
    for args in [
        vec!["audit", "info", w.as_str()],
        vec!["audit", "show", w.as_str(), "--kind", "message"],
        vec!["audit", "timeline", w.as_str(), p.as_str()],
        vec!["status", "--dir", w.as_str()],
    ] {
        let (code, text) = run(args.clone()).await;
        let expected = if args[0] == "status" { 3 } else { 0 };
        assert_eq!(code, expected, "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    let (_, text) = run(vec!["audit", "show", &w, "--kind", "alert-level"]).await;
    assert!(text.contains("ELEVATED (by operator): drill"), "{text}");
    let (_, text) = run(vec!["audit", "timeline", &w, &p]).await;
    assert!(text.contains("receipt from pyongyang"), "{text}");
}

/// `send --wait` waits in bounded requests: with the peer up it reports
/// the receipt; with the peer down it prints the id and exits 4 when its
/// own timeout passes; if the node goes away while it waits it still
/// prints the id, says the message is durable, and exits 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_always_leaves_the_id_and_exit_4_without_a_receipt() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = demo::start_pair(tmp.path(), "washington", "pyongyang")
        .await
        .unwrap();
    let w = tmp.path().join("washington").to_str().unwrap().to_string();
    let send = |timeout: &str| {
        let args: Vec<String> = [
            "send",
            "--dir",
            &w,
            "--to",
            "pyongyang",
            "--subject",
            "s",
            "--wait",
            "--timeout",
            timeout,
            "b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        })
    };
    let is_id = |s: &str| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    let (code, id, err) = send("20").await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(is_id(&id), "{id:?}");
    assert!(err.contains("signed receipt from pyongyang"), "{err}");

    b.stop().await.unwrap();
    let (code, id, err) = send("2").await.unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(is_id(&id), "{id:?}");
    assert!(
        err.contains(&format!("no receipt for {id} within 2 s")),
        "{err}"
    );
    let out = a.handle.outbox().await.unwrap();
    assert!(out.iter().any(|o| o.id == id), "the message is durable");

    // The node stops while the CLI waits.
    let waiting = send("60");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    a.stop().await.unwrap();
    let (code, id, err) = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the CLI gives up once the node is gone")
        .unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(is_id(&id), "{id:?}");
    assert!(err.contains("is durable"), "{err}");
}

#[test]
fn bench_soak_reports_each_nodes_memory_as_the_history_grows() {
    // A short soak through two real node processes: every message
    // delivered and acknowledged, a row per 100 messages with both nodes'
    // memory read.
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args([
            "bench",
            "soak",
            "--messages",
            "300",
            "--report-every",
            "100",
            "--senders",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert!(rows.len() >= 4, "{rows:?}");
    let last = rows.last().unwrap();
    assert_eq!(last["messages"], 300);
    assert_eq!(last["in_flight"], 0, "all delivered before the last row");
    assert_eq!(r["acknowledged"], true);
    assert_eq!(last["awaiting_ack"], 0, "the receiver acknowledged each");
    for row in rows {
        assert!(row["sender_rss_mib"].as_f64().unwrap() > 1.0);
        assert!(row["receiver_rss_mib"].as_f64().unwrap() > 1.0);
    }
    // Both logs hold the 300 messages (each well over 256 bytes logged).
    for side in 0..2 {
        assert!(r["log_bytes"][side].as_u64().unwrap() > 300 * 256);
    }
}
