//! A checkpoint note with cosignatures, as a peer sends it: parsing,
//! opening and cosignature checks must never panic, and nothing verifies
//! under keys the fuzzer does not hold.
#![no_main]
use ed25519_dalek::SigningKey;
use hotline::audit::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x22; 32]).verifying_key();
    let _ = checkpoint::peek(data);
    let _ = checkpoint::signers(data);
    if let Some((origin, _, _)) = checkpoint::peek(data) {
        assert!(checkpoint::open(data, &origin, &key).is_err());
        assert!(checkpoint::verify_cosignature(data, &origin, &key).is_err());
    }
});
