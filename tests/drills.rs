//! Crisis drills end to end: every bundled drill passes in simulation at
//! several seeds and live (real node processes over loopback QUIC through
//! the fault-injecting proxies); simulated reports are byte-identical per
//! seed; a replay of a live run agrees; an expectation that cannot hold
//! fails with a report that says which and why.

use std::path::Path;
use std::process::Command;

use hotline::drill::{self, bundled, Mode, RunOptions, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_hotline");

fn sim(s: &Scenario, text: &str, out: &Path, seed: u64) -> drill::Report {
    drill::run(
        s,
        text,
        &RunOptions {
            out: out.to_path_buf(),
            mode: Mode::Sim,
            seed: Some(seed),
            progress: false,
        },
    )
    .unwrap()
}

#[test]
fn every_bundled_drill_passes_in_simulation_at_several_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in bundled::DRILLS {
        let s = Scenario::parse(text, name).unwrap();
        for seed in [s.seed, 1, 2, 3] {
            let r = sim(&s, text, &tmp.path().join(format!("{name}-{seed}")), seed);
            assert!(r.passed, "{name} seed {seed}: {:#?}", r.failures());
            assert_eq!(r.expectations.len(), s.expect.len());
            // All drill traffic carries the exercise flag.
            assert!(r.record.messages.iter().all(|m| m.exercise), "{name}");
            assert!(!r.record.messages.is_empty());
        }
    }
}

#[test]
fn the_same_seed_gives_byte_identical_reports_and_another_seed_differs() {
    let (s, text) = bundled::load("missile-notification").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    sim(&s, &text, &tmp.path().join("a"), 7);
    sim(&s, &text, &tmp.path().join("b"), 7);
    sim(&s, &text, &tmp.path().join("c"), 8);
    for f in ["report.json", "report.md", "report.html"] {
        let a = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(a == b, "{f} differs between two runs of seed 7");
    }
    let a = std::fs::read(tmp.path().join("a/report.json")).unwrap();
    let c = std::fs::read(tmp.path().join("c/report.json")).unwrap();
    assert_ne!(a, c, "a different seed draws different faults");
    // `drill replay` of a simulated run agrees (and says so by exit code).
    let out = Command::new(BIN)
        .args(["drill", "replay", "--json"])
        .arg(tmp.path().join("a"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agrees"], true, "{v}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn an_expectation_that_cannot_hold_fails_and_the_report_says_which_and_why() {
    let (_, text) = bundled::load("kaesong-2020").unwrap();
    // The inquiry is sent while the line is cut for 18 more minutes: it
    // cannot be receipted within one minute, and it was never acknowledged.
    let text = text.replace(
        "what = \"delivered\"\nmessage = \"inquiry\"\nwithin = \"25m\"",
        "what = \"delivered\"\nmessage = \"inquiry\"\nwithin = \"1m\"",
    ) + "\n[[expect]]\nwhat = \"acknowledged\"\nmessage = \"inquiry\"\n";
    let s = Scenario::parse(&text, "impossible").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let r = sim(&s, &text, &tmp.path().join("run"), s.seed);
    assert!(!r.passed);
    let failed: Vec<_> = r.failures();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[0].what.contains("inquiry delivered within 1m"));
    assert!(failed[0].why.contains("later than 1m"), "{}", failed[0].why);
    assert!(failed[1].what.contains("inquiry acknowledged"));
    assert!(
        failed[1].why.contains("no acknowledgement"),
        "{}",
        failed[1].why
    );
    let md = std::fs::read_to_string(tmp.path().join("run/report.md")).unwrap();
    assert!(md.contains("**FAILED**") && md.contains("later than 1m"));
    let html = std::fs::read_to_string(tmp.path().join("run/report.html")).unwrap();
    assert!(html.contains("FAILED") && html.contains("<svg"));
    // The binary exits 7 for a drill that ran and failed.
    let path = tmp.path().join("impossible.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN)
        .args(["drill", "run", "--sim", "--out"])
        .arg(tmp.path().join("cli"))
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED") && stdout.contains("later than 1m"),
        "{stdout}"
    );
}

#[test]
fn a_malformed_scenario_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, text) = bundled::load("kaesong-2020").unwrap();
    for (bad, field) in [
        (
            text.replace("office = \"pyongyang\"", "office = \"pyongyan\""),
            "event[0].office",
        ),
        (text.replace("delay", "dealy"), "line"),
        (
            text.replace("time_scale = 0.005", "time_scale = 3"),
            "time_scale",
        ),
    ] {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let out = Command::new(BIN)
            .args(["drill", "run", "--sim"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{field}: {err}");
    }
    let out = Command::new(BIN)
        .args(["drill", "run", "no-such-drill"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("drill list"));
}

#[test]
fn drill_list_names_every_bundled_drill() {
    let out = Command::new(BIN)
        .args(["drill", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v.iter().map(|d| d["name"].as_str().unwrap()).collect();
    for want in [
        "yalu-1950",
        "cuban-1962",
        "kaesong-2020",
        "missile-notification",
        "war-remains-2018",
        "tangier-1963",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
}

/// Live: real node processes, real QUIC through the proxies, real clock.
/// Each drill takes 7–12 s of real time at its own scale; tangier-1963
/// runs at real speed, 30 s.
#[test]
fn every_bundled_drill_passes_live_and_a_replay_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _) in bundled::DRILLS {
        let dir = tmp.path().join(name);
        let out = Command::new(BIN)
            .args(["drill", "run", name, "--json", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} live: {:#}",
            report["expectations"]
        );
        assert_eq!(report["mode"], "live");
        // Every party's directory is there and `hotline audit verify` passes on it.
        for p in report["parties"].as_array().unwrap() {
            let party = p["name"].as_str().unwrap();
            let v = Command::new(BIN)
                .args(["audit", "verify"])
                .arg(dir.join(party))
                .output()
                .unwrap();
            assert!(v.status.success(), "{name}/{party}: audit verify");
        }
        if *name == "war-remains-2018" {
            let r = Command::new(BIN)
                .args(["drill", "replay", "--json"])
                .arg(&dir)
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
            assert_eq!(v["agrees"], true, "{v}");
        }
    }
}
