//! Human-readable tables.

use hotline::bench::BenchReport;
use hotline::control::{InboxEntry, OutboxEntry, StatusResponse};

/// Prints rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// Microseconds as a short duration.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

fn time(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

pub fn inbox(items: &[InboxEntry]) {
    if items.is_empty() {
        println!("inbox is empty");
        return;
    }
    table(
        &["RECEIVED", "FROM", "PREC", "KIND", "ID", "SUBJECT / BODY"],
        items
            .iter()
            .map(|m| {
                let text = if m.subject.is_empty() {
                    m.body.clone()
                } else {
                    format!("{}: {}", m.subject, m.body)
                };
                vec![
                    time(m.received_unix_ms),
                    m.from.clone(),
                    m.precedence.to_uppercase(),
                    format!("{}{}", m.kind, if m.exercise { " [EXERCISE]" } else { "" }),
                    m.id.clone(),
                    short(&text.replace('\n', " "), 60),
                ]
            })
            .collect(),
    );
}

pub fn outbox(items: &[OutboxEntry]) {
    if items.is_empty() {
        println!("outbox is empty");
        return;
    }
    table(
        &["CREATED", "TO", "SEQ", "PREC", "STATE", "ID", "SUBJECT"],
        items
            .iter()
            .map(|m| {
                vec![
                    time(m.created_unix_ms),
                    m.to.clone(),
                    m.sequence.to_string(),
                    m.precedence.to_uppercase(),
                    format!("{:?}", m.state).to_lowercase(),
                    m.id.clone(),
                    short(&m.subject, 40),
                ]
            })
            .collect(),
    );
}

pub fn status(s: &StatusResponse) {
    println!(
        "office {} (fingerprint {}), QUIC {}, {} log entries",
        s.office, s.fingerprint, s.listen, s.log_entries
    );
    table(
        &[
            "PEER",
            "LINK",
            "RTT",
            "LAST HEARD",
            "OUTBOX",
            "QUEUED",
            "DELIVERED",
            "RECEIVED",
        ],
        s.peers
            .iter()
            .map(|p| {
                vec![
                    p.office.clone(),
                    if p.link == "up" && !p.resumed {
                        "up (resuming)".into()
                    } else {
                        p.link.clone()
                    },
                    p.rtt_ms
                        .map(|r| format!("{r:.1} ms"))
                        .unwrap_or_else(|| "-".into()),
                    p.last_heard_unix_ms
                        .map(time)
                        .unwrap_or_else(|| "never".into()),
                    p.outbox.to_string(),
                    p.queued.to_string(),
                    p.delivered.to_string(),
                    p.received.to_string(),
                ]
            })
            .collect(),
    );
    if !s.refused.is_empty() {
        println!("\nrefused connections (latest last):");
        for r in &s.refused {
            println!("  {}  {}  {}", time(r.unix_ms), r.remote, r.reason);
        }
    }
}

pub fn bench(r: &BenchReport) {
    println!(
        "hotline bench: {} messages of {} bytes, two nodes on loopback\n",
        r.messages, r.size
    );
    println!("floors measured in this run:");
    println!(
        "  Ed25519 sign             {:>12.0} /s",
        r.floors.ed25519_sign_per_s
    );
    println!(
        "  Ed25519 verify           {:>12.0} /s",
        r.floors.ed25519_verify_per_s
    );
    println!(
        "  fdatasync (256 B append) {:>12.0} /s",
        r.floors.fdatasync_per_s
    );
    println!(
        "  raw QUIC round trip p50  {:>12}",
        micros(r.floors.quic_rtt_p50_us)
    );
    println!(
        "  raw QUIC req/resp rate   {:>12.0} /s",
        r.floors.quic_rate_per_s
    );
    println!("\nhotline:");
    println!(
        "  throughput               {:>12.0} msg/s (durable, signed, receipted)",
        r.throughput_per_s
    );
    println!(
        "  send→receipt p50         {:>12}",
        micros(r.latency_p50_us)
    );
    println!(
        "  send→receipt p99         {:>12}",
        micros(r.latency_p99_us)
    );
    println!("\nratios:");
    println!(
        "  throughput ÷ Ed25519 floor           {:.3}",
        r.ratios.throughput_vs_ed25519
    );
    println!(
        "  p50 latency ÷ latency floor          {:.2}",
        r.ratios.latency_p50_vs_floor
    );
    println!(
        "  p99 latency ÷ latency floor          {:.2}",
        r.ratios.latency_p99_vs_floor
    );
    println!(
        "  throughput ÷ raw QUIC req/resp rate  {:.3}",
        r.ratios.throughput_vs_quic_rate
    );
}
