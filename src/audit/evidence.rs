//! Equivocation evidence: a self-contained file proving that an office
//! signed checkpoints that cannot both be true.
//!
//! Two kinds:
//! - `conflicting-roots`: two checkpoints of the same size with different
//!   roots, both signed by the office's log key.
//! - `inconsistent-extension`: a checkpoint the witness cosigned earlier, a
//!   later checkpoint, and the office's own signed offer whose consistency
//!   proof between them does not hold. An honest log can always prove that
//!   a later tree extends an earlier one; signing a proof that fails is
//!   proof of a rewritten history.
//!
//! `verify` needs nothing but the offending office's card.

use ed25519_dalek::VerifyingKey;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, SignedCheckpoint};
use super::merkle::{verify_consistency, Hash};
use crate::identity::{OfficeCard, OfficeName};
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{CheckpointOffer, SignedEnvelope};

/// Format tag of evidence files.
pub const FORMAT: &str = "hotline-evidence/1";

/// The evidence file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Always [`FORMAT`].
    pub format: String,
    /// `conflicting-roots` or `inconsistent-extension`.
    pub kind: String,
    /// The office whose log is in question.
    pub office: String,
    /// Its log origin.
    pub origin: String,
    /// Who found it.
    pub detected_by: String,
    /// When (detector's clock).
    pub detected_unix_ms: u64,
    /// The earlier checkpoint note (text with signatures).
    pub earlier: String,
    /// The later checkpoint note.
    pub later: String,
    /// For `inconsistent-extension`: the office's signed offer, hex of a
    /// `SignedEnvelope` whose payload is a `CheckpointOffer`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offer: String,
}

/// What a valid evidence file proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The kind.
    pub kind: String,
    /// Sizes of the two checkpoints.
    pub sizes: (u64, u64),
}

/// Why evidence does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not an evidence file.
    #[error("not a hotline evidence file: {0}")]
    Format(String),
    /// A checkpoint does not verify under the card.
    #[error("{which} checkpoint does not verify with {office}'s card: {why}")]
    Checkpoint {
        /// earlier / later.
        which: &'static str,
        /// Office.
        office: String,
        /// Reason.
        why: String,
    },
    /// The checkpoints do not contradict each other.
    #[error("the evidence proves nothing: {0}")]
    NoContradiction(String),
}

impl Evidence {
    /// Two checkpoints of the same size with different roots.
    pub fn conflicting_roots(
        office: &str,
        a: &SignedCheckpoint,
        b: &SignedCheckpoint,
        by: &str,
        at: u64,
    ) -> Self {
        Self::new("conflicting-roots", office, a, b, by, at, String::new())
    }

    /// A signed offer whose proof from `earlier` to its checkpoint fails.
    pub fn inconsistent_extension(
        office: &str,
        earlier: &SignedCheckpoint,
        later: &SignedCheckpoint,
        offer: &SignedEnvelope,
        by: &str,
        at: u64,
    ) -> Self {
        Self::new(
            "inconsistent-extension",
            office,
            earlier,
            later,
            by,
            at,
            hex::encode(offer.encode_to_vec()),
        )
    }

    fn new(
        kind: &str,
        office: &str,
        a: &SignedCheckpoint,
        b: &SignedCheckpoint,
        by: &str,
        at: u64,
        offer: String,
    ) -> Self {
        Evidence {
            format: FORMAT.into(),
            kind: kind.into(),
            office: office.into(),
            origin: a.origin.clone(),
            detected_by: by.into(),
            detected_unix_ms: at,
            earlier: String::from_utf8_lossy(&a.note).into_owned(),
            later: String::from_utf8_lossy(&b.note).into_owned(),
            offer,
        }
    }

    /// The file's bytes (pretty JSON).
    // Strings and numbers only: serialising cannot fail.
    #[allow(clippy::expect_used)]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serializable")
    }

    /// Parses a file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let e: Evidence =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Format(e.to_string()))?;
        if e.format != FORMAT {
            return Err(EvidenceError::Format(format!("format is {:?}", e.format)));
        }
        Ok(e)
    }

    /// Checks the evidence using only `card`.
    pub fn verify(&self, card: &OfficeCard) -> Result<Proven, EvidenceError> {
        let key = card
            .log_verifying_key()
            .map_err(|e| EvidenceError::Format(e.to_string()))?;
        self.verify_with_key(&card.office, &key)
    }

    /// Checks the evidence against `office`'s log key.
    pub fn verify_with_key(
        &self,
        office: &OfficeName,
        key: &VerifyingKey,
    ) -> Result<Proven, EvidenceError> {
        if self.office != office.as_str() {
            return Err(EvidenceError::Format(format!(
                "the evidence is about {:?}, the card is {office}'s",
                self.office
            )));
        }
        let key = *key;
        let origin = checkpoint::origin(office, &key);
        let open = |which: &'static str, note: &str| {
            checkpoint::open(note.as_bytes(), &origin, &key).map_err(|e| {
                EvidenceError::Checkpoint {
                    which,
                    office: office.to_string(),
                    why: e.to_string(),
                }
            })
        };
        let a = open("earlier", &self.earlier)?;
        let b = open("later", &self.later)?;
        match self.kind.as_str() {
            "conflicting-roots" => {
                if a.size != b.size || a.root == b.root {
                    return Err(EvidenceError::NoContradiction(format!(
                        "sizes {} and {} with {} roots",
                        a.size,
                        b.size,
                        if a.root == b.root {
                            "equal"
                        } else {
                            "different"
                        }
                    )));
                }
            }
            "inconsistent-extension" => check_offer(&self.offer, &key, &a, &b)?,
            other => return Err(EvidenceError::Format(format!("unknown kind {other:?}"))),
        }
        Ok(Proven {
            kind: self.kind.clone(),
            sizes: (a.size, b.size),
        })
    }
}

fn check_offer(
    offer_hex: &str,
    key: &VerifyingKey,
    a: &SignedCheckpoint,
    b: &SignedCheckpoint,
) -> Result<(), EvidenceError> {
    let bytes = hex::decode(offer_hex).map_err(|e| EvidenceError::Format(format!("offer: {e}")))?;
    let env = SignedEnvelope::decode(bytes.as_slice())
        .map_err(|e| EvidenceError::Format(format!("offer: {e}")))?;
    let offer: CheckpointOffer =
        envelope::open(&env, Domain::CheckpointOffer, key).map_err(|e| {
            EvidenceError::Format(format!("offer is not signed by the office's log key: {e}"))
        })?;
    let offered = checkpoint::peek(&offer.note)
        .ok_or_else(|| EvidenceError::Format("offer holds no checkpoint".into()))?;
    if (offered.1, offered.2) != (b.size, b.root) {
        return Err(EvidenceError::NoContradiction(
            "the offer is for another checkpoint".into(),
        ));
    }
    if offer.old_size != a.size || a.size >= b.size {
        return Err(EvidenceError::NoContradiction(format!(
            "the offer proves from size {}, the earlier checkpoint has size {}",
            offer.old_size, a.size
        )));
    }
    let proof: Option<Vec<Hash>> = offer
        .proof
        .iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).ok().map(Hash))
        .collect();
    if let Some(p) = proof {
        if verify_consistency(&p, a.size, a.root, b.size, b.root) {
            return Err(EvidenceError::NoContradiction(
                "the offered proof holds: the later tree extends the earlier".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn conflicting_roots_are_proven_with_the_offices_key_and_only_with_it() {
        let office = OfficeName::new("pyongyang").unwrap();
        let key = SigningKey::from_bytes(&[5; 32]);
        let vk = key.verifying_key();
        let origin = checkpoint::origin(&office, &vk);
        let a = checkpoint::sign(&origin, 10, Hash([1; 32]), &key);
        let b = checkpoint::sign(&origin, 10, Hash([2; 32]), &key);
        let ev = Evidence::conflicting_roots("pyongyang", &a, &b, "washington", 1);
        // It survives the file format.
        let ev = Evidence::from_json(&ev.to_json()).unwrap();
        let proven = ev.verify_with_key(&office, &vk).unwrap();
        assert_eq!(proven.kind, "conflicting-roots");
        assert_eq!(proven.sizes, (10, 10));
        // Not with anyone else's key: the accuser cannot forge it.
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert!(ev.verify_with_key(&office, &other).is_err());
        // No contradiction: equal roots, or different sizes.
        let same = Evidence::conflicting_roots("pyongyang", &a, &a, "washington", 1);
        assert!(matches!(
            same.verify_with_key(&office, &vk),
            Err(EvidenceError::NoContradiction(_))
        ));
        let c = checkpoint::sign(&origin, 11, Hash([2; 32]), &key);
        let sizes = Evidence::conflicting_roots("pyongyang", &a, &c, "washington", 1);
        assert!(matches!(
            sizes.verify_with_key(&office, &vk),
            Err(EvidenceError::NoContradiction(_))
        ));
        // An altered note no longer opens.
        let mut bad = ev.clone();
        bad.later = bad.later.replace("\n10\n", "\n12\n");
        assert!(bad.verify_with_key(&office, &vk).is_err());
    }
}
