//! `seleniumRemoteUrl`: W3C WebDriver on a session's own browser.
//!
//! `POST {base}/webdriver/session` with `x-bb-signing-key: <signingKey>` (or the legacy
//! `session-id` + `x-bb-api-key`) attaches a WebDriver session to the browserd session's
//! running Chromium: a chromedriver per browserd session ([`crate::browser::chromedriver`]),
//! started on the first new-session, attached through `debuggerAddress`, never launching a
//! browser. browserd stands in front of it: it authenticates every request, forwards only
//! the W3C commands of the client's own WebDriver sessions (chromedriver's extensions, such as
//! raw CDP through `goog/cdp/execute` or file pushes through `se/file`, would pass around the
//! CDP filter and the sandbox's folders), and answers in WebDriver's error shape.
//!
//! A WebDriver session is a client of the browserd session from new-session until
//! `DELETE /session/{id}` or a silence longer than the clients' idle limit: without
//! keepAlive, `driver.quit()` ends the browserd session as COMPLETED.

use super::AppState;
use crate::browser::chromedriver::{Cell, Chromedriver, DriverPlace};
use crate::fault::Failure;
use crate::secrets::{hash_api_key, verify_session_token};
use crate::sessions::webdriver::{Connection, until_ended};
use crate::sessions::{AttachError, Seat as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::time::Instant;
use uuid::Uuid;

/// The commands forwarded, by the path segment after `/session/{id}/` (W3C WebDriver §6.5's
/// endpoint table). Everything else is an unknown command.
const FORWARDED: &[&str] = &[
    "timeouts",
    "url",
    "back",
    "forward",
    "refresh",
    "title",
    "window",
    "frame",
    "element",
    "elements",
    "shadow",
    "source",
    "execute",
    "cookie",
    "actions",
    "alert",
    "screenshot",
    "print",
];

/// How long an answer saying the browser is gone waits for the session's end to be known.
const SESSION_END_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A WebDriver error: `{"value": {"error", "message", "stacktrace"}}`.
fn wd_error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let body = json!({"value": {"error": error, "message": message.into(), "stacktrace": ""}});
    (status, axum::Json(body)).into_response()
}

/// The largest WebDriver request body read (element screenshots and file uploads are
/// answers, not requests; a request is a small JSON document).
const MAX_WEBDRIVER_BODY: usize = 1024 * 1024;

/// Any request under `/webdriver`.
pub(crate) async fn webdriver(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Response {
    let path = uri.path().trim_start_matches("/webdriver");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments == ["status"] {
        return axum::Json(json!({"value": {"ready": true, "message": "browserd: create a WebDriver session with the session's signing key"}})).into_response();
    }
    let id = match authenticate(&state, &headers).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    if !state.sessions.is_live(id) {
        return ended(&state, id).await;
    }
    // The body only once the caller is known: an unauthenticated one is never read.
    let body = match axum::body::to_bytes(req.into_body(), MAX_WEBDRIVER_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return wd_error(
                StatusCode::BAD_REQUEST,
                "invalid argument",
                format!(
                    "could not read the request body (at most {MAX_WEBDRIVER_BODY} bytes, sent without pauses of {} s): {e}",
                    super::BODY_IDLE_TIMEOUT.as_secs()
                ),
            );
        }
    };
    match (&method, segments.as_slice()) {
        (&Method::POST, ["session"]) => new_session(&state, id, &body).await,
        (_, ["session", wdid, rest @ ..]) => {
            command(&state, id, wdid, &method, rest, &uri, body).await
        }
        _ => wd_error(
            StatusCode::NOT_FOUND,
            "unknown command",
            format!("{method} {path} is not a WebDriver command browserd serves"),
        ),
    }
}

/// Which browserd session a request is for, from its headers.
pub(super) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Uuid, Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |message: &str| {
        wd_error(
            StatusCode::UNAUTHORIZED,
            "unknown error",
            message.to_owned(),
        )
    };
    if let Some(key) = header("x-bb-signing-key") {
        return verify_session_token(&state.secret, key)
            .ok_or_else(|| unauthorized("invalid x-bb-signing-key: use the session's signingKey"));
    }
    if let (Some(id), Some(key)) = (header("session-id"), header("x-bb-api-key")) {
        let project = match state
            .store
            .projects
            .project_for_key(&hash_api_key(key))
            .await
        {
            Ok(Some(project)) => project,
            Ok(None) => return Err(unauthorized("invalid x-bb-api-key")),
            Err(e) => {
                return Err(wd_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown error",
                    e.to_string(),
                ));
            }
        };
        let uuid =
            Uuid::try_parse(id).map_err(|_| unauthorized("session-id is not a session id"))?;
        return match state.store.sessions.get_session(uuid).await {
            Ok(Some(s)) if s.project_id == project.id => Ok(uuid),
            Ok(_) => Err(unauthorized("no such session in this API key's project")),
            Err(e) => Err(wd_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown error",
                e.to_string(),
            )),
        };
    }
    Err(unauthorized(
        "missing credentials: send the header x-bb-signing-key with the session's signingKey (or session-id and x-bb-api-key)",
    ))
}

/// `invalid session id`, saying why the browserd session is not live.
async fn ended(state: &AppState, id: Uuid) -> Response {
    let message = match state.store.sessions.get_session(id).await {
        Ok(Some(s)) if s.status.is_ended() => format!(
            "session {id} has ended ({}): {}",
            s.status.as_str(),
            s.end_reason.as_deref().unwrap_or("no reason recorded")
        ),
        Ok(Some(_)) => format!("session {id} is still starting, or runs on another node"),
        Ok(None) => format!("session {id} not found"),
        Err(e) => e.to_string(),
    };
    wd_error(StatusCode::NOT_FOUND, "invalid session id", message)
}

/// Capabilities that would change the browser: a running browser cannot take them.
fn refused_capability(caps: &Map<String, Value>) -> Option<String> {
    if let Some(name) = caps.get("browserName").and_then(Value::as_str)
        && !["chrome", "chromium"].contains(&name.to_ascii_lowercase().as_str())
    {
        return Some(format!(
            "browserName {name:?}: the session's browser is Chromium"
        ));
    }
    if caps
        .get("proxy")
        .is_some_and(|p| p.as_object().is_some_and(|o| !o.is_empty()))
    {
        return Some(
            "proxy: give the session's proxies when it is created (POST /v1/sessions)".into(),
        );
    }
    let options = caps.get("goog:chromeOptions").and_then(Value::as_object)?;
    options
        .iter()
        // A number sets something too (params' turned_on counts only switches).
        .find(|(name, value)| {
            *name != "w3c" && (super::params::turned_on(value) || value.is_number())
        })
        .map(|(name, _)| {
            format!("goog:chromeOptions.{name}: the session's browser is already running; browser options are set when the session is created")
        })
}

/// W3C WebDriver's capability processing: `alwaysMatch` merged with each `firstMatch` entry
/// in turn (a key in both is an error), and the first merge this session's browser can
/// honour wins. When none can, the first one's reason is the answer (an "invalid
/// argument", as before: the options asked for are what the client must change).
fn matched_capabilities(caps: &Value) -> Result<Map<String, Value>, String> {
    let always = match &caps["alwaysMatch"] {
        Value::Null => Map::new(),
        Value::Object(always) => always.clone(),
        _ => return Err("capabilities.alwaysMatch must be an object".into()),
    };
    let empty = Map::new();
    let first: Vec<&Map<String, Value>> = match &caps["firstMatch"] {
        Value::Null => vec![&empty],
        Value::Array(list) if list.is_empty() => {
            return Err("capabilities.firstMatch must hold at least one object".into());
        }
        Value::Array(list) => list
            .iter()
            .map(|each| {
                each.as_object()
                    .ok_or("capabilities.firstMatch must hold objects")
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("capabilities.firstMatch must be a list".into()),
    };
    let mut candidates = Vec::with_capacity(first.len());
    for each in first {
        if let Some(key) = each.keys().find(|key| always.contains_key(*key)) {
            return Err(format!(
                "capability {key:?} is in both alwaysMatch and firstMatch"
            ));
        }
        let mut merged = always.clone();
        merged.extend(each.clone());
        candidates.push(merged);
    }
    let mut first_refusal = None;
    for merged in candidates {
        match refused_capability(&merged) {
            None => return Ok(merged),
            Some(why) => {
                first_refusal.get_or_insert(why);
            }
        }
    }
    Err(first_refusal.expect("at least one candidate was refused"))
}

/// `POST /session`: a WebDriver session on the browserd session's browser.
async fn new_session(state: &AppState, id: Uuid, body: &Bytes) -> Response {
    let asked: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return wd_error(
                StatusCode::BAD_REQUEST,
                "invalid argument",
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let mut merged = match matched_capabilities(&asked["capabilities"]) {
        Ok(merged) => merged,
        Err(why) => return wd_error(StatusCode::BAD_REQUEST, "invalid argument", why),
    };
    let lease = match state.sessions.attach(id) {
        Ok(lease) => lease,
        Err(e @ AttachError::TooManyClients { .. }) => {
            return wd_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session not created",
                e.to_string(),
            );
        }
        Err(_) => return ended(state, id).await,
    };
    let idle_after = state.settings.client_watch.idle_after;
    let host = state.sessions.webdriver().host(id, &lease, idle_after);
    let driver = host
        .driver
        .get_or_try_init(|| async {
            let place = place_of(state, id, lease.cdp_url())?;
            Chromedriver::start(&place).await
        })
        .await;
    let driver = match driver {
        Ok(driver) => driver,
        Err(e) => {
            return wd_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session not created",
                e.to_string(),
            );
        }
    };
    merged.remove("goog:chromeOptions");
    merged.insert("browserName".into(), json!("chrome"));
    merged.insert(
        "goog:chromeOptions".into(),
        json!({"debuggerAddress": driver.devtools()}),
    );
    let request = json!({"capabilities": {"alwaysMatch": merged}});
    let connection = Arc::new(tokio::sync::Mutex::default());
    let sent = tokio::select! {
        sent = send(driver, &connection, Method::POST, "/session", Bytes::from(request.to_string())) => sent,
        () = until_ended(lease.farewell()) => return ended(state, id).await,
    };
    let (status, mut answer) = match sent {
        Ok(sent) => sent,
        Err(e) => {
            return wd_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session not created",
                e.to_string(),
            );
        }
    };
    let Some(wdid) = answer["value"]["sessionId"].as_str().map(str::to_owned) else {
        return (status, axum::Json(answer)).into_response();
    };
    // What the client would use to get around browserd: chromedriver's own CDP address.
    if let Some(caps) = answer["value"]["capabilities"].as_object_mut() {
        caps.remove("se:cdp");
        caps.remove("webSocketUrl");
        caps.remove("goog:chromeOptions");
    }
    host.add_client(wdid, lease, connection);
    (status, axum::Json(answer)).into_response()
}

/// Where the session's chromedriver runs: in its browser's namespace, as its uid.
fn place_of(state: &AppState, id: Uuid, cdp_url: &str) -> Result<DriverPlace, Failure> {
    let devtools = crate::inspect::devtools_authority(cdp_url)
        .ok_or_else(|| Failure::browser("the browser has no DevTools address"))?
        .to_owned();
    let dir = state
        .sessions
        .browser_dir(id)
        .ok_or_else(|| Failure::browser("the browser has no folder"))?;
    let jail = match state.sessions.dialer().namespace_of(&devtools) {
        Some(ns) => {
            let port = devtools
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| Failure::browser("the DevTools address has no port"))?;
            let uid = crate::browser::sandbox::UidLease::uid_of_port(port)
                .ok_or_else(|| Failure::browser("the sandboxed browser's uid is unknown"))?;
            let pid = state
                .sessions
                .browser_pid(id)
                .and_then(crate::netns::sandbox_process)
                .ok_or_else(|| Failure::browser("the sandboxed browser has no process"))?;
            Some(Cell { ns, pid, uid })
        }
        None => None,
    };
    Ok(DriverPlace {
        devtools,
        jail,
        dir,
    })
}

/// Any command of an existing WebDriver session.
async fn command(
    state: &AppState,
    id: Uuid,
    wdid: &str,
    method: &Method,
    rest: &[&str],
    uri: &Uri,
    body: Bytes,
) -> Response {
    let unknown_session = || {
        wd_error(
            StatusCode::NOT_FOUND,
            "invalid session id",
            format!(
                "no WebDriver session {wdid} on browserd session {id} (it quit, fell silent, or was never made)"
            ),
        )
    };
    let Some(host) = state.sessions.webdriver().existing(id) else {
        return unknown_session();
    };
    let quitting = rest.is_empty() && method == Method::DELETE;
    if !quitting && !rest.first().is_some_and(|r| FORWARDED.contains(r)) {
        return wd_error(
            StatusCode::NOT_FOUND,
            "unknown command",
            format!(
                "{method} /session/{{id}}/{}: browserd forwards only W3C WebDriver commands",
                rest.join("/")
            ),
        );
    }
    let (farewell, connection, rules) = {
        let mut clients = host.clients.lock().unwrap();
        let Some(client) = clients.get_mut(wdid) else {
            return unknown_session();
        };
        client.last_used = Instant::now();
        (
            client.lease.farewell(),
            Arc::clone(&client.connection),
            client.lease.rules().clone(),
        )
    };
    let Some(driver) = host.driver.get() else {
        return unknown_session();
    };
    let path = uri.path().trim_start_matches("/webdriver").to_owned();
    // Keys sent to a file input are chromedriver's DOM.setFileInputFiles, on its own
    // connection past the CDP filter: the same rule as CDP, checked here.
    let body = match rest {
        ["element", element, "value"] if method == Method::POST => {
            match file_input_rule(driver, &connection, wdid, element, body, &rules).await {
                Ok(body) => body,
                Err(refused) => return refused,
            }
        }
        _ => body,
    };
    let ending = farewell.clone();
    let sent = tokio::select! {
        sent = send(driver, &connection, method.clone(), &path, body) => sent,
        () = until_ended(farewell) => return ended(state, id).await,
    };
    // chromedriver may see the browser go (a timeout, a release) before browserd says the
    // session ended: a lost browser is then the session's end, with its reason.
    let browser_lost = match &sent {
        Ok((_, answer)) => answer["value"]["error"] == "invalid session id",
        Err(_) => true,
    };
    if browser_lost
        && tokio::time::timeout(SESSION_END_GRACE, until_ended(ending))
            .await
            .is_ok()
    {
        return ended(state, id).await;
    }
    if quitting {
        // The client leaves (a browserd session without keepAlive ends with its last one).
        host.clients.lock().unwrap().remove(wdid);
    } else if let Some(client) = host.clients.lock().unwrap().get_mut(wdid) {
        client.last_used = Instant::now();
    }
    match sent {
        Ok((status, answer)) => (status, axum::Json(answer)).into_response(),
        Err(e) => wd_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown error",
            e.to_string(),
        ),
    }
}

/// The body of an Element Send Keys command: unchanged unless the element is a file input,
/// whose paths must be files uploaded to the session (rewritten to the browser's view).
async fn file_input_rule(
    driver: &Chromedriver,
    connection: &Arc<tokio::sync::Mutex<Option<Connection>>>,
    wdid: &str,
    element: &str,
    body: Bytes,
    rules: &crate::cdp::filter::Rules,
) -> Result<Bytes, Response> {
    let ask = |what: String| async move {
        send(driver, connection, Method::GET, &what, Bytes::new())
            .await
            .ok()
            .map(|(_, answer)| answer["value"].clone())
    };
    let tag = ask(format!("/session/{wdid}/element/{element}/name")).await;
    let kind = ask(format!("/session/{wdid}/element/{element}/property/type")).await;
    let is_file_input = tag
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("input"))
        && kind.as_ref().and_then(Value::as_str) == Some("file");
    if !is_file_input {
        return Ok(body);
    }
    let refuse = |message: String| wd_error(StatusCode::BAD_REQUEST, "invalid argument", message);
    let mut command: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| refuse(format!("the command is not a JSON object: {e}")))?;
    let text = command
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("send keys needs a text".into()))?;
    let mut seen = Vec::new();
    for path in text.split('\n').filter(|p| !p.is_empty()) {
        seen.push(crate::cdp::filter::upload_in_browser(path, rules).map_err(refuse)?);
    }
    let text = seen.join("\n");
    command.insert(
        "value".into(),
        text.chars().map(|c| Value::from(c.to_string())).collect(),
    );
    command.insert("text".into(), text.into());
    Ok(Bytes::from(Value::Object(command).to_string()))
}

/// One request to chromedriver on a client's kept connection (a new one if it has none or
/// it closed); its status and JSON answer. The lock is held for the whole exchange: HTTP/1
/// carries one request at a time, and chromedriver runs a session's commands one by one.
async fn send(
    driver: &Chromedriver,
    connection: &tokio::sync::Mutex<Option<Connection>>,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Value), Failure> {
    let mut kept = connection.lock().await;
    let usable = match kept.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !usable {
        let tcp = driver
            .connect()
            .await
            .map_err(|e| Failure::browser(format!("chromedriver is not reachable: {e}")))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| Failure::browser(e.to_string()))?;
        // Drives the connection until it closes (with chromedriver, or when dropped).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *kept = Some(sender);
    }
    let sender = kept.as_mut().expect("a connection was just made");
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(http_body_util::Full::new(body))
        .map_err(|e| Failure::browser(e.to_string()))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            *kept = None;
            return Err(Failure::browser(format!(
                "chromedriver did not answer: {e}"
            )));
        }
    };
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::browser(e.to_string()))?
        .to_bytes();
    let answer = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"value": null}));
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use super::matched_capabilities;
    use serde_json::json;

    #[test]
    fn the_first_first_match_entry_the_browser_can_honour_wins() {
        let caps = json!({
            "alwaysMatch": {"acceptInsecureCerts": true},
            "firstMatch": [{"browserName": "firefox"}, {"browserName": "chrome", "pageLoadStrategy": "eager"}, {}],
        });
        let merged = matched_capabilities(&caps).unwrap();
        assert_eq!(merged["browserName"], "chrome");
        assert_eq!(merged["pageLoadStrategy"], "eager");
        assert_eq!(merged["acceptInsecureCerts"], true);
    }

    #[test]
    fn no_capabilities_at_all_match() {
        assert!(matched_capabilities(&json!(null)).unwrap().is_empty());
        assert!(matched_capabilities(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn when_nothing_matches_the_first_refusal_is_the_answer() {
        let caps = json!({"firstMatch": [{"browserName": "firefox"}, {"browserName": "safari"}]});
        let why = matched_capabilities(&caps).unwrap_err();
        assert!(why.contains("firefox"), "{why}");
        let caps = json!({"alwaysMatch": {"goog:chromeOptions": {"args": ["--x"]}}});
        let why = matched_capabilities(&caps).unwrap_err();
        assert!(why.contains("goog:chromeOptions.args"), "{why}");
    }

    #[test]
    fn malformed_capabilities_are_invalid_arguments() {
        for (caps, says) in [
            (json!({"alwaysMatch": []}), "alwaysMatch must be an object"),
            (json!({"firstMatch": {}}), "firstMatch must be a list"),
            (json!({"firstMatch": []}), "at least one"),
            (json!({"firstMatch": [1]}), "must hold objects"),
            (
                json!({"alwaysMatch": {"browserName": "chrome"}, "firstMatch": [{"browserName": "chrome"}]}),
                "in both",
            ),
        ] {
            let why = matched_capabilities(&caps).unwrap_err();
            assert!(why.contains(says), "{caps}: {why}");
        }
    }
}
