//! `hotline demo`: two offices in one process on loopback, one message of
//! each precedence with receipts and timings, then a reply.
//!
//! Also home of [`start_pair`], which the bench and tests use to get two
//! connected in-process nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::control::api::{InboxEntry, SendRequest, SendResponse};
use crate::identity::{OfficeDir, OfficeName};
use crate::node::{self, NodeOptions, RunningNode};

/// Errors from the demo and the pair helper.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up an office.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Running a node.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// A send failed.
    #[error("send failed: {0}")]
    Send(#[from] node::SendError),
    /// The line did not come up or a receipt did not arrive.
    #[error("{0}")]
    Timeout(String),
    /// Files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Creates offices `a` and `b` under `root`, pins each to the other, starts
/// both on loopback ports chosen by the OS (`b` dials `a`), and waits until
/// the line is up.
pub async fn start_pair(
    root: &Path,
    a: &str,
    b: &str,
) -> Result<(RunningNode, RunningNode), DemoError> {
    start_pair_with(root, a, b, |_| {}).await
}

/// As [`start_pair`], with `configure` applied to both offices' config
/// before they start (tests use it to shorten deadlines).
pub async fn start_pair_with(
    root: &Path,
    a: &str,
    b: &str,
    configure: impl Fn(&mut crate::identity::Config),
) -> Result<(RunningNode, RunningNode), DemoError> {
    let (da, db) = (OfficeDir::new(root.join(a)), OfficeDir::new(root.join(b)));
    let (na, nb) = (
        OfficeName::new(a).map_err(|e| DemoError::Timeout(e.to_string()))?,
        OfficeName::new(b).map_err(|e| DemoError::Timeout(e.to_string()))?,
    );
    da.init(&na, "127.0.0.1:0")?;
    db.init(&nb, "127.0.0.1:0")?;
    da.add_peer(&db.card(), Some(String::new()), false)?;
    db.add_peer(&da.card(), Some(String::new()), false)?;
    for d in [&da, &db] {
        let mut cfg = d.load_config()?;
        configure(&mut cfg);
        d.save_config(&cfg)?;
    }
    let node_a = node::start(da.load()?, NodeOptions { control_api: true }).await?;
    db.add_peer(&da.card(), Some(node_a.quic_addr.to_string()), false)?;
    let node_b = node::start(db.load()?, NodeOptions { control_api: true }).await?;
    wait_up(&node_a, b).await?;
    wait_up(&node_b, a).await?;
    Ok((node_a, node_b))
}

/// Waits (up to 20 s) until `node` has a resumed line to `peer`.
pub async fn wait_up(node: &RunningNode, peer: &str) -> Result<(), DemoError> {
    for _ in 0..400 {
        if let Some(s) = node.handle.status().await {
            if s.peers
                .iter()
                .any(|p| p.office == peer && p.link == "up" && p.resumed)
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::Timeout(format!(
        "the line from {} to {peer} did not come up within 20 s",
        node.office()
    )))
}

/// One line of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct DemoStep {
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Precedence.
    pub precedence: String,
    /// Subject.
    pub subject: String,
    /// What the sender got back.
    pub response: SendResponse,
}

/// What the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Where the office directories are (kept only with `--keep`).
    pub dirs: Option<PathBuf>,
    /// Messages sent, in order.
    pub steps: Vec<DemoStep>,
    /// Pyongyang's inbox at the end.
    pub pyongyang_inbox: Vec<InboxEntry>,
    /// Washington's inbox at the end.
    pub washington_inbox: Vec<InboxEntry>,
}

/// Runs the demo; with `narrate`, prints the transcript as it goes.
pub async fn run(keep: Option<PathBuf>, narrate: bool) -> Result<DemoReport, DemoError> {
    let tmp = tempfile::tempdir()?;
    let root = match &keep {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            p.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let say = |s: String| {
        if narrate {
            println!("{s}");
        }
    };
    say(
        "Creating two offices, each with its own keys and private TLS CA, and exchanging cards..."
            .into(),
    );
    let (wash, pyong) = start_pair(&root, "washington", "pyongyang").await?;
    say(format!(
        "washington listens on {}, pyongyang on {}; mutual-TLS QUIC line is up.\n",
        wash.quic_addr, pyong.quic_addr
    ));
    let script: [(&RunningNode, &str, &str, &str, &str); 5] = [
        (
            &wash,
            "pyongyang",
            "flash",
            "Launch detected",
            "Unidentified launch detected 03:12Z. Request immediate clarification.",
        ),
        (
            &wash,
            "pyongyang",
            "immediate",
            "Request for call",
            "Request a call between duty officers within the hour.",
        ),
        (
            &wash,
            "pyongyang",
            "priority",
            "Remains recovery",
            "Proposal to resume joint recovery of war remains in spring.",
        ),
        (
            &wash,
            "pyongyang",
            "routine",
            "Line check",
            "Routine line check, nothing to report.",
        ),
        (
            &pyong,
            "washington",
            "flash",
            "Re: Launch detected",
            "Scheduled satellite launch; notice was filed. No hostile intent.",
        ),
    ];
    let mut steps = Vec::new();
    let mut first_id = String::new();
    for (node, to, precedence, subject, body) in script {
        let reply_to = if node.office().as_str() == "pyongyang" {
            first_id.clone()
        } else {
            String::new()
        };
        let resp = node
            .handle
            .send(SendRequest {
                to: to.into(),
                precedence: Some(precedence.into()),
                kind: Some(
                    if reply_to.is_empty() {
                        "notification"
                    } else {
                        "response"
                    }
                    .into(),
                ),
                subject: subject.into(),
                body: body.into(),
                reply_to,
                wait: true,
                wait_ms: Some(10_000),
                ..Default::default()
            })
            .await?;
        if first_id.is_empty() {
            first_id = resp.id.clone();
        }
        let d = resp
            .delivered
            .clone()
            .ok_or_else(|| DemoError::Timeout(format!("no receipt for {subject:?} within 10 s")))?;
        say(format!(
            "{:<9} {} -> {}  {:?}\n          id {}  seq {}  durable in {:.2} ms  signed receipt in {:.2} ms (their log entry {})",
            precedence.to_uppercase(),
            node.office(),
            to,
            subject,
            resp.id,
            resp.sequence,
            resp.accepted_us as f64 / 1e3,
            d.elapsed_us.unwrap_or(0) as f64 / 1e3,
            d.receiver_log_index
        ));
        steps.push(DemoStep {
            from: node.office().to_string(),
            to: to.into(),
            precedence: precedence.into(),
            subject: subject.into(),
            response: resp,
        });
    }
    let pyongyang_inbox = pyong.handle.inbox().await.unwrap_or_default();
    let washington_inbox = wash.handle.inbox().await.unwrap_or_default();
    say(format!(
        "\npyongyang's inbox holds {} messages, washington's {}; every one has a verified signed receipt at its sender.",
        pyongyang_inbox.len(),
        washington_inbox.len()
    ));
    // Stop the dialing side first so it does not redial a stopping peer.
    pyong.stop().await?;
    wash.stop().await?;
    match &keep {
        Some(p) => say(format!(
            "Office directories kept in {}; try `hotline inbox --dir {}/pyongyang`.",
            p.display(),
            p.display()
        )),
        None => say("Both logs were in a temporary folder (use --keep DIR to keep them).".into()),
    }
    Ok(DemoReport {
        dirs: keep,
        steps,
        pyongyang_inbox,
        washington_inbox,
    })
}
