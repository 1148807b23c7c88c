//! `GET /v1/nodes` (a browserd extension): the nodes sharing the store, their state, load
//! and last heartbeat, for the dashboard and operators. Their internal addresses are left
//! out: a project's key holder has no use for them.

use super::error::ApiError;
use super::{AppState, Auth};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// `GET /v1/nodes`
pub(super) async fn list(State(state): State<AppState>, _auth: Auth) -> Result<Response, ApiError> {
    let nodes = state.store.nodes.list_nodes().await?;
    let body: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "state": n.shown_state(),
                "draining": n.draining,
                "liveSessions": n.live_sessions,
                "maxSessions": n.max_sessions,
                "startedAt": crate::model::fmt_time(n.started_at),
                "heartbeatAt": crate::model::fmt_time(n.heartbeat_at),
                "leaseExpiresAt": crate::model::fmt_time(n.lease_expires_at),
                "self": n.name == state.cluster.name(),
            })
        })
        .collect();
    Ok(Json(body).into_response())
}
