//! `hotline bench line`: hotline beside a raw QUIC stream on the same
//! emulated line.
//!
//! Each run builds a fresh drill proxy line with the profile's faults and
//! measures, one after the other on lines seeded alike:
//!
//! - **hotline**: two node processes of this binary joined only through the
//!   line; `messages` bodies of `size` bytes (alternately PRIORITY and
//!   ROUTINE) submitted through the control API, timed until the sender holds
//!   a verified receipt for every one;
//! - **raw QUIC**: a quinn client and server with the same TLS setup (the
//!   offices' own certificates and pins), one unidirectional stream carrying
//!   the same body bytes, timed until the server has read them all and its
//!   one-byte answer is back.
//!
//! Goodput is body bytes over that time; wire bytes are every UDP payload
//! byte the line passed in both directions over the timed span (for hotline
//! that includes its receipts, line checks and checkpoints). The
//! floor is honest: the raw stream signs, logs and syncs nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::api::SendRequest;
use crate::control::ControlClient;
use crate::core::OutState;
use crate::demo::DemoError;
use crate::drill::proxy::{Faults, Line, Proxy};
use crate::identity::{OfficeDir, OfficeName};
use crate::node::tls;

/// A line to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineProfile {
    /// A satellite hop: 100±30 ms each way, 10 % loss, 1 % duplication,
    /// 5 % reordering.
    Satellite,
    /// A backup circuit: 64 kbit/s, 300 ms each way, 2 % loss.
    Narrowband,
}

impl LineProfile {
    /// Parses `satellite` or `narrowband`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "satellite" => Some(LineProfile::Satellite),
            "narrowband" => Some(LineProfile::Narrowband),
            _ => None,
        }
    }

    /// The proxy's faults for this profile.
    pub fn faults(self) -> Faults {
        match self {
            LineProfile::Satellite => Faults {
                loss: 0.10,
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(30),
                duplicate: 0.01,
                reorder: 0.05,
                bandwidth_kbps: 0,
            },
            LineProfile::Narrowband => Faults {
                loss: 0.02,
                delay: Duration::from_millis(300),
                bandwidth_kbps: 64,
                ..Faults::default()
            },
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LineBenchOptions {
    /// The line.
    pub profile: LineProfile,
    /// Messages per run.
    pub messages: usize,
    /// Body bytes per message.
    pub size: usize,
    /// Runs (each measures both).
    pub runs: usize,
    /// Progress on stderr.
    pub progress: bool,
    /// Keep each run's office directories under `keep/run-N`.
    pub keep: Option<std::path::PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LineRun {
    /// hotline: submit of the first message to the last verified receipt.
    pub hotline_s: f64,
    /// hotline: UDP payload bytes on the line, both ways.
    pub hotline_wire_bytes: u64,
    /// hotline: most copies of one message handed to the transport.
    pub hotline_max_copies: u32,
    /// Raw QUIC: first byte written to the answer back.
    pub raw_s: f64,
    /// Raw QUIC: UDP payload bytes on the line, both ways.
    pub raw_wire_bytes: u64,
    /// hotline goodput ÷ raw goodput.
    pub goodput_ratio: f64,
    /// hotline wire bytes ÷ raw wire bytes.
    pub wire_ratio: f64,
}

/// min / median / max over the runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let at = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        Spread {
            min: at(0),
            median: at(v.len() / 2),
            max: at(v.len().saturating_sub(1)),
        }
    }
}

/// The bench's result.
#[derive(Debug, Clone, Serialize)]
pub struct LineBenchReport {
    /// The line.
    pub profile: LineProfile,
    /// Messages per run.
    pub messages: usize,
    /// Body bytes per message.
    pub size: usize,
    /// Each run.
    pub runs: Vec<LineRun>,
    /// hotline goodput ÷ raw QUIC goodput (target ≥ 0.5).
    pub goodput_ratio: Spread,
    /// hotline wire bytes ÷ raw QUIC wire bytes (target ≤ 1.5).
    pub wire_ratio: Spread,
}

/// Runs the bench; `exe` is the hotline binary to run the nodes with.
pub fn run(opts: &LineBenchOptions, exe: &Path) -> Result<LineBenchReport, DemoError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for r in 0..opts.runs {
        let seed = 1_000 + r as u64;
        if opts.progress {
            eprintln!(
                "run {} of {}: hotline, {} messages of {} B on the {:?} line...",
                r + 1,
                opts.runs,
                opts.messages,
                opts.size,
                opts.profile
            );
        }
        let tmp = tempfile::tempdir()?;
        let dir = match &opts.keep {
            Some(keep) => {
                let dir = keep.join(format!("run-{}", r + 1));
                std::fs::create_dir_all(&dir)?;
                dir
            }
            None => tmp.path().to_path_buf(),
        };
        let (hotline_s, hotline_wire_bytes, hotline_max_copies) =
            hotline_run(&rt, opts, exe, &dir, seed)?;
        if opts.progress {
            eprintln!("  {hotline_s:.1} s, {hotline_wire_bytes} B on the wire; raw QUIC...");
        }
        let (raw_s, raw_wire_bytes) = rt
            .block_on(raw_run(opts, &dir, seed))
            .map_err(|e| DemoError::Timeout(format!("raw QUIC run: {e}")))?;
        if opts.progress {
            eprintln!("  {raw_s:.1} s, {raw_wire_bytes} B on the wire");
        }
        runs.push(LineRun {
            hotline_s,
            hotline_wire_bytes,
            hotline_max_copies,
            raw_s,
            raw_wire_bytes,
            goodput_ratio: raw_s / hotline_s,
            wire_ratio: hotline_wire_bytes as f64 / raw_wire_bytes.max(1) as f64,
        });
    }
    Ok(LineBenchReport {
        profile: opts.profile,
        messages: opts.messages,
        size: opts.size,
        goodput_ratio: Spread::of(runs.iter().map(|r| r.goodput_ratio).collect()),
        wire_ratio: Spread::of(runs.iter().map(|r| r.wire_ratio).collect()),
        runs,
    })
}

/// A node process, killed on drop.
pub(crate) struct NodeProcess(Child);

impl NodeProcess {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops the node as an operator does (SIGTERM), waiting up to a
    /// minute for it to exit; killed if it does not.
    pub fn stop(mut self) -> std::io::Result<()> {
        let pid = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("no such process"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if self.0.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::other(
            "the node did not stop within a minute",
        ))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Two offices that dial each other only through `line`'s proxies.
pub(crate) fn offices(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    line: &Line,
) -> Result<([OfficeDir; 2], [Proxy; 2]), DemoError> {
    let names = ["washington", "pyongyang"];
    let dirs = names.map(|n| OfficeDir::new(root.join(n)));
    let mut listen = Vec::new();
    for (dir, name) in dirs.iter().zip(names) {
        let name = OfficeName::new(name).map_err(|e| DemoError::Timeout(e.to_string()))?;
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        dir.init_with_role(&name, &addr.to_string(), "office")?;
        listen.push(addr);
    }
    let proxies = [
        rt.block_on(Proxy::bind(line.clone()))?,
        rt.block_on(Proxy::bind(line.clone()))?,
    ];
    // proxies[0] leads to pyongyang, proxies[1] to washington.
    proxies[0].set_target(listen[1]);
    proxies[1].set_target(listen[0]);
    dirs[0].add_peer(&dirs[1].card(), Some(proxies[0].addr.to_string()), false)?;
    dirs[1].add_peer(&dirs[0].card(), Some(proxies[1].addr.to_string()), false)?;
    for d in &dirs {
        let mut cfg = d.load_config()?;
        cfg.control = "127.0.0.1:0".into();
        d.save_config(&cfg)?;
    }
    Ok((dirs, proxies))
}

pub(crate) fn wait_until<T>(
    bound: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, DemoError> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t0.elapsed() > bound {
            return Err(DemoError::Timeout(format!("{what}: not within {bound:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hotline_run(
    rt: &tokio::runtime::Runtime,
    opts: &LineBenchOptions,
    exe: &Path,
    root: &Path,
    seed: u64,
) -> Result<(f64, u64, u32), DemoError> {
    let line = Line::new(opts.profile.faults(), seed, false);
    let (dirs, _proxies) = offices(rt, root, &line)?;
    let nodes = start_nodes(exe, &dirs)?;
    let client = wait_resumed(&dirs[0])?;
    let (up0, down0) = line.bytes();
    let body = "x".repeat(opts.size);
    let t0 = Instant::now();
    for i in 0..opts.messages {
        let req = SendRequest {
            to: "pyongyang".into(),
            precedence: Some(if i % 2 == 0 { "priority" } else { "routine" }.into()),
            subject: format!("bench {i}"),
            body: body.clone(),
            ..Default::default()
        };
        client
            .send(&req)
            .map_err(|e| DemoError::Timeout(format!("send: {e}")))?;
    }
    let bound = Duration::from_secs(1_800);
    let max_copies = wait_until(bound, "every receipt", || {
        let outbox = client.outbox().ok()?;
        let done =
            outbox.len() >= opts.messages && outbox.iter().all(|o| o.state == OutState::Delivered);
        done.then(|| outbox.iter().map(|o| o.attempts).max().unwrap_or(0))
    })?;
    let took = t0.elapsed().as_secs_f64();
    let (up1, down1) = line.bytes();
    drop(nodes);
    Ok((took, (up1 - up0) + (down1 - down0), max_copies))
}

/// Starts a node process of `exe` for each office, its stderr in
/// `node.log` in the office directory.
pub(crate) fn start_nodes(exe: &Path, dirs: &[OfficeDir]) -> Result<Vec<NodeProcess>, DemoError> {
    let mut nodes = Vec::new();
    for d in dirs {
        let _ = std::fs::remove_file(d.control_addr());
        let log = std::fs::File::create(d.root().join("node.log"))?;
        let child = Command::new(exe)
            .args(["node", "run", "--dir"])
            .arg(d.root())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        nodes.push(NodeProcess(child));
    }
    Ok(nodes)
}

/// The control client of the node for `dir`, once its line has resumed.
pub(crate) fn wait_resumed(dir: &OfficeDir) -> Result<ControlClient, DemoError> {
    let client = wait_until(Duration::from_secs(60), "node control API", || {
        let c = ControlClient::from_dir(dir).ok()?;
        c.status().ok()?;
        Some(c)
    })?;
    wait_until(Duration::from_secs(120), "the line resumed", || {
        let s = client.status().ok()?;
        s.peers.first().filter(|p| p.resumed).map(|_| ())
    })?;
    Ok(client)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn raw_run(opts: &LineBenchOptions, root: &Path, seed: u64) -> Result<(f64, u64), BoxError> {
    let line = Line::new(opts.profile.faults(), seed, false);
    let a = OfficeDir::new(root.join("washington")).load()?;
    let b = OfficeDir::new(root.join("pyongyang")).load()?;
    let pin_b = tls::Pin::of(&a.peers[0])?;
    let pin_a = tls::Pin::of(&b.peers[0])?;
    let server_tls = tls::server_config(a.node_cert.clone(), a.node_key.clone_key(), &[pin_b])?;
    let server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    let server_ep = quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?;
    let proxy = Proxy::bind(line.clone()).await?;
    proxy.set_target(server_ep.local_addr()?);
    let total = opts.messages.saturating_mul(opts.size);
    let accept_ep = server_ep.clone();
    // The count read goes back on a channel as soon as it is known: the
    // server then holds the connection open until the client closes it (a
    // lost close frame costs the idle timeout, which must not count).
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let server_task = tokio::spawn(async move {
        let conn = accept_ep.accept().await?.await.ok()?;
        let mut recv = conn.accept_uni().await.ok()?;
        let data = recv.read_to_end(total + 1).await.ok()?;
        let _ = read_tx.send(data.len());
        let mut back = conn.open_uni().await.ok()?;
        back.write_all(&[1]).await.ok()?;
        back.finish().ok()?;
        conn.closed().await;
        Some(())
    });
    let client_tls = tls::client_config(b.node_cert.clone(), b.node_key.clone_key(), &pin_a)?;
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    let mut client_ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client_ep.set_default_client_config(client);
    let conn = client_ep
        .connect(proxy.addr, &a.config.office.server_name())?
        .await?;
    let (up0, down0) = line.bytes();
    let t0 = Instant::now();
    let mut send = conn.open_uni().await?;
    let chunk = vec![0x42u8; opts.size];
    for _ in 0..opts.messages {
        send.write_all(&chunk).await?;
    }
    send.finish()?;
    let mut answer = conn.accept_uni().await?;
    answer.read_to_end(8).await?;
    let took = t0.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    let got = tokio::time::timeout(Duration::from_secs(10), read_rx)
        .await
        .ok()
        .and_then(|r| r.ok());
    server_task.abort();
    if got != Some(total) {
        return Err(format!("the server read {got:?} of {total} bytes").into());
    }
    let (up, down) = line.bytes();
    server_ep.close(0u32.into(), b"done");
    Ok((took, (up - up0) + (down - down0)))
}

/// The binary to run nodes with: this one.
pub fn current_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}
