//! `/v1/projects`: a key sees its own project only.

use super::error::ApiError;
use super::params::{Fields, check_timeout};
use super::{AppState, Auth, JsonObject};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

fn own_project<'a>(auth: &'a Auth, id: &str) -> Result<&'a crate::model::Project, ApiError> {
    if auth.0.id == id {
        Ok(&auth.0)
    } else {
        Err(ApiError::NotFound(format!("project {id} not found")))
    }
}

/// A project as JSON, plus browserd's server capacity (an extension; the SDKs ignore it):
/// live sessions and warm browsers together never exceed `maxSessions`, and a warm browser
/// goes to the next create, so the pool never causes a 429.
fn project_json(state: &AppState, project: &crate::model::Project) -> serde_json::Value {
    let mut json = serde_json::to_value(project.to_json()).expect("a project serialises");
    let limits = state.sessions.limits();
    json["browserd"] = serde_json::json!({
        "maxSessions": limits.max_sessions,
        "warmPool": state.sessions.pool().target(),
        "warmReady": state.sessions.pool().len(),
        "liveSessions": state.sessions.live_count(),
    });
    json
}

/// `GET /v1/projects`
pub async fn list(State(state): State<AppState>, auth: Auth) -> Response {
    Json([project_json(&state, &auth.0)]).into_response()
}

/// `GET /v1/projects/{id}`
pub async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(project_json(&state, own_project(&auth, &id)?)).into_response())
}

/// `PATCH /v1/projects/{id}` with `{"defaultTimeout": N}` (a browserd extension): the
/// project-wide default for sessions created without `timeout`.
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let secs = Fields(&body)
        .integer("defaultTimeout")?
        .ok_or_else(|| ApiError::BadRequest("defaultTimeout is required".into()))?;
    let secs = check_timeout("defaultTimeout", secs, state.settings.min_timeout_secs)?;
    let updated = state
        .store
        .set_default_timeout(&project.id, secs)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {id} not found")))?;
    Ok(Json(project_json(&state, &updated)).into_response())
}

/// `GET /v1/projects/{id}/usage`: browser minutes counted from session lifetimes.
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let now = crate::model::now();
    let minutes: u64 = state
        .store
        .list_sessions(Some(&project.id), None)
        .await?
        .iter()
        .map(|s| s.browser_minutes(now))
        .sum();
    Ok(Json(serde_json::json!({ "browserMinutes": minutes, "proxyBytes": 0 })).into_response())
}
