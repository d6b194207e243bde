//! Office names.

use std::fmt;

/// An office name: 1 to 32 characters, lowercase ASCII letters, digits and
/// `-`, starting with a letter. The name is also a DNS label in the office's
/// node certificate, hence the rules.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct OfficeName(String);

/// A string that is not a valid office name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid office name {0:?}: use 1-32 lowercase letters, digits or '-', starting with a letter (e.g. \"washington\")")]
pub struct BadName(pub String);

impl OfficeName {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, BadName> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(OfficeName(s))
        } else {
            Err(BadName(s))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The DNS name in this office's node certificate and the TLS server name
    /// a dialer uses.
    pub fn server_name(&self) -> String {
        format!("{}.hotline", self.0)
    }
}

impl TryFrom<String> for OfficeName {
    type Error = BadName;
    fn try_from(s: String) -> Result<Self, BadName> {
        OfficeName::new(s)
    }
}

impl From<OfficeName> for String {
    fn from(n: OfficeName) -> String {
        n.0
    }
}

impl fmt::Display for OfficeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for OfficeName {
    type Err = BadName;
    fn from_str(s: &str) -> Result<Self, BadName> {
        OfficeName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(OfficeName::new("washington").is_ok());
        assert!(OfficeName::new("kaesong-2").is_ok());
        for bad in ["", "Washington", "1st", "a b", "a.b", &"x".repeat(33)] {
            assert!(OfficeName::new(bad).is_err(), "{bad:?}");
        }
    }
}
