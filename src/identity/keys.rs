//! Ed25519 key files.
//!
//! A secret key file holds the 32-byte seed as 64 hex digits and a newline;
//! it is created 0600. Public keys travel in office cards as hex.

use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::files;

/// Makes a new key from the operating system's randomness.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Saves `key` as a 0600 secret file.
pub fn save(path: &Path, key: &SigningKey) -> std::io::Result<()> {
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
    files::write_secret(path, text.as_bytes())
}

/// Loads a key saved by [`save`].
pub fn load(path: &Path) -> std::io::Result<SigningKey> {
    let raw = Zeroizing::new(files::read_secret(path)?);
    let text = std::str::from_utf8(&raw).map_err(|_| bad(path))?.trim();
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, seed.as_mut()).map_err(|_| bad(path))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn bad(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is not a hotline key file (64 hex digits)",
            path.display()
        ),
    )
}

/// Parses a public key from 64 hex digits.
pub fn parse_public(hex_str: &str) -> Option<VerifyingKey> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_str.trim(), &mut b).ok()?;
    VerifyingKey::from_bytes(&b).ok()
}
