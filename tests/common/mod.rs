//! Helpers shared by the tests that run real node processes: office
//! directories made with the real binary, nodes started, killed and stopped
//! as an operator would, and the logs read back.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotline::control::ControlClient;
use hotline::identity::{OfficeCard, OfficeDir};
use prost::Message as _;

pub const BIN: &str = env!("CARGO_BIN_EXE_hotline");

pub fn hotline(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run hotline")
}

/// A UDP port the OS picked for us (bound to port 0, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn start(dir: &Path) -> Node {
        let log = dir.join(format!(
            "node-{}.log",
            Instant::now().elapsed().as_nanos() ^ std::process::id() as u128 ^ rand_suffix()
        ));
        Self::start_logging_to(dir, &log)
    }

    /// As [`Node::start`], with the node's stderr appended to `log`.
    pub fn start_logging_to(dir: &Path, log: &Path) -> Node {
        let _ = std::fs::remove_file(OfficeDir::new(dir).control_addr());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "run", "--dir", dir.to_str().unwrap()])
            .env("RUST_LOG", "hotline=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        let node = Node {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        node.wait_ready();
        node
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(c) = ControlClient::from_dir(&OfficeDir::new(&self.dir)) {
                if c.status().is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node in {} did not come up", self.dir.display());
    }

    pub fn client(&self) -> ControlClient {
        ControlClient::from_dir(&OfficeDir::new(&self.dir)).unwrap()
    }

    /// Waits up to `within` for the node to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("node did not stop on SIGTERM within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn rand_suffix() -> u128 {
    rand::random::<u32>() as u128
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn setup(root: &Path) -> (PathBuf, PathBuf) {
    setup_with(root, None)
}

/// As [`setup`]; with `via`, each office dials the other through the given
/// proxy address instead of the card's (`via` = (washington's, pyongyang's)).
pub fn setup_with(root: &Path, via: Option<(String, String)>) -> (PathBuf, PathBuf) {
    let a = root.join("washington");
    let b = root.join("pyongyang");
    for (name, dir) in [("washington", &a), ("pyongyang", &b)] {
        let listen = format!("127.0.0.1:{}", free_udp_port());
        let out = hotline(&[
            "init",
            "--office",
            name,
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            &listen,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let addrs = match via {
        Some((wa, pa)) => [Some(wa), Some(pa)],
        None => [None, None],
    };
    for ((dir, card), addr) in [
        (&a, b.join("office-card.toml")),
        (&b, a.join("office-card.toml")),
    ]
    .into_iter()
    .zip(addrs)
    {
        let mut args = vec![
            "peer".to_string(),
            "add".into(),
            "--dir".into(),
            dir.to_str().unwrap().into(),
            card.to_str().unwrap().into(),
        ];
        if let Some(addr) = addr {
            args.extend(["--addr".into(), addr]);
        }
        let out = hotline(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (a, b)
}

pub fn listen_addr(dir: &Path) -> std::net::SocketAddr {
    let card = OfficeCard::load(&dir.join("office-card.toml")).unwrap();
    card.address.parse().unwrap()
}

pub fn log_ids(dir: &Path, sent: bool) -> Vec<String> {
    use hotline::wire::proto::{log_entry::Event, Message};
    let mut ids = Vec::new();
    hotline::audit::scan(&OfficeDir::new(dir).log(), |e| {
        let pe = match (&e.entry.event, sent) {
            (Some(Event::MessageSent(pe)), true) => pe,
            (Some(Event::MessageReceived(pe)), false) => pe,
            _ => return,
        };
        let env = pe.envelope.as_ref().unwrap();
        ids.push(Message::decode(env.payload.as_slice()).unwrap().id);
    })
    .unwrap();
    ids
}

/// Every id in `accepted` (sent from `from` to `to`) is in `from`'s log as
/// sent and in `to`'s log as received exactly once, and `to` received
/// nothing else from `from`'s log.
pub fn assert_each_delivered_once(accepted: &[String], from: &Path, to: &Path) {
    use std::collections::HashMap;
    let sent = log_ids(from, true);
    let received = log_ids(to, false);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &received {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in accepted {
        assert!(
            sent.contains(id),
            "{id} accepted but not in the sender's log"
        );
    }
    for id in &sent {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "{id} received {:?} times",
            counts.get(id.as_str())
        );
    }
    assert_eq!(
        received.len(),
        sent.len(),
        "nothing received that was not sent"
    );
}

/// `audit verify` passes on each directory and `audit cross-check` on the
/// pair.
pub fn assert_logs_verify_and_agree(a: &Path, b: &Path) {
    for dir in [a, b] {
        let out = hotline(&["audit", "verify", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = hotline(&[
        "audit",
        "cross-check",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
