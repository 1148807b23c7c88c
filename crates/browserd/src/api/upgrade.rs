//! Accepting a websocket on an axum route by hand (axum's `ws` feature would bring a second
//! tungstenite; this uses the tokio-tungstenite the relay already does): check the
//! handshake, answer 101, and turn the upgraded connection into a [`WebSocketStream`].

use super::error::ApiError;
use crate::cdp::budget::{MessageBudget, Metered};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A server-side websocket once the upgrade completes.
pub(super) type ServerWs = WebSocketStream<Metered<TokioIo<hyper::upgrade::Upgraded>>>;

/// A checked websocket handshake, waiting to be answered.
pub(super) struct Upgrade {
    key: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    /// Checks the handshake headers. `what` names the endpoint for the error message.
    pub(super) fn from_request(req: &mut Request, what: &str) -> Result<Self, ApiError> {
        let key = websocket_key(req.headers(), what)?;
        let on_upgrade = req
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;
        Ok(Self { key, on_upgrade })
    }

    /// The `101 Switching Protocols` answer. No `Sec-WebSocket-Extensions`: no compression,
    /// frames pass as they are.
    pub(super) fn response(&self) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&derive_accept_key(self.key.as_bytes()))
                .expect("base64 is a valid header value"),
        );
        response
    }

    /// Waits for the upgrade (after the 101 went out); `None` if the client left. Messages
    /// of 1 MiB and more that the client sends are held to `budget`.
    pub(super) async fn websocket(
        self,
        max_message_size: usize,
        budget: &MessageBudget,
    ) -> Option<ServerWs> {
        self.websocket_with(crate::cdp::relay::ws_config(max_message_size), budget)
            .await
    }

    /// [`Self::websocket`] with settings of the caller's.
    pub(super) async fn websocket_with(
        self,
        config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
        budget: &MessageBudget,
    ) -> Option<ServerWs> {
        let upgraded = match self.on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "client left during the websocket upgrade");
                return None;
            }
        };
        Some(
            WebSocketStream::from_raw_socket(
                Metered::new(TokioIo::new(upgraded), Some(budget.clone())),
                Role::Server,
                Some(config),
            )
            .await,
        )
    }
}

/// Checks the websocket handshake headers and returns `Sec-WebSocket-Key`.
fn websocket_key(headers: &HeaderMap, what: &str) -> Result<String, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest(format!(
            "this is a websocket endpoint: {what}"
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::BadRequest(
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("missing Sec-WebSocket-Key header".into()))
}
