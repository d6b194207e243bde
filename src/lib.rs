//! hotline: a crisis-communication channel between two liaison offices that
//! do not trust each other.
//!
//! Two nodes exchange signed, receipted messages over mutual-TLS QUIC; every
//! message and receipt lands in an append-only log that is the node's only
//! store. See `docs/architecture.md` for the design and `docs/protocol.md`
//! for the normative wire protocol.
//!
//! # Layout
//!
//! - [`wire`]: protobuf types, stream framing, signed envelopes, message ids.
//!   Everything a peer must agree on byte for byte.
//! - [`identity`]: office names, keys, the private TLS CA, the public office
//!   card, `hotline.toml`, and the office directory that holds them.
//! - [`audit`]: the append-only log: record framing, recovery, group commit.
//! - [`history`]: message history on disk: an index (redb) from ids and
//!   sequences to log entries, so views page through years of traffic
//!   without holding it in memory.
//! - [`core`]: the sans-IO channel state machine. Takes `now` and events,
//!   returns entries to persist, frames to send and events to report.
//! - [`sim`]: the one deterministic network and clock for N cores, with
//!   datagram or QUIC line models, seeded faults (drops, duplicates,
//!   reordering, cuts, crashes with torn writes), a relay, and a Byzantine
//!   office ([`sim::hostile`]) that signs whatever it likes with real keys,
//!   and what each office's operator would see ([`sim::views`]: its log read
//!   through the history index, as the node reads it).
//!   The core tests, the relay tests, the Byzantine schedules, the drills
//!   and the `core_frames` fuzz target all use it.
//! - [`node`]: the tokio shell: QUIC transport with pinned mutual TLS, the
//!   actor that drives the core and the log, the control API server.
//! - [`control`]: the control API's JSON types and its blocking client, used
//!   by the CLI.
//! - [`drill`]: crisis drills: scenario files, live and simulated runners,
//!   reports, replay and fuzzing; the bundled drills.
//! - [`text`]: peer text made safe: character-boundary cuts and terminal
//!   escapes, one home for both.
//! - [`bench`], [`bench_audit`] and [`demo`]: in-process runs for
//!   measurement and for a first look; [`bench_line`]: two node processes
//!   beside a raw QUIC stream on an emulated lossy line; [`bench_health`]:
//!   false health alarms on a working lossy line, and cut detection.
//!
//! The binary (`src/main.rs` and `src/cli/`) is a thin layer over these.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod bench;
pub mod bench_audit;
pub mod bench_health;
pub mod bench_line;
pub mod bench_soak;
pub mod control;
pub mod core;
pub mod demo;
pub mod drill;
pub mod history;
pub mod identity;
pub mod node;
pub mod sim;
pub mod text;
pub mod wire;
