//! The `connectUrl` websocket: `/?signingKey=TOKEN`, or the legacy
//! `/?apiKey=KEY&sessionId=ID`. Everything that can be refused is refused with an HTTP
//! status and a JSON message before the upgrade; after it, [`crate::cdp::relay`] runs.

use super::AppState;
use super::error::ApiError;
use super::upgrade::Upgrade;
use crate::secrets::{hash_api_key, verify_session_token};
use crate::sessions::AttachError;
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use uuid::Uuid;

/// Which session a connect request is for, if its credentials are right.
pub(super) async fn authenticate(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Result<Uuid, ApiError> {
    if let Some(token) = query.get("signingKey") {
        return verify_session_token(&state.secret, token)
            .ok_or_else(|| ApiError::Unauthorized("invalid signingKey for this server".into()));
    }
    if let Some(key) = query.get("apiKey") {
        let project = state
            .store
            .projects
            .project_for_key(&hash_api_key(key))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("invalid apiKey".into()))?;
        let id = query.get("sessionId").ok_or_else(|| {
            ApiError::BadRequest(
                "sessionId is required with apiKey; create a session with POST /v1/sessions first"
                    .into(),
            )
        })?;
        let not_found = || ApiError::NotFound(format!("session {id} not found"));
        let uuid = Uuid::try_parse(id).map_err(|_| not_found())?;
        return match state.store.sessions.get_session(uuid).await? {
            Some(s) if s.project_id == project.id => Ok(uuid),
            _ => Err(not_found()),
        };
    }
    Err(ApiError::Unauthorized(
        "missing credentials: connect with the session's connectUrl (?signingKey=...)".into(),
    ))
}

/// Why a session cannot be connected to: gone (410) if it ended, else not found.
async fn not_live(state: &AppState, id: Uuid) -> ApiError {
    match state.store.sessions.get_session(id).await {
        Ok(Some(s)) if s.status.is_ended() => ApiError::Gone(format!(
            "session {id} has ended ({}): {}",
            s.status.as_str(),
            s.end_reason.as_deref().unwrap_or("no reason recorded")
        )),
        Ok(_) => ApiError::NotFound(format!("session {id} is not running on this server")),
        Err(e) => e.into(),
    }
}

/// `GET /?signingKey=…` with a websocket upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    // A person opening the server's address in a browser gets the dashboard.
    if query.is_empty() && !req.headers().contains_key(axum::http::header::UPGRADE) {
        return Ok(axum::response::Redirect::to("dashboard").into_response());
    }
    let id = authenticate(&state, &query).await?;
    let upgrade = Upgrade::from_request(
        &mut req,
        "connect to it with a CDP client such as Playwright's connect_over_cdp or Puppeteer's connect",
    )?;
    let lease = match state.sessions.attach(id) {
        Ok(lease) => lease,
        Err(AttachError::NotLive(id)) => return Err(not_live(&state, id).await),
        Err(e @ AttachError::Starting(_)) => return Err(ApiError::Conflict(e.to_string())),
        Err(e @ AttachError::TooManyClients { .. }) => {
            return Err(ApiError::TooManyRequests {
                message: e.to_string(),
                retry: false,
            });
        }
    };

    let max = state.settings.max_message_size;
    let watch = state.settings.client_watch;
    // The browser leg is opened before the client's handshake is answered, so a client
    // whose handshake succeeded can use the browser at once.
    let browser = crate::cdp::relay::connect_browser(lease.cdp_url(), max)
        .await
        .map_err(|e| {
            tracing::warn!(session = %id, error = %e, "could not reach the session's browser");
            ApiError::BadGateway("browserd could not reach the session's browser".into())
        })?;
    let response = upgrade.response();
    // Owns this client's connection until it or the session ends.
    tokio::spawn(async move {
        let config = crate::cdp::relay::client_ws_config(max);
        if let Some(ws) = upgrade.websocket_with(config).await {
            crate::cdp::relay::run(ws, browser, lease, watch).await;
        }
    });
    Ok(response)
}

/// `GET /json/version/?signingKey=…`: what Playwright asks when given an `http://` URL.
pub async fn json_version(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = authenticate(&state, &query).await?;
    if !state.sessions.is_live(id) {
        return Err(not_live(&state, id).await);
    }
    let qs: Vec<String> = query
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "signingKey" | "apiKey" | "sessionId"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let base = super::websocket_base(&state, &headers);
    Ok(Json(serde_json::json!({
        "Browser": "browserd/Chromium",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": format!("{base}/?{}", qs.join("&")),
    }))
    .into_response())
}
