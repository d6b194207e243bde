//! `hotline.toml`, the node's configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::OfficeName;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This office's name.
    pub office: OfficeName,
    /// QUIC listen address, `HOST:PORT` (port 0 picks a free port).
    pub listen: String,
    /// Control API address; must be loopback (port 0 picks a free port; the
    /// running node writes the real one to `run/control.addr`).
    #[serde(default = "default_control")]
    pub control: String,
    /// Protocol timing.
    #[serde(default)]
    pub timing: Timing,
    /// Escalation policy, line checks and alerts.
    #[serde(default)]
    pub escalation: Escalation,
    /// Disk space the node keeps in hand.
    #[serde(default)]
    pub storage: Storage,
    /// Pinned peers by office name.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerConfig>,
}

/// The `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Below this many free bytes on the log's file system the node
    /// refuses new sends, acknowledgements and alert-level changes ("disk
    /// full", exit code 9) and keeps the rest for what peers send it: their
    /// messages are still logged and receipted.
    pub min_free_bytes: u64,
    /// The log is a series of segment files: one that has reached this
    /// many bytes is sealed at the next checkpoint and a new one begun.
    pub segment_bytes: u64,
}

/// 64 MiB: tens of thousands of incoming messages.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

impl Default for Storage {
    fn default() -> Self {
        Storage {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            segment_bytes: crate::audit::segments::SEGMENT_BYTES,
        }
    }
}

/// The `[escalation]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Escalation {
    /// Multiplies every deadline and interval (a drill at 0.01 runs a
    /// 10-minute deadline in 6 s).
    pub time_scale: f64,
    /// A local command run (by `sh -c`) on every duty-officer alert, with
    /// HOTLINE_PEER, HOTLINE_MESSAGE and HOTLINE_ALERT in its environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_command: Option<String>,
    /// Ladders per precedence and line-check intervals (see
    /// docs/operations.md); absent parts take the defaults.
    pub policy: crate::core::policy::Policy,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            time_scale: 1.0,
            alert_command: None,
            policy: crate::core::policy::Policy::default(),
        }
    }
}

fn default_control() -> String {
    "127.0.0.1:0".into()
}

/// A pinned peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Path of the peer's card, relative to the office directory.
    pub card: String,
    /// Address to dial; absent means "use the card's", empty means never
    /// dial (wait for the peer to call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Relays (pinned peers with role "relay") that may carry messages to
    /// this peer when the direct line fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Hold this peer's in-band card updates until the operator confirms
    /// the new fingerprint, read aloud (`hotline peer confirm-card`),
    /// instead of pinning them on the signature alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm_card_updates: bool,
}

/// Timing knobs, all in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// First retransmission timeout for an unreceipted message; doubles per
    /// attempt up to `retransmit_max_ms`.
    pub retransmit_ms: u64,
    /// Cap on the retransmission timeout.
    pub retransmit_max_ms: u64,
    /// First reconnect delay; doubles per failure up to `reconnect_max_ms`,
    /// with ±50 % jitter.
    pub reconnect_min_ms: u64,
    /// Cap on the reconnect delay.
    pub reconnect_max_ms: u64,
    /// QUIC idle timeout: a line silent this long is declared down.
    pub idle_timeout_ms: u64,
    /// QUIC keep-alive interval.
    pub keep_alive_ms: u64,
    /// Issue a log checkpoint after this many new entries...
    pub checkpoint_every: u64,
    /// ...or this long after the first entry the last one does not cover.
    pub checkpoint_interval_ms: u64,
    /// Write a snapshot of the node's state (log/snapshot) once a peer has
    /// cosigned a newer checkpoint and at least this many entries were
    /// logged since the last one; the node then starts by replaying only
    /// the entries after it. 0: never.
    pub snapshot_every: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            retransmit_ms: 1_000,
            retransmit_max_ms: 16_000,
            reconnect_min_ms: 200,
            reconnect_max_ms: 10_000,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 2_000,
            checkpoint_every: 256,
            checkpoint_interval_ms: 10_000,
            snapshot_every: 65_536,
        }
    }
}

impl Config {
    /// A new config for `office` listening on `listen`.
    pub fn new(office: OfficeName, listen: String) -> Self {
        Config {
            office,
            listen,
            control: default_control(),
            timing: Timing::default(),
            escalation: Escalation::default(),
            storage: Storage::default(),
            peers: BTreeMap::new(),
        }
    }

    /// The file's text, with a header comment.
    pub fn to_toml(&self) -> String {
        format!(
            "# hotline node configuration (docs/architecture.md#configuration)\n{}",
            toml::to_string(self).expect("config serializes")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration example in docs/operations.md parses, and what it
    /// leaves out takes the defaults.
    #[test]
    fn the_documented_escalation_example_parses() {
        let doc = include_str!("../../docs/operations.md");
        let start = doc.find("```toml\n[escalation]").expect("example present") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed");
        let text = format!(
            "office = \"washington\"\nlisten = \"127.0.0.1:7701\"\n{}",
            &doc[start..end]
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        let p = &cfg.escalation.policy;
        assert_eq!(p.flash.steps.len(), 3);
        assert_eq!(p.line_checks.silent_after, 3);
        assert_eq!(p.routine, crate::core::policy::Policy::default().routine);
        assert!(cfg.escalation.alert_command.is_some());
        // And a config written by `init` round-trips.
        let fresh = Config::new(OfficeName::new("washington").unwrap(), "127.0.0.1:1".into());
        let back: Config = toml::from_str(&fresh.to_toml()).unwrap();
        assert_eq!(back, fresh);
    }

    /// The peer-level switch of docs/operations.md parses; it is on when
    /// left out.
    #[test]
    fn the_peer_level_switch_parses_and_defaults_to_on() {
        let doc = include_str!("../../docs/operations.md");
        let start = doc
            .find("```toml\n[escalation.policy]\npeer_raises_level")
            .expect("example")
            + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed");
        let head = "office = \"washington\"\nlisten = \"127.0.0.1:7701\"\n";
        let cfg: Config = toml::from_str(&format!("{head}{}", &doc[start..end])).unwrap();
        assert!(!cfg.escalation.policy.peer_raises_level);
        let cfg: Config = toml::from_str(head).unwrap();
        assert!(cfg.escalation.policy.peer_raises_level);
    }
}
