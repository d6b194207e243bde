//! A signed envelope from the wire: decoding and verification must never
//! panic, and nothing but the holder of the key makes one that verifies.
#![no_main]
use ed25519_dalek::SigningKey;
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{Message, SignedEnvelope};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    // The seeds are signed by washington (seed 0x11); nobody holds 0x99.
    let washington = SigningKey::from_bytes(&[0x11; 32]).verifying_key();
    let nobody = SigningKey::from_bytes(&[0x99; 32]).verifying_key();
    let Ok(env) = SignedEnvelope::decode(data) else {
        return;
    };
    for domain in [Domain::Message, Domain::Receipt, Domain::LineCheck] {
        if envelope::verify(&env, domain, &nobody).is_ok() {
            panic!("a fuzzed envelope verified under a key nobody holds");
        }
        let _ = envelope::open::<Message>(&env, domain, &washington);
    }
    let _ = Message::decode(env.payload.as_slice());
});
