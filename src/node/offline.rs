//! Reading a node's state from its log while no node runs.

use crate::audit::{self, LogReader};
use crate::control::api::{InboxEntry, OutboxEntry};
use crate::core::{Core, OfficeKeys, PeerKeys, Timing};
use crate::history::views::{self, Page};
use crate::history::{CatchUp, History};
use crate::identity::Office;

/// The office's own keys, as the core takes them.
pub fn office_keys(office: &Office) -> OfficeKeys {
    OfficeKeys {
        message: office.message_key.clone(),
        log: office.log_key.clone(),
        seal: *office.seal_private,
    }
}

/// A core for `office` with its keys, its peers' keys and its timing.
/// Seal keys a rotation keeps (`keys/seal.previous.key`, or the next
/// one while a rotation waits) open too.
pub fn new_core(office: &Office) -> Core {
    let t = &office.config.timing;
    let mut core = Core::new(
        office.config.office.clone(),
        office_keys(office),
        office.peers.iter().map(|p| PeerKeys {
            office: p.name.clone(),
            message: p.message_key,
            log: p.log_key,
            seal: p.seal_key,
            relays: p.relays.clone(),
        }),
        Timing {
            rto_ms: t.retransmit_ms,
            rto_max_ms: t.retransmit_max_ms,
            checkpoint_every: t.checkpoint_every.max(1),
            checkpoint_interval_ms: t.checkpoint_interval_ms,
        },
    );
    let e = &office.config.escalation;
    core.set_policy(e.policy.scaled(e.time_scale));
    core.set_relay_role(office.card.is_relay());
    for secret in crate::identity::rotation::extra_seal_secrets(&office.dir) {
        core.add_seal_opener(secret);
    }
    core
}

/// Why a node's snapshot was not used.
enum Unused {
    Missing,
    Bad(String),
}

/// A core restored from the node's snapshot, after checking that the log
/// still holds the entries it folded: the last of them where the snapshot
/// says, hashing to the leaf the synced tree file holds, whose root is the
/// snapshot's (and proves the checkpoint it names).
fn from_snapshot(office: &Office) -> Result<(Core, Box<crate::wire::store::Snapshot>), Unused> {
    use super::snapshot_file::{read, Read};
    let s = match read(&office.dir.snapshot()) {
        Read::Missing => return Err(Unused::Missing),
        Read::Damaged(why) => return Err(Unused::Bad(why)),
        Read::Found(s) => s,
    };
    let bad = |why: String| Unused::Bad(why);
    let root: [u8; 32] = s
        .root
        .as_slice()
        .try_into()
        .map_err(|_| bad("its root is not 32 bytes".into()))?;
    let last = if s.entries > 0 {
        let log = LogReader::open(&office.dir.log()).map_err(|e| bad(e.to_string()))?;
        let e = log
            .read_at(s.last_entry_offset)
            .map_err(|e| bad(format!("the log has no entry where it ends: {e}")))?;
        let end = e
            .offset
            .saturating_add(audit::RECORD_HEADER_LEN as u64)
            .saturating_add(e.bytes.len() as u64);
        if e.entry.index.saturating_add(1) != s.entries || end != s.log_offset {
            return Err(bad(format!(
                "the log's entry at byte {} is entry {}, ending at {end}; the snapshot ends after entry {} at {}",
                s.last_entry_offset,
                e.entry.index,
                s.entries.saturating_sub(1),
                s.log_offset
            )));
        }
        Some(audit::merkle::leaf_hash(&e.bytes))
    } else {
        None
    };
    let tree = audit::merkle::Tree::resume_file(
        &office.dir.tree_hashes(),
        s.entries,
        audit::merkle::Hash(root),
    )
    .map_err(bad)?;
    if let Some(leaf) = last {
        if tree.leaf(s.entries.saturating_sub(1)) != Some(leaf) {
            return Err(bad(
                "the log's last entry before it is not the one its tree holds (the log was replaced)"
                    .into(),
            ));
        }
    }
    let mut core = new_core(office);
    core.restore(&s, tree).map_err(|e| bad(e.to_string()))?;
    Ok((core, s))
}

/// A fresh core for the running node: its Merkle hashes kept in
/// `log/tree.hashes`, rewritten as the log replays. A snapshot relies on
/// the hashes it covers staying as they were synced: it is removed first.
fn node_core(office: &Office) -> Result<Core, super::NodeError> {
    let snapshot = office.dir.snapshot();
    match std::fs::remove_file(&snapshot) {
        Ok(()) => {
            if let Some(dir) = snapshot.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(super::NodeError::Config(format!(
                "cannot remove {}: {e}",
                snapshot.display()
            )))
        }
    }
    let mut core = new_core(office);
    let path = office.dir.tree_hashes();
    core.keep_tree_in(&path)
        .map_err(|e| super::NodeError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(core)
}

/// The running node's core rebuilt from its snapshot and the log after it
/// (or the whole log), as after a crash: how the node recovers from a core
/// panic. The log is not written; the tree's hash file is.
pub fn load_core(office: &Office) -> Result<Core, super::NodeError> {
    let (core, snapshot) = node_start(office)?;
    let start = snapshot
        .as_deref()
        .map(|s| snapshot_start(s, &core))
        .unwrap_or_default();
    replay_from(core, office, start)
}

/// Feeds `core` the office's log from `start` on.
fn replay_from(
    mut core: Core,
    office: &Office,
    start: audit::ScanStart,
) -> Result<Core, super::NodeError> {
    let mut err = None;
    audit::scan_from(&office.dir.log(), start, |e| {
        if err.is_none() {
            err = core.replay(&e.entry, &e.bytes).err();
        }
    })?;
    match err {
        Some(e) => Err(e.into()),
        None => Ok(core),
    }
}

/// What a node reads at start.
pub struct NodeLoad {
    /// Its core: restored from its snapshot and fed the log's tail, or fed
    /// the whole log.
    pub core: Core,
    /// Its history index, caught up with the log.
    pub history: History,
    /// Its log, open for appending (a torn tail cut off).
    pub log: audit::LogWriter,
    /// What opening the log recovered.
    pub recovered: audit::Recovered,
    /// The snapshot it started from: (entries, cosigned size it recorded).
    pub snapshot: Option<(u64, u64)>,
}

/// Reads an office's state as its node starts: from the snapshot when it
/// can, then the log after it (the node holds the directory's lock).
pub fn open_for_node(office: &Office) -> Result<NodeLoad, super::NodeError> {
    let mut loader = Loader::new(office, true)?;
    let start = loader.start();
    let snapshot = loader.snapshot().map(|s| (s.entries, s.cosigned_size));
    let (log, recovered) =
        audit::LogWriter::open_from(&office.dir.log(), start, |e| loader.feed(e))?;
    let (core, history) = loader.finish(recovered.entries)?;
    Ok(NodeLoad {
        core,
        history,
        log,
        recovered,
        snapshot,
    })
}

/// A core fed the office's whole log, its tree in memory, reading no
/// snapshot and writing nothing: the reference a snapshot start must equal.
pub fn replay_all(office: &Office) -> Result<Core, super::NodeError> {
    replay_from(new_core(office), office, audit::ScanStart::default())
}

/// The running node's core before the log is read: restored from its
/// snapshot, or fresh (saying why loudly when a snapshot is there but
/// cannot be used).
fn node_start(
    office: &Office,
) -> Result<(Core, Option<Box<crate::wire::store::Snapshot>>), super::NodeError> {
    match from_snapshot(office) {
        Ok((core, s)) => Ok((core, Some(s))),
        Err(Unused::Missing) => Ok((node_core(office)?, None)),
        Err(Unused::Bad(why)) => {
            tracing::warn!(
                "the snapshot {} cannot be used ({why}); replaying the whole log instead",
                office.dir.snapshot().display()
            );
            Ok((node_core(office)?, None))
        }
    }
}

/// Where the log is read from after snapshot `s`.
fn snapshot_start(s: &crate::wire::store::Snapshot, core: &Core) -> audit::ScanStart {
    audit::ScanStart {
        offset: s.log_offset,
        index: s.entries,
        covered: core.latest_checkpoint().map_or(0, |c| c.size),
        last_entry_offset: s.last_entry_offset,
    }
}

/// Replays an office's log into a fresh core and brings its history index
/// up to date on the way: the one reading of the log at start, used by the
/// node and by the views read while no node runs. The node's core starts
/// from its snapshot when one is whole and matches the log (then only the
/// entries after it are read), else from nothing.
pub struct Loader {
    core: Core,
    history: History,
    catch_up: CatchUp,
    replay_err: Option<crate::core::ReplayError>,
    history_err: Option<crate::history::HistoryError>,
    index_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
    start: audit::ScanStart,
    snapshot: Option<crate::wire::store::Snapshot>,
}

impl Loader {
    /// A fresh core for `office` and its history index, opened (or
    /// replaced, when the store cannot read it). `for_node`: the core is the
    /// running node's (its Merkle hashes go to their file, and it starts
    /// from the node's snapshot if it can); otherwise nothing but the index
    /// is written.
    pub fn new(office: &Office, for_node: bool) -> Result<Self, super::NodeError> {
        let index_path = office.dir.history();
        let (history, replaced) = crate::history::open_or_replace(&index_path)?;
        if replaced {
            tracing::warn!(
                "the history index {} could not be opened or has an older layout; rebuilding it from the log",
                index_path.display()
            );
        }
        let catch_up = CatchUp::new(&history)?;
        let (core, snapshot) = if for_node {
            node_start(office)?
        } else {
            (new_core(office), None)
        };
        let snapshot = snapshot.map(|s| *s);
        let mut start = audit::ScanStart::default();
        if let Some(s) = &snapshot {
            start = snapshot_start(s, &core);
            // An index behind the snapshot (its tail since its last durable
            // commit lost in a crash) is caught up from where it stands,
            // if that is a point of this log.
            let pos = *catch_up.position();
            if pos.next_index < s.entries {
                let here = core.tree().root_at(pos.next_index).map(|r| r.0);
                start = if pos.next_index > 0 && here == Some(pos.root) {
                    audit::ScanStart {
                        offset: pos.next_offset,
                        index: pos.next_index,
                        covered: start.covered,
                        last_entry_offset: 0,
                    }
                } else {
                    audit::ScanStart {
                        covered: start.covered,
                        ..Default::default()
                    }
                };
            }
        }
        Ok(Loader {
            core,
            history,
            catch_up,
            replay_err: None,
            history_err: None,
            index_path,
            log_path: office.dir.log(),
            start,
            snapshot,
        })
    }

    /// Where reading the log starts.
    pub fn start(&self) -> audit::ScanStart {
        self.start
    }

    /// The snapshot the core started from, if it did.
    pub fn snapshot(&self) -> Option<&crate::wire::store::Snapshot> {
        self.snapshot.as_ref()
    }

    /// The next entry of the log.
    pub fn feed(&mut self, e: audit::StoredEntry) {
        if self.replay_err.is_some() || self.history_err.is_some() {
            return;
        }
        let index = e.entry.index;
        // An entry a snapshot already holds goes to the index only.
        if index >= self.core.next_index() {
            if let Err(err) = self.core.replay(&e.entry, &e.bytes) {
                self.replay_err = Some(err);
                return;
            }
        }
        // The roots are asked for only at the index's position and at
        // each batch it writes: computed then, not for every entry.
        let tree = self.core.tree();
        let r = self.catch_up.feed(
            &mut self.history,
            e,
            || tree.root_at(index).map(|r| r.0).unwrap_or_default(),
            || {
                tree.root_at(index.saturating_add(1))
                    .map(|r| r.0)
                    .unwrap_or_default()
            },
        );
        if let Err(err) = r {
            self.history_err = Some(err);
        }
    }

    /// After the last of `entries`: checks the log against the core's own
    /// checkpoint, and rebuilds the index if it reflected another log.
    pub fn finish(self, entries: u64) -> Result<(Core, History), super::NodeError> {
        let Loader {
            core,
            mut history,
            catch_up,
            replay_err,
            history_err,
            index_path,
            log_path,
            ..
        } = self;
        if let Some(e) = replay_err {
            return Err(e.into());
        }
        if let Some(e) = history_err {
            return Err(e.into());
        }
        core.check_own_checkpoint()?;
        let catch_up = catch_up.finish(&mut history, entries, core.tree().root().0)?;
        if catch_up.mismatch {
            tracing::warn!(
                "the history index {} does not match this log (the log was replaced or cut back); rebuilding it",
                index_path.display()
            );
            rebuild_history(&mut history, &log_path, core.tree())?;
        } else if catch_up.folded > 0 {
            tracing::info!("history index: caught up {} entries", catch_up.folded);
        }
        Ok((core, history))
    }
}

/// The core and the history index of an office whose node is not
/// running, read from its log (nothing is appended to the log).
pub fn load_with_history(office: &Office) -> Result<(Core, History, LogReader), super::NodeError> {
    let mut loader = Loader::new(office, false)?;
    let summary = audit::scan(&office.dir.log(), |e| loader.feed(e))?;
    let (core, history) = loader.finish(summary.entries)?;
    let reader = LogReader::open(&office.dir.log())?;
    Ok((core, history, reader))
}

/// A page of the inbox as the log records it.
pub fn inbox(
    (_, h, log): &(Core, History, LogReader),
    page: Page,
) -> Result<Vec<InboxEntry>, super::NodeError> {
    views::inbox(h, log, page)
        .map(|p| p.items)
        .map_err(|e| super::NodeError::Config(e.to_string()))
}

/// A page of the outbox as the log records it.
pub fn outbox(
    (core, h, log): &(Core, History, LogReader),
    page: Page,
) -> Result<Vec<OutboxEntry>, super::NodeError> {
    let pending = |peer: &str, seq: u64| core.pending_state(peer, seq);
    views::outbox(h, log, page, &pending)
        .map(|p| p.items)
        .map_err(|e| super::NodeError::Config(e.to_string()))
}

/// Empties the history index and folds the whole log into it again.
fn rebuild_history(
    history: &mut History,
    log: &std::path::Path,
    tree: &crate::audit::merkle::Tree,
) -> Result<(), super::NodeError> {
    history.clear()?;
    let mut catch_up = crate::history::CatchUp::new(history)?;
    let mut err = None;
    let summary = crate::audit::scan(log, |e| {
        if err.is_some() {
            return;
        }
        let i = e.entry.index;
        let root_before = || tree.root_at(i).map(|r| r.0).unwrap_or_default();
        let root_after = || {
            tree.root_at(i.saturating_add(1))
                .map(|r| r.0)
                .unwrap_or_default()
        };
        if let Err(e) = catch_up.feed(history, e, root_before, root_after) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    let root = tree
        .root_at(summary.entries)
        .map(|r| r.0)
        .unwrap_or_default();
    catch_up.finish(history, summary.entries, root)?;
    Ok(())
}
