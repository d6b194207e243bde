//! A drill scenario file: strict parsing and validation must never panic,
//! and a scenario that parses must have a usable end time.
#![no_main]
use hotline::drill::Scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Scenario::parse(text, "fuzz") {
        let _ = s.end_ms();
        let _ = hotline::drill::script::timetable(&s);
    }
});
