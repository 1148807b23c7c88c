//! `GET /metrics`: the Prometheus exposition, on the API port behind the API key, or on
//! `--metrics-listen` without one (see [`router`]).

use super::error::ApiError;
use super::{AppState, Auth};
use crate::metrics::StatusProject;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The figures that are a state, set now; then every metric, encoded.
pub(crate) fn exposition(state: &AppState) -> String {
    let m = state.sessions.metrics();
    // Rebuilt whole: a project whose last session ended has no series left.
    m.sessions_live.clear();
    for (status, project) in state.sessions.live_by_status() {
        m.sessions_live
            .get_or_create(&StatusProject {
                status: status.as_str().to_owned(),
                project,
            })
            .inc();
    }
    m.warm_pool_target
        .set(state.sessions.pool().target() as i64);
    m.warm_pool_ready.set(state.sessions.pool().len() as i64);
    let limits = state.sessions.limits();
    let draining = state.sessions.is_draining();
    m.draining.set(i64::from(draining));
    m.session_slots.set(limits.max_sessions as i64);
    m.session_slots_free.set(if draining {
        0
    } else {
        limits
            .max_sessions
            .saturating_sub(state.sessions.live_count()) as i64
    });
    const MIB: i64 = 1024 * 1024;
    if let Some(available) = crate::sessions::mem_available_mib() {
        m.memory_available_bytes.set(available as i64 * MIB);
    }
    m.memory_floor_bytes
        .set(state.sessions.limits().min_free_memory_mib as i64 * MIB);
    m.encode()
}

fn answer(state: &AppState) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], exposition(state)).into_response()
}

/// `GET /metrics` on the API port: the default project's key (the operator's). The
/// figures span every project (ids included), so another project's key gets 403.
pub(crate) async fn with_key(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    if !super::projects::is_operator(&state, &auth).await? {
        return Err(ApiError::Forbidden(
            "metrics cover every project: scrape them with the default project's API key, or on --metrics-listen".into(),
        ));
    }
    Ok(answer(&state))
}

/// The whole app of `--metrics-listen`: `/metrics` and nothing else, no key (bind it where
/// only Prometheus reaches).
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { answer(&state) }),
        )
        .with_state(state)
}
