//! A hostile office: frames a pinned peer could send, signed with its real
//! keys, chosen by a [`Choices`] source.
//!
//! The adversary of hotline is the peer office itself. It holds a valid
//! certificate, message key and log key and "can send anything it is
//! willing to sign" (docs/threat-model.md). [`HostileOffice`] plays it: every
//! frame kind, with plausible numbers (so the honest core's deeper paths are
//! reached), hostile ones (at the top of the range, over the limits, already
//! settled), mutated copies of what it saw and replays of what it sent,
//! equivocating checkpoints, and bursts.
//!
//! The same generator serves the Byzantine schedules of the simulator (the
//! choices come from the seeded RNG) and the `core_frames` fuzz target (the
//! choices come from libFuzzer's bytes), so whatever the fuzzer learns about
//! reaching a path, the simulator's schedules reach too.

use ed25519_dalek::SigningKey;
use prost::Message as _;

use crate::audit::checkpoint;
use crate::audit::merkle::Tree;
use crate::identity::OfficeName;
use crate::wire::envelope::{self, Domain};
use crate::wire::proto::{
    frame::Body, AlertLevelNotice, CheckpointOffer, CheckpointRefused, Cosignature, Frame, Hello,
    LineCheck, Message, NegativeReceipt, Receipt, RelayReceipt, RelayTaken, RoutingHeader, Sealed,
    SignedEnvelope,
};
use crate::wire::{sha256, MessageId};

/// Where a hostile office's choices come from: a seeded RNG in the
/// simulator, the fuzzer's input in the fuzz target.
pub trait Choices {
    /// A number in `0..n` (`n` > 0); 0 when the source is exhausted.
    fn below(&mut self, n: u64) -> u64;
    /// Up to `max` bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8>;
    /// A fair coin.
    fn coin(&mut self) -> bool {
        self.below(2) == 1
    }
    /// A full-range number.
    fn any_u64(&mut self) -> u64 {
        self.below(u64::MAX)
    }
}

impl Choices for rand::rngs::StdRng {
    fn below(&mut self, n: u64) -> u64 {
        use rand::Rng;
        self.gen_range(0..n.max(1))
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        use rand::Rng;
        let n = self.gen_range(0..=max);
        (0..n).map(|_| self.gen()).collect()
    }
}

/// The most frames a hostile office remembers (for replays and mutation).
const MEMORY: usize = 64;

/// One hostile office aimed at one honest office.
pub struct HostileOffice {
    me: OfficeName,
    target: OfficeName,
    key: SigningKey,
    log_key: SigningKey,
    target_seal: [u8; 32],
    origin: String,
    /// What it signs checkpoints over (it may also sign other roots).
    tree: Tree,
    /// Channel sequences it has used (the highest), and per precedence.
    seq: u64,
    ps: [u64; 5],
    /// Frames it sent, for replays.
    sent: Vec<Frame>,
    /// Messages the target sent it (with their payload hashes), and the
    /// checkpoint notes it offered.
    seen_messages: Vec<(Message, [u8; 32])>,
    seen_notes: Vec<Vec<u8>>,
}

impl HostileOffice {
    /// Office `me` with its real message and log keys, aimed at `target`
    /// whose seal public key is `target_seal`.
    pub fn new(
        me: OfficeName,
        key: SigningKey,
        log_key: SigningKey,
        target: OfficeName,
        target_seal: [u8; 32],
    ) -> Self {
        HostileOffice {
            origin: checkpoint::origin(&me, &log_key.verifying_key()),
            me,
            target,
            key,
            log_key,
            target_seal,
            tree: Tree::new(),
            seq: 0,
            ps: [0; 5],
            sent: Vec::new(),
            seen_messages: Vec::new(),
            seen_notes: Vec::new(),
        }
    }

    /// Learns from a frame the target sent: message ids to receipt or
    /// refuse, checkpoint notes to cosign.
    pub fn observe(&mut self, frame: &Frame) {
        match &frame.body {
            Some(Body::Message(env)) => {
                if let Ok(m) = Message::decode(env.payload.as_slice()) {
                    remember(&mut self.seen_messages, (m, sha256(&env.payload)));
                }
            }
            Some(Body::CheckpointOffer(env)) => {
                if let Ok(o) = CheckpointOffer::decode(env.payload.as_slice()) {
                    remember(&mut self.seen_notes, o.note);
                }
            }
            _ => {}
        }
    }

    /// The next hostile frame.
    pub fn frame(&mut self, c: &mut dyn Choices, wall_ms: u64) -> Frame {
        let body = match c.below(16) {
            0..=3 => Some(Body::Message(self.message(c, wall_ms))),
            4 => Some(Body::Receipt(self.receipt(c, wall_ms))),
            5 => Some(Body::NegativeReceipt(self.refusal(c, wall_ms))),
            6 => Some(Body::Hello(self.hello(c))),
            7 => Some(Body::CheckpointOffer(self.offer(c))),
            8 => Some(self.cosignature_or_refusal(c)),
            9 => Some(Body::LineCheck(self.line_check(c, wall_ms))),
            10 => Some(Body::AlertLevel(self.alert_level(c, wall_ms))),
            11 => Some(Body::Sealed(self.sealed(c))),
            12 => Some(self.relay_frame(c, wall_ms)),
            13 => self.raw(c),
            _ => {
                // A replay, verbatim or with one byte of the signed payload
                // flipped (so the signature no longer holds).
                let pick = c.below(self.sent.len().max(1) as u64) as usize;
                let mut f = self.sent.get(pick).cloned().unwrap_or_default();
                if c.coin() {
                    flip(&mut f, c);
                }
                return f;
            }
        };
        let f = Frame { body };
        if c.below(4) != 0 {
            remember(&mut self.sent, f.clone());
        }
        f
    }

    fn seal(&self, domain: Domain, payload: &impl prost::Message) -> SignedEnvelope {
        let key = if domain == Domain::CheckpointOffer {
            &self.log_key
        } else {
            &self.key
        };
        envelope::seal_proto(domain, payload, key)
    }

    /// A number that is plausible (next, recent, a little ahead), far
    /// ahead, zero or at the top of the range.
    fn number(c: &mut dyn Choices, next: u64) -> u64 {
        match c.below(8) {
            0..=3 => next,
            4 => next.saturating_sub(c.below(4)),
            5 => next.saturating_add(c.below(8)),
            6 => c.any_u64(),
            _ => [0, u64::MAX, u64::MAX - 1, 1 << 63][c.below(4) as usize % 4],
        }
    }

    fn text(c: &mut dyn Choices, plausible: &str) -> String {
        match c.below(6) {
            0..=2 => plausible.to_string(),
            3 => String::from_utf8_lossy(&c.bytes(64)).into_owned(),
            // Multibyte text over every limit, so a byte-index cut lands
            // inside a character.
            4 => format!("a{}", "é".repeat(200 + c.below(800) as usize)),
            _ => "\u{1b}[2J\u{7}\r".repeat(1 + c.below(40) as usize),
        }
    }

    fn message(&mut self, c: &mut dyn Choices, wall_ms: u64) -> SignedEnvelope {
        let prec = c.below(6) as usize; // 5: not a precedence at all
        let seq = Self::number(c, self.seq.saturating_add(1));
        let ps_next = self
            .ps
            .get(prec)
            .copied()
            .unwrap_or_default()
            .saturating_add(1);
        let ps = if c.below(4) == 0 {
            0
        } else {
            Self::number(c, ps_next)
        };
        let id = if c.below(8) == 0 {
            Self::text(c, "not-an-id")
        } else {
            MessageId::new(wall_ms, {
                let b = c.bytes(10);
                let mut r = [0u8; 10];
                for (d, s) in r.iter_mut().zip(b) {
                    *d = s;
                }
                r
            })
            .to_string()
        };
        let body_len = match c.below(8) {
            0 => 60_000 + c.below(10_000) as usize,
            _ => c.below(200) as usize,
        };
        let m = Message {
            id,
            sequence: seq,
            from: if c.below(8) == 0 {
                Self::text(c, "x")
            } else {
                self.me.to_string()
            },
            to: if c.below(8) == 0 {
                Self::text(c, "x")
            } else {
                self.target.to_string()
            },
            created_unix_ms: wall_ms,
            precedence: prec as i32,
            kind: c.below(8) as i32,
            thread: if c.coin() {
                String::new()
            } else {
                Self::text(c, "t-1")
            },
            reply_to: if c.below(4) == 0 {
                Self::text(c, "")
            } else {
                String::new()
            },
            subject: Self::text(c, "subject"),
            body: "b".repeat(body_len),
            language: Self::text(c, "en"),
            exercise: c.coin(),
            response: c.below(6) as i32,
            precedence_sequence: ps,
        };
        self.seq = self.seq.max(seq.min(self.seq.saturating_add(64)));
        if let Some(p) = self.ps.get_mut(prec) {
            *p = (*p).max(ps.min(p.saturating_add(64)));
        }
        self.seal(Domain::Message, &m)
    }

    fn seen(&self, c: &mut dyn Choices) -> Option<(Message, [u8; 32])> {
        let n = self.seen_messages.len();
        if n == 0 {
            return None;
        }
        self.seen_messages.get(c.below(n as u64) as usize).cloned()
    }

    fn receipt(&mut self, c: &mut dyn Choices, wall_ms: u64) -> SignedEnvelope {
        let (m, hash) = self.seen(c).unwrap_or_default();
        let r = Receipt {
            message_id: if c.below(4) == 0 {
                Self::text(c, "")
            } else {
                m.id
            },
            message_hash: if c.below(4) == 0 {
                c.bytes(40)
            } else {
                hash.to_vec()
            },
            sequence: Self::number(c, m.sequence),
            from: self.me.to_string(),
            to: self.target.to_string(),
            received_unix_ms: wall_ms,
            log_index: c.any_u64(),
            log_size: Self::number(c, self.tree.size()),
            log_root: c.bytes(40),
        };
        self.seal(Domain::Receipt, &r)
    }

    fn refusal(&mut self, c: &mut dyn Choices, wall_ms: u64) -> SignedEnvelope {
        let (m, hash) = self.seen(c).unwrap_or_default();
        let n = NegativeReceipt {
            payload_hash: if c.below(4) == 0 {
                c.bytes(40)
            } else {
                hash.to_vec()
            },
            message_id: m.id,
            sequence: Self::number(c, m.sequence),
            from: self.me.to_string(),
            to: self.target.to_string(),
            time_unix_ms: wall_ms,
            reason: c.below(10) as i32,
            detail: Self::text(c, "refused"),
            settles: c.coin(),
            precedence: c.below(6) as i32,
            precedence_sequence: Self::number(c, m.precedence_sequence),
        };
        self.seal(Domain::NegativeReceipt, &n)
    }

    fn hello(&mut self, c: &mut dyn Choices) -> Hello {
        Hello {
            protocol_version: if c.below(8) == 0 {
                c.below(u64::from(u32::MAX)) as u32
            } else {
                1
            },
            office: Self::text(c, self.me.as_str()),
            received_through: Self::number(c, 0),
            receipted_through: Self::number(c, self.seq),
            reply: c.coin(),
            cosigned_size: Self::number(c, 0),
        }
    }

    /// A checkpoint offer: consistent with what it offered before, or a
    /// split view (another root at a size it already signed), a padded or
    /// bogus proof, or a note over the limit.
    fn offer(&mut self, c: &mut dyn Choices) -> SignedEnvelope {
        let old = self.tree.size();
        for _ in 0..c.below(4) {
            let leaf = c.bytes(32);
            self.tree.push(&leaf);
        }
        let size = self.tree.size();
        let honest = c.below(3) != 0;
        let root = if honest {
            self.tree.root()
        } else {
            let mut r = self.tree.root();
            if let Some(b) = r.0.first_mut() {
                *b ^= 1;
            }
            r
        };
        let cp = checkpoint::sign(&self.origin, size, root, &self.log_key);
        let mut note = cp.note;
        if c.below(16) == 0 {
            // An extension line the spec does not know, as long as it likes.
            let pad = "z".repeat(c.below(5_000) as usize);
            note.extend_from_slice(format!("— {pad}\n").as_bytes());
        }
        let old_size = Self::number(c, old);
        let mut proof: Vec<Vec<u8>> = self
            .tree
            .consistency_proof(old_size.min(size), size)
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.0.to_vec())
            .collect();
        match c.below(6) {
            0 => proof.push(c.bytes(32)),
            1 => proof.extend((0..c.below(200)).map(|_| vec![0u8; 32])),
            _ => {}
        }
        self.seal(
            Domain::CheckpointOffer,
            &CheckpointOffer {
                note,
                old_size,
                proof,
            },
        )
    }

    fn cosignature_or_refusal(&mut self, c: &mut dyn Choices) -> Body {
        if c.below(4) == 0 {
            return Body::CheckpointRefused(CheckpointRefused {
                want_old_size: Self::number(c, 0),
                reason: Self::text(c, "no"),
            });
        }
        let pick = c.below(self.seen_notes.len().max(1) as u64) as usize;
        let note = match self.seen_notes.get(pick) {
            Some(n) if c.below(4) != 0 => {
                let origin = self.origin.clone();
                let stamp = c.any_u64();
                checkpoint::cosign(n, &origin, &self.log_key, stamp).unwrap_or_else(|_| n.clone())
            }
            _ => c.bytes(3_000),
        };
        Body::Cosignature(Cosignature { note })
    }

    fn line_check(&mut self, c: &mut dyn Choices, wall_ms: u64) -> SignedEnvelope {
        let l = LineCheck {
            from: Self::text(c, self.me.as_str()),
            to: Self::text(c, self.target.as_str()),
            sequence: c.any_u64(),
            reply: c.coin(),
            time_unix_ms: Self::number(c, wall_ms),
            level: c.below(6) as i32,
            log_size: Self::number(c, self.tree.size()),
            log_root: c.bytes(40),
        };
        self.seal(Domain::LineCheck, &l)
    }

    fn alert_level(&mut self, c: &mut dyn Choices, wall_ms: u64) -> SignedEnvelope {
        let n = AlertLevelNotice {
            from: Self::text(c, self.me.as_str()),
            to: Self::text(c, self.target.as_str()),
            level: c.below(6) as i32,
            time_unix_ms: Self::number(c, wall_ms),
            reason: Self::text(c, "drill"),
        };
        self.seal(Domain::AlertLevel, &n)
    }

    /// A sealed frame: properly sealed to the target around a hostile inner
    /// frame, or one that does not open.
    fn sealed(&mut self, c: &mut dyn Choices) -> Sealed {
        let header = RoutingHeader {
            from: Self::text(c, self.me.as_str()),
            to: Self::text(c, self.target.as_str()),
            message_id: Self::text(c, ""),
            size: c.below(100_000),
            relay: Self::text(c, self.me.as_str()),
        };
        let mut aad = Vec::new();
        if header.encode(&mut aad).is_err() {
            aad.clear();
        }
        let inner = c.bytes(512);
        let mut counter = c.any_u64();
        let sealed = crate::wire::seal::seal_with(&self.target_seal, &aad, &inner, |b| {
            for x in b.iter_mut() {
                counter = counter.wrapping_mul(6364136223846793005).wrapping_add(1);
                *x = (counter >> 56) as u8;
            }
        });
        match sealed {
            Ok(s) if c.coin() => Sealed {
                header: Some(header),
                enc: s.enc,
                ciphertext: s.ciphertext,
            },
            _ => Sealed {
                header: if c.coin() { Some(header) } else { None },
                enc: c.bytes(40),
                ciphertext: c.bytes(2_000),
            },
        }
    }

    fn relay_frame(&mut self, c: &mut dyn Choices, wall_ms: u64) -> Body {
        if c.coin() {
            return Body::RelayTaken(RelayTaken {
                sealed_hash: c.bytes(40),
            });
        }
        let r = RelayReceipt {
            sealed_hash: c.bytes(40),
            message_id: Self::text(c, ""),
            relay: Self::text(c, self.me.as_str()),
            submitter: Self::text(c, self.target.as_str()),
            to: Self::text(c, "stockholm"),
            state: c.below(5) as i32,
            reason: Self::text(c, "x"),
            time_unix_ms: wall_ms,
        };
        Body::RelayReceipt(self.seal(Domain::RelayReceipt, &r))
    }

    /// Arbitrary bytes, signed under an arbitrary domain, in an arbitrary
    /// envelope slot: gets past the signature, not past decoding.
    fn raw(&mut self, c: &mut dyn Choices) -> Option<Body> {
        let domains = [
            Domain::Message,
            Domain::Receipt,
            Domain::NegativeReceipt,
            Domain::CheckpointOffer,
            Domain::LineCheck,
            Domain::AlertLevel,
            Domain::RelayReceipt,
        ];
        let d = domains
            .get(c.below(domains.len() as u64) as usize)
            .copied()
            .unwrap_or(Domain::Message);
        let payload = c.bytes(300);
        let key = if d == Domain::CheckpointOffer {
            &self.log_key
        } else {
            &self.key
        };
        let env = envelope::seal(d, payload, key);
        Some(match c.below(8) {
            0 => Body::Message(env),
            1 => Body::Receipt(env),
            2 => Body::NegativeReceipt(env),
            3 => Body::CheckpointOffer(env),
            4 => Body::LineCheck(env),
            5 => Body::AlertLevel(env),
            6 => Body::RelayReceipt(env),
            _ => return None,
        })
    }
}

fn remember<T>(v: &mut Vec<T>, x: T) {
    if v.len() >= MEMORY {
        v.remove(0);
    }
    v.push(x);
}

/// Flips one byte of a signed payload in `f`, if it carries one.
fn flip(f: &mut Frame, c: &mut dyn Choices) {
    let env = match &mut f.body {
        Some(Body::Message(e))
        | Some(Body::Receipt(e))
        | Some(Body::NegativeReceipt(e))
        | Some(Body::CheckpointOffer(e))
        | Some(Body::LineCheck(e))
        | Some(Body::AlertLevel(e))
        | Some(Body::RelayReceipt(e)) => e,
        _ => return,
    };
    let n = env.payload.len() as u64;
    if n > 0 {
        if let Some(b) = env.payload.get_mut(c.below(n) as usize) {
            *b ^= 1 << c.below(8);
        }
    }
}
