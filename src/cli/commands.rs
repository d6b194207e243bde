//! One function per command; each calls the library and renders.

use std::io::Read;

use anyhow::{anyhow, Context};

use super::{exit, render, Command, NodeCommand, PeerCommand};
use hotline::audit::LogReader;
use hotline::control::{ClientError, ControlClient, SendRequest};
use hotline::history::views::Page;
use hotline::history::History;
use hotline::identity::{OfficeCard, OfficeDir, OfficeName};
use hotline::node::{self, NodeOptions};

/// A failure with the exit code it maps to.
pub struct Failure {
    /// Exit code.
    pub code: u8,
    err: anyhow::Error,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.err)
        } else {
            write!(f, "{}", self.err)
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: exit::FAILURE,
            err: e.into(),
        }
    }
}

fn client_failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::NotRunning(_) | ClientError::StaleAddress(_) => exit::NOT_RUNNING,
        ClientError::Api { status: 507, .. } => exit::DISK_FULL,
        ClientError::Api { status, .. } if (400..500).contains(status) => exit::REFUSED,
        ClientError::Api { status: 503, .. } => exit::REFUSED,
        _ => exit::FAILURE,
    };
    Failure {
        code,
        err: e.into(),
    }
}

pub(super) type Res = Result<u8, Failure>;

pub(super) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn run(cmd: Command) -> Res {
    match cmd {
        Command::Init(a) => init(a),
        Command::Card(a) => card(&a.dir, a.json),
        Command::Peer(PeerCommand::Add {
            dir,
            card,
            addr,
            replace,
            json,
        }) => peer_add(&dir, &card, addr, replace, json),
        Command::Peer(PeerCommand::List(a)) => peer_list(&a.dir, a.json),
        Command::Peer(PeerCommand::ConfirmCard {
            dir,
            peer,
            fingerprint,
            json,
        }) => confirm_card(&dir, &peer, &fingerprint, json),
        Command::Node(NodeCommand::Run { dir }) => node_run(&dir),
        Command::Node(NodeCommand::Stop { dir }) => node_stop(&dir),
        Command::Send(a) => send(a),
        Command::Ack {
            dir,
            id,
            note,
            response,
            json,
        } => ack(&dir, id, note, response, json),
        Command::AlertLevel {
            dir,
            peer,
            level,
            reason,
        } => alert_level(&dir, peer, level, reason),
        Command::Rotate(super::RotateCommand::Cert(a)) => rotate(&a.dir, a.json, None),
        Command::Rotate(super::RotateCommand::Keys(a)) => rotate(&a.dir, a.json, Some(&a.only)),
        Command::Watch(a) => watch(&a.dir, a.json),
        Command::Inbox(a) => inbox(&a),
        Command::Outbox(a) => outbox(&a),
        Command::Status(a) => status(&a.dir, a.json),
        Command::Demo(a) => demo(a),
        Command::Bench(a) => bench(a),
        Command::Audit(a) => super::audit::run(a),
        Command::Drill(d) => super::drill::run(d),
    }
}

fn init(a: super::InitArgs) -> Res {
    let name = OfficeName::new(a.office.clone())?;
    let dir = OfficeDir::new(&a.dir);
    let card = dir.init_with_role(&name, &a.listen, &a.role)?;
    if a.json {
        print_json(&serde_json::json!({
            "office": card.office, "dir": a.dir, "card": dir.card(), "fingerprint": card.fingerprint,
        }));
    } else {
        println!("created office {} in {}", card.office, a.dir.display());
        println!(
            "  card:        {}  (public: give it to the peer office)",
            dir.card().display()
        );
        println!(
            "  fingerprint: {}  (read it aloud to the peer to confirm the card)",
            card.fingerprint
        );
        println!(
            "next: hotline peer add --dir {} PEER_CARD.toml",
            a.dir.display()
        );
    }
    Ok(exit::OK)
}

fn card(dir: &std::path::Path, json: bool) -> Res {
    let card = OfficeDir::new(dir).load_card()?;
    if json {
        print_json(&card);
    } else {
        print!("{}", card.to_toml());
        eprintln!("fingerprint: {}", card.fingerprint);
    }
    Ok(exit::OK)
}

fn peer_add(
    dir: &std::path::Path,
    card: &std::path::Path,
    addr: Option<String>,
    replace: bool,
    json: bool,
) -> Res {
    let od = OfficeDir::new(dir);
    let (card, changed) = od.add_peer(card, addr, replace)?;
    if json {
        print_json(&serde_json::json!({
            "peer": card.office, "fingerprint": card.fingerprint, "changed": changed,
        }));
    } else if changed {
        println!("pinned {} (fingerprint {})", card.office, card.fingerprint);
        println!(
            "confirm this fingerprint with {} by voice before trusting the line",
            card.office
        );
        println!("a running node picks up new peers when restarted");
    } else {
        println!(
            "{} is already pinned with this card (fingerprint {})",
            card.office, card.fingerprint
        );
    }
    Ok(exit::OK)
}

fn peer_list(dir: &std::path::Path, json: bool) -> Res {
    let od = OfficeDir::new(dir);
    let config = od.load_config()?;
    let mut rows = Vec::new();
    for (name, pc) in &config.peers {
        let card = OfficeCard::load(&od.root().join(&pc.card))?;
        let addr = match &pc.addr {
            Some(a) if a.is_empty() => "(never dial)".to_string(),
            Some(a) => a.clone(),
            None => card.address.clone(),
        };
        rows.push(
            serde_json::json!({"office": name, "dial": addr, "fingerprint": card.fingerprint}),
        );
    }
    if json {
        print_json(&rows);
    } else {
        render::table(
            &["PEER", "DIAL", "FINGERPRINT"],
            rows.iter()
                .map(|r| {
                    ["office", "dial", "fingerprint"]
                        .iter()
                        .map(|k| r[k].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .collect(),
        );
    }
    Ok(exit::OK)
}

fn node_run(dir: &std::path::Path) -> Res {
    let office = OfficeDir::new(dir).load()?;
    let rt = runtime();
    rt.block_on(async move {
        let node = match node::start(office, NodeOptions { control_api: true }).await {
            Ok(n) => n,
            Err(e @ node::NodeError::Log(hotline::audit::LogError::DiskFull { .. })) => {
                eprintln!("{e}");
                return Ok(exit::DISK_FULL);
            }
            Err(e) => return Err(e.into()),
        };
        eprintln!(
            "{} running: QUIC on {}, control API on {} (Ctrl-C to stop)",
            node.office(),
            node.quic_addr,
            node.control_addr.map(|a| a.to_string()).unwrap_or_default()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = node.stop_requested.clone();
        let fatal = async {
            while !node.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        let why = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = term.recv() => "SIGTERM",
            _ = stop.notified() => "stop requested",
            _ = fatal => "fatal error",
        };
        tracing::info!("stopping ({why})");
        let result = if why == "fatal error" {
            node.finish().await
        } else {
            node.stop().await
        };
        match result {
            Err(e @ node::NodeError::CorePanicked { .. }) => {
                eprintln!("node stopped: {e}");
                return Ok(exit::NODE_FAULT);
            }
            Err(e @ node::NodeError::Log(hotline::audit::LogError::DiskFull { .. })) => {
                eprintln!("node stopped: {e}");
                return Ok(exit::DISK_FULL);
            }
            r => r.map_err(|e| anyhow!(e))?,
        }
        eprintln!("stopped cleanly");
        Ok::<_, Failure>(exit::OK)
    })
}

fn node_stop(dir: &std::path::Path) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    c.shutdown().map_err(client_failure)?;
    println!("stop requested");
    Ok(exit::OK)
}

fn send(a: super::SendArgs) -> Res {
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => b.clone(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let req = SendRequest {
        to: a.to.clone(),
        precedence: Some(a.precedence.clone()),
        kind: Some(a.kind.clone()),
        subject: a.subject.clone(),
        body,
        thread: a.thread.clone(),
        reply_to: a.reply_to.clone(),
        language: a.language.clone(),
        exercise: a.exercise,
        response: a.response.clone(),
        via: a.via.clone(),
        // The node answers once the message is durable; the receipt is
        // waited for below, in bounded requests, so that no HTTP timeout
        // can lose the id of a message the node already holds.
        wait: false,
        wait_ms: None,
    };
    let c = ControlClient::from_dir(&OfficeDir::new(&a.dir)).map_err(client_failure)?;
    let mut resp = c.send(&req).map_err(client_failure)?;
    if !a.json {
        println!("{}", resp.id);
        eprintln!(
            "accepted (durable) as sequence {} in {}",
            resp.sequence,
            render::micros(resp.accepted_us)
        );
    }
    let mut lost = None;
    if a.wait {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.timeout);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let chunk = left.min(std::time::Duration::from_secs(20));
            match c.delivery(&resp.id, chunk.as_millis() as u64) {
                Ok(Some(d)) => {
                    resp.delivered = Some(d);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    lost = Some(e);
                    break;
                }
            }
        }
    }
    if a.json {
        print_json(&resp);
    } else if let Some(d) = &resp.delivered {
        eprintln!(
            "signed receipt from {} in {} (their log entry {})",
            a.to,
            d.elapsed_us
                .map(render::micros)
                .unwrap_or_else(|| "?".into()),
            d.receiver_log_index
        );
    }
    if let Some(e) = lost {
        eprintln!(
            "lost contact with the node while waiting for the receipt ({e}); message {} is durable \
             and will be retransmitted: do not send it again (check `hotline outbox --dir {}`)",
            resp.id,
            a.dir.display()
        );
        return Ok(exit::NO_RECEIPT);
    }
    if a.wait && resp.delivered.is_none() {
        eprintln!(
            "no receipt for {} within {} s; the message stays queued and will be retransmitted (check `hotline status --dir {}`)",
            resp.id,
            a.timeout,
            a.dir.display()
        );
        return Ok(exit::NO_RECEIPT);
    }
    Ok(exit::OK)
}

fn ack(
    dir: &std::path::Path,
    id: String,
    note: String,
    response: Option<String>,
    json: bool,
) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    let r = c
        .ack(&hotline::control::AckRequest {
            id: id.clone(),
            note,
            response,
        })
        .map_err(client_failure)?;
    if json {
        print_json(&r);
    } else {
        println!("{}", r.id);
        eprintln!(
            "acknowledged {id}; the acknowledgement is durable and on its way (sequence {})",
            r.sequence
        );
    }
    Ok(exit::OK)
}

fn alert_level(dir: &std::path::Path, peer: String, level: String, reason: String) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    c.alert_level(&hotline::control::AlertLevelRequest {
        peer: peer.clone(),
        level: level.clone(),
        reason,
    })
    .map_err(client_failure)?;
    println!(
        "alert level for {peer} set to {}; {peer} is told",
        level.to_uppercase()
    );
    Ok(exit::OK)
}

fn confirm_card(dir: &std::path::Path, peer: &str, fingerprint: &str, json: bool) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    let v = c
        .confirm_card(&hotline::control::ConfirmCardRequest {
            peer: peer.into(),
            fingerprint: fingerprint.into(),
        })
        .map_err(client_failure)?;
    if json {
        print_json(&v);
    } else {
        println!("card {fingerprint} of {peer} pinned; {peer} is told");
    }
    Ok(exit::OK)
}

fn rotate(dir: &std::path::Path, json: bool, keys: Option<&[String]>) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    let (r, what) = match keys {
        Some(k) => (c.rotate_keys(k), "keys"),
        None => (c.rotate_cert(), "certificate"),
    };
    let r = r.map_err(client_failure)?;
    if json {
        print_json(&r);
    } else if r.waiting.is_empty() {
        println!(
            "card {} replaces {}; the node now uses the new {what}",
            r.fingerprint, r.old_fingerprint
        );
    } else {
        println!(
            "card {} (replacing {}) offered to {}; the node switches to the new {what} once each has accepted (hotline status shows who is left)",
            r.fingerprint,
            r.old_fingerprint,
            r.waiting.join(", ")
        );
    }
    Ok(exit::OK)
}

fn watch(dir: &std::path::Path, json: bool) -> Res {
    let c = ControlClient::from_dir(&OfficeDir::new(dir)).map_err(client_failure)?;
    if !json {
        eprintln!("watching {} (Ctrl-C to stop)", dir.display());
    }
    let mut after = 0;
    loop {
        let events = c.events(after, 25_000).map_err(client_failure)?;
        for e in events {
            after = after.max(e.seq);
            if json {
                println!("{}", serde_json::to_string(&e).expect("serializable"));
            } else {
                render::watch_event(&e);
            }
        }
    }
}

/// Runs `online` against the running node, or `offline` on the log when no
/// node runs.
fn online_or_log<T>(
    dir: &std::path::Path,
    online: impl FnOnce(&ControlClient) -> Result<T, ClientError>,
    offline: impl FnOnce(&(hotline::core::Core, History, LogReader)) -> Result<T, node::NodeError>,
) -> Result<T, Failure> {
    let od = OfficeDir::new(dir);
    match ControlClient::from_dir(&od).and_then(|c| online(&c)) {
        Ok(v) => Ok(v),
        Err(ClientError::NotRunning(_) | ClientError::StaleAddress(_)) => {
            let office = od.load()?;
            let loaded = node::offline::load_with_history(&office)?;
            eprintln!("(no node running: read from the log)");
            Ok(offline(&loaded)?)
        }
        Err(e) => Err(client_failure(e)),
    }
}

/// The page a history command asks for.
fn history_page(a: &super::HistoryArgs) -> Result<Page, Failure> {
    let since_unix_ms = match &a.since {
        None => None,
        Some(s) => {
            let ago = hotline::drill::duration::parse(s).map_err(|e| Failure {
                code: 2, // bad usage, as clap's own
                err: anyhow!(
                    "--since {}: {e} (give a duration such as 30m, 6h or 2d)",
                    hotline::text::quote(s, 40)
                ),
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            Some(now.saturating_sub(ago))
        }
    };
    Ok(Page {
        limit: a.limit as usize,
        before: a.before,
        since_unix_ms,
    })
}

/// Tells where the next (older) page starts, when there may be one.
fn more_hint(shown: usize, page: &Page, oldest: Option<u64>) {
    if let (true, Some(i)) = (shown >= page.limit && page.since_unix_ms.is_none(), oldest) {
        eprintln!("(newest {shown} shown; older ones: --before {i})");
    }
}

fn inbox(a: &super::HistoryArgs) -> Res {
    let page = history_page(a)?;
    let mut items = online_or_log(
        &a.dir,
        |c| c.inbox_page(&page),
        |l| node::offline::inbox(l, page),
    )?;
    items.reverse();
    if a.json {
        print_json(&items);
    } else {
        render::inbox(&items);
    }
    more_hint(items.len(), &page, items.first().map(|e| e.log_index));
    Ok(exit::OK)
}

fn outbox(a: &super::HistoryArgs) -> Res {
    let page = history_page(a)?;
    let mut items = online_or_log(
        &a.dir,
        |c| c.outbox_page(&page),
        |l| node::offline::outbox(l, page),
    )?;
    items.reverse();
    if a.json {
        print_json(&items);
    } else {
        render::outbox(&items);
    }
    more_hint(items.len(), &page, items.first().map(|e| e.log_index));
    Ok(exit::OK)
}

fn status(dir: &std::path::Path, json: bool) -> Res {
    let od = OfficeDir::new(dir);
    match ControlClient::from_dir(&od).and_then(|c| c.status()) {
        Ok(s) => {
            if json {
                print_json(&s);
            } else {
                render::status(&s);
            }
            Ok(exit::OK)
        }
        Err(ClientError::NotRunning(d) | ClientError::StaleAddress(d)) => {
            if json {
                print_json(&serde_json::json!({"running": false, "dir": d}));
            } else {
                println!("no node running for {d}; start it with `hotline node run --dir {d}`");
            }
            Ok(exit::NOT_RUNNING)
        }
        Err(e) => Err(client_failure(e)),
    }
}

fn demo(a: super::DemoArgs) -> Res {
    let rt = runtime();
    let report = rt.block_on(hotline::demo::run(a.keep.clone(), !a.json))?;
    if a.json {
        print_json(&report);
    }
    Ok(exit::OK)
}

fn bench(a: super::BenchArgs) -> Res {
    if a.scenario == "audit" {
        let report = hotline::bench_audit::run(&a.entries, a.runs, a.keep.as_deref(), !a.json)?;
        if a.json {
            print_json(&report);
        } else {
            render::bench_audit(&report);
        }
        return Ok(exit::OK);
    }
    if a.scenario == "health" {
        use hotline::bench_health::HealthBenchOptions;
        use hotline::bench_line::LineProfile;
        let opts = HealthBenchOptions {
            profile: LineProfile::parse(&a.profile).unwrap_or(LineProfile::Satellite),
            minutes: a.minutes,
            cuts: a.cuts,
            level: a.level.clone(),
            progress: !a.json,
        };
        let report = hotline::bench_health::run(&opts, &hotline::bench_line::current_exe()?)?;
        if a.json {
            print_json(&report);
        } else {
            render::bench_health(&report);
        }
        return Ok(exit::OK);
    }
    if a.scenario == "soak" {
        let opts = hotline::bench_soak::SoakOptions {
            messages: a.messages.map_or(1_000_000, |m| m as u64),
            size: a.size.unwrap_or(256),
            report_every: a.report_every.max(1),
            senders: a.senders.max(1),
            acknowledge: !a.no_ack,
            progress: !a.json,
        };
        let report = hotline::bench_soak::run(&opts, &hotline::bench_line::current_exe()?)?;
        if a.json {
            print_json(&report);
        } else {
            render::bench_soak(&report);
        }
        return Ok(exit::OK);
    }
    if a.scenario == "line" {
        use hotline::bench_line::{LineBenchOptions, LineProfile};
        let profile = LineProfile::parse(&a.profile).unwrap_or(LineProfile::Satellite);
        let messages = a.messages.unwrap_or(match profile {
            LineProfile::Satellite => 600,
            LineProfile::Narrowband => 100,
        });
        let opts = LineBenchOptions {
            profile,
            messages,
            size: a.size.unwrap_or(1_500),
            runs: a.runs.max(1),
            progress: !a.json,
            keep: a.keep.clone(),
        };
        let report = hotline::bench_line::run(&opts, &hotline::bench_line::current_exe()?)?;
        if a.json {
            print_json(&report);
        } else {
            render::bench_line(&report);
        }
        return Ok(exit::OK);
    }
    let rt = runtime();
    let report = rt.block_on(hotline::bench::run(hotline::bench::BenchOptions {
        messages: a.messages.unwrap_or(2_000),
        size: a.size.unwrap_or(256),
        progress: !a.json,
    }))?;
    if a.json {
        print_json(&report);
    } else {
        render::bench(&report);
    }
    Ok(exit::OK)
}
