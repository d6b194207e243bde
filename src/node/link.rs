//! One QUIC connection to a peer: five unidirectional streams out (one per
//! [`StreamClass`]), every stream the peer opens read frame by frame into
//! the actor.
//!
//! Control and FLASH go first (QUIC priority); IMMEDIATE, PRIORITY and
//! ROUTINE share one priority, so QUIC's fair scheduler gives each
//! backlogged class an equal share of the line and none waits on another's
//! backlog (docs/protocol.md §8). Each stream's queue is bounded in bytes:
//! a message that does not fit waits by sequence number in the link's
//! overflow (no bytes held twice) until its writer has room again; a
//! control frame that does not fit closes the connection, and the next one
//! resumes (§7). A writer that fails closes the connection for the same
//! reason: within a connection nothing is sent twice, so nothing may be
//! dropped either.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use quinn::{Connection, VarInt};
use tokio::sync::mpsc;

use super::actor::{ActorTx, Input};
use crate::core::StreamClass;
use crate::identity::OfficeName;
use crate::wire::FrameBuf;

/// Bytes queued per outgoing message stream before messages wait in the
/// overflow (a few seconds of a fast line; QUIC holds its own window more).
pub const STREAM_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes queued on the control stream before the connection is closed as
/// overloaded (receipts, hellos, line checks: small, and never dropped).
pub const CONTROL_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Streams a peer may have open towards us at once.
pub const MAX_PEER_STREAMS: u32 = 8;

/// QUIC application close codes (docs/protocol.md#close-codes).
pub mod close_code {
    /// Orderly shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// A second connection between the same offices; the other one is kept.
    pub const DUPLICATE: u32 = 1;
    /// The peer sent bytes that are not a valid frame.
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The certificate belongs to no pinned office.
    pub const UNKNOWN_PEER: u32 = 3;
    /// The closing side could not carry a frame on this connection (a send
    /// queue over its bound, a stream that failed): reconnect and resume.
    pub const RESET: u32 = 4;
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Which of our messages have a copy waiting in this connection's send
/// queues, shared by the actor (which queues) and the stream writers (which
/// send). At most one copy of a message waits at a time, so a slow line
/// does not fill with retransmissions of one message, and a copy whose
/// message was settled (receipt or refusal) while it waited is not sent.
#[derive(Debug, Default)]
pub struct QueuedMessages(std::sync::Mutex<std::collections::HashSet<u64>>);

impl QueuedMessages {
    fn with<R>(&self, f: impl FnOnce(&mut std::collections::HashSet<u64>) -> R) -> R {
        // A poisoned lock only means a writer panicked mid-insert: the set
        // is still a set.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Claims the queue slot of message `seq`; false when a copy already
    /// waits (the caller then queues nothing).
    pub fn claim(&self, seq: u64) -> bool {
        self.with(|q| q.insert(seq))
    }

    /// Message `seq` was settled, or its copy was not queued after all: a
    /// waiting copy is not sent.
    pub fn release(&self, seq: u64) {
        self.with(|q| q.remove(&seq));
    }

    /// The writer takes the waiting copy of `seq`: whether to send it.
    pub fn take(&self, seq: u64) -> bool {
        self.with(|q| q.remove(&seq))
    }

    /// Whether a copy of `seq` still waits (in a queue or the overflow).
    pub fn contains(&self, seq: u64) -> bool {
        self.with(|q| q.contains(&seq))
    }

    /// Copies waiting.
    pub fn len(&self) -> usize {
        self.with(|q| q.len())
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A frame for a stream writer: its bytes, and the sequence of the message
/// it carries, if it is one of ours.
pub type Outgoing = (Option<u64>, Vec<u8>);

/// One outgoing stream's queue, bounded in bytes.
#[derive(Debug)]
pub struct StreamQueue {
    tx: mpsc::UnboundedSender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    /// A push was refused: the writer reports room once it has drained half.
    starved: Arc<AtomicBool>,
    limit: usize,
}

impl StreamQueue {
    /// Queues a frame if it fits within the byte bound (an empty queue
    /// takes any one frame); false when it does not, or the writer is gone.
    pub fn push(&self, seq: Option<u64>, bytes: Vec<u8>) -> bool {
        let len = bytes.len();
        let held = self.bytes.load(Ordering::Acquire);
        if held > 0 && held.saturating_add(len) > self.limit {
            self.starved.store(true, Ordering::Release);
            return false;
        }
        self.bytes.fetch_add(len, Ordering::AcqRel);
        if self.tx.send((seq, bytes)).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Bytes waiting for the writer.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// The actor's handle on a live connection.
#[derive(Debug)]
pub struct LinkHandle {
    /// Unique per process.
    pub conn_id: u64,
    /// Which office dialed.
    pub dialed_by: OfficeName,
    /// Remote address.
    pub remote: SocketAddr,
    /// The connection (for rtt and close).
    pub conn: Connection,
    /// Encoded frames per stream class.
    pub streams: Vec<StreamQueue>,
    /// Per stream class, our messages handed over while its queue was full,
    /// by sequence, in order (their bytes stay in the core's history).
    pub overflow: Vec<VecDeque<u64>>,
    /// Our messages with a copy waiting in `streams` or `overflow`.
    pub queued: Arc<QueuedMessages>,
    /// When it came up.
    pub established: std::time::Instant,
}

/// How a connection ended, for the dialer's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed it as a duplicate: it keeps a connection of its own
    /// dialing, which may still be on its way to us.
    PeerKeptItsOwn {
        /// The connection's last round-trip estimate.
        rtt: std::time::Duration,
    },
    /// Anything else.
    Other,
}

/// Runs a connection until it closes. Reports it up, feeds frames in,
/// reports it down, and says how it ended.
pub async fn drive(
    conn: Connection,
    peer: OfficeName,
    dialed_by: OfficeName,
    actor: ActorTx,
) -> Ended {
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let mut streams = Vec::new();
    let queued = Arc::new(QueuedMessages::default());
    for class in StreamClass::ALL {
        let (tx, rx) = mpsc::unbounded_channel();
        let q = StreamQueue {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            starved: Arc::new(AtomicBool::new(false)),
            limit: if class == StreamClass::Control {
                CONTROL_QUEUE_BYTES
            } else {
                STREAM_QUEUE_BYTES
            },
        };
        let writer = Writer {
            conn: conn.clone(),
            class,
            bytes: q.bytes.clone(),
            starved: q.starved.clone(),
            limit: q.limit,
            queued: queued.clone(),
            actor: actor.clone(),
            peer: peer.clone(),
            conn_id,
        };
        tokio::spawn(writer.run(rx));
        streams.push(q);
    }
    let handle = LinkHandle {
        conn_id,
        dialed_by,
        remote: conn.remote_address(),
        conn: conn.clone(),
        streams,
        overflow: vec![VecDeque::new(); StreamClass::ALL.len()],
        queued,
        established: std::time::Instant::now(),
    };
    if actor
        .send(Input::LinkUp {
            peer: peer.clone(),
            link: handle,
        })
        .await
        .is_err()
    {
        return Ended::Other;
    }
    let reader_conn = conn.clone();
    let reader_actor = actor.clone();
    let reader_peer = peer.clone();
    let accept = tokio::spawn(async move {
        while let Ok(recv) = reader_conn.accept_uni().await {
            tokio::spawn(read_stream(
                recv,
                reader_conn.clone(),
                reader_peer.clone(),
                conn_id,
                reader_actor.clone(),
            ));
        }
    });
    let datagrams = tokio::spawn(read_datagrams(
        conn.clone(),
        peer.clone(),
        conn_id,
        actor.clone(),
    ));
    let reason = conn.closed().await;
    accept.abort();
    datagrams.abort();
    let ended = match &reason {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(close_code::DUPLICATE) =>
        {
            Ended::PeerKeptItsOwn { rtt: conn.rtt() }
        }
        _ => Ended::Other,
    };
    let _ = actor
        .send(Input::LinkDown {
            peer,
            conn_id,
            reason: reason.to_string(),
        })
        .await;
    ended
}

/// One outgoing stream's writer.
struct Writer {
    conn: Connection,
    class: StreamClass,
    bytes: Arc<AtomicUsize>,
    starved: Arc<AtomicBool>,
    limit: usize,
    queued: Arc<QueuedMessages>,
    actor: ActorTx,
    peer: OfficeName,
    conn_id: u64,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
        let mut send = None;
        while let Some((seq, bytes)) = rx.recv().await {
            self.bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
            if self.starved.load(Ordering::Acquire)
                && self.bytes.load(Ordering::Acquire) <= self.limit / 2
            {
                self.starved.store(false, Ordering::Release);
                let room = Input::LinkRoom {
                    peer: self.peer.clone(),
                    conn_id: self.conn_id,
                };
                if self.actor.send(room).await.is_err() {
                    return;
                }
            }
            if let Some(seq) = seq {
                if !self.queued.take(seq) {
                    continue; // settled while it waited: QUIC need not carry it
                }
            }
            if send.is_none() {
                match self.conn.open_uni().await {
                    Ok(s) => {
                        let _ = s.set_priority(self.class.priority());
                        send = Some(s);
                    }
                    Err(_) => return, // the connection is closing
                }
            }
            let Some(s) = send.as_mut() else {
                return; // opened just above
            };
            if let Err(e) = s.write_all(&bytes).await {
                // What this stream would still have carried is lost: end
                // the connection so the next one resumes (§7).
                self.conn.close(
                    VarInt::from_u32(close_code::RESET),
                    format!("{:?} stream failed: {e}", self.class).as_bytes(),
                );
                return;
            }
        }
        if let Some(mut s) = send {
            let _ = s.finish();
        }
    }
}

/// Sends `bytes` (one encoded frame) as a QUIC DATAGRAM too, when the
/// peer accepts datagrams of that size (§8b). Best effort by design: the
/// stream copy is the one that must arrive; a datagram that does not fit
/// or finds the buffer full is simply not sent.
pub fn send_datagram_copy(conn: &Connection, bytes: &[u8]) {
    if conn
        .max_datagram_size()
        .is_some_and(|max| bytes.len() <= max)
    {
        let _ = conn.send_datagram(bytes::Bytes::copy_from_slice(bytes));
    }
}

/// Feeds the peer's datagrams that are line checks into the actor, as the
/// same frames its streams carry; anything else is dropped unanswered.
/// The actor's queue bounds how fast this reads, and quinn's receive
/// buffer (bounded in the transport config) drops the oldest beyond it.
async fn read_datagrams(conn: Connection, peer: OfficeName, conn_id: u64, actor: ActorTx) {
    while let Ok(datagram) = conn.read_datagram().await {
        let Ok(frame) = crate::wire::frame::parse_datagram(&datagram) else {
            continue;
        };
        if !feed(&actor, &peer, conn_id, frame).await {
            return;
        }
    }
}

/// Gives the actor a frame from connection `conn_id`; false once the actor
/// is gone.
async fn feed(
    actor: &ActorTx,
    peer: &OfficeName,
    conn_id: u64,
    frame: crate::wire::proto::Frame,
) -> bool {
    let input = Input::Frame {
        peer: peer.clone(),
        conn_id,
        frame,
    };
    actor.send(input).await.is_ok()
}

async fn read_stream(
    mut recv: quinn::RecvStream,
    conn: Connection,
    peer: OfficeName,
    conn_id: u64,
    actor: ActorTx,
) {
    let mut fb = FrameBuf::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                fb.extend(buf.get(..n).unwrap_or_default());
                loop {
                    match fb.next_frame() {
                        Ok(Some(frame)) => {
                            if !feed(&actor, &peer, conn_id, frame).await {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // The actor logs it (sampled: a pinned peer
                            // could redial and repeat this all day).
                            let _ = actor
                                .send(Input::BadFrame {
                                    peer: peer.clone(),
                                    detail: e.to_string(),
                                })
                                .await;
                            conn.close(
                                VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                                format!("bad frame: {e}").as_bytes(),
                            );
                            return;
                        }
                    }
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod queued_tests {
    use super::QueuedMessages;

    #[test]
    fn one_copy_waits_per_message_and_a_settled_one_is_not_sent() {
        let q = QueuedMessages::default();
        assert!(q.claim(7));
        assert!(!q.claim(7), "a second copy is not queued");
        assert!(q.claim(8));
        q.release(8); // receipt arrived while 8 waited
        assert!(q.take(7), "7 is sent");
        assert!(!q.take(8), "8 is not");
        assert!(q.is_empty());
        assert!(
            q.claim(7),
            "after it left, a retransmission may queue again"
        );
    }
}
