//! Durations as people write them in scenario files: `500ms`, `30s`,
//! `2m`, `1h30m`.

use serde::{Deserialize, Deserializer};

/// Milliseconds parsed from a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

/// Parses `1h30m`, `45s`, `250ms`, `2m`; a bare number is seconds.
pub fn parse(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs * 1000);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected a number before {unit:?}"))?;
        let factor = match unit.as_str() {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m or h)")),
        };
        total += (v * factor).round() as u64;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("{s:?}: a number needs a unit (ms, s, m or h)"));
    }
    Ok(total)
}

/// Formats drill milliseconds for people: `850ms`, `12.5s`, `4m 05s`,
/// `1h 02m`.
pub fn format(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let s = (ms + 500) / 1_000;
    if s < 3_600 {
        return format!("{}m {:02}s", s / 60, s % 60);
    }
    format!("{}h {:02}m", s / 3_600, (s % 3_600) / 60)
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Millis).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn durations() {
        assert_eq!(parse("500ms"), Ok(500));
        assert_eq!(parse("30s"), Ok(30_000));
        assert_eq!(parse("2m"), Ok(120_000));
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("1.5s"), Ok(1_500));
        assert_eq!(parse("12"), Ok(12_000));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("10x").is_err());
        assert!(parse("").is_err());
        assert!(parse("3m4").is_err());
    }

    #[test]
    fn formatting() {
        use super::format;
        assert_eq!(format(850), "850ms");
        assert_eq!(format(12_500), "12.5s");
        assert_eq!(format(30_000), "30s");
        assert_eq!(format(245_000), "4m 05s");
        assert_eq!(format(3_720_000), "1h 02m");
    }
}
