//! report.html: one self-contained page (no scripts, no fetches) with the
//! verdict, a timeline picture and the tables of report.md.
//!
//! The picture is a message sequence chart in SVG: a lane per party, time
//! running down; each message an arrow from the sender's lane when it was
//! sent to the recipient's lane when it was logged there (through the
//! relay's lane when relayed), coloured by precedence; escalation steps,
//! line states and the runner's faults are marked on the lanes.

use std::fmt::Write as _;

use super::duration::format as t;
use super::report::Report;

const LANE_W: f64 = 230.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 70.0;
const HEIGHT: f64 = 900.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(precedence: &str) -> &'static str {
    match precedence {
        "flash" => "#c62828",
        "immediate" => "#ef6c00",
        "priority" => "#1565c0",
        _ => "#546e7a",
    }
}

fn state_colour(state: &str) -> &'static str {
    match state {
        "up" | "connected" => "#2e7d32",
        "degraded" => "#f9a825",
        "silent" => "#b71c1c",
        _ => "#757575",
    }
}

/// The timeline picture alone (an `<svg>` element).
pub fn timeline_svg(r: &Report) -> String {
    // Relays sit between the first office and the others, so relayed
    // arrows pass through their lane instead of across an office's.
    let offices: Vec<&str> = r
        .parties
        .iter()
        .filter(|p| p.role != "relay")
        .map(|p| p.name.as_str())
        .collect();
    let mut lanes: Vec<&str> = offices.iter().take(1).copied().collect();
    lanes.extend(
        r.parties
            .iter()
            .filter(|p| p.role == "relay")
            .map(|p| p.name.as_str()),
    );
    lanes.extend(offices.iter().skip(1));
    let x = |name: &str| {
        let i = lanes.iter().position(|l| *l == name).unwrap_or(0);
        LEFT + LANE_W / 2.0 + i as f64 * LANE_W
    };
    let end = r.duration_ms.max(1) as f64;
    let y = |ms: u64| TOP + (ms as f64 / end).min(1.0) * HEIGHT;
    let width = LEFT + LANE_W * lanes.len() as f64 + 40.0;
    let height = TOP + HEIGHT + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="11" role="img" aria-label="timeline">
<defs>"##
    );
    for p in ["flash", "immediate", "priority", "routine"] {
        let _ = write!(
            s,
            r##"<marker id="arrow-{p}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{}"/></marker>"##,
            colour(p)
        );
    }
    s.push_str("</defs>\n");
    // Time axis: round ticks, about ten of them.
    let step = [
        1_000u64, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
    ]
    .into_iter()
    .find(|s| end / (*s as f64) <= 12.0)
    .unwrap_or(7_200_000);
    for ms in (0..=r.duration_ms).step_by(step as usize) {
        let yy = y(ms);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eeeeee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#616161">{}</text>"##,
            width - 30.0,
            LEFT - 8.0,
            yy + 4.0,
            t(ms)
        );
    }
    // Lanes.
    for p in &r.parties {
        let xx = x(&p.name);
        let dash = if p.role == "relay" {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#37474f" stroke-width="2"{dash}/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="14" font-weight="bold">{}</text><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#616161">{}</text>"##,
            TOP + HEIGHT,
            TOP - 30.0,
            esc(&p.name),
            TOP - 14.0,
            p.role
        );
    }
    // The runner's faults and events: a dashed rule across the chart.
    for i in &r.interventions {
        let is_fault = ["cut", "restored", "crashed", "restarted", "stops", "again"]
            .iter()
            .any(|w| i.what.contains(w));
        if !is_fault && !i.failed {
            continue;
        }
        let yy = y(i.at_ms);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#8e24aa" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#8e24aa">{}</text>"##,
            width - 30.0,
            width - 32.0,
            yy - 3.0,
            esc(&i.what)
        );
    }
    // Line states: a coloured tick beside the observing lane.
    for l in &r.record.links {
        let side = if x(&l.peer) > x(&l.office) { 1.0 } else { -1.0 };
        let xx = x(&l.office) + side * 8.0;
        let yy = y(l.at_ms);
        let _ = writeln!(
            s,
            r##"<circle cx="{xx:.1}" cy="{yy:.1}" r="4" fill="{}"><title>{} at {}: line to {} {}</title></circle>"##,
            state_colour(&l.state),
            esc(&l.office),
            t(l.at_ms),
            esc(&l.peer),
            l.state
        );
        if l.state == "silent" {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="{}" fill="{}">{} {}</text>"##,
                xx + side * 8.0,
                yy + 4.0,
                if side > 0.0 { "start" } else { "end" },
                state_colour(&l.state),
                esc(&l.peer),
                l.state.to_uppercase()
            );
        }
    }
    // Messages.
    for m in &r.record.messages {
        let c = colour(&m.precedence);
        let (x1, y1) = (x(&m.from), y(m.sent_ms));
        let name = if m.label.is_empty() {
            m.subject.clone()
        } else {
            m.label.clone()
        };
        let tip = format!(
            "{} {} → {}: {} (sent {}, {})",
            m.precedence.to_uppercase(),
            m.from,
            m.to,
            m.subject,
            t(m.sent_ms),
            match m.received_ms {
                Some(at) => format!("logged by {} at {}", m.to, t(at)),
                None => "never arrived".into(),
            }
        );
        match m.received_ms {
            Some(at) => {
                let (x2, y2) = (x(&m.to), y(at));
                let hop = r
                    .record
                    .relays
                    .iter()
                    .find(|p| p.message_id == m.id && p.state == "accepted");
                let path = match (m.route.is_empty(), hop) {
                    (false, Some(h)) => {
                        let (xr, yr) = (x(&h.relay), y(h.at_ms));
                        format!("M{x1:.1},{y1:.1} L{xr:.1},{yr:.1} L{x2:.1},{y2:.1}")
                    }
                    _ => format!("M{x1:.1},{y1:.1} L{x2:.1},{y2:.1}"),
                };
                let dash = if m.route.is_empty() {
                    ""
                } else {
                    r#" stroke-dasharray="7 3""#
                };
                let _ = writeln!(
                    s,
                    r##"<path d="{path}" fill="none" stroke="{c}" stroke-width="2"{dash} marker-end="url(#arrow-{})"><title>{}</title></path>"##,
                    m.precedence,
                    esc(&tip)
                );
                let (lx, ly) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 4.0);
                let _ = writeln!(
                    s,
                    r##"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" fill="{c}">{}</text>"##,
                    esc(&name)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    r##"<path d="M{x1:.1},{y1:.1} l30,0" stroke="{c}" stroke-width="2" stroke-dasharray="2 2"><title>{}</title></path><text x="{:.1}" y="{:.1}" fill="#b71c1c">{} ✗ not delivered</text>"##,
                    esc(&tip),
                    x1 + 34.0,
                    y1 + 4.0,
                    esc(&name)
                );
            }
        }
        if let Some(at) = m.acknowledged_ms {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#2e7d32" font-size="13">✓<title>{} acknowledged at {}</title></text>"##,
                x1 - 20.0,
                y(at) + 4.0,
                esc(&name),
                t(at)
            );
        }
        for e in &m.escalations {
            let (ex, ey) = (x1 - 14.0, y(e.at_ms));
            let _ = writeln!(
                s,
                r##"<path d="M{ex:.1},{:.1} l5,5 l-5,5 l-5,-5 z" fill="#6a1b9a"><title>{}: {} (waiting for {}) at {}</title></path>"##,
                ey - 5.0,
                esc(&name),
                e.action,
                e.waiting,
                t(e.at_ms)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Drill report: {name}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #212121; }}
h1 {{ margin-bottom: 4px; }}
.verdict {{ font-size: 18px; font-weight: bold; padding: 8px 12px; display: inline-block; border-radius: 4px; }}
.pass {{ background: #e8f5e9; color: #1b5e20; }} .fail {{ background: #ffebee; color: #b71c1c; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f5f5f5; }}
td.bad {{ color: #b71c1c; font-weight: bold; }} td.good {{ color: #1b5e20; }}
.legend span {{ margin-right: 16px; }}
.ex {{ font-size: 10px; background: #fff3e0; color: #e65100; padding: 1px 4px; border-radius: 3px; }}
</style></head><body>
<h1>Drill report: {name}</h1>
<p>{desc}</p>
<p class="verdict {cls}">{verdict}</p>
<p>{mode} · time scale {scale} · drill time {dur} · all traffic marked <span class="ex">EXERCISE</span></p>
<h2>Timeline</h2>
<p class="legend"><span style="color:#c62828">■ FLASH</span><span style="color:#ef6c00">■ IMMEDIATE</span><span style="color:#1565c0">■ PRIORITY</span><span style="color:#546e7a">■ ROUTINE</span><span>– – relayed</span><span style="color:#6a1b9a">◆ escalation step</span><span style="color:#2e7d32">✓ acknowledged</span><span>● line state (green up, amber degraded, red silent, grey disconnected)</span><span style="color:#8e24aa">┈ fault or event</span></p>
"#,
        name = esc(&r.scenario),
        desc = esc(&r.description),
        cls = if r.passed { "pass" } else { "fail" },
        verdict = esc(&r.verdict()),
        mode = if r.mode == "sim" {
            format!("simulated, seed {}", r.seed)
        } else {
            format!("live on loopback QUIC, seed {}, speed ×{}", r.seed, r.speed)
        },
        scale = r.time_scale,
        dur = t(r.duration_ms),
    );
    h.push_str(&timeline_svg(r));
    h.push_str(
        "<h2>Expectations</h2>\n<table><tr><th></th><th>expectation</th><th>evidence</th></tr>\n",
    );
    for c in r.expectations.iter().chain(&r.invariants) {
        let _ = writeln!(
            h,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            if c.held { "good" } else { "bad" },
            if c.held { "held" } else { "FAILED" },
            esc(&c.what),
            esc(&c.why)
        );
    }
    h.push_str("</table>\n<h2>Messages</h2>\n<table><tr><th>label</th><th>from → to</th><th>precedence</th><th>kind</th><th>subject</th><th>sent</th><th>received</th><th>receipt</th><th>acknowledged</th><th>route</th><th>escalations</th></tr>\n");
    let opt = |v: Option<u64>| v.map(t).unwrap_or_else(|| "—".into());
    for m in &r.record.messages {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.label),
            esc(&m.from),
            esc(&m.to),
            m.precedence.to_uppercase(),
            esc(&m.kind),
            if m.exercise { "<span class=\"ex\">EXERCISE</span> " } else { "" },
            esc(&m.subject),
            t(m.sent_ms),
            opt(m.received_ms),
            opt(m.receipted_ms),
            opt(m.acknowledged_ms),
            if m.route.is_empty() { "direct".to_string() } else { format!("via {}", esc(&m.route)) },
            m.escalations.iter().map(|e| format!("{} {}", e.action, t(e.at_ms))).collect::<Vec<_>>().join(", ")
        );
    }
    h.push_str("</table>\n<h2>What the runner did</h2>\n<table><tr><th>time</th><th>party</th><th>what</th></tr>\n");
    for i in &r.interventions {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td{}>{}</td></tr>",
            t(i.at_ms),
            esc(&i.party),
            if i.failed { " class=\"bad\"" } else { "" },
            esc(&i.what)
        );
    }
    h.push_str("</table>\n<h2>Logs</h2>\n<table><tr><th>party</th><th>entries</th><th>audit verify</th></tr>\n");
    for l in &r.logs {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&l.party),
            l.entries,
            if l.ok { "good" } else { "bad" },
            if l.ok {
                "ok".to_string()
            } else {
                esc(&l.problem)
            }
        );
    }
    h.push_str("</table>\n");
    for p in &r.pairs {
        let _ = writeln!(
            h,
            "<p>Cross-check {} / {}: {}</p>",
            esc(&p.a),
            esc(&p.b),
            if p.ok {
                "the logs agree".to_string()
            } else {
                esc(&p.discrepancies.join("; "))
            }
        );
    }
    h.push_str("</body></html>\n");
    h
}
