//! The test vectors in docs/protocol.md are what the code produces. The
//! test reads the document itself, so the two cannot drift apart.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use hotline::wire::envelope::{self, Domain, KeyId};
use hotline::wire::proto::{
    frame::Body, Frame, Kind, Message, NackReason, NegativeReceipt, Precedence, Receipt,
};
use hotline::wire::{frame, sha256};
use prost::Message as _;

/// Parses the ```text blocks that start with `vector: NAME` into maps.
fn vectors() -> BTreeMap<String, BTreeMap<String, String>> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut current: Option<(String, BTreeMap<String, String>)> = None;
    let mut last_key = String::new();
    for line in doc.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("vector: ") {
            current = Some((name.to_string(), BTreeMap::new()));
            continue;
        }
        if line.starts_with("```") {
            if let Some((n, m)) = current.take() {
                out.insert(n, m);
            }
            continue;
        }
        if let Some((_, m)) = current.as_mut() {
            if let Some((k, v)) = line.split_once(": ") {
                if !k.starts_with(' ') {
                    last_key = k.trim().to_string();
                    m.insert(last_key.clone(), v.trim().to_string());
                    continue;
                }
            }
            // Continuation line of a long hex value.
            m.get_mut(&last_key).unwrap().push_str(line.trim());
        }
    }
    out
}

fn washington() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}
fn pyongyang() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

fn message() -> Message {
    Message {
        id: "0190f5a2c3d40000000000000000002a".into(),
        sequence: 1,
        from: "washington".into(),
        to: "pyongyang".into(),
        created_unix_ms: 1_720_000_000_000,
        precedence: Precedence::Flash as i32,
        kind: Kind::Notification as i32,
        thread: "".into(),
        reply_to: "".into(),
        subject: "Line check".into(),
        body: "Test message. Please acknowledge.".into(),
        language: "en".into(),
        exercise: true,
        response: 0,
        precedence_sequence: 1,
    }
}

fn computed() -> BTreeMap<String, BTreeMap<String, String>> {
    let msg_env = envelope::seal_proto(Domain::Message, &message(), &washington());
    let msg_frame = frame::encode(&Frame {
        body: Some(Body::Message(msg_env.clone())),
    });
    let receipt = Receipt {
        message_id: message().id,
        message_hash: sha256(&msg_env.payload).to_vec(),
        sequence: 1,
        from: "pyongyang".into(),
        to: "washington".into(),
        received_unix_ms: 1_720_000_000_250,
        log_index: 7,
        log_size: 8,
        log_root: vec![0xab; 32],
    };
    let r_env = envelope::seal_proto(Domain::Receipt, &receipt, &pyongyang());
    let r_frame = frame::encode(&Frame {
        body: Some(Body::Receipt(r_env.clone())),
    });
    let mut m = BTreeMap::new();
    m.insert(
        "message".to_string(),
        BTreeMap::from([
            ("signer_seed".to_string(), hex::encode([0x11u8; 32])),
            (
                "public_key".to_string(),
                hex::encode(washington().verifying_key().as_bytes()),
            ),
            (
                "key_id".to_string(),
                KeyId::of(&washington().verifying_key()).to_string(),
            ),
            ("payload".to_string(), hex::encode(&msg_env.payload)),
            (
                "payload_sha256".to_string(),
                hex::encode(sha256(&msg_env.payload)),
            ),
            ("signature".to_string(), hex::encode(&msg_env.signature)),
            ("frame".to_string(), hex::encode(&msg_frame)),
        ]),
    );
    // Sealing for the relay path: the message frame above, sealed to
    // pyongyang's seal key (derived from 32 bytes of 0x33) with ephemeral
    // key material of 32 bytes of 0x55.
    let header = hotline::wire::proto::RoutingHeader {
        from: "washington".into(),
        to: "pyongyang".into(),
        message_id: message().id,
        size: (msg_frame.len() - 4 + 16) as u64,
        relay: "stockholm".into(),
    };
    let (_, seal_pk) = hotline::wire::seal::derive_keypair(&[0x33; 32]);
    let inner = &msg_frame[4..]; // the encoded Frame, without the stream header
    let sealed =
        hotline::wire::seal::seal_with(&seal_pk, &header.encode_to_vec(), inner, |b| b.fill(0x55))
            .unwrap();
    m.insert(
        "sealed".to_string(),
        BTreeMap::from([
            ("recipient_seal_ikm".to_string(), hex::encode([0x33u8; 32])),
            ("recipient_seal_public".to_string(), hex::encode(seal_pk)),
            ("ephemeral_ikm".to_string(), hex::encode([0x55u8; 32])),
            ("header".to_string(), hex::encode(header.encode_to_vec())),
            ("enc".to_string(), hex::encode(&sealed.enc)),
            ("ciphertext".to_string(), hex::encode(&sealed.ciphertext)),
        ]),
    );
    m.insert(
        "receipt".to_string(),
        BTreeMap::from([
            ("signer_seed".to_string(), hex::encode([0x22u8; 32])),
            (
                "public_key".to_string(),
                hex::encode(pyongyang().verifying_key().as_bytes()),
            ),
            (
                "key_id".to_string(),
                KeyId::of(&pyongyang().verifying_key()).to_string(),
            ),
            ("payload".to_string(), hex::encode(&r_env.payload)),
            ("signature".to_string(), hex::encode(&r_env.signature)),
            ("frame".to_string(), hex::encode(&r_frame)),
        ]),
    );
    // A settling refusal of the same message: pyongyang refuses it for
    // good, which settles channel sequence 1 and FLASH precedence sequence 1
    // on both sides.
    let nack = NegativeReceipt {
        payload_hash: sha256(&msg_env.payload).to_vec(),
        message_id: message().id,
        sequence: 1,
        from: "pyongyang".into(),
        to: "washington".into(),
        time_unix_ms: 1_720_000_000_300,
        reason: NackReason::Malformed as i32,
        detail: "thread is 300 bytes; the limit is 256".into(),
        settles: true,
        precedence: Precedence::Flash as i32,
        precedence_sequence: 1,
    };
    let n_env = envelope::seal_proto(Domain::NegativeReceipt, &nack, &pyongyang());
    let n_frame = frame::encode(&Frame {
        body: Some(Body::NegativeReceipt(n_env.clone())),
    });
    m.insert(
        "negative_receipt".to_string(),
        BTreeMap::from([
            ("signer_seed".to_string(), hex::encode([0x22u8; 32])),
            ("payload".to_string(), hex::encode(&n_env.payload)),
            ("signature".to_string(), hex::encode(&n_env.signature)),
            ("frame".to_string(), hex::encode(&n_frame)),
        ]),
    );
    // A card update and its acceptance (§8d): washington replaces its
    // message, log and seal keys. The fingerprints and the certificate are
    // placeholders: the vector fixes the encoding and the signature, which
    // is by the old message key.
    let update = hotline::wire::proto::CardUpdate {
        office: "washington".into(),
        old_fingerprint: "1111-2222-3333-4444-5555".into(),
        new_fingerprint: "6666-7777-8888-9999-aaaa".into(),
        role: "office".into(),
        message_key: hex::encode(
            SigningKey::from_bytes(&[0x13; 32])
                .verifying_key()
                .as_bytes(),
        ),
        log_key: hex::encode(
            SigningKey::from_bytes(&[0x14; 32])
                .verifying_key()
                .as_bytes(),
        ),
        seal_key: hex::encode([0x56u8; 32]),
        node_cert_sha256: hex::encode([0xcdu8; 32]),
        ca_cert: "-----BEGIN CERTIFICATE-----\n(the office CA)\n-----END CERTIFICATE-----\n".into(),
        time_unix_ms: 1_720_000_001_000,
        old_message_key: hex::encode(washington().verifying_key().as_bytes()),
        old_log_key: hex::encode([0x12u8; 32]),
        old_seal_key: hex::encode([0x34u8; 32]),
        old_node_cert_sha256: hex::encode([0xcdu8; 32]),
    };
    let u_env = envelope::seal_proto(Domain::CardUpdate, &update, &washington());
    let u_frame = frame::encode(&Frame {
        body: Some(Body::CardUpdate(u_env.clone())),
    });
    m.insert(
        "card_update".to_string(),
        BTreeMap::from([
            ("signer_seed".to_string(), hex::encode([0x11u8; 32])),
            ("payload".to_string(), hex::encode(&u_env.payload)),
            ("signature".to_string(), hex::encode(&u_env.signature)),
            ("frame".to_string(), hex::encode(&u_frame)),
        ]),
    );
    let accepted = hotline::wire::proto::CardUpdateAccepted {
        from: "pyongyang".into(),
        to: "washington".into(),
        new_fingerprint: "6666-7777-8888-9999-aaaa".into(),
        time_unix_ms: 1_720_000_001_250,
    };
    let a_env = envelope::seal_proto(Domain::CardUpdateAccepted, &accepted, &pyongyang());
    let a_frame = frame::encode(&Frame {
        body: Some(Body::CardUpdateAccepted(a_env.clone())),
    });
    m.insert(
        "card_update_accepted".to_string(),
        BTreeMap::from([
            ("signer_seed".to_string(), hex::encode([0x22u8; 32])),
            ("payload".to_string(), hex::encode(&a_env.payload)),
            ("signature".to_string(), hex::encode(&a_env.signature)),
            ("frame".to_string(), hex::encode(&a_frame)),
        ]),
    );
    m
}

#[test]
fn documented_vectors_match_the_code() {
    let got = computed();
    if std::env::var("HOTLINE_PRINT_VECTORS").is_ok() {
        for (name, fields) in &got {
            println!("vector: {name}");
            for (k, v) in fields {
                println!("{k}: {v}");
            }
        }
    }
    let doc = vectors();
    for (name, fields) in &got {
        let documented = doc
            .get(name)
            .unwrap_or_else(|| panic!("docs/protocol.md has no vector {name:?}"));
        for (k, v) in fields {
            assert_eq!(documented.get(k), Some(v), "vector {name}, field {k}");
        }
    }
}

#[test]
fn documented_vectors_verify_independently() {
    // What an independent implementation would do with the documented bytes.
    let doc = vectors();
    let m = &doc["message"];
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &hex::decode(&m["public_key"]).unwrap().try_into().unwrap(),
    )
    .unwrap();
    let payload = hex::decode(&m["payload"]).unwrap();
    let mut signed = b"hotline/1 message".to_vec();
    signed.push(0);
    signed.extend_from_slice(&payload);
    let sig = ed25519_dalek::Signature::from_slice(&hex::decode(&m["signature"]).unwrap()).unwrap();
    key.verify_strict(&signed, &sig).unwrap();
    assert_eq!(Message::decode(payload.as_slice()).unwrap(), message());

    // The sealed vector opens with the recipient's key to the message frame.
    let v = &doc["sealed"];
    let ikm: [u8; 32] = hex::decode(&v["recipient_seal_ikm"])
        .unwrap()
        .try_into()
        .unwrap();
    let (sk, _) = hotline::wire::seal::derive_keypair(&ikm);
    let sealed = hotline::wire::seal::Sealed {
        enc: hex::decode(&v["enc"]).unwrap(),
        ciphertext: hex::decode(&v["ciphertext"]).unwrap(),
    };
    let inner =
        hotline::wire::seal::open(&sk, &hex::decode(&v["header"]).unwrap(), &sealed).unwrap();
    assert_eq!(hex::encode(inner), m["frame"][8..]);

    // The settling refusal verifies under pyongyang's key in its own domain
    // and names the message by the hash of its payload.
    let v = &doc["negative_receipt"];
    let key = SigningKey::from_bytes(&hex::decode(&v["signer_seed"]).unwrap().try_into().unwrap())
        .verifying_key();
    let payload = hex::decode(&v["payload"]).unwrap();
    let mut signed = b"hotline/1 negative-receipt".to_vec();
    signed.push(0);
    signed.extend_from_slice(&payload);
    let sig = ed25519_dalek::Signature::from_slice(&hex::decode(&v["signature"]).unwrap()).unwrap();
    key.verify_strict(&signed, &sig).unwrap();
    let n = NegativeReceipt::decode(payload.as_slice()).unwrap();
    assert!(n.settles);
    assert_eq!((n.sequence, n.precedence_sequence), (1, 1));
    assert_eq!(hex::encode(&n.payload_hash), m["payload_sha256"]);

    // The card update verifies under the office's current message key with
    // its own domain, and its acceptance under the peer's.
    for (name, domain) in [
        ("card_update", &b"hotline/1 card-update"[..]),
        (
            "card_update_accepted",
            &b"hotline/1 card-update-accepted"[..],
        ),
    ] {
        let v = &doc[name];
        let key =
            SigningKey::from_bytes(&hex::decode(&v["signer_seed"]).unwrap().try_into().unwrap())
                .verifying_key();
        let payload = hex::decode(&v["payload"]).unwrap();
        let mut signed = domain.to_vec();
        signed.push(0);
        signed.extend_from_slice(&payload);
        let sig =
            ed25519_dalek::Signature::from_slice(&hex::decode(&v["signature"]).unwrap()).unwrap();
        key.verify_strict(&signed, &sig).unwrap();
    }
    let u = hotline::wire::proto::CardUpdate::decode(
        hex::decode(&doc["card_update"]["payload"])
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        (u.office.as_str(), u.new_fingerprint.as_str()),
        ("washington", "6666-7777-8888-9999-aaaa")
    );
}
