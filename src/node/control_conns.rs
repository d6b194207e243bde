//! The control API's connections: what keeps a local user without the
//! token from jamming the operator out (issue 19).
//!
//! Anyone on the machine can connect to a loopback port. Served by
//! `axum::serve`, 200 idle connections under `ulimit -n 128` left the
//! operator's `status` hanging for more than 15 s: nothing timed a
//! connection out, nothing capped them, and the accept loop backed off on
//! every `EMFILE`. Here:
//!
//! - at most [`MAX_CONNECTIONS`] are open; one more evicts the oldest that
//!   has not yet made an authenticated request, so a connection that shows
//!   the token (the operator's reserve) is never pushed out by ones that
//!   did not, and a newcomer is never turned away while one of those exists;
//! - a connection has [`FIRST_REQUEST`] from accept to make an
//!   authenticated request, and every request [`HEADER_READ`] for its
//!   headers and [`BODY_READ`] for a body of at most [`MAX_BODY`] bytes;
//! - a request without the token gets 401 and the connection is closed;
//!   none of this writes a log line (noise is counted, in
//!   [`ControlNoise`], and shown by `status`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt as _;

use crate::control::api::ControlNoiseStatus;

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// From accept to the first authenticated request's headers.
pub const FIRST_REQUEST: Duration = Duration::from_secs(2);
/// For each later request's headers, once its first byte arrived (the
/// first request is bounded by [`FIRST_REQUEST`], which comes sooner).
pub const HEADER_READ: Duration = Duration::from_secs(5);
/// For each request's body.
pub const BODY_READ: Duration = Duration::from_secs(5);
/// Largest request body (a message body is at most 64 KiB; JSON escaping
/// can at most sextuple it).
pub const MAX_BODY: usize = 1024 * 1024;

/// Unauthenticated traffic on the control API since start, counted instead
/// of logged.
#[derive(Debug, Default)]
pub struct ControlNoise {
    unauthenticated: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
    refused_full: AtomicU64,
}

impl ControlNoise {
    /// The counts, for `status`.
    pub fn snapshot(&self) -> ControlNoiseStatus {
        ControlNoiseStatus {
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the accept loop knows of one open connection.
struct Slot {
    /// Has made an authenticated request: never evicted.
    authenticated: Arc<AtomicBool>,
    /// Its task has ended.
    done: Arc<AtomicBool>,
    /// Tells its task to drop it.
    evict: Arc<Notify>,
}

/// Serves `router` on `listener` within the limits above until `stop`
/// changes; then open connections finish their requests and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    token: Arc<String>,
    noise: Arc<ControlNoise>,
    mut stop: watch::Receiver<bool>,
) {
    // Oldest first.
    let mut slots: Vec<Slot> = Vec::new();
    loop {
        let tcp = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // Out of descriptors, most likely: try again soon (the
                    // cap means our own connections are not the cause).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        slots.retain(|s| !s.done.load(Ordering::Acquire));
        if slots.len() >= MAX_CONNECTIONS {
            match slots
                .iter()
                .position(|s| !s.authenticated.load(Ordering::Acquire))
            {
                Some(i) => {
                    let old = slots.remove(i);
                    old.evict.notify_one();
                    bump(&noise.evicted);
                }
                None => {
                    // Every slot has shown the token: this one waits for
                    // none of them.
                    bump(&noise.refused_full);
                    drop(tcp);
                    continue;
                }
            }
        }
        let slot = Slot {
            authenticated: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicBool::new(false)),
            evict: Arc::new(Notify::new()),
        };
        tokio::spawn(connection(
            tcp,
            Conn {
                router: router.clone(),
                token: token.clone(),
                noise: noise.clone(),
                authenticated: slot.authenticated.clone(),
            },
            slot.done.clone(),
            slot.evict.clone(),
            stop.clone(),
        ));
        slots.push(slot);
    }
}

/// What each request on one connection needs.
#[derive(Clone)]
struct Conn {
    router: Router,
    token: Arc<String>,
    noise: Arc<ControlNoise>,
    authenticated: Arc<AtomicBool>,
}

async fn connection(
    tcp: tokio::net::TcpStream,
    ctx: Conn,
    done: Arc<AtomicBool>,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let authenticated = ctx.authenticated.clone();
    let noise = ctx.noise.clone();
    let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let first_request = tokio::time::sleep(FIRST_REQUEST);
    tokio::pin!(first_request);
    let mut stopping = false;
    let mut first_request_due = true;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            // The guard is read when the select starts, not when the
            // deadline fires: a request may have shown the token since.
            _ = &mut first_request, if first_request_due => {
                if authenticated.load(Ordering::Acquire) {
                    first_request_due = false;
                    continue;
                }
                bump(&noise.timed_out);
                break;
            }
            _ = evict.notified() => break,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    done.store(true, Ordering::Release);
}

async fn handle(req: hyper::Request<Incoming>, ctx: Conn) -> Result<Response, Infallible> {
    if !authorized(req.headers(), &ctx.token) {
        bump(&ctx.noise.unauthenticated);
        return Ok(closing(super::control_server::error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token; send `Authorization: Bearer $(cat DIR/control.token)`",
        )));
    }
    ctx.authenticated.store(true, Ordering::Release);
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_READ, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return Ok(closing(super::control_server::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes, or broken off"),
            )))
        }
        Err(_) => {
            return Ok(closing(super::control_server::error(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} s", BODY_READ.as_secs()),
            )))
        }
    };
    let req = axum::http::Request::from_parts(parts, axum::body::Body::from(bytes));
    Ok(match ctx.router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    })
}

/// Marks `r` as the connection's last response.
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
