//! Peer text made safe to keep and to show.
//!
//! A peer office signs whatever it likes, so every string it sends (names,
//! ids, subjects, reasons, details) is hostile twice over: it can be long,
//! and it can hold control characters that rewrite an operator's terminal
//! (clear the screen, retitle the window, paint a fake "line DOWN"). Two
//! rules follow, each with one home here:
//!
//! - **Cut on a character boundary.** `String::truncate` panics inside a
//!   multi-byte character; [`truncate`] never does.
//! - **Escape before a person sees it.** [`for_terminal`] replaces every
//!   control character (C0, DEL, C1, and the bidirectional overrides that
//!   reorder what is shown) with a visible escape; [`quote`] does the same
//!   inside quotes and bounds the length, for quoting a peer value in a
//!   refusal detail or a log line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        // `cut` > 0 here: index 0 is always a boundary.
        cut = cut.saturating_sub(1);
    }
    s.truncate(cut);
}

/// The prefix of `s` of at most `max` bytes, on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut = cut.saturating_sub(1);
    }
    s.get(..cut).unwrap_or_default()
}

/// Characters that must not reach a terminal as they are.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional embeddings, overrides and isolates: they reorder
            // the text a person reads (CVE-2021-42574, "Trojan Source").
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
            // Line and paragraph separators break table rows.
            | '\u{2028}' | '\u{2029}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every control character escaped (`\n`, `\u{1b}`, ...), for a
/// single-line terminal view. Printable text, including non-ASCII scripts,
/// is kept as it is.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().saturating_add(8));
    for c in s.chars() {
        if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` in double quotes with control characters, quotes and backslashes
/// escaped, cut to about `max` bytes of the original (an ellipsis marks a
/// cut). For quoting a peer value inside our own text.
pub fn quote(s: &str, max: usize) -> String {
    let shown = prefix(s, max);
    let mut out = String::with_capacity(shown.len().saturating_add(4));
    out.push('"');
    for c in shown.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    if shown.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_never_splits_a_character() {
        // "a" + "é" * 300: byte 256 falls inside an "é" (2 bytes each).
        let mut s = format!("a{}", "é".repeat(300));
        assert!(!s.is_char_boundary(256));
        truncate(&mut s, 256);
        assert_eq!(s.len(), 255);
        assert!(s.ends_with('é'));
        let mut short = "short".to_string();
        truncate(&mut short, 256);
        assert_eq!(short, "short");
        let mut four = "𝄞𝄞".to_string(); // 4 bytes each
        truncate(&mut four, 5);
        assert_eq!(four, "𝄞");
        truncate(&mut four, 3);
        assert_eq!(four, "");
        assert_eq!(prefix("é", 1), "");
    }

    #[test]
    fn terminal_escapes_hide_nothing_and_change_nothing_printable() {
        let hostile = "ok\x1b[2J\x1b]0;owned\x07\u{202E}evil\nline DOWN\u{9b}";
        let shown = for_terminal(hostile);
        assert!(!shown.chars().any(is_unsafe), "{shown}");
        assert_eq!(
            shown,
            "ok\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{202e}evil\\nline DOWN\\u{9b}"
        );
        assert!(matches!(for_terminal("Привет, 평양"), Cow::Borrowed(_)));
    }

    #[test]
    fn quote_bounds_and_escapes() {
        let q = quote(&format!("a{}", "é".repeat(300)), 64);
        assert!(q.len() < 64 + 8, "{}", q.len());
        assert!(q.ends_with('…'));
        assert_eq!(quote("a\"b\\c\x1b", 64), "\"a\\\"b\\\\c\\u{1b}\"");
    }
}
