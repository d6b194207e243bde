//! Human-readable tables.
//!
//! Everything printed here may hold a peer's text (subjects, bodies,
//! refusal details, reasons, ids), so every cell and every free-text field
//! goes through [`t`] first: control characters and bidirectional overrides
//! are shown escaped and can neither rewrite the operator's terminal nor
//! break a table row.

use hotline::bench::BenchReport;
use hotline::control::{InboxEntry, OutboxEntry, StatusResponse};

/// Peer text made safe for a terminal.
pub fn t(s: &str) -> std::borrow::Cow<'_, str> {
    hotline::text::for_terminal(s)
}

/// Prints rows under headers with aligned columns; every cell is escaped.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table_text(headers, rows));
}

/// The text of [`table`].
fn table_text(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| t(&c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        assert_eq!(r.len(), headers.len(), "table row width");
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
    out
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
                    format!(
                        "{}{}",
                        if m.exercise { "[EXERCISE] " } else { "" },
                        short(&m.subject, 40)
                    ),
                ]
            })
            .collect(),
    );
}

pub fn status(s: &StatusResponse) {
    println!(
        "office {} (fingerprint {}), QUIC {}, {} log entries, latest checkpoint {}",
        s.office,
        s.fingerprint,
        s.listen,
        s.log_entries,
        s.checkpoint_size
            .map(|c| format!("at size {c}"))
            .unwrap_or_else(|| "none yet".into())
    );
    if let Some(t) = s.node_cert_expires_unix_ms {
        println!("node certificate valid until {}", time(t));
    }
    if let Some(w) = &s.node_cert_warning {
        println!("WARNING: {w}");
    }
    for h in &s.held_card_updates {
        println!(
            "card update held: {} offers card {} (replacing {}); read it aloud with {}, then: hotline peer confirm-card {} {}",
            h.peer, h.fingerprint, h.old_fingerprint, h.peer, h.peer, h.fingerprint
        );
    }
    if let Some(r) = &s.card_rotation {
        println!(
            "card rotation: new card {} waiting for {} to accept it",
            r.fingerprint,
            r.waiting.join(", ")
        );
    }
    table(
        &[
            "PEER",
            "LINK",
            "ROUTE",
            "HEALTH",
            "LEVEL",
            "RTT",
            "LAST HEARD",
            "OUTBOX",
            "QUEUED",
            "UNACKED",
            "DELIVERED",
            "RECEIVED",
            "COSIGNED US",
            "WE COSIGNED",
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
                    p.route.clone(),
                    if p.missed_line_checks > 0 {
                        format!(
                            "{} ({} missed)",
                            p.health.to_uppercase(),
                            p.missed_line_checks
                        )
                    } else {
                        p.health.to_uppercase()
                    },
                    if p.alert_level != p.own_alert_level && !p.own_alert_level.is_empty() {
                        format!("{} (peer's)", p.alert_level.to_uppercase())
                    } else {
                        p.alert_level.to_uppercase()
                    },
                    p.rtt_ms
                        .map(|r| format!("{r:.1} ms"))
                        .unwrap_or_else(|| "-".into()),
                    p.last_heard_unix_ms
                        .map(time)
                        .unwrap_or_else(|| "never".into()),
                    p.outbox.to_string(),
                    p.queued.to_string(),
                    p.awaiting_ack.to_string(),
                    p.delivered.to_string(),
                    p.received.to_string(),
                    p.peer_cosigned_size.to_string(),
                    p.we_cosigned_size.to_string(),
                ]
            })
            .collect(),
    );
    if s.core_restarts > 0 {
        println!(
            "\nFAULT: the protocol core panicked and was restarted from the log {} time(s); last: {}",
            s.core_restarts,
            t(s.last_core_panic.as_deref().unwrap_or("?"))
        );
    }
    if !s.overdue.is_empty() {
        println!("\nOVERDUE (most late first):");
        for o in &s.overdue {
            println!(
                "  {:<9} {} to {}: no {} for {}",
                o.precedence.to_uppercase(),
                t(&o.id),
                t(&o.peer),
                o.waiting_for,
                micros(o.late_ms * 1000)
            );
        }
    }
    if !s.alerts.is_empty() {
        println!("\nrecent alerts (newest first):");
        for a in &s.alerts {
            println!(
                "  {}  {:<12} {:<11} {}",
                time(a.unix_ms),
                a.kind,
                t(a.peer.as_deref().unwrap_or("-")),
                t(&a.detail)
            );
        }
    }
    let n = &s.control_noise;
    if n.unauthenticated + n.timed_out + n.evicted + n.refused_full > 0 {
        println!(
            "\ncontrol API turned away since start: {} request(s) without the token, {} idle connection(s) timed out, {} evicted for room, {} refused as full",
            n.unauthenticated, n.timed_out, n.evicted, n.refused_full
        );
    }
    if !s.refused.is_empty() {
        println!("\nrefused attempts that presented an identity (latest last):");
        for r in &s.refused {
            let times = match r.count {
                0 | 1 => String::new(),
                n => format!("  ×{n} since {}", time(r.first_unix_ms)),
            };
            println!(
                "  {}  {}  {}{times}",
                time(r.unix_ms),
                t(&r.remote),
                t(&r.reason)
            );
        }
    }
    if !s.refusal_noise.is_empty() {
        println!("\nother refused connections since start:");
        for r in &s.refusal_noise {
            println!(
                "  {:>8}  {}  (latest {} from {})",
                r.count,
                t(&r.reason),
                time(r.unix_ms),
                t(&r.remote)
            );
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
    println!(
        "  FLASH p50 under load     {:>12}",
        micros(r.flash_loaded_p50_us)
    );
    println!(
        "  FLASH p99 under load     {:>12}",
        micros(r.flash_loaded_p99_us)
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
    println!(
        "  FLASH p99 under load ÷ idle p99      {:.2}",
        r.ratios.flash_p99_loaded_vs_idle
    );
}

pub fn entries(rows: &[hotline::audit::inspect::EntrySummary]) {
    if rows.is_empty() {
        println!("no entries match");
        return;
    }
    table(
        &["#", "TIME", "KIND", "PEER", "MSG", "DETAIL"],
        rows.iter()
            .map(|r| {
                vec![
                    r.index.to_string(),
                    time(r.time_unix_ms),
                    r.kind.to_string(),
                    r.peer.clone().unwrap_or_default(),
                    r.msg.as_deref().map(|m| short(m, 13)).unwrap_or_default(),
                    short(&r.detail, 70),
                ]
            })
            .collect(),
    );
}

pub fn audit_info(office: &str, i: &hotline::audit::info::Info) {
    println!("log of {office}: {} entries, {} bytes", i.size, i.bytes);
    println!("root: {}", i.root);
    match &i.checkpoint {
        Some(c) => println!(
            "latest checkpoint: size {} at entry {} ({}), root {}",
            c.size,
            c.entry,
            time(c.time_unix_ms),
            c.root
        ),
        None => println!("latest checkpoint: none yet"),
    }
    if i.cosignatures.is_empty() {
        println!("cosignatures on it: none yet");
    }
    for c in &i.cosignatures {
        println!("  cosigned by {} (entry {})", c.peer, c.entry);
    }
    for (p, s) in &i.cosigned_by {
        println!("{p} has cosigned this log up to size {s}");
    }
    for (p, s) in &i.cosigned_for {
        println!("this office has cosigned {p}'s log up to size {s}");
    }
    if i.equivocations > 0 {
        println!(
            "EQUIVOCATIONS DETECTED: {} (see `hotline audit show DIR --kind equivocation`)",
            i.equivocations
        );
    }
    if let Some(t) = i.torn_tail_bytes {
        println!("torn tail: {t} bytes (removed when the node next starts)");
    }
}

pub fn verify_report(r: &hotline::audit::verify::VerifyReport) {
    if let Some(note) = &r.note {
        println!("note: {note}");
    }
    if let Some(i) = r.from_checkpoint {
        println!(
            "incremental: from the sealing checkpoint at entry {i} (the entries before it were verified earlier and not read again; run without --from-checkpoint for the full check)"
        );
    }
    println!(
        "{} entries, {} checkpoints, {} signatures, {} cosignatures checked; root {}",
        r.entries, r.checkpoints, r.signatures, r.cosignatures, r.root
    );
    if r.unchecked > 0 {
        println!(
            "{} entries involve a peer with no pinned card and were not checked",
            r.unchecked
        );
    }
    match &r.failure {
        None => println!("OK: the log verifies"),
        Some(f) => println!(
            "FAILED at entry {} (byte offset {}): {}",
            f.index, f.offset, f.what
        ),
    }
}

pub fn cross_check(r: &hotline::audit::compare::CrossCheck) {
    println!(
        "{} -> {}: {} messages; {} -> {}: {} messages; {} receipts and {} cosigned checkpoints compared",
        r.a, r.b, r.messages.0, r.b, r.a, r.messages.1, r.receipts, r.cosignatures
    );
    for p in &r.pending {
        println!("  pending: {p}");
    }
    if r.discrepancies.is_empty() {
        println!("OK: the logs agree");
    } else {
        println!("{} DISCREPANCIES:", r.discrepancies.len());
        for d in &r.discrepancies {
            println!("  {d}");
        }
    }
}

pub fn timeline(rows: &[hotline::audit::compare::TimelineRow]) {
    table(
        &["TIME", "OFFICE", "EVENT", "PREC", "MSG", "AFTER", "SUBJECT"],
        rows.iter()
            .map(|r| {
                vec![
                    time_ms(r.time_unix_ms),
                    r.office.clone(),
                    r.event.clone(),
                    r.precedence.to_uppercase(),
                    short(&r.msg, 13),
                    r.since_created_ms
                        .map(|d| format!("+{d} ms"))
                        .unwrap_or_default(),
                    short(&r.subject, 40),
                ]
            })
            .collect(),
    );
}

fn time_ms(ms: u64) -> String {
    format!("{}.{:03}", time(ms).trim_end_matches('Z'), ms % 1000)
}

pub fn bench_audit(r: &hotline::bench_audit::AuditBenchReport) {
    println!(
        "hotline bench audit: raw Ed25519 batch verify {:.0} signatures/s (one core)\n",
        r.batch_verify_floor_per_s
    );
    table(
        &[
            "ENTRIES",
            "BYTES",
            "VERIFY",
            "ENTRIES/S",
            "SIGS/S",
            "÷ BATCH FLOOR",
            "PEAK RSS",
        ],
        r.points
            .iter()
            .map(|p| {
                vec![
                    p.entries.to_string(),
                    p.bytes.to_string(),
                    format!("{:.2} s", p.verify_s),
                    format!("{:.0}", p.entries_per_s),
                    format!("{:.0}", p.signatures_per_s),
                    format!("{:.2}", p.ratio_to_batch_floor),
                    format!("{:.1} MiB", p.peak_rss_mib),
                ]
            })
            .collect(),
    );
    println!("\nnode start (min / median / max), resident memory once serving:\n");
    let spread = |s: &hotline::bench_line::Spread| {
        format!("{:.3} / {:.3} / {:.3} s", s.min, s.median, s.max)
    };
    table(
        &[
            "ENTRIES",
            "TAIL",
            "FROM SNAPSHOT",
            "RSS",
            "÷ TAIL READ+HASH",
            "FULL REPLAY",
            "RSS",
            "÷ READ+HASH",
            "SNAPSHOT ÷ FULL",
        ],
        r.points
            .iter()
            .map(|p| {
                vec![
                    p.entries.to_string(),
                    p.tail_entries.to_string(),
                    spread(&p.start_snapshot_s),
                    format!("{:.1} MiB", p.start_snapshot_rss_mib),
                    format!("{:.1}", p.snapshot_start_ratio_to_floor),
                    spread(&p.start_full_s),
                    format!("{:.1} MiB", p.start_full_rss_mib),
                    format!("{:.1}", p.full_start_ratio_to_floor),
                    format!("{:.3}", p.snapshot_start_ratio_to_full),
                ]
            })
            .collect(),
    );
}

pub fn bench_health(r: &hotline::bench_health::HealthBenchReport) {
    println!(
        "hotline bench health: {:?} line, both operators at {}, {:.1} minutes watched, \
         {} messages ({} not receipted)\n",
        r.profile,
        r.level.to_uppercase(),
        r.minutes,
        r.messages,
        r.undelivered
    );
    table(
        &["OFFICE", "DEGRADED", "SILENT", "RECONNECTIONS"],
        r.offices
            .iter()
            .map(|o| {
                vec![
                    o.office.clone(),
                    o.degraded.to_string(),
                    o.silent.to_string(),
                    o.reconnections.to_string(),
                ]
            })
            .collect(),
    );
    println!(
        "\nfalse alarms per hour (both offices): {:.1} DEGRADED, {:.1} SILENT",
        r.degraded_per_hour, r.silent_per_hour
    );
    if !r.cut_detection_s.is_empty() {
        let c = r.cut_detection;
        let each: Vec<String> = r
            .cut_detection_s
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect();
        println!(
            "cut to SILENT: {} s (min {:.2}, median {:.2}, max {:.2})",
            each.join(", "),
            c.min,
            c.median,
            c.max
        );
    }
}

pub fn bench_line(r: &hotline::bench_line::LineBenchReport) {
    println!(
        "hotline bench line: {:?} line, {} messages of {} B per run, hotline (two node \
         processes, control API) beside a raw QUIC stream with the same TLS\n",
        r.profile, r.messages, r.size
    );
    table(
        &[
            "RUN",
            "HOTLINE",
            "HOTLINE WIRE",
            "COPIES",
            "RAW QUIC",
            "RAW WIRE",
            "GOODPUT ÷ RAW",
            "WIRE ÷ RAW",
        ],
        r.runs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                vec![
                    (i + 1).to_string(),
                    format!("{:.1} s", x.hotline_s),
                    format!("{} B", x.hotline_wire_bytes),
                    x.hotline_max_copies.to_string(),
                    format!("{:.1} s", x.raw_s),
                    format!("{} B", x.raw_wire_bytes),
                    format!("{:.2}", x.goodput_ratio),
                    format!("{:.2}", x.wire_ratio),
                ]
            })
            .collect(),
    );
    let g = r.goodput_ratio;
    let w = r.wire_ratio;
    println!(
        "\ngoodput ÷ raw QUIC: min {:.2}, median {:.2}, max {:.2} (target ≥ 0.5)\n\
         wire ÷ raw QUIC:    min {:.2}, median {:.2}, max {:.2} (target ≤ 1.5)",
        g.min, g.median, g.max, w.min, w.median, w.max
    );
}

pub fn watch_event(e: &hotline::control::WatchEvent) {
    println!("{}", watch_line(e));
}

/// One line of `watch`, escaped.
fn watch_line(e: &hotline::control::WatchEvent) -> String {
    let loud = matches!(
        e.kind.as_str(),
        "alert" | "escalation" | "line-health" | "alert-level" | "negative-receipt"
    );
    format!(
        "{} {}{:<16} {:<11} {} {}",
        time_ms(e.unix_ms),
        if loud { "!" } else { " " },
        e.kind,
        t(e.peer.as_deref().unwrap_or("-")),
        t(&e.msg.as_deref().map(|m| short(m, 13)).unwrap_or_default()),
        t(&e.detail)
    )
}

pub fn bench_soak(r: &hotline::bench_soak::SoakReport) {
    println!(
        "hotline bench soak: {} messages of {} bytes, washington -> pyongyang, {} senders \
         (two node processes, control API); {}\n",
        r.messages,
        r.size,
        r.senders,
        if r.acknowledged {
            "pyongyang acknowledges each"
        } else {
            "nobody acknowledges"
        }
    );
    println!(
        "memory at start: sender {:.1} MiB, receiver {:.1} MiB\n",
        r.start_rss_mib[0], r.start_rss_mib[1]
    );
    table(
        &[
            "MESSAGES",
            "SECONDS",
            "MSG/S",
            "SENDER RSS MiB",
            "RECEIVER RSS MiB",
        ],
        r.rows
            .iter()
            .map(|w| {
                vec![
                    w.messages.to_string(),
                    format!("{:.1}", w.elapsed_s),
                    format!("{:.0}", w.rate_per_s),
                    format!("{:.1}", w.sender_rss_mib),
                    format!("{:.1}", w.receiver_rss_mib),
                ]
            })
            .collect(),
    );
    println!(
        "\nmemory growth per message, first row to last: sender {:.1} bytes, receiver {:.1} bytes",
        r.rss_bytes_per_message[0], r.rss_bytes_per_message[1]
    );
    if let Some(f) = r.rate_last_over_first {
        println!("throughput, last tenth over first tenth: {f:.2}");
    }
    println!(
        "log at the end: sender {:.1} MiB, receiver {:.1} MiB",
        r.log_bytes[0] as f64 / 1048576.0,
        r.log_bytes[1] as f64 / 1048576.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "ok\u{1b}[2J\u{1b}]0;line DOWN\u{7}\r\u{202e}evil\nrow";

    fn assert_clean(out: &str) {
        for c in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
            assert!(!out.contains(c), "{c:?} reached the terminal in {out:?}");
        }
    }

    #[test]
    fn table_cells_holding_peer_text_are_escaped_and_keep_one_row_each() {
        let out = table_text(
            &["FROM", "SUBJECT"],
            vec![vec!["pyongyang".into(), HOSTILE.into()]],
        );
        assert_clean(&out);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("\\u{1b}[2J"), "{out}");
        assert!(out.contains("\\u{202e}evil\\nrow"), "{out}");
    }

    #[test]
    fn watch_lines_escape_the_peer_detail_and_id() {
        let e = hotline::control::WatchEvent {
            unix_ms: 1_750_000_000_000,
            kind: "negative-receipt".into(),
            peer: Some(HOSTILE.into()),
            msg: Some(HOSTILE.into()),
            detail: HOSTILE.into(),
            seq: 1,
        };
        let line = watch_line(&e);
        assert_clean(&line);
        assert!(!line.contains('\n'), "{line}");
    }
}
