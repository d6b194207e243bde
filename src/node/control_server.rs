//! The control API server: HTTP/1.1 + JSON on loopback, bearer token.
//!
//! | method | path            | body / answer                                  |
//! |--------|-----------------|------------------------------------------------|
//! | GET    | /v1/status      | [`StatusResponse`](crate::control::StatusResponse) |
//! | GET    | /v1/inbox       | list of [`InboxEntry`](crate::control::InboxEntry), newest first; `?limit=&before=&since=` page it |
//! | GET    | /v1/outbox      | list of [`OutboxEntry`](crate::control::OutboxEntry), newest first, paged the same way |
//! | POST   | /v1/messages    | [`SendRequest`](crate::control::SendRequest) → [`SendResponse`](crate::control::SendResponse) |
//! | POST   | /v1/ack         | [`AckRequest`](crate::control::AckRequest) → [`SendResponse`](crate::control::SendResponse) |
//! | POST   | /v1/alert-level | [`AlertLevelRequest`](crate::control::AlertLevelRequest) |
//! | GET    | /v1/events?after=N&wait_ms=M | events after N, waiting up to M ms for one |
//! | POST   | /v1/shutdown    | stops the node cleanly                         |
//!
//! Every request needs `Authorization: Bearer <DIR/control.token>`; without
//! it the answer is 401 and the connection closes. Errors are
//! `{"error": "..."}`. Connections are capped and timed
//! ([`super::control_conns`]) so that no local user can jam the operator out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{oneshot, watch, Notify};

use super::control_conns::{self, ControlNoise};
use super::{NodeError, NodeHandle, SendError};
use crate::control::api;
use crate::control::api::{AckRequest, AlertLevelRequest, ErrorBody, SendRequest};
use crate::core::SubmitError;

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    stop: Arc<Notify>,
    noise: Arc<ControlNoise>,
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

/// Binds `addr` (which must be loopback) and serves until the returned
/// sender fires.
pub async fn serve(
    addr: &str,
    token: String,
    node: NodeHandle,
    stop: Arc<Notify>,
) -> Result<(SocketAddr, oneshot::Sender<()>), NodeError> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|_| NodeError::Config(format!("control address {addr:?} is not HOST:PORT")))?;
    if !sock.ip().is_loopback() {
        return Err(NodeError::Config(format!(
            "control address {sock} is not loopback; the control API is only served on 127.0.0.1 or [::1]"
        )));
    }
    let listener = tokio::net::TcpListener::bind(sock)
        .await
        .map_err(|source| NodeError::Bind {
            addr: sock.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: sock.to_string(),
        source,
    })?;
    let noise = Arc::new(ControlNoise::default());
    let state = AppState {
        node,
        stop,
        noise: noise.clone(),
    };
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/inbox", get(inbox))
        .route("/v1/outbox", get(outbox))
        .route("/v1/messages", post(send))
        .route("/v1/ack", post(ack))
        .route("/v1/alert-level", post(alert_level))
        .route("/v1/rotate/cert", post(rotate_cert))
        .route("/v1/rotate/keys", post(rotate_keys))
        .route("/v1/confirm-card", post(confirm_card))
        .route("/v1/events", get(events))
        .route("/v1/delivery", get(delivery))
        .route("/v1/shutdown", post(shutdown))
        .with_state(state);
    let (tx, rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        // Fired or dropped: either way the node is stopping.
        let _ = rx.await;
        let _ = stop_tx.send(true);
    });
    tokio::spawn(control_conns::serve(
        listener,
        app,
        Arc::new(token),
        noise,
        stop_rx,
    ));
    Ok((local, tx))
}

async fn status(State(s): State<AppState>) -> Response {
    match s.node.status().await {
        Some(mut v) => {
            v.control_noise = s.noise.snapshot();
            Json(v).into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
    }
}

/// `?limit=N&before=LOG_INDEX&since=UNIX_MS` on the history views.
#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    before: Option<u64>,
    since: Option<u64>,
}

impl PageQuery {
    fn page(&self) -> crate::history::views::Page {
        crate::history::views::Page {
            limit: self.limit.unwrap_or(0),
            before: self.before,
            since_unix_ms: self.since,
        }
    }
}

fn page_answer<T: serde::Serialize>(r: Option<Result<Vec<T>, String>>) -> Response {
    match r {
        Some(Ok(v)) => Json(v).into_response(),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
    }
}

async fn inbox(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    page_answer(s.node.inbox_page(q.page()).await)
}

async fn outbox(State(s): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    page_answer(s.node.outbox_page(q.page()).await)
}

async fn send(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        }
    };
    match s.node.send(req).await {
        Ok(r) => Json(r).into_response(),
        Err(SendError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(SendError::Refused(e @ SubmitError::UnknownPeer(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(SendError::Refused(e @ SubmitError::OutboxFull { .. })) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(SendError::Refused(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(SendError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
        Err(e) => send_error(e),
    }
}

fn send_error(e: SendError) -> Response {
    match e {
        SendError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        SendError::Refused(e @ SubmitError::UnknownPeer(_))
        | SendError::Refused(e @ SubmitError::UnknownMessage(_)) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        SendError::Refused(e @ SubmitError::OutboxFull { .. }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        SendError::Refused(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        SendError::Stopping => error(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
        e @ SendError::Lost => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        SendError::Conflict(m) => error(StatusCode::CONFLICT, m),
        SendError::Failed(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        SendError::DiskFull(m) => error(StatusCode::INSUFFICIENT_STORAGE, m),
    }
}

async fn rotate_cert(State(s): State<AppState>) -> Response {
    rotate(s, crate::identity::rotation::Rotation::Cert).await
}

async fn rotate_keys(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: crate::control::api::RotateKeysRequest = if body.is_empty() {
        Default::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid request body: {e}"),
                )
            }
        }
    };
    match crate::identity::rotation::KeyChoice::from_names(&req.keys) {
        Ok(k) => rotate(s, crate::identity::rotation::Rotation::Keys(k)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn rotate(s: AppState, what: crate::identity::rotation::Rotation) -> Response {
    match s.node.rotate(what).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => send_error(e),
    }
}

async fn ack(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        }
    };
    match s.node.ack(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => send_error(e),
    }
}

async fn alert_level(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: AlertLevelRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        }
    };
    match s.node.alert_level(req).await {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(e) => send_error(e),
    }
}

async fn confirm_card(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: crate::control::api::ConfirmCardRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        }
    };
    match s.node.confirm_card(req).await {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(e) => send_error(e),
    }
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: Option<u64>,
}

async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Response {
    let wait = std::time::Duration::from_millis(q.wait_ms.unwrap_or(25_000).min(60_000));
    Json(s.node.events(q.after, wait).await).into_response()
}

#[derive(serde::Deserialize)]
struct DeliveryQuery {
    id: String,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// `GET /v1/delivery?id=ID&wait_ms=N`: the message's delivery once its
/// receipt is held, waiting up to N ms (at most 30 s: a client that wants
/// longer asks again, so no HTTP timeout ever hides the id).
async fn delivery(State(s): State<AppState>, Query(q): Query<DeliveryQuery>) -> Response {
    let Some(id) = crate::wire::MessageId::parse(&q.id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is not a message id (32 lowercase hex digits)",
                crate::text::quote(&q.id, 40)
            ),
        );
    };
    let wait = std::time::Duration::from_millis(q.wait_ms.unwrap_or(20_000).min(30_000));
    if let Some(d) = s.node.wait_delivered(id, wait).await {
        return Json(api::DeliveryWait { delivered: Some(d) }).into_response();
    }
    match s.node.outbox().await {
        Some(out) if out.iter().any(|o| o.id == q.id) => {
            Json(api::DeliveryWait { delivered: None }).into_response()
        }
        Some(_) => error(
            StatusCode::NOT_FOUND,
            format!("no message {id} was sent from this office"),
        ),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "node is stopping"),
    }
}

async fn shutdown(State(s): State<AppState>) -> Response {
    s.stop.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"stopping": true})),
    )
        .into_response()
}
