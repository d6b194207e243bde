//! Signed envelopes: sign exact bytes, verify before decoding.
//!
//! The signature covers `DOMAIN || 0x00 || payload`. The domain string names
//! what the payload is, so a signature over a message can never be replayed
//! as a receipt (or as anything a later version signs).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::proto::SignedEnvelope;

/// What a signature is over. Each variant has a fixed domain string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A [`Message`](super::proto::Message).
    Message,
    /// A delivery [`Receipt`](super::proto::Receipt).
    Receipt,
    /// A [`NegativeReceipt`](super::proto::NegativeReceipt).
    NegativeReceipt,
    /// A [`CheckpointOffer`](super::proto::CheckpointOffer), signed with the
    /// log key.
    CheckpointOffer,
    /// A [`LineCheck`](super::proto::LineCheck) or its reply.
    LineCheck,
    /// An [`AlertLevelNotice`](super::proto::AlertLevelNotice).
    AlertLevel,
    /// A [`RelayReceipt`](super::proto::RelayReceipt).
    RelayReceipt,
    /// A [`CardUpdate`](super::proto::CardUpdate).
    CardUpdate,
    /// A [`CardUpdateAccepted`](super::proto::CardUpdateAccepted).
    CardUpdateAccepted,
}

impl Domain {
    /// The domain-separation string (ASCII, no NUL).
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Message => "hotline/1 message",
            Domain::Receipt => "hotline/1 receipt",
            Domain::NegativeReceipt => "hotline/1 negative-receipt",
            Domain::CheckpointOffer => "hotline/1 checkpoint-offer",
            Domain::LineCheck => "hotline/1 line-check",
            Domain::AlertLevel => "hotline/1 alert-level",
            Domain::RelayReceipt => "hotline/1 relay-receipt",
            Domain::CardUpdate => "hotline/1 card-update",
            Domain::CardUpdateAccepted => "hotline/1 card-update-accepted",
        }
    }

    /// The exact bytes the signature covers.
    pub fn signing_input(self, payload: &[u8]) -> Vec<u8> {
        let d = self.as_str().as_bytes();
        let mut v = Vec::with_capacity(d.len().saturating_add(1).saturating_add(payload.len()));
        v.extend_from_slice(d);
        v.push(0);
        v.extend_from_slice(payload);
        v
    }
}

/// First 8 bytes of SHA-256 over a 32-byte Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The key id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let h = sha256(key.as_bytes());
        let mut id = [0u8; 8];
        id.iter_mut().zip(h.iter()).for_each(|(d, s)| *d = *s);
        KeyId(id)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Why an envelope was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The envelope names a key other than the one expected for its signer.
    #[error("signed with key {got}, expected {expected}")]
    UnknownKey {
        /// Key id in the envelope (hex).
        got: String,
        /// Key id of the expected signer.
        expected: KeyId,
    },
    /// The signature field is not 64 bytes.
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The payload verified but is not a valid encoding of the expected type.
    #[error("payload is malformed: {0}")]
    Malformed(String),
}

/// Signs `payload` under `domain`.
pub fn seal(domain: Domain, payload: Vec<u8>, key: &SigningKey) -> SignedEnvelope {
    let sig = key.sign(&domain.signing_input(&payload));
    SignedEnvelope {
        payload,
        key_id: KeyId::of(&key.verifying_key()).0.to_vec(),
        signature: sig.to_bytes().to_vec(),
    }
}

/// Signs the encoding of `msg` under `domain`.
pub fn seal_proto<M: prost::Message>(domain: Domain, msg: &M, key: &SigningKey) -> SignedEnvelope {
    seal(domain, msg.encode_to_vec(), key)
}

/// Checks the key id and signature. Does not look at the payload.
pub fn verify(
    env: &SignedEnvelope,
    domain: Domain,
    key: &VerifyingKey,
) -> Result<(), EnvelopeError> {
    let expected = KeyId::of(key);
    if env.key_id.as_slice() != expected.0 {
        return Err(EnvelopeError::UnknownKey {
            got: hex::encode(&env.key_id),
            expected,
        });
    }
    let sig: [u8; 64] = env
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| EnvelopeError::SignatureLength(env.signature.len()))?;
    key.verify_strict(
        &domain.signing_input(&env.payload),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| EnvelopeError::BadSignature)
}

/// Verifies, then decodes the payload as `M`.
pub fn open<M: prost::Message + Default>(
    env: &SignedEnvelope,
    domain: Domain,
    key: &VerifyingKey,
) -> Result<M, EnvelopeError> {
    verify(env, domain, key)?;
    M::decode(env.payload.as_slice()).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::Receipt;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn seal_then_open() {
        let r = Receipt {
            message_id: "ab".into(),
            sequence: 9,
            ..Default::default()
        };
        let env = seal_proto(Domain::Receipt, &r, &key(1));
        let got: Receipt = open(&env, Domain::Receipt, &key(1).verifying_key()).unwrap();
        assert_eq!(got, r);
    }

    #[test]
    fn domain_separation_holds() {
        let env = seal(Domain::Message, b"x".to_vec(), &key(1));
        assert_eq!(
            verify(&env, Domain::Receipt, &key(1).verifying_key()),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let mut env = seal(Domain::Message, b"hello".to_vec(), &key(1));
        assert!(matches!(
            verify(&env, Domain::Message, &key(2).verifying_key()),
            Err(EnvelopeError::UnknownKey { .. })
        ));
        env.payload[0] ^= 1;
        assert_eq!(
            verify(&env, Domain::Message, &key(1).verifying_key()),
            Err(EnvelopeError::BadSignature)
        );
        env.signature.pop();
        assert_eq!(
            verify(&env, Domain::Message, &key(1).verifying_key()),
            Err(EnvelopeError::SignatureLength(63))
        );
    }
}
