//! Office identity: names, keys, TLS material, the public office card, the
//! config file, and the directory that holds them.
//!
//! Each office makes its own keys and its own private TLS CA; there is no
//! shared authority. Offices exchange public cards out of band and pin each
//! other's CA and node certificate from them (`certs/README.md`).

pub mod card;
pub mod config;
pub mod files;
pub mod keys;
pub mod name;
pub mod office_dir;
pub mod rotation;
pub mod tls_material;

pub use card::{CardError, OfficeCard};
pub use config::{Config, PeerConfig};
pub use name::OfficeName;
pub use office_dir::{IdentityError, Office, OfficeDir, Peer};
