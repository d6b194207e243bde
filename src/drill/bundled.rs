//! The drills that ship with hotline (the files in `drills/`, compiled in
//! so `hotline drill run kaesong-2020` works from any directory).

use super::scenario::{Scenario, ScenarioError};

/// Name and text of every bundled drill.
pub const DRILLS: &[(&str, &str)] = &[
    ("yalu-1950", include_str!("../../drills/yalu-1950.toml")),
    ("cuban-1962", include_str!("../../drills/cuban-1962.toml")),
    (
        "kaesong-2020",
        include_str!("../../drills/kaesong-2020.toml"),
    ),
    (
        "missile-notification",
        include_str!("../../drills/missile-notification.toml"),
    ),
    (
        "war-remains-2018",
        include_str!("../../drills/war-remains-2018.toml"),
    ),
    (
        "tangier-1963",
        include_str!("../../drills/tangier-1963.toml"),
    ),
];

/// The text of bundled drill `name`.
pub fn text(name: &str) -> Option<&'static str> {
    DRILLS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Loads `arg`: a path to a scenario file, or else a bundled drill's name.
/// Returns the scenario and its text.
pub fn load(arg: &str) -> Result<(Scenario, String), ScenarioError> {
    let path = std::path::Path::new(arg);
    if path.exists() || arg.contains('/') || arg.ends_with(".toml") {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Parse {
            origin: arg.to_string(),
            message: e.to_string(),
        })?;
        let s = Scenario::parse(&text, arg)?;
        return Ok((s, text));
    }
    match text(arg) {
        Some(t) => Ok((Scenario::parse(t, &format!("bundled drill {arg}"))?, t.to_string())),
        None => Err(ScenarioError::Parse {
            origin: arg.to_string(),
            message: format!(
                "no such file, and no bundled drill of that name (bundled: {}; see `hotline drill list`)",
                DRILLS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_bundled_drill_parses_and_is_named_after_its_file() {
        for (name, text) in super::DRILLS {
            let s = super::Scenario::parse(text, name).unwrap();
            assert_eq!(&s.name, name);
            assert!(!s.description.is_empty() && !s.expect.is_empty());
        }
    }
}
