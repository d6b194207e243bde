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
