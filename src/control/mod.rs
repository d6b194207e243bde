//! The control API: JSON over HTTP on loopback, with a bearer token.
//!
//! The node serves it ([`crate::node::control_server`]); the CLI and scripts
//! use it ([`client`]). Endpoints and curl examples are in
//! `docs/architecture.md#control-api`.

pub mod api;
pub mod client;

pub use api::*;
pub use client::{ClientError, ControlClient};
