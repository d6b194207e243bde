//! The files of a certificate rotation (docs/operations.md, "Rotating the
//! node certificate"; the wire side is docs/protocol.md §8d).
//!
//! ```text
//! tls/node.next.crt, tls/node.next.key   the new certificate, made from the CA key
//! office-card.next.toml                  the card that pins it
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

/// The `next` card, if a rotation is prepared.
pub fn load_next(dir: &OfficeDir) -> Option<OfficeCard> {
    OfficeCard::load(&next_card(dir)).ok()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Makes the prepared certificate and card the live ones.
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
    let next = next_card(dir);
    std::fs::rename(&next, dir.card()).map_err(io(&next))?;
    sync_dir(dir.root()).map_err(io(dir.root()))?;
    Ok(())
}

/// Completes a switch a crash interrupted. `prepare_cert` writes the
/// key, the certificate and then the card, and [`switch`] renames them in
/// that order: a `next` card without its key or certificate beside it
/// means a switch began. Returns whether it did anything.
pub fn finish_switch(dir: &OfficeDir) -> Result<bool, IdentityError> {
    if !next_card(dir).exists() {
        return Ok(false);
    }
    let began = !dir.tls("node.next.key").exists() || !dir.tls("node.next.crt").exists();
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
    let retiring = retiring_path(dir, &card.office);
    files::write_private(&retiring, format!("{}\n", old.node_cert_sha256).as_bytes())
        .map_err(io(&retiring))?;
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
