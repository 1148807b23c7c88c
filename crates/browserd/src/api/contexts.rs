//! `/v1/contexts`: saved browser profiles. See [`crate::files::contexts`] for how they are
//! stored and saved.

use super::error::ApiError;
use super::params::Fields;
use super::{AppState, Auth, JsonObject, check_project_id};
use crate::files::contexts::{CIPHER_ALGORITHM, NONCE_LEN};
use crate::model::Context;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The create (and deprecated update) response. Browserbase's fields describe its old
/// client-side upload scheme; browserd fills them with what is true here: profiles are
/// sealed by browserd itself with AES-256-GCM (12-byte nonces), there is no client key,
/// and `uploadUrl` names an endpoint that explains that contexts are filled by sessions.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextKeys {
    id: String,
    upload_url: String,
    public_key: &'static str,
    cipher_algorithm: &'static str,
    initialization_vector_size: usize,
}

fn keys(state: &AppState, headers: &HeaderMap, id: &str) -> ContextKeys {
    ContextKeys {
        id: id.to_owned(),
        upload_url: format!(
            "{}/v1/contexts/{id}/upload",
            super::public_base(state, headers)
        ),
        public_key: "",
        cipher_algorithm: CIPHER_ALGORITHM,
        initialization_vector_size: NONCE_LEN,
    }
}

/// Longest context name accepted.
const MAX_NAME_CHARS: usize = 256;

/// `POST /v1/contexts` with `{name?, projectId?}`.
pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let fields = Fields(&body);
    check_project_id(&fields, &auth)?;
    let name = fields.str("name")?;
    if name.is_some_and(|n| n.trim().chars().count() > MAX_NAME_CHARS) {
        return Err(ApiError::BadRequest(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    // PostgreSQL's text cannot hold NUL: refused here, for every store alike.
    if name.is_some_and(|n| n.contains('\0')) {
        return Err(ApiError::BadRequest(
            "name must not contain NUL characters".into(),
        ));
    }
    let context = state
        .store
        .contexts
        .create_context(&auth.0.id, name)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "this project already has a context named {:?} (names are compared ignoring case)",
                name.unwrap_or_default().trim()
            ))
        })?;
    Ok((
        StatusCode::CREATED,
        Json(keys(&state, &headers, &context.id)),
    )
        .into_response())
}

/// A context of the caller's project; another project's is "not found".
pub(super) async fn owned_context(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<Context, ApiError> {
    super::owned(auth, "context", id, |uuid| async move {
        state.store.contexts.get_context(&uuid.to_string()).await
    })
    .await
}

/// `GET /v1/contexts/{id}`.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let context = owned_context(&state, &auth, &id).await?;
    Ok(Json(context.to_json()).into_response())
}

/// `PUT /v1/contexts/{id}` (deprecated in the SDKs, empty body): the create shape again.
pub(super) async fn update(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    check_project_id(&Fields(&body), &auth)?;
    let context = owned_context(&state, &auth, &id).await?;
    Ok(Json(keys(&state, &headers, &context.id)).into_response())
}

/// `DELETE /v1/contexts/{id}`: the record and the saved profile. A session using the
/// context goes on; its save at the end is dropped.
pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let context = owned_context(&state, &auth, &id).await?;
    let vault = state.sessions.files().vault();
    // Held across both steps, so a save in progress either lands before or not at all.
    let guard = vault.lock(&context.id).await;
    state.store.contexts.delete_context(&context.id).await?;
    vault
        .remove(&guard, &context.id)
        .await
        .map_err(|e| ApiError::Internal(format!("could not remove the context's file: {e}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where `uploadUrl` points: Browserbase's client-side profile upload is not offered.
pub(super) async fn upload_sentinel(Path(id): Path<String>) -> ApiError {
    ApiError::Gone(format!(
        "browserd does not take uploaded profiles; context {id} is filled by a session created with browserSettings.context = {{\"id\": \"{id}\", \"persist\": true}}"
    ))
}
