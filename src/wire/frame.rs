//! Length-delimited framing on a QUIC stream.
//!
//! A frame is a 4-byte big-endian length `N` followed by `N` bytes of an
//! encoded [`Frame`](super::proto::Frame). Like mini-redis, reading is
//! check-then-parse: [`FrameBuf::next_frame`] first checks that a whole frame
//! is buffered and within [`MAX_FRAME_LEN`], and only then decodes it, so a
//! hostile length never makes us allocate or wait for more than the limit.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message as _;

use super::proto::Frame;

/// Largest frame body accepted or sent, in bytes (256 KiB).
///
/// A message body is at most [`crate::core::MAX_BODY_LEN`] (64 KiB); the rest
/// is headroom for envelope overhead and future frames.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Why bytes on a stream are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces a body larger than [`MAX_FRAME_LEN`]. The stream
    /// is unusable afterwards: there is no way to resynchronise.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid protobuf `Frame`.
    #[error("frame body is not a valid hotline frame: {0}")]
    Malformed(String),
    /// A zero-length frame or a frame with no body variant set.
    #[error("empty frame")]
    Empty,
}

/// Encodes one frame with its length header.
///
/// # Panics
/// If the encoded frame exceeds [`MAX_FRAME_LEN`]; callers bound message
/// sizes before building frames, so this is a bug, not an input error.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let len = frame.encoded_len();
    assert!(len <= MAX_FRAME_LEN, "frame of {len} bytes over the limit");
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(len));
    out.put_u32(len as u32);
    // Encoding into a Vec cannot fail: it grows as needed.
    #[allow(clippy::expect_used)]
    frame.encode(&mut out).expect("vec grows");
    out
}

/// A receive buffer that yields whole frames.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: BytesMut,
}

impl FrameBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next whole frame, `Ok(None)` if more bytes are needed.
    ///
    /// Errors are final for the stream: the caller must stop reading it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(len) = check(&self.buf)? else {
            return Ok(None);
        };
        self.buf.advance(HEADER_LEN);
        let body = self.buf.split_to(len);
        parse(&body).map(Some)
    }
}

/// Checks whether `buf` starts with a whole frame; returns its body length.
pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let Some(&[a, b, c, d]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < HEADER_LEN.saturating_add(len) {
        return Ok(None);
    }
    Ok(Some(len))
}

/// Decodes a frame body (without header).
pub fn parse(body: &[u8]) -> Result<Frame, FrameError> {
    // A frame whose `body` is unset is either empty or a frame type from a
    // later version; it decodes fine and the caller ignores it
    // (docs/protocol.md: unknown frames are ignored).
    Frame::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Why a QUIC DATAGRAM is not a line check (docs/protocol.md §8b). Each
/// is dropped without an answer or a log line: datagrams are a redundant
/// copy, and a peer's noise on them costs it nothing but our parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatagramError {
    /// Not exactly one whole frame.
    #[error("a datagram holds exactly one whole frame")]
    NotOneFrame,
    /// The frame is bad.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame other than `line_check`: only line checks may be sent
    /// unreliably.
    #[error("only line checks travel as datagrams")]
    NotLineCheck,
}

/// Checks then parses one QUIC DATAGRAM: exactly one frame, with its
/// header, carrying a `line_check`.
pub fn parse_datagram(datagram: &[u8]) -> Result<Frame, DatagramError> {
    let len = check(datagram)?.ok_or(DatagramError::NotOneFrame)?;
    if HEADER_LEN.checked_add(len) != Some(datagram.len()) {
        return Err(DatagramError::NotOneFrame);
    }
    let body = datagram
        .get(HEADER_LEN..)
        .ok_or(DatagramError::NotOneFrame)?;
    let frame = parse(body)?;
    match frame.body {
        Some(super::proto::frame::Body::LineCheck(_)) => Ok(frame),
        _ => Err(DatagramError::NotLineCheck),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::{frame::Body, Hello};

    fn hello() -> Frame {
        Frame {
            body: Some(Body::Hello(Hello {
                protocol_version: 1,
                office: "washington".into(),
                received_through: 7,
                receipted_through: 3,
                reply: false,
                cosigned_size: 0,
            })),
        }
    }

    fn line_check() -> Frame {
        Frame {
            body: Some(Body::LineCheck(crate::wire::proto::SignedEnvelope {
                payload: vec![1, 2, 3],
                key_id: vec![0; 8],
                signature: vec![0; 64],
            })),
        }
    }

    #[test]
    fn a_datagram_is_one_whole_line_check_frame() {
        let one = encode(&line_check());
        assert_eq!(parse_datagram(&one), Ok(line_check()));
        // Two frames, a short one, a trailing byte, a header alone.
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(parse_datagram(&two), Err(DatagramError::NotOneFrame));
        assert_eq!(
            parse_datagram(&one[..one.len() - 1]),
            Err(DatagramError::NotOneFrame)
        );
        let long = [one.clone(), vec![0]].concat();
        assert_eq!(parse_datagram(&long), Err(DatagramError::NotOneFrame));
        assert_eq!(parse_datagram(&one[..2]), Err(DatagramError::NotOneFrame));
        // Anything but a line check, however valid.
        assert_eq!(
            parse_datagram(&encode(&hello())),
            Err(DatagramError::NotLineCheck)
        );
        assert_eq!(
            parse_datagram(&encode(&Frame { body: None })[..]),
            Err(DatagramError::Frame(FrameError::Empty))
        );
        let huge = ((MAX_FRAME_LEN as u32) + 1).to_be_bytes();
        assert!(matches!(
            parse_datagram(&huge),
            Err(DatagramError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[test]
    fn round_trip_byte_at_a_time() {
        let bytes = [encode(&hello()), encode(&hello())].concat();
        let mut fb = FrameBuf::new();
        let mut got = vec![];
        for b in bytes {
            fb.extend(&[b]);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![hello(), hello()]);
        assert_eq!(fb.buffered(), 0);
    }

    #[test]
    fn oversize_header_is_rejected_before_the_body_arrives() {
        let mut fb = FrameBuf::new();
        fb.extend(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
    }

    fn message_frame_with_payload(len: usize) -> Frame {
        Frame {
            body: Some(Body::Message(crate::wire::proto::SignedEnvelope {
                payload: vec![7u8; len],
                key_id: vec![],
                signature: vec![],
            })),
        }
    }

    #[test]
    fn frame_at_the_limit_is_accepted_and_one_byte_more_is_not() {
        // Find the payload size whose frame encodes to exactly the limit.
        let mut p = MAX_FRAME_LEN;
        while message_frame_with_payload(p).encoded_len() > MAX_FRAME_LEN {
            p -= 1;
        }
        let frame = message_frame_with_payload(p);
        assert_eq!(frame.encoded_len(), MAX_FRAME_LEN);
        let mut fb = FrameBuf::new();
        fb.extend(&encode(&frame));
        assert_eq!(fb.next_frame().unwrap(), Some(frame));

        let mut over = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        over.extend(vec![0u8; MAX_FRAME_LEN + 1]);
        assert!(matches!(check(&over), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut fb = FrameBuf::new();
        fb.extend(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(fb.next_frame(), Err(FrameError::Malformed(_))));
        let mut fb = FrameBuf::new();
        fb.extend(&[0, 0, 0, 0]);
        assert_eq!(fb.next_frame(), Err(FrameError::Empty));
    }
}
