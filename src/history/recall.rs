//! Answers the core let go, read back from the log: how a shell resolves
//! the core's [`Recall`] requests (the node and the simulator alike).

use super::views::{answers_from, ViewError};
use super::History;
use crate::audit::LogReader;
use crate::core::{Recall, Transmit};
use crate::identity::OfficeName;
use crate::wire::proto::SignedEnvelope;

/// What to do about one [`Recall`].
#[derive(Debug)]
pub enum Resolved {
    /// Send these (our logged answers, on the peer's control stream).
    Send(Vec<Transmit>),
    /// The copy's number was answered for another message: hand the copy
    /// back to the core ([`crate::core::Core::duplicate_unanswered`]).
    Conflict(OfficeName, SignedEnvelope),
    /// The index holds no answer for that number (nothing to send).
    Missing {
        /// Peer.
        peer: OfficeName,
        /// The number.
        sequence: u64,
    },
}

/// Reads what `recall` asks for from the index and the log.
pub fn resolve(history: &History, log: &LogReader, recall: Recall) -> Result<Resolved, ViewError> {
    Ok(match recall {
        Recall::Duplicate {
            peer,
            sequence,
            hash,
            envelope,
        } => {
            let found = answers_from(history, log, peer.as_str(), sequence, 1)?
                .into_iter()
                .find(|a| a.sequence == sequence);
            match found {
                Some(a) if a.hash == hash => Resolved::Send(vec![Transmit::control(&peer, a.body)]),
                Some(_) => Resolved::Conflict(peer, envelope),
                None => Resolved::Missing { peer, sequence },
            }
        }
        Recall::Answers { peer, from, limit } => Resolved::Send(
            answers_from(history, log, peer.as_str(), from, limit)?
                .into_iter()
                .map(|a| Transmit::control(&peer, a.body))
                .collect(),
        ),
    })
}
