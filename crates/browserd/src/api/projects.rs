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

/// Whether `auth` is the operator's: the default project's key (as for `/metrics`).
pub(super) async fn is_operator(state: &AppState, auth: &Auth) -> Result<bool, ApiError> {
    let default = state
        .store
        .settings
        .get_setting(crate::store::SETTING_DEFAULT_PROJECT)
        .await?;
    Ok(default.as_deref() == Some(auth.0.id.as_str()))
}

/// Whether `new` sessions per minute is no looser a limit than `current` (0: no limit).
fn lowers(current: u32, new: u32) -> bool {
    new == current || (new != 0 && (current == 0 || new < current))
}

/// `PATCH /v1/projects/{id}` with `{"defaultTimeout": N}` and/or `{"creationRate": N}` (a
/// browserd extension): the default for sessions created without `timeout`, and how many
/// sessions the project may create per minute. Capacity is the operator's: a tenant's key
/// may tighten its project's creation rate, never loosen it (the operator raises it with
/// `browserd project set-creation-rate`, or with the default project's key for that
/// project).
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let fields = Fields(&body);
    let timeout = fields.integer("defaultTimeout")?;
    let rate = fields.integer("creationRate")?;
    if timeout.is_none() && rate.is_none() {
        return Err(ApiError::BadRequest(
            "give defaultTimeout (seconds) or creationRate (sessions per minute, 0: no limit)"
                .into(),
        ));
    }
    let timeout = timeout
        .map(|t| check_timeout("defaultTimeout", t, state.settings.min_timeout_secs))
        .transpose()?;
    let rate = rate
        .map(|r| {
            u32::try_from(r).map_err(|_| {
                ApiError::BadRequest("creationRate must be between 0 and 4294967295".into())
            })
        })
        .transpose()?;
    if let Some(rate) = rate
        && !lowers(project.creations_per_minute, rate)
        && !is_operator(&state, &auth).await?
    {
        return Err(ApiError::Forbidden(format!(
            "creationRate {rate} would loosen this project's limit of {} per minute{}: a project's key may only tighten it; its operator raises it (browserd project set-creation-rate)",
            project.creations_per_minute,
            if project.creations_per_minute == 0 {
                " (none)"
            } else {
                ""
            }
        )));
    }
    let not_found = || ApiError::NotFound(format!("project {id} not found"));
    let mut updated = None;
    if let Some(secs) = timeout {
        updated = Some(
            state
                .store
                .projects
                .set_default_timeout(&project.id, secs)
                .await?
                .ok_or_else(not_found)?,
        );
    }
    if let Some(rate) = rate {
        updated = Some(
            state
                .store
                .projects
                .set_creation_rate(&project.id, rate)
                .await?
                .ok_or_else(not_found)?,
        );
    }
    let updated = updated.expect("one of the two was given");
    Ok(Json(project_json(&state, &updated)).into_response())
}

/// `GET /v1/projects/{id}/usage`: browser minutes counted from session lifetimes, those
/// of sessions deleted after the retention period included.
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let usage = state
        .store
        .sessions
        .usage(&project.id, crate::model::now())
        .await?;
    Ok(Json(serde_json::json!({
        "browserMinutes": usage.browser_minutes,
        "proxyBytes": usage.proxy_bytes,
    }))
    .into_response())
}
