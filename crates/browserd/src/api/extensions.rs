//! `/v1/extensions`: browser extensions, uploaded as a zip and loaded by sessions that
//! name them in `extensionId`.

use super::error::ApiError;
use super::multipart::receive_file;
use super::{AppState, Auth};
use crate::files::extensions::{ExtensionError, MAX_EXTENSION_BYTES};
use crate::model::Extension;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `POST /v1/extensions`, multipart part `file`: a zip with `manifest.json` at its root.
pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> Result<Response, ApiError> {
    let files = state.sessions.files();
    let received = receive_file(req, &state, files.tmp_path(), MAX_EXTENSION_BYTES).await?;
    let file_name = received.file_name.clone();
    // Identical bytes are unpacked once, whichever project uploads them (Stagehand 4 uploads
    // the same archive for every session): the row is the project's, the folder shared.
    let (content, _folders) =
        files
            .store_extension(received.path())
            .await
            .map_err(|e| match e {
                ExtensionError::NotZip(_) => ApiError::UnsupportedMediaType(e.to_string()),
                ExtensionError::Io(_) => {
                    ApiError::Internal(format!("the extension could not be stored: {e}"))
                }
                _ => ApiError::BadRequest(e.to_string()),
            })?;
    drop(received);
    let now = crate::model::now();
    let extension = Extension {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: auth.0.id.clone(),
        file_name: crate::files::sanitize_file_name(&file_name)
            .unwrap_or_else(|| "extension.zip".into()),
        content: Some(content),
        created_at: now,
        updated_at: now,
    };
    state.store.extensions.insert_extension(&extension).await?;
    Ok(Json(extension.to_json()).into_response())
}

/// An extension of the caller's project; another project's is "not found".
pub(super) async fn owned_extension(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<Extension, ApiError> {
    super::owned(auth, "extension", id, |uuid| async move {
        state
            .store
            .extensions
            .get_extension(&uuid.to_string())
            .await
    })
    .await
}

/// `GET /v1/extensions/{id}`.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let extension = owned_extension(&state, &auth, &id).await?;
    Ok(Json(extension.to_json()).into_response())
}

/// `DELETE /v1/extensions/{id}`: the project's row goes at once; the unpacked files are
/// shared by identical uploads and go with the last row naming them (an hour later, see
/// [`crate::files::UNUSED_EXTENSION_GRACE`]), never from under another project.
pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let extension = owned_extension(&state, &auth, &id).await?;
    state
        .store
        .extensions
        .delete_extension(&extension.id)
        .await?;
    if let Err(e) = state.sessions.files().remove_extension(&extension).await {
        tracing::warn!(extension = %extension.id, error = %e, "could not remove an extension's files");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
