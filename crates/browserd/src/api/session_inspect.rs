//! `/v1/sessions/{id}/debug`, `/logs` and `/recording`: the Browserbase API of the inspector.

use super::error::ApiError;
use super::sessions::owned_session;
use super::{AppState, Auth};
use crate::inspect;
use crate::model::MAX_TIMEOUT_SECS;
use crate::secrets::{Access, InspectGrant};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;

/// `GET /v1/sessions/{id}/debug[?expiresIn=S][&readOnly=true]`: live view, DevTools and
/// debug websocket URLs. Without `expiresIn` they last as long as the session (at most
/// 6 h). `readOnly` (browserd's addition) makes URLs that watch but send no input and open
/// no DevTools.
pub(super) async fn debug(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    let live = state.sessions.inspect(session.id).ok_or_else(|| {
        ApiError::Conflict(format!(
            "session {id} is {}: live URLs exist only while it runs",
            session.status.as_str()
        ))
    })?;
    let now = crate::model::now().unix_timestamp();
    let expires_at = match query.get("expiresIn") {
        Some(raw) => {
            let secs: i64 = raw.parse().ok().filter(|s| (1..=MAX_TIMEOUT_SECS as i64).contains(s)).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "expiresIn must be a whole number of seconds between 1 and {MAX_TIMEOUT_SECS} (got {raw:?})"
                ))
            })?;
            now + secs
        }
        None => session
            .expires_at
            .unix_timestamp()
            .min(now + MAX_TIMEOUT_SECS as i64),
    };
    let read_only = match query.get("readOnly").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "readOnly must be true or false (got {other:?})"
            )));
        }
    };
    // Two links: the live view's (made to be embedded anywhere) and DevTools' (CDP).
    // A read-only request gets no DevTools link: its DevTools URLs carry the live view's,
    // which DevTools refuses.
    let token = state.secret.sign_grant(&InspectGrant {
        session: session.id,
        expires_at,
        access: if read_only {
            Access::Watch
        } else {
            Access::Interact
        },
    });
    let devtools_token = if read_only {
        token.clone()
    } else {
        state.secret.sign_grant(&InspectGrant {
            session: session.id,
            expires_at,
            access: Access::DevTools,
        })
    };
    let base = super::public_base(&state, &headers);
    let root = format!("{base}/debug/{token}");
    let devtools_root = format!("{base}/debug/{devtools_token}");
    // DevTools' `inspector.html?ws=host/path` convention (`wss=` behind https).
    let (ws_param, ws_target) = match base.strip_prefix("https://") {
        Some(rest) => ("wss", format!("{rest}/debug/{devtools_token}")),
        None => (
            "ws",
            format!(
                "{}/debug/{devtools_token}",
                base.trim_start_matches("http://")
            ),
        ),
    };
    let devtools = |tab: &str| {
        format!(
            "{devtools_root}/devtools/inspector.html?{ws_param}={ws_target}/devtools/page/{tab}"
        )
    };
    let tabs = inspect::tabs(
        &state.sessions.dialer(),
        &live.cdp_url,
        live.primary_tab.as_deref(),
    )
    .await
    .map_err(|e| ApiError::BadGateway(format!("could not list the browser's tabs: {e}")))?;
    let pages: Vec<_> = tabs
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "url": t.url,
                "title": t.title,
                "faviconUrl": t.favicon_url,
                "debuggerUrl": devtools(&t.id),
                "debuggerFullscreenUrl": format!("{root}/live?page={}", t.id),
            })
        })
        .collect();
    let primary = tabs.first().map(|t| t.id.as_str()).unwrap_or_default();
    Ok(Json(json!({
        "debuggerFullscreenUrl": format!("{root}/live"),
        "debuggerUrl": devtools(primary),
        "wsUrl": format!("{}/debug/{devtools_token}/devtools/browser", super::websocket_base_of(&base)),
        "pages": pages,
    }))
    .into_response())
}

/// `GET /v1/sessions/{id}/logs`: the session's CDP commands and replies, oldest first
/// (empty when `logSession` was false). Kept after the session, for the retention period.
pub(super) async fn logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    let path = state.sessions.files().logs_path(session.id);
    let entries = inspect::jsonl_as_array(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("could not read the session log: {e}")))?;
    Ok(json_stream(entries))
}

/// `GET /v1/sessions/{id}/recording`: the primary tab's rrweb events, oldest first (empty
/// when `recordSession` was false).
pub(super) async fn recording(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    let path = state.sessions.files().recording_path(session.id);
    let events = inspect::jsonl_as_array(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("could not read the recording: {e}")))?;
    Ok(json_stream(events))
}

/// A JSON body streamed as it is read.
fn json_stream(
    chunks: impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send + 'static,
) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}
