//! `/v1/sessions`: create, list, retrieve, release.

use super::error::ApiError;
use super::params::{self, Fields, MetadataQuery};
use super::{AppState, Auth, JsonObject, check_project_id};
use crate::model::{Session, SessionStatus};
use crate::sessions::NewSession;
use crate::store::SessionQuery;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::HashMap;

/// A session plus the credentials to connect to it (create and retrieve responses).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WithConnect<'a> {
    #[serde(flatten)]
    session: crate::model::SessionJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selenium_remote_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    /// browserd's own notes on the create (settings accepted without effect).
    #[serde(skip_serializing_if = "Option::is_none")]
    browserd: Option<serde_json::Value>,
}

fn with_connect<'a>(
    state: &AppState,
    headers: &HeaderMap,
    session: &'a Session,
) -> WithConnect<'a> {
    let live = !session.status.is_ended();
    let (connect_url, selenium_remote_url, signing_key) = if live {
        let token = crate::secrets::session_token(&state.secret, session.id);
        let base = super::public_base(state, headers);
        (
            Some(format!(
                "{}/?signingKey={token}",
                super::websocket_base_of(&base)
            )),
            Some(format!("{base}/webdriver")),
            Some(token),
        )
    } else {
        (None, None, None)
    };
    WithConnect {
        session: session.to_json(),
        connect_url,
        selenium_remote_url,
        signing_key,
        browserd: None,
    }
}

/// Loads a session of the caller's project; another project's session is "not found".
pub(super) async fn owned_session(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<Session, ApiError> {
    super::owned(auth, "session", id, |uuid| {
        state.store.sessions.get_session(uuid)
    })
    .await
}

/// `POST /v1/sessions`: create; or, with `sessionId` and `status: REQUEST_RELEASE` (the
/// docs' raw-API form), release.
pub(super) async fn create_or_release(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let fields = Fields(&body);
    check_project_id(&fields, &auth)?;
    if fields.has("status") {
        let id = fields.str("sessionId")?.ok_or_else(|| {
            ApiError::BadRequest("sessionId is required when status is given".into())
        })?;
        check_release_status(&fields)?;
        let session = release(&state, &auth, id).await?;
        return Ok(Json(session.to_json()).into_response());
    }
    let created = create_counted(&state, &auth, &fields).await?;
    let mut body = with_connect(&state, &headers, &created.session);
    if !created.ignored.is_empty() {
        body.browserd = Some(serde_json::json!({
            "ignoredSettings": created.ignored,
            "note": "browserd accepts these without effect: it does not solve captchas or disguise the browser",
        }));
    }
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Some(value) = unknown_fields_header(&created.unknown) {
        response.headers_mut().insert(UNKNOWN_FIELDS, value);
    }
    Ok(response)
}

/// The response header naming the create fields browserd does not know (and dropped).
const UNKNOWN_FIELDS: &str = "x-browserd-unknown-fields";

fn unknown_fields_header(unknown: &[String]) -> Option<axum::http::HeaderValue> {
    if unknown.is_empty() {
        return None;
    }
    axum::http::HeaderValue::from_str(&unknown.join(", ")).ok()
}

/// A session just created, and what of its create browserd did not act on.
struct Created {
    session: Session,
    /// browserSettings accepted without effect (turned on).
    ignored: Vec<&'static str>,
    /// Fields browserd does not know, dropped.
    unknown: Vec<String>,
}

/// [`create`], counted in the creates metric by outcome.
async fn create_counted(
    state: &AppState,
    auth: &Auth,
    fields: &Fields<'_>,
) -> Result<Created, ApiError> {
    let created = create(state, auth, fields).await;
    let outcome = match &created {
        Ok(_) => "created",
        Err(e) => outcome_of(e),
    };
    state
        .sessions
        .metrics()
        .creates
        .get_or_create(&crate::metrics::Outcome { outcome })
        .inc();
    created
}

/// `POST /v1/sessions/start`: the first call of the hosted Stagehand API (Stagehand 3 in
/// its default mode, the Browserbase MCP server without `--experimental`). browserd runs
/// no Stagehand of its own: it creates the session from `browserbaseSessionCreateParams`
/// (or names the live one `browserbaseSessionID` resumes) and answers `available: false`,
/// on which the client runs Stagehand itself against that session. The user's model key
/// (`x-model-api-key`) is never read here; the cluster router drops it before anything
/// else sees the request.
pub(super) async fn stagehand_start(
    State(state): State<AppState>,
    auth: Auth,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let fields = Fields(&body);
    let session = match fields.str("browserbaseSessionID")? {
        Some(id) => {
            let session = owned_session(&state, &auth, id).await?;
            if session.status.is_ended() {
                return Err(ApiError::Gone(format!(
                    "session {id} has ended ({}): start a new one",
                    session.status.as_str()
                )));
            }
            session
        }
        None => {
            let none = serde_json::Map::new();
            let params = Fields(
                fields
                    .object("browserbaseSessionCreateParams")?
                    .unwrap_or(&none),
            );
            check_project_id(&params, &auth)?;
            create_counted(&state, &auth, &params).await?.session
        }
    };
    Ok(Json(serde_json::json!({
        "success": true,
        "data": { "sessionId": session.id, "available": false },
    }))
    .into_response())
}

/// `POST /v1/sessions/{id}/end`: the hosted Stagehand API's release.
pub(super) async fn stagehand_end(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = release(&state, &auth, &id).await?;
    Ok(Json(serde_json::json!({
        "success": true,
        "data": { "sessionId": session.id, "status": session.status.as_str() },
    }))
    .into_response())
}

/// A refused create's outcome label.
fn outcome_of(e: &ApiError) -> &'static str {
    match e {
        ApiError::RateLimited { .. } => "rate_limited",
        ApiError::TooManyRequests { message, .. } if message.contains("max concurrent") => {
            "project_full"
        }
        ApiError::TooManyRequests { .. } => "server_full",
        ApiError::Draining(_) => "draining",
        ApiError::Unavailable(_) | ApiError::StoreUnavailable(_) | ApiError::NodeDown(_) => {
            "unavailable"
        }
        e if e.status().is_client_error() => "client_error",
        _ => "error",
    }
}

/// `POST /v1/sessions` without `status`: a new session, and what of the create it did not
/// act on.
async fn create(state: &AppState, auth: &Auth, fields: &Fields<'_>) -> Result<Created, ApiError> {
    let min = state.settings.min_timeout_secs;
    let timeout_secs = match (fields.integer("timeout")?, fields.integer("api_timeout")?) {
        (Some(t), _) => Some(params::check_timeout("timeout", t, min)?),
        (None, Some(t)) => Some(params::check_timeout("api_timeout", t, min)?),
        (None, None) => None,
    };
    let user_metadata = fields.object("userMetadata")?.cloned();
    if let Some(m) = &user_metadata {
        let value = serde_json::Value::Object(m.clone());
        // PostgreSQL's jsonb (which `q=` reads it as) cannot hold NUL: a stored one would
        // fail every such list of the project.
        if holds_nul(&value) {
            return Err(ApiError::BadRequest(
                "userMetadata must not contain NUL characters".into(),
            ));
        }
        let len = value.to_string().chars().count();
        if len >= params::MAX_USER_METADATA_CHARS {
            return Err(ApiError::BadRequest(format!(
                "userMetadata must be under {} characters as JSON (it is {len})",
                params::MAX_USER_METADATA_CHARS
            )));
        }
    }
    let region = match fields.str("region")? {
        Some(r) if params::REGIONS.contains(&r) => r.to_owned(),
        Some(r) => {
            return Err(ApiError::BadRequest(format!(
                "region must be one of {} (got {r:?})",
                params::REGIONS.join(", ")
            )));
        }
        None => params::REGIONS[0].to_owned(),
    };
    let settings = fields
        .object("browserSettings")?
        .map(params::browser_settings)
        .transpose()?;
    let extension_id = match fields.str("extensionId")? {
        Some(e) => Some(e.to_owned()),
        None => settings
            .as_ref()
            .and_then(|s| s.settings.extension_id.clone()),
    };
    let proxies = params::traffic_fields(fields, state.sessions.proxy_pool())?;
    let ignored = settings
        .as_ref()
        .map(|s| s.ignored.clone())
        .unwrap_or_default();
    let unknown = params::unknown_create_fields(fields.0, settings.as_ref());
    let ask = NewSession {
        project: auth.0.clone(),
        keep_alive: fields.bool("keepAlive")?.unwrap_or(false),
        timeout_secs,
        region,
        user_metadata,
        viewport: settings.as_ref().map(|s| s.viewport).unwrap_or_default(),
        settings: settings.map(|s| s.settings),
        extension_id,
        proxies,
        ca_certificate_ids: params::ca_certificate_ids(fields)?,
    };
    let session = state.sessions.create_session(&state.store, ask).await?;
    if !ignored.is_empty() {
        tracing::info!(session = %session.id, settings = ?ignored, "browserSettings accepted without effect");
    }
    if !unknown.is_empty() {
        tracing::info!(session = %session.id, fields = ?unknown, "create fields browserd does not know were dropped");
    }
    Ok(Created {
        session,
        ignored,
        unknown,
    })
}

fn check_release_status(fields: &Fields<'_>) -> Result<(), ApiError> {
    match fields.str("status")? {
        Some("REQUEST_RELEASE") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "status must be REQUEST_RELEASE (got {other:?})"
        ))),
        None => Err(ApiError::BadRequest(
            "status is required and must be REQUEST_RELEASE".into(),
        )),
    }
}

async fn release(state: &AppState, auth: &Auth, id: &str) -> Result<Session, ApiError> {
    let session = owned_session(state, auth, id).await?;
    if session.status.is_ended() {
        return Ok(session);
    }
    state
        .sessions
        .release(session.id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("session {id} vanished while releasing")))
}

/// `POST /v1/sessions/{id}` with `{"status": "REQUEST_RELEASE"}`.
pub(super) async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let fields = Fields(&body);
    check_project_id(&fields, &auth)?;
    check_release_status(&fields)?;
    let session = release(&state, &auth, &id).await?;
    Ok(Json(session.to_json()).into_response())
}

/// `GET /v1/sessions/{id}`; carries `connectUrl` while the session is live.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = owned_session(&state, &auth, &id).await?;
    Ok(Json(with_connect(&state, &headers, &session)).into_response())
}

/// `GET /v1/sessions?status=…&q=…`: the project's sessions, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = query
        .get("status")
        .map(|s| {
            SessionStatus::parse(s).ok_or_else(|| {
                let all: Vec<_> = SessionStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::BadRequest(format!(
                    "status must be one of {} (got {s:?})",
                    all.join(", ")
                ))
            })
        })
        .transpose()?;
    let q = query
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .map(|q| MetadataQuery::parse(q))
        .transpose()?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_LIST_LIMIT} (got {raw:?})"
                ))
            })?,
    };
    let page_size = if q.is_some() { limit.max(1000) } else { limit };
    let mut page = SessionQuery {
        status,
        metadata: q.as_ref().map(|q| (q.path.as_slice(), q.value.as_str())),
        ..SessionQuery::newest(Some(&auth.0.id), page_size)
    };
    let mut found: Vec<Session> = Vec::new();
    // The store narrows by the metadata query where it can; each session is checked here
    // again, and pages are read until `limit` sessions match (a store that could not
    // narrow returns others too), so a rare match costs a scan, never an unbounded answer.
    loop {
        let sessions = state.store.sessions.list_sessions(page).await?;
        let next = match sessions.last() {
            Some(last) if sessions.len() == page.limit as usize => Some(page.next_page(last)),
            _ => None,
        };
        let wanted = limit as usize - found.len();
        found.extend(
            sessions
                .into_iter()
                .filter(|s| {
                    q.as_ref()
                        .is_none_or(|q| q.matches(s.user_metadata.as_ref()))
                })
                .take(wanted),
        );
        match next {
            Some(next) if found.len() < limit as usize => page = next,
            _ => break,
        }
    }
    let body: Vec<_> = found.iter().map(Session::to_json).collect();
    Ok(Json(body).into_response())
}

/// Sessions `GET /v1/sessions` returns without a `limit` (the newest): the SDKs have no
/// paging, and an answer of every session ever kept would grow without bound.
const DEFAULT_LIST_LIMIT: u32 = 1000;
const MAX_LIST_LIMIT: u32 = 10_000;

/// Whether a NUL character is in any key or string of `v`.
fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}
