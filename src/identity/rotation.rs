//! The files of a certificate rotation (docs/operations.md, "Rotating the
//! node certificate"; the wire side is docs/protocol.md §8d).
//!
//! ```text
//! tls/node.next.crt, tls/node.next.key   the new certificate, made from the CA key
//! keys/{message,log,seal}.next.key       new keys (`hotline rotate keys`)
//! office-card.next.toml                  the card that pins them
//! keys/seal.previous.key                 the seal key a key rotation replaced: it
//!                                        still opens frames sealed before peers
//!                                        learned the new one
//! peers/NAME.retiring                    a peer's replaced certificate (hex SHA-256),
//!                                        trusted until it presents the new one
//! ```
//!
//! The node keeps presenting its old certificate until every peer has
//! accepted the new card; then [`switch`] renames the three `next` files
//! over the live ones, key first and card last. A crash between renames
//! leaves a state [`finish_switch`] recognises and completes at the next
//! start.

use std::path::Path;

use rustls::pki_types::{pem::PemObject, CertificateDer};

use super::{files, tls_material, IdentityError, OfficeCard, OfficeDir, OfficeName};
use crate::wire::sha256;

/// Which of the office's keys a key rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChoice {
    /// The message key.
    pub message: bool,
    /// The log key.
    pub log: bool,
    /// The seal key.
    pub seal: bool,
}

impl KeyChoice {
    /// All three.
    pub const ALL: KeyChoice = KeyChoice {
        message: true,
        log: true,
        seal: true,
    };

    /// From key names (`message`, `log`, `seal`); none named means all.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        if names.is_empty() {
            return Ok(Self::ALL);
        }
        let mut c = KeyChoice {
            message: false,
            log: false,
            seal: false,
        };
        for n in names {
            match n.as_ref() {
                "message" => c.message = true,
                "log" => c.log = true,
                "seal" => c.seal = true,
                other => {
                    return Err(format!(
                        "{} is not a key (expected message, log or seal)",
                        crate::text::quote(other, 32)
                    ))
                }
            }
        }
        Ok(c)
    }

    /// The names chosen, in words.
    pub fn names(self) -> String {
        let v: Vec<&str> = [
            (self.message, "message"),
            (self.log, "log"),
            (self.seal, "seal"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        match v.as_slice() {
            [one] => format!("{one} key"),
            [init @ .., last] => format!("{} and {last} keys", init.join(", ")),
            [] => "no keys".into(),
        }
    }
}

/// What a rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The node certificate, reissued by the same CA.
    Cert,
    /// Some or all of the message, log and seal keys.
    Keys(KeyChoice),
}

impl Rotation {
    /// In words, for messages.
    pub fn what(self) -> String {
        match self {
            Rotation::Cert => "a new node certificate".into(),
            Rotation::Keys(k) => format!("a new {}", k.names()),
        }
    }
}

/// The next card's path.
pub fn next_card(dir: &OfficeDir) -> std::path::PathBuf {
    dir.root().join("office-card.next.toml")
}

fn retiring_path(dir: &OfficeDir, peer: &OfficeName) -> std::path::PathBuf {
    dir.root().join("peers").join(format!("{peer}.retiring"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |e| IdentityError::Invalid(format!("{}: {e}", path.display()))
}

/// Issues a new node certificate from the office's CA key and writes it
/// with the card that pins it as the `next` files. Returns the new card
/// (the address and keys are the current card's).
pub fn prepare_cert(dir: &OfficeDir, current: &OfficeCard) -> Result<OfficeCard, IdentityError> {
    clear_next(dir)?;
    let ca_key_path = dir.tls("ca.key");
    let ca_key = files::read_secret(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = String::from_utf8(ca_key)
        .map_err(|_| IdentityError::Invalid(format!("{}: not PEM", ca_key_path.display())))?;
    let (cert_pem, key_pem) = tls_material::reissue_node_cert(&current.office, &ca_key)
        .map_err(|e| IdentityError::Invalid(format!("issuing a node certificate: {e}")))?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| IdentityError::Invalid(format!("new node certificate: {e}")))?;
    let mut card = current.clone();
    card.node_cert_sha256 = hex::encode(sha256(der.as_ref()));
    card.fingerprint = card.compute_fingerprint()?;
    let (crt, key, next) = (
        dir.tls("node.next.crt"),
        dir.tls("node.next.key"),
        next_card(dir),
    );
    files::write_secret(&key, key_pem.as_bytes()).map_err(io(&key))?;
    files::write_private(&crt, cert_pem.as_bytes()).map_err(io(&crt))?;
    files::write_private(&next, card.to_toml().as_bytes()).map_err(io(&next))?;
    Ok(card)
}

/// The three key files of a key rotation: (live, next).
fn key_files(dir: &OfficeDir) -> [(std::path::PathBuf, std::path::PathBuf); 3] {
    let next = |p: std::path::PathBuf| p.with_extension("next.key");
    [
        (dir.message_key(), next(dir.message_key())),
        (dir.log_key(), next(dir.log_key())),
        (dir.seal_key(), next(dir.seal_key())),
    ]
}

/// Removes the `next` files an earlier rotation left without offering
/// them (so that a switch renames only what this one prepared).
fn clear_next(dir: &OfficeDir) -> Result<(), IdentityError> {
    let [(_, m), (_, l), (_, s)] = key_files(dir);
    for p in [
        next_card(dir),
        m,
        l,
        s,
        dir.tls("node.next.key"),
        dir.tls("node.next.crt"),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p)(e)),
        }
    }
    Ok(())
}

/// The seal key a key rotation replaced.
pub fn previous_seal_key(dir: &OfficeDir) -> std::path::PathBuf {
    dir.seal_key().with_extension("previous.key")
}

/// New keys (those `which` names), written as the `next` key files with
/// the card that holds them (the node certificate and the other keys
/// stay). Returns the new card.
pub fn prepare_keys(
    dir: &OfficeDir,
    current: &OfficeCard,
    which: KeyChoice,
) -> Result<OfficeCard, IdentityError> {
    clear_next(dir)?;
    let [(_, m), (_, l), (_, s)] = key_files(dir);
    let mut card = current.clone();
    if which.message {
        let key = super::keys::generate();
        super::keys::save(&m, &key).map_err(io(&m))?;
        card.message_key = hex::encode(key.verifying_key().as_bytes());
    }
    if which.log {
        let key = super::keys::generate();
        super::keys::save(&l, &key).map_err(io(&l))?;
        card.log_key = hex::encode(key.verifying_key().as_bytes());
    }
    if which.seal {
        let ikm = super::keys::generate();
        super::keys::save(&s, &ikm).map_err(io(&s))?;
        let (_, public) = crate::wire::seal::derive_keypair(&ikm.to_bytes());
        card.seal_key = hex::encode(public);
    }
    card.fingerprint = card.compute_fingerprint()?;
    let next = next_card(dir);
    files::write_private(&next, card.to_toml().as_bytes()).map_err(io(&next))?;
    Ok(card)
}

/// The X25519 secrets that still open frames sealed to this office
/// besides its current seal key: the one a key rotation replaced and the
/// one a pending rotation introduces.
pub fn extra_seal_secrets(dir: &OfficeDir) -> Vec<[u8; 32]> {
    let [_, _, (_, next)] = key_files(dir);
    [previous_seal_key(dir), next]
        .iter()
        .filter(|p| p.exists())
        .filter_map(|p| super::keys::load(p).ok())
        .map(|ikm| crate::wire::seal::derive_keypair(&ikm.to_bytes()).0)
        .collect()
}

/// The `next` card, if a rotation is prepared.
pub fn load_next(dir: &OfficeDir) -> Option<OfficeCard> {
    OfficeCard::load(&next_card(dir)).ok()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Makes the prepared certificate or keys and the card the live ones.
/// The replaced seal key is kept as `keys/seal.previous.key`; the
/// replaced message and log keys are gone (nothing is signed with them
/// again).
pub fn switch(dir: &OfficeDir) -> Result<(), IdentityError> {
    for (from, to) in [
        (dir.tls("node.next.key"), dir.tls("node.key")),
        (dir.tls("node.next.crt"), dir.tls("node.crt")),
    ] {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(io(&from))?;
        }
    }
    let tls = dir.tls("");
    sync_dir(&tls).map_err(io(&tls))?;
    let [message, log, (seal, seal_next)] = key_files(dir);
    for (live, next) in [message, log] {
        if next.exists() {
            std::fs::rename(&next, &live).map_err(io(&next))?;
        }
    }
    if seal_next.exists() {
        if seal.exists() {
            let previous = previous_seal_key(dir);
            std::fs::rename(&seal, &previous).map_err(io(&seal))?;
        }
        std::fs::rename(&seal_next, &seal).map_err(io(&seal_next))?;
    }
    let keys = dir.message_key();
    if let Some(keys) = keys.parent() {
        sync_dir(keys).map_err(io(keys))?;
    }
    let next = next_card(dir);
    std::fs::rename(&next, dir.card()).map_err(io(&next))?;
    sync_dir(dir.root()).map_err(io(dir.root()))?;
    Ok(())
}

/// Completes a switch a crash interrupted. The `prepare_` functions write
/// the new files and then the card, and [`switch`] renames them in that
/// order: a `next` card without every file it needs beside it means a
/// switch began. Returns whether it did anything.
pub fn finish_switch(dir: &OfficeDir) -> Result<bool, IdentityError> {
    let (Some(next), Ok(current)) = (load_next(dir), dir.load_card()) else {
        return Ok(false);
    };
    let cert_files = !dir.tls("node.next.key").exists() || !dir.tls("node.next.crt").exists();
    let [(_, m), (_, l), (_, s)] = key_files(dir);
    let changed = |a: &str, b: &str| !a.eq_ignore_ascii_case(b);
    let began = (next.node_cert_sha256 != current.node_cert_sha256 && cert_files)
        || (changed(&next.message_key, &current.message_key) && !m.exists())
        || (changed(&next.log_key, &current.log_key) && !l.exists())
        || (changed(&next.seal_key, &current.seal_key) && !s.exists());
    if began {
        switch(dir)?;
    }
    Ok(began)
}

/// Stores a peer's new card (keeping the address its current card gives)
/// and remembers the certificate it replaces as retiring.
pub fn store_peer_card(dir: &OfficeDir, card: &OfficeCard) -> Result<(), IdentityError> {
    let path = dir.root().join(OfficeDir::peer_card_rel(&card.office));
    let old = OfficeCard::load(&path)?;
    let mut card = card.clone();
    card.address = old.address.clone();
    if old.node_cert_sha256 != card.node_cert_sha256 {
        let retiring = retiring_path(dir, &card.office);
        files::write_private(&retiring, format!("{}\n", old.node_cert_sha256).as_bytes())
            .map_err(io(&retiring))?;
    }
    files::write_private(&path, card.to_toml().as_bytes()).map_err(io(&path))?;
    Ok(())
}

/// The retiring certificate of `peer`, if any.
pub fn read_retiring(dir: &OfficeDir, peer: &OfficeName) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(retiring_path(dir, peer)).ok()?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut h).ok()?;
    Some(h)
}

/// Stops trusting `peer`'s retiring certificate (it presented the new one).
pub fn drop_retiring(dir: &OfficeDir, peer: &OfficeName) -> Result<(), IdentityError> {
    let path = retiring_path(dir, peer);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&path)(e)),
    }
}
