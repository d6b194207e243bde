//! Message identifiers.
//!
//! An id is 16 bytes shown as 32 lowercase hex digits: 6 bytes of
//! milliseconds since the Unix epoch (so ids sort roughly by creation) and
//! 10 random bytes. The core never makes ids; its caller does, so the core
//! stays deterministic.

use std::fmt;

/// A message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// An id from a timestamp and 10 random bytes.
    pub fn new(unix_ms: u64, random: [u8; 10]) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        MessageId(b)
    }

    /// A fresh id using the operating system's randomness.
    pub fn generate(unix_ms: u64) -> Self {
        Self::new(unix_ms, rand::random())
    }

    /// Parses 32 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).ok()?;
        if s.chars().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        Some(MessageId(b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip_and_ordering() {
        let a = MessageId::new(1_000, [1; 10]);
        let b = MessageId::new(2_000, [0; 10]);
        assert!(a < b);
        assert_eq!(MessageId::parse(&a.to_string()), Some(a));
        assert_eq!(MessageId::parse("zz"), None);
        assert_eq!(MessageId::parse(&a.to_string().to_uppercase()), None);
    }
}
