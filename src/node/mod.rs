//! The tokio shell around the core: QUIC transport with pinned mutual TLS,
//! the actor that owns the core and the log, dialers with backoff, and the
//! control API server.
//!
//! [`start`] loads nothing itself: it takes a loaded [`Office`], so tests and
//! the bench can run several nodes in one process.

// Nothing a peer or a log file can hold may panic here: no unwrap, expect,
// unchecked index or overflowing arithmetic outside tests. Each `allow`
// below this says why it cannot be reached from outside.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod actor;
mod clock;
pub mod control_conns;
pub mod control_server;
mod dialer;
pub mod link;
pub mod offline;
pub mod recent;
pub mod refusals;
pub mod snapshot_file;
mod spool;
pub mod tls;
pub mod transport_identity;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Notify};

use actor::{Actor, ActorTx, Facts, Input, Query};
pub use actor::{SendError, CORE_RESTART_WINDOW, MAX_CORE_RESTARTS};
pub use clock::wall_ms;
use clock::Clock;
pub use refusals::MAX_IDENTITY_ROWS;

use crate::audit::LogError;
use crate::control::api::{self, Delivery, InboxEntry, OutboxEntry, StatusResponse};
use crate::history::views::{Page, PageWalk};
use crate::identity::{files, rotation, Office, OfficeName};
use crate::wire::MessageId;
use transport_identity::TransportIdentity;

/// Free bytes below which a node will not start (its start entries and
/// the first checkpoint need a few KiB; the rest is margin).
pub const START_FREE_BYTES: u64 = 1024 * 1024;

/// Handshakes and connections accepted at once.
pub const MAX_INCOMING: usize = 64;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another node holds this directory.
    #[error("another node is already running on {0} (it holds run/lock); stop it first")]
    AlreadyRunning(String),
    /// The log could not be opened, recovered or written.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The history index could not be opened or rebuilt.
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    /// The log decoded but does not replay.
    #[error("the log cannot be replayed: {0}")]
    Replay(#[from] crate::core::ReplayError),
    /// A socket could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick another address in hotline.toml or free the port"
    )]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
    /// TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A file in the office directory.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The protocol core panicked more often than it may be restarted.
    #[error("the protocol core panicked {times} times within the hour (last: {last}); the log is intact: report the fault, then start the node again")]
    CorePanicked {
        /// Panics within the restart window.
        times: usize,
        /// The last panic's message.
        last: String,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Options for [`start`].
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Serve the control API (the CLI needs it; in-process users may not).
    pub control_api: bool,
}

/// Talks to a running node in-process (the control API uses the same).
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: ActorTx,
}

impl NodeHandle {
    /// Submits a message; returns once it is durable.
    pub async fn send(&self, req: api::SendRequest) -> Result<api::SendResponse, SendError> {
        let wait = req.wait;
        let wait_ms = req.wait_ms.unwrap_or(30_000);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Submit {
                req,
                t0: Instant::now(),
                reply,
            })
            .await
            .map_err(|_| SendError::Stopping)?;
        let mut resp = rx.await.map_err(|_| SendError::Stopping)??;
        if wait {
            let Some(id) = MessageId::parse(&resp.id) else {
                return Err(SendError::Stopping); // the node made the id: not reached
            };
            resp.delivered = self
                .wait_delivered(id, Duration::from_millis(wait_ms))
                .await;
        }
        Ok(resp)
    }

    /// Fault injection for tests: makes the actor panic inside its guarded
    /// round, as a bug in the core would. Not reachable from the network or
    /// the control API.
    #[doc(hidden)]
    pub async fn inject_core_panic(&self, why: &str) {
        let _ = self.tx.send(Input::InjectPanic(why.to_string())).await;
    }

    /// Waits up to `limit` for `id`'s receipt.
    pub async fn wait_delivered(&self, id: MessageId, limit: Duration) -> Option<Delivery> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::WaitDelivered { id, reply })
            .await
            .ok()?;
        tokio::time::timeout(limit, rx).await.ok()?.ok()
    }

    /// Acknowledges a received message; returns once the acknowledgement is durable.
    pub async fn ack(&self, req: api::AckRequest) -> Result<api::SendResponse, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Ack { req, reply })
            .await
            .map_err(|_| SendError::Stopping)?;
        rx.await.map_err(|_| SendError::Stopping)?
    }

    /// Sets a channel's alert level.
    pub async fn alert_level(&self, req: api::AlertLevelRequest) -> Result<(), SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::AlertLevel { req, reply })
            .await
            .map_err(|_| SendError::Stopping)?;
        rx.await.map_err(|_| SendError::Stopping)?
    }

    /// Confirms a peer's held card update (its fingerprint read aloud).
    pub async fn confirm_card(&self, req: api::ConfirmCardRequest) -> Result<(), SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::ConfirmCard { req, reply })
            .await
            .map_err(|_| SendError::Stopping)?;
        rx.await.map_err(|_| SendError::Stopping)?
    }

    /// Rotates the node certificate or the keys: offers a new card to every
    /// peer (docs/protocol.md §8d).
    pub async fn rotate(
        &self,
        what: crate::identity::rotation::Rotation,
    ) -> Result<api::RotateResponse, SendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Rotate { what, reply })
            .await
            .map_err(|_| SendError::Stopping)?;
        rx.await.map_err(|_| SendError::Stopping)?
    }

    /// Events after `after`, waiting up to `limit` for the first.
    pub async fn events(&self, after: u64, limit: Duration) -> Vec<api::WatchEvent> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Input::Events { after, reply }).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(limit, rx)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default()
    }

    /// A page of the inbox, newest first (`None` while the node stops;
    /// `Some(Err)` when the history index failed).
    pub async fn inbox_page(&self, page: Page) -> Option<Result<Vec<InboxEntry>, String>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Query(Query::Inbox(page, tx)))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// A page of the outbox, newest first.
    pub async fn outbox_page(&self, page: Page) -> Option<Result<Vec<OutboxEntry>, String>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Query(Query::Outbox(page, tx)))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The whole inbox, oldest first (paged through the index).
    pub async fn inbox(&self) -> Option<Vec<InboxEntry>> {
        let mut walk = PageWalk::default();
        loop {
            let items = self.inbox_page(walk.next()).await?.ok()?;
            if let Some(all) = walk.take(items, |e| e.log_index) {
                return Some(all);
            }
        }
    }

    /// The whole outbox, oldest first (paged through the index).
    pub async fn outbox(&self) -> Option<Vec<OutboxEntry>> {
        let mut walk = PageWalk::default();
        loop {
            let items = self.outbox_page(walk.next()).await?.ok()?;
            if let Some(all) = walk.take(items, |e| e.log_index) {
                return Some(all);
            }
        }
    }

    /// Status.
    pub async fn status(&self) -> Option<StatusResponse> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Query(Query::Status(tx))).await.ok()?;
        rx.await.ok()
    }
}

/// A started node.
pub struct RunningNode {
    /// In-process handle.
    pub handle: NodeHandle,
    /// QUIC address.
    pub quic_addr: SocketAddr,
    /// Control API address, when served.
    pub control_addr: Option<SocketAddr>,
    /// Notified when the control API asks the node to stop.
    pub stop_requested: Arc<Notify>,
    office: OfficeName,
    endpoint: quinn::Endpoint,
    actor: tokio::task::JoinHandle<Result<(), NodeError>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    control_shutdown: Option<oneshot::Sender<()>>,
    run_files: Vec<std::path::PathBuf>,
    _lock: std::fs::File,
}

impl RunningNode {
    /// This office.
    pub fn office(&self) -> &OfficeName {
        &self.office
    }

    /// Stops cleanly: records the stop, flushes, closes connections.
    pub async fn stop(self) -> Result<(), NodeError> {
        let (done, rx) = oneshot::channel();
        let _ = self.handle.tx.send(Input::Shutdown(done)).await;
        let _ = rx.await;
        self.finish().await
    }

    /// Waits for the node to end on its own (a fatal error).
    pub async fn finish(mut self) -> Result<(), NodeError> {
        let result = (&mut self.actor)
            .await
            .unwrap_or_else(|e| Err(NodeError::Internal(e.to_string())));
        for t in &self.background {
            t.abort();
        }
        if let Some(tx) = self.control_shutdown.take() {
            let _ = tx.send(());
        }
        self.endpoint.close(
            quinn::VarInt::from_u32(link::close_code::SHUTDOWN),
            b"office closing",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        for f in &self.run_files {
            let _ = std::fs::remove_file(f);
        }
        result
    }

    /// Whether the actor has ended (a fatal error stops it).
    pub fn is_finished(&self) -> bool {
        self.actor.is_finished()
    }
}

/// Starts a node for `office`: locks its directory, recovers and replays the
/// log, listens, dials pinned peers, and serves the control API if asked.
pub async fn start(office: Office, opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let dir = office.dir.clone();
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| NodeError::Io { path, source }
    };
    dir.check_private()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let run = dir.root().join("run");
    if !run.exists() {
        files::create_private_dir(&run).map_err(io(&run))?;
    }
    let lock = files::private_open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.lock())
        .map_err(io(&dir.lock()))?;
    // The CLI takes the lock for an instant to tell a stale control.addr
    // from a running node: a few tries before concluding another node has it.
    let mut tries = 0u32;
    while lock.try_lock().is_err() {
        tries = tries.saturating_add(1);
        if tries >= 20 {
            return Err(NodeError::AlreadyRunning(dir.root().display().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let log_dir = dir.log().parent().map(std::path::Path::to_path_buf);
    if let Some(d) = log_dir.filter(|d| !d.exists()) {
        files::create_private_dir(&d).map_err(io(&d))?;
    }
    // On a full disk, say so and stop before writing anything (the
    // history index's catch-up included): a node
    // restarted again and again must not leave a new torn tail each time.
    if let Ok(free) = crate::audit::free_bytes(dir.root()) {
        if free < START_FREE_BYTES {
            return Err(NodeError::Log(LogError::DiskFull {
                path: dir.log(),
                detail: format!(
                    "{free} bytes free on its file system; the node needs {START_FREE_BYTES} to start"
                ),
            }));
        }
    }
    let offline::NodeLoad {
        mut core,
        history,
        mut log,
        recovered,
        snapshot: from_snapshot,
    } = offline::open_for_node(&office)?;
    log.set_segment_bytes(office.config.storage.segment_bytes);
    match from_snapshot {
        Some((k, _)) => tracing::info!(
            "started from the snapshot after entry {k}; replayed the {} entries after it",
            recovered.entries.saturating_sub(k)
        ),
        None if recovered.entries > 0 => tracing::info!(
            "no usable snapshot; replayed all {} entries",
            recovered.entries
        ),
        None => {}
    }
    let reader = crate::audit::LogReader::open(&dir.log())?;
    // A certificate rotation every peer accepted, or one a crash cut short
    // mid-switch, is completed before the transport starts.
    let accepted_by_all = match (core.card_offer(), rotation::load_next(&dir)) {
        (Some((fp, waiting)), Some(next)) => waiting.is_empty() && next.fingerprint == fp,
        _ => false,
    };
    let switched = if accepted_by_all {
        rotation::switch(&dir).map(|()| true)
    } else {
        rotation::finish_switch(&dir)
    }
    .map_err(|e| NodeError::Config(e.to_string()))?;
    // A peer's card update the log holds but its card file lacks (the
    // node stopped between the two): store it now, or the line to that
    // peer would be refused when it presents its new certificate.
    let mut repaired = false;
    for (peer, u) in core.pinned_card_updates() {
        let on_file = office.peers.iter().find(|p| &p.name == peer);
        // Only when the file still holds the card the update replaced: a
        // card pinned by hand since then stays.
        if let Some(p) = on_file.filter(|p| p.card.fingerprint == u.old_fingerprint) {
            let card = crate::identity::OfficeCard::from_update(u, p.card.address.clone())
                .map_err(|e| NodeError::Config(format!("{peer}'s logged card update: {e}")))?;
            rotation::store_peer_card(&dir, &card).map_err(|e| NodeError::Config(e.to_string()))?;
            tracing::warn!(%peer, "stored {peer}'s card {} from the log (the node had stopped before storing it)", card.fingerprint);
            repaired = true;
        }
    }
    let office = if switched || repaired {
        let office = dir.load().map_err(|e| NodeError::Config(e.to_string()))?;
        if switched {
            tracing::info!("switched to the rotated card {}", office.card.fingerprint);
            // The core replayed the log with the keys of the card before.
            core.switch_own_keys(offline::office_keys(&office));
        }
        office
    } else {
        office
    };
    // A relay takes back the sealed frames it still holds.
    restore_spool(&mut core, &dir.root().join("spool"));
    if let Some(t) = &recovered.torn {
        tracing::warn!(
            "log recovery: removed a torn tail of {} bytes at offset {} ({})",
            t.bytes,
            t.offset,
            t.why
        );
    }
    let clock = Clock::new();
    let fingerprints = fingerprints_of(&office);
    core.start(
        clock.now(),
        concat!("hotline ", env!("CARGO_PKG_VERSION")),
        recovered.torn.as_ref().map(|t| (t.offset, t.bytes)),
        &fingerprints,
    );
    let (sent, received) = history.counts()?;
    tracing::info!(
        office = %office.config.office,
        entries = recovered.entries,
        "log replayed: {} entries, {received} received, {sent} sent, {} open",
        recovered.entries,
        core.status().iter().map(|c| c.outbox_len).sum::<usize>()
    );

    // Transport.
    let pins: Vec<tls::Pin> = office
        .peers
        .iter()
        .map(tls::Pin::of)
        .collect::<Result<_, _>>()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    pin_peer_cas(&mut core, &office);
    let identity = Arc::new(TransportIdentity {
        cert: office.node_cert.clone(),
        key: office.node_key.clone_key(),
        pins,
    });
    let transport = Arc::new(transport_config(&office.config.timing));
    let server_config = identity.server_config(&transport)?;
    let (identity_tx, identity_rx) = watch::channel(identity);
    let listen: SocketAddr = office.config.listen.parse().map_err(|_| {
        NodeError::Config(format!(
            "listen address {:?} is not HOST:PORT",
            office.config.listen
        ))
    })?;
    let endpoint =
        quinn::Endpoint::server(server_config, listen).map_err(|source| NodeError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let quic_addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
        addr: listen.to_string(),
        source,
    })?;

    let (tx, rx, normal_rx) = ActorTx::new();
    let (links_up, links_rx) = watch::channel(BTreeSet::new());
    let handle = NodeHandle { tx: tx.clone() };
    let me = office.config.office.clone();
    let mut background = Vec::new();

    background.push(tokio::spawn(transport_identity::follow(
        endpoint.clone(),
        identity_rx.clone(),
        transport.clone(),
    )));
    background.push(tokio::spawn(dialer::accept_loop(
        endpoint.clone(),
        identity_rx.clone(),
        tx.clone(),
    )));
    let mut dial = HashMap::new();
    for peer in &office.peers {
        let Some(addr) = peer.addr else { continue };
        dial.insert(peer.name.clone(), addr.to_string());
        background.push(tokio::spawn(dialer::dial_loop(dialer::Dialer {
            endpoint: endpoint.clone(),
            me: me.clone(),
            peer: peer.name.clone(),
            addr,
            identity: identity_rx.clone(),
            transport: transport.clone(),
            actor: tx.clone(),
            links_up: links_rx.clone(),
            min: Duration::from_millis(office.config.timing.reconnect_min_ms),
            max: Duration::from_millis(office.config.timing.reconnect_max_ms),
        })));
    }

    let node_cert_not_after_ms =
        crate::identity::tls_material::not_after_unix_ms(office.node_cert.as_ref());
    if let Some(w) = node_cert_not_after_ms
        .and_then(|t| crate::identity::tls_material::expiry_warning(t, wall_ms()))
    {
        tracing::warn!("{w}");
    }
    let facts = Facts {
        office: me.clone(),
        fingerprint: office.card.fingerprint.clone(),
        listen: quic_addr.to_string(),
        node_cert_not_after_ms,
        dial,
        evidence_dir: dir.root().join("evidence"),
        spool_dir: dir.root().join("spool"),
        alert_command: office.config.escalation.alert_command.clone(),
        dir: dir.clone(),
        card: office.card.clone(),
        identity: identity_tx,
        log_dir: dir
            .log()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| dir.root().to_path_buf()),
        min_free_bytes: office.config.storage.min_free_bytes,
    };
    // After a core panic the actor rebuilds the core exactly as here: the
    // log's entries replayed, the relay's spool restored, then started.
    // The office is read again each time: a rotation since the start may
    // have changed its card, its keys and its peers' cards.
    let reload_dir = dir.clone();
    let reload: actor::Reload = Box::new(move |now| {
        let reload_office = reload_dir
            .load()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let mut core = offline::load_core(&reload_office)?;
        pin_peer_cas(&mut core, &reload_office);
        core.check_own_checkpoint()?;
        restore_spool(&mut core, &reload_office.dir.root().join("spool"));
        let fingerprints = fingerprints_of(&reload_office);
        core.start(
            now,
            concat!(
                "hotline ",
                env!("CARGO_PKG_VERSION"),
                " (restarted after a core panic)"
            ),
            None,
            &fingerprints,
        );
        Ok(core)
    });
    let actor = Actor::new(core, log, clock, facts, (rx, normal_rx), links_up)
        .with_reload(reload)
        .with_history(history, reader);
    let every = office.config.timing.snapshot_every;
    let actor = if every > 0 {
        let mut schedule = crate::core::SnapshotSchedule::new(every);
        if let Some((entries, cosigned)) = from_snapshot {
            schedule.taken(entries, cosigned);
        }
        actor.with_snapshots(actor::Snapshots {
            path: dir.snapshot(),
            schedule,
        })
    } else {
        actor
    };
    let actor = tokio::spawn(actor.run());

    let mut run_files = vec![dir.quic_addr()];
    files::write_private(&dir.quic_addr(), format!("{quic_addr}\n").as_bytes())
        .map_err(io(&dir.quic_addr()))?;
    let stop_requested = Arc::new(Notify::new());
    let mut control_addr = None;
    let mut control_shutdown = None;
    if opts.control_api {
        let (addr, shutdown) = control_server::serve(
            &office.config.control,
            office.control_token.clone(),
            handle.clone(),
            stop_requested.clone(),
        )
        .await?;
        files::write_private(&dir.control_addr(), format!("{addr}\n").as_bytes())
            .map_err(io(&dir.control_addr()))?;
        run_files.push(dir.control_addr());
        control_addr = Some(addr);
        control_shutdown = Some(shutdown);
    }
    tracing::info!(office = %me, %quic_addr, control = ?control_addr, "node running");
    Ok(RunningNode {
        handle,
        quic_addr,
        control_addr,
        stop_requested,
        office: me,
        endpoint,
        actor,
        background,
        control_shutdown,
        run_files,
        _lock: lock,
    })
}

/// A relay takes back the sealed frames it still holds.
fn restore_spool(core: &mut crate::core::Core, spool_dir: &std::path::Path) {
    for hash in core.spool_needed() {
        match spool::read(spool_dir, &hash) {
            Some(bytes) if core.restore_spooled(hash, &bytes) => {}
            _ => tracing::error!(
                "spooled frame {} is missing or damaged; it cannot be forwarded",
                hex::encode(hash)
            ),
        }
    }
}

/// The pinned peers' card fingerprints, for the core's start entry.
fn fingerprints_of(office: &Office) -> Vec<(OfficeName, String)> {
    office
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.card.fingerprint.clone()))
        .collect()
}

/// Bytes of QUIC DATAGRAMs buffered each way per connection (§8b).
const DATAGRAM_BUFFER_BYTES: usize = 64 * 1024;

/// Tells the core each peer's CA and role, which a card update must keep,
/// and whose updates the operator confirms.
fn pin_peer_cas(core: &mut crate::core::Core, office: &Office) {
    for peer in &office.peers {
        let confirm = office
            .config
            .peers
            .get(peer.name.as_str())
            .is_some_and(|p| p.confirm_card_updates);
        core.require_card_confirmation(&peer.name, confirm);
        if let Ok(ca) = peer.card.ca_cert_der() {
            core.pin_peer_ca(
                &peer.name,
                crate::wire::sha256(ca.as_ref()),
                &peer.card.role,
            );
        }
    }
}

fn transport_config(t: &crate::identity::config::Timing) -> quinn::TransportConfig {
    let mut c = quinn::TransportConfig::default();
    c.max_concurrent_bidi_streams(0u32.into());
    c.max_concurrent_uni_streams(link::MAX_PEER_STREAMS.into());
    // Out of QUIC's range (2^62 ms) only by a typo in hotline.toml: no idle
    // timeout is then safer than a panic.
    c.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_millis(t.idle_timeout_ms)).ok());
    c.keep_alive_interval(Some(Duration::from_millis(t.keep_alive_ms)));
    // Datagrams carry only copies of line checks (a few hundred bytes a
    // second): a small buffer each way bounds what a peer's flood can hold.
    c.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER_BYTES));
    c.datagram_send_buffer_size(DATAGRAM_BUFFER_BYTES);
    c
}

/// Hands a refused connection to the actor's book, which keeps it in
/// `status` and logs it within a budget (see [`refusals`]).
/// `dialing` names the peer when the failed connection was ours to it.
pub(crate) async fn refuse(
    actor: &ActorTx,
    remote: SocketAddr,
    error: String,
    dialing: Option<&OfficeName>,
) {
    let why = tls::HandshakeFailure::classify(&error);
    let reason = match dialing {
        Some(peer) => format!("line to {peer}: {}", why.explain()),
        None => why.explain().to_string(),
    };
    let _ = actor
        .send(Input::Refused(refusals::Attempt {
            remote: remote.to_string(),
            kind: why.slug(),
            presents_identity: why.presents_identity(),
            reason,
            error,
        }))
        .await;
}
