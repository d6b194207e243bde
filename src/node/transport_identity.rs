//! What the transport presents and trusts, and how a card update changes
//! it while the node runs.
//!
//! The node certificate and the peers' pins live in one value behind a
//! `watch` channel. The accept loop and every dialer read the current one
//! for each connection; a small task hands each new value to quinn as the
//! endpoint's server configuration. Connections already up stay up: they
//! were authenticated under the value they started with.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use super::tls::{self, Pin};
use super::NodeError;
use crate::identity::OfficeName;

/// Our certificate and key, and the pins of every peer.
#[derive(Debug)]
pub struct TransportIdentity {
    /// Our node certificate.
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// What we accept from each peer.
    pub pins: Vec<Pin>,
}

impl TransportIdentity {
    /// The same with `peer`'s pin replaced.
    pub fn with_pin(&self, pin: Pin) -> TransportIdentity {
        TransportIdentity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            pins: self
                .pins
                .iter()
                .map(|p| {
                    if p.office == pin.office {
                        pin.clone()
                    } else {
                        p.clone()
                    }
                })
                .collect(),
        }
    }

    /// The same presenting another certificate.
    pub fn with_cert(&self, cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        TransportIdentity {
            cert,
            key,
            pins: self.pins.clone(),
        }
    }

    /// `peer`'s pin.
    pub fn pin(&self, peer: &OfficeName) -> Option<&Pin> {
        self.pins.iter().find(|p| &p.office == peer)
    }

    /// quinn's server configuration for it.
    pub fn server_config(
        &self,
        transport: &Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, NodeError> {
        let server_tls = tls::server_config(self.cert.clone(), self.key.clone_key(), &self.pins)?;
        let quic_server = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let mut c = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
        c.transport_config(transport.clone());
        c.max_incoming(super::MAX_INCOMING);
        Ok(c)
    }

    /// quinn's client configuration for dialing `peer`.
    pub fn client_config(
        &self,
        peer: &OfficeName,
        transport: &Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, NodeError> {
        let pin = self
            .pin(peer)
            .ok_or_else(|| NodeError::Internal(format!("no pin for {peer}")))?;
        let client = tls::client_config(self.cert.clone(), self.key.clone_key(), pin)?;
        let quic_client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let mut c = quinn::ClientConfig::new(Arc::new(quic_client));
        c.transport_config(transport.clone());
        Ok(c)
    }
}

/// The sending half, held by the actor.
pub type IdentityTx = watch::Sender<Arc<TransportIdentity>>;
/// A reading half.
pub type IdentityRx = watch::Receiver<Arc<TransportIdentity>>;

/// Hands every new identity to the endpoint as its server configuration.
pub async fn follow(
    endpoint: quinn::Endpoint,
    mut rx: IdentityRx,
    transport: Arc<quinn::TransportConfig>,
) {
    while rx.changed().await.is_ok() {
        let id = rx.borrow_and_update().clone();
        match id.server_config(&transport) {
            Ok(c) => endpoint.set_server_config(Some(c)),
            Err(e) => tracing::error!("could not use the new transport identity: {e}"),
        }
    }
}

/// The SHA-256 of the certificate the other side of `conn` presented.
pub fn presented_cert(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    Some(crate::wire::sha256(certs.first()?.as_ref()))
}
