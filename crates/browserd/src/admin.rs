//! The local admin API on `<data dir>/admin.sock`: how the CLI asks a running server to
//! act on live sessions, or to drain. A Unix socket, readable only by browserd's user, so it needs no
//! API key; it is never on the network.

use crate::api::AppState;
use crate::api::error::ApiError;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use uuid::Uuid;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/sessions/{id}/release", post(release))
        .route("/drain", post(drain))
        // One line per request, and a failure's reason (an API error logs nothing itself).
        .layer(axum::middleware::from_fn(crate::api::access_log))
        .with_state(state)
}

/// `browserd drain`: no new sessions here; the server exits when the last live one ends
/// (or at `--drain-timeout`).
async fn drain(State(state): State<AppState>) -> Response {
    state.sessions.start_drain();
    Json(serde_json::json!({
        "draining": true,
        "liveSessions": state.sessions.live_count(),
    }))
    .into_response()
}

async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("session {id} not found"));
    let uuid = Uuid::try_parse(&id).map_err(|_| not_found())?;
    let session = state.sessions.release(uuid).await?.ok_or_else(not_found)?;
    Ok(Json(session.to_json()).into_response())
}
