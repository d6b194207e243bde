//! Crisis drills: scenario files (this step), and later the live and
//! simulated runners, reports and replay.

pub mod duration;
pub mod scenario;

pub use scenario::{Scenario, ScenarioError};
