//! The `connectUrl` websocket: `/?signingKey=TOKEN`, or the legacy
//! `/?apiKey=KEY&sessionId=ID`. Everything that can be refused is refused with an HTTP
//! status and a JSON message before the upgrade; after it, [`crate::cdp::relay`] runs.

use super::AppState;
use super::error::ApiError;
use super::upgrade::Upgrade;
use crate::browser::egress::OwnConnect;
use crate::cdp::budget::MessageBudget;
use crate::cdp::relay::ClientWatch;
use crate::secrets::{SigningSecret, hash_api_key, verify_session_token};
use crate::sessions::{AttachError, ClientLease, SessionManager};
use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Which session a connect request is for, if its credentials are right.
pub(super) async fn authenticate(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Result<Uuid, ApiError> {
    if let Some(token) = query.get("signingKey") {
        return verify_session_token(&state.secret, token)
            .ok_or_else(|| ApiError::Unauthorized("invalid signingKey for this server".into()));
    }
    if let Some(key) = query.get("apiKey") {
        let project = state
            .store
            .projects
            .project_for_key(&hash_api_key(key))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("invalid apiKey".into()))?;
        let id = query.get("sessionId").ok_or_else(|| {
            ApiError::BadRequest(
                "sessionId is required with apiKey; create a session with POST /v1/sessions first"
                    .into(),
            )
        })?;
        let not_found = || ApiError::NotFound(format!("session {id} not found"));
        let uuid = Uuid::try_parse(id).map_err(|_| not_found())?;
        return match state.store.sessions.get_session(uuid).await? {
            Some(s) if s.project_id == project.id => Ok(uuid),
            _ => Err(not_found()),
        };
    }
    Err(ApiError::Unauthorized(
        "missing credentials: connect with the session's connectUrl (?signingKey=...)".into(),
    ))
}

/// Why a session cannot be connected to: gone (410) if it ended, else not found.
async fn not_live(state: &AppState, id: Uuid) -> ApiError {
    match state.store.sessions.get_session(id).await {
        Ok(Some(s)) if s.status.is_ended() => ApiError::Gone(format!(
            "session {id} has ended ({}): {}",
            s.status.as_str(),
            s.end_reason.as_deref().unwrap_or("no reason recorded")
        )),
        Ok(_) => ApiError::NotFound(format!("session {id} is not running on this server")),
        Err(e) => e.into(),
    }
}

/// `GET /?signingKey=…` with a websocket upgrade.
pub(super) async fn connect(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    // A person opening the server's address in a browser gets the dashboard.
    if query.is_empty() && !req.headers().contains_key(axum::http::header::UPGRADE) {
        return Ok(axum::response::Redirect::to("dashboard").into_response());
    }
    let id = authenticate(&state, &query).await?;
    let upgrade = Upgrade::from_request(
        &mut req,
        "connect to it with a CDP client such as Playwright's connect_over_cdp or Puppeteer's connect",
    )?;
    let lease = match state.sessions.attach(id) {
        Ok(lease) => lease,
        Err(AttachError::NotLive(id)) => return Err(not_live(&state, id).await),
        Err(e) => return Err(attach_refused(e)),
    };

    relay_client(
        state.sessions.dialer(),
        std::sync::Arc::clone(state.sessions.metrics()),
        lease,
        upgrade,
        state.settings.max_message_size,
        state.settings.client_watch,
        state.settings.message_budget.clone(),
    )
    .await
}

/// Opens the browser leg for `lease`, answers the handshake and relays until the client or
/// the session ends.
async fn relay_client(
    dialer: crate::netns::Dialer,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    lease: ClientLease,
    upgrade: Upgrade,
    max: usize,
    watch: ClientWatch,
    budget: MessageBudget,
) -> Result<Response, ApiError> {
    let id = lease.session_id();
    // The browser leg is opened before the client's handshake is answered, so a client
    // whose handshake succeeded can use the browser at once.
    let browser = crate::cdp::relay::connect_browser(&dialer, lease.cdp_url(), max, Some(&budget))
        .await
        .map_err(|e| {
            tracing::warn!(session = %id, error = %e, "could not reach the session's browser");
            ApiError::BadGateway("browserd could not reach the session's browser".into())
        })?;
    let response = upgrade.response();
    // Owns this client's connection until it or the session ends.
    tokio::spawn(async move {
        let config = crate::cdp::relay::client_ws_config(max);
        if let Some(ws) = upgrade.websocket_with(config, &budget).await {
            crate::cdp::relay::run(ws, browser, lease, watch, metrics).await;
        }
    });
    Ok(response)
}

/// `GET /json/version/?signingKey=…`: what Playwright asks when given an `http://` URL.
pub(super) async fn json_version(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = authenticate(&state, &query).await?;
    if !state.sessions.is_live(id) {
        return Err(not_live(&state, id).await);
    }
    let qs: Vec<String> = query
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "signingKey" | "apiKey" | "sessionId"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let base = super::websocket_base(&state, &headers);
    Ok(Json(serde_json::json!({
        "Browser": "browserd/Chromium",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": format!("{base}/?{}", qs.join("&")),
    }))
    .into_response())
}

/// Why a client of a live session was not let in.
fn attach_refused(e: AttachError) -> ApiError {
    match e {
        AttachError::NotLive(id) => ApiError::NotFound(format!("session {id} is not running")),
        AttachError::Starting(_) => ApiError::Conflict(e.to_string()),
        AttachError::TooManyClients { .. } => ApiError::TooManyRequests {
            message: e.to_string(),
            retry: false,
        },
    }
}

/// How long a session's browser may take to send its request's headers through the door.
const INSIDE_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The door a session's own browser reaches its own `connectUrl` through (see
/// [`OwnConnect`]: Stagehand 4's extension opens it from inside the browser). The egress
/// hands over the page's socket; on it only `GET /?signingKey=…` with a websocket upgrade
/// is served, for that session's own signing key, from an extension or a client without an
/// `Origin`. Everything else is a 403: the door cannot be widened to the API, another
/// session, the dashboard or the live view, and a page's script cannot use it.
#[derive(Debug, Clone)]
pub struct InsideDoor {
    /// The port connectUrls are served on, on this machine.
    api_port: u16,
    secret: SigningSecret,
    /// Weak: the manager holds the door.
    sessions: std::sync::Weak<SessionManager>,
    max_message_size: usize,
    watch: ClientWatch,
    budget: MessageBudget,
}

impl InsideDoor {
    pub fn new(state: &AppState, api_port: u16) -> Self {
        Self {
            api_port,
            secret: state.secret.clone(),
            sessions: Arc::downgrade(&state.sessions),
            max_message_size: state.settings.max_message_size,
            watch: state.settings.client_watch,
            budget: state.settings.message_budget.clone(),
        }
    }
}

/// One connection through the door: the door, and whose browser came through it.
#[derive(Debug, Clone)]
struct Inside {
    door: InsideDoor,
    session: Uuid,
}

impl OwnConnect for InsideDoor {
    fn serves(&self, port: u16) -> bool {
        port == self.api_port
    }

    fn enter(
        &self,
        session: Uuid,
        page: tokio::net::TcpStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let inside = Arc::new(Inside {
            door: self.clone(),
            session,
        });
        Box::pin(async move {
            let app = axum::Router::new()
                .route("/", axum::routing::get(enter_own))
                .fallback(only_own)
                .with_state(inside);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(INSIDE_HEADER_TIMEOUT)
                // One request per connection: the upgrade, or its refusal.
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(page), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%session, error = %e, "a browser's connection to its own session failed");
            }
        })
    }
}

/// What the door says to anything but the session's own connect websocket.
const ONLY_OWN: &str = "from inside a session's browser, only that session's own connectUrl can be opened (by an extension)";

async fn only_own() -> ApiError {
    ApiError::Forbidden(ONLY_OWN.into())
}

/// `GET /?signingKey=…` from the session's own browser.
async fn enter_own(
    State(inside): State<Arc<Inside>>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    // Pages have an http(s) origin and no business here; extensions have their own.
    let from_extension = match req.headers().get(axum::http::header::ORIGIN) {
        None => true,
        Some(origin) => origin.as_bytes().starts_with(b"chrome-extension://"),
    };
    let own = query
        .get("signingKey")
        .and_then(|token| verify_session_token(&inside.door.secret, token))
        == Some(inside.session);
    if !from_extension || !own {
        // Debug: any page can knock, as often as it likes.
        tracing::debug!(session = %inside.session, from_extension, own, "a browser's request to browserd refused at its door");
        return Err(ApiError::Forbidden(ONLY_OWN.into()));
    }
    let upgrade = Upgrade::from_request(&mut req, "open it as a websocket")?;
    let sessions = inside
        .door
        .sessions
        .upgrade()
        .ok_or_else(|| ApiError::Unavailable("browserd is stopping".into()))?;
    let lease = sessions
        .attach_from_inside(inside.session)
        .map_err(attach_refused)?;
    tracing::debug!(session = %inside.session, "the session's own browser connected to it");
    relay_client(
        sessions.dialer(),
        std::sync::Arc::clone(sessions.metrics()),
        lease,
        upgrade,
        inside.door.max_message_size,
        inside.door.watch,
        inside.door.budget.clone(),
    )
    .await
}
