//! The node's book of refused connections: what an operator must see kept
//! apart from what any open port receives, and the log kept to a trickle.
//!
//! An unauthenticated sender can make the node refuse as many handshakes
//! as it likes. If every refusal were a log line, a status row and a
//! `watch` event, junk would fill the log, flush a real impostor out of
//! `status` and push alerts out of the event ring. So:
//!
//! - attempts that present an identity (a certificate from an unpinned
//!   CA, a certificate off the card, bad frames from a pinned office) are
//!   grouped by source address and kind, at most [`MAX_IDENTITY_ROWS`]
//!   rows, the least recently seen dropped first: junk never lands here;
//! - everything else is one counted row per kind;
//! - each kind may say at most [`TELL_PER_WINDOW`] things (log line and
//!   event) per [`WINDOW_MS`]; the rest are counted and summed up in one
//!   line when the window closes.
//!
//! Sans-IO: the caller passes the time and does the logging.

use std::collections::{BTreeMap, VecDeque};

use crate::control::api::Refusal;

/// Identity rows kept for `status`.
pub const MAX_IDENTITY_ROWS: usize = 32;
/// Log lines (and events) each kind may produce per window.
pub const TELL_PER_WINDOW: u64 = 5;
/// The sampling window.
pub const WINDOW_MS: u64 = 60_000;
/// The longest transport error text kept (it can carry a peer's close
/// reason, which the peer chooses).
pub const MAX_ERROR_BYTES: usize = 240;

/// One refused attempt, as the transport reported it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `ip:port`, or an office name for a bad frame.
    pub remote: String,
    /// [`super::tls::HandshakeFailure::slug`] or `bad-frame`.
    pub kind: &'static str,
    /// Kept apart from noise (see the module docs).
    pub presents_identity: bool,
    /// Why, in words.
    pub reason: String,
    /// The transport's error text (bounded when booked).
    pub error: String,
}

/// What the caller should do with an attempt just recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// Log it and raise an event.
    Tell,
    /// Counted only: this kind has said enough for this window.
    Quiet,
}

/// A closed window in which some attempts went unsaid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// The kind that went quiet.
    pub kind: &'static str,
    /// Attempts not logged.
    pub count: u64,
}

#[derive(Debug, Default)]
struct Window {
    start_ms: u64,
    told: u64,
    quiet: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct RefusalBook {
    identity: VecDeque<Refusal>,
    noise: BTreeMap<&'static str, Refusal>,
    windows: BTreeMap<&'static str, Window>,
}

/// The address without its port: one impostor host redialing from new
/// ports is one row.
fn host_of(remote: &str) -> &str {
    match remote.parse::<std::net::SocketAddr>() {
        Ok(_) => remote.rsplit_once(':').map_or(remote, |(h, _)| h),
        Err(_) => remote,
    }
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !s.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl RefusalBook {
    /// Records one attempt at `now_ms` (wall clock).
    pub fn record(&mut self, now_ms: u64, a: Attempt) -> Say {
        let error = bounded(a.error);
        if a.presents_identity {
            let host = host_of(&a.remote).to_string();
            let pos = self
                .identity
                .iter()
                .position(|r| r.kind == a.kind && host_of(&r.remote) == host);
            let row = match pos.and_then(|i| self.identity.remove(i)) {
                Some(mut r) => {
                    r.count = r.count.saturating_add(1);
                    r.unix_ms = now_ms;
                    r.remote = a.remote;
                    r.error = error;
                    r
                }
                None => {
                    if self.identity.len() >= MAX_IDENTITY_ROWS {
                        self.identity.pop_front();
                    }
                    Refusal {
                        unix_ms: now_ms,
                        first_unix_ms: now_ms,
                        count: 1,
                        remote: a.remote,
                        kind: a.kind.into(),
                        reason: a.reason,
                        error,
                    }
                }
            };
            // Most recently seen last.
            self.identity.push_back(row);
        } else {
            let row = self.noise.entry(a.kind).or_insert_with(|| Refusal {
                unix_ms: now_ms,
                first_unix_ms: now_ms,
                count: 0,
                remote: String::new(),
                kind: a.kind.into(),
                reason: a.reason,
                error: String::new(),
            });
            row.count = row.count.saturating_add(1);
            row.unix_ms = now_ms;
            row.remote = a.remote;
            row.error = error;
        }
        let w = self.windows.entry(a.kind).or_default();
        if now_ms.saturating_sub(w.start_ms) >= WINDOW_MS && w.quiet == 0 {
            // A fresh window (one with unsaid attempts waits for
            // `take_suppressed` so that its count is reported).
            *w = Window {
                start_ms: now_ms,
                ..Window::default()
            };
        }
        if w.told < TELL_PER_WINDOW {
            w.told = w.told.saturating_add(1);
            Say::Tell
        } else {
            w.quiet = w.quiet.saturating_add(1);
            Say::Quiet
        }
    }

    /// Windows that closed by `now_ms` with attempts left unsaid; each is
    /// reported once and the kind starts a fresh window.
    pub fn take_suppressed(&mut self, now_ms: u64) -> Vec<Suppressed> {
        let mut out = Vec::new();
        for (kind, w) in &mut self.windows {
            if w.quiet > 0 && now_ms.saturating_sub(w.start_ms) >= WINDOW_MS {
                out.push(Suppressed {
                    kind,
                    count: w.quiet,
                });
                *w = Window {
                    start_ms: now_ms,
                    ..Window::default()
                };
            }
        }
        out
    }

    /// Identity rows, least recently seen first.
    pub fn identity(&self) -> Vec<Refusal> {
        self.identity.iter().cloned().collect()
    }

    /// One row per noise kind.
    pub fn noise(&self) -> Vec<Refusal> {
        self.noise.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn junk(port: u16) -> Attempt {
        Attempt {
            remote: format!("127.0.0.9:{port}"),
            kind: "handshake-failed",
            presents_identity: false,
            reason: "handshake failed".into(),
            error: "x".repeat(10_000),
        }
    }

    fn impostor(ip: &str, port: u16) -> Attempt {
        Attempt {
            remote: format!("{ip}:{port}"),
            kind: "unknown-ca",
            presents_identity: true,
            reason: "unknown CA".into(),
            error: "UnknownIssuer".into(),
        }
    }

    #[test]
    fn a_flood_of_junk_neither_flushes_an_impostor_nor_says_more_than_its_budget() {
        let mut b = RefusalBook::default();
        assert_eq!(b.record(1_000, impostor("10.0.0.1", 5000)), Say::Tell);
        let told = (0..10_000u16)
            .filter(|&p| b.record(1_000 + u64::from(p), junk(p)) == Say::Tell)
            .count();
        assert_eq!(told as u64, TELL_PER_WINDOW);
        let id = b.identity();
        assert_eq!(id.len(), 1);
        assert_eq!(id[0].kind, "unknown-ca");
        let noise = b.noise();
        assert_eq!(noise.len(), 1);
        assert_eq!(noise[0].count, 10_000);
        assert!(noise[0].error.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        // Inside the window nothing is summed up yet; after it, once.
        assert!(b.take_suppressed(30_000).is_empty());
        assert_eq!(
            b.take_suppressed(1_000 + WINDOW_MS),
            vec![Suppressed {
                kind: "handshake-failed",
                count: 10_000 - TELL_PER_WINDOW
            }]
        );
        assert!(b.take_suppressed(1_000 + WINDOW_MS + 1).is_empty());
        // The next window speaks again.
        assert_eq!(b.record(2_000 + WINDOW_MS, junk(1)), Say::Tell);
    }

    #[test]
    fn one_impostor_redialing_is_one_row_and_many_keep_the_newest() {
        let mut b = RefusalBook::default();
        for port in 0..100 {
            b.record(u64::from(port), impostor("10.0.0.1", port));
        }
        let id = b.identity();
        assert_eq!(id.len(), 1);
        assert_eq!(id[0].count, 100);
        assert_eq!((id[0].first_unix_ms, id[0].unix_ms), (0, 99));
        for i in 0..(MAX_IDENTITY_ROWS as u16 + 5) {
            b.record(1_000, impostor(&format!("10.0.1.{i}"), 1));
        }
        let id = b.identity();
        assert_eq!(id.len(), MAX_IDENTITY_ROWS);
        assert_eq!(
            id.last().map(|r| r.remote.as_str()),
            Some(format!("10.0.1.{}:1", MAX_IDENTITY_ROWS + 4).as_str())
        );
        assert!(!id.iter().any(|r| r.remote.starts_with("10.0.0.1:")));
    }

    #[test]
    fn ipv6_addresses_group_by_host() {
        assert_eq!(host_of("[::1]:4433"), "[::1]");
        assert_eq!(host_of("127.0.0.1:9"), "127.0.0.1");
        assert_eq!(host_of("pyongyang"), "pyongyang");
    }
}
