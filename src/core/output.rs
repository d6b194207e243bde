//! What the core asks its caller to do.

use crate::audit::Persisted;
use crate::identity::OfficeName;
use crate::wire::proto::{frame::Body, Frame, NackReason, Precedence, SignedEnvelope};
use crate::wire::MessageId;

/// QUIC stream a frame travels on. Each class is its own stream so that a
/// FLASH message never waits behind ROUTINE bytes; priorities descend in
/// declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamClass {
    /// Hello, receipts, negative receipts.
    Control,
    /// FLASH messages.
    Flash,
    /// IMMEDIATE messages.
    Immediate,
    /// PRIORITY messages.
    Priority,
    /// ROUTINE messages.
    Routine,
}

impl StreamClass {
    /// All classes, most urgent first.
    pub const ALL: [StreamClass; 5] = [
        StreamClass::Control,
        StreamClass::Flash,
        StreamClass::Immediate,
        StreamClass::Priority,
        StreamClass::Routine,
    ];

    /// The stream for a message of precedence `p`.
    pub fn for_precedence(p: Precedence) -> Self {
        match p {
            Precedence::Flash => StreamClass::Flash,
            Precedence::Immediate => StreamClass::Immediate,
            Precedence::Priority => StreamClass::Priority,
            Precedence::Routine | Precedence::Unspecified => StreamClass::Routine,
        }
    }

    /// QUIC send priority (higher is sent first). Control (receipts, line
    /// checks) and FLASH go strictly first; the other three share a
    /// priority, so QUIC's fair scheduler gives each backlogged class an
    /// equal share and a backlog of one never starves another (§8).
    pub fn priority(self) -> i32 {
        match self {
            StreamClass::Control => 3,
            StreamClass::Flash => 2,
            StreamClass::Immediate | StreamClass::Priority | StreamClass::Routine => 1,
        }
    }

    /// Position in [`StreamClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A frame to send to a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Destination office.
    pub peer: OfficeName,
    /// Stream to use.
    pub class: StreamClass,
    /// The frame.
    pub frame: Frame,
    /// The channel sequence of our own message the frame carries, if it is
    /// one, so the shell keeps one copy of it in its queues and drops a copy
    /// whose message was settled while it waited.
    pub message: Option<u64>,
    /// Also send the frame as one QUIC DATAGRAM (line checks, §8b): an
    /// unreliable copy that no lost packet ahead of it on the stream can
    /// hold up, so one loss does not cost two checks in a row.
    pub datagram: bool,
}

impl Transmit {
    /// A frame for `peer`'s control stream.
    pub fn control(peer: &OfficeName, body: Body) -> Transmit {
        Transmit {
            message: None,
            peer: peer.clone(),
            class: StreamClass::Control,
            frame: Frame { body: Some(body) },
            datagram: false,
        }
    }

    /// A line check or its answer: on the control stream, and a copy as a
    /// datagram.
    pub fn line_check(peer: &OfficeName, body: Body) -> Transmit {
        Transmit {
            datagram: true,
            ..Transmit::control(peer, body)
        }
    }
}

/// Something the caller may want to tell an operator or a waiter.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    /// A signed receipt for one of our messages arrived and verified.
    Delivered {
        /// Peer.
        peer: OfficeName,
        /// Message.
        id: MessageId,
        /// Its sequence.
        sequence: u64,
        /// The peer's signed receipt.
        receipt: SignedEnvelope,
    },
    /// A new message from a peer is in the inbox.
    Received {
        /// Peer.
        peer: OfficeName,
        /// Message.
        id: MessageId,
        /// Its sequence.
        sequence: u64,
        /// Its precedence.
        precedence: Precedence,
        /// Its kind.
        kind: crate::wire::proto::Kind,
        /// Its subject, as the peer wrote it (at most MAX_SUBJECT_LEN
        /// bytes; escape it before a person sees it).
        subject: String,
    },
    /// We refused an incoming envelope with a negative receipt.
    Refused {
        /// Peer.
        peer: OfficeName,
        /// Why.
        reason: NackReason,
        /// Detail.
        detail: String,
    },
    /// The peer refused one of our messages.
    NegativeReceipt {
        /// Peer.
        peer: OfficeName,
        /// The message, when the peer could name it.
        id: Option<MessageId>,
        /// Our sequence the refusal settled (no longer sent), if it settles.
        refused_sequence: Option<u64>,
        /// Why.
        reason: NackReason,
        /// Peer's detail text.
        detail: String,
    },
    /// The peer cosigned one of our checkpoints.
    Cosigned {
        /// Peer.
        peer: OfficeName,
        /// Size of our log it vouched for.
        size: u64,
    },
    /// The peer presented checkpoints that contradict each other; `evidence`
    /// is the self-contained evidence file (also in the log).
    Equivocation {
        /// Peer.
        peer: OfficeName,
        /// Kind of contradiction.
        kind: String,
        /// Evidence file bytes.
        evidence: Vec<u8>,
    },
    /// The peer acknowledged (or answered) one of our messages.
    Acknowledged {
        /// Peer.
        peer: OfficeName,
        /// Our message.
        id: MessageId,
    },
    /// An escalation step fired.
    Escalated {
        /// Peer.
        peer: OfficeName,
        /// Message.
        id: MessageId,
        /// What the step did.
        action: crate::core::policy::Action,
        /// What it was waiting for.
        waiting: crate::core::policy::Waiting,
    },
    /// A duty-officer alert.
    Alert {
        /// Peer.
        peer: OfficeName,
        /// The message it is about, if any.
        id: Option<MessageId>,
        /// What is wrong.
        detail: String,
    },
    /// Line-check health changed.
    HealthChanged {
        /// Peer.
        peer: OfficeName,
        /// New health.
        health: crate::core::Health,
        /// Consecutive misses.
        missed: u32,
    },
    /// A peer's new card, signed with its old message key, was pinned and
    /// logged: the node stores it and trusts the new certificate.
    PeerCardUpdated {
        /// Peer.
        peer: OfficeName,
        /// The new card (its address empty: the node keeps the old one).
        card: Box<crate::identity::OfficeCard>,
    },
    /// A peer's card update passed every check but its operator must
    /// confirm the new fingerprint (read aloud) before it is pinned.
    CardUpdateHeld {
        /// Peer.
        peer: OfficeName,
        /// The card it replaces.
        old_fingerprint: String,
        /// The new card's fingerprint.
        fingerprint: String,
    },
    /// A peer accepted the card we offered.
    CardUpdateAccepted {
        /// Peer.
        peer: OfficeName,
        /// The card's fingerprint.
        fingerprint: String,
        /// Every peer has now accepted it: switch to it.
        all: bool,
    },
    /// The channel's alert level changed.
    AlertLevelChanged {
        /// Peer.
        peer: OfficeName,
        /// New level.
        level: crate::wire::proto::AlertLevel,
        /// operator, ladder or peer.
        by: String,
    },
    /// A relay said something about a frame we gave it.
    RelayReceipt {
        /// The relay.
        relay: OfficeName,
        /// The message.
        message_id: String,
        /// accepted, handed-over or refused.
        state: String,
        /// Why, when refused.
        reason: String,
    },
    /// The peer sent something that breaks the protocol but needs no reply
    /// (a receipt that does not verify, a hello for another office).
    ProtocolError {
        /// Peer.
        peer: OfficeName,
        /// What was wrong.
        detail: String,
    },
}

/// Everything the caller must do after a call into the core.
#[derive(Debug, Default)]
pub struct Output {
    /// Entries to append to the log and make durable first.
    pub persist: Vec<Persisted>,
    /// Relay only: sealed frames to store durably (with the entries) by
    /// hash; the log records only the hash.
    pub spool_write: Vec<([u8; 32], Vec<u8>)>,
    /// Relay only: spooled frames handed over, to delete after the entries.
    pub spool_delete: Vec<[u8; 32]>,
    /// Frames to send, after `persist` is durable.
    pub transmit: Vec<Transmit>,
    /// Events to report, after `persist` is durable.
    pub events: Vec<CoreEvent>,
    /// Answers the core no longer holds, for the caller to read from the
    /// history index and send, after `persist` is durable (and folded into
    /// the index).
    pub recall: Vec<Recall>,
}

impl Output {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.spool_write.is_empty()
            && self.spool_delete.is_empty()
            && self.transmit.is_empty()
            && self.events.is_empty()
            && self.recall.is_empty()
    }
}

/// An answer to the peer that only the log still holds: the core keeps its
/// answers (receipts, settling refusals) to a peer's most recent sequences
/// only, so that its memory does not grow with the history. The caller
/// reads older ones through the history index
/// ([`crate::history::views::answers_from`]) and sends each on `peer`'s
/// control stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Recall {
    /// A copy of `peer`'s message `sequence` arrived again. Send our logged
    /// answer to that sequence if it names `hash`; if it names another,
    /// hand `envelope` back with [`crate::core::Core::duplicate_unanswered`]
    /// (the peer signed two messages with one number). If the index has no
    /// answer, do nothing.
    Duplicate {
        /// Peer.
        peer: OfficeName,
        /// Its sequence.
        sequence: u64,
        /// The copy's hash.
        hash: [u8; 32],
        /// The copy as received.
        envelope: SignedEnvelope,
    },
    /// Resumption: send `peer` our answers to its sequences from `from` on,
    /// in order, at most `limit`.
    Answers {
        /// Peer.
        peer: OfficeName,
        /// First sequence.
        from: u64,
        /// Most answers.
        limit: usize,
    },
}
