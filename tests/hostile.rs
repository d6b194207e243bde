//! Bad input gets a clear error and loses nothing. Each test starts a real
//! node in-process on loopback (port 0) and attacks it with a raw QUIC
//! client built from real office identities.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hotline::control::ControlClient;
use hotline::identity::{tls_material, Office, OfficeDir, OfficeName};
use hotline::node::{self, link::close_code, tls, NodeError, NodeOptions, RunningNode};
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{
    frame::Body, Frame, Hello, Message, NackReason, NegativeReceipt, Precedence, Receipt,
};
use hotline::wire::{frame, FrameBuf, MessageId, MAX_FRAME_LEN};

/// Washington runs (and does not dial); pyongyang is pinned but its node is
/// not started, so the test can speak as pyongyang over a raw connection.
async fn washington_alone(root: &Path) -> (RunningNode, OfficeDir, OfficeDir) {
    let a = OfficeDir::new(root.join("washington"));
    let b = OfficeDir::new(root.join("pyongyang"));
    a.init(&OfficeName::new("washington").unwrap(), "127.0.0.1:0")
        .unwrap();
    b.init(&OfficeName::new("pyongyang").unwrap(), "127.0.0.1:0")
        .unwrap();
    a.add_peer(&b.card(), Some(String::new()), false).unwrap();
    b.add_peer(&a.card(), Some(String::new()), false).unwrap();
    let node = node::start(a.load().unwrap(), NodeOptions { control_api: true })
        .await
        .unwrap();
    (node, a, b)
}

/// Dials `addr` as `me` (an office whose peers[0] is washington).
async fn dial(
    me: &Office,
    addr: std::net::SocketAddr,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let pin = tls::Pin::of(&me.peers[0]).unwrap();
    let cfg =
        tls::client_config_with_alpn(me.node_cert.clone(), me.node_key.clone_key(), &pin, alpn)
            .unwrap();
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap(),
    ));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep.connect(addr, "washington.hotline").unwrap().await
}

/// The reasons in both refusal lists: those that presented an identity,
/// then the noise.
async fn refusals(node: &RunningNode) -> Vec<String> {
    let st = node.handle.status().await.unwrap();
    st.refused
        .into_iter()
        .chain(st.refusal_noise)
        .map(|r| r.reason)
        .collect()
}

async fn wait_for_refusal(node: &RunningNode, needle: &str) -> Vec<String> {
    for _ in 0..200 {
        let r = refusals(node).await;
        if r.iter().any(|s| s.contains(needle)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no refusal mentioning {needle:?}; got {:?}",
        refusals(node).await
    );
}

#[tokio::test]
async fn certificate_from_an_unpinned_ca_is_refused_as_unknown_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, _b) = washington_alone(tmp.path()).await;
    // An impostor "pyongyang" with its own CA, holding washington's real card.
    let imp = OfficeDir::new(tmp.path().join("impostor"));
    imp.init(&OfficeName::new("pyongyang").unwrap(), "127.0.0.1:0")
        .unwrap();
    imp.add_peer(&a.card(), None, false).unwrap();
    // TLS 1.3 lets the client finish before the server has checked its
    // certificate, so the client may see the refusal as a prompt close.
    if let Ok(conn) = dial(&imp.load().unwrap(), node.quic_addr, b"hotline/1").await {
        tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .unwrap();
    }
    wait_for_refusal(&node, "unknown CA").await;
    assert!(node.handle.status().await.unwrap().peers[0].link == "down");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn certificate_from_the_right_ca_but_not_the_card_is_refused_as_card_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _a, b) = washington_alone(tmp.path()).await;
    // Pyongyang's own CA issues a second node certificate: it chains, but the
    // card pins the first one.
    let ca_key = std::fs::read_to_string(b.tls("ca.key")).unwrap();
    let (cert, key) =
        tls_material::reissue_node_cert(&OfficeName::new("pyongyang").unwrap(), &ca_key).unwrap();
    std::fs::write(b.tls("node.crt"), cert).unwrap();
    hotline::identity::files::write_secret(&b.tls("node.key"), key.as_bytes()).unwrap();
    let result = dial(&b.load().unwrap(), node.quic_addr, b"hotline/1").await;
    if let Ok(conn) = result {
        conn.closed().await;
    }
    wait_for_refusal(&node, "card mismatch").await;
    node.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_alpn_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _a, b) = washington_alone(tmp.path()).await;
    let err = dial(&b.load().unwrap(), node.quic_addr, b"h3")
        .await
        .unwrap_err();
    assert!(
        tls::explain_handshake_failure(&format!("{err:?}")).contains("ALPN"),
        "{err:?}"
    );
    wait_for_refusal(&node, "wrong ALPN").await;
    node.stop().await.unwrap();
}

async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) {
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(bytes).await.unwrap();
}

#[tokio::test]
async fn oversize_frame_and_garbage_close_the_line_with_a_protocol_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    for (bytes, needle) in [
        (
            ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec(),
            "exceeds",
        ),
        (
            vec![0, 0, 0, 3, 0xff, 0xff, 0xff],
            "not a valid hotline frame",
        ),
    ] {
        let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
        send_raw(&conn, &bytes).await;
        match tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .unwrap()
        {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(
                    c.error_code,
                    quinn::VarInt::from_u32(close_code::PROTOCOL_VIOLATION)
                );
                assert!(String::from_utf8_lossy(&c.reason).contains(needle), "{c:?}");
            }
            other => panic!("expected an application close, got {other}"),
        }
    }
    let st = node.handle.status().await.unwrap();
    assert_eq!(
        st.refused
            .iter()
            .filter(|r| r.reason.contains("bad frame"))
            .map(|r| r.count)
            .sum::<u64>(),
        2
    );
    // The node is still serving.
    assert!(node.handle.inbox().await.unwrap().is_empty());
    node.stop().await.unwrap();
}

/// Collects every frame the node sends on this connection.
fn frames(conn: &quinn::Connection) -> tokio::sync::mpsc::Receiver<Frame> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok(mut recv) = c.accept_uni().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut fb = FrameBuf::new();
                let mut buf = vec![0u8; 65536];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    fb.extend(&buf[..n]);
                    while let Ok(Some(f)) = fb.next_frame() {
                        let _ = tx.send(f).await;
                    }
                }
            });
        }
    });
    rx
}

/// Waits (up to 20 s) for the first frame `want` accepts.
async fn next_matching<T>(
    rx: &mut tokio::sync::mpsc::Receiver<Frame>,
    mut want: impl FnMut(Frame) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(t) = want(rx.recv().await.expect("frames")) {
                return t;
            }
        }
    })
    .await
    .expect("expected frame within 20 s")
}

/// Writes one frame carrying `body` on `stream`.
async fn write_body(stream: &mut quinn::SendStream, body: Body) {
    stream
        .write_all(&frame::encode(&Frame { body: Some(body) }))
        .await
        .unwrap();
}

/// The next receipt, opened with washington's `key`.
async fn next_receipt(
    rx: &mut tokio::sync::mpsc::Receiver<Frame>,
    key: &ed25519_dalek::VerifyingKey,
) -> Receipt {
    next_matching(rx, |f| match f.body {
        Some(Body::Receipt(env)) => Some(envelope::open(&env, Domain::Receipt, key).unwrap()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn forged_message_gets_a_signed_negative_receipt_and_the_line_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let hello = Frame {
        body: Some(Body::Hello(Hello {
            protocol_version: 1,
            office: "pyongyang".into(),
            ..Default::default()
        })),
    };
    control.write_all(&frame::encode(&hello)).await.unwrap();
    let msg = Message {
        id: MessageId::new(1, [1; 10]).to_string(),
        sequence: 1,
        from: "pyongyang".into(),
        to: "washington".into(),
        precedence: Precedence::Flash as i32,
        body: "hello".into(),
        ..Default::default()
    };
    let good = envelope::seal_proto(Domain::Message, &msg, &me.message_key);
    let mut forged = good.clone();
    forged.payload[5] ^= 0x20;
    let mut flash = conn.open_uni().await.unwrap();
    write_body(&mut flash, Body::Message(forged)).await;
    let nack: NegativeReceipt = next_matching(&mut rx, |f| match f.body {
        Some(Body::NegativeReceipt(env)) => {
            Some(envelope::open(&env, Domain::NegativeReceipt, &wash_key).unwrap())
        }
        _ => None,
    })
    .await;
    assert_eq!(nack.reason, NackReason::BadSignature as i32);

    // Same connection: the genuine message (twice: a replay) gets receipts,
    // and lands in the inbox once.
    for _ in 0..2 {
        write_body(&mut flash, Body::Message(good.clone())).await;
        let r: Receipt = next_receipt(&mut rx, &wash_key).await;
        assert_eq!(r.message_id, msg.id);
    }
    assert_eq!(conn.close_reason(), None, "the line stays up");
    let inbox = node.handle.inbox().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].body, "hello");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn control_api_without_the_token_is_401_and_unknown_peer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, _b) = washington_alone(tmp.path()).await;
    let addr = node.control_addr.unwrap().to_string();
    for token in ["", "wrong"] {
        let err = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || ControlClient::new(&addr, token).status().unwrap_err()
        })
        .await
        .unwrap();
        assert!(
            matches!(err, hotline::control::ClientError::Unauthorized(_)),
            "{err}"
        );
    }
    // The real binary: send to an office nobody pinned.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args([
            "send",
            "--dir",
            a.root().to_str().unwrap(),
            "--to",
            "stockholm",
            "hello",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown peer") && stderr.contains("peer add"),
        "{stderr}"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn torn_tail_is_truncated_and_recorded_and_corruption_refuses_to_start() {
    use hotline::wire::proto::log_entry::Event;
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, _b) = washington_alone(tmp.path()).await;
    node.stop().await.unwrap();
    let log = a.log();
    let good = std::fs::read(&log).unwrap();

    // A torn tail: half of a record header and some bytes.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0, 0, 0, 90, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&log, &torn).unwrap();
    let node = node::start(a.load().unwrap(), NodeOptions::default())
        .await
        .unwrap();
    node.stop().await.unwrap();
    let mut recoveries = vec![];
    hotline::audit::scan(&log, |e| {
        if let Some(Event::Recovery(r)) = e.entry.event {
            recoveries.push(r);
        }
    })
    .unwrap();
    assert_eq!(recoveries.len(), 1);
    assert_eq!(
        (
            recoveries[0].truncated_at_offset,
            recoveries[0].truncated_bytes
        ),
        (good.len() as u64, 10)
    );

    // Corruption inside the log: the node refuses and names the offset.
    let mut bad = std::fs::read(&log).unwrap();
    bad[20] ^= 0xff;
    std::fs::write(&log, &bad).unwrap();
    match node::start(a.load().unwrap(), NodeOptions::default()).await {
        Err(NodeError::Log(e)) => assert!(e.to_string().contains("offset 0"), "{e}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("started on a corrupt log"),
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["node", "run", "--dir", a.root().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt at byte offset 0"), "{stderr}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bad,
        "a refused start changes nothing"
    );
}

/// A pinned peer that opens stream after stream and stalls each one
/// mid-frame, while an impostor hammers the port with handshakes: the node
/// caps the peer's concurrent streams, refuses every impostor, keeps its
/// refusal list bounded, and goes on serving its operator and stopping
/// cleanly.
#[tokio::test]
async fn a_flood_of_stalled_streams_and_impostor_handshakes_leaves_the_node_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut stalled = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), conn.open_uni()).await {
            Ok(Ok(mut s)) => {
                // Half of a length prefix, then nothing: a slow peer.
                s.write_all(&[0, 0]).await.unwrap();
                stalled.push(s);
            }
            _ => break,
        }
    }
    assert!(
        stalled.len() <= node::link::MAX_PEER_STREAMS as usize,
        "a peer may hold at most {} streams open, got {}",
        node::link::MAX_PEER_STREAMS,
        stalled.len()
    );
    let imp = OfficeDir::new(tmp.path().join("impostor"));
    imp.init(&OfficeName::new("pyongyang").unwrap(), "127.0.0.1:0")
        .unwrap();
    imp.add_peer(&a.card(), None, false).unwrap();
    let imp = Arc::new(imp.load().unwrap());
    let addr = node.quic_addr;
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let imp = imp.clone();
            tokio::spawn(async move {
                if let Ok(c) = dial(&imp, addr, b"hotline/1").await {
                    let _ = tokio::time::timeout(Duration::from_secs(20), c.closed()).await;
                }
            })
        })
        .collect();
    for t in attempts {
        t.await.unwrap();
    }
    let reasons = wait_for_refusal(&node, "unknown CA").await;
    assert!(
        reasons.len() <= node::MAX_IDENTITY_ROWS,
        "the refusal list is bounded: {}",
        reasons.len()
    );
    // The operator is still served, through the control API too.
    let st = node.handle.status().await.unwrap();
    assert_eq!(st.peers[0].office, "pyongyang");
    let client = ControlClient::from_dir(&a).unwrap();
    let st = tokio::task::spawn_blocking(move || client.status())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.office, "washington");
    drop(stalled);
    tokio::time::timeout(Duration::from_secs(30), node.stop())
        .await
        .expect("stops within 30 s")
        .unwrap();
}

/// Every remote panic the hostile-office review found, sent over QUIC with
/// pyongyang's real keys; then a refused ROUTINE message, and the ROUTINE
/// messages after it. The node keeps serving and delivers those in order.
#[tokio::test]
async fn signed_hostile_frames_neither_stop_the_node_nor_stall_a_precedence() {
    use hotline::audit::checkpoint;
    use hotline::wire::proto::CheckpointOffer;
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let encode = |body: Body| frame::encode(&Frame { body: Some(body) });
    // A hello whose numbers are at the top of the range.
    let hello = encode(Body::Hello(Hello {
        protocol_version: 1,
        office: "pyongyang".into(),
        received_through: u64::MAX,
        receipted_through: u64::MAX,
        reply: false,
        cosigned_size: u64::MAX,
    }));
    control.write_all(&hello).await.unwrap();
    let msg = |seq: u64, ps: u64| Message {
        id: MessageId::new(1, [seq as u8; 10]).to_string(),
        sequence: seq,
        from: "pyongyang".into(),
        to: "washington".into(),
        precedence: Precedence::Routine as i32,
        body: format!("routine {seq}"),
        precedence_sequence: ps,
        ..Default::default()
    };
    // A message whose sender name cuts a refusal detail inside a character.
    let mut bad_from = msg(90, 0);
    bad_from.from = format!("a{}", "é".repeat(300));
    // A size-0 checkpoint with a non-empty root, before anything is cosigned.
    let origin = checkpoint::origin(
        &OfficeName::new("pyongyang").unwrap(),
        &me.log_key.verifying_key(),
    );
    let cp = checkpoint::sign(
        &origin,
        0,
        hotline::audit::merkle::Hash([7; 32]),
        &me.log_key,
    );
    let offer = CheckpointOffer {
        note: cp.note,
        old_size: 0,
        proof: vec![],
    };
    // A ROUTINE message refused for good (language over the limit), then
    // the next two ROUTINE messages.
    let mut refused = msg(1, 1);
    refused.language = "x".repeat(100);
    let mut bulk = conn.open_uni().await.unwrap();
    for body in [
        Body::Message(envelope::seal_proto(
            Domain::Message,
            &bad_from,
            &me.message_key,
        )),
        Body::CheckpointOffer(envelope::seal_proto(
            Domain::CheckpointOffer,
            &offer,
            &me.log_key,
        )),
        Body::Message(envelope::seal_proto(
            Domain::Message,
            &refused,
            &me.message_key,
        )),
        Body::Message(envelope::seal_proto(
            Domain::Message,
            &msg(2, 2),
            &me.message_key,
        )),
        Body::Message(envelope::seal_proto(
            Domain::Message,
            &msg(3, 3),
            &me.message_key,
        )),
    ] {
        bulk.write_all(&encode(body)).await.unwrap();
    }
    // Two receipts (2 and 3) and two refusals (the bad name, the language).
    let mut receipts = vec![];
    let mut nacks = vec![];
    while receipts.len() < 2 || nacks.len() < 2 {
        let f = next_matching(&mut rx, |f| match f.body {
            Some(Body::Receipt(env)) => Some(Ok(envelope::open::<Receipt>(
                &env,
                Domain::Receipt,
                &wash_key,
            )
            .unwrap())),
            Some(Body::NegativeReceipt(env)) => Some(Err(envelope::open::<NegativeReceipt>(
                &env,
                Domain::NegativeReceipt,
                &wash_key,
            )
            .unwrap())),
            _ => None,
        })
        .await;
        match f {
            Ok(r) => receipts.push(r.sequence),
            Err(n) => nacks.push(n),
        }
    }
    assert_eq!(receipts, vec![2, 3]);
    assert!(nacks
        .iter()
        .any(|n| n.reason == NackReason::WrongSender as i32 && n.detail.len() <= 256));
    assert!(nacks
        .iter()
        .any(|n| n.reason == NackReason::Malformed as i32 && n.settles && n.sequence == 1));
    assert_eq!(conn.close_reason(), None, "the line stays up");
    let inbox = node.handle.inbox().await.unwrap();
    let bodies: Vec<&str> = inbox.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["routine 2", "routine 3"]);
    let st = node.handle.status().await.unwrap();
    assert_eq!(st.peers[0].received_through, 3);
    assert_eq!(
        st.peers[0].peer_cosigned_size, 0,
        "a hello is not a cosignature"
    );

    // A consistent checkpoint, cosigned; then an inconsistent extension
    // padded with the most proof hashes allowed (once, its evidence entry
    // outgrew the log's entry limit and the writer panicked); then an offer
    // whose note is far over the limit. The node logs bounded evidence,
    // keeps serving, and delivers the next message.
    let mut tree = hotline::audit::merkle::Tree::new();
    for i in 0..4u64 {
        tree.push(format!("leaf {i}").as_bytes());
    }
    let offer_of = |size: u64, root: [u8; 32], old_size: u64, proof: Vec<Vec<u8>>| {
        let cp = checkpoint::sign(
            &origin,
            size,
            hotline::audit::merkle::Hash(root),
            &me.log_key,
        );
        Body::CheckpointOffer(envelope::seal_proto(
            Domain::CheckpointOffer,
            &CheckpointOffer {
                note: cp.note,
                old_size,
                proof,
            },
            &me.log_key,
        ))
    };
    let proof = tree
        .consistency_proof(0, 4)
        .unwrap()
        .iter()
        .map(|h| h.0.to_vec())
        .collect();
    bulk.write_all(&encode(offer_of(4, tree.root().0, 0, proof)))
        .await
        .unwrap();
    next_matching(&mut rx, |f| match f.body {
        Some(Body::Cosignature(c)) => Some(c),
        _ => None,
    })
    .await;
    let junk = vec![vec![0xee; 32]; hotline::core::MAX_PROOF_HASHES];
    bulk.write_all(&encode(offer_of(9, [1; 32], 4, junk)))
        .await
        .unwrap();
    let huge = Body::CheckpointOffer(envelope::seal_proto(
        Domain::CheckpointOffer,
        &CheckpointOffer {
            note: vec![b'x'; 100_000],
            old_size: 4,
            proof: vec![],
        },
        &me.log_key,
    ));
    bulk.write_all(&encode(huge)).await.unwrap();
    bulk.write_all(&encode(Body::Message(envelope::seal_proto(
        Domain::Message,
        &msg(4, 4),
        &me.message_key,
    ))))
    .await
    .unwrap();
    let r: Receipt = next_receipt(&mut rx, &wash_key).await;
    assert_eq!(r.sequence, 4);
    assert_eq!(conn.close_reason(), None, "the line stays up");
    let st = node.handle.status().await.unwrap();
    assert_eq!(
        st.peers[0].we_cosigned_size, 4,
        "nothing cosigned past the split"
    );
    node.stop().await.unwrap();
    let mut evidence = Vec::new();
    hotline::audit::scan(&a.log(), |e| {
        if let Some(hotline::wire::proto::log_entry::Event::EquivocationDetected(_)) = e.entry.event
        {
            evidence.push(e.bytes.len());
        }
    })
    .unwrap();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert!(evidence[0] < 64 * 1024, "{evidence:?}");
}

/// A bug that panics inside the actor's round (injected: no peer input
/// reaches a panic) does not stop the node: the core is rebuilt from the
/// log, the fault shows in `status`, and the line keeps working. A fault
/// that recurs more than 5 times in an hour stops the node with a named
/// error.
#[tokio::test]
async fn a_core_panic_is_restarted_from_the_log_reported_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let hello = frame::encode(&Frame {
        body: Some(Body::Hello(Hello {
            protocol_version: 1,
            office: "pyongyang".into(),
            ..Default::default()
        })),
    });
    control.write_all(&hello).await.unwrap();
    let mut flash = conn.open_uni().await.unwrap();
    let msg = |seq: u64| Message {
        id: MessageId::new(1, [seq as u8; 10]).to_string(),
        sequence: seq,
        from: "pyongyang".into(),
        to: "washington".into(),
        precedence: Precedence::Flash as i32,
        body: format!("message {seq}"),
        precedence_sequence: seq,
        ..Default::default()
    };
    for seq in 1..=2 {
        if seq == 2 {
            node.handle.inject_core_panic("injected fault").await;
        }
        let env = envelope::seal_proto(Domain::Message, &msg(seq), &me.message_key);
        write_body(&mut flash, Body::Message(env)).await;
        let r: Receipt = next_receipt(&mut rx, &wash_key).await;
        assert_eq!(r.sequence, seq);
    }
    let st = node.handle.status().await.unwrap();
    assert_eq!(st.core_restarts, 1);
    assert!(st
        .last_core_panic
        .as_deref()
        .is_some_and(|p| p.contains("injected fault")));
    assert!(
        st.alerts
            .iter()
            .any(|a| a.detail.contains("restarted from the log")),
        "{:?}",
        st.alerts
    );
    // Rebuilt from the log: both messages once, in order.
    let inbox = node.handle.inbox().await.unwrap();
    let bodies: Vec<&str> = inbox.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["message 1", "message 2"]);
    // Past the allowance the node stops, and says why.
    for _ in 0..hotline::node::MAX_CORE_RESTARTS {
        node.handle.inject_core_panic("injected fault").await;
    }
    let r = tokio::time::timeout(Duration::from_secs(30), node.finish())
        .await
        .expect("the node stops");
    assert!(
        matches!(r, Err(NodeError::CorePanicked { times, .. }) if times == 6),
        "{r:?}"
    );
    // The log is intact.
    let office = a.load().unwrap();
    let report = hotline::audit::verify::verify(&a.log(), &office.card, &office.peers).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

/// The next message frame, opened with `key`, and its payload hash.
async fn next_message(
    rx: &mut tokio::sync::mpsc::Receiver<Frame>,
    key: &ed25519_dalek::VerifyingKey,
) -> (Message, [u8; 32]) {
    next_matching(rx, |f| match f.body {
        Some(Body::Message(env)) => {
            let m: Message = envelope::open(&env, Domain::Message, key).unwrap();
            Some((m, hotline::wire::sha256(&env.payload)))
        }
        _ => None,
    })
    .await
}

/// The other side of a refusal, through a real node: pyongyang (played by
/// the test) refuses washington's first message for good, receipts the
/// rest, and a message sent after the refusal is delivered too. The
/// refused one is settled, never retransmitted, and counted in the next
/// hello's receipted_through.
#[tokio::test]
async fn a_node_whose_message_was_refused_keeps_delivering_the_later_ones() {
    use prost::Message as _;
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let hello = |receipted_through: u64| {
        frame::encode(&Frame {
            body: Some(Body::Hello(Hello {
                protocol_version: 1,
                office: "pyongyang".into(),
                receipted_through,
                received_through: 0,
                ..Default::default()
            })),
        })
    };
    control.write_all(&hello(0)).await.unwrap();
    let send = |n: u32| hotline::control::api::SendRequest {
        to: "pyongyang".into(),
        precedence: Some("routine".into()),
        subject: format!("routine {n}"),
        body: "b".into(),
        ..Default::default()
    };
    let refuse = |m: &Message, hash: [u8; 32]| NegativeReceipt {
        payload_hash: hash.to_vec(),
        message_id: m.id.clone(),
        sequence: m.sequence,
        from: "pyongyang".into(),
        to: "washington".into(),
        time_unix_ms: 1,
        reason: NackReason::Malformed as i32,
        detail: "refused for the test".into(),
        settles: true,
        precedence: m.precedence,
        precedence_sequence: m.precedence_sequence,
    };
    let receipt = |m: &Message, hash: [u8; 32]| Receipt {
        message_id: m.id.clone(),
        message_hash: hash.to_vec(),
        sequence: m.sequence,
        from: "pyongyang".into(),
        to: "washington".into(),
        received_unix_ms: 1,
        log_index: m.sequence,
        log_size: m.sequence + 1,
        log_root: vec![0; 32],
    };
    let mut answers = conn.open_uni().await.unwrap();
    let first = node.handle.send(send(1)).await.unwrap();
    let (m1, h1) = next_message(&mut rx, &wash_key).await;
    assert_eq!(m1.id, first.id);
    let nack = envelope::seal_proto(Domain::NegativeReceipt, &refuse(&m1, h1), &me.message_key);
    write_body(&mut answers, Body::NegativeReceipt(nack)).await;
    for n in 2..=3 {
        let sent = node.handle.send(send(n)).await.unwrap();
        let (m, h) = next_message(&mut rx, &wash_key).await;
        assert_eq!(
            (m.id.as_str(), m.sequence),
            (sent.id.as_str(), u64::from(n))
        );
        let r = envelope::seal_proto(Domain::Receipt, &receipt(&m, h), &me.message_key);
        write_body(&mut answers, Body::Receipt(r)).await;
    }
    let mut states = Vec::new();
    for _ in 0..200 {
        let out = node.handle.outbox().await.unwrap();
        states = out
            .iter()
            .map(|o| format!("{} {:?}", o.subject, o.state))
            .collect();
        if states.iter().filter(|s| s.ends_with("Delivered")).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    states.sort();
    assert_eq!(
        states,
        [
            "routine 1 Refused",
            "routine 2 Delivered",
            "routine 3 Delivered"
        ]
    );
    // A new connection: washington's hello counts the refused one as settled.
    conn.close(0u32.into(), b"again");
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&hello(3)).await.unwrap();
    let h: Hello = next_matching(&mut rx, |f| match f.body {
        Some(Body::Hello(h)) => Some(h),
        _ => None,
    })
    .await;
    assert_eq!(h.receipted_through, 3, "{h:?}");
    // Nothing is retransmitted: no message frame follows.
    let again = tokio::time::timeout(Duration::from_millis(1500), async {
        next_matching(&mut rx, |f| match f.body {
            Some(Body::Message(env)) => Some(Message::decode(env.payload.as_slice()).unwrap()),
            _ => None,
        })
        .await
    })
    .await;
    assert!(again.is_err(), "retransmitted {again:?}");
    node.stop().await.unwrap();
}

/// A line check from the peer comes twice, by stream and by QUIC DATAGRAM
/// (docs/protocol.md §8b): whichever copy comes first is answered, once,
/// by stream and datagram both; datagrams that are not exactly one line
/// check frame are dropped without closing the line.
#[tokio::test]
async fn a_line_check_by_datagram_is_answered_once_and_datagram_noise_is_dropped() {
    use hotline::wire::proto::LineCheck;
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let hello = Body::Hello(Hello {
        protocol_version: 1,
        office: "pyongyang".into(),
        ..Default::default()
    });
    write_body(&mut control, hello.clone()).await;
    assert!(
        conn.max_datagram_size().is_some(),
        "the node accepts datagrams"
    );
    let check = |sequence: u64| {
        let lc = LineCheck {
            from: "pyongyang".into(),
            to: "washington".into(),
            sequence,
            reply: false,
            ..Default::default()
        };
        Body::LineCheck(envelope::seal_proto(
            Domain::LineCheck,
            &lc,
            &me.message_key,
        ))
    };
    let encoded = |body: Body| frame::encode(&Frame { body: Some(body) });
    // Noise: garbage, a hello, two checks in one datagram, a check cut short.
    let two = [encoded(check(50)), encoded(check(51))].concat();
    let one = encoded(check(52));
    for noise in [
        vec![0xff; 40],
        encoded(hello),
        two,
        one[..one.len() - 1].to_vec(),
    ] {
        conn.send_datagram(noise.into()).unwrap();
    }
    // Check 1 by datagram only: answered by datagram and on the stream.
    conn.send_datagram(encoded(check(1)).into()).unwrap();
    let by_datagram = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let d = conn.read_datagram().await.unwrap();
            let f = frame::parse_datagram(&d).unwrap();
            let Some(Body::LineCheck(env)) = f.body else {
                unreachable!("parse_datagram yields line checks only")
            };
            let lc: LineCheck = envelope::open(&env, Domain::LineCheck, &wash_key).unwrap();
            if lc.reply {
                return lc.sequence;
            }
        }
    })
    .await
    .expect("a reply by datagram within 20 s");
    assert_eq!(by_datagram, 1);
    // The stream copy of check 1, late, then check 2: the stream carries
    // one answer to each, in order, and none to the noise.
    write_body(&mut control, check(1)).await;
    write_body(&mut control, check(2)).await;
    let mut answered = Vec::new();
    while answered.last() != Some(&2) {
        let seq = next_matching(&mut rx, |f| match f.body {
            Some(Body::LineCheck(env)) => {
                let lc: LineCheck = envelope::open(&env, Domain::LineCheck, &wash_key).unwrap();
                lc.reply.then_some(lc.sequence)
            }
            _ => None,
        })
        .await;
        answered.push(seq);
    }
    assert_eq!(answered, vec![1, 2]);
    assert_eq!(conn.close_reason(), None, "the line stays up");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_copy_of_a_message_settled_thousands_ago_gets_its_logged_receipt_or_a_conflict_refusal() {
    // The node keeps its answers to a peer's latest sequences only
    // (RECENT_ANSWERS); older ones are read back from its log. The peer
    // (real keys, raw connection) sends more than that, then a copy of its
    // first message, a second message under its second number, and a hello
    // that claims it holds no receipt at all.
    let tmp = tempfile::tempdir().unwrap();
    let (node, a, b) = washington_alone(tmp.path()).await;
    let me = b.load().unwrap();
    let wash_key = a.load().unwrap().message_key.verifying_key();
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    let hello = |receipted_through: u64| Frame {
        body: Some(Body::Hello(Hello {
            protocol_version: 1,
            office: "pyongyang".into(),
            receipted_through,
            ..Default::default()
        })),
    };
    control.write_all(&frame::encode(&hello(0))).await.unwrap();
    let n = hotline::core::RECENT_ANSWERS as u64 + 50;
    let message = |seq: u64, body: &str| {
        let msg = Message {
            id: MessageId::new(seq, [2; 10]).to_string(),
            sequence: seq,
            from: "pyongyang".into(),
            to: "washington".into(),
            precedence: Precedence::Routine as i32,
            body: body.into(),
            ..Default::default()
        };
        envelope::seal_proto(Domain::Message, &msg, &me.message_key)
    };
    let mut routine = conn.open_uni().await.unwrap();
    let mut first_receipt = None;
    for seq in 1..=n {
        write_body(&mut routine, Body::Message(message(seq, "routine"))).await;
    }
    // Every receipt, in order; the first kept to compare.
    let mut seen = 0;
    while seen < n {
        let env = next_matching(&mut rx, |f| match f.body {
            Some(Body::Receipt(env)) => Some(env),
            _ => None,
        })
        .await;
        let r: Receipt = envelope::open(&env, Domain::Receipt, &wash_key).unwrap();
        if r.sequence == 1 {
            first_receipt = Some(env);
        }
        seen = seen.max(r.sequence);
    }
    let first_receipt = first_receipt.expect("a receipt for sequence 1");

    // The very copy of message 1: the same receipt, byte for byte.
    write_body(&mut routine, Body::Message(message(1, "routine"))).await;
    let again = next_matching(&mut rx, |f| match f.body {
        Some(Body::Receipt(env)) => Some(env),
        _ => None,
    })
    .await;
    assert_eq!(again, first_receipt, "the receipt logged for it, read back");

    // Another message under number 2: refused as a conflict.
    write_body(&mut routine, Body::Message(message(2, "rewritten"))).await;
    let nack: NegativeReceipt = next_matching(&mut rx, |f| match f.body {
        Some(Body::NegativeReceipt(env)) => {
            Some(envelope::open(&env, Domain::NegativeReceipt, &wash_key).unwrap())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        (nack.reason, nack.sequence),
        (NackReason::SequenceConflict as i32, 2)
    );

    // A new connection whose hello says it holds no receipt: the answers
    // are resent from the log, from sequence 1, at most a burst.
    conn.close(0u32.into(), b"again");
    let conn = dial(&me, node.quic_addr, b"hotline/1").await.unwrap();
    let mut rx = frames(&conn);
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&frame::encode(&hello(0))).await.unwrap();
    let resent = next_matching(&mut rx, |f| match f.body {
        Some(Body::Receipt(env)) => Some(env),
        _ => None,
    })
    .await;
    assert_eq!(resent, first_receipt);
    assert_eq!(node.handle.inbox().await.unwrap().len() as u64, n);
    node.stop().await.unwrap();
}
