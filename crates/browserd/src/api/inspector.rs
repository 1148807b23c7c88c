//! The inspector's own URLs, `/debug/{grant}/...`: the live view page and its screencast
//! websocket, the tab list, Chrome DevTools (the front end Chromium carries, served through
//! browserd) and the debug websockets. The signed grant in the path is the only credential,
//! so the URLs work in another site's iframe; they stop at the grant's expiry or the
//! session's end.

use super::AppState;
use super::error::ApiError;
use super::upgrade::Upgrade;
use crate::inspect;
use crate::secrets::{Access, InspectGrant};
use crate::sessions::Inspectable;
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;
use std::future::Future;

/// The live view page (its script inline, so the page is one request and embeds anywhere).
const LIVE_HTML: &str = include_str!("../../assets/ui/live.html");

/// Largest DevTools message relayed (heap snapshots and screenshots are large).
const MAX_DEVTOOLS_MESSAGE: usize = 256 * 1024 * 1024;

/// Live-view and DevTools sockets one session may have open at once, all links together.
pub const MAX_VIEWERS_PER_SESSION: usize = 20;

/// Sockets one inspector link may have open at once: a link can be pasted anywhere, and
/// must not take a session's (or the server's) sockets by itself.
pub const MAX_VIEWERS_PER_LINK: usize = 10;

/// The inspector sockets open now, by session and by link. Each socket holds a
/// [`ViewerSeat`] for its life; past a limit, the next is refused (429) before the upgrade.
#[derive(Debug)]
pub struct Viewers {
    /// A std mutex: held for two map updates, never across an await.
    open: std::sync::Mutex<HashMap<ViewerKey, usize>>,
    /// DevTools front-end files being fetched from browsers, all sessions together: each
    /// may hold up to 32 MiB (twice, with the storage stand-in), and a browser is not
    /// trusted to answer small.
    fetches: tokio::sync::Semaphore,
}

impl Default for Viewers {
    fn default() -> Self {
        Self {
            open: Default::default(),
            fetches: tokio::sync::Semaphore::new(DEVTOOLS_FETCHES),
        }
    }
}

/// DevTools front-end files fetched at once (DevTools asks for about 200 when it opens).
const DEVTOOLS_FETCHES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ViewerKey {
    Session(uuid::Uuid),
    /// The grant a link carries, as verified: one grant spelled several ways (a uuid in
    /// upper case, an expiry with leading zeros) is one link.
    Link(uuid::Uuid, i64, Access),
}

/// One inspector socket's place; freed when dropped.
pub struct ViewerSeat {
    viewers: std::sync::Arc<Viewers>,
    keys: [ViewerKey; 2],
}

impl Viewers {
    fn seat(self: &std::sync::Arc<Self>, grant: &InspectGrant) -> Result<ViewerSeat, ApiError> {
        let session = grant.session;
        let keys = [
            ViewerKey::Session(session),
            ViewerKey::Link(session, grant.expires_at, grant.access),
        ];
        let mut open = self.open.lock().unwrap();
        let count = |k: &ViewerKey| open.get(k).copied().unwrap_or(0);
        if count(&keys[0]) >= MAX_VIEWERS_PER_SESSION {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "session {session} already has {MAX_VIEWERS_PER_SESSION} live-view and DevTools connections open; close one first"
                ),
                retry: false,
            });
        }
        if count(&keys[1]) >= MAX_VIEWERS_PER_LINK {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "this inspector link already has {MAX_VIEWERS_PER_LINK} connections open; close one first"
                ),
                retry: false,
            });
        }
        for k in &keys {
            *open.entry(k.clone()).or_default() += 1;
        }
        Ok(ViewerSeat {
            viewers: std::sync::Arc::clone(self),
            keys,
        })
    }
}

impl Drop for ViewerSeat {
    fn drop(&mut self) {
        let mut open = self.viewers.open.lock().unwrap();
        for k in &self.keys {
            if let Some(n) = open.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    open.remove(k);
                }
            }
        }
    }
}

/// A grant checked against the clock and the session: what a `/debug` request may see.
struct Checked {
    grant: InspectGrant,
    session: Inspectable,
}

/// Which links a `/debug` route takes.
#[derive(Clone, Copy, PartialEq)]
enum Wants {
    LiveView,
    DevTools,
}

async fn check(state: &AppState, token: &str, wants: Wants) -> Result<Checked, ApiError> {
    let grant = state
        .secret
        .verify_grant(token)
        .ok_or_else(|| ApiError::Unauthorized("this inspector link is not valid".into()))?;
    match (wants, grant.access) {
        (Wants::LiveView, access) if access.is_live_view() => {}
        (Wants::DevTools, Access::DevTools) => {}
        (Wants::LiveView, _) => {
            return Err(ApiError::Forbidden(
                "this is a DevTools link; the live view has links of its own (debuggerFullscreenUrl)".into(),
            ));
        }
        (Wants::DevTools, Access::Watch) => {
            return Err(ApiError::Forbidden(
                "a read-only inspector link does not open DevTools".into(),
            ));
        }
        (Wants::DevTools, _) => {
            return Err(ApiError::Forbidden(
                "a live-view link does not open DevTools; use debuggerUrl or wsUrl from GET /v1/sessions/{id}/debug".into(),
            ));
        }
    }
    if grant.expires_at <= crate::model::now().unix_timestamp() {
        return Err(ApiError::Unauthorized(
            "this inspector link has expired; ask GET /v1/sessions/{id}/debug for a new one".into(),
        ));
    }
    match state.sessions.inspect(grant.session) {
        Some(session) => Ok(Checked { grant, session }),
        None => {
            let ended = state.store.sessions.get_session(grant.session).await?;
            Err(ApiError::Gone(match ended {
                Some(s) => format!("session {} has ended ({})", s.id, s.status.as_str()),
                None => format!("session {} is not running", grant.session),
            }))
        }
    }
}

/// Resolves when the viewer must go: the session ended, or the grant expired.
fn until_over(checked: &Checked) -> impl Future<Output = String> + Send + 'static {
    let mut ended = checked.session.farewell.clone();
    let left = checked.grant.expires_at - crate::model::now().unix_timestamp();
    let expiry = std::time::Duration::from_secs(left.max(0) as u64);
    async move {
        tokio::select! {
            farewell = ended.wait_for(Option::is_some) => farewell
                .ok()
                .and_then(|f| f.as_ref().map(|f| f.reason().to_owned()))
                .unwrap_or_else(|| "the session ended".into()),
            () = tokio::time::sleep(expiry) => "this inspector link has expired".into(),
        }
    }
}

/// `GET /debug/{grant}/live[?page=ID]`: the live view page.
pub async fn live_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    check(&state, &token, Wants::LiveView).await?;
    let mut response = Html(LIVE_HTML).into_response();
    // Meant to be embedded: by any page unless the operator names which; never cached
    // (the grant expires).
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(policy) = &state.settings.live_view_frame_ancestors {
        h.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    }
    Ok(response)
}

/// `GET /debug/{grant}/tabs`: the session's tabs, the primary first, and whether this link
/// may send input.
pub async fn tabs(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let checked = check(&state, &token, Wants::LiveView).await?;
    let tabs = inspect::tabs(
        &state.sessions.dialer(),
        &checked.session.cdp_url,
        checked.session.primary_tab.as_deref(),
    )
    .await
    .map_err(|e| ApiError::BadGateway(format!("could not list the browser's tabs: {e}")))?;
    Ok(Json(serde_json::json!({
        "tabs": tabs,
        "readOnly": checked.grant.access == Access::Watch,
        "expiresAt": checked.grant.expires_at,
    }))
    .into_response())
}

/// The page-level CDP url of `tab`, or of the primary tab.
async fn tab_ws(
    dialer: &crate::netns::Dialer,
    session: &Inspectable,
    tab: Option<&String>,
) -> Result<String, ApiError> {
    let authority = inspect::devtools_authority(&session.cdp_url)
        .ok_or_else(|| ApiError::Internal("malformed CDP url".into()))?;
    let id = match tab.or(session.primary_tab.as_ref()) {
        Some(id) => id.clone(),
        None => {
            inspect::tabs(dialer, &session.cdp_url, None)
                .await
                .map_err(|e| {
                    ApiError::BadGateway(format!("could not list the browser's tabs: {e}"))
                })?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::NotFound("the session has no tab open".into()))?
                .id
        }
    };
    // Target ids are hex; anything else could make another path on the browser's server.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound(format!("no tab {id:?}")));
    }
    Ok(format!("ws://{authority}/devtools/page/{id}"))
}

/// `GET /debug/{grant}/screencast[?page=ID]` (websocket): the live view's stream.
pub async fn screencast(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let checked = check(&state, &token, Wants::LiveView).await?;
    let upgrade = Upgrade::from_request(&mut req, "the live view page opens it")?;
    let seat = state.viewers.seat(&checked.grant)?;
    let dialer = state.sessions.dialer();
    let tab = tab_ws(&dialer, &checked.session, query.get("page")).await?;
    let stop = until_over(&checked);
    let read_only = checked.grant.access == Access::Watch;
    let budget = state.settings.message_budget.clone();
    let response = upgrade.response();
    // Serves this viewer until it leaves or its session or grant ends; holds its seat.
    tokio::spawn(async move {
        let _seat = seat;
        if let Some(ws) = upgrade.websocket(1024 * 1024, &budget).await {
            inspect::live::serve(&dialer, ws, &tab, read_only, stop).await;
        }
    });
    Ok(response)
}

/// `GET /debug/{grant}/devtools/page/{tab}` and `/devtools/browser` (websockets): CDP for
/// DevTools and debuggers, piped to the browser. Not counted as clients of the session.
pub async fn devtools_ws(
    state: &AppState,
    token: &str,
    tab: Option<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let checked = check(state, token, Wants::DevTools).await?;
    let upgrade = Upgrade::from_request(&mut req, "Chrome DevTools or a CDP client opens it")?;
    let seat = state.viewers.seat(&checked.grant)?;
    let budget = state.settings.message_budget.clone();
    let target = match &tab {
        Some(_) => tab_ws(&state.sessions.dialer(), &checked.session, tab.as_ref()).await?,
        None => checked.session.cdp_url.clone(),
    };
    let browser = crate::cdp::relay::connect_browser(
        &state.sessions.dialer(),
        &target,
        MAX_DEVTOOLS_MESSAGE,
        Some(&budget),
    )
    .await
    .map_err(|e| ApiError::BadGateway(format!("could not reach the tab: {e}")))?;
    let stop = until_over(&checked);
    let rules = std::sync::Arc::clone(&checked.session.rules);
    let response = upgrade.response();
    // Pipes this inspector client until it leaves or its session or grant ends; holds its
    // seat.
    tokio::spawn(async move {
        let _seat = seat;
        if let Some(ws) = upgrade.websocket(MAX_DEVTOOLS_MESSAGE, &budget).await {
            inspect::pipe::run(ws, browser, &rules, stop).await;
        }
    });
    Ok(response)
}

pub async fn devtools_page_ws(
    State(state): State<AppState>,
    Path((token, tab)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    devtools_ws(&state, &token, Some(tab), req).await
}

pub async fn devtools_browser_ws(
    State(state): State<AppState>,
    Path(token): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    devtools_ws(&state, &token, None, req).await
}

/// The content type of a DevTools front-end file, by its extension: browserd's, never the
/// one the session's browser answers with.
fn devtools_content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "avif" => "image/avif",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// Whether a DevTools page's `ws=`/`wss=` target is this link's own websocket: the front
/// end connects wherever that parameter says, so a crafted link on browserd's origin could
/// otherwise point it at a stranger's server.
/// `base` is browserd's public base as this request sees it (`http://host:port[/prefix]`),
/// from which the link's own target was made.
fn own_devtools_target(target: &str, token: &str, base: &str) -> bool {
    let base = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .unwrap_or(base);
    target
        .strip_prefix(&format!("{base}/debug/{token}/devtools/"))
        .is_some_and(|rest| rest == "browser" || rest.starts_with("page/"))
}

/// The DevTools front end's policy. Its bytes come from the session's browser, which a
/// tenant's page may have taken over, so they must not run as browserd's origin (where they
/// could open the dashboard in a window of their own and read what is typed into it):
/// `sandbox` without `allow-same-origin` gives the front end an opaque origin of its own,
/// with no storage, cookies or same-origin reach into browserd's pages.
/// Its connections go to browserd only (the link's own websocket, checked besides), and it
/// posts no forms: a page of the browser's making cannot send what is typed into it away.
const DEVTOOLS_POLICY: &str = "sandbox allow-scripts allow-popups allow-modals allow-downloads; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Stands in for the web storage and cache an opaque origin has none of (DevTools keeps its
/// settings there and stops at the first `localStorage` it reads): storage in memory for
/// this page's life, and a cache that keeps nothing.
const STORAGE_SHIM: &str = "<script>(() => { for (const name of ['localStorage', 'sessionStorage']) { \
     const m = new Map(); const s = { getItem: k => m.has(String(k)) ? m.get(String(k)) : null, \
     setItem: (k, v) => { m.set(String(k), String(v)); }, removeItem: k => { m.delete(String(k)); }, \
     clear: () => m.clear(), key: i => [...m.keys()][i] ?? null, get length() { return m.size; } }; \
     Object.defineProperty(window, name, { value: s, configurable: true }); } \
     const cache = { match: async () => undefined, matchAll: async () => [], add: async () => {}, \
     addAll: async () => {}, put: async () => {}, delete: async () => false, keys: async () => [] }; \
     Object.defineProperty(window, 'caches', { configurable: true, value: { open: async () => cache, \
     match: async () => undefined, has: async () => false, delete: async () => false, keys: async () => [] } }); \
     })();</script>";

/// A DevTools page with [`STORAGE_SHIM`] first (after its doctype, so the page keeps its
/// standards mode).
fn with_storage_shim(html: &[u8]) -> axum::body::Bytes {
    // A byte-order mark and white space may come before the doctype.
    let lead = html.strip_prefix(b"\xEF\xBB\xBF").map_or(0, |_| 3);
    let lead = lead
        + html[lead..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let starts_with_doctype = html
        .get(lead..lead + 9)
        .is_some_and(|head| head.eq_ignore_ascii_case(b"<!doctype"));
    let at = match html[lead..].iter().position(|&b| b == b'>') {
        Some(end) if starts_with_doctype => lead + end + 1,
        _ => 0,
    };
    let mut out = Vec::with_capacity(html.len() + STORAGE_SHIM.len());
    out.extend_from_slice(&html[..at]);
    out.extend_from_slice(STORAGE_SHIM.as_bytes());
    out.extend_from_slice(&html[at..]);
    out.into()
}

/// `GET /debug/{grant}/devtools/{*path}`: the DevTools front end, from the session's own
/// Chromium (it carries it; nothing comes from the internet). What the browser answers is
/// not trusted: it runs in an opaque origin ([`DEVTOOLS_POLICY`]), the content type is
/// browserd's (by extension, `nosniff`), the page may not be framed, sends no referrer, and
/// connects only to its own link's websocket.
pub async fn devtools_files(
    State(state): State<AppState>,
    Path((token, path)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let checked = check(&state, &token, Wants::DevTools).await?;
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err(ApiError::NotFound(format!("no DevTools file {path}")));
    }
    let content_type = devtools_content_type(&path)
        .ok_or_else(|| ApiError::NotFound(format!("no DevTools file {path}")))?;
    let base = super::public_base(&state, &headers);
    for param in ["ws", "wss"] {
        if let Some(target) = query.get(param)
            && !own_devtools_target(target, &token, &base)
        {
            return Err(ApiError::BadRequest(format!(
                "{param}= must be this link's own DevTools websocket (…/debug/<this link>/devtools/page/<tab>)"
            )));
        }
    }
    let authority = inspect::devtools_authority(&checked.session.cdp_url)
        .ok_or_else(|| ApiError::Internal("malformed CDP url".into()))?;
    let _fetching = state
        .viewers
        .fetches
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("browserd is stopping".into()))?;
    let upstream = inspect::browser_get(
        &state.sessions.dialer(),
        authority,
        &format!("/devtools/{path}"),
    )
    .await
    .map_err(|e| ApiError::BadGateway(format!("the browser did not serve DevTools: {e}")))?;
    let status = upstream.status();
    let mut body = upstream.into_body();
    if content_type.starts_with("text/html") {
        body = with_storage_shim(&body);
    }
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DEVTOOLS_POLICY),
    );
    // Its scripts and files are fetched from that opaque origin ("null"), as CORS requests.
    // The link's token is the credential, so no origin is worth singling out.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}
