//! Reading a node's state from its log while no node runs.

use crate::audit;
use crate::control::api::{InboxEntry, OutboxEntry};
use crate::core::{Core, Timing};
use crate::identity::Office;

/// Replays the office's log into a fresh core (nothing is written).
pub fn load_core(office: &Office) -> Result<Core, super::NodeError> {
    let mut core = Core::new(
        office.config.office.clone(),
        office.message_key.clone(),
        office.peers.iter().map(|p| (p.name.clone(), p.message_key)),
        Timing::default(),
    );
    let mut err = None;
    audit::scan(&office.dir.log(), |e| {
        if err.is_none() {
            err = core.replay(&e.entry).err();
        }
    })?;
    match err {
        Some(e) => Err(e.into()),
        None => Ok(core),
    }
}

/// The inbox as the log records it.
pub fn inbox(core: &Core) -> Vec<InboxEntry> {
    core.inbox().iter().map(InboxEntry::from).collect()
}

/// The outbox as the log records it.
pub fn outbox(core: &Core) -> Vec<OutboxEntry> {
    core.outbox().map(|o| OutboxEntry::new(o, None)).collect()
}
