//! The office's own machine (issue 19): what another local user can reach.
//! These run the real binary, as an operator would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hotline::control::SendRequest;

/// Runs `hotline ARGS` under `umask 000`.
fn under_umask_000(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args);
    c
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn an_office_made_and_run_under_umask_000_is_0700_with_every_file_0600() {
    let t = tempfile::tempdir().unwrap();
    let offices = t.path().join("offices");
    let a = offices.join("washington");
    let b = offices.join("pyongyang");
    for (name, dir) in [("washington", &a), ("pyongyang", &b)] {
        let listen = format!("127.0.0.1:{}", free_udp_port());
        let out = under_umask_000(&["init", "--office", name, "--dir"])
            .arg(dir)
            .args(["--listen", &listen])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (dir, other) in [(&a, &b), (&b, &a)] {
        let out = under_umask_000(&["peer", "add", "--dir"])
            .arg(dir)
            .arg(other.join("office-card.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Both nodes run under umask 000 too, so the log, the lock and the run
    // files are theirs; their stderr goes outside the office directories.
    let mut children = Vec::new();
    for (i, dir) in [&a, &b].into_iter().enumerate() {
        let log = std::fs::File::create(t.path().join(format!("node-{i}.log"))).unwrap();
        children.push(
            under_umask_000(&["node", "run", "--dir"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let client = |dir: &Path| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) =
                hotline::control::ControlClient::from_dir(&hotline::identity::OfficeDir::new(dir))
            {
                if c.status().is_ok() {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node in {} did not come up",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ca = client(&a);
    let cb = client(&b);
    let id = ca
        .send(&SendRequest {
            to: "pyongyang".into(),
            subject: "permissions".into(),
            body: "a body no other local user may read".into(),
            ..Default::default()
        })
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ca
        .outbox()
        .unwrap()
        .iter()
        .any(|o| o.id == id && o.state == hotline::core::OutState::Delivered)
    {
        assert!(Instant::now() < deadline, "message not receipted");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((ca, cb));
    // Judge the directories while the nodes run (run/ holds its files
    // then), and again after they stop.
    let check = |when: &str| {
        for dir in [&a, &b] {
            let mut all = vec![dir.to_path_buf()];
            walk(dir, &mut all);
            assert!(
                all.len() > 15,
                "{when}: only {} paths in {}",
                all.len(),
                dir.display()
            );
            for p in &all {
                let want = if p.is_dir() { 0o700 } else { 0o600 };
                assert_eq!(mode(p), want, "{when}: {} is {:o}", p.display(), mode(p));
            }
        }
        assert_eq!(mode(&offices), 0o700, "the parent init created");
    };
    check("running");
    assert!(a.join("run/control.addr").exists() && a.join("log/hotline.log").exists());
    for mut c in children {
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    check("stopped");
}

/// Runs `hotline node run` on `dir` expecting a refusal; returns stderr.
fn refused(dir: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["node", "run", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started on a loose office directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "exit {status:?}: {err}");
    err
}

#[test]
fn a_node_refuses_a_loose_office_directory_and_names_the_chmod() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = setup(t.path());
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for (path, loose, fix) in [
        (a.clone(), 0o755, 0o700),
        (a.join("keys"), 0o750, 0o700),
        (a.join("run"), 0o777, 0o700),
        (a.join("log"), 0o755, 0o700),
        (a.join("tls/ca.key"), 0o640, 0o600),
        (a.join("tls/node.key"), 0o604, 0o600),
        (a.join("control.token"), 0o644, 0o600),
    ] {
        chmod(&path, loose);
        let err = refused(&a);
        assert!(
            err.contains(&format!("chmod {fix:o} {}", path.display())),
            "{} at {loose:o}: {err}",
            path.display()
        );
        chmod(&path, fix);
    }
    // A secret replaced by a symlink (to a private copy) is refused too.
    let key = a.join("keys/message.key");
    let copy = t.path().join("elsewhere.key");
    std::fs::copy(&key, &copy).unwrap();
    chmod(&copy, 0o600);
    std::fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink(&copy, &key).unwrap();
    let err = refused(&a);
    assert!(err.contains("symlink"), "{err}");
    std::fs::remove_file(&key).unwrap();
    std::fs::rename(&copy, &key).unwrap();
    // Put right, the same directory runs.
    let mut node = Node::start(&a);
    assert!(node.terminate().success());
}

/// A listener standing in for another local user's: counts connections.
fn decoy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if l.accept().is_ok() {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (addr, seen)
}

#[test]
fn a_planted_control_address_gets_no_token() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = setup(t.path());
    let dir = hotline::identity::OfficeDir::new(&a);
    let (addr, seen) = decoy();
    let status = || {
        let out = hotline(&["status", "--dir", a.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let plant = |mode: u32| {
        let _ = std::fs::remove_file(dir.control_addr());
        std::fs::write(dir.control_addr(), format!("{addr}\n")).unwrap();
        std::fs::set_permissions(dir.control_addr(), std::fs::Permissions::from_mode(mode))
            .unwrap();
    };
    // run/ opened to everyone, as the issue found it: whatever is in it
    // may be another user's.
    std::fs::set_permissions(a.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    plant(0o600);
    let (code, err) = status();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing to send the control token"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
    std::fs::set_permissions(a.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A file others can write, or a symlink to one.
    plant(0o666);
    let (code, err) = status();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    plant(0o600);
    let elsewhere = t.path().join("elsewhere.addr");
    std::fs::rename(dir.control_addr(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.control_addr()).unwrap();
    let (code, err) = status();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("symlink"), "{err}");
    // A file another user owns, where the suite can make one.
    if hotline::identity::files::current_uid() == 0 {
        plant(0o600);
        std::os::unix::fs::chown(dir.control_addr(), Some(65534), None).unwrap();
        let (code, err) = status();
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("owned by uid 65534"), "{err}");
    } else {
        eprintln!("owner case skipped: needs root to give a file to uid 65534");
    }
    // An address that is not loopback.
    let _ = std::fs::remove_file(dir.control_addr());
    std::fs::write(dir.control_addr(), "192.0.2.7:80\n").unwrap();
    std::fs::set_permissions(dir.control_addr(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = status();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the CLI connected to the planted address"
    );
    // The node's own file is trusted: status works.
    let _ = std::fs::remove_file(dir.control_addr());
    let mut node = Node::start(&a);
    let (code, err) = status();
    assert_eq!(code, Some(0), "{err}");
    assert!(node.terminate().success());
}

/// Reads until the server closes (EOF or reset), within `within`; what it
/// sent before closing.
fn read_until_closed(s: &mut std::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return Some(got), // reset: closed too
        }
    }
    None
}

/// Reads one HTTP/1.1 response with a Content-Length (within 30 s).
fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[test]
fn idle_and_slow_unauthenticated_connections_do_not_keep_the_operator_out() {
    use std::io::Write;
    use std::net::TcpStream;
    let t = tempfile::tempdir().unwrap();
    let (a, _) = setup(t.path());
    let node = Node::start(&a);
    let addr: std::net::SocketAddr = std::fs::read_to_string(a.join("run/control.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The operator's console holds a keep-alive connection that has shown
    // the token: the reserve no newcomer may evict.
    let token = std::fs::read_to_string(a.join("control.token")).unwrap();
    let status_request = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    );
    let mut console = TcpStream::connect(addr).unwrap();
    console.write_all(status_request.as_bytes()).unwrap();
    assert!(read_response(&mut console).starts_with("HTTP/1.1 200"));
    // 500 that connect and say nothing, and 50 that send half a request
    // and stall (slowloris), as a local user without the token would.
    let mut idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        idle.push(s);
    }
    // The operator's status, through the real CLI, while they are all open.
    let started = Instant::now();
    let out = hotline(&["status", "--dir", a.to_str().unwrap(), "--json"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("authenticated status beside 550 hostile connections: {took:?}");
    // Every hostile connection is closed by the node: evicted for room or
    // timed out for making no authenticated request.
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            read_until_closed(s, Duration::from_secs(30)).is_some(),
            "hostile connection {i} still open after 30 s"
        );
    }
    // The console's connection outlived them all.
    console.write_all(status_request.as_bytes()).unwrap();
    assert!(read_response(&mut console).starts_with("HTTP/1.1 200"));
    // A request without the token is answered 401 and its connection closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut s, Duration::from_secs(30)).expect("closed after the 401");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Counted, not logged.
    let st = node.client().status().unwrap();
    let n = st.control_noise;
    assert_eq!(n.unauthenticated, 1, "{n:?}");
    assert_eq!(n.refused_full, 0, "{n:?}");
    assert!(
        n.evicted + n.timed_out >= 550,
        "every hostile connection evicted or timed out: {n:?}"
    );
    assert!(n.evicted > 0 && n.timed_out > 0, "{n:?}");
    let logs: String = std::fs::read_dir(&a)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("node-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    // "401" as a word, not inside a port number or a hex digest.
    let status_401 = logs.match_indices("401").any(|(i, _)| {
        let before = logs[..i].chars().next_back();
        let after = logs[i + 3..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    });
    let lower = logs.to_lowercase();
    assert!(
        !lower.contains("bearer") && !lower.contains("unauthorized") && !status_401,
        "unauthenticated noise reached the node log:\n{logs}"
    );
    // And the CLI says so.
    let out = hotline(&["status", "--dir", a.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("control API turned away"), "{text}");
    drop(node);
}

/// Dials `addr` as `me` (an office directory whose first peer is
/// washington) with the given ALPN, and waits for the handshake's end.
async fn dial_as(me: &hotline::identity::Office, addr: std::net::SocketAddr, alpn: &[u8]) {
    use hotline::node::tls;
    let pin = tls::Pin::of(&me.peers[0]).unwrap();
    let cfg =
        tls::client_config_with_alpn(me.node_cert.clone(), me.node_key.clone_key(), &pin, alpn)
            .unwrap();
    let cfg = quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap(),
    ));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    if let Ok(conn) = ep.connect(addr, "washington.hotline").unwrap().await {
        // TLS 1.3: the client may finish before the server has judged it.
        let _ = tokio::time::timeout(Duration::from_secs(20), conn.closed()).await;
    }
}

/// A QUIC v1 Initial packet's header in front of random bytes: what a
/// scanner or a spoofed flood sends. It fails decryption at the node.
fn junk_initial(rng: &mut impl rand::Rng) -> Vec<u8> {
    let mut p = vec![0xc3, 0, 0, 0, 1, 8];
    p.extend((0..8).map(|_| rng.gen::<u8>()));
    p.push(8);
    p.extend((0..8).map(|_| rng.gen::<u8>()));
    p.push(0); // no token
    p.extend([0x44, 0x9e]); // length 1182
    p.extend((0..1182).map(|_| rng.gen::<u8>()));
    p
}

#[test]
fn a_flood_of_junk_handshakes_keeps_the_log_short_and_the_impostor_in_view() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = setup(t.path());
    // An impostor "pyongyang" with its own CA, holding washington's card.
    let imp = t.path().join("impostor");
    let out = hotline(&[
        "init",
        "--office",
        "pyongyang",
        "--dir",
        imp.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(out.status.success());
    let out = hotline(&[
        "peer",
        "add",
        "--dir",
        imp.to_str().unwrap(),
        a.join("office-card.toml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = Node::start(&a);
    let quic = listen_addr(&a);
    let pyongyang = std::sync::Arc::new(hotline::identity::OfficeDir::new(&b).load().unwrap());
    let impostor = hotline::identity::OfficeDir::new(&imp).load().unwrap();
    const JUNK_INITIALS: usize = 10_000;
    const WRONG_ALPN: usize = 150;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Junk Initials from one socket, as fast as the socket takes them.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rng = rand::thread_rng();
        for _ in 0..JUNK_INITIALS {
            let p = junk_initial(&mut rng);
            udp.send_to(&p, quic).await.unwrap();
        }
        // Whole handshakes that fail (wrong ALPN), ten at a time, with
        // the impostor's attempt in the middle of them.
        for round in 0..WRONG_ALPN / 10 {
            let mut dials = tokio::task::JoinSet::new();
            for _ in 0..10 {
                let me = pyongyang.clone();
                dials.spawn(async move { dial_as(&me, quic, b"h3").await });
            }
            while dials.join_next().await.is_some() {}
            if round == WRONG_ALPN / 20 {
                dial_as(&impostor, quic, b"hotline/1").await;
            }
        }
    });
    // Wait for the node to have booked them all.
    let client = node.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = client.status().unwrap();
        let alpn = st
            .refusal_noise
            .iter()
            .find(|r| r.kind == "wrong-alpn")
            .map_or(0, |r| r.count);
        if (alpn as usize >= WRONG_ALPN && !st.refused.is_empty()) || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The impostor is in its own list, one row, not flushed by the noise.
    let imp_rows: Vec<_> = st
        .refused
        .iter()
        .filter(|r| r.kind == "unknown-ca")
        .collect();
    assert_eq!(imp_rows.len(), 1, "{:?}", st.refused);
    assert_eq!(imp_rows[0].count, 1);
    assert!(imp_rows[0].reason.contains("unknown CA"));
    assert!(
        st.refused.iter().all(|r| r.kind != "wrong-alpn"),
        "noise in the identity list: {:?}",
        st.refused
    );
    let alpn = st
        .refusal_noise
        .iter()
        .find(|r| r.kind == "wrong-alpn")
        .expect("wrong ALPN counted");
    assert_eq!(alpn.count as usize, WRONG_ALPN);
    // The node's log: at most the budget of lines per kind, and the junk
    // Initials not at all.
    let logs: String = std::fs::read_dir(&a)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("node-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let lines = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    assert!(
        lines("wrong ALPN") as u64 <= hotline::node::refusals::TELL_PER_WINDOW,
        "{} wrong-ALPN lines",
        lines("wrong ALPN")
    );
    assert_eq!(lines("unknown CA"), 1);
    eprintln!(
        "{JUNK_INITIALS} junk Initials and {WRONG_ALPN} failed handshakes: {} refusal lines, {} bytes of node log",
        lines("refused"),
        logs.len()
    );
    // Five a kind: wrong ALPN, junk that failed to decrypt, the dials to
    // the absent pyongyang; one impostor.
    assert!(
        lines("refused") as u64 <= 3 * hotline::node::refusals::TELL_PER_WINDOW + 1,
        "{} refusal lines",
        lines("refused")
    );
    assert!(logs.len() < 64 * 1024, "{} bytes of log", logs.len());
    // The operator's view names both.
    let out = hotline(&["status", "--dir", a.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("presented an identity"), "{text}");
    assert!(
        text.contains(&format!("{WRONG_ALPN}  wrong ALPN")),
        "{text}"
    );
    drop(node);
}

#[test]
fn a_fresh_office_certificate_passes_openssl_verify_x509_strict_and_status_tells_its_expiry() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = setup(t.path());
    let tls = a.join("tls");
    for purpose in ["sslserver", "sslclient"] {
        let out = match Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
            .arg(tls.join("ca.crt"))
            .arg(tls.join("node.crt"))
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!(
                "openssl not found ({e}): this test needs the openssl command (apt-get install -y openssl; .ci/run installs it)"
            ),
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains(": OK"),
            "{purpose}: {text}"
        );
    }
    // `status` tells when it expires, and warns only near the end.
    let node = Node::start(&a);
    let st = node.client().status().unwrap();
    let days = (st.node_cert_expires_unix_ms.expect("expiry in status") - hotline::node::wall_ms())
        / 86_400_000;
    assert!((823..=825).contains(&days), "{days} days");
    assert_eq!(st.node_cert_warning, None);
    let out = hotline(&["status", "--dir", a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("node certificate valid until"));
}

/// Sends one message from `from` to `to` and waits for its receipt.
fn send_and_wait_delivered(from: &Node, to: &str, subject: &str) {
    let c = from.client();
    let id = c
        .send(&SendRequest {
            to: to.into(),
            subject: subject.into(),
            body: "after the rotation".into(),
            ..Default::default()
        })
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c
        .outbox()
        .unwrap()
        .iter()
        .any(|o| o.id == id && o.state == hotline::core::OutState::Delivered)
    {
        assert!(Instant::now() < deadline, "{subject}: not receipted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn card_fingerprint(path: &Path) -> String {
    hotline::identity::OfficeCard::load(path)
        .unwrap()
        .fingerprint
}

/// Waits until `from`'s peer `peer` has cosigned more than `size` entries
/// of `from`'s log, and returns what it has.
fn wait_cosigned_beyond(from: &Node, peer: &str, size: u64) -> u64 {
    let mut got = 0;
    wait_for("a cosignature of a newer checkpoint", || {
        got = from
            .client()
            .status()
            .unwrap()
            .peers
            .iter()
            .find(|p| p.office == peer)
            .map_or(0, |p| p.peer_cosigned_size);
        got > size
    });
    got
}

fn audit_verify_ok(dir: &Path) {
    let out = hotline(&["audit", "verify", dir.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rotated_keys_keep_the_line_up_with_a_peer_that_had_only_the_old_card() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = setup(t.path());
    let old_card = hotline::identity::OfficeCard::load(&a.join("office-card.toml")).unwrap();
    let old_message_key = std::fs::read(a.join("keys/message.key")).unwrap();
    let na = Node::start(&a);
    let nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "before");
    send_and_wait_delivered(&nb, "washington", "before, the other way");

    let out = hotline(&["rotate", "keys", "--dir", a.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: hotline::control::RotateResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.old_fingerprint, old_card.fingerprint);
    let b_card = b.join("peers/washington.card.toml");
    wait_for("pyongyang pins the new card", || {
        card_fingerprint(&b_card) == r.fingerprint
    });
    wait_for("washington switches", || {
        card_fingerprint(&a.join("office-card.toml")) == r.fingerprint
            && na.client().status().unwrap().card_rotation.is_none()
    });
    let new_card = hotline::identity::OfficeCard::load(&a.join("office-card.toml")).unwrap();
    assert_ne!(new_card.message_key, old_card.message_key);
    assert_ne!(new_card.log_key, old_card.log_key);
    assert_ne!(new_card.seal_key, old_card.seal_key);
    assert_eq!(new_card.node_cert_sha256, old_card.node_cert_sha256);
    assert_ne!(
        std::fs::read(a.join("keys/message.key")).unwrap(),
        old_message_key
    );
    for f in [
        "keys/message.key",
        "keys/log.key",
        "keys/seal.key",
        "keys/seal.previous.key",
    ] {
        assert_eq!(mode(&a.join(f)), 0o600, "{f}");
    }
    assert!(
        !b.join("peers/washington.retiring").exists(),
        "the certificate did not change"
    );

    // Messages and receipts both ways under the new keys, and a
    // checkpoint made with the new log key cosigned by pyongyang.
    let size = na.client().status().unwrap().log_entries;
    send_and_wait_delivered(&na, "pyongyang", "after the switch");
    send_and_wait_delivered(&nb, "washington", "after the switch, the other way");
    wait_cosigned_beyond(&na, "pyongyang", size);

    // Both restart and the line comes back on the new keys.
    drop(na);
    drop(nb);
    let na = Node::start(&a);
    let nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "after a restart");
    send_and_wait_delivered(&nb, "washington", "after a restart, the other way");
    let size = na.client().status().unwrap().log_entries;
    wait_cosigned_beyond(&na, "pyongyang", size);
    drop(na);
    drop(nb);
    // Each log verifies across the change: what washington signed before
    // it with the keys the logged update replaced, after it with the new.
    for dir in [&a, &b] {
        audit_verify_ok(dir);
    }
}

#[test]
fn a_log_key_rotation_waits_for_a_peer_whose_policy_is_to_confirm_by_voice() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = setup(t.path());
    // Pyongyang pins washington's updates only when its operator confirms.
    let cfg = b.join("hotline.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "[peers.washington]\n",
        "[peers.washington]\nconfirm_card_updates = true\n",
    );
    assert!(text.contains("confirm_card_updates"), "{text}");
    std::fs::write(&cfg, text).unwrap();
    let old_card = hotline::identity::OfficeCard::load(&a.join("office-card.toml")).unwrap();
    let na = Node::start(&a);
    let nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "before");

    let out = hotline(&[
        "rotate",
        "keys",
        "--only",
        "log",
        "--dir",
        a.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: hotline::control::RotateResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.waiting, vec!["pyongyang".to_string()]);
    wait_for("pyongyang holds the update", || {
        !nb.client().status().unwrap().held_card_updates.is_empty()
    });
    let text = hotline(&["status", "--dir", b.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("card update held") && text.contains(&r.fingerprint),
        "{text}"
    );
    // Messages still flow under the old keys meanwhile.
    send_and_wait_delivered(&na, "pyongyang", "while held");
    assert_eq!(
        na.client().status().unwrap().card_rotation.unwrap().waiting,
        vec!["pyongyang".to_string()]
    );
    // A misread fingerprint is refused (exit 5), the right one pins.
    let bad = hotline(&[
        "peer",
        "confirm-card",
        "--dir",
        b.to_str().unwrap(),
        "washington",
        &old_card.fingerprint,
    ]);
    assert_eq!(
        bad.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let ok = hotline(&[
        "peer",
        "confirm-card",
        "--dir",
        b.to_str().unwrap(),
        "washington",
        &r.fingerprint,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    wait_for("washington switches", || {
        na.client().status().unwrap().card_rotation.is_none()
            && card_fingerprint(&a.join("office-card.toml")) == r.fingerprint
    });
    let new_card = hotline::identity::OfficeCard::load(&a.join("office-card.toml")).unwrap();
    assert_ne!(new_card.log_key, old_card.log_key);
    assert_eq!(new_card.message_key, old_card.message_key);
    assert_eq!(new_card.seal_key, old_card.seal_key);
    assert!(!a.join("keys/seal.previous.key").exists());
    let size = na.client().status().unwrap().log_entries;
    send_and_wait_delivered(&na, "pyongyang", "after");
    wait_cosigned_beyond(&na, "pyongyang", size);
    drop(na);
    drop(nb);
    for dir in [&a, &b] {
        audit_verify_ok(dir);
    }
}

#[test]
fn a_rotated_certificate_keeps_the_line_up_with_a_peer_that_had_only_the_old_card() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = setup(t.path());
    // The old identity, kept to try it against pyongyang afterwards.
    let old_a = t.path().join("washington-before");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&old_a)
        .output()
        .unwrap();
    assert!(out.status.success());
    let old_fp = card_fingerprint(&a.join("office-card.toml"));
    let mut na = Node::start(&a);
    let mut nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "before");

    let out = hotline(&["rotate", "cert", "--dir", a.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: hotline::control::RotateResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.old_fingerprint, old_fp);
    assert_ne!(r.fingerprint, old_fp);
    // Pyongyang pins the new card from the signed update alone, and
    // washington switches once it has accepted.
    let b_card = b.join("peers/washington.card.toml");
    wait_for("pyongyang pins the new card", || {
        card_fingerprint(&b_card) == r.fingerprint
    });
    wait_for("washington switches", || {
        card_fingerprint(&a.join("office-card.toml")) == r.fingerprint
            && na.client().status().unwrap().card_rotation.is_none()
    });
    assert!(b.join("peers/washington.retiring").exists());
    assert_eq!(mode(&b_card), 0o600);
    assert_eq!(mode(&a.join("tls/node.key")), 0o600);
    let st = na.client().status().unwrap();
    assert_eq!(st.fingerprint, r.fingerprint);
    // The new certificate is as strict a verifier wants it.
    let v = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(a.join("tls/ca.crt"))
        .arg(a.join("tls/node.crt"))
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    send_and_wait_delivered(&na, "pyongyang", "on the old connection");

    // Both restart: the line comes up on the new certificate. Pyongyang
    // is made to have stopped between logging the update and storing the
    // card (its file still holds the old card): it stores it from its log.
    na.terminate();
    nb.terminate();
    std::fs::copy(old_a.join("office-card.toml"), &b_card).unwrap();
    assert_eq!(card_fingerprint(&b_card), old_fp);
    let na = Node::start(&a);
    let _nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "after a restart");
    assert_eq!(card_fingerprint(&b_card), r.fingerprint);
    // Having seen the new certificate, pyongyang no longer trusts the old.
    wait_for("the retiring certificate is dropped", || {
        !b.join("peers/washington.retiring").exists()
    });
    let old = std::sync::Arc::new(hotline::identity::OfficeDir::new(&old_a).load().unwrap());
    let b_quic = listen_addr(&b);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(dial_as_peer(&old, b_quic));
    wait_for("the old certificate is refused as a card mismatch", || {
        _nb.client()
            .status()
            .unwrap()
            .refused
            .iter()
            .any(|r| r.kind == "card-mismatch")
    });
    // Both logs hold the change.
    for (dir, kinds) in [
        (&a, ["card-update-sent", "card-update-accepted-received"]),
        (&b, ["card-update-received", "card-update-accepted-sent"]),
    ] {
        let out = hotline(&["audit", "show", dir.to_str().unwrap(), "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        for k in kinds {
            assert!(text.contains(k), "{} lacks {k}", dir.display());
        }
        let out = hotline(&["audit", "verify", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Dials pyongyang at `addr` as `me` (whose first peer is pyongyang).
async fn dial_as_peer(me: &hotline::identity::Office, addr: std::net::SocketAddr) {
    use hotline::node::tls;
    let pin = tls::Pin::of(&me.peers[0]).unwrap();
    let cfg = tls::client_config(me.node_cert.clone(), me.node_key.clone_key(), &pin).unwrap();
    let cfg = quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap(),
    ));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    if let Ok(conn) = ep.connect(addr, "pyongyang.hotline").unwrap().await {
        let _ = tokio::time::timeout(Duration::from_secs(20), conn.closed()).await;
    }
}

/// A small tmpfs for a full-disk test, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts `bytes` of tmpfs at `at`; `None` (with a loud note) when
    /// this user may not mount.
    fn mount(at: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED the full-disk test: cannot mount a tmpfs here ({}); run the suite as root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallDisk(at.to_path_buf()))
    }

    fn free(&self) -> u64 {
        hotline::audit::free_bytes(&self.0).unwrap()
    }

    /// Fills the disk with `filler` until `leave` bytes or fewer are free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.0.join("filler"))
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while self.free() > leave {
            let n = (self.free() - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n.max(1)]).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn send_cli(dir: &Path, to: &str, subject: &str) -> std::process::Output {
    hotline(&[
        "send",
        "--dir",
        dir.to_str().unwrap(),
        "--to",
        to,
        "--subject",
        subject,
        &"a body ".repeat(200),
    ])
}

#[test]
fn a_full_disk_is_said_plainly_refused_below_the_reserve_and_leaves_no_torn_tail() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&t.path().join("small"), 24 * 1024 * 1024) else {
        return;
    };
    // Washington's office on the small disk, pyongyang's beside it.
    let (a0, b) = setup(t.path());
    let a = disk.0.join("washington");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&a0)
        .arg(&a)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::remove_dir_all(&a0).unwrap();
    let config = a.join("hotline.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("min_free_bytes = 67108864"), "{text}");
    std::fs::write(
        &config,
        text.replace("min_free_bytes = 67108864", "min_free_bytes = 4194304"),
    )
    .unwrap();
    let a_log = t.path().join("washington-node.log");
    let mut na = Node::start_logging_to(&a, &a_log);
    let nb = Node::start(&b);
    send_and_wait_delivered(&na, "pyongyang", "before");

    // Below the 4 MiB reserve: washington refuses to send, says why, and
    // exits 9; what pyongyang sends is still logged and receipted.
    disk.fill(2 * 1024 * 1024);
    let out = send_cli(&a, "pyongyang", "below the reserve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains("disk full:"), "{err}");
    send_and_wait_delivered(&nb, "washington", "into the reserve");

    // Now truly full: the next entries washington must write fail, and it
    // stops with exit code 9 and "disk full", its log cut back whole.
    disk.fill(0);
    let c = nb.client();
    for i in 0..20 {
        let _ = c.send(&SendRequest {
            to: "washington".into(),
            subject: format!("onto a full disk {i}"),
            body: "x".repeat(4096),
            ..Default::default()
        });
    }
    let status = na
        .wait_exit(Duration::from_secs(60))
        .expect("washington stops on a full disk");
    assert_eq!(
        status.code(),
        Some(9),
        "{}",
        std::fs::read_to_string(&a_log).unwrap()
    );
    assert!(std::fs::read_to_string(&a_log)
        .unwrap()
        .contains("disk full"));
    let log = a.join("log/hotline.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let summary = hotline::audit::scan(&log, |_| {}).unwrap();
    assert_eq!(summary.good_len, len, "a torn tail on the full disk");

    // Restarted on the still-full disk (as a supervisor would, twice): it
    // refuses at once, plainly, and writes nothing.
    for _ in 0..2 {
        let out = hotline(&["node", "run", "--dir", a.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "{err}");
        assert!(err.contains("disk full:"), "{err}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
    }

    // Space freed: it starts, its log verifies, and what pyongyang sent
    // meanwhile arrives.
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let na = Node::start_logging_to(&a, &a_log);
    let out = hotline(&["audit", "verify", a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for("pyongyang's messages are receipted", || {
        c.outbox()
            .unwrap()
            .iter()
            .all(|o| o.state == hotline::core::OutState::Delivered)
    });
    send_and_wait_delivered(&na, "pyongyang", "after");
    drop(na);
    drop(nb);
}

#[test]
fn a_stale_control_address_gets_no_token_when_no_node_runs() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = setup(t.path());
    let mut node = Node::start(&a);
    let addr = std::fs::read_to_string(a.join("run/control.addr")).unwrap();
    node.kill9(); // leaves run/control.addr behind, as an unwritable run/ would
                  // Another local user takes the freed port.
    let thief = std::net::TcpListener::bind(addr.trim()).unwrap();
    thief.set_nonblocking(true).unwrap();
    let out = hotline(&["status", "--dir", a.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hotline(&[
        "send",
        "--dir",
        a.to_str().unwrap(),
        "--to",
        "pyongyang",
        "--subject",
        "s",
        "b",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no longer running"), "{err}");
    assert!(
        thief.accept().is_err(),
        "the CLI connected to a stale control address"
    );
}
