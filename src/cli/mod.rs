//! Command-line parsing and dispatch.

mod audit;
mod commands;
mod drill;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    // 2 is bad usage, returned by clap itself.
    /// No node is running for the directory.
    pub const NOT_RUNNING: u8 = 3;
    /// `send --wait` gave up before the receipt came.
    pub const NO_RECEIPT: u8 = 4;
    /// The node refused the request (unknown peer, oversize, bad field).
    pub const REFUSED: u8 = 5;
    /// A verification failed: `audit verify`, `cross-check`, `verify-proof`,
    /// `verify-evidence`.
    pub const VERIFY_FAILED: u8 = 6;
    /// A drill ran and an expectation failed (`drill run`, `replay`, `fuzz`).
    pub const DRILL_FAILED: u8 = 7;
    /// `node run` stopped on a fault of its own: the protocol core panicked
    /// more than 5 times within an hour (each panic is restarted from the
    /// log first). The log is intact; report the fault, then start again.
    pub const NODE_FAULT: u8 = 8;
    /// Disk full: the node refused a request because the log's file system
    /// is below its free-space reserve, or `node run` could not start or
    /// had to stop because the disk is full. Nothing was half-written.
    pub const DISK_FULL: u8 = 9;
}

const AFTER_HELP: &str = "\
Quick start (two offices on one machine):
  hotline init --office washington --dir /tmp/wash --listen 127.0.0.1:7701
  hotline init --office pyongyang  --dir /tmp/pyong --listen 127.0.0.1:7702
  hotline peer add --dir /tmp/wash  /tmp/pyong/office-card.toml
  hotline peer add --dir /tmp/pyong /tmp/wash/office-card.toml
  hotline node run --dir /tmp/wash      # terminal 1
  hotline node run --dir /tmp/pyong     # terminal 2
  hotline send --dir /tmp/wash --to pyongyang --precedence flash --wait 'Line check'
  hotline inbox --dir /tmp/pyong

Or see it all at once: hotline demo

Exit codes: 0 ok, 1 failure, 2 bad usage, 3 no node running for --dir,
4 send --wait timed out before the receipt, 5 the node refused the request,
6 an audit verification failed, 7 a drill ran but an expectation failed
(or a replay differs, or a fuzzed seed failed), 8 `node run` stopped on a
fault of its own (its core panicked more than 5 times in an hour; the log
is intact), 9 disk full (a request refused below the free-space reserve, or
`node run` could not start or had to stop on a full disk).

Crisis drills: hotline drill list; hotline drill run kaesong-2020";

const DRILL_HELP: &str = "\
Examples:
  hotline drill list                              the bundled drills
  hotline drill run kaesong-2020                  live: real nodes, faulty lines, a report
  hotline drill run kaesong-2020 --sim --seed 7   simulated: the same seed, the same report
  hotline drill fuzz cuban-1962 --seeds 200       many seeds; each failure with its replay command
  hotline drill replay drill-runs/kaesong-2020-live-...   run it again and compare

A run directory holds report.html (a timeline), report.md, report.json, the
scenario and every party's office directory (hotline audit works on them).
The scenario format is in docs/drills.md. Exit codes: 0 every expectation
held, 7 the drill ran and an expectation failed, 1 it could not run.";

/// hotline: signed, receipted messages between two liaison offices over
/// mutual-TLS QUIC, with an append-only log on each side.
#[derive(Parser, Debug)]
#[command(name = "hotline", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an office: keys, private TLS CA, node certificate, config and card.
    Init(InitArgs),
    /// Print this office's public card and its fingerprint.
    Card(DirJson),
    /// Pin or list peer offices.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Run or stop the node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Send a message; prints its id once it is durable.
    Send(SendArgs),
    /// Acknowledge a received message (signed, sent back to its sender).
    Ack {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
        /// The received message's id.
        id: String,
        /// A note for the sender.
        #[arg(long, default_value = "")]
        note: String,
        /// will-comply, cannot-comply, have-complied or information.
        #[arg(long)]
        response: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the alert level of the channel to a peer: normal, elevated or crisis.
    AlertLevel {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
        /// The peer office.
        #[arg(long)]
        peer: String,
        /// normal, elevated or crisis.
        level: String,
        /// Why (the peer is told).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Replace this office's node certificate in band, with the node running.
    ///
    /// Issues a new node certificate from the office's CA key and offers
    /// every peer the card that pins it, signed with this office's message
    /// key; each peer checks it against the card it holds, pins it and
    /// answers. The node keeps its old certificate until every peer has
    /// accepted, then switches; `status` shows who is still to answer.
    /// Both logs record the offer and the acceptance.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// A live stream of events for the duty officer's terminal (Ctrl-C to stop).
    Watch(DirJson),
    /// Messages received: the newest page, shown oldest first. Years of
    /// history stay on disk; page back with --before.
    Inbox(HistoryArgs),
    /// Messages sent and their delivery state: the newest page, shown
    /// oldest first; page back with --before.
    Outbox(HistoryArgs),
    /// Peers, link state, round-trip time, last heard, queue lengths.
    Status(DirJson),
    /// Two offices in this process on loopback: one message of each
    /// precedence, with receipts and timings.
    Demo(DemoArgs),
    /// Measure throughput and latency beside floors measured in the same run.
    Bench(BenchArgs),
    /// Inspect, verify, compare and prove from the tamper-evident log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Crisis drills: run offices through a historical crisis with faults
    /// on the lines, live or simulated, and check what must hold.
    #[command(subcommand, after_help = DRILL_HELP)]
    Drill(drill::DrillCommand),
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Office name: lowercase letters, digits, '-' (e.g. washington).
    #[arg(long)]
    office: String,
    /// Directory to create the office in.
    #[arg(long)]
    dir: PathBuf,
    /// QUIC address the node will listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7701")]
    listen: String,
    /// office, or relay for a protecting power that carries sealed messages.
    #[arg(long, default_value = "office", value_parser = ["office", "relay"])]
    role: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DirJson {
    /// The office directory.
    #[arg(long)]
    dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    /// The office directory.
    #[arg(long)]
    dir: PathBuf,
    /// Print JSON instead of a table (the page, oldest first).
    #[arg(long)]
    json: bool,
    /// Most messages to show (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: u64,
    /// Only messages logged before this log index: the cursor printed
    /// with the previous page.
    #[arg(long, value_name = "LOG_INDEX")]
    before: Option<u64>,
    /// Only messages logged in the last DURATION (for example 90s, 30m,
    /// 6h, 2d).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RotateCommand {
    /// A new node certificate from the same CA (the keys stay).
    Cert(DirJson),
    /// New message, log and seal keys (the certificate stays). The new card
    /// is signed with the old message key; each peer pins it and accepts the
    /// old keys for 24 h after it first sees the new ones in use.
    Keys(RotateKeysArgs),
}

#[derive(Args, Debug)]
struct RotateKeysArgs {
    /// The office directory.
    #[arg(long)]
    dir: PathBuf,
    /// Replace only this key (repeat for two); without it, all three.
    #[arg(long, value_parser = ["message", "log", "seal"])]
    only: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum PeerCommand {
    /// Pin a peer office from its card (compare the fingerprint by voice!).
    Add {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
        /// The peer's office-card.toml.
        card: PathBuf,
        /// Address to dial instead of the card's ("" = never dial, wait for the peer).
        #[arg(long)]
        addr: Option<String>,
        /// Replace a different card already pinned under the same name.
        #[arg(long)]
        replace: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List pinned peers.
    List(DirJson),
    /// Pin a peer's new card that the node holds for confirmation (the
    /// peer's `confirm_card_updates = true` in hotline.toml): read the
    /// fingerprint aloud with the peer first. `hotline status` lists what
    /// is held.
    ConfirmCard {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
        /// The peer office.
        peer: String,
        /// The new card's fingerprint, as read aloud.
        fingerprint: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Run the node in the foreground; Ctrl-C or SIGTERM stops it cleanly.
    Run {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Ask a running node to stop cleanly.
    Stop {
        /// The office directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct SendArgs {
    /// The office directory.
    #[arg(long)]
    dir: PathBuf,
    /// Recipient office.
    #[arg(long)]
    to: String,
    /// flash, immediate, priority or routine.
    #[arg(long, short = 'p', default_value = "routine")]
    precedence: String,
    /// notification, inquiry, response, proposal, call-request or statement.
    #[arg(long, default_value = "notification")]
    kind: String,
    /// Subject line.
    #[arg(long, short = 's', default_value = "")]
    subject: String,
    /// Thread id (free text).
    #[arg(long, default_value = "")]
    thread: String,
    /// Id of the message this replies to.
    #[arg(long, default_value = "")]
    reply_to: String,
    /// Language tag of the body (BCP 47).
    #[arg(long, default_value = "en")]
    language: String,
    /// Mark as drill traffic.
    #[arg(long)]
    exercise: bool,
    /// For replies: will-comply, cannot-comply, have-complied or information.
    #[arg(long)]
    response: Option<String>,
    /// Also send it at once, sealed end to end, through this relay.
    #[arg(long)]
    via: Option<String>,
    /// Wait for the signed delivery receipt and print how long it took.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait (any length: the CLI asks the node again
    /// every 20 s). Without a receipt by then, or if the node goes away
    /// meanwhile, it exits 4; the id is already printed and the message
    /// stays queued.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Read the body from a file ("-" for stdin).
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// The body text.
    #[arg(required_unless_present = "body_file")]
    body: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Keep the two office directories here instead of a temporary folder.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// What to measure: `link` (two nodes: throughput, latency), `audit`
    /// (`audit verify` throughput and peak memory as the log grows, and a
    /// node's start time and memory from its snapshot and from the whole
    /// log; 10^7 entries need about 14 GB free in TMPDIR), `line`
    /// (two node processes beside a raw QUIC stream on an emulated lossy
    /// line: goodput and bytes on the wire), `health` (false DEGRADED and
    /// SILENT alarms on a working lossy line, then how fast cuts are seen)
    /// or `soak` (a long paced run between two node processes: each node's
    /// memory and the throughput every --report-every messages).
    #[arg(default_value = "link", value_parser = ["link", "audit", "line", "health", "soak"])]
    scenario: String,
    /// line, health: `satellite` (100±30 ms, 10 % loss, 1 % duplication,
    /// 5 % reordering) or `narrowband` (64 kbit/s, 300 ms, 2 % loss).
    #[arg(long, default_value = "satellite", value_parser = ["satellite", "narrowband"])]
    profile: String,
    /// health: minutes of watching the working line.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// health: cuts to time after the watch.
    #[arg(long, default_value_t = 5)]
    cuts: usize,
    /// health: both operators' alert level (crisis checks the line every
    /// second).
    #[arg(long, default_value = "crisis", value_parser = ["normal", "elevated", "crisis"])]
    level: String,
    /// line: runs, each measuring hotline and raw QUIC (min/median/max);
    /// audit: node starts of each kind per log size (min/median/max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// line: keep each run's office directories (node.log at debug level,
    /// the logs) under DIR/run-N instead of deleting them; audit: keep each
    /// generated office under DIR/audit-ENTRIES.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// soak: a report row every this many messages.
    #[arg(long, default_value_t = 100_000)]
    report_every: u64,
    /// soak: sending threads, each with its own control connection.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// soak: nobody acknowledges the messages (by default the receiving
    /// officer acknowledges each as it arrives).
    #[arg(long)]
    no_ack: bool,
    /// audit: log sizes in entries, comma-separated (e.g. 100000,1000000,10000000).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    entries: Vec<u64>,
    /// link: messages for the throughput run (default 2000); line: messages
    /// per run (default 600 satellite, 100 narrowband); soak: messages in
    /// all (default 1000000).
    #[arg(long)]
    messages: Option<usize>,
    /// Body size in bytes (default: link 256, line 1500).
    #[arg(long)]
    size: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let node_run = matches!(cli.command, Command::Node(NodeCommand::Run { .. }));
    init_tracing(cli.verbose, node_run);
    match commands::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.code)
        }
    }
}

fn init_tracing(verbose: u8, node_run: bool) {
    let default = match (verbose, node_run) {
        (0, true) => "hotline=info",
        (0, false) => "hotline=warn",
        (1, _) => "hotline=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
