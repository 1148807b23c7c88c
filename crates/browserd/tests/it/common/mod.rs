//! A browserd started in-process for a test, with real Chromium, and small clients for it.

use browserd::browser::chromium::ChromiumLauncher;
use browserd::config::{Common, Config, Settings};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub(crate) const API_KEY: &str = "bd_test_key_for_integration_tests";

/// How long a condition may take before a test fails: `BROWSERD_TEST_PATIENCE_SECS`, 30 s by
/// default. Generous: Chromium on a busy 2-core machine is slow to start, and the tests wait
/// for conditions, not for time (a slower machine raises it; nothing waits for it to pass).
pub(crate) fn patience() -> Duration {
    static PATIENCE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *PATIENCE.get_or_init(|| {
        let secs = std::env::var("BROWSERD_TEST_PATIENCE_SECS").map_or(30, |s| {
            s.parse()
                .expect("BROWSERD_TEST_PATIENCE_SECS is a whole number of seconds")
        });
        Duration::from_secs(secs)
    })
}

pub(crate) struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    /// `--metrics-listen`'s address, when [`Options::metrics`] asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub state: browserd::api::AppState,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) struct Options {
    pub max_sessions: usize,
    pub min_timeout: u64,
    pub max_message_mib: usize,
    /// Off unless a test is about the pool, so each test's browsers are its own.
    pub warm_pool: usize,
    pub ping_interval: u64,
    pub client_idle_timeout: u64,
    pub min_free_memory_mib: u64,
    pub min_free_disk_mib: u64,
    pub max_clients_per_session: usize,
    /// `--max-tabs-per-session`.
    pub max_tabs_per_session: usize,
    pub max_upload_mib: u64,
    pub session_disk_mib: u64,
    /// Pages may reach services on this machine (`--allow-local-egress`).
    pub allow_local_egress: bool,
    /// `--sandbox off`: the browser runs as browserd's user, with `--no-sandbox` as root.
    pub sandbox_off: bool,
    /// Another executable in Chromium's place (one that fails to start, say).
    pub chromium: Option<PathBuf>,
    /// `--proxy-pool`.
    pub proxy_pool: Option<PathBuf>,
    /// Serve `/metrics` on a second loopback port too (`--metrics-listen`).
    pub metrics: bool,
    /// `--relay-memory-mib` (browserd's default when `None`).
    pub relay_memory_mib: Option<u64>,
    /// `--live-view-frame-ancestors`.
    pub live_view_frame_ancestors: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            warm_pool: 0,
            ping_interval: 30,
            client_idle_timeout: 600,
            min_free_memory_mib: 512,
            min_free_disk_mib: 0,
            max_clients_per_session: 16,
            max_tabs_per_session: 100,
            max_upload_mib: 512,
            session_disk_mib: 1024,
            allow_local_egress: false,
            sandbox_off: false,
            chromium: None,
            proxy_pool: None,
            metrics: false,
            relay_memory_mib: None,
            live_view_frame_ancestors: None,
            max_sessions: 4,
            min_timeout: 1,
            max_message_mib: 256,
        }
    }
}

pub(crate) fn chromium() -> PathBuf {
    ChromiumLauncher::find_on_path().expect("tests need Chromium: apt-get install chromium")
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(opts: Options) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), opts).await
    }

    /// A server on an existing data dir (one an earlier test server stopped on).
    pub(crate) async fn start_in(data_dir: tempfile::TempDir, opts: Options) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let common = Common {
            config: None,
            data_dir: Some(data_dir.path().to_owned()),
            database: None,
            log_format: None,
        };
        let settings = Settings {
            api_key: Some(API_KEY.into()),
            max_sessions: Some(opts.max_sessions),
            min_timeout: Some(opts.min_timeout),
            default_timeout: Some(300),
            max_message_mib: Some(opts.max_message_mib),
            relay_memory_mib: opts.relay_memory_mib,
            live_view_frame_ancestors: opts.live_view_frame_ancestors.clone(),
            warm_pool: Some(opts.warm_pool),
            ping_interval: Some(opts.ping_interval),
            client_idle_timeout: Some(opts.client_idle_timeout),
            min_free_memory_mib: Some(opts.min_free_memory_mib),
            min_free_disk_mib: Some(opts.min_free_disk_mib),
            max_clients_per_session: Some(opts.max_clients_per_session),
            max_tabs_per_session: Some(opts.max_tabs_per_session),
            max_upload_mib: Some(opts.max_upload_mib),
            session_disk_mib: Some(opts.session_disk_mib),
            allow_local_egress: Some(opts.allow_local_egress),
            proxy_pool: opts.proxy_pool.clone(),
            sandbox: opts
                .sandbox_off
                .then_some(browserd::browser::sandbox::SandboxMode::Off),
            ..Settings::default()
        };
        let config = Config::resolve(&common, &settings).unwrap();
        let sandbox = browserd::browser::sandbox::Sandbox::detect(
            config.sandbox,
            config.egress_policy(),
            Arc::clone(&config.metrics),
        )
        .unwrap();
        let launcher = Arc::new(ChromiumLauncher::new(
            opts.chromium.clone().unwrap_or_else(chromium),
            config.sessions_dir(),
            sandbox,
            Arc::clone(&config.metrics),
        ));
        let prepared = browserd::server::prepare_with(&config, launcher)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = match opts.metrics {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let metrics_addr = metrics.as_ref().map(|m| m.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = prepared.state.clone();
        let task = tokio::spawn(async move {
            let _keep = prepared; // holds the data dir lock
            // In-process test servers end every session on stop: no browser outlives a test.
            browserd::server::run(
                listener,
                None,
                metrics,
                _keep.state.clone(),
                browserd::server::ShutdownPlan::end_all(),
                {
                    let (count, signals) = tokio::sync::watch::channel(0);
                    tokio::spawn(async move {
                        let _ = stopped.await;
                        count.send_replace(1);
                        // Kept open: a closed channel would read as no more signals.
                        std::future::pending::<()>().await;
                    });
                    signals
                },
            )
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            addr,
            metrics_addr,
            state,
            data_dir,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server the way SIGTERM does and waits until every browser is stopped.
    /// Returns the data dir, which lives on until the caller drops it.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.state.store.close().await;
        self.data_dir
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the test project's API key.
    pub(crate) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-BB-API-Key", API_KEY)
    }

    pub(crate) async fn create(&self, body: Value) -> Value {
        let resp = self
            .req(reqwest::Method::POST, "/v1/sessions")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "create failed: {body}");
        body
    }

    pub(crate) async fn get(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/sessions/{id}")).await
    }

    /// `GET path` with the API key; the JSON body, whatever the status.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        self.req(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) async fn release(&self, id: &str) -> Value {
        let resp = self
            .req(reqwest::Method::POST, &format!("/v1/sessions/{id}"))
            .json(&json!({"status": "REQUEST_RELEASE"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Adds a project that may run `concurrency` sessions, reachable with `key`.
    pub(crate) async fn add_project(&self, name: &str, concurrency: u32, key: &str) -> String {
        let store = &self.state.store;
        let project = store
            .projects
            .create_project(name, 300, concurrency, 0)
            .await
            .unwrap();
        let hash = browserd::secrets::hash_api_key(key);
        store
            .projects
            .add_api_key(&project.id, &hash)
            .await
            .unwrap();
        project.id
    }

    /// Waits until the session's status is `status`; returns the session.
    pub(crate) async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        eventually(|| async {
            let s = self.get(id).await;
            (s["status"] == status).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("session {id} never became {status}"))
    }

    /// The folder of a live session's browser.
    pub(crate) fn browser_dir(&self, id: &str) -> PathBuf {
        self.state
            .sessions
            .browser_dir(id.parse().unwrap())
            .expect("a live session has a browser dir")
    }
}

/// Asserts a Browserbase-shaped error with this status whose message contains `needle`.
pub(crate) fn assert_error(status: u16, body: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["statusCode"], want);
    assert!(body["error"].is_string(), "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

/// Runs `$body` (a block that may borrow mutably and `.await`) until it gives `Some`, every
/// 20 ms for at most [`patience`], and evaluates to what it gave; past that the test fails
/// with the message. [`eventually`]'s form for checks a closure cannot hold (a `&mut Cdp`).
macro_rules! wait_until {
    ($body:block, $($message:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $crate::common::patience();
        loop {
            if let Some(value) = $body {
                break value;
            }
            assert!(tokio::time::Instant::now() < deadline, $($message)+);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
pub(crate) use wait_until;

/// Polls `check` until it returns `Some`, for at most [`patience`].
pub(crate) async fn eventually<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until a process is gone.
pub(crate) async fn wait_gone(pid: u32) -> bool {
    eventually(|| async { (!browserd::browser::procs::is_alive(pid)).then_some(()) })
        .await
        .is_some()
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw CDP client over a websocket.
pub(crate) struct Cdp {
    pub ws: Ws,
    next_id: u64,
    /// Events read while waiting for an answer, for [`Cdp::event`].
    events: std::collections::VecDeque<Value>,
}

/// The websocket config test clients use: large messages allowed, like Playwright's 256 MiB.
pub(crate) fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    browserd::cdp::relay::ws_config(300 * 1024 * 1024)
}

impl Cdp {
    pub(crate) fn from_ws(ws: Ws) -> Self {
        Self {
            ws,
            next_id: 0,
            events: Default::default(),
        }
    }

    pub(crate) async fn connect(url: &str) -> Self {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
                .await
                .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Self {
            ws,
            next_id: 0,
            events: Default::default(),
        }
    }

    /// Sends a command and returns its response, skipping events.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            match tokio::time::timeout(patience(), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                    if v.get("method").is_some() {
                        self.events.push_back(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no answer to {method}: {other:?}"),
            }
        }
    }

    /// Sends `text` as it is (it must carry `"id":ID`) and returns the answer with that id.
    pub(crate) async fn raw(&mut self, text: &str, id: u64) -> Value {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
        self.answer(id).await
    }

    /// The answer with `id` to something already sent.
    pub(crate) async fn answer(&mut self, id: u64) -> Value {
        loop {
            match tokio::time::timeout(patience(), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no answer with id {id}: {other:?}"),
            }
        }
    }

    /// The first event (read before or now) named `method` for which `pick` holds.
    pub(crate) async fn event(&mut self, method: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let wanted = |v: &Value| v["method"] == method && pick(&v["params"]);
        if let Some(at) = self.events.iter().position(wanted) {
            return self.events.remove(at).expect("found above");
        }
        loop {
            match tokio::time::timeout(patience(), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if wanted(&v) {
                        return v;
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no {method} event: {other:?}"),
            }
        }
    }

    /// A flattened session on the first page target.
    pub(crate) async fn page_session(&mut self) -> String {
        let targets = self.call("Target.getTargets", json!({}), None).await;
        let page = targets["result"]["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["targetId"]
            .clone();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
                None,
            )
            .await;
        attached["result"]["sessionId"].as_str().unwrap().to_owned()
    }

    /// Evaluates JS in the first page target; returns the `result.result.value`.
    pub(crate) async fn eval_in_page(&mut self, expression: &str) -> Value {
        let session = self.page_session().await;
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                Some(&session),
            )
            .await;
        r["result"]["result"]["value"].clone()
    }

    /// Reads until the server closes the connection; returns its close frame.
    pub(crate) async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(patience(), self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("connection failed instead of closing: {e}"),
                Ok(None) => return None,
                Err(_) => panic!("the server did not close the connection"),
            }
        }
    }
}

/// The status and JSON body of a websocket handshake the server refused.
pub(crate) async fn refused_handshake(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("handshake to {url} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            assert_eq!(
                resp.headers()["content-type"],
                "application/json",
                "refusals are JSON"
            );
            let body = resp.body().as_deref().unwrap_or_default();
            (status, serde_json::from_slice(body).unwrap())
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// A fresh, empty database on the test PostgreSQL (`BROWSERD_TEST_POSTGRES`, which
/// `scripts/test` points at a server it starts): its URL.
pub(crate) async fn fresh_postgres_database() -> String {
    let base = std::env::var("BROWSERD_TEST_POSTGRES").expect(
        "BROWSERD_TEST_POSTGRES is not set: run the suite with scripts/test, which starts a PostgreSQL, or point it at one (postgres://user:pass@host:port/db)",
    );
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{prefix}/{name}")
}

/// A multipart body with one part `file`, as the upload endpoints take it.
pub(crate) fn file_form(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
    )
}

/// The smallest valid extension: a zip with a manifest at its root.
pub(crate) fn extension_zip() -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("manifest.json", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(br#"{"manifest_version":3,"name":"t","version":"1"}"#)
        .unwrap();
    zip.finish().unwrap().into_inner()
}

/// The outcome of navigating the page on `session` to `url`: `Ok(body text)` or
/// `Err(Chromium's error text)`.
///
/// A navigation that follows a failed one can be aborted by that one's error page still
/// committing (`net::ERR_ABORTED`, more often on a loaded machine): it is asked again then,
/// up to three times.
pub(crate) async fn visit(cdp: &mut Cdp, session: &str, url: &str) -> Result<String, String> {
    let mut tries = 0;
    let nav = loop {
        let nav = cdp
            .call("Page.navigate", json!({ "url": url }), Some(session))
            .await;
        tries += 1;
        if nav["result"]["errorText"] != "net::ERR_ABORTED" || tries > 3 {
            break nav;
        }
    };
    if let Some(error) = nav["result"]["errorText"].as_str() {
        return Err(error.to_owned());
    }
    if let Some(error) = nav["error"]["message"].as_str() {
        return Err(error.to_owned());
    }
    // The navigation committed: wait for its document, then read it.
    let deadline = tokio::time::Instant::now() + patience();
    let text = loop {
        let r = cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": "document.readyState === 'complete' ? (document.body ? document.body.innerText : '') : null", "returnByValue": true}),
                Some(session),
            )
            .await;
        if let Some(text) = r["result"]["result"]["value"].as_str() {
            break text.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never finished loading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Chromium shows its own error page (with a non-empty body) for a failed load of a
    // committed navigation; name it as a failure.
    let href = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": "location.href", "returnByValue": true}),
            Some(session),
        )
        .await;
    if href["result"]["result"]["value"].as_str() == Some("chrome-error://chromewebdata/") {
        return Err(text);
    }
    Ok(text)
}

/// A tinyproxy on a loopback port, asking for `user`/`password`; stopped on drop.
pub(crate) struct Tinyproxy {
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Tinyproxy {
    pub(crate) async fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("access.log");
        let conf = dir.path().join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (browserd tunnels plain HTTP too).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Connect\nLogFile \"{}\"\nBasicAuth {user} {password}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy is installed (the test command installs it)");
        eventually(|| async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await
        .expect("tinyproxy listens");
        Self {
            port,
            log,
            _dir: dir,
            _child: child,
        }
    }

    pub(crate) fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `host:port` of every CONNECT it was asked for.
    pub(crate) fn tunnels(&self) -> Vec<String> {
        tunnels_in(&self.log)
    }
}

pub(crate) fn tunnels_in(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("): CONNECT ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Opens a websocket by hand (so the test can then send raw bytes) and returns the socket.
pub(crate) async fn raw_upgrade(
    addr: std::net::SocketAddr,
    connect_url: &str,
) -> tokio::net::TcpStream {
    let path = connect_url.split_once(&addr.to_string()).unwrap().1;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut byte)
            .await
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// What a spawned `browserd serve` printed up to and including its `listening on` line.
pub(crate) struct Banner {
    /// The API's base URL, from `listening on http://…`.
    pub base: String,
    pub lines: Vec<String>,
}

/// Reads a spawned `browserd serve`'s stdout (it must be piped) until it says it is
/// listening, then keeps draining it on a thread so a full pipe never blocks the server.
/// Panics with what it printed if it exits first.
pub(crate) fn until_listening(child: &mut std::process::Child) -> Banner {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("browserd's stdout is piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let base = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        banner.push(line);
        if let Some(base) = base {
            std::thread::spawn(move || for _ in lines {});
            return Banner {
                base,
                lines: banner,
            };
        }
    }
    panic!("browserd did not start: {banner:?}");
}
