//! A fault-injecting UDP proxy for live drills.
//!
//! Each line of a drill gets one [`Line`] (its faults and whether it is
//! cut) and two [`Proxy`]s, one per dialling direction: party A dials its
//! proxy's address, and the proxy forwards to B's real QUIC port (and the
//! answers back). QUIC runs end to end through it, TLS included; the proxy
//! only loses, delays, duplicates, reorders and rate-limits datagrams, from
//! one seeded RNG per line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// A line's faults in real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Random extra delay up to this.
    pub jitter: Duration,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
    /// Probability a datagram is held back (and so overtaken).
    pub reorder: f64,
    /// Rate cap in kbit/s (0: none).
    pub bandwidth_kbps: u64,
}

struct LineState {
    faults: Faults,
    cut: bool,
    rng: StdRng,
    /// When each direction's wire is free again.
    busy_until: [Instant; 2],
    passed: u64,
    dropped: u64,
    /// UDP payload bytes passed (each copy counted), per direction.
    bytes: [u64; 2],
}

/// A line shared by its two proxies.
#[derive(Clone)]
pub struct Line(Arc<Mutex<LineState>>);

impl Line {
    /// A line with `faults`, seeded, initially up unless `cut`.
    pub fn new(faults: Faults, seed: u64, cut: bool) -> Line {
        let now = Instant::now();
        Line(Arc::new(Mutex::new(LineState {
            faults,
            cut,
            rng: StdRng::seed_from_u64(seed),
            busy_until: [now; 2],
            passed: 0,
            dropped: 0,
            bytes: [0; 2],
        })))
    }

    /// Cuts (true) or restores (false) the line.
    pub fn set_cut(&self, cut: bool) {
        self.0.lock().expect("line lock").cut = cut;
    }

    /// Datagrams passed and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.0.lock().expect("line lock");
        (s.passed, s.dropped)
    }

    /// UDP payload bytes passed so far, (dialler → target, back).
    pub fn bytes(&self) -> (u64, u64) {
        let s = self.0.lock().expect("line lock");
        (s.bytes[0], s.bytes[1])
    }

    /// When copies of a `len`-byte datagram going in direction `dir`
    /// should leave (empty: lost).
    fn schedule(&self, dir: usize, len: usize) -> Vec<Instant> {
        let mut s = self.0.lock().expect("line lock");
        if s.cut {
            s.dropped += 1;
            return Vec::new();
        }
        let f = s.faults;
        let copies = if s.rng.gen_bool(f.duplicate) { 2 } else { 1 };
        let mut out = Vec::new();
        for _ in 0..copies {
            if s.rng.gen_bool(f.loss) {
                s.dropped += 1;
                continue;
            }
            let mut at = Instant::now();
            let bits = 8 * (len as u64 + 28);
            if let Some(us) = (bits * 1000).checked_div(f.bandwidth_kbps) {
                let start = at.max(s.busy_until[dir]);
                let done = start + Duration::from_micros(us);
                s.busy_until[dir] = done;
                at = done;
            }
            let jitter = f.jitter.as_micros() as u64;
            at += f.delay + Duration::from_micros(s.rng.gen_range(0..=jitter));
            if s.rng.gen_bool(f.reorder) {
                let spread = (f.delay.as_micros() as u64 + jitter + 5_000).max(1);
                at += Duration::from_micros(s.rng.gen_range(0..=spread));
            }
            s.passed += 1;
            if let Some(b) = s.bytes.get_mut(dir) {
                *b = b.saturating_add(len as u64);
            }
            out.push(at);
        }
        out
    }
}

/// One direction's proxy: dial `addr` to reach the target.
pub struct Proxy {
    /// Where the dialling party sends.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds a proxy on a free loopback port for `line`; it forwards once
    /// [`Proxy::set_target`] names the target.
    pub async fn bind(line: Line) -> std::io::Result<Proxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let t = target.clone();
        let task = tokio::spawn(async move {
            let mut a = vec![0u8; 65_536];
            let mut b = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { continue };
                        *client.lock().expect("lock") = Some(from);
                        let Some(to) = *t.lock().expect("lock") else { continue };
                        forward(&line, 0, &back, to, &a[..n]);
                    }
                    r = back.recv_from(&mut b) => {
                        let Ok((n, _)) = r else { continue };
                        let Some(to) = *client.lock().expect("lock") else { continue };
                        forward(&line, 1, &front, to, &b[..n]);
                    }
                }
            }
        });
        Ok(Proxy { addr, target, task })
    }

    /// Points the proxy at the target's (new) address.
    pub fn set_target(&self, addr: SocketAddr) {
        *self.target.lock().expect("lock") = Some(addr);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn forward(line: &Line, dir: usize, sock: &Arc<UdpSocket>, to: SocketAddr, data: &[u8]) {
    for at in line.schedule(dir, data.len()) {
        let sock = sock.clone();
        let data = data.to_vec();
        if at <= Instant::now() {
            let _ = sock.try_send_to(&data, to);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = sock.send_to(&data, to).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_and_a_cut_drops_everything() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let line = Line::new(Faults::default(), 1, false);
        let p = Proxy::bind(line.clone()).await.unwrap();
        p.set_target(server.local_addr().unwrap());
        client.send_to(b"ping", p.addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, via) = tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", via).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], p.addr));
        line.set_cut(true);
        client.send_to(b"lost", p.addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), server.recv_from(&mut buf)).await;
        assert!(r.is_err(), "a cut line passes nothing");
        assert_eq!(line.counts(), (2, 1));
    }

    #[test]
    fn loss_and_duplication_follow_the_seed() {
        let f = Faults {
            loss: 0.3,
            duplicate: 0.2,
            ..Faults::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let counts = |seed| {
            let l = Line::new(f, seed, false);
            (0..2000).map(|_| l.schedule(0, 100).len()).sum::<usize>()
        };
        let n = counts(7);
        assert_eq!(n, counts(7), "same seed, same fate");
        // Expected copies per datagram: (1 + 0.2) * 0.7 = 0.84.
        assert!((1500..1850).contains(&n), "{n}");
    }
}
