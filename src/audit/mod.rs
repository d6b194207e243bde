//! The append-only log: the node's only store and the basis of its audit
//! record.
//!
//! Every entry is a [`LogEntry`](crate::wire::proto::LogEntry) stored in a
//! record framed with its length and a CRC-32 (see [`record`]). The stored
//! entry bytes are exactly what a later Merkle tree hashes as a leaf, so the
//! tamper-evident layer adds on without a migration.

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

pub mod checkpoint;
pub mod compare;
pub mod evidence;
pub mod info;
pub mod inspect;
pub mod merkle;
pub mod proof;
pub mod record;
pub mod segments;
pub mod store;
pub mod verified;
pub mod verify;

pub use record::{RecordError, MAX_ENTRY_LEN, RECORD_HEADER_LEN};
pub use store::{
    free_bytes, free_space_words, is_disk_full, scan, scan_from, LogError, LogReader, LogWriter,
    Persisted, Recovered, ScanStart, ScanSummary, StoredEntry, TornTail,
};
