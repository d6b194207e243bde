//! The sans-IO channel core.
//!
//! Like `quinn-proto`, this module does no I/O and reads no clock: the
//! caller passes `now` and events in, and takes [`Output`] out. The tokio
//! node ([`crate::node`]) and the deterministic simulator ([`crate::sim`])
//! both drive the same [`Core`], which is what makes the protocol testable
//! under seeded fault schedules.
//!
//! # The one rule for callers
//! After any call, take the [`Output`] and **make every entry in
//! `Output::persist` durable before performing any `transmit` or reporting
//! any `event` from the same output.** That single rule gives both
//! durability guarantees: a message is accepted only once it is on disk, and
//! a receipt leaves only once the message it names is on disk. Draining
//! several calls into one output before the fsync is group commit.

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

mod apply;
mod budget;
mod card_update;
mod channel;
mod escalation;
mod office;
mod output;
pub mod policy;
mod receipts;
mod receive;
pub mod relay;
mod resume;
mod send;
mod snapshot;
mod witness;

pub use budget::{log_bound_bytes, Spend};
pub use card_update::{ConfirmError, HeldCardUpdate, OfferError, MAX_CARD_UPDATE_BYTES};
pub use channel::{ChannelStatus, Health, OutState, KEY_OVERLAP_MS};
pub use escalation::Overdue;
pub use office::{
    Core, Draft, OfficeKeys, PeerKeys, Randomness, ReplayError, SubmitError, Timing,
    MAX_SEAL_OPENERS, RECENT_ANSWERS,
};
pub use output::{CoreEvent, Output, Recall, StreamClass, Transmit};
pub use snapshot::{SnapshotError, SnapshotSchedule, SNAPSHOT_LAYOUT};

/// Largest message body, in bytes (64 KiB).
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// Largest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Most unreceipted messages queued to one peer; `submit` refuses beyond.
pub const MAX_OUTBOX: usize = 100_000;
/// How far past its contiguous watermark a receiver accepts sequences. Must
/// be at least [`MAX_OUTBOX`] so an honest sender is never refused.
pub const RECEIVE_WINDOW: u64 = MAX_OUTBOX as u64;

/// Messages a receiver holds at most per peer while they wait for an
/// earlier message of their precedence (beyond: `OUT_OF_WINDOW`, resent later).
pub const MAX_HELD: usize = 256;

/// Largest thread id, in bytes.
pub const MAX_THREAD_LEN: usize = 256;
/// Largest language tag, in bytes (BCP 47 tags in use are far shorter).
pub const MAX_LANGUAGE_LEN: usize = 64;
/// Largest `detail` or `reason` text in a signed refusal or notice, bytes.
pub const MAX_DETAIL_LEN: usize = 256;
/// Refusals (negative receipts) logged and sent per peer per minute;
/// beyond it they are counted in `status` and raise one alert.
pub const REFUSAL_BUDGET: u32 = 100;
/// Most payload bytes a receiver holds per peer for order (with [`MAX_HELD`]).
pub const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;
/// Largest checkpoint note (with its signatures and cosignatures) accepted
/// from a peer, in bytes. Ours are about 200; C2SP allows extension lines,
/// which this bound keeps to a few.
pub const MAX_NOTE_LEN: usize = 2048;
/// Most hashes in a consistency proof (a tree of 2^64 leaves needs 64).
pub const MAX_PROOF_HASHES: usize = 64;
/// Most frames retransmitted per channel per timeout; the rest follow on the
/// next timeout (which is immediate), so one call never builds a huge output.
pub const MAX_RETRANSMIT_BURST: usize = 1024;

/// The time, as given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// A monotonic clock in milliseconds (any origin); drives timers.
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch; stamped on records.
    pub wall_ms: u64,
}
