//! Micro-benchmarks of the pieces every message goes through, each beside
//! the primitive it is built on, so a regression shows as a ratio:
//! `cargo bench --bench micro`. The end-to-end figures are `hotline bench`
//! (docs/performance.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hotline::audit::merkle::Frontier;
use hotline::wire::envelope::{self, Domain};
use hotline::wire::proto::{frame::Body, Frame, Message, Precedence};
use hotline::wire::{frame, seal, FrameBuf};
use prost::Message as _;

fn message() -> Message {
    Message {
        id: "0190f5a2c3d40000000000000000002a".into(),
        sequence: 1,
        from: "washington".into(),
        to: "pyongyang".into(),
        created_unix_ms: 1_720_000_000_000,
        precedence: Precedence::Flash as i32,
        subject: "Line check".into(),
        body: "x".repeat(256),
        language: "en".into(),
        precedence_sequence: 1,
        ..Default::default()
    }
}

fn signatures(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let vk = key.verifying_key();
    let payload = message().encode_to_vec();
    let mut g = c.benchmark_group("signatures");
    g.bench_function("ed25519 sign (floor)", |b| {
        b.iter(|| key.sign(black_box(&payload)))
    });
    g.bench_function("envelope seal", |b| {
        b.iter(|| envelope::seal_proto(Domain::Message, black_box(&message()), &key))
    });
    let sig = key.sign(&payload);
    g.bench_function("ed25519 verify (floor)", |b| {
        b.iter(|| vk.verify(black_box(&payload), &sig).unwrap())
    });
    let env = envelope::seal_proto(Domain::Message, &message(), &key);
    g.bench_function("envelope open", |b| {
        b.iter(|| envelope::open::<Message>(black_box(&env), Domain::Message, &vk).unwrap())
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let f = Frame {
        body: Some(Body::Message(envelope::seal_proto(
            Domain::Message,
            &message(),
            &key,
        ))),
    };
    let bytes = frame::encode(&f);
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("frame encode", |b| b.iter(|| frame::encode(black_box(&f))));
    g.bench_function("frame check-then-parse", |b| {
        b.iter(|| {
            let mut fb = FrameBuf::new();
            fb.extend(black_box(&bytes));
            fb.next_frame().unwrap().unwrap()
        })
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let leaf = vec![7u8; 400];
    let mut g = c.benchmark_group("merkle");
    g.bench_function("sha256 of a 400-byte entry (floor)", |b| {
        b.iter(|| hotline::wire::sha256(black_box(&leaf)))
    });
    g.bench_function("frontier push + root, 400-byte entry", |b| {
        let mut t = Frontier::new();
        b.iter(|| {
            t.push(black_box(&leaf));
            t.root()
        })
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let (sk, pk) = seal::derive_keypair(&[0x33; 32]);
    let inner = frame::encode(&Frame {
        body: Some(Body::Message(envelope::seal_proto(
            Domain::Message,
            &message(),
            &SigningKey::from_bytes(&[0x11; 32]),
        ))),
    });
    let mut g = c.benchmark_group("relay sealing");
    g.bench_function("hpke seal", |b| {
        b.iter(|| seal::seal(&pk, b"header", black_box(&inner)).unwrap())
    });
    let s = seal::seal(&pk, b"header", &inner).unwrap();
    g.bench_function("hpke open", |b| {
        b.iter(|| seal::open(&sk, b"header", black_box(&s)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, signatures, framing, merkle, sealing);
criterion_main!(benches);
