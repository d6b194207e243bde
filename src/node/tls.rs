//! TLS 1.3 configuration with per-office pinning.
//!
//! There is no shared CA. The accepting side trusts exactly the CAs on its
//! pinned peers' cards; the dialing side trusts exactly the CA of the peer it
//! dials. In both directions a certificate that chains to a peer's CA is
//! accepted only if it is the very node certificate that peer's card names
//! (SHA-256 pin), so a CA key stolen from an office cannot mint a second
//! identity for it. One crypto provider (ring) serves rustls, quinn and
//! rcgen.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::identity::{OfficeName, Peer};
use crate::wire::{sha256, ALPN};

/// The crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a pinned peer contributes to verification.
#[derive(Debug, Clone)]
pub struct Pin {
    /// Office name.
    pub office: OfficeName,
    /// Its CA.
    pub ca: CertificateDer<'static>,
    /// Node certificates (SHA-256) accepted: the card's first, then one
    /// its last card update retired, until the peer presents the new one.
    pub node_certs: Vec<[u8; 32]>,
}

impl Pin {
    /// The pin for a loaded peer.
    pub fn of(peer: &Peer) -> Result<Pin, crate::identity::CardError> {
        Ok(Pin {
            office: peer.name.clone(),
            ca: peer.card.ca_cert_der()?,
            node_certs: std::iter::once(peer.card.node_cert_hash())
                .chain(peer.retiring_node_cert)
                .collect(),
        })
    }
}

/// Error text used when a certificate chains to a pinned CA but is not the
/// card's node certificate. Logs and tests look for "card mismatch".
pub const CARD_MISMATCH: &str = "card mismatch";

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut store = RootCertStore::empty();
    store
        .add(ca.clone())
        .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
    Ok(Arc::new(store))
}

/// Server side: accept a client certificate from any pinned office.
#[derive(Debug)]
struct PinnedClients {
    per_peer: Vec<(Pin, Arc<dyn ClientCertVerifier>)>,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let hash = sha256(end_entity.as_ref());
        for (pin, verifier) in &self.per_peer {
            if verifier
                .verify_client_cert(end_entity, intermediates, now)
                .is_ok()
            {
                if pin.node_certs.contains(&hash) {
                    return Ok(ClientCertVerified::assertion());
                }
                tracing::warn!(
                    peer = %pin.office,
                    "{CARD_MISMATCH}: certificate chains to {}'s CA but is not the node certificate on its card",
                    pin.office
                );
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client side: the server must be the one pinned office we dial.
#[derive(Debug)]
struct PinnedServer {
    pin: Pin,
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if !self.pin.node_certs.contains(&sha256(end_entity.as_ref())) {
            tracing::warn!(
                peer = %self.pin.office,
                "{CARD_MISMATCH}: {} presented a certificate from its CA that is not the node certificate on its card",
                self.pin.office
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The listening side's config: our node certificate, client auth required
/// from a pinned office.
pub fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pins: &[Pin],
) -> Result<ServerConfig, rustls::Error> {
    let provider = provider();
    let mut per_peer = Vec::new();
    let mut hints = Vec::new();
    for pin in pins {
        let v = WebPkiClientVerifier::builder_with_provider(roots(&pin.ca)?, provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        hints.extend(v.root_hint_subjects().iter().cloned());
        per_peer.push((pin.clone(), v));
    }
    let verifier = Arc::new(PinnedClients {
        per_peer,
        hints,
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The dialing side's config for one pinned peer.
pub fn client_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pin: &Pin,
) -> Result<ClientConfig, rustls::Error> {
    client_config_with_alpn(cert, key, pin, ALPN)
}

/// As [`client_config`] with another ALPN (tests use it to act as a peer
/// speaking the wrong protocol).
pub fn client_config_with_alpn(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pin: &Pin,
    alpn: &[u8],
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(&pin.ca)?,
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = Arc::new(PinnedServer {
        pin: pin.clone(),
        inner,
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// Why a handshake failed, sorted into what an operator must see and what
/// is noise. A failure that *presents an identity* (a certificate that
/// chains to no pinned CA, one that chains but is not on the card) is
/// someone trying to be an office; the rest (timeouts, wrong ALPN, a
/// client with no certificate, junk) is what any open UDP port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeFailure {
    /// The certificate chains to no pinned office CA.
    UnknownCa,
    /// It chains to an office CA but is not the node certificate on the card.
    CardMismatch,
    /// Not valid for the office dialed.
    BadCertificate,
    /// A verified certificate that matches no pinned card.
    NoCard,
    /// The other side does not speak `hotline/1`.
    WrongAlpn,
    /// The other side refused the connection (stopping, or full).
    PeerRefusing,
    /// No answer in time.
    TimedOut,
    /// Anything else (a client with no certificate, junk).
    Other,
}

impl HandshakeFailure {
    /// Sorts a transport error text (quinn's `Debug` of the error).
    pub fn classify(error: &str) -> Self {
        let e = error.to_ascii_lowercase();
        // TLS alerts travel as QUIC CRYPTO_ERROR 0x100 + alert, which quinn
        // prints as `crypto(XX)` with the alert in hex.
        let has = |needles: &[&str]| needles.iter().any(|n| e.contains(n));
        if has(&["unknownissuer", "unknown_ca", "unknownca", "crypto(30)"]) {
            Self::UnknownCa
        } else if has(&[
            "applicationverificationfailure",
            "access_denied",
            "accessdenied",
            "0x131",
        ]) {
            Self::CardMismatch
        } else if has(&[
            "no_application_protocol",
            "noapplicationprotocol",
            "crypto(78)",
            "known protocol",
        ]) {
            Self::WrongAlpn
        } else if has(&[
            "notvalidforname",
            "0x12a",
            "bad_certificate",
            "badcertificate",
        ]) {
            Self::BadCertificate
        } else if has(&["connection_refused"]) {
            Self::PeerRefusing
        } else if has(&["timedout", "timed out"]) {
            Self::TimedOut
        } else if has(&["matches no card"]) {
            Self::NoCard
        } else {
            Self::Other
        }
    }

    /// Whether the other side presented a certificate that claims, or
    /// comes close to, an office identity: kept apart from noise.
    pub fn presents_identity(self) -> bool {
        matches!(
            self,
            Self::UnknownCa | Self::CardMismatch | Self::BadCertificate | Self::NoCard
        )
    }

    /// A short stable name, for `--json` and grouping.
    pub fn slug(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown-ca",
            Self::CardMismatch => "card-mismatch",
            Self::BadCertificate => "bad-certificate",
            Self::NoCard => "no-card",
            Self::WrongAlpn => "wrong-alpn",
            Self::PeerRefusing => "peer-refusing",
            Self::TimedOut => "timed-out",
            Self::Other => "handshake-failed",
        }
    }

    /// The reason in words, for the line an operator reads.
    pub fn explain(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown CA: the certificate does not chain to any pinned office CA",
            Self::CardMismatch => "card mismatch: the certificate chains to the office's CA but is not the node certificate on its card",
            Self::WrongAlpn => "wrong ALPN: the peer does not speak hotline/1",
            Self::BadCertificate => "bad certificate: not valid for the office dialed",
            Self::PeerRefusing => {
                "the peer is not accepting connections (stopping or at its connection limit)"
            }
            Self::TimedOut => "no answer (timed out)",
            Self::NoCard => "the certificate matches no pinned card",
            Self::Other => "handshake failed",
        }
    }
}

/// Names the reason a handshake failed, for the log line an operator reads.
pub fn explain_handshake_failure(error: &str) -> &'static str {
    HandshakeFailure::classify(error).explain()
}
