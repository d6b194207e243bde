//! Sealed envelopes for the relay path: HPKE (RFC 9180) to the recipient.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base
//! mode. The plaintext is the sender's complete `SignedEnvelope` (so the
//! sender's signature travels inside, end to end); the associated data is
//! the encoded routing header the relay reads (from, to, id, size), so a
//! relay that edits the header breaks decryption; `info` is the fixed
//! string `hotline/1 sealed`. A relay sees the header and ciphertext only:
//! it can neither read nor forge.

use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};

/// The KEM.
pub type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// HPKE `info` for every sealed envelope.
pub const INFO: &[u8] = b"hotline/1 sealed";

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key is not 32 bytes or not a valid X25519 key.
    #[error("not an X25519 key")]
    BadKey,
    /// The encapsulated key is malformed.
    #[error("malformed encapsulated key")]
    BadEnc,
    /// Decryption failed: wrong recipient, or header or ciphertext altered.
    #[error("cannot open: wrong recipient, or the header or ciphertext was altered")]
    Open,
    /// HPKE refused to seal (should not happen with valid keys).
    #[error("sealing failed")]
    Seal,
}

/// A sealed payload: the encapsulated key and the ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// HPKE `enc` (32 bytes for X25519).
    pub enc: Vec<u8>,
    /// AEAD ciphertext, tag appended.
    pub ciphertext: Vec<u8>,
}

/// An X25519 key pair derived from 32 bytes of secret keying material
/// (RFC 9180 DeriveKeyPair). Returns (private, public), 32 bytes each.
pub fn derive_keypair(ikm: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let (sk, pk) = Kem::derive_keypair(ikm);
    let mut out = ([0u8; 32], [0u8; 32]);
    // X25519 keys are 32 bytes by type; the copy is exact.
    out.0
        .iter_mut()
        .zip(sk.to_bytes().iter())
        .for_each(|(d, s)| *d = *s);
    out.1
        .iter_mut()
        .zip(pk.to_bytes().iter())
        .for_each(|(d, s)| *d = *s);
    out
}

/// Adapts any byte source to the RNG traits hpke wants.
struct Rng<F: FnMut(&mut [u8])>(F);

impl<F: FnMut(&mut [u8])> rand_core_09::RngCore for Rng<F> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        (self.0)(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        (self.0)(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (self.0)(dest)
    }
}

impl<F: FnMut(&mut [u8])> rand_core_09::CryptoRng for Rng<F> {}

/// Seals `plaintext` to `recipient` (X25519 public key) with `aad`, using
/// fresh ephemeral randomness from the operating system.
pub fn seal(recipient: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
    seal_with(recipient, aad, plaintext, |b| {
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, b)
    })
}

/// As [`seal`] with the ephemeral key material from `fill`. The core passes
/// its [`Randomness`](crate::core::Randomness): the operating system's on a
/// node, a seeded generator in a simulation; test vectors use a fixed source.
pub fn seal_with(
    recipient: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    fill: impl FnMut(&mut [u8]),
) -> Result<Sealed, SealError> {
    seal_raw(recipient, INFO, aad, plaintext, fill)
}

fn seal_raw(
    recipient: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    fill: impl FnMut(&mut [u8]),
) -> Result<Sealed, SealError> {
    let pk = <Kem as KemTrait>::PublicKey::from_bytes(recipient).map_err(|_| SealError::BadKey)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        &mut Rng(fill),
    )
    .map_err(|_| SealError::Seal)?;
    Ok(Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Opens a sealed payload with the recipient's private key and the same
/// `aad`.
pub fn open(private: &[u8], aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
    let sk = <Kem as KemTrait>::PrivateKey::from_bytes(private).map_err(|_| SealError::BadKey)?;
    let enc =
        <Kem as KemTrait>::EncappedKey::from_bytes(&sealed.enc).map_err(|_| SealError::BadEnc)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        INFO,
        &sealed.ciphertext,
        aad,
    )
    .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ([u8; 32], [u8; 32]) {
        derive_keypair(&[0x33; 32])
    }

    /// RFC 9180 appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    /// ChaCha20-Poly1305, base mode, first encryption.
    #[test]
    fn rfc9180_known_answer() {
        let h = |s: &str| hex::decode(s).unwrap();
        let ikm_r: [u8; 32] = h("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df")
            .try_into()
            .unwrap();
        let (sk_r, pk_r) = derive_keypair(&ikm_r);
        assert_eq!(
            hex::encode(sk_r),
            "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb"
        );
        assert_eq!(
            hex::encode(pk_r),
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
        );
        let ikm_e = h("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
        let info = h("4f6465206f6e2061204772656369616e2055726e");
        let aad = h("436f756e742d30");
        let pt = h("4265617574792069732074727574682c20747275746820626561757479");
        let s = seal_raw(&pk_r, &info, &aad, &pt, |b| {
            b.copy_from_slice(&ikm_e[..b.len()])
        })
        .unwrap();
        assert_eq!(
            hex::encode(&s.enc),
            "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"
        );
        assert_eq!(
            hex::encode(&s.ciphertext),
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"
        );
        let sk = <Kem as KemTrait>::PrivateKey::from_bytes(&sk_r).unwrap();
        let enc = <Kem as KemTrait>::EncappedKey::from_bytes(&s.enc).unwrap();
        let back = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            &info,
            &s.ciphertext,
            &aad,
        )
        .unwrap();
        assert_eq!(back, pt);
    }

    #[test]
    fn round_trip_and_every_alteration_fails() {
        let (sk, pk) = keys();
        let s = seal(&pk, b"header", b"the signed envelope").unwrap();
        assert_eq!(s.enc.len(), 32);
        assert_eq!(open(&sk, b"header", &s).unwrap(), b"the signed envelope");
        // A relay flips one ciphertext byte.
        for i in 0..s.ciphertext.len() {
            let mut bad = s.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(open(&sk, b"header", &bad), Err(SealError::Open));
        }
        // ... or edits the routing header, or swaps enc.
        assert_eq!(open(&sk, b"headeR", &s), Err(SealError::Open));
        let mut bad = s.clone();
        bad.enc[0] ^= 1;
        assert!(open(&sk, b"header", &bad).is_err());
        // Another office cannot open it.
        let (other, _) = derive_keypair(&[0x44; 32]);
        assert_eq!(open(&other, b"header", &s), Err(SealError::Open));
    }

    #[test]
    fn fresh_randomness_makes_every_seal_different_and_fixed_randomness_is_deterministic() {
        let (_, pk) = keys();
        assert_ne!(seal(&pk, b"", b"x").unwrap(), seal(&pk, b"", b"x").unwrap());
        let fixed = |b: &mut [u8]| b.fill(0x55);
        assert_eq!(
            seal_with(&pk, b"", b"x", fixed).unwrap(),
            seal_with(&pk, b"", b"x", fixed).unwrap()
        );
    }
}
