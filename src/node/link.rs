//! One QUIC connection to a peer: five unidirectional streams out (one per
//! [`StreamClass`], with QUIC priorities so FLASH overtakes ROUTINE), every
//! stream the peer opens read frame by frame into the actor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn::{Connection, VarInt};
use tokio::sync::mpsc;

use super::actor::{ActorTx, Input};
use crate::core::StreamClass;
use crate::identity::OfficeName;
use crate::wire::FrameBuf;

/// Frames queued per outgoing stream before the actor starts dropping
/// (the core retransmits what is dropped).
pub const STREAM_QUEUE: usize = 4096;
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

/// The actor's handle on a live connection.
#[derive(Debug, Clone)]
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
    pub streams: Vec<mpsc::Sender<Outgoing>>,
    /// Our messages with a copy waiting in `streams`.
    pub queued: std::sync::Arc<QueuedMessages>,
    /// When it came up.
    pub established: std::time::Instant,
}

/// Runs a connection until it closes. Reports it up, feeds frames in,
/// reports it down.
pub async fn drive(conn: Connection, peer: OfficeName, dialed_by: OfficeName, actor: ActorTx) {
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let mut streams = Vec::new();
    let queued = std::sync::Arc::new(QueuedMessages::default());
    for class in StreamClass::ALL {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(write_stream(conn.clone(), class, rx, queued.clone()));
        streams.push(tx);
    }
    let handle = LinkHandle {
        conn_id,
        dialed_by,
        remote: conn.remote_address(),
        conn: conn.clone(),
        streams,
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
        return;
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
    let reason = conn.closed().await;
    accept.abort();
    let _ = actor
        .send(Input::LinkDown {
            peer,
            conn_id,
            reason: reason.to_string(),
        })
        .await;
}

async fn write_stream(
    conn: Connection,
    class: StreamClass,
    mut rx: mpsc::Receiver<Outgoing>,
    queued: std::sync::Arc<QueuedMessages>,
) {
    let mut send = None;
    while let Some((seq, bytes)) = rx.recv().await {
        if let Some(seq) = seq {
            if !queued.take(seq) {
                continue; // settled while it waited: QUIC need not carry it
            }
        }
        if send.is_none() {
            match conn.open_uni().await {
                Ok(s) => {
                    let _ = s.set_priority(class.priority());
                    send = Some(s);
                }
                Err(_) => return,
            }
        }
        let Some(s) = send.as_mut() else {
            return; // opened just above
        };
        if s.write_all(&bytes).await.is_err() {
            return;
        }
    }
    if let Some(mut s) = send {
        let _ = s.finish();
    }
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
                            let input = Input::Frame {
                                peer: peer.clone(),
                                conn_id,
                                frame,
                            };
                            if actor.send(input).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%peer, "closing the line: {peer} sent a bad frame: {e}");
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
