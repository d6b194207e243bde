//! The actor that owns the core and the log.
//!
//! One task, one owner: every input (operator commands, frames, link
//! changes, timers) is applied to the [`Core`] in arrival order. After each
//! round of inputs the actor makes the core's log entries durable with one
//! `fdatasync` (group commit: inputs that arrive during the sync form the
//! next round), and only then sends frames and answers waiters.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use quinn::VarInt;
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::Clock;
use super::link::{self, close_code, LinkHandle};
use super::refusals::{Attempt, RefusalBook, Say};
use super::spool;
use super::NodeError;
use crate::audit::LogReader;
use crate::audit::LogWriter;
use crate::control::api::{self, Delivery, InboxEntry, OutboxEntry, PeerStatus, StatusResponse};
use crate::control::WatchEvent;
use crate::core::{Core, CoreEvent, SubmitError};
use crate::history::views::{self, Page};
use crate::history::History;
use crate::identity::rotation;
use crate::identity::OfficeName;
use crate::wire::proto::{frame::Body, Frame, Precedence};
use crate::wire::{frame, MessageId};
use prost::Message as _;

/// Inputs per round before the actor commits (bounds latency under load).
pub const MAX_ROUND: usize = 1024;
/// Connections that come up within this long of each other are a dial
/// race, settled by name; a later one means the peer reconnected. On a
/// long line the window grows with the round trip (see
/// [`dial_race_window`]).
pub const DIAL_RACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest a dial race can last, however slow the line looks (the
/// peer's acknowledgements set the round-trip estimate).
pub const MAX_DIAL_RACE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The dial-race window on a line with round trip `rtt`: two handshakes
/// dialed at once both complete within a few round trips (more with a
/// lost packet), so eight of them, at least [`DIAL_RACE_WINDOW`] and at
/// most [`MAX_DIAL_RACE_WINDOW`].
pub fn dial_race_window(rtt: std::time::Duration) -> std::time::Duration {
    rtt.saturating_mul(8)
        .clamp(DIAL_RACE_WINDOW, MAX_DIAL_RACE_WINDOW)
}
/// Events kept for `watch`.
pub const MAX_EVENTS: usize = 4096;
/// Core restarts allowed within [`CORE_RESTART_WINDOW`]; one more stops the
/// node (a fault that recurs at once is not cured by restarting).
pub const MAX_CORE_RESTARTS: usize = 5;
/// The window over which core restarts are counted.
pub const CORE_RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// Rebuilds the core from the durable log and starts it (`node::start`
/// makes it: the same replay as at start).
pub type Reload = Box<dyn FnMut(crate::core::Now) -> Result<Core, NodeError> + Send>;

/// Deliveries whose latency the node remembers for its views.
const ELAPSED_KEPT: usize = 4096;

/// How long a stopping node waits for peers to cosign its final checkpoint.
pub const FINAL_COSIGN_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Why a send was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The request itself is wrong (names the field).
    #[error("{0}")]
    BadRequest(String),
    /// The core refused the draft.
    #[error(transparent)]
    Refused(#[from] SubmitError),
    /// The node is stopping.
    #[error("the node is shutting down")]
    Stopping,
    /// The protocol core failed while this request was in its round and was
    /// rebuilt from the log; the request was not made durable.
    #[error("the node's protocol core failed and was restarted from its log; this request was not recorded: send it again")]
    Lost,
    /// It conflicts with work under way (a rotation still waiting).
    #[error("{0}")]
    Conflict(String),
    /// The node could not do it (names the file or step).
    #[error("{0}")]
    Failed(String),
    /// The log's file system is below the free-space reserve, or full.
    #[error("{0}")]
    DiskFull(String),
}

/// Queries answered from the actor's state.
#[derive(Debug)]
pub enum Query {
    /// A page of the inbox.
    Inbox(Page, oneshot::Sender<Result<Vec<InboxEntry>, String>>),
    /// A page of the outbox.
    Outbox(Page, oneshot::Sender<Result<Vec<OutboxEntry>, String>>),
    /// Status.
    Status(oneshot::Sender<StatusResponse>),
}

/// Everything the actor reacts to.
#[derive(Debug)]
pub enum Input {
    /// Submit a message; answered once durable.
    Submit {
        /// The request.
        req: api::SendRequest,
        /// When the request arrived.
        t0: Instant,
        /// Answer.
        reply: oneshot::Sender<Result<api::SendResponse, SendError>>,
    },
    /// Answer when `id` is delivered.
    WaitDelivered {
        /// Message.
        id: MessageId,
        /// Answer.
        reply: oneshot::Sender<Delivery>,
    },
    /// A read.
    Query(Query),
    /// A connection to `peer` is authenticated and ready.
    LinkUp {
        /// Peer.
        peer: OfficeName,
        /// The connection.
        link: LinkHandle,
    },
    /// A connection closed.
    LinkDown {
        /// Peer.
        peer: OfficeName,
        /// Which connection.
        conn_id: u64,
        /// Why.
        reason: String,
    },
    /// A stream writer of connection `conn_id` drained its queue: messages
    /// held in the link's overflow may go.
    LinkRoom {
        /// Peer.
        peer: OfficeName,
        /// Which connection.
        conn_id: u64,
    },
    /// A frame arrived.
    Frame {
        /// Peer.
        peer: OfficeName,
        /// Which connection.
        conn_id: u64,
        /// The frame.
        frame: Frame,
    },
    /// A peer sent bytes that are no frame (the connection is closed).
    BadFrame {
        /// Peer.
        peer: OfficeName,
        /// What was wrong.
        detail: String,
    },
    /// A connection attempt was refused.
    Refused(Attempt),
    /// A peer whose old certificate we still trust presented the one on
    /// its new card.
    NewCertSeen {
        /// Peer.
        peer: OfficeName,
    },
    /// Rotate the node certificate or the keys (docs/protocol.md §8d).
    Rotate {
        /// Which.
        what: rotation::Rotation,
        /// Answer once the offer is made.
        reply: oneshot::Sender<Result<api::RotateResponse, SendError>>,
    },
    /// Acknowledge a received message.
    Ack {
        /// The request.
        req: api::AckRequest,
        /// Answer (once durable).
        reply: oneshot::Sender<Result<api::SendResponse, SendError>>,
    },
    /// Set a channel's alert level.
    AlertLevel {
        /// The request.
        req: api::AlertLevelRequest,
        /// Answer.
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// Confirm a peer's held card update.
    ConfirmCard {
        /// The request.
        req: api::ConfirmCardRequest,
        /// Answer.
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// Events after `after`; answered when there is at least one.
    Events {
        /// Last sequence seen.
        after: u64,
        /// Answer.
        reply: oneshot::Sender<Vec<WatchEvent>>,
    },
    /// Stop: log the stop, close connections, return.
    Shutdown(oneshot::Sender<()>),
    /// Fault injection (tests only, never reachable from the network or the
    /// control API): panic inside the guarded round, as a core bug would.
    #[doc(hidden)]
    InjectPanic(String),
}

/// The actor's two input queues. Urgent: control frames, FLASH and
/// IMMEDIATE messages and submissions, operator commands. Normal: PRIORITY
/// and ROUTINE messages and submissions. The actor always serves urgent
/// inputs first and takes only a bounded amount of normal work per round,
/// so a FLASH message never waits behind a backlog of ROUTINE traffic at
/// either end of the line.
#[derive(Debug, Clone)]
pub struct ActorTx {
    urgent: mpsc::Sender<Input>,
    normal: mpsc::Sender<Input>,
}

/// Capacity of the urgent queue.
pub const URGENT_QUEUE: usize = 4096;
/// Capacity of the normal queue (small: a full queue pushes back on the
/// peer through that stream's QUIC flow control only).
pub const NORMAL_QUEUE: usize = 256;
/// Bytes of log entries a round may gather from normal work before it
/// commits, bounding how long an urgent input waits for a group commit
/// (64 KiB: one maximal message; 256 KiB doubled FLASH p99 under load).
pub const NORMAL_ROUND_BYTES: usize = 64 * 1024;

impl ActorTx {
    /// The two queues and their receivers.
    pub fn new() -> (ActorTx, mpsc::Receiver<Input>, mpsc::Receiver<Input>) {
        let (urgent, urx) = mpsc::channel(URGENT_QUEUE);
        let (normal, nrx) = mpsc::channel(NORMAL_QUEUE);
        (ActorTx { urgent, normal }, urx, nrx)
    }

    /// Queues `input` by urgency; fails only when the actor is gone.
    pub async fn send(&self, input: Input) -> Result<(), ()> {
        let q = if is_urgent(&input) {
            &self.urgent
        } else {
            &self.normal
        };
        q.send(input).await.map_err(|_| ())
    }
}

fn urgent_precedence(p: Option<&str>) -> bool {
    matches!(
        p.and_then(api::parse_precedence),
        Some(Precedence::Flash | Precedence::Immediate)
    )
}

fn is_urgent(input: &Input) -> bool {
    match input {
        Input::Submit { req, .. } => urgent_precedence(req.precedence.as_deref()),
        Input::Frame { frame, .. } => match &frame.body {
            // Only a scheduling hint: the payload is verified later.
            Some(Body::Message(env)) => crate::wire::proto::Message::decode(env.payload.as_slice())
                .map(|m| matches!(m.precedence(), Precedence::Flash | Precedence::Immediate))
                .unwrap_or(true),
            _ => true,
        },
        _ => true,
    }
}

struct Accepting {
    id: MessageId,
    sequence: u64,
    t0: Instant,
    reply: oneshot::Sender<Result<api::SendResponse, SendError>>,
}

/// Static facts for status.
pub struct Facts {
    pub office: OfficeName,
    pub fingerprint: String,
    pub listen: String,
    /// When our node certificate expires (Unix ms), if it parses.
    pub node_cert_not_after_ms: Option<u64>,
    pub dial: HashMap<OfficeName, String>,
    pub evidence_dir: std::path::PathBuf,
    pub spool_dir: std::path::PathBuf,
    pub alert_command: Option<String>,
    /// The office directory (card updates write there).
    pub dir: crate::identity::OfficeDir,
    /// Our current card.
    pub card: crate::identity::OfficeCard,
    /// What the transport presents and trusts.
    pub identity: super::transport_identity::IdentityTx,
    /// The log's directory, and the free space kept in hand there.
    pub log_dir: std::path::PathBuf,
    pub min_free_bytes: u64,
}

pub struct Actor {
    pub core: Core,
    pub log: Option<LogWriter>,
    pub clock: Clock,
    pub facts: Facts,
    pub rx: mpsc::Receiver<Input>,
    pub normal_rx: mpsc::Receiver<Input>,
    pub links_up: watch::Sender<BTreeSet<OfficeName>>,
    links: HashMap<OfficeName, LinkHandle>,
    accepting: Vec<Accepting>,
    waiters: HashMap<MessageId, Vec<oneshot::Sender<Delivery>>>,
    accepted_at: HashMap<MessageId, Instant>,
    /// Send-to-receipt latency of the latest deliveries (views show it).
    elapsed_us: super::recent::Recent<MessageId, u64>,
    refusals: RefusalBook,
    events: VecDeque<WatchEvent>,
    next_event: u64,
    event_waiters: Vec<(u64, oneshot::Sender<Vec<WatchEvent>>)>,
    stopping: Option<oneshot::Sender<()>>,
    closing: bool,
    next_notice_scan: tokio::time::Instant,
    noticed: std::collections::HashSet<(MessageId, &'static str)>,
    reload: Option<Reload>,
    /// When the core panicked, within the restart window.
    core_panics: Vec<Instant>,
    core_restarts: u64,
    last_core_panic: Option<String>,
    /// The history index and a reader of the log it points into; `None`
    /// after the index failed (views then say so; the log is unaffected).
    history: Option<(History, LogReader)>,
    /// Where and when the node writes snapshots of its core; `None`: never.
    snapshots: Option<Snapshots>,
}

/// The node's snapshot file and its schedule.
pub struct Snapshots {
    pub path: std::path::PathBuf,
    pub schedule: crate::core::SnapshotSchedule,
}

impl Actor {
    pub fn new(
        core: Core,
        log: LogWriter,
        clock: Clock,
        facts: Facts,
        (rx, normal_rx): (mpsc::Receiver<Input>, mpsc::Receiver<Input>),
        links_up: watch::Sender<BTreeSet<OfficeName>>,
    ) -> Self {
        Actor {
            core,
            log: Some(log),
            clock,
            facts,
            rx,
            normal_rx,
            links_up,
            links: HashMap::new(),
            accepting: Vec::new(),
            waiters: HashMap::new(),
            accepted_at: HashMap::new(),
            elapsed_us: super::recent::Recent::new(ELAPSED_KEPT),
            refusals: RefusalBook::default(),
            events: VecDeque::new(),
            next_event: 1,
            event_waiters: Vec::new(),
            stopping: None,
            closing: false,
            next_notice_scan: tokio::time::Instant::now(),
            noticed: std::collections::HashSet::new(),
            reload: None,
            core_panics: Vec::new(),
            core_restarts: 0,
            last_core_panic: None,
            history: None,
            snapshots: None,
        }
    }

    /// Writes snapshots of the core to `snapshots.path` on its schedule.
    pub fn with_snapshots(mut self, snapshots: Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// How to rebuild the core from the log after a panic. Without it a
    /// panic stops the node.
    pub fn with_reload(mut self, reload: Reload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Gives the actor the history index (caught up with the log) and a
    /// reader of the log.
    pub fn with_history(mut self, history: History, reader: LogReader) -> Self {
        self.history = Some((history, reader));
        self
    }

    /// Runs `f`, which drives the core. A panic in it is a bug, never an
    /// answer to input: the core's memory may be inconsistent, but the log
    /// is not (nothing of this round is durable, so nothing of it was sent
    /// or answered). The core and this round are discarded and the core is
    /// rebuilt from the log, exactly as after a crash, and the fault is
    /// reported loudly; past [`MAX_CORE_RESTARTS`] an hour the node stops.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) -> Result<(), NodeError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(()) => Ok(()),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                self.restart_core(why)
            }
        }
    }

    fn restart_core(&mut self, why: String) -> Result<(), NodeError> {
        let at = Instant::now();
        self.core_panics
            .retain(|t| at.duration_since(*t) < CORE_RESTART_WINDOW);
        self.core_panics.push(at);
        self.last_core_panic = Some(why.clone());
        for a in self.accepting.drain(..) {
            let _ = a.reply.send(Err(SendError::Lost));
        }
        let recent = self.core_panics.len();
        let Some(reload) = self.reload.as_mut().filter(|_| recent <= MAX_CORE_RESTARTS) else {
            tracing::error!(
                "stopping: the protocol core panicked ({why}), {recent} times within the hour; \
                 the log is intact: report the fault, then start the node again"
            );
            return Err(NodeError::CorePanicked {
                times: recent,
                last: why,
            });
        };
        tracing::error!(
            "the protocol core panicked ({why}); discarding this round and rebuilding it from the log \
             (restart {recent} of {MAX_CORE_RESTARTS} allowed within the hour)"
        );
        let now = self.clock.now();
        let mut core = reload(now)?;
        for peer in self.links.keys() {
            core.link_up(now, peer, "the protocol core was restarted from the log");
        }
        self.core = core;
        self.core_restarts = self.core_restarts.saturating_add(1);
        let detail = format!(
            "the protocol core panicked ({}) and was restarted from the log; requests in that round \
             were not recorded (restart {recent} of {MAX_CORE_RESTARTS} allowed within the hour)",
            crate::text::prefix(&why, 200)
        );
        self.push_event("alert", None, None, detail);
        Ok(())
    }

    /// Runs until shutdown or a fatal log error.
    pub async fn run(mut self) -> Result<(), NodeError> {
        // The start entries produced before the actor existed.
        self.commit().await?;
        // The monotonic time of the last timeout handled. A deadline at or
        // before it is woken 1 ms later rather than at once: the core moves
        // its deadlines when it handles them, and if one ever failed to
        // move the node would spin on a core instead of idling.
        let mut last_timeout_ms: Option<u64> = None;
        loop {
            let timer = self.core.poll_timeout().map(|t| {
                let t = match last_timeout_ms {
                    Some(last) if t <= last => last.saturating_add(1),
                    _ => t,
                };
                self.clock.instant_of(t)
            });
            let mut urgent_round = false;
            tokio::select! {
                biased;
                input = self.rx.recv() => match input {
                    Some(input) => {
                        urgent_round = true;
                        self.guarded(|a| a.handle(input))?;
                    }
                    None => break,
                },
                input = self.normal_rx.recv() => match input {
                    Some(input) => self.guarded(|a| a.handle(input))?,
                    None => break,
                },
                _ = sleep_until_opt(timer), if timer.is_some() => {
                    let now = self.clock.now();
                    last_timeout_ms = Some(now.mono_ms);
                    self.guarded(|a| a.core.handle_timeout(now))?;
                }
                _ = tokio::time::sleep_until(self.next_notice_scan) => {
                    self.guarded(|a| a.scan_approaching())?;
                }
            }
            // Everything urgent that is waiting. Normal work joins the round
            // only when nothing urgent is in it, and only until the round
            // holds enough bytes for one commit: an urgent input never waits
            // for more than the commit already under way plus its own.
            let mut n = 1;
            while n < MAX_ROUND {
                if let Ok(input) = self.rx.try_recv() {
                    urgent_round = true;
                    self.guarded(|a| a.handle(input))?;
                } else if !urgent_round && self.core.pending_persist_bytes() < NORMAL_ROUND_BYTES {
                    match self.normal_rx.try_recv() {
                        Ok(input) => self.guarded(|a| a.handle(input))?,
                        Err(_) => break,
                    }
                } else {
                    break;
                }
                n = n.saturating_add(1);
            }
            self.commit().await?;
            self.snapshot(false).await;
            if let Some(done) = self.stopping.take() {
                self.wait_for_final_cosignatures().await?;
                self.snapshot(true).await;
                for link in self.links.values() {
                    link.conn
                        .close(VarInt::from_u32(close_code::SHUTDOWN), b"office closing");
                }
                let _ = done.send(());
                break;
            }
        }
        Ok(())
    }

    /// Writes a snapshot of the core if one is due (at a stop: if a peer
    /// cosigned anything newer than the last one) and every entry the core
    /// made is durable. The Merkle hashes it relies on are synced first. A
    /// failure costs only a longer start: it is reported, and tried again
    /// on the schedule.
    async fn snapshot(&mut self, stopping: bool) {
        let (Some(snaps), Some(log)) = (self.snapshots.as_mut(), self.log.as_ref()) else {
            return;
        };
        let due = if stopping {
            snaps.schedule.due_at_stop(&self.core)
        } else {
            snaps.schedule.due(&self.core)
        };
        if !due || self.core.has_output() || self.core.next_index() != log.entries() {
            return;
        }
        let t0 = Instant::now();
        let snap = self.core.snapshot(log.len_bytes(), log.last_entry_offset());
        let (entries, cosigned) = (snap.entries, snap.cosigned_size);
        // Marked taken whatever happens, so a failing disk is not retried
        // at every round.
        snaps.schedule.taken(entries, cosigned);
        let tree = match self.core.flush_tree_file() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("no snapshot: {e}");
                return;
            }
        };
        let path = snaps.path.clone();
        let r = tokio::task::spawn_blocking(move || {
            if let Some(t) = tree {
                t.sync_data()?;
            }
            super::snapshot_file::write(&path, &snap)
        })
        .await;
        match r {
            Ok(Ok(())) => tracing::debug!(
                entries,
                cosigned,
                ms = t0.elapsed().as_millis() as u64,
                "snapshot written"
            ),
            Ok(Err(e)) => tracing::warn!(
                "could not write the snapshot {}: {e}; the next start replays more of the log",
                snaps.path.display()
            ),
            Err(e) => tracing::warn!("the snapshot writer panicked: {e}"),
        }
    }

    /// After the final checkpoint: keep serving frames briefly so that
    /// connected peers can cosign it, which makes the stop itself witnessed.
    async fn wait_for_final_cosignatures(&mut self) -> Result<(), NodeError> {
        let Some(target) = self.core.latest_checkpoint().map(|c| c.size) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now()
            .checked_add(FINAL_COSIGN_WAIT)
            .unwrap_or_else(tokio::time::Instant::now);
        loop {
            let waiting = self
                .core
                .status()
                .iter()
                .any(|c| c.connected && c.resumed && c.peer_cosigned_size < target);
            if !waiting {
                return Ok(());
            }
            tokio::select! {
                input = self.rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
            }
            self.commit().await?;
        }
    }

    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::InjectPanic(why) => panic!("{why}"),
            Input::Submit { req, t0, reply } => {
                if self.closing {
                    let _ = reply.send(Err(SendError::Stopping));
                    return;
                }
                if let Some(e) = self.disk_refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let draft = match req.to_draft() {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(SendError::BadRequest(e)));
                        return;
                    }
                };
                let id = MessageId::generate(now.wall_ms);
                let to = draft.to.clone();
                match self.core.submit(now, id, draft) {
                    Ok(sequence) => {
                        if let (Some(via), Ok(peer)) = (req.via.as_deref(), OfficeName::new(to)) {
                            let via = OfficeName::new(via.to_string()).ok();
                            match self.core.send_via_relay(&peer, sequence, via.as_ref()) {
                                Some(r) => tracing::info!(%peer, "{id} sent sealed via {r}"),
                                None => {
                                    tracing::warn!(%peer, "{id}: relay {:?} not reachable; queued for the direct line", req.via)
                                }
                            }
                        }
                        self.accepting.push(Accepting {
                            id,
                            sequence,
                            t0,
                            reply,
                        })
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Input::WaitDelivered { id, reply } => {
                if let Some(d) = self.delivered(&id) {
                    let _ = reply.send(d);
                    return;
                }
                let list = self.waiters.entry(id).or_default();
                list.retain(|w| !w.is_closed());
                list.push(reply);
            }
            Input::Query(q) => self.answer(q),
            Input::LinkUp { peer, link } => self.link_up(peer, link),
            Input::LinkDown {
                peer,
                conn_id,
                reason,
            } => {
                if self.links.get(&peer).map(|l| l.conn_id) == Some(conn_id) {
                    self.links.remove(&peer);
                    self.publish_links();
                    tracing::info!(%peer, "line to {peer} down: {reason}");
                    self.push_event("link", Some(&peer), None, format!("down: {reason}"));
                    self.core.link_down(now, &peer, &reason);
                }
            }
            Input::Frame { peer, frame, .. } => {
                self.core.handle_frame(now, &peer, frame);
            }
            Input::LinkRoom { peer, conn_id } => self.refill(&peer, conn_id),
            Input::BadFrame { peer, detail } => self.refused(Attempt {
                remote: peer.to_string(),
                kind: "bad-frame",
                presents_identity: true,
                reason: format!("bad frame from {peer}; line closed"),
                error: detail,
            }),
            Input::Refused(a) => self.refused(a),
            Input::NewCertSeen { peer } => self.retire_old_cert(&peer),
            Input::Rotate { what, reply } => {
                let r = if self.closing {
                    Err(SendError::Stopping)
                } else if let Some(e) = self.disk_refusal() {
                    Err(e)
                } else {
                    self.rotate(now, what)
                };
                let _ = reply.send(r);
            }
            Input::Ack { req, reply } => {
                if self.closing {
                    let _ = reply.send(Err(SendError::Stopping));
                    return;
                }
                if let Some(e) = self.disk_refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let Some(msg) = MessageId::parse(&req.id) else {
                    let _ = reply.send(Err(SendError::BadRequest(format!(
                        "{:?} is not a message id",
                        req.id
                    ))));
                    return;
                };
                let response = match req.response.as_deref().map(api::parse_response) {
                    None => crate::wire::proto::Response::Unspecified,
                    Some(Some(r)) => r,
                    Some(None) => {
                        let _ = reply.send(Err(SendError::BadRequest(
                            "response must be will-comply, cannot-comply, have-complied or information".into(),
                        )));
                        return;
                    }
                };
                // The core keeps no received messages: the index finds it.
                let found = match &self.history {
                    Some((h, log)) => views::find_received(h, log, &msg),
                    None => {
                        let _ = reply.send(Err(SendError::Failed(HISTORY_GONE.into())));
                        return;
                    }
                };
                let (entry, message) = match found {
                    Ok(Some(found)) => found,
                    Ok(None) => {
                        let e = SubmitError::UnknownMessage(msg.to_string());
                        let _ = reply.send(Err(e.into()));
                        return;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(SendError::Failed(e.to_string())));
                        return;
                    }
                };
                let Ok(peer) = OfficeName::new(entry.from) else {
                    let e = SubmitError::UnknownMessage(msg.to_string());
                    let _ = reply.send(Err(e.into()));
                    return;
                };
                let id = MessageId::generate(now.wall_ms);
                match self
                    .core
                    .acknowledge(now, id, &peer, &message, &req.note, response)
                {
                    Ok(sequence) => self.accepting.push(Accepting {
                        id,
                        sequence,
                        t0: Instant::now(),
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Input::AlertLevel { req, reply } => {
                if let Some(e) = self.disk_refusal() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let level = api::parse_alert_level(&req.level);
                let peer = OfficeName::new(req.peer.clone()).ok();
                let r = match (level, peer) {
                    (None, _) => Err(SendError::BadRequest(format!(
                        "level {:?} is not normal, elevated or crisis",
                        req.level
                    ))),
                    (_, None) => Err(SendError::Refused(SubmitError::UnknownPeer(
                        req.peer.clone(),
                    ))),
                    (Some(level), Some(peer)) => self
                        .core
                        .set_alert_level(now, &peer, level, &req.reason)
                        .map_err(SendError::from),
                };
                let _ = reply.send(r);
            }
            Input::ConfirmCard { req, reply } => {
                let r = if let Some(e) = self.disk_refusal() {
                    Err(e)
                } else {
                    match OfficeName::new(req.peer.clone()) {
                        Err(_) => Err(SendError::Refused(SubmitError::UnknownPeer(req.peer))),
                        Ok(peer) => self
                            .core
                            .confirm_card(now, &peer, req.fingerprint.trim())
                            .map_err(|e| SendError::Conflict(e.to_string())),
                    }
                };
                let _ = reply.send(r);
            }
            Input::Events { after, reply } => {
                let ready: Vec<WatchEvent> = self
                    .events
                    .iter()
                    .filter(|e| e.seq > after)
                    .cloned()
                    .collect();
                if ready.is_empty() {
                    self.event_waiters.retain(|(_, w)| !w.is_closed());
                    self.event_waiters.push((after, reply));
                } else {
                    let _ = reply.send(ready);
                }
            }
            Input::Shutdown(done) => {
                if self.closing {
                    let _ = done.send(());
                    return;
                }
                self.closing = true;
                self.core.stop(now, "operator shutdown");
                self.stopping = Some(done);
            }
        }
    }

    /// Once a second: tell `watch` about deadlines coming up (each once).
    fn scan_approaching(&mut self) {
        self.next_notice_scan = tokio::time::Instant::now()
            .checked_add(std::time::Duration::from_secs(1))
            .unwrap_or_else(tokio::time::Instant::now);
        if self.noticed.len() > 100_000 {
            self.noticed.clear(); // bounded: at worst a notice repeats
        }
        let now = self.clock.now();
        for s in self.refusals.take_suppressed(now.wall_ms) {
            tracing::warn!(
                "refused {} more connection(s) of kind {} in the last minute without logging each (counts in status)",
                s.count,
                s.kind
            );
        }
        for a in self.core.approaching(now) {
            if self.noticed.insert((a.id, a.waiting.as_str())) {
                self.push_event(
                    "deadline-approaching",
                    Some(&a.peer),
                    Some(a.id.to_string()),
                    format!(
                        "{} {} due in {:.1} s",
                        api::precedence_name(a.precedence).to_uppercase(),
                        a.waiting.as_str(),
                        a.late_ms as f64 / 1000.0
                    ),
                );
            }
        }
    }

    fn push_event(
        &mut self,
        kind: &str,
        peer: Option<&OfficeName>,
        msg: Option<String>,
        detail: String,
    ) {
        let ev = WatchEvent {
            seq: self.next_event,
            unix_ms: self.clock.now().wall_ms,
            kind: kind.into(),
            peer: peer.map(|p| p.to_string()),
            msg,
            detail,
        };
        self.next_event = self.next_event.saturating_add(1);
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ev.clone());
        for (after, w) in std::mem::take(&mut self.event_waiters) {
            if ev.seq > after {
                let _ = w.send(vec![ev.clone()]);
            } else {
                self.event_waiters.push((after, w));
            }
        }
    }

    fn run_alert_command(&self, peer: &OfficeName, msg: &str, detail: &str) {
        let Some(cmd) = &self.facts.alert_command else {
            return;
        };
        let spawned = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("HOTLINE_PEER", peer.as_str())
            .env("HOTLINE_MESSAGE", msg)
            .env("HOTLINE_ALERT", detail)
            .stdin(std::process::Stdio::null())
            .spawn();
        match spawned {
            // Reap it in the background so it leaves no zombie.
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(e) => tracing::error!("alert command {cmd:?} could not start: {e}"),
        }
    }

    /// A refusal when the log's file system has less free space than the
    /// reserve. One `statvfs` per request (about a microsecond): a cached
    /// reading would let a burst through after the disk filled.
    fn disk_refusal(&mut self) -> Option<SendError> {
        let reserve = self.facts.min_free_bytes;
        if reserve == 0 {
            return None;
        }
        let free = crate::audit::free_bytes(&self.facts.log_dir).ok()?;
        (free < reserve).then(|| {
            SendError::DiskFull(format!(
                "disk full: {free} bytes free on the file system of {}, below the reserve of {reserve} ([storage] min_free_bytes) kept for what peers send; nothing was recorded or sent: free space, then try again",
                self.facts.log_dir.display()
            ))
        })
    }

    /// Prepares a new node certificate or new keys and offers the card
    /// that holds them to every peer; the switch comes when all have
    /// accepted.
    fn rotate(
        &mut self,
        now: crate::core::Now,
        what: rotation::Rotation,
    ) -> Result<api::RotateResponse, SendError> {
        if let Some((fp, waiting)) = self.core.card_offer() {
            if !waiting.is_empty() {
                let waiting: Vec<String> = waiting.iter().map(|p| p.to_string()).collect();
                return Err(SendError::Conflict(format!(
                    "card {fp} is still waiting for {} to accept it; the node switches once they have",
                    waiting.join(", ")
                )));
            }
        }
        let card = match what {
            rotation::Rotation::Cert => rotation::prepare_cert(&self.facts.dir, &self.facts.card),
            rotation::Rotation::Keys(which) => {
                rotation::prepare_keys(&self.facts.dir, &self.facts.card, which)
            }
        }
        .map_err(|e| SendError::Failed(e.to_string()))?;
        // Frames peers seal to the new seal key once they pin the card
        // must open before we switch.
        for secret in rotation::extra_seal_secrets(&self.facts.dir) {
            self.core.add_seal_opener(secret);
        }
        let update = card.to_update(&self.facts.card, now.wall_ms);
        self.core
            .offer_card(now, update)
            .map_err(|e| SendError::Conflict(e.to_string()))?;
        let waiting: Vec<String> = self
            .core
            .card_offer()
            .map(|(_, w)| w.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default();
        tracing::info!(
            "offered card {} with {} to {}",
            card.fingerprint,
            what.what(),
            waiting.join(", ")
        );
        self.push_event(
            "card",
            None,
            None,
            format!("offered card {} ({})", card.fingerprint, what.what()),
        );
        if waiting.is_empty() {
            self.switch_card();
        }
        Ok(api::RotateResponse {
            old_fingerprint: self.facts.card.fingerprint.clone(),
            fingerprint: card.fingerprint,
            waiting,
        })
    }

    /// Every peer accepted our new card: present its certificate, or sign
    /// and open with its keys, from now on. Connections already up keep
    /// the certificate they began with.
    fn switch_card(&mut self) {
        let dir = self.facts.dir.clone();
        let loaded = rotation::switch(&dir).and_then(|()| dir.load());
        let office = match loaded {
            Ok(office) => office,
            Err(e) => {
                tracing::error!("could not switch to the new card: {e}");
                self.push_event(
                    "alert",
                    None,
                    None,
                    format!("could not switch to the new card: {e}"),
                );
                return;
            }
        };
        let card = office.card.clone();
        let mut what = Vec::new();
        if card.node_cert_sha256 != self.facts.card.node_cert_sha256 {
            let cert = office.node_cert.clone();
            let next = self
                .facts
                .identity
                .borrow()
                .with_cert(cert.clone(), office.node_key.clone_key());
            self.facts.identity.send_replace(std::sync::Arc::new(next));
            self.facts.node_cert_not_after_ms =
                crate::identity::tls_material::not_after_unix_ms(cert.as_ref());
            what.push("presenting the new node certificate");
        }
        if !card.same_keys(&self.facts.card) {
            self.core
                .switch_own_keys(super::offline::office_keys(&office));
            what.push("signing with the new keys");
        }
        let what = what.join(" and ");
        tracing::info!("every peer accepted card {}: {what}", card.fingerprint);
        self.push_event(
            "card",
            None,
            None,
            format!("every peer accepted card {}; {what}", card.fingerprint),
        );
        self.facts.fingerprint = card.fingerprint.clone();
        self.facts.card = card;
    }

    /// A peer's new card was pinned and logged: store it and trust its new
    /// certificate, and its old one until it presents the new.
    fn pin_peer_card(&mut self, peer: &OfficeName, card: &crate::identity::OfficeCard) {
        if let Err(e) = rotation::store_peer_card(&self.facts.dir, card) {
            tracing::error!(%peer, "could not store {peer}'s new card: {e}");
        }
        let current = self.facts.identity.borrow().clone();
        let old = current
            .pin(peer)
            .and_then(|p| p.node_certs.first().copied());
        let Ok(ca) = card.ca_cert_der() else {
            return;
        };
        let pin = super::tls::Pin {
            office: peer.clone(),
            ca,
            node_certs: std::iter::once(card.node_cert_hash()).chain(old).collect(),
        };
        self.facts
            .identity
            .send_replace(std::sync::Arc::new(current.with_pin(pin)));
        tracing::info!(%peer, "pinned {peer}'s new card {}", card.fingerprint);
        self.push_event(
            "card",
            Some(peer),
            None,
            format!(
                "pinned {peer}'s new card {} (signed with its current key); its old certificate is trusted until it presents the new one",
                card.fingerprint
            ),
        );
    }

    /// The peer presented its new certificate: the old one is retired.
    fn retire_old_cert(&mut self, peer: &OfficeName) {
        let current = self.facts.identity.borrow().clone();
        let Some(mut pin) = current.pin(peer).cloned() else {
            return;
        };
        if pin.node_certs.len() < 2 {
            return;
        }
        pin.node_certs.truncate(1);
        if let Err(e) = rotation::drop_retiring(&self.facts.dir, peer) {
            tracing::error!(%peer, "{e}");
        }
        self.facts
            .identity
            .send_replace(std::sync::Arc::new(current.with_pin(pin)));
        tracing::info!(%peer, "{peer} presented its new certificate; the old one is no longer trusted");
    }

    /// Books a refused attempt; says so in the log and to `watch` only
    /// within the kind's budget (see [`super::refusals`]).
    fn refused(&mut self, a: Attempt) {
        let (remote, reason, error) = (a.remote.clone(), a.reason.clone(), a.error.clone());
        if self.refusals.record(self.clock.now().wall_ms, a) == Say::Tell {
            tracing::warn!(%remote, "refused {remote}: {reason} ({error:.240})");
            self.push_event("refused", None, None, format!("{remote}: {reason}"));
        }
    }

    /// Keeps one connection per peer: the one dialed by the office whose
    /// name sorts first, or the newer of two dialed by the same office.
    /// Both sides apply the same rule, so they agree.
    fn link_up(&mut self, peer: OfficeName, link: LinkHandle) {
        let now = self.clock.now();
        let preferred_dialer = std::cmp::min(&self.facts.office, &peer).clone();
        if let Some(existing) = self.links.get(&peer) {
            // Two connections dialed by the same office, or a new one while
            // ours is older than the dial race: the peer has reconnected
            // (perhaps after a crash we have not noticed yet), so the newer
            // one wins. Otherwise (both offices dialing at once) the one
            // dialed by the office whose name sorts first wins, on both
            // sides alike.
            let raced = existing.established.elapsed() < dial_race_window(existing.conn.rtt());
            let keep_existing = if existing.dialed_by == link.dialed_by || !raced {
                false
            } else {
                existing.dialed_by == preferred_dialer
            };
            if keep_existing {
                tracing::debug!(%peer, "duplicate connection from {}; keeping the existing one", link.remote);
                link.conn.close(
                    VarInt::from_u32(close_code::DUPLICATE),
                    b"duplicate connection",
                );
                return;
            }
            existing.conn.close(
                VarInt::from_u32(close_code::DUPLICATE),
                b"duplicate connection",
            );
        }
        let detail = format!("{} dialed; remote {}", link.dialed_by, link.remote);
        tracing::info!(%peer, "line to {peer} up ({detail})");
        self.push_event("link", Some(&peer), None, format!("up: {detail}"));
        self.links.insert(peer.clone(), link);
        self.publish_links();
        self.core.link_up(now, &peer, &detail);
    }

    /// Gives a frame of the core's to its connection's stream. Our message
    /// has at most one copy waiting, and waits in the overflow, in order,
    /// when its stream's queue is full; a control frame that does not fit
    /// closes the connection (the next one resumes, §7).
    fn hand_over(&mut self, t: crate::core::Transmit) {
        let Some(link) = self.links.get_mut(&t.peer) else {
            return; // no connection: the next one's resumption sends it
        };
        let class = t.class.index();
        let (Some(stream), Some(overflow)) =
            (link.streams.get(class), link.overflow.get_mut(class))
        else {
            return;
        };
        match t.message {
            Some(seq) => {
                if !link.queued.claim(seq) {
                    return; // a copy already waits to go out
                }
                if !overflow.is_empty() || !stream.push(Some(seq), frame::encode(&t.frame)) {
                    overflow.push_back(seq);
                }
            }
            None => {
                let bytes = frame::encode(&t.frame);
                if t.datagram {
                    link::send_datagram_copy(&link.conn, &bytes);
                }
                if !stream.push(None, bytes) {
                    tracing::warn!(
                        peer = %t.peer,
                        queued = stream.bytes(),
                        "closing the line to {}: its control queue is full; the next connection resumes",
                        t.peer
                    );
                    link.conn
                        .close(VarInt::from_u32(close_code::RESET), b"control queue full");
                }
            }
        }
    }

    /// Moves messages from connection `conn_id`'s overflow into its stream
    /// queues, in order, while they fit.
    fn refill(&mut self, peer: &OfficeName, conn_id: u64) {
        let Some(link) = self.links.get_mut(peer).filter(|l| l.conn_id == conn_id) else {
            return;
        };
        for (stream, overflow) in link.streams.iter().zip(link.overflow.iter_mut()) {
            while let Some(&seq) = overflow.front() {
                if !link.queued.contains(seq) {
                    overflow.pop_front(); // settled meanwhile
                    continue;
                }
                let Some(env) = self.core.pending_envelope(peer, seq) else {
                    link.queued.release(seq);
                    overflow.pop_front();
                    continue;
                };
                let frame = Frame {
                    body: Some(Body::Message(env.clone())),
                };
                if !stream.push(Some(seq), frame::encode(&frame)) {
                    break;
                }
                overflow.pop_front();
            }
        }
    }

    fn publish_links(&self) {
        let up: BTreeSet<OfficeName> = self.links.keys().cloned().collect();
        self.links_up.send_replace(up);
    }

    /// Makes the core's entries durable, then acts on the rest; again if
    /// acting on it gave the core more to do (a recalled duplicate that
    /// turned out to conflict is refused in a second round).
    async fn commit(&mut self) -> Result<(), NodeError> {
        for _ in 0..3 {
            self.commit_round().await?;
            if !self.core.has_output() {
                break;
            }
        }
        Ok(())
    }

    async fn commit_round(&mut self) -> Result<(), NodeError> {
        let out = self.core.take_output();
        if !out.persist.is_empty() || !out.spool_write.is_empty() || !out.spool_delete.is_empty() {
            let Some(mut log) = self.log.take() else {
                return Err(NodeError::Internal("the log writer was lost".into()));
            };
            let entries = out.persist;
            let (writes, deletes) = (out.spool_write, out.spool_delete);
            let spool_dir = self.facts.spool_dir.clone();
            let mut history = self.history.take();
            // Where the index will stand once these entries are folded in:
            // the core's tree already holds them.
            let root = self.core.tree().root().0;
            let (log, result, history) = tokio::task::spawn_blocking(move || {
                // Relay: the sealed frames are on disk before the entries
                // that say they were accepted; deleted only after the entries
                // that say they were handed over.
                if let Err(e) = spool::write(&spool_dir, &writes) {
                    let err = crate::audit::LogError::Io {
                        path: spool_dir.clone(),
                        source: e,
                    };
                    return (log, Err(err), history);
                }
                let start = log.len_bytes();
                let r = log.append_durable(&entries);
                if r.is_ok() {
                    spool::delete(&spool_dir, &deletes);
                    if let Some((h, _)) = history.as_mut() {
                        if let Err(e) = crate::history::fold_appended(h, &entries, start, log.len_bytes(), root) {
                            tracing::error!("{e}; views are unavailable until the node restarts and rebuilds the index");
                            history = None;
                        }
                    }
                }
                (log, r, history)
            })
            .await
            .map_err(|e| NodeError::Internal(format!("log writer panicked: {e}")))?;
            self.log = Some(log);
            self.history = history;
            if let Err(e) = result {
                tracing::error!("stopping: the log could not be made durable: {e}");
                // Those waiting are told why, not merely that the node stops.
                if matches!(e, crate::audit::LogError::DiskFull { .. }) {
                    for a in self.accepting.drain(..) {
                        let _ = a.reply.send(Err(SendError::DiskFull(e.to_string())));
                    }
                }
                return Err(NodeError::Log(e));
            }
        }
        for t in out.transmit {
            self.hand_over(t);
        }
        if !out.recall.is_empty() {
            self.recall(out.recall);
        }
        let now = Instant::now();
        for a in self.accepting.drain(..) {
            self.accepted_at.insert(a.id, now);
            let _ = a.reply.send(Ok(api::SendResponse {
                id: a.id.to_string(),
                sequence: a.sequence,
                accepted_us: now.duration_since(a.t0).as_micros() as u64,
                delivered: None,
            }));
        }
        for ev in out.events {
            match ev {
                CoreEvent::PeerCardUpdated { peer, card } => self.pin_peer_card(&peer, &card),
                CoreEvent::CardUpdateHeld {
                    peer,
                    old_fingerprint,
                    fingerprint,
                } => {
                    tracing::warn!(%peer, "{peer} offers card {fingerprint} to replace {old_fingerprint}; held for the operator's confirmation");
                    self.push_event(
                        "alert",
                        Some(&peer),
                        None,
                        format!(
                            "{peer} offers a new card {fingerprint} (replacing {old_fingerprint}); read the fingerprint aloud with {peer}, then run: hotline peer confirm-card --dir {} {peer} {fingerprint}",
                            self.facts.dir.root().display()
                        ),
                    );
                }
                CoreEvent::CardUpdateAccepted {
                    peer,
                    fingerprint,
                    all,
                } => {
                    tracing::info!(%peer, "{peer} accepted our card {fingerprint}");
                    self.push_event(
                        "card",
                        Some(&peer),
                        None,
                        format!("{peer} accepted our card {fingerprint}"),
                    );
                    if all {
                        self.switch_card();
                    }
                }
                CoreEvent::Delivered {
                    peer,
                    id,
                    sequence,
                    receipt,
                } => {
                    // A copy still waiting to go out need not.
                    if let Some(link) = self.links.get(&peer) {
                        link.queued.release(sequence);
                    }
                    let elapsed = self
                        .accepted_at
                        .remove(&id)
                        .map(|t| now.duration_since(t).as_micros() as u64);
                    if let Some(e) = elapsed {
                        self.elapsed_us.insert(id, e);
                    }
                    tracing::debug!(%peer, %id, sequence, "delivered");
                    self.push_event(
                        "delivered",
                        Some(&peer),
                        Some(id.to_string()),
                        format!("signed receipt from {peer}"),
                    );
                    if let Some(ws) = self.waiters.remove(&id) {
                        let d = api::delivery(&receipt, elapsed);
                        for w in ws {
                            let _ = w.send(d.clone());
                        }
                    }
                }
                CoreEvent::Received {
                    peer,
                    id,
                    sequence,
                    precedence,
                    subject,
                    ..
                } => {
                    tracing::info!(%peer, %id, sequence, precedence = api::precedence_name(precedence), "message received");
                    self.push_event(
                        "received",
                        Some(&peer),
                        Some(id.to_string()),
                        format!(
                            "{}: {subject}",
                            api::precedence_name(precedence).to_uppercase()
                        ),
                    );
                }
                CoreEvent::Refused {
                    peer,
                    reason,
                    detail,
                } => {
                    tracing::warn!(%peer, ?reason, "refused a message from {peer}: {detail}");
                }
                CoreEvent::NegativeReceipt {
                    peer,
                    id,
                    refused_sequence,
                    reason,
                    detail,
                } => {
                    // Refused for good: a waiting copy need not go out, and
                    // no receipt will come to time.
                    if let (Some(_), Some(i)) = (refused_sequence, id) {
                        self.accepted_at.remove(&i);
                    }
                    if let (Some(seq), Some(link)) = (refused_sequence, self.links.get(&peer)) {
                        link.queued.release(seq);
                    }
                    let id = id.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
                    tracing::warn!(%peer, %id, ?reason, "{peer} refused message {id}: {detail}");
                    self.push_event(
                        "negative-receipt",
                        Some(&peer),
                        Some(id.clone()),
                        format!("{reason:?}: {detail}"),
                    );
                }
                CoreEvent::Acknowledged { peer, id } => {
                    tracing::info!(%peer, %id, "{peer} acknowledged {id}");
                    self.push_event(
                        "acknowledged",
                        Some(&peer),
                        Some(id.to_string()),
                        format!("{peer} acknowledged"),
                    );
                }
                CoreEvent::Escalated {
                    peer,
                    id,
                    action,
                    waiting,
                } => {
                    tracing::warn!(%peer, %id, "escalation: {} (no {} for {id})", action.as_str(), waiting.as_str());
                    self.push_event(
                        "escalation",
                        Some(&peer),
                        Some(id.to_string()),
                        format!("{} (no {})", action.as_str(), waiting.as_str()),
                    );
                }
                CoreEvent::Alert { peer, id, detail } => {
                    let id = id.map(|i| i.to_string()).unwrap_or_default();
                    tracing::warn!(%peer, %id, "ALERT: {detail}");
                    self.run_alert_command(&peer, &id, &detail);
                    self.push_event(
                        "alert",
                        Some(&peer),
                        Some(id).filter(|i| !i.is_empty()),
                        detail,
                    );
                }
                CoreEvent::HealthChanged {
                    peer,
                    health,
                    missed,
                } => {
                    tracing::warn!(%peer, "line to {peer} is {} ({missed} line checks missed)", health.as_str());
                    self.push_event(
                        "line-health",
                        Some(&peer),
                        None,
                        format!("{} ({missed} line checks missed)", health.as_str()),
                    );
                }
                CoreEvent::AlertLevelChanged { peer, level, by } => {
                    let name = api::alert_level_name(level).to_uppercase();
                    // Ours is ours; the peer's is only the peer's (it can
                    // raise our watch on the line, never lower it).
                    let detail = if by == "peer" {
                        format!("{peer} set its level to {name}")
                    } else {
                        format!("our level is now {name} (set by {by})")
                    };
                    tracing::warn!(%peer, "alert level: {detail}");
                    self.push_event("alert-level", Some(&peer), None, detail);
                }
                CoreEvent::RelayReceipt {
                    relay,
                    message_id,
                    state,
                    reason,
                } => {
                    tracing::info!(%relay, %message_id, "relay {relay}: {state} {reason}");
                    self.push_event(
                        "relay",
                        Some(&relay),
                        Some(message_id),
                        format!("{state} {reason}"),
                    );
                }
                CoreEvent::Cosigned { peer, size } => {
                    tracing::debug!(%peer, size, "{peer} cosigned our checkpoint at size {size}");
                }
                CoreEvent::Equivocation {
                    peer,
                    kind,
                    evidence,
                } => {
                    let path = self
                        .facts
                        .evidence_dir
                        .join(format!("{peer}-{}-{kind}.json", self.clock.now().wall_ms));
                    let saved =
                        crate::identity::files::create_private_dir(&self.facts.evidence_dir)
                            .and_then(|_| crate::identity::files::write_private(&path, &evidence));
                    match saved {
                        Ok(()) => tracing::error!(
                            %peer,
                            "{peer} presented contradictory checkpoints ({kind}); refused to cosign; evidence in {}",
                            path.display()
                        ),
                        Err(e) => tracing::error!(
                            %peer,
                            "{peer} presented contradictory checkpoints ({kind}); evidence is in the log but could not be written to {}: {e}",
                            path.display()
                        ),
                    }
                }
                CoreEvent::ProtocolError { peer, detail } => {
                    tracing::warn!(%peer, "protocol error from {peer}: {detail}");
                }
            }
        }
        Ok(())
    }

    /// Sends the answers the core asked for from the log (it keeps only
    /// the latest per peer): read through the history index, which the
    /// commit before this brought up to date. A duplicate whose logged
    /// answer names another message goes back to the core, whose refusal
    /// the next commit makes durable.
    fn recall(&mut self, recalls: Vec<crate::core::Recall>) {
        use crate::history::recall::{resolve, Resolved};
        let Some((h, log)) = self.history.as_ref() else {
            tracing::warn!("{HISTORY_GONE}: old answers to peers are not resent");
            return;
        };
        let mut send = Vec::new();
        let mut conflicts = Vec::new();
        for r in recalls {
            match resolve(h, log, r) {
                Ok(Resolved::Send(t)) => send.extend(t),
                Ok(Resolved::Conflict(peer, env)) => conflicts.push((peer, env)),
                Ok(Resolved::Missing { peer, sequence }) => tracing::warn!(
                    %peer,
                    sequence,
                    "no logged answer to {peer}'s sequence {sequence} in the history index"
                ),
                Err(e) => tracing::warn!("reading an old answer to a peer: {e}"),
            }
        }
        for t in send {
            self.hand_over(t);
        }
        let now = self.clock.now();
        for (peer, env) in conflicts {
            self.core.duplicate_unanswered(now, &peer, env);
        }
    }

    /// Our message `id`'s delivery, if the index shows it delivered.
    fn delivered(&self, id: &MessageId) -> Option<api::Delivery> {
        let (h, log) = self.history.as_ref()?;
        let core = &self.core;
        let pending = |peer: &str, seq: u64| core.pending_state(peer, seq);
        let elapsed = self.elapsed_us.get(id).copied();
        views::find_sent(h, log, id, &pending, elapsed)
            .ok()
            .flatten()?
            .delivery
    }

    fn answer(&self, q: Query) {
        match q {
            Query::Inbox(page, reply) => {
                let r = match &self.history {
                    Some((h, log)) => views::inbox(h, log, page)
                        .map(|p| p.items)
                        .map_err(|e| e.to_string()),
                    None => Err(HISTORY_GONE.into()),
                };
                let _ = reply.send(r);
            }
            Query::Outbox(page, reply) => {
                let core = &self.core;
                let pending = |peer: &str, seq: u64| core.pending_state(peer, seq);
                let r = match &self.history {
                    Some((h, log)) => views::outbox(h, log, page, &pending)
                        .map(|p| {
                            let mut items = p.items;
                            for o in &mut items {
                                let elapsed = MessageId::parse(&o.id)
                                    .and_then(|id| self.elapsed_us.get(&id).copied());
                                if let Some(d) = o.delivery.as_mut() {
                                    d.elapsed_us = elapsed;
                                }
                            }
                            items
                        })
                        .map_err(|e| e.to_string()),
                    None => Err(HISTORY_GONE.into()),
                };
                let _ = reply.send(r);
            }
            Query::Status(reply) => {
                let peers = self
                    .core
                    .status()
                    .into_iter()
                    .map(|c| {
                        let link = self.links.get(&c.peer);
                        PeerStatus {
                            office: c.peer.to_string(),
                            link: if link.is_some() { "up" } else { "down" }.into(),
                            resumed: c.resumed,
                            dial_addr: self.facts.dial.get(&c.peer).cloned(),
                            rtt_ms: link.map(|l| l.conn.rtt().as_secs_f64() * 1000.0),
                            last_heard_unix_ms: c.last_heard_unix_ms,
                            outbox: c.outbox_len,
                            queued: c.queued,
                            delivered: c.delivered,
                            received: c.received,
                            alert_level: api::alert_level_name(c.alert_level).into(),
                            own_alert_level: api::alert_level_name(c.own_alert_level).into(),
                            peer_alert_level: api::alert_level_name(c.peer_alert_level).into(),
                            health: c.health.as_str().into(),
                            missed_line_checks: c.missed_line_checks,
                            line_check_rtt_ms: c.line_check_rtt_ms,
                            awaiting_ack: c.awaiting_ack,
                            refusals_suppressed: c.refusals_suppressed,
                            input_dropped: c.input_dropped,
                            received_through: c.received_through,
                            route: if link.is_some() {
                                "direct".into()
                            } else {
                                c.relays
                                    .iter()
                                    .find(|r| self.links.contains_key(*r))
                                    .map(|r| format!("via {r}"))
                                    .unwrap_or_else(|| "none".into())
                            },
                            relays: c.relays.iter().map(|r| r.to_string()).collect(),
                            peer_cosigned_size: c.peer_cosigned_size,
                            we_cosigned_size: c.we_cosigned_size,
                        }
                    })
                    .collect();
                let _ = reply.send(StatusResponse {
                    office: self.facts.office.to_string(),
                    fingerprint: self.facts.fingerprint.clone(),
                    listen: self.facts.listen.clone(),
                    node_cert_expires_unix_ms: self.facts.node_cert_not_after_ms,
                    card_rotation: self.core.card_offer().filter(|(_, w)| !w.is_empty()).map(
                        |(fp, w)| api::CardRotationStatus {
                            fingerprint: fp.to_string(),
                            waiting: w.iter().map(|p| p.to_string()).collect(),
                        },
                    ),
                    held_card_updates: self
                        .core
                        .held_card_updates()
                        .into_iter()
                        .map(|h| api::HeldCardStatus {
                            peer: h.peer.to_string(),
                            old_fingerprint: h.old_fingerprint,
                            fingerprint: h.fingerprint,
                        })
                        .collect(),
                    node_cert_warning: self.facts.node_cert_not_after_ms.and_then(|t| {
                        crate::identity::tls_material::expiry_warning(t, self.clock.now().wall_ms)
                    }),
                    log_entries: self.core.next_index(),
                    checkpoint_size: self.core.latest_checkpoint().map(|c| c.size),
                    peers,
                    refused: self.refusals.identity(),
                    refusal_noise: self.refusals.noise(),
                    core_restarts: self.core_restarts,
                    last_core_panic: self.last_core_panic.clone(),
                    control_noise: Default::default(),
                    alerts: self
                        .events
                        .iter()
                        .filter(|e| {
                            matches!(
                                e.kind.as_str(),
                                "alert" | "escalation" | "line-health" | "alert-level"
                            )
                        })
                        .rev()
                        .take(16)
                        .cloned()
                        .collect(),
                    overdue: self
                        .core
                        .overdue(self.clock.now())
                        .into_iter()
                        .map(|o| api::OverdueEntry {
                            peer: o.peer.to_string(),
                            id: o.id.to_string(),
                            precedence: api::precedence_name(o.precedence).into(),
                            waiting_for: o.waiting.as_str().into(),
                            late_ms: o.late_ms,
                        })
                        .collect(),
                });
            }
        }
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What a view says once the history index has failed.
const HISTORY_GONE: &str =
    "the history index failed (see the node's log); restart the node to rebuild it from the log";
