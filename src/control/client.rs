//! A blocking client for the control API (used by the CLI).

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::api::{ErrorBody, InboxEntry, OutboxEntry, SendRequest, SendResponse, StatusResponse};
use crate::history::views::{Page, PageWalk};
use crate::identity::{files, OfficeDir};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node is running on the directory.
    #[error("no node is running for {0} (start one with `hotline node run --dir {0}`)")]
    NotRunning(String),
    /// `run/control.addr` is there but no node holds the directory's lock:
    /// left over, or planted. The token was not sent.
    #[error("no node is running for {0}: run/control.addr is left from a node that is no longer running, and the control token was not sent to it (start one with `hotline node run --dir {0}`)")]
    StaleAddress(String),
    /// The token was refused.
    #[error("the node refused the control token: {0}")]
    Unauthorized(String),
    /// The node answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The node's explanation.
        message: String,
    },
    /// Transport or decoding trouble.
    #[error("control API: {0}")]
    Transport(String),
    /// The office directory's run files are not this user's own, so the
    /// address in them may be another local user's listener: the token is
    /// not sent.
    #[error("refusing to send the control token: {0}")]
    Untrusted(String),
}

/// Talks to one node's control API.
pub struct ControlClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl ControlClient {
    /// Finds the running node of `dir` (its `run/control.addr`) and its token.
    ///
    /// The address is trusted only as far as the file it comes from: the
    /// office directory and `run/` must be this user's and private, and
    /// `control.addr` a private regular file of this user's (not a
    /// symlink), naming a loopback address. Otherwise another local user
    /// could plant an address of its own listener and collect the token.
    pub fn from_dir(dir: &OfficeDir) -> Result<Self, ClientError> {
        let root = dir.root().display().to_string();
        let untrusted = |e: std::io::Error| ClientError::Untrusted(e.to_string());
        let addr_file = dir.control_addr();
        let run = addr_file.parent().unwrap_or(dir.root());
        if !addr_file.exists() && !addr_file.is_symlink() {
            return Err(ClientError::NotRunning(root));
        }
        files::check_private_dir(dir.root()).map_err(untrusted)?;
        files::check_private_dir(run).map_err(untrusted)?;
        // A running node holds run/lock. If we can take it, no node runs and
        // control.addr is left over (a node that could not remove it, or a
        // plant): whoever listens there now must not get the token. The
        // lock is held for microseconds; a node starting meanwhile retries.
        if let Ok(lock) = std::fs::File::open(dir.lock()) {
            if lock.try_lock().is_ok() {
                let _ = lock.unlock();
                return Err(ClientError::StaleAddress(root));
            }
        }
        let addr = files::read_secret(&addr_file).map_err(untrusted)?;
        let addr = String::from_utf8_lossy(&addr);
        let addr: std::net::SocketAddr = addr.trim().parse().map_err(|_| {
            ClientError::Untrusted(format!(
                "{} does not hold an address ({})",
                addr_file.display(),
                crate::text::quote(addr.trim(), 64)
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(ClientError::Untrusted(format!(
                "{} names {addr}, which is not a loopback address",
                addr_file.display()
            )));
        }
        let token = files::read_secret(&dir.control_token()).map_err(|e| {
            ClientError::Transport(format!("{}: {e}", dir.control_token().display()))
        })?;
        Ok(Self::new(
            &addr.to_string(),
            String::from_utf8_lossy(&token).trim(),
        ))
    }

    /// A client for `addr` with `token`.
    pub fn new(addr: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        ControlClient {
            base: format!("http://{addr}"),
            token: token.to_string(),
            agent,
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = resp.map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                ClientError::NotRunning(self.base.clone())
            }
            other => ClientError::Transport(other.to_string()),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status == 401 {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(ClientError::Unauthorized(msg));
        }
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Transport(format!("bad answer: {e}")))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.decode(r)
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.decode(r)
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/v1/status")
    }
    /// `GET /v1/inbox`: one page, newest first.
    pub fn inbox_page(&self, page: &Page) -> Result<Vec<InboxEntry>, ClientError> {
        self.get(&format!("/v1/inbox{}", page_query(page)))
    }
    /// `GET /v1/outbox`: one page, newest first.
    pub fn outbox_page(&self, page: &Page) -> Result<Vec<OutboxEntry>, ClientError> {
        self.get(&format!("/v1/outbox{}", page_query(page)))
    }
    /// The whole inbox, oldest first, page by page.
    pub fn inbox(&self) -> Result<Vec<InboxEntry>, ClientError> {
        let mut walk = PageWalk::default();
        loop {
            let items = self.inbox_page(&walk.next())?;
            if let Some(all) = walk.take(items, |e| e.log_index) {
                return Ok(all);
            }
        }
    }
    /// The whole outbox, oldest first, page by page.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, ClientError> {
        let mut walk = PageWalk::default();
        loop {
            let items = self.outbox_page(&walk.next())?;
            if let Some(all) = walk.take(items, |e| e.log_index) {
                return Ok(all);
            }
        }
    }
    /// `POST /v1/messages`.
    pub fn send(&self, req: &SendRequest) -> Result<SendResponse, ClientError> {
        self.post("/v1/messages", req)
    }
    /// `POST /v1/ack`.
    pub fn ack(&self, req: &super::api::AckRequest) -> Result<SendResponse, ClientError> {
        self.post("/v1/ack", req)
    }
    /// `POST /v1/alert-level`.
    pub fn alert_level(
        &self,
        req: &super::api::AlertLevelRequest,
    ) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/alert-level", req)
    }
    /// `POST /v1/confirm-card`.
    pub fn confirm_card(
        &self,
        req: &super::api::ConfirmCardRequest,
    ) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/confirm-card", req)
    }

    /// `POST /v1/rotate/cert`.
    pub fn rotate_cert(&self) -> Result<super::api::RotateResponse, ClientError> {
        self.post("/v1/rotate/cert", &serde_json::json!({}))
    }

    /// `POST /v1/rotate/keys`: `keys` any of `message`, `log`, `seal`
    /// (none = all three).
    pub fn rotate_keys(&self, keys: &[String]) -> Result<super::api::RotateResponse, ClientError> {
        self.post(
            "/v1/rotate/keys",
            &super::api::RotateKeysRequest {
                keys: keys.to_vec(),
            },
        )
    }
    /// `GET /v1/events?after=N&wait_ms=M`.
    pub fn events(
        &self,
        after: u64,
        wait_ms: u64,
    ) -> Result<Vec<super::api::WatchEvent>, ClientError> {
        self.get(&format!("/v1/events?after={after}&wait_ms={wait_ms}"))
    }
    /// `GET /v1/delivery?id=ID&wait_ms=M`: the delivery of a message this
    /// office sent, waiting up to `wait_ms` (the node caps it at 30 s).
    pub fn delivery(
        &self,
        id: &str,
        wait_ms: u64,
    ) -> Result<Option<super::api::Delivery>, ClientError> {
        let w: super::api::DeliveryWait =
            self.get(&format!("/v1/delivery?id={id}&wait_ms={wait_ms}"))?;
        Ok(w.delivered)
    }
    /// `POST /v1/shutdown`.
    pub fn shutdown(&self) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/shutdown", &serde_json::json!({}))
    }
}

fn page_query(p: &Page) -> String {
    let mut q = vec![format!("limit={}", p.limit)];
    if let Some(b) = p.before {
        q.push(format!("before={b}"));
    }
    if let Some(s) = p.since_unix_ms {
        q.push(format!("since={s}"));
    }
    format!("?{}", q.join("&"))
}
