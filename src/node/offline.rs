//! Reading a node's state from its log while no node runs.

use crate::audit;
use crate::control::api::{InboxEntry, OutboxEntry};
use crate::core::{Core, OfficeKeys, PeerKeys, Timing};
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

/// Replays the office's log into a fresh core (nothing is written).
pub fn load_core(office: &Office) -> Result<Core, super::NodeError> {
    let mut core = new_core(office);
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

/// The inbox as the log records it.
pub fn inbox(core: &Core) -> Vec<InboxEntry> {
    core.inbox().iter().map(InboxEntry::from).collect()
}

/// The outbox as the log records it.
pub fn outbox(core: &Core) -> Vec<OutboxEntry> {
    core.outbox().map(|o| OutboxEntry::new(o, None)).collect()
}
