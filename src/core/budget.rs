//! What a signed peer may make us store, send or report, per peer.
//!
//! The peer office holds valid keys, so a signature proves who sent a frame,
//! not that the frame is worth a log entry. Every kind of peer input that
//! costs us a log entry, a signature, an event or memory draws on one of
//! these token buckets; past a bucket the input is counted and dropped (or,
//! for messages, left for the sender to retransmit), and one alert says so.
//! docs/threat-model.md states the bound in log bytes and memory per peer
//! per hour that follows from these numbers.
//!
//! Buckets refill on the caller's monotonic clock, so the simulator replays
//! them exactly.

use std::fmt;

/// A kind of peer input with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Spend {
    /// Logged and signed refusals of the peer's messages and sealed frames.
    Refusal,
    /// Logged notices that change nothing we hold: the peer's alert-level
    /// changes, its negative receipts that settle nothing, receipts from a
    /// relay about frames we sent it.
    Notice,
    /// Cosignatures we sign and log for the peer's checkpoints.
    Cosignature,
    /// Evidence files of equivocation we log.
    Evidence,
    /// Signed or computed answers that log nothing: hello replies, line-check
    /// replies, checkpoint offers asked for again.
    Answer,
    /// Events reported to the operator about the peer's bad input.
    Report,
    /// The peer's card updates we pin and log (with our acceptance).
    CardUpdate,
}

impl Spend {
    /// Every kind, in status order.
    pub const ALL: [Spend; 7] = [
        Spend::Refusal,
        Spend::Notice,
        Spend::Cosignature,
        Spend::Evidence,
        Spend::Answer,
        Spend::Report,
        Spend::CardUpdate,
    ];

    /// (burst, milliseconds per token).
    pub const fn rate(self) -> (u32, u64) {
        match self {
            // 100 a minute: an honest peer makes none.
            Spend::Refusal => (super::REFUSAL_BUDGET, 600),
            // 60 an hour after a burst of 32.
            Spend::Notice => (32, 60_000),
            // One every two seconds after a burst of 8: an honest peer
            // checkpoints every 10 s or 256 entries, and a skipped offer is
            // covered by the next one's consistency proof.
            Spend::Cosignature => (8, 2_000),
            // One proof of equivocation is enough; 4 an hour at most.
            Spend::Evidence => (4, 900_000),
            // 20 a second after a burst of 64.
            Spend::Answer => (64, 50),
            // One a second after a burst of 32.
            Spend::Report => (32, 1_000),
            // An honest office rotates a few times in years.
            Spend::CardUpdate => (2, 3_600_000),
        }
    }

    /// The largest log entry one token of this kind can write, in bytes
    /// (0: it writes none). Each is enforced where the entry is made: peer
    /// text is checked against the limits of docs/protocol.md §11 first.
    pub const fn max_entry_bytes(self) -> u64 {
        match self {
            // A signed negative receipt: hash, id, names, a detail of at
            // most 256 bytes, key id and signature.
            Spend::Refusal => 1_024,
            // An alert level with a reason of at most 256 bytes, or the
            // peer's negative receipt or relay receipt within the same limits.
            Spend::Notice => 1_024,
            // The peer's note (at most 2,048 bytes) with our cosignature.
            Spend::Cosignature => 3_072,
            // Two notes and a proof of at most 64 hashes.
            Spend::Evidence => 65_536,
            // The update (at most 6,144 bytes) and our signed acceptance.
            Spend::CardUpdate => 8_192,
            Spend::Answer | Spend::Report => 0,
        }
    }

    /// Lowercase name for status views.
    pub fn as_str(self) -> &'static str {
        match self {
            Spend::Refusal => "refusal",
            Spend::Notice => "notice",
            Spend::Cosignature => "cosignature",
            Spend::Evidence => "evidence",
            Spend::Answer => "answer",
            Spend::Report => "report",
            Spend::CardUpdate => "card-update",
        }
    }
}

impl fmt::Display for Spend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most log bytes one peer can make us write over `duration_ms`
/// through inputs that draw on a budget: each kind's burst plus its refill
/// over the duration, times its largest entry. Messages the peer sends are
/// not in it: they are the traffic itself, bounded by the message size limit
/// and the line (docs/threat-model.md).
pub fn log_bound_bytes(duration_ms: u64) -> u64 {
    Spend::ALL.iter().fold(0u64, |total, s| {
        let (burst, per) = s.rate();
        let tokens = u64::from(burst).saturating_add(duration_ms.checked_div(per).unwrap_or(0));
        total.saturating_add(tokens.saturating_mul(s.max_entry_bytes()))
    })
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// Monotonic ms up to which refills have been credited.
    credited_to: u64,
    /// Inputs dropped since the bucket last had a token.
    dropped_in_row: u64,
}

/// The buckets of one peer.
#[derive(Debug, Clone)]
pub(crate) struct Budgets {
    buckets: [Bucket; Spend::ALL.len()],
    /// Inputs dropped over budget, per kind, since start.
    dropped: [u64; Spend::ALL.len()],
}

impl Default for Budgets {
    fn default() -> Self {
        let full = |s: Spend| Bucket {
            tokens: s.rate().0,
            credited_to: 0,
            dropped_in_row: 0,
        };
        Budgets {
            buckets: Spend::ALL.map(full),
            dropped: [0; Spend::ALL.len()],
        }
    }
}

/// What [`Budgets::spend`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget: go ahead.
    Allowed,
    /// Over budget, and the first such input since the bucket ran dry:
    /// drop it and tell the operator once.
    FirstDropped,
    /// Over budget again: drop it quietly (counted).
    Dropped,
}

impl Budgets {
    /// Takes one token of `kind` at monotonic time `now_ms`.
    pub fn spend(&mut self, kind: Spend, now_ms: u64) -> Verdict {
        let (burst, per) = kind.rate();
        let i = kind as usize;
        let (Some(b), Some(dropped)) = (self.buckets.get_mut(i), self.dropped.get_mut(i)) else {
            return Verdict::Dropped;
        };
        if now_ms > b.credited_to {
            let earned = now_ms
                .saturating_sub(b.credited_to)
                .checked_div(per)
                .unwrap_or(0);
            if earned > 0 {
                let tokens = u64::from(b.tokens).saturating_add(earned);
                b.tokens = u32::try_from(tokens.min(u64::from(burst))).unwrap_or(burst);
                b.credited_to = b.credited_to.saturating_add(earned.saturating_mul(per));
                if b.tokens == burst {
                    b.credited_to = now_ms;
                }
            }
        } else {
            // A clock that went back (a restart re-anchors it): start over.
            b.credited_to = now_ms;
        }
        if b.tokens > 0 {
            b.tokens = b.tokens.saturating_sub(1);
            b.dropped_in_row = 0;
            return Verdict::Allowed;
        }
        *dropped = dropped.saturating_add(1);
        b.dropped_in_row = b.dropped_in_row.saturating_add(1);
        if b.dropped_in_row == 1 {
            Verdict::FirstDropped
        } else {
            Verdict::Dropped
        }
    }

    /// Whether `kind`'s bucket holds at least half its burst at `now_ms`
    /// (counting refills not yet credited), without spending.
    pub fn refilled(&self, kind: Spend, now_ms: u64) -> bool {
        let (burst, per) = kind.rate();
        let Some(b) = self.buckets.get(kind as usize) else {
            return false;
        };
        let earned = now_ms
            .saturating_sub(b.credited_to)
            .checked_div(per)
            .unwrap_or(0);
        u64::from(b.tokens).saturating_add(earned) >= u64::from(burst / 2).max(1)
    }

    /// Inputs dropped over budget of `kind` since start.
    pub fn dropped(&self, kind: Spend) -> u64 {
        self.dropped.get(kind as usize).copied().unwrap_or(0)
    }

    /// All inputs dropped over budget since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Budgets::default();
        let (burst, per) = Spend::Refusal.rate();
        for _ in 0..burst {
            assert_eq!(b.spend(Spend::Refusal, 1_000), Verdict::Allowed);
        }
        assert_eq!(b.spend(Spend::Refusal, 1_000), Verdict::FirstDropped);
        assert_eq!(b.spend(Spend::Refusal, 1_000), Verdict::Dropped);
        assert_eq!(b.dropped(Spend::Refusal), 2);
        // Other kinds are untouched.
        assert_eq!(b.spend(Spend::Notice, 1_000), Verdict::Allowed);
        // One token per `per` ms.
        assert_eq!(b.spend(Spend::Refusal, 1_000 + per), Verdict::Allowed);
        assert_eq!(b.spend(Spend::Refusal, 1_000 + per), Verdict::FirstDropped);
        // Over an hour, at most burst + 3600 s / per.
        let mut allowed = 0u64;
        let mut t = 10_000_000;
        let mut b = Budgets::default();
        while t < 10_000_000 + 3_600_000 {
            for _ in 0..10 {
                if b.spend(Spend::Refusal, t) == Verdict::Allowed {
                    allowed += 1;
                }
            }
            t += 100;
        }
        assert!(allowed <= u64::from(burst) + 3_600_000 / per, "{allowed}");
        assert!(allowed >= 3_600_000 / per, "{allowed}");
    }

    #[test]
    fn the_hourly_log_bound_is_the_one_docs_threat_model_states() {
        // (100 + 6,000) × 1 KiB + (32 + 60) × 1 KiB + (8 + 1,800) × 3 KiB
        // + (4 + 4) × 64 KiB + (2 + 1) × 8 KiB
        assert_eq!(log_bound_bytes(3_600_000), 12_443_648);
        // The burst alone at once; one more refusal per 600 ms.
        assert_eq!(log_bound_bytes(600) - log_bound_bytes(0), 1_024);
    }

    #[test]
    fn a_clock_that_goes_back_does_not_mint_tokens() {
        let mut b = Budgets::default();
        let (burst, _) = Spend::Evidence.rate();
        for _ in 0..burst {
            b.spend(Spend::Evidence, u64::MAX);
        }
        assert_ne!(b.spend(Spend::Evidence, 5), Verdict::Allowed);
        assert_ne!(b.spend(Spend::Evidence, 6), Verdict::Allowed);
    }
}
