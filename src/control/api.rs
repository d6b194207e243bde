//! Request and response bodies of the control API.

use serde::{Deserialize, Serialize};

use crate::core::{Draft, OutState};
use crate::wire::proto::{AlertLevel, Kind, Precedence, Response};

/// Parses a precedence name (`flash`, `immediate`, `priority`, `routine`).
pub fn parse_precedence(s: &str) -> Option<Precedence> {
    Some(match s.to_ascii_lowercase().as_str() {
        "flash" | "z" => Precedence::Flash,
        "immediate" | "o" => Precedence::Immediate,
        "priority" | "p" => Precedence::Priority,
        "routine" | "r" => Precedence::Routine,
        _ => return None,
    })
}

/// The lowercase name of a precedence.
pub fn precedence_name(p: Precedence) -> &'static str {
    match p {
        Precedence::Flash => "flash",
        Precedence::Immediate => "immediate",
        Precedence::Priority => "priority",
        Precedence::Routine | Precedence::Unspecified => "routine",
    }
}

/// Parses a kind name.
pub fn parse_kind(s: &str) -> Option<Kind> {
    Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "notification" => Kind::Notification,
        "inquiry" => Kind::Inquiry,
        "response" => Kind::Response,
        "proposal" => Kind::Proposal,
        "call-request" => Kind::CallRequest,
        "statement" => Kind::Statement,
        "acknowledgement" | "ack" => Kind::Acknowledgement,
        _ => return None,
    })
}

/// Parses a response name.
pub fn parse_response(s: &str) -> Option<Response> {
    Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "will-comply" | "wilco" => Response::WillComply,
        "cannot-comply" | "cantco" => Response::CannotComply,
        "have-complied" => Response::HaveComplied,
        "information" | "info" => Response::Information,
        _ => return None,
    })
}

/// The name of a response ("" when unspecified).
pub fn response_name(r: Response) -> &'static str {
    match r {
        Response::Unspecified => "",
        Response::WillComply => "will-comply",
        Response::CannotComply => "cannot-comply",
        Response::HaveComplied => "have-complied",
        Response::Information => "information",
    }
}

/// Parses an alert level name.
pub fn parse_alert_level(s: &str) -> Option<AlertLevel> {
    Some(match s.to_ascii_lowercase().as_str() {
        "normal" => AlertLevel::Normal,
        "elevated" => AlertLevel::Elevated,
        "crisis" => AlertLevel::Crisis,
        _ => return None,
    })
}

/// The name of an alert level.
pub fn alert_level_name(l: AlertLevel) -> &'static str {
    match l {
        AlertLevel::Normal | AlertLevel::Unspecified => "normal",
        AlertLevel::Elevated => "elevated",
        AlertLevel::Crisis => "crisis",
    }
}

/// The lowercase name of a kind.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Notification | Kind::Unspecified => "notification",
        Kind::Inquiry => "inquiry",
        Kind::Response => "response",
        Kind::Proposal => "proposal",
        Kind::CallRequest => "call-request",
        Kind::Statement => "statement",
        Kind::Acknowledgement => "acknowledgement",
    }
}

/// `POST /v1/messages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendRequest {
    /// Recipient office.
    pub to: String,
    /// `flash`, `immediate`, `priority` or `routine` (default).
    pub precedence: Option<String>,
    /// `notification` (default), `inquiry`, `response`, `proposal`,
    /// `call-request`, `statement`.
    pub kind: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Body text.
    pub body: String,
    /// Thread id.
    pub thread: String,
    /// Id of the message this answers.
    pub reply_to: String,
    /// BCP 47 language tag (default "en").
    pub language: String,
    /// Mark as drill traffic.
    pub exercise: bool,
    /// For replies: `will-comply`, `cannot-comply`, `have-complied`, `information`.
    pub response: Option<String>,
    /// Also send it at once, sealed, through this relay.
    pub via: Option<String>,
    /// Wait for the signed receipt before answering.
    pub wait: bool,
    /// How long to wait, in ms (default 30 000).
    pub wait_ms: Option<u64>,
}

impl SendRequest {
    /// The core draft, or a message saying which field is wrong.
    pub fn to_draft(&self) -> Result<Draft, String> {
        let precedence = match &self.precedence {
            None => Precedence::Routine,
            Some(p) => parse_precedence(p).ok_or_else(|| {
                format!("precedence {p:?} is not one of flash, immediate, priority, routine")
            })?,
        };
        let kind = match &self.kind {
            None => Kind::Notification,
            Some(k) => parse_kind(k).ok_or_else(|| {
                format!("kind {k:?} is not one of notification, inquiry, response, proposal, call-request, statement")
            })?,
        };
        let response = match &self.response {
            None => Response::Unspecified,
            Some(r) => parse_response(r).ok_or_else(|| {
                format!("response {r:?} is not one of will-comply, cannot-comply, have-complied, information")
            })?,
        };
        Ok(Draft {
            response,
            to: self.to.clone(),
            precedence,
            kind,
            thread: self.thread.clone(),
            reply_to: self.reply_to.clone(),
            subject: self.subject.clone(),
            body: self.body.clone(),
            language: self.language.clone(),
            exercise: self.exercise,
        })
    }
}

/// Answer to `POST /v1/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResponse {
    /// Message id.
    pub id: String,
    /// Sequence on the channel.
    pub sequence: u64,
    /// Microseconds from the request to durable acceptance.
    pub accepted_us: u64,
    /// With `wait`: the receipt, if it came in time.
    pub delivered: Option<Delivery>,
}

/// A held receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Microseconds from acceptance to the verified receipt (when the node
    /// saw both).
    pub elapsed_us: Option<u64>,
    /// The receiver's log index for the message.
    pub receiver_log_index: u64,
    /// The receiver's wall clock when it logged the message.
    pub received_unix_ms: u64,
    /// The signed receipt envelope, hex-encoded protobuf.
    pub receipt_hex: String,
}

/// `GET /v1/delivery`: the delivery, or `None` while the receipt is not
/// yet held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryWait {
    /// The delivery, once the receipt is held.
    pub delivered: Option<Delivery>,
}

/// A message in `GET /v1/inbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Sender.
    pub from: String,
    /// Id.
    pub id: String,
    /// Sequence.
    pub sequence: u64,
    /// Precedence name.
    pub precedence: String,
    /// Kind name.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Thread.
    pub thread: String,
    /// Replied-to id.
    pub reply_to: String,
    /// Language.
    pub language: String,
    /// Drill traffic.
    pub exercise: bool,
    /// Sender's clock.
    pub created_unix_ms: u64,
    /// Our clock at logging.
    pub received_unix_ms: u64,
    /// Our log index.
    pub log_index: u64,
    /// We acknowledged it (or replied to it).
    #[serde(default)]
    pub acknowledged: bool,
}

/// A message in `GET /v1/outbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Recipient.
    pub to: String,
    /// Id.
    pub id: String,
    /// Sequence.
    pub sequence: u64,
    /// Precedence name.
    pub precedence: String,
    /// Subject.
    pub subject: String,
    /// queued, sent, delivered or refused.
    pub state: OutState,
    /// Transmissions so far (this run).
    pub attempts: u32,
    /// Our clock at creation.
    pub created_unix_ms: u64,
    /// The receipt, once held.
    pub delivery: Option<Delivery>,
    /// Drill traffic.
    #[serde(default)]
    pub exercise: bool,
    /// Our log index of the entry that holds it (the paging cursor).
    #[serde(default)]
    pub log_index: u64,
}

/// Describes a signed receipt envelope.
pub fn delivery(env: &crate::wire::proto::SignedEnvelope, elapsed_us: Option<u64>) -> Delivery {
    use prost::Message as _;
    let r = crate::wire::proto::Receipt::decode(env.payload.as_slice()).unwrap_or_default();
    Delivery {
        elapsed_us,
        receiver_log_index: r.log_index,
        received_unix_ms: r.received_unix_ms,
        receipt_hex: hex::encode(env.encode_to_vec()),
    }
}

/// One peer in `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer office.
    pub office: String,
    /// "up" or "down".
    pub link: String,
    /// Whether the peer's hello arrived on the current connection.
    pub resumed: bool,
    /// Address dialed, if any.
    pub dial_addr: Option<String>,
    /// QUIC round-trip estimate, ms.
    pub rtt_ms: Option<f64>,
    /// Last time anything arrived from the peer (our clock).
    pub last_heard_unix_ms: Option<u64>,
    /// Unreceipted messages to the peer.
    pub outbox: usize,
    /// Of those, never transmitted.
    pub queued: usize,
    /// Messages delivered to the peer.
    pub delivered: u64,
    /// Messages received from the peer.
    pub received: u64,
    /// The channel's effective alert level (line checks follow it):
    /// normal, elevated, crisis.
    pub alert_level: String,
    /// Our own level, set by our operator and ladders.
    #[serde(default)]
    pub own_alert_level: String,
    /// The level the peer last said it set; it may raise the effective
    /// level, never lower it below ours.
    #[serde(default)]
    pub peer_alert_level: String,
    /// Line-check health: up, degraded, silent.
    pub health: String,
    /// Consecutive line checks unanswered.
    pub missed_line_checks: u32,
    /// Last line-check round trip, ms.
    pub line_check_rtt_ms: Option<u64>,
    /// Sent messages not yet acknowledged.
    pub awaiting_ack: usize,
    /// Refusals of this peer's input beyond the per-minute budget (counted,
    /// not logged): nonzero means the peer floods us with bad input.
    #[serde(default)]
    pub refusals_suppressed: u64,
    /// All of the peer's input dropped over its per-peer budgets (refusals,
    /// notices, cosignatures, evidence, answers, reports).
    #[serde(default)]
    pub input_dropped: u64,
    /// Every sequence 1..=N from the peer is settled here (delivered, or
    /// refused with a settling negative receipt).
    #[serde(default)]
    pub received_through: u64,
    /// Relays that may carry to this peer.
    pub relays: Vec<String>,
    /// The route in use now: "direct", "via RELAY", or "none".
    pub route: String,
    /// Largest size of our log the peer has cosigned.
    pub peer_cosigned_size: u64,
    /// Size of the peer's latest checkpoint we cosigned.
    pub we_cosigned_size: u64,
}

/// Refused connections of one kind from one place, for operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// The latest one (our clock).
    pub unix_ms: u64,
    /// The first one.
    #[serde(default)]
    pub first_unix_ms: u64,
    /// How many.
    #[serde(default)]
    pub count: u64,
    /// The latest one's remote address (or the pinned office's name for a
    /// bad frame).
    pub remote: String,
    /// A short stable name: `unknown-ca`, `card-mismatch`,
    /// `bad-certificate`, `no-card`, `bad-frame` (these present an
    /// identity) or `wrong-alpn`, `peer-refusing`, `timed-out`,
    /// `handshake-failed` (noise).
    #[serde(default)]
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// The latest one's transport error text (at most 240 bytes).
    pub error: String,
}

/// `POST /v1/confirm-card` body: the operator read the fingerprint aloud
/// with the peer and confirms its held card update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmCardRequest {
    /// The peer.
    pub peer: String,
    /// The new card's fingerprint, as read aloud.
    pub fingerprint: String,
}

/// A peer's card update waiting for the operator's confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldCardStatus {
    /// The peer.
    pub peer: String,
    /// The card it replaces.
    pub old_fingerprint: String,
    /// The new card's fingerprint.
    pub fingerprint: String,
}

/// `POST /v1/rotate/keys` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotateKeysRequest {
    /// Which keys: any of `message`, `log`, `seal`; empty = all three.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// `POST /v1/rotate/cert` and `/v1/rotate/keys`: the card offered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateResponse {
    /// The card it replaces.
    pub old_fingerprint: String,
    /// The new card's fingerprint.
    pub fingerprint: String,
    /// Peers that have yet to accept it (empty: the node switched).
    pub waiting: Vec<String>,
}

/// A card offered to the peers, not yet accepted by all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardRotationStatus {
    /// The new card's fingerprint.
    pub fingerprint: String,
    /// Peers that have yet to accept it.
    pub waiting: Vec<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This office.
    pub office: String,
    /// Card fingerprint.
    pub fingerprint: String,
    /// QUIC address the node listens on.
    pub listen: String,
    /// When this node's certificate expires (Unix ms).
    #[serde(default)]
    pub node_cert_expires_unix_ms: Option<u64>,
    /// Set when it expires within 60 days or has expired.
    #[serde(default)]
    pub node_cert_warning: Option<String>,
    /// A rotation waiting for peers to accept the new card.
    #[serde(default)]
    pub card_rotation: Option<CardRotationStatus>,
    /// Peers' card updates waiting for this operator's confirmation.
    #[serde(default)]
    pub held_card_updates: Vec<HeldCardStatus>,
    /// Log entries.
    pub log_entries: u64,
    /// Size covered by our latest checkpoint.
    pub checkpoint_size: Option<u64>,
    /// Per peer.
    pub peers: Vec<PeerStatus>,
    /// Refused attempts that presented an identity (a certificate from an
    /// unpinned CA, one off the card, bad frames from a pinned office),
    /// one row per source address and kind, least recently seen first, at
    /// most 32. Noise cannot flush these.
    pub refused: Vec<Refusal>,
    /// Every other refused connection (timeouts, wrong ALPN, handshakes
    /// that failed without a certificate): one row per kind.
    #[serde(default)]
    pub refusal_noise: Vec<Refusal>,
    /// Messages past a deadline, latest first.
    pub overdue: Vec<OverdueEntry>,
    /// Recent alerts, escalations, line-health and alert-level changes,
    /// newest first (at most 16).
    pub alerts: Vec<WatchEvent>,
    /// Times the protocol core panicked and was rebuilt from the log since
    /// the node started (0 on a healthy node; any other value is a bug to
    /// report).
    #[serde(default)]
    pub core_restarts: u64,
    /// The last such panic's message.
    #[serde(default)]
    pub last_core_panic: Option<String>,
    /// Unauthenticated traffic on the control API since start.
    #[serde(default)]
    pub control_noise: ControlNoiseStatus,
}

/// What the control API turned away since the node started: counted, not
/// logged, so that noise cannot fill the node's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlNoiseStatus {
    /// Requests without the right bearer token (each answered 401 and its
    /// connection closed).
    pub unauthenticated: u64,
    /// Connections closed for making no authenticated request within 2 s.
    pub timed_out: u64,
    /// Connections without an authenticated request closed to make room
    /// for a newer one (64 may be open).
    pub evicted: u64,
    /// Connections refused because all 64 were authenticated.
    pub refused_full: u64,
}

/// A message past its receipt or acknowledgement deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverdueEntry {
    /// Recipient.
    pub peer: String,
    /// Message id.
    pub id: String,
    /// Precedence.
    pub precedence: String,
    /// receipt or acknowledgement.
    pub waiting_for: String,
    /// How late, ms.
    pub late_ms: u64,
}

/// `POST /v1/ack`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AckRequest {
    /// The received message to acknowledge.
    pub id: String,
    /// A note for the sender.
    pub note: String,
    /// will-comply, cannot-comply, have-complied, information.
    pub response: Option<String>,
}

/// `POST /v1/alert-level`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertLevelRequest {
    /// Peer office.
    pub peer: String,
    /// normal, elevated or crisis.
    pub level: String,
    /// Why (told to the peer).
    pub reason: String,
}

/// One event for `watch` (`GET /v1/events?after=N`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Increasing number (pass the last one seen as `after`).
    pub seq: u64,
    /// When (node's clock).
    pub unix_ms: u64,
    /// received, delivered, acknowledged, escalation, alert, line-health,
    /// alert-level, refused, negative-receipt, link, deadline-approaching.
    pub kind: String,
    /// Peer, when there is one.
    pub peer: Option<String>,
    /// Message, when there is one.
    pub msg: Option<String>,
    /// For people.
    pub detail: String,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}
