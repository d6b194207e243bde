//! Bytes of a log file: the record framer (length, CRC-32, entry) must
//! never panic, and an entry it accepts must decode or be refused cleanly.
#![no_main]
use hotline::audit::record;
use hotline::wire::proto::LogEntry;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((entry, used)) = record::check(rest) {
        let _ = LogEntry::decode(entry);
        let mut again = Vec::new();
        record::frame(entry, &mut again).expect("a checked entry frames again");
        assert_eq!(&again[..], &rest[..used]);
        if used == 0 || used > rest.len() {
            break;
        }
        rest = &rest[used..];
    }
});
