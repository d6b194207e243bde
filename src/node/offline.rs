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

/// A fresh core for the running node: its Merkle hashes kept in
/// `log/tree.hashes`, rewritten as the log replays.
fn node_core(office: &Office) -> Result<Core, super::NodeError> {
    let mut core = new_core(office);
    let path = office.dir.tree_hashes();
    core.keep_tree_in(&path)
        .map_err(|e| super::NodeError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(core)
}

/// Replays the office's log into a fresh core for the running node (the
/// log is not written; the tree's hash file is).
pub fn load_core(office: &Office) -> Result<Core, super::NodeError> {
    let mut core = node_core(office)?;
    let mut err = None;
    audit::scan(&office.dir.log(), |e| {
        if err.is_none() {
            err = core.replay(&e.entry, &e.bytes).err();
        }
    })?;
    match err {
        Some(e) => Err(e.into()),
        None => Ok(core),
    }
}

/// Replays an office's log into a fresh core and brings its history index
/// up to date on the way: the one reading of the log at start, used by the
/// node and by the views read while no node runs.
pub struct Loader {
    core: Core,
    history: History,
    catch_up: CatchUp,
    replay_err: Option<crate::core::ReplayError>,
    history_err: Option<crate::history::HistoryError>,
    index_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
}

impl Loader {
    /// A fresh core for `office` and its history index, opened (or
    /// replaced, when the store cannot read it). `for_node`: the core is the
    /// running node's (its Merkle hashes go to their file); otherwise
    /// nothing but the index is written.
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
        Ok(Loader {
            core: if for_node {
                node_core(office)?
            } else {
                new_core(office)
            },
            history,
            catch_up,
            replay_err: None,
            history_err: None,
            index_path,
            log_path: office.dir.log(),
        })
    }

    /// The next entry of the log.
    pub fn feed(&mut self, e: audit::StoredEntry) {
        if self.replay_err.is_some() || self.history_err.is_some() {
            return;
        }
        let root_before = self.core.tree().root().0;
        if let Err(err) = self.core.replay(&e.entry, &e.bytes) {
            self.replay_err = Some(err);
            return;
        }
        let tree = self.core.tree();
        let r = self
            .catch_up
            .feed(&mut self.history, e, || root_before, || tree.root().0);
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
