//! The HTTP face of browserd: the Browserbase REST API under `/v1` and the websocket
//! `connectUrl` at `/`. Handlers parse, authenticate and shape JSON; the rules live in
//! [`crate::sessions`].

mod access_log;
pub(crate) use access_log::access_log;
mod certificates;
mod connect;
pub use connect::InsideDoor;
pub use projects::MAX_KEYS_PER_PROJECT;
mod contexts;
pub(crate) mod error;
mod extensions;
mod health;
pub mod inspector;
pub(crate) mod metrics;
mod multipart;
mod navigation_policies;
mod nodes;
pub(crate) mod overview;
mod params;
mod projects;
mod routing;
mod session_files;
mod session_inspect;
mod sessions;
mod ui;
mod upgrade;
pub(crate) mod webdriver;

use crate::model::Project;
use crate::secrets::{SigningSecret, hash_api_key};
use crate::sessions::SessionManager;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post};
use error::ApiError;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Settings the API needs from the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base of every `connectUrl`; `None`: taken from the request's `Host`.
    pub public_url: Option<String>,
    /// Lowest `timeout` a session may ask for, in seconds.
    pub min_timeout_secs: u64,
    /// Largest websocket message relayed in either direction.
    pub max_message_size: usize,
    /// The memory large websocket messages may hold, all connections together.
    pub message_budget: crate::cdp::budget::MessageBudget,
    /// Largest file `POST /v1/sessions/{id}/uploads` takes.
    pub max_upload_bytes: u64,
    /// How long ended sessions are kept before the retention sweep deletes them.
    pub retention: std::time::Duration,
    /// Pings and the idle limit for connected clients.
    pub client_watch: crate::cdp::relay::ClientWatch,
    /// `--max-connections-per-address`.
    pub max_connections_per_address: usize,
    /// The live view's `frame-ancestors` (`--live-view-frame-ancestors`); `None`: any page.
    pub live_view_frame_ancestors: Option<axum::http::HeaderValue>,
}

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub sessions: Arc<SessionManager>,
    /// This node's place among the nodes sharing the store (alone, with SQLite).
    pub cluster: Arc<crate::cluster::Cluster>,
    pub secret: SigningSecret,
    pub settings: Arc<ApiSettings>,
    /// The last hour of this server's figures, for the dashboard's overview.
    pub history: Arc<overview::History>,
    /// Live-view and DevTools sockets open now, bounded per session and per link.
    pub viewers: Arc<inspector::Viewers>,
}

/// Request bodies are small JSON documents; anything larger is refused with 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a request body may go without sending a byte.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    // Multipart routes take files; the limit is theirs to check while streaming, plus room
    // for the multipart framing.
    let upload_limit = DefaultBodyLimit::max(
        usize::try_from(state.settings.max_upload_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1024 * 1024),
    );
    let extension_limit = DefaultBodyLimit::max(extensions_limit_bytes());
    Router::new()
        .route("/", get(connect::connect))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/json/version", get(connect::json_version))
        .route("/json/version/", get(connect::json_version))
        .route(
            "/v1/sessions",
            get(sessions::list).post(sessions::create_or_release),
        )
        .route(
            "/v1/sessions/{id}",
            get(sessions::retrieve).post(sessions::update),
        )
        .route("/v1/sessions/start", post(sessions::stagehand_start))
        .route("/v1/sessions/{id}/end", post(sessions::stagehand_end))
        .route(
            "/v1/sessions/{id}/uploads",
            post(session_files::upload).layer(upload_limit),
        )
        .route("/v1/sessions/{id}/downloads", get(session_files::downloads))
        .route("/v1/sessions/{id}/debug", get(session_inspect::debug))
        .route("/v1/sessions/{id}/logs", get(session_inspect::logs))
        .route(
            "/v1/sessions/{id}/recording",
            get(session_inspect::recording),
        )
        .route("/debug/{token}/live", get(inspector::live_page))
        .route("/debug/{token}/tabs", get(inspector::tabs))
        .route("/debug/{token}/screencast", get(inspector::screencast))
        .route(
            "/debug/{token}/devtools/browser",
            get(inspector::devtools_browser_ws),
        )
        .route(
            "/debug/{token}/devtools/page/{tab}",
            get(inspector::devtools_page_ws),
        )
        .route(
            "/debug/{token}/devtools/{*path}",
            get(inspector::devtools_files),
        )
        .route("/v1/contexts", post(contexts::create))
        .route(
            "/v1/contexts/{id}",
            get(contexts::retrieve)
                .put(contexts::update)
                .delete(contexts::delete),
        )
        .route(
            "/v1/contexts/{id}/upload",
            axum::routing::any(contexts::upload_sentinel),
        )
        .route(
            "/v1/extensions",
            post(extensions::create).layer(extension_limit),
        )
        .route(
            "/v1/extensions/{id}",
            get(extensions::retrieve).delete(extensions::delete),
        )
        .route(
            "/v1/certificates",
            post(certificates::create).get(certificates::list),
        )
        .route(
            "/v1/certificates/{id}",
            get(certificates::retrieve).delete(certificates::delete),
        )
        .route(
            "/v1/navigation-policies",
            post(navigation_policies::create).get(navigation_policies::list),
        )
        .route(
            "/v1/navigation-policies/{id}",
            get(navigation_policies::retrieve)
                .patch(navigation_policies::update)
                .delete(navigation_policies::delete),
        )
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/overview", get(overview::overview))
        .route("/metrics", get(metrics::with_key))
        .route("/v1/projects", get(projects::list))
        .route(
            "/v1/projects/{id}",
            get(projects::retrieve).patch(projects::update),
        )
        .route("/v1/projects/{id}/usage", get(projects::usage))
        .route(
            "/v1/projects/{id}/keys",
            get(projects::list_keys).post(projects::create_key),
        )
        .route(
            "/v1/projects/{id}/keys/{key_id}",
            axum::routing::delete(projects::revoke_key),
        )
        .route("/openapi.json", get(openapi))
        .route("/dashboard", get(ui::dashboard))
        .route("/ui/rrweb/replay.min.js", get(ui::replay_js))
        .route("/ui/rrweb/replay.min.css", get(ui::replay_css))
        .route("/webdriver", axum::routing::any(webdriver::webdriver))
        .route(
            "/webdriver/{*rest}",
            axum::routing::any(webdriver::webdriver),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A body that stops arriving fails its request instead of holding it (and its
        // connection) forever; a slow upload that keeps sending is fine.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_IDLE_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routing::route_to_owner,
        ))
        // Outermost: forwarded requests are logged too, with the id the owner logs them under.
        .layer(axum::middleware::from_fn(access_log::access_log))
        .with_state(state)
}

/// An extension zip may be 100 MiB; the multipart framing needs a little more.
fn extensions_limit_bytes() -> usize {
    crate::files::extensions::MAX_EXTENSION_BYTES as usize + 1024 * 1024
}

/// The record `id` names if it is the caller's project's. A malformed id, a missing record
/// and another project's record all answer the same 404, so ids leak nothing.
async fn owned<T, Fut>(
    auth: &Auth,
    what: &str,
    id: &str,
    fetch: impl FnOnce(uuid::Uuid) -> Fut,
) -> Result<T, ApiError>
where
    T: crate::model::ProjectOwned,
    Fut: std::future::Future<Output = crate::store::Result<Option<T>>>,
{
    crate::store::owned_by(&auth.0.id, id, fetch)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{what} {id} not found")))
}

/// Refuses a `projectId` in a body that is not the API key's project.
fn check_project_id(fields: &params::Fields<'_>, auth: &Auth) -> Result<(), ApiError> {
    match fields.str("projectId")? {
        Some(p) if p != auth.0.id => Err(ApiError::Forbidden(format!(
            "projectId {p} does not match the API key's project"
        ))),
        _ => Ok(()),
    }
}

/// The API's OpenAPI 3 description, written by hand next to the handlers it describes;
/// the test suite runs schemathesis against it and the live server.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// The project an `X-BB-API-Key` header belongs to.
#[derive(Debug)]
pub struct Auth(pub Project);

impl Auth {
    /// The project of the `X-BB-API-Key` in `headers` (also checked by the cluster's routing
    /// before it forwards, so nothing unauthenticated leaves a node).
    pub async fn from_headers(
        headers: &axum::http::HeaderMap,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let key = headers
            .get("x-bb-api-key")
            .ok_or_else(|| ApiError::Unauthorized("missing X-BB-API-Key header".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("invalid API key".into()))?;
        state
            .store
            .projects
            .project_for_key(&hash_api_key(key))
            .await?
            .map(Auth)
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers, state).await
    }
}

/// A JSON object body. An empty body counts as `{}` (the SDKs send `Content-Type:
/// application/json` with no body on some calls); bad JSON and oversized bodies get our
/// error shape instead of axum's plain text.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!(
                        "request body is larger than the {MAX_BODY_BYTES} bytes allowed"
                    ))
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {rejection}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        // Strictly, as the CDP filter parses: a key given twice is refused, not "last wins"
        // (a proxy or logger in front may have read the first).
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
        match crate::cdp::filter::parse_strict(text) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::BadRequest("body must be a JSON object".into())),
            Err(e) => Err(ApiError::BadRequest(format!("body is not valid JSON: {e}"))),
        }
    }
}

/// `http(s)://host[:port][/prefix]` without a trailing slash: `--public-url`, else the
/// request's `Host`.
fn public_base(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    if let Some(url) = &state.settings.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// [`public_base`] with the websocket scheme: `wss://` behind `https://`.
fn websocket_base(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    websocket_base_of(&public_base(state, headers))
}

/// `base` (from [`public_base`]) with the websocket scheme.
fn websocket_base_of(base: &str) -> String {
    match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    }
}

/// Checks a timeout given outside the HTTP API (the CLI) by the same rule as `timeout`.
pub fn check_timeout_secs(secs: u64, min: u64) -> Result<u64, ApiError> {
    params::check_timeout("timeout", secs.min(i64::MAX as u64) as i64, min)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_is_valid_json_and_names_every_route() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for route in [
            "/v1/sessions",
            "/v1/sessions/{id}",
            "/v1/nodes",
            "/v1/overview",
            "/v1/projects",
            "/v1/projects/{id}",
            "/v1/projects/{id}/usage",
            "/v1/projects/{id}/keys",
            "/v1/projects/{id}/keys/{keyId}",
            "/v1/sessions/{id}/uploads",
            "/v1/sessions/{id}/downloads",
            "/v1/contexts",
            "/v1/contexts/{id}",
            "/v1/extensions",
            "/v1/extensions/{id}",
            "/v1/certificates",
            "/v1/certificates/{id}",
            "/v1/sessions/{id}/debug",
            "/v1/sessions/{id}/logs",
            "/v1/sessions/{id}/recording",
        ] {
            assert!(paths.contains(&route), "{route} is not described");
        }
    }
}
