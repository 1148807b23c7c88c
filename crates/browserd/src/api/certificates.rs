//! `/v1/certificates`: CA certificates a project uploads for its sessions to trust, named
//! by id in a create's `proxySettings.caCertificates`.

use super::error::ApiError;
use super::multipart::receive_file;
use super::{AppState, Auth};
use crate::browser::trust::{MAX_CERTIFICATE_BYTES, MAX_CERTIFICATE_FILES_PER_PROJECT, normalize};
use crate::model::Certificate;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `POST /v1/certificates`, multipart part `file`: PEM (one or more certificates) or DER.
pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> Result<Response, ApiError> {
    let kept = state
        .store
        .certificates
        .list_certificates(&auth.0.id)
        .await?
        .len();
    if kept >= MAX_CERTIFICATE_FILES_PER_PROJECT {
        return Err(ApiError::BadRequest(format!(
            "this project keeps {kept} certificate files, the most it may: delete one first (DELETE /v1/certificates/{{id}})"
        )));
    }
    let files = state.sessions.files();
    let received = receive_file(req, &state, files.tmp_path(), MAX_CERTIFICATE_BYTES).await?;
    let bytes = tokio::fs::read(received.path())
        .await
        .map_err(|e| ApiError::Internal(format!("could not read the upload: {e}")))?;
    drop(received);
    let now = crate::model::now();
    let (pem, _) = normalize(&bytes, now.unix_timestamp()).map_err(ApiError::from)?;
    let certificate = Certificate {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: auth.0.id.clone(),
        pem,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .certificates
        .insert_certificate(&certificate)
        .await?;
    Ok(Json(certificate_json(&certificate)).into_response())
}

/// A certificate as JSON: the SDKs' shape, plus (a browserd extension) each certificate of
/// the file's subject and expiry, never its key material or the file.
fn certificate_json(certificate: &Certificate) -> serde_json::Value {
    let mut json = serde_json::to_value(certificate.to_json()).expect("a certificate serialises");
    json["certificates"] = crate::browser::trust::describe(&certificate.pem)
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "subject": d.subject,
                "expiresAt": time::OffsetDateTime::from_unix_timestamp(d.expires_at)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            })
        })
        .collect();
    json
}

/// `GET /v1/certificates`: the project's, oldest first.
pub(super) async fn list(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let all = state
        .store
        .certificates
        .list_certificates(&auth.0.id)
        .await?;
    let json: Vec<_> = all.iter().map(certificate_json).collect();
    Ok(Json(json).into_response())
}

/// A certificate of the caller's project; another project's is "not found".
pub(super) async fn owned_certificate(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<Certificate, ApiError> {
    super::owned(auth, "certificate", id, |uuid| async move {
        state
            .store
            .certificates
            .get_certificate(&uuid.to_string())
            .await
    })
    .await
}

/// `GET /v1/certificates/{id}`.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let certificate = owned_certificate(&state, &auth, &id).await?;
    Ok(Json(certificate_json(&certificate)).into_response())
}

/// `DELETE /v1/certificates/{id}`. Sessions already running keep trusting it (their
/// browser's database was written at launch); new ones can no longer name it.
pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let certificate = owned_certificate(&state, &auth, &id).await?;
    state
        .store
        .certificates
        .delete_certificate(&certificate.id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
