//! browserd's own CDP connection to a session's browser, for the few things browserd does
//! to a browser itself: point its downloads at the session's folder, restore and read a
//! context's cookies, and close it gracefully so its profile is flushed to disk.
//!
//! Deliberately tiny (one request in flight; events that arrive meanwhile are kept for
//! [`CdpClient::next_event`]): a handful of calls at a session's start and end, and the
//! session recorder's event stream. Never on a client's path.

use super::relay::{BrowserWs, connect_browser};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How long one call may take. The calls are cheap; a browser that needs longer is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Replies browserd reads are small (cookie lists); this bounds a misbehaving browser.
const MAX_REPLY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("could not connect to the browser's CDP endpoint: {0}")]
    Connect(String),
    #[error("the browser's CDP connection failed: {0}")]
    Transport(String),
    #[error("the browser did not answer {method} within {CALL_TIMEOUT:?}")]
    Timeout { method: String },
    #[error("{method} failed: {message}")]
    Command { method: String, message: String },
}

pub(crate) struct CdpClient {
    ws: BrowserWs,
    next_id: u64,
    /// Events read while waiting for a reply, oldest first.
    events: std::collections::VecDeque<Value>,
}

impl CdpClient {
    pub(crate) async fn connect(
        dialer: &crate::netns::Dialer,
        url: &str,
    ) -> Result<Self, CdpError> {
        let ws = tokio::time::timeout(CALL_TIMEOUT, connect_browser(dialer, url, MAX_REPLY, None))
            .await
            .map_err(|_| CdpError::Connect("timed out".into()))?
            .map_err(|e| CdpError::Connect(e.to_string()))?;
        Ok(Self {
            ws,
            next_id: 0,
            events: Default::default(),
        })
    }

    /// Sends a browser-level command and returns its `result`.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.call_in(None, method, params).await
    }

    /// Sends a command, on a target's flattened session if `session` is given, and returns
    /// its `result`.
    pub(crate) async fn call_in(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, CdpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = session.into();
        }
        let exchange = async {
            self.ws
                .send(Message::text(request.to_string()))
                .await
                .map_err(|e| CdpError::Transport(e.to_string()))?;
            while let Some(msg) = self.ws.next().await {
                let msg = msg.map_err(|e| CdpError::Transport(e.to_string()))?;
                let Message::Text(text) = msg else { continue };
                let mut reply: Value = serde_json::from_str(&text)
                    .map_err(|e| CdpError::Transport(format!("unreadable reply: {e}")))?;
                if reply.get("id").and_then(Value::as_u64) != Some(id) {
                    if reply.get("method").is_some() {
                        self.events.push_back(reply);
                    }
                    continue;
                }
                if let Some(error) = reply.get("error") {
                    return Err(CdpError::Command {
                        method: method.to_owned(),
                        message: error["message"].as_str().unwrap_or("unknown").to_owned(),
                    });
                }
                return Ok(reply["result"].take());
            }
            Err(CdpError::Transport("connection closed".into()))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| CdpError::Timeout {
                method: method.to_owned(),
            })?
    }

    /// The next event (a message with a `method`); `None` once the connection is gone.
    pub(crate) async fn next_event(&mut self) -> Option<Value> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        while let Some(msg) = self.ws.next().await {
            let Ok(Message::Text(text)) = msg else {
                if msg.is_err() {
                    return None;
                }
                continue;
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(event) if event.get("method").is_some() => return Some(event),
                _ => continue,
            }
        }
        None
    }
}
