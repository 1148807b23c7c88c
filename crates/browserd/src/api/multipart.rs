//! Receiving one uploaded file (`multipart/form-data`, part `file`) onto disk.
//!
//! The part is streamed to a scratch file as it arrives, so a large upload never sits in
//! memory, and its size is checked as it grows.

use super::error::ApiError;
use axum::extract::{FromRequest, Multipart, Request};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt as _;

/// A file received into the scratch folder. Removed on drop unless moved with
/// [`persist`](Received::persist).
#[derive(Debug)]
pub(super) struct Received {
    path: Option<PathBuf>,
    /// The name the client gave, as sent (not yet sanitised).
    pub file_name: String,
    pub size: u64,
}

impl Received {
    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().expect("present until taken")
    }

    /// Moves the file to `dest` (same filesystem: a rename).
    pub(super) async fn persist(mut self, dest: &Path) -> std::io::Result<()> {
        let from = self.path.take().expect("present until taken");
        if let Err(e) = tokio::fs::rename(&from, dest).await {
            let _ = tokio::fs::remove_file(&from).await;
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads the request's `file` part into `scratch`, refusing more than `limit` bytes.
pub(super) async fn receive_file<S: Send + Sync>(
    req: Request,
    state: &S,
    scratch: PathBuf,
    limit: u64,
) -> Result<Received, ApiError> {
    let mut multipart = Multipart::from_request(req, state).await.map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "expected a multipart/form-data body with a part named \"file\": {e}"
        ))
    })?;
    let too_large = || ApiError::PayloadTooLarge(format!("the file is larger than {limit} bytes"));
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, limit))?
            .ok_or_else(|| {
                ApiError::BadRequest("the multipart body has no part named \"file\"".into())
            })?;
        if field.name() != Some("file") {
            continue;
        }
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let mut received = Received {
            path: Some(scratch),
            file_name,
            size: 0,
        };
        let mut out = tokio::fs::File::create(received.path())
            .await
            .map_err(|e| ApiError::Internal(format!("could not store the upload: {e}")))?;
        let mut field = field;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(&e, limit))?
        {
            received.size += chunk.len() as u64;
            if received.size > limit {
                return Err(too_large());
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| ApiError::Internal(format!("could not store the upload: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| ApiError::Internal(format!("could not store the upload: {e}")))?;
        return Ok(received);
    }
}

/// Reads and discards a request body (up to `limit` bytes), so an early refusal reaches a
/// client that is still sending instead of a reset connection.
pub(super) async fn discard_body(req: Request, limit: u64) {
    use http_body_util::BodyExt as _;
    let mut body = req.into_body();
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > limit {
            return;
        }
    }
}

fn multipart_error(e: &axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the upload is larger than {limit} bytes"))
    } else {
        ApiError::BadRequest(format!("could not read the multipart body: {e}"))
    }
}
