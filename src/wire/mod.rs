//! The wire: protobuf types, stream framing and signed envelopes.
//!
//! Everything another implementation needs to interoperate lives here and in
//! `docs/protocol.md`.

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

pub mod envelope;
pub mod frame;
pub mod id;
pub mod seal;

/// Types generated from `proto/hotline.proto` by prost.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/hotline.v1.rs"));
}

/// Types generated from `proto/store.proto` and `proto/snapshot.proto`:
/// local storage records (the history index's, the core's snapshot),
/// never sent and never signed.
#[allow(missing_docs, clippy::all)]
pub mod store {
    include!(concat!(env!("OUT_DIR"), "/hotline.store.v1.rs"));
}

pub use envelope::{sha256, Domain, EnvelopeError, KeyId};
pub use frame::{FrameBuf, FrameError, MAX_FRAME_LEN};
pub use id::MessageId;

/// Protocol version carried in `Hello` and implied by the ALPN.
pub const PROTOCOL_VERSION: u32 = 1;
/// ALPN identifier negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"hotline/1";
