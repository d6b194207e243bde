//! Accepting and dialing connections.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use quinn::VarInt;
use rand::Rng;
use tokio::sync::watch;

use super::actor::{ActorTx, Input};
use super::link::{self, close_code};
use super::tls::Pin;
use super::transport_identity::{presented_cert, IdentityRx};
use crate::identity::OfficeName;

/// Accepts connections until the endpoint closes.
pub async fn accept_loop(endpoint: quinn::Endpoint, identity: IdentityRx, actor: ActorTx) {
    while let Some(incoming) = endpoint.accept().await {
        let identity = identity.clone();
        let actor = actor.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    let pins = identity.borrow().pins.clone();
                    let Some(peer) = identify(&conn, &pins) else {
                        conn.close(VarInt::from_u32(close_code::UNKNOWN_PEER), b"unknown peer");
                        super::refuse(&actor, remote, "certificate matches no card".into(), None)
                            .await;
                        return;
                    };
                    note_new_cert(&conn, &pins, &peer, &actor).await;
                    let _ = link::drive(conn, peer.clone(), peer, actor).await;
                }
                Err(e) => super::refuse(&actor, remote, format!("{e:?}"), None).await,
            }
        });
    }
}

/// Which pinned office a verified connection belongs to.
fn identify(conn: &quinn::Connection, pins: &[Pin]) -> Option<OfficeName> {
    let hash = presented_cert(conn)?;
    pins.iter()
        .find(|p| p.node_certs.contains(&hash))
        .map(|p| p.office.clone())
}

/// Tells the actor when a peer whose certificate we are retiring presents
/// the one on its new card: the old one is then trusted no longer.
async fn note_new_cert(conn: &quinn::Connection, pins: &[Pin], peer: &OfficeName, actor: &ActorTx) {
    let Some(pin) = pins.iter().find(|p| &p.office == peer) else {
        return;
    };
    if pin.node_certs.len() > 1 && presented_cert(conn).as_ref() == pin.node_certs.first() {
        let _ = actor.send(Input::NewCertSeen { peer: peer.clone() }).await;
    }
}

/// What a dialer needs.
pub struct Dialer {
    pub endpoint: quinn::Endpoint,
    pub me: OfficeName,
    pub peer: OfficeName,
    pub addr: SocketAddr,
    /// What we present and trust, read at each attempt (a card update may
    /// change it while the node runs).
    pub identity: IdentityRx,
    pub transport: std::sync::Arc<quinn::TransportConfig>,
    pub actor: ActorTx,
    pub links_up: watch::Receiver<BTreeSet<OfficeName>>,
    pub min: Duration,
    pub max: Duration,
}

/// Returns once a connection to the dialer's peer is up (or the node is
/// stopping).
async fn wait_for_link(d: &mut Dialer) {
    while !d.links_up.borrow().contains(&d.peer) {
        if d.links_up.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps a line to `peer` up: dials whenever there is none, backing off
/// exponentially with ±50 % jitter after failures.
pub async fn dial_loop(mut d: Dialer) {
    let mut delay = d.min;
    let mut failures = 0u32;
    loop {
        while d.links_up.borrow().contains(&d.peer) {
            if d.links_up.changed().await.is_err() {
                return;
            }
        }
        let identity = d.identity.borrow().clone();
        let attempt = match identity.client_config(&d.peer, &d.transport) {
            Ok(config) => match d
                .endpoint
                .connect_with(config, d.addr, &d.peer.server_name())
            {
                Ok(connecting) => connecting.await.map_err(|e| format!("{e:?}")),
                Err(e) => Err(format!("{e:?}")),
            },
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(conn) => {
                note_new_cert(&conn, &identity.pins, &d.peer, &d.actor).await;
                failures = 0;
                delay = d.min;
                let ended = link::drive(conn, d.peer.clone(), d.me.clone(), d.actor.clone()).await;
                if let link::Ended::PeerKeptItsOwn { rtt } = ended {
                    // The peer won the dial race: its connection may still
                    // be a handshake away. Dialing again at once would
                    // arrive after the race window and replace it, and the
                    // peer would then resend on ours what it had sent on
                    // its own. Give its connection time to arrive.
                    let grace = super::actor::dial_race_window(rtt);
                    let _ = tokio::time::timeout(grace, wait_for_link(&mut d)).await;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let handshake = !e.contains("TimedOut");
                if handshake || failures == 1 {
                    super::refuse(&d.actor, d.addr, e, Some(&d.peer)).await;
                } else {
                    tracing::debug!(peer = %d.peer, "still cannot reach {} at {}: {e}", d.peer, d.addr);
                }
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay = delay.saturating_mul(2).min(d.max);
            }
        }
    }
}
