//! The office directory: where an office keeps its identity, config, peers
//! and log.
//!
//! ```text
//! DIR/hotline.toml            config (public)
//! DIR/office-card.toml        this office's card (public)
//! DIR/keys/message.key        Ed25519 message-signing key (0600)
//! DIR/keys/log.key            Ed25519 log/checkpoint key (0600)
//! DIR/tls/ca.crt, ca.key      the office's private CA (key 0600)
//! DIR/tls/node.crt, node.key  node certificate signed by the CA (key 0600)
//! DIR/control.token           bearer token for the control API (0600)
//! DIR/peers/NAME.card.toml    pinned peer cards
//! DIR/log/hotline.log         the append-only log, the node's only store: its
//! DIR/log/hotline.<I>.log       first segment, and the later ones (audit::segments)
//! DIR/log/history.redb        the history index (derived from the log)
//! DIR/log/tree.hashes         the log's Merkle hashes (derived)
//! DIR/log/snapshot            the node's state at a cosigned checkpoint (derived)
//! DIR/log/hotline.verified.json  `audit verify`'s state at a sealed segment
//! DIR/run/                    lock and control.addr while a node runs
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::card::{CardError, OfficeCard};
use super::config::{Config, PeerConfig};
use super::{files, keys, tls_material, OfficeName};

/// Errors setting up or loading an office directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// `init` was pointed at a directory that already holds an office.
    #[error("{0} already holds an office (hotline.toml exists); pick another --dir or delete it")]
    AlreadyInitialised(PathBuf),
    /// The directory holds no office.
    #[error("{0} holds no office (no hotline.toml); create one with `hotline init --office NAME --dir {0}`")]
    NotInitialised(PathBuf),
    /// The config file is not valid.
    #[error("{path} is invalid: {message}")]
    Config {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A card is unusable.
    #[error(transparent)]
    Card(#[from] CardError),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// A bad argument (name, address).
    #[error("{0}")]
    Invalid(String),
    /// The peer card names this office itself.
    #[error("card is for {0}, which is this office; add the other office's card")]
    SelfPeer(OfficeName),
    /// A different card is already pinned for this name.
    #[error("a different card is already pinned for {name} (fingerprint {old}, new {new}); confirm the new fingerprint with the peer by voice, then re-run with --replace")]
    PeerConflict {
        /// Peer name.
        name: OfficeName,
        /// Pinned fingerprint.
        old: String,
        /// Offered fingerprint.
        new: String,
    },
    /// A directory or file of the office that another local user could
    /// reach, or that the running user does not own.
    #[error("refusing to run: {0}")]
    NotPrivate(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths inside an office directory.
#[derive(Debug, Clone)]
pub struct OfficeDir {
    root: PathBuf,
}

/// The subdirectories `init` creates, each 0700.
const SUBDIRS: [&str; 5] = ["keys", "tls", "peers", "log", "run"];

impl OfficeDir {
    /// Wraps `root` (nothing is read).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OfficeDir { root: root.into() }
    }
    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `hotline.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("hotline.toml")
    }
    /// `office-card.toml`.
    pub fn card(&self) -> PathBuf {
        self.root.join("office-card.toml")
    }
    /// Message key.
    pub fn message_key(&self) -> PathBuf {
        self.root.join("keys/message.key")
    }
    /// Log key.
    pub fn log_key(&self) -> PathBuf {
        self.root.join("keys/log.key")
    }
    /// Seal key material (32 secret bytes from which the X25519 pair is derived).
    pub fn seal_key(&self) -> PathBuf {
        self.root.join("keys/seal.key")
    }
    /// TLS file `name` under `tls/`.
    pub fn tls(&self, name: &str) -> PathBuf {
        self.root.join("tls").join(name)
    }
    /// Control API token.
    pub fn control_token(&self) -> PathBuf {
        self.root.join("control.token")
    }
    /// Where a running node writes its control API address.
    pub fn control_addr(&self) -> PathBuf {
        self.root.join("run/control.addr")
    }
    /// Where a running node writes its QUIC address.
    pub fn quic_addr(&self) -> PathBuf {
        self.root.join("run/quic.addr")
    }
    /// The lock a running node holds.
    pub fn lock(&self) -> PathBuf {
        self.root.join("run/lock")
    }
    /// The log: its first segment, the path every log tool takes (the
    /// later segments sit beside it).
    pub fn log(&self) -> PathBuf {
        self.root.join("log/hotline.log")
    }
    /// The history index beside the log (derived from it, rebuilt when
    /// missing or damaged).
    pub fn history(&self) -> PathBuf {
        self.root.join("log/history.redb")
    }

    /// The running node's file of the log's Merkle hashes.
    pub fn tree_hashes(&self) -> PathBuf {
        self.root.join("log/tree.hashes")
    }
    /// The node's newest snapshot of its state (derived from the log; a
    /// damaged or missing one means a full replay at start).
    pub fn snapshot(&self) -> PathBuf {
        self.root.join("log/snapshot")
    }
    /// A pinned peer's card, relative path as stored in the config.
    pub fn peer_card_rel(name: &OfficeName) -> String {
        format!("peers/{name}.card.toml")
    }

    /// Refuses an office directory another local user could reach: the
    /// directory and its subdirectories must be this user's with no group
    /// or other permissions, and so must the secrets and the log (which
    /// holds every message). The error names the path and the `chmod` that
    /// fixes it. Nothing is changed.
    pub fn check_private(&self) -> Result<(), IdentityError> {
        let refuse = |e: std::io::Error| IdentityError::NotPrivate(e.to_string());
        files::check_private_dir(&self.root).map_err(refuse)?;
        for sub in SUBDIRS {
            let p = self.root.join(sub);
            if p.exists() {
                files::check_private_dir(&p).map_err(refuse)?;
            }
        }
        for f in [
            self.message_key(),
            self.log_key(),
            self.seal_key(),
            self.tls("ca.key"),
            self.tls("node.key"),
            self.control_token(),
            self.log(),
        ] {
            files::check_private_file(&f).map_err(refuse)?;
        }
        Ok(())
    }

    /// Creates a new office: keys, TLS material, token, config and card.
    pub fn init(&self, office: &OfficeName, listen: &str) -> Result<OfficeCard, IdentityError> {
        self.init_with_role(office, listen, "office")
    }

    /// Creates a new office or, with role `relay`, a relay.
    pub fn init_with_role(
        &self,
        office: &OfficeName,
        listen: &str,
        role: &str,
    ) -> Result<OfficeCard, IdentityError> {
        if role != "office" && role != "relay" {
            return Err(IdentityError::Invalid(format!(
                "--role {role:?}: use office or relay"
            )));
        }
        if self.config().exists() {
            return Err(IdentityError::AlreadyInitialised(self.root.clone()));
        }
        listen.parse::<SocketAddr>().map_err(|_| {
            IdentityError::Invalid(format!(
                "--listen {listen:?} is not HOST:PORT, e.g. 127.0.0.1:7701"
            ))
        })?;
        files::create_private_dir(&self.root).map_err(io(&self.root))?;
        for sub in SUBDIRS {
            let p = self.root.join(sub);
            files::create_private_dir(&p).map_err(io(&p))?;
        }

        let message = keys::generate();
        let log = keys::generate();
        keys::save(&self.message_key(), &message).map_err(io(&self.message_key()))?;
        keys::save(&self.log_key(), &log).map_err(io(&self.log_key()))?;
        let seal_ikm = keys::generate(); // 32 secret bytes, stored like the other keys
        keys::save(&self.seal_key(), &seal_ikm).map_err(io(&self.seal_key()))?;
        let (_, seal_public) = crate::wire::seal::derive_keypair(&seal_ikm.to_bytes());

        let tls = tls_material::generate(office)?;
        let write = |name: &str, data: &str, secret: bool| {
            let p = self.tls(name);
            if secret {
                files::write_secret(&p, data.as_bytes())
            } else {
                files::write_private(&p, data.as_bytes())
            }
            .map_err(io(&p))
        };
        write("ca.crt", &tls.ca_cert_pem, false)?;
        write("ca.key", &tls.ca_key_pem, true)?;
        write("node.crt", &tls.node_cert_pem, false)?;
        write("node.key", &tls.node_key_pem, true)?;

        let token = hex::encode(rand::random::<[u8; 32]>());
        files::write_secret(&self.control_token(), format!("{token}\n").as_bytes())
            .map_err(io(&self.control_token()))?;

        let node_der = CertificateDer::from_pem_slice(tls.node_cert_pem.as_bytes())
            .map_err(|e| IdentityError::Invalid(format!("generated node cert: {e}")))?;
        let card = OfficeCard::new(
            office.clone(),
            role,
            listen.to_string(),
            &message.verifying_key(),
            &log.verifying_key(),
            &seal_public,
            tls.ca_cert_pem.clone(),
            node_der.as_ref(),
        )?;
        files::write_private(&self.card(), card.to_toml().as_bytes()).map_err(io(&self.card()))?;
        let config = Config::new(office.clone(), listen.to_string());
        self.save_config(&config)?;
        Ok(card)
    }

    /// Reads the config.
    pub fn load_config(&self) -> Result<Config, IdentityError> {
        let path = self.config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotInitialised(self.root.clone()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        toml::from_str(&text).map_err(|e| IdentityError::Config {
            path,
            message: e.to_string(),
        })
    }

    /// Writes the config.
    pub fn save_config(&self, config: &Config) -> Result<(), IdentityError> {
        files::write_private(&self.config(), config.to_toml().as_bytes())
            .map_err(io(&self.config()))
    }

    /// This office's own card.
    pub fn load_card(&self) -> Result<OfficeCard, IdentityError> {
        if !self.config().exists() {
            return Err(IdentityError::NotInitialised(self.root.clone()));
        }
        Ok(OfficeCard::load(&self.card())?)
    }

    /// Pins a peer from its card. Returns the card and whether anything
    /// changed (re-adding the same card is a no-op).
    pub fn add_peer(
        &self,
        card_path: &Path,
        addr: Option<String>,
        replace: bool,
    ) -> Result<(OfficeCard, bool), IdentityError> {
        let mut config = self.load_config()?;
        let card = OfficeCard::load(card_path)?;
        if card.office == config.office {
            return Err(IdentityError::SelfPeer(card.office));
        }
        if let Some(a) = &addr {
            if !a.is_empty() && a.parse::<SocketAddr>().is_err() {
                return Err(IdentityError::Invalid(format!(
                    "--addr {a:?} is not HOST:PORT"
                )));
            }
        }
        let rel = Self::peer_card_rel(&card.office);
        let dest = self.root.join(&rel);
        if let Some(existing) = config.peers.get(card.office.as_str()) {
            let old = OfficeCard::load(&self.root.join(&existing.card))?;
            if old.fingerprint != card.fingerprint && !replace {
                return Err(IdentityError::PeerConflict {
                    name: card.office.clone(),
                    old: old.fingerprint,
                    new: card.fingerprint.clone(),
                });
            }
            if old == card && existing.addr == addr {
                return Ok((card, false));
            }
        }
        let (relays, confirm_card_updates) = config
            .peers
            .get(card.office.as_str())
            .map(|p| (p.relays.clone(), p.confirm_card_updates))
            .unwrap_or_default();
        let peers = self.root.join("peers");
        files::create_private_dir(&peers).map_err(io(&peers))?;
        files::write_private(&dest, card.to_toml().as_bytes()).map_err(io(&dest))?;
        config.peers.insert(
            card.office.to_string(),
            PeerConfig {
                card: rel,
                addr,
                relays,
                confirm_card_updates,
            },
        );
        self.save_config(&config)?;
        Ok((card, true))
    }

    /// The pinned peers named in `config`, with their cards checked.
    pub fn load_peers(&self, config: &Config) -> Result<Vec<Peer>, IdentityError> {
        let mut peers = Vec::new();
        for (name, pc) in &config.peers {
            let pcard = OfficeCard::load(&self.root.join(&pc.card))?;
            if pcard.office.as_str() != name {
                return Err(IdentityError::Invalid(format!(
                    "peer {name} in {} points at a card for {}",
                    self.config().display(),
                    pcard.office
                )));
            }
            let dial = match &pc.addr {
                Some(a) if a.is_empty() => None,
                Some(a) => Some(a.clone()),
                None => Some(pcard.address.clone()),
            };
            let addr = match dial {
                None => None,
                Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                    IdentityError::Invalid(format!("peer {name}: address {a:?} is not HOST:PORT"))
                })?),
            };
            peers.push(Peer {
                name: pcard.office.clone(),
                message_key: pcard.message_verifying_key()?,
                log_key: pcard.log_verifying_key()?,
                seal_key: pcard.seal_public()?,
                relays: pc
                    .relays
                    .iter()
                    .map(|r| OfficeName::new(r.clone()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| IdentityError::Invalid(format!("peer {name}: relays: {e}")))?,
                retiring_node_cert: super::rotation::read_retiring(self, &pcard.office),
                card: pcard,
                addr,
            });
        }
        Ok(peers)
    }

    /// Only the public half: config, own card, peers. Needs no secret, so
    /// audit commands work on a copy of a directory without its keys.
    pub fn load_public(&self) -> Result<(Config, OfficeCard, Vec<Peer>), IdentityError> {
        let config = self.load_config()?;
        let card = self.load_card()?;
        let peers = self.load_peers(&config)?;
        Ok((config, card, peers))
    }

    /// Loads everything a node needs.
    pub fn load(&self) -> Result<Office, IdentityError> {
        let config = self.load_config()?;
        let card = self.load_card()?;
        let message_key = keys::load(&self.message_key()).map_err(io(&self.message_key()))?;
        let log_key = keys::load(&self.log_key()).map_err(io(&self.log_key()))?;
        let seal_ikm = keys::load(&self.seal_key()).map_err(io(&self.seal_key()))?;
        let (seal_private, _) = crate::wire::seal::derive_keypair(&seal_ikm.to_bytes());
        let cert_path = self.tls("node.crt");
        let key_path = self.tls("node.key");
        let node_cert = CertificateDer::from_pem_file(&cert_path)
            .map_err(|e| IdentityError::Invalid(format!("{}: {e}", cert_path.display())))?;
        let key_pem = files::read_secret(&key_path).map_err(io(&key_path))?;
        let node_key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| IdentityError::Invalid(format!("{}: {e}", key_path.display())))?;
        let token_raw =
            files::read_secret(&self.control_token()).map_err(io(&self.control_token()))?;
        let control_token = String::from_utf8_lossy(&token_raw).trim().to_string();
        let peers = self.load_peers(&config)?;
        Ok(Office {
            dir: self.clone(),
            config,
            card,
            message_key,
            log_key,
            seal_private: zeroize::Zeroizing::new(seal_private),
            node_cert,
            node_key,
            control_token,
            peers,
        })
    }
}

/// A pinned peer office.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Name.
    pub name: OfficeName,
    /// Its card.
    pub card: OfficeCard,
    /// Its message-signing key.
    pub message_key: VerifyingKey,
    /// Its log (checkpoint) key.
    pub log_key: VerifyingKey,
    /// Its X25519 seal key.
    pub seal_key: [u8; 32],
    /// Relays that may carry messages to it (`relays = [...]` in the config).
    pub relays: Vec<OfficeName>,
    /// Where to dial it, if anywhere.
    pub addr: Option<SocketAddr>,
    /// The node certificate (SHA-256) of the card its last card update
    /// replaced, still trusted until it presents the new one
    /// (`peers/NAME.retiring`).
    pub retiring_node_cert: Option<[u8; 32]>,
}

/// Everything a node needs, loaded from its directory.
pub struct Office {
    /// Where it came from.
    pub dir: OfficeDir,
    /// Parsed config.
    pub config: Config,
    /// Own card.
    pub card: OfficeCard,
    /// Message-signing key.
    pub message_key: SigningKey,
    /// Log key.
    pub log_key: SigningKey,
    /// X25519 private key for opening sealed (relayed) messages.
    pub seal_private: zeroize::Zeroizing<[u8; 32]>,
    /// Node certificate.
    pub node_cert: CertificateDer<'static>,
    /// Node private key.
    pub node_key: PrivateKeyDer<'static>,
    /// Control API bearer token.
    pub control_token: String,
    /// Pinned peers.
    pub peers: Vec<Peer>,
}

// By hand: the TLS key is cloned with `clone_key`. Secrets stay in memory
// only (a node keeps one copy to rebuild its core after a fault).
impl Clone for Office {
    fn clone(&self) -> Self {
        Office {
            dir: self.dir.clone(),
            config: self.config.clone(),
            card: self.card.clone(),
            message_key: self.message_key.clone(),
            log_key: self.log_key.clone(),
            seal_private: self.seal_private.clone(),
            node_cert: self.node_cert.clone(),
            node_key: self.node_key.clone_key(),
            control_token: self.control_token.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl std::fmt::Debug for Office {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys or the token.
        f.debug_struct("Office")
            .field("dir", &self.dir.root())
            .field("office", &self.config.office)
            .field(
                "peers",
                &self.peers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_load_and_pin() {
        let t = tempfile::tempdir().unwrap();
        let a = OfficeDir::new(t.path().join("a"));
        let b = OfficeDir::new(t.path().join("b"));
        let wash = OfficeName::new("washington").unwrap();
        let pyong = OfficeName::new("pyongyang").unwrap();
        a.init(&wash, "127.0.0.1:7701").unwrap();
        b.init(&pyong, "127.0.0.1:7702").unwrap();
        assert!(matches!(
            a.init(&wash, "127.0.0.1:7701"),
            Err(IdentityError::AlreadyInitialised(_))
        ));
        for secret in [
            a.seal_key(),
            a.message_key(),
            a.log_key(),
            a.tls("ca.key"),
            a.tls("node.key"),
            a.control_token(),
        ] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
        let (card, changed) = a.add_peer(&b.card(), None, false).unwrap();
        assert!(changed);
        assert_eq!(card.office, pyong);
        assert!(!a.add_peer(&b.card(), None, false).unwrap().1);
        assert!(matches!(
            a.add_peer(&a.card(), None, false),
            Err(IdentityError::SelfPeer(_))
        ));
        let office = a.load().unwrap();
        assert_eq!(office.peers.len(), 1);
        assert_eq!(
            office.peers[0].addr,
            Some("127.0.0.1:7702".parse().unwrap())
        );
        assert_eq!(
            office.card.message_verifying_key().unwrap(),
            office.message_key.verifying_key()
        );

        // A different card under the same name needs --replace.
        let c = OfficeDir::new(t.path().join("c"));
        c.init(&pyong, "127.0.0.1:7703").unwrap();
        assert!(matches!(
            a.add_peer(&c.card(), None, false),
            Err(IdentityError::PeerConflict { .. })
        ));
        assert!(a.add_peer(&c.card(), None, true).unwrap().1);
    }

    #[test]
    fn a_relay_is_an_office_with_role_relay_and_peers_name_it_as_a_route() {
        let t = tempfile::tempdir().unwrap();
        let wash = OfficeDir::new(t.path().join("w"));
        let sto = OfficeDir::new(t.path().join("s"));
        let pyong = OfficeDir::new(t.path().join("p"));
        wash.init(&OfficeName::new("washington").unwrap(), "127.0.0.1:1")
            .unwrap();
        pyong
            .init(&OfficeName::new("pyongyang").unwrap(), "127.0.0.1:2")
            .unwrap();
        let card = sto
            .init_with_role(
                &OfficeName::new("stockholm").unwrap(),
                "127.0.0.1:3",
                "relay",
            )
            .unwrap();
        assert!(card.is_relay());
        assert!(matches!(
            wash.init_with_role(&OfficeName::new("x").unwrap(), "127.0.0.1:4", "spy"),
            Err(IdentityError::AlreadyInitialised(_)) | Err(IdentityError::Invalid(_))
        ));
        wash.add_peer(&sto.card(), None, false).unwrap();
        wash.add_peer(&pyong.card(), None, false).unwrap();
        let mut cfg = wash.load_config().unwrap();
        cfg.peers.get_mut("pyongyang").unwrap().relays = vec!["stockholm".into()];
        wash.save_config(&cfg).unwrap();
        // Re-adding the peer's card keeps its routes.
        wash.add_peer(&pyong.card(), Some("127.0.0.1:9".into()), false)
            .unwrap();
        let office = wash.load().unwrap();
        let p = office
            .peers
            .iter()
            .find(|p| p.name.as_str() == "pyongyang")
            .unwrap();
        assert_eq!(p.relays, vec![OfficeName::new("stockholm").unwrap()]);
        // The seal key on the card is the public half of the stored secret.
        let py = pyong.load().unwrap();
        let (_, public) =
            crate::wire::seal::derive_keypair(&keys::load(&pyong.seal_key()).unwrap().to_bytes());
        assert_eq!(p.seal_key, public);
        let sealed = crate::wire::seal::seal(&p.seal_key, b"h", b"x").unwrap();
        assert_eq!(
            crate::wire::seal::open(py.seal_private.as_ref(), b"h", &sealed).unwrap(),
            b"x"
        );
    }

    #[test]
    fn edited_card_is_refused_and_loose_secret_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let a = OfficeDir::new(t.path());
        a.init(&OfficeName::new("washington").unwrap(), "127.0.0.1:1")
            .unwrap();
        let text = std::fs::read_to_string(a.card()).unwrap();
        let card = OfficeCard::from_toml(&text, "x").unwrap();
        let forged = text.replace(&card.message_key, &"11".repeat(32));
        assert!(matches!(
            OfficeCard::from_toml(&forged, "x"),
            Err(CardError::Fingerprint { .. }) | Err(CardError::Field { .. })
        ));
        std::fs::set_permissions(a.message_key(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = a.load().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
