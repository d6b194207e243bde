//! Fresh identities for a drill: one office directory per party under the
//! run directory, each pinned to the parties it may talk to, with the
//! drill's timing. Both runners start from the same directories, so every
//! `hotline audit` command works on a finished run.

use std::path::Path;

use crate::identity::config::Timing;
use crate::identity::{IdentityError, OfficeDir, OfficeName};

use super::scenario::Scenario;

/// Transport and retransmission timing for drill nodes (real ms, not
/// scaled: these are the machinery's reflexes, not the people's).
/// The simulator uses the same numbers so both modes behave alike.
pub fn drill_timing() -> Timing {
    Timing {
        retransmit_ms: 500,
        retransmit_max_ms: 4_000,
        reconnect_min_ms: 100,
        reconnect_max_ms: 1_000,
        idle_timeout_ms: 3_000,
        keep_alive_ms: 500,
        checkpoint_every: 64,
        checkpoint_interval_ms: 2_000,
        snapshot_every: 256,
    }
}

/// One party's directory.
#[derive(Debug, Clone)]
pub struct PartyDir {
    /// Its name.
    pub name: String,
    /// Relay (protecting power) rather than office.
    pub relay: bool,
    /// Its office directory.
    pub dir: OfficeDir,
}

/// Whether `a` and `b` pin each other: offices pin every office and every
/// relay; relays pin every office.
pub fn acquainted(scenario: &Scenario, a: &str, b: &str) -> bool {
    let relay = |n: &str| scenario.relays.iter().any(|r| r.name == n);
    a != b && !(relay(a) && relay(b))
}

/// Creates every party's directory under `run_dir` and pins the parties
/// to each other. `addr(a, b)` is where `a` dials `b` (empty: never dial).
/// `time_scale` is the effective scale the nodes' escalation policy runs at.
pub fn create(
    scenario: &Scenario,
    run_dir: &Path,
    time_scale: f64,
    addr: impl Fn(&str, &str) -> String,
) -> Result<Vec<PartyDir>, IdentityError> {
    let mut parties = Vec::new();
    for (list, relay) in [(&scenario.offices, false), (&scenario.relays, true)] {
        for p in list {
            let name = OfficeName::new(p.name.clone())
                .map_err(|e| IdentityError::Invalid(e.to_string()))?;
            let dir = OfficeDir::new(run_dir.join(&p.name));
            dir.init_with_role(&name, "127.0.0.1:0", if relay { "relay" } else { "office" })?;
            parties.push(PartyDir {
                name: p.name.clone(),
                relay,
                dir,
            });
        }
    }
    for me in &parties {
        for other in &parties {
            if acquainted(scenario, &me.name, &other.name) {
                me.dir
                    .add_peer(&other.dir.card(), Some(addr(&me.name, &other.name)), false)?;
            }
        }
        let mut cfg = me.dir.load_config()?;
        cfg.control = "127.0.0.1:0".into();
        cfg.timing = drill_timing();
        cfg.escalation.time_scale = time_scale;
        if let Some((party, false)) = scenario.party(&me.name) {
            for (peer, pc) in cfg.peers.iter_mut() {
                if scenario.offices.iter().any(|o| &o.name == peer) {
                    pc.relays = party.relays.clone();
                }
            }
        }
        me.dir.save_config(&cfg)?;
    }
    Ok(parties)
}

/// Points `me`'s entry for `peer` at `addr` (the live runner learns the
/// proxies' addresses after the directories exist).
pub fn set_peer_addr(me: &PartyDir, peer: &str, addr: &str) -> Result<(), IdentityError> {
    let mut cfg = me.dir.load_config()?;
    if let Some(pc) = cfg.peers.get_mut(peer) {
        pc.addr = Some(addr.to_string());
    }
    me.dir.save_config(&cfg)
}
