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
pub(super) async fn list(State(state): State<AppState>, auth: Auth) -> Response {
    Json([project_json(&state, &auth.0)]).into_response()
}

/// `GET /v1/projects/{id}`
pub(super) async fn retrieve(
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

/// `PATCH /v1/projects/{id}` with any of `{"defaultTimeout": N}`, `{"creationRate": N}` and
/// `{"concurrency": N}` (the last two browserd extensions): the default for sessions created
/// without `timeout`, how many sessions the project may create per minute, and how many it
/// may run at once. Capacity is the operator's: a tenant's key may tighten its project's
/// limits, never loosen them (the operator raises them with `browserd project
/// set-creation-rate` / `set-concurrency`, or for the default project with its key). The next
/// create is checked against the new limits, on every node of a cluster.
pub(super) async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let fields = Fields(&body);
    let timeout = fields.integer("defaultTimeout")?;
    let rate = fields.integer("creationRate")?;
    let concurrency = fields.integer("concurrency")?;
    if timeout.is_none() && rate.is_none() && concurrency.is_none() {
        return Err(ApiError::BadRequest(
            "give defaultTimeout (seconds), creationRate (sessions per minute, 0: no limit) or concurrency (sessions at once, at least 1)"
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
    let concurrency = concurrency
        .map(|c| {
            u32::try_from(c).ok().filter(|c| *c >= 1).ok_or_else(|| {
                ApiError::BadRequest("concurrency must be between 1 and 4294967295".into())
            })
        })
        .transpose()?;
    let operator = is_operator(&state, &auth).await?;
    let loosens_rate = rate.is_some_and(|r| !lowers(project.creations_per_minute, r));
    let loosens_concurrency = concurrency.is_some_and(|c| c > project.concurrency);
    if (loosens_rate || loosens_concurrency) && !operator {
        return Err(ApiError::Forbidden(if loosens_concurrency {
            format!(
                "concurrency {} would loosen this project's limit of {} sessions at once: a project's key may only lower it; its operator raises it (browserd project set-concurrency)",
                concurrency.unwrap_or_default(),
                project.concurrency
            )
        } else {
            format!(
                "creationRate {} would loosen this project's limit of {} per minute{}: a project's key may only tighten it; its operator raises it (browserd project set-creation-rate)",
                rate.unwrap_or_default(),
                project.creations_per_minute,
                if project.creations_per_minute == 0 {
                    " (none)"
                } else {
                    ""
                }
            )
        }));
    }
    let not_found = || ApiError::NotFound(format!("project {id} not found"));
    // A tenant's change is applied only if it still tightens the limit as stored then (one
    // statement): an operator's lowering made since this request read the project stands.
    let changed_meanwhile = || {
        ApiError::Conflict(format!(
            "the project's limits were changed meanwhile: read them again (GET /v1/projects/{id})"
        ))
    };
    let projects = &state.store.projects;
    let mut updated = None;
    if let Some(concurrency) = concurrency {
        updated = Some(if operator {
            projects
                .set_concurrency(&project.id, concurrency)
                .await?
                .ok_or_else(not_found)?
        } else {
            projects
                .lower_concurrency(&project.id, concurrency)
                .await?
                .ok_or_else(changed_meanwhile)?
        });
    }
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
        updated = Some(if operator {
            projects
                .set_creation_rate(&project.id, rate)
                .await?
                .ok_or_else(not_found)?
        } else {
            projects
                .tighten_creation_rate(&project.id, rate)
                .await?
                .ok_or_else(changed_meanwhile)?
        });
    }
    let updated = updated.expect("one of the two was given");
    Ok(Json(project_json(&state, &updated)).into_response())
}

/// `GET /v1/projects/{id}/usage`: browser minutes counted from session lifetimes, those
/// of sessions deleted after the retention period included.
pub(super) async fn usage(
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

/// Keys one project may hold through the API (the operator's CLI is not bound by it).
pub const MAX_KEYS_PER_PROJECT: usize = 100;

/// A stored key as JSON: its id and age, and whether it is the key of this request.
fn key_json(key: &crate::store::ApiKeyInfo, current: &str) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "createdAt": crate::model::fmt_time(key.created_at),
        "current": key.id == current,
    })
}

/// `GET /v1/projects/{id}/keys` (browserd): the project's keys, by id; a key is never shown
/// again after it is made.
pub(super) async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    key: RequestKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    let keys = state.store.projects.list_api_keys(&project.id).await?;
    Ok(Json(
        keys.iter()
            .map(|k| key_json(k, &key.id))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// `POST /v1/projects/{id}/keys` (browserd): a new key for the project, shown this once.
pub(super) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    // A bound on what one project's key can add (each key is a row, and a lookup target).
    if state.store.projects.list_api_keys(&project.id).await?.len() >= MAX_KEYS_PER_PROJECT {
        return Err(ApiError::Conflict(format!(
            "project {id} has {MAX_KEYS_PER_PROJECT} keys, the most it may have: revoke one first"
        )));
    }
    let key = crate::secrets::new_api_key();
    let hash = crate::secrets::hash_api_key(&key);
    state.store.projects.add_api_key(&project.id, &hash).await?;
    tracing::info!(project = %project.id, key_id = %crate::store::api_key_id(&hash), "API key created");
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({
            "id": crate::store::api_key_id(&hash),
            "key": key,
            "createdAt": crate::model::fmt_time(crate::model::now()),
        })),
    )
        .into_response())
}

/// `DELETE /v1/projects/{id}/keys/{keyId}` (browserd): the key stops working at once, on
/// every node. A project's last key is kept (409): nothing could reach the project again.
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let project = own_project(&auth, &id)?;
    if !crate::store::is_api_key_id(&key_id) {
        return Err(ApiError::BadRequest(
            "a key id is 12 lowercase hex digits (GET /v1/projects/{id}/keys lists them)".into(),
        ));
    }
    match state
        .store
        .projects
        .revoke_api_key(&project.id, &key_id)
        .await?
    {
        crate::store::Revoke::Revoked => {
            tracing::info!(project = %project.id, %key_id, "API key revoked");
            Ok(axum::http::StatusCode::NO_CONTENT.into_response())
        }
        crate::store::Revoke::NoSuchKey => Err(ApiError::NotFound(format!(
            "project {id} has no key {key_id}"
        ))),
        crate::store::Revoke::LastKey => Err(ApiError::Conflict(format!(
            "key {key_id} is project {id}'s last key: create another first (POST /v1/projects/{id}/keys)"
        ))),
    }
}

/// The id of the API key a request came with (to mark it in a listing).
pub(super) struct RequestKey {
    id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get("x-bb-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(Self {
            id: crate::store::api_key_id(&crate::secrets::hash_api_key(key)),
        })
    }
}
