//! The real clock, converted to the core's [`Now`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Now;

/// Monotonic milliseconds since the node started, plus wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: tokio::time::Instant,
}

impl Clock {
    /// Starts the monotonic origin now.
    pub fn new() -> Self {
        Clock {
            base: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.base.elapsed().as_millis() as u64,
            wall_ms: wall_ms(),
        }
    }

    /// The instant for a core deadline.
    pub fn instant_of(&self, mono_ms: u64) -> tokio::time::Instant {
        // A deadline past what Instant can hold (a peer-set deadline never is:
        // deadlines come from our policy) is taken as the base: fire now.
        self.base
            .checked_add(Duration::from_millis(mono_ms))
            .unwrap_or(self.base)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Wall-clock ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
