//! The public office card, exchanged out of band.
//!
//! A card names an office and everything a peer must pin: its CA
//! certificate, the SHA-256 of its node certificate, its message-signing key
//! and its log key. The fingerprint is a short hash of those fields for two
//! duty officers to read to each other over the phone; it is recomputed on
//! every load, never trusted from the file.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde::{Deserialize, Serialize};

use super::{keys, OfficeName};
use crate::wire::sha256;

/// An office card as stored in `office-card.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfficeCard {
    /// Office name.
    pub office: OfficeName,
    /// "office", or "relay" for a protecting power that carries sealed
    /// messages between offices.
    pub role: String,
    /// Where the office's node listens, `HOST:PORT`. Not covered by the
    /// fingerprint: an office may move without new keys.
    pub address: String,
    /// Ed25519 message-signing public key, hex.
    pub message_key: String,
    /// Ed25519 log (checkpoint) public key, hex.
    pub log_key: String,
    /// X25519 public key that relayed messages are sealed to (HPKE), hex.
    pub seal_key: String,
    /// SHA-256 of the node certificate (DER), hex.
    pub node_cert_sha256: String,
    /// Short fingerprint over the fields above (see [`OfficeCard::compute_fingerprint`]).
    pub fingerprint: String,
    /// The office's CA certificate, PEM.
    pub ca_cert: String,
}

/// Why a card cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The file could not be read.
    #[error("cannot read card {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML or a field is missing.
    #[error("card {path} is not a valid office card: {message}")]
    Parse {
        /// File.
        path: String,
        /// Parser message (names the line and field).
        message: String,
    },
    /// A field is present but unusable.
    #[error("card field `{field}` is invalid: {why}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Reason.
        why: String,
    },
    /// The stored fingerprint does not match the card's contents: the card
    /// was edited or corrupted in transit.
    #[error("card fingerprint mismatch: file says {stored}, contents give {computed}; get a fresh copy of the card and compare the fingerprint by voice")]
    Fingerprint {
        /// In the file.
        stored: String,
        /// Recomputed.
        computed: String,
    },
}

impl OfficeCard {
    /// Builds a card and computes its fingerprint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        office: OfficeName,
        role: &str,
        address: String,
        message_key: &VerifyingKey,
        log_key: &VerifyingKey,
        seal_key: &[u8; 32],
        ca_cert_pem: String,
        node_cert_der: &[u8],
    ) -> Result<Self, CardError> {
        let mut card = OfficeCard {
            office,
            role: role.into(),
            address,
            message_key: hex::encode(message_key.as_bytes()),
            log_key: hex::encode(log_key.as_bytes()),
            seal_key: hex::encode(seal_key),
            node_cert_sha256: hex::encode(sha256(node_cert_der)),
            fingerprint: String::new(),
            ca_cert: ca_cert_pem,
        };
        card.fingerprint = card.compute_fingerprint()?;
        Ok(card)
    }

    /// The fingerprint: the first 10 bytes of SHA-256 over
    /// `"hotline-card/1\n" office "\n" role "\n" message_key "\n" log_key "\n"
    /// seal_key "\n" sha256(ca DER) "\n" node_cert_sha256 "\n"` (hex fields
    /// lowercase), as
    /// five groups of four hex digits joined by `-`.
    pub fn compute_fingerprint(&self) -> Result<String, CardError> {
        let ca = self.ca_cert_der()?;
        let text = format!(
            "hotline-card/1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.office,
            self.role,
            self.message_key.to_lowercase(),
            self.log_key.to_lowercase(),
            self.seal_key.to_lowercase(),
            hex::encode(sha256(ca.as_ref())),
            self.node_cert_sha256.to_lowercase()
        );
        let h = hex::encode(&sha256(text.as_bytes())[..10]);
        Ok(h.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("hex"))
            .collect::<Vec<_>>()
            .join("-"))
    }

    /// Parses and checks a card from TOML text.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, CardError> {
        let card: OfficeCard = toml::from_str(text).map_err(|e| CardError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        card.check()?;
        Ok(card)
    }

    /// Checks every field and that the fingerprint is the contents'.
    pub fn check(&self) -> Result<(), CardError> {
        let card = self;
        card.message_verifying_key()?;
        card.log_verifying_key()?;
        if card.role != "office" && card.role != "relay" {
            return Err(CardError::Field {
                field: "role",
                why: format!(
                    "{:?} is not a role (expected \"office\" or \"relay\")",
                    card.role
                ),
            });
        }
        card.seal_public()?;
        let mut h = [0u8; 32];
        hex::decode_to_slice(&card.node_cert_sha256, &mut h).map_err(|_| CardError::Field {
            field: "node_cert_sha256",
            why: "expected 64 hex digits".into(),
        })?;
        let computed = card.compute_fingerprint()?;
        if computed != card.fingerprint {
            return Err(CardError::Fingerprint {
                stored: card.fingerprint.clone(),
                computed,
            });
        }
        Ok(())
    }

    /// This card as the update that replaces `old` (docs/protocol.md
    /// §8d). The address is not in it.
    pub fn to_update(&self, old: &OfficeCard, time_unix_ms: u64) -> crate::wire::proto::CardUpdate {
        crate::wire::proto::CardUpdate {
            office: self.office.to_string(),
            old_fingerprint: old.fingerprint.clone(),
            old_message_key: old.message_key.clone(),
            old_log_key: old.log_key.clone(),
            old_seal_key: old.seal_key.clone(),
            old_node_cert_sha256: old.node_cert_sha256.clone(),
            new_fingerprint: self.fingerprint.clone(),
            role: self.role.clone(),
            message_key: self.message_key.clone(),
            log_key: self.log_key.clone(),
            seal_key: self.seal_key.clone(),
            node_cert_sha256: self.node_cert_sha256.clone(),
            ca_cert: self.ca_cert.clone(),
            time_unix_ms,
        }
    }

    /// The card an update carries, at `address`, checked field by field
    /// and against its fingerprint.
    pub fn from_update(
        u: &crate::wire::proto::CardUpdate,
        address: String,
    ) -> Result<Self, CardError> {
        let card = OfficeCard {
            office: OfficeName::new(&u.office).map_err(|e| CardError::Field {
                field: "office",
                why: e.to_string(),
            })?,
            role: u.role.clone(),
            address,
            message_key: u.message_key.clone(),
            log_key: u.log_key.clone(),
            seal_key: u.seal_key.clone(),
            node_cert_sha256: u.node_cert_sha256.clone(),
            fingerprint: u.new_fingerprint.clone(),
            ca_cert: u.ca_cert.clone(),
        };
        card.check()?;
        Ok(card)
    }

    /// The card an update replaces, from its `old_*` fields (the role and
    /// CA are the new card's), checked against `old_fingerprint`.
    pub fn replaced_by_update(u: &crate::wire::proto::CardUpdate) -> Result<Self, CardError> {
        let mut card = OfficeCard::from_update(u, String::new())?;
        card.message_key = u.old_message_key.clone();
        card.log_key = u.old_log_key.clone();
        card.seal_key = u.old_seal_key.clone();
        card.node_cert_sha256 = u.old_node_cert_sha256.clone();
        card.fingerprint = u.old_fingerprint.clone();
        card.check()?;
        Ok(card)
    }

    /// Whether `other` has the same message, log and seal keys.
    pub fn same_keys(&self, other: &OfficeCard) -> bool {
        self.message_key.eq_ignore_ascii_case(&other.message_key)
            && self.log_key.eq_ignore_ascii_case(&other.log_key)
            && self.seal_key.eq_ignore_ascii_case(&other.seal_key)
    }

    /// Reads and checks a card file.
    pub fn load(path: &Path) -> Result<Self, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The card as TOML, with a comment saying what it is.
    pub fn to_toml(&self) -> String {
        format!(
            "# hotline office card for {}: public. Give it to peer offices out of band\n\
             # and read the fingerprint aloud to confirm it arrived intact.\n{}",
            self.office,
            toml::to_string(self).expect("card serializes")
        )
    }

    /// The message-signing key.
    pub fn message_verifying_key(&self) -> Result<VerifyingKey, CardError> {
        keys::parse_public(&self.message_key).ok_or(CardError::Field {
            field: "message_key",
            why: "expected a 64-hex-digit Ed25519 public key".into(),
        })
    }

    /// The log key.
    pub fn log_verifying_key(&self) -> Result<VerifyingKey, CardError> {
        keys::parse_public(&self.log_key).ok_or(CardError::Field {
            field: "log_key",
            why: "expected a 64-hex-digit Ed25519 public key".into(),
        })
    }

    /// The X25519 key relayed messages to this office are sealed to.
    pub fn seal_public(&self) -> Result<[u8; 32], CardError> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(self.seal_key.trim(), &mut k).map_err(|_| CardError::Field {
            field: "seal_key",
            why: "expected a 64-hex-digit X25519 public key".into(),
        })?;
        Ok(k)
    }

    /// Whether this card is a relay's.
    pub fn is_relay(&self) -> bool {
        self.role == "relay"
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> Result<CertificateDer<'static>, CardError> {
        CertificateDer::from_pem_slice(self.ca_cert.as_bytes()).map_err(|e| CardError::Field {
            field: "ca_cert",
            why: format!("not a PEM certificate: {e}"),
        })
    }

    /// The pinned node certificate hash.
    pub fn node_cert_hash(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        // Validated in from_toml / new.
        let _ = hex::decode_to_slice(&self.node_cert_sha256, &mut h);
        h
    }
}
