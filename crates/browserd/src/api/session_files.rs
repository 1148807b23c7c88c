//! `/v1/sessions/{id}/uploads` and `/v1/sessions/{id}/downloads`: files going into a
//! session's browser and files its pages downloaded. See [`crate::files`].

use super::error::ApiError;
use super::multipart::{discard_body, receive_file};
use super::sessions::owned_session;
use super::{AppState, Auth};
use crate::files::sanitize_file_name;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `POST /v1/sessions/{id}/uploads`, multipart part `file`: stores the file where the
/// session's browser can read it and answers with its path, for `setInputFiles` /
/// `DOM.setFileInputFiles`. A file of the same name is replaced.
pub(super) async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    let limit = state.settings.max_upload_bytes;
    if session.status.is_ended() {
        discard_body(req, limit).await;
        return Err(ApiError::Conflict(format!(
            "session {id} has ended ({}); uploads are for a live session's browser",
            session.status.as_str()
        )));
    }
    let files = state.sessions.files();
    // The session's disk allowance (--session-disk-mib) bounds the upload too: measured
    // now over its files and what its browser downloaded so far.
    let quota = files.session_quota();
    let (root, folders, downloads) = (
        files.root().to_owned(),
        [files.session_dir(session.id)],
        state.sessions.downloads_dir(session.id),
    );
    let used = tokio::task::spawn_blocking(move || {
        crate::files::quota::used_by(&root, &folders, &downloads)
    })
    .await
    .unwrap_or(0);
    let room = quota.room(used);
    let over_quota = || {
        ApiError::PayloadTooLarge(format!(
            "session {id}'s files use {used} of the {} bytes a session may keep (--session-disk-mib); the file does not fit, the session goes on",
            quota.limit()
        ))
    };
    if room == 0 {
        discard_body(req, limit).await;
        return Err(over_quota());
    }
    let received = match receive_file(req, &state, files.tmp_path(), limit.min(room)).await {
        Err(ApiError::PayloadTooLarge(_)) if room < limit => return Err(over_quota()),
        other => other?,
    };
    let name = sanitize_file_name(&received.file_name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the file part needs a usable file name (got {:?})",
            received.file_name
        ))
    })?;
    let dir = files.uploads_dir(session.id);
    let dest = dir.join(&name);
    let stored = async {
        tokio::fs::create_dir_all(&dir).await?;
        received.persist(&dest).await
    };
    stored
        .await
        .map_err(|e| ApiError::Internal(format!("could not store the upload: {e}")))?;
    if let Some(browser_dir) = state.sessions.browser_dir(session.id) {
        let (root, dest) = (files.root().to_owned(), dest.clone());
        let name = name.clone();
        tokio::task::spawn_blocking(move || show_to_browser(&root, &dest, &browser_dir, &name))
            .await
            .map_err(|e| {
                ApiError::Internal(format!("could not give the upload to the browser: {e}"))
            })?
            .map_err(|e| {
                ApiError::Internal(format!("could not give the upload to the browser: {e}"))
            })?;
    }
    let path = dest.display().to_string();
    Ok(Json(serde_json::json!({
        "message": format!("File uploaded successfully to {path}"),
        "path": path,
    }))
    .into_response())
}

/// Makes an upload readable by the session's browser, whose sandbox shows it only its own
/// folder: a hard link in `<browser dir>/uploads/`, owned by the browser's uid (the owner
/// of its folder). The relay maps the path this API answers to that one. The browser's uid
/// owns that folder and may have put links there: every step works on handles opened
/// without following them ([`crate::files::confined`]), so the link lands in the browser's
/// folder or nowhere.
fn show_to_browser(
    root: &std::path::Path,
    file: &std::path::Path,
    browser_dir: &std::path::Path,
    name: &str,
) -> std::io::Result<()> {
    let browser = crate::files::confined::Folder::open(root, browser_dir)?;
    let owner = browser.owner()?;
    let uploads = browser.sub_made(crate::sessions::UPLOADS_IN_BROWSER, Some(owner))?;
    uploads.remove(name)?;
    uploads.link_in(file, name, owner)
}

/// `GET /v1/sessions/{id}/downloads`: a zip of the files the session's pages downloaded;
/// an empty zip while there are none. Kept after the session ends, for the retention period.
pub(super) async fn downloads(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    let files = state.sessions.files();
    if session.status.is_ended() && !files.session_dir(session.id).exists() {
        let retention = files.retention();
        if session
            .ended_at
            .is_some_and(|end| end + retention <= crate::model::now())
        {
            return Err(ApiError::Gone(format!(
                "session {id}'s files were removed {}h after it ended (--files-retention-hours)",
                retention.as_secs() / 3600
            )));
        }
    }
    let dir = state.sessions.downloads_dir(session.id);
    let files = std::sync::Arc::clone(files);
    let zip = tokio::task::spawn_blocking(move || files.zip_downloads(&dir))
        .await
        .map_err(|e| ApiError::Internal(format!("zipping the downloads failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("could not zip the downloads: {e}")))?;
    // Streamed from the scratch file it was written to, never held whole.
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(zip),
    ));
    Ok(([(header::CONTENT_TYPE, "application/zip")], body).into_response())
}
