//! The `browserd` binary as a user runs it: first start, the CLI, SIGTERM, and a restart
//! after browserd was killed.

use crate::common;

use common::{Cdp, eventually, patience};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");

struct Running {
    child: Child,
    base: String,
    /// Everything the server printed on stdout before it said it was listening.
    banner: Vec<String>,
}

/// A data dir that takes every process started from it along when the test ends, passed
/// or not: a failed restart test must not leave Chromium running.
struct DataDir(tempfile::TempDir);

impl DataDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        browserd::browser::procs::kill_by_cmdline(self.0.path());
    }
}

fn data_dir() -> DataDir {
    DataDir(tempfile::tempdir().unwrap())
}

/// A failed test must not leave a browserd running either.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `browserd serve` on a free port and waits for its "listening" line.
fn serve(data_dir: &Path, extra: &[&str]) -> Running {
    serve_on(free_port(), data_dir, extra)
}

/// Starts `browserd serve` on `port` (a restart keeps its address, so connectUrls still work).
fn serve_on(port: u16, data_dir: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--min-timeout",
            "1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = common::until_listening(&mut child).lines;
    Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
        banner,
    }
}

/// The `host:port` a session's connectUrl points at.
fn again_base(session: &Value) -> String {
    let url = session["connectUrl"].as_str().unwrap();
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn port_of(host_port: &str) -> u16 {
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The project id and API key `browserd project create` printed.
fn created_project(out: &str) -> (String, String) {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {out}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    (field("project id:"), field("API key:"))
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        sig,
    )
    .unwrap();
}

async fn create(base: &str, key: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .header("X-BB-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn release(base: &str, key: &str, id: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/sessions/{id}"))
        .header("X-BB-API-Key", key)
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A new, empty context; its id.
async fn create_context(base: &str, key: &str) -> String {
    let ctx: Value = reqwest::Client::new()
        .post(format!("{base}/v1/contexts"))
        .header("X-BB-API-Key", key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ctx["id"].as_str().unwrap().to_owned()
}

/// The cookies a new session on `context` starts with (that session is released after).
async fn cookies_of_context(base: &str, key: &str, context: &str) -> Vec<Value> {
    let s = create(
        base,
        key,
        json!({"keepAlive": true, "browserSettings": {"context": {"id": context}}}),
    )
    .await;
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let cookies = cdp.call("Storage.getCookies", json!({}), None).await;
    drop(cdp);
    release(base, key, s["id"].as_str().unwrap()).await;
    cookies["result"]["cookies"].as_array().unwrap().clone()
}

async fn get(base: &str, key: &str, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/sessions/{id}"))
        .header("X-BB-API-Key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn help_documents_every_setting_with_its_env_var_and_default() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        ("--listen", "BROWSERD_LISTEN", "127.0.0.1:3000"),
        ("--public-url", "BROWSERD_PUBLIC_URL", "Host"),
        ("--data-dir", "BROWSERD_DATA_DIR", "./browserd-data"),
        ("--chromium", "BROWSERD_CHROMIUM", "chromium-browser"),
        ("--api-key", "BROWSERD_API_KEY", "printed once"),
        ("--max-sessions", "BROWSERD_MAX_SESSIONS", "512 MiB"),
        ("--default-timeout", "BROWSERD_DEFAULT_TIMEOUT", "300"),
        ("--min-timeout", "BROWSERD_MIN_TIMEOUT", "60"),
        ("--config", "BROWSERD_CONFIG", "TOML"),
        ("--database", "BROWSERD_DATABASE", "SQLite"),
        ("--node-name", "BROWSERD_NODE_NAME", "host name"),
        ("--node-lease", "BROWSERD_NODE_LEASE", "10"),
        ("--log-format", "BROWSERD_LOG_FORMAT", "text"),
    ] {
        for needle in [flag, env, default] {
            assert!(
                help.contains(needle),
                "serve --help lacks {needle:?}:\n{help}"
            );
        }
    }
}

#[test]
fn a_missing_chromium_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--chromium", "/nonexistent/chromium", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install chromium"), "{err}");
}

#[tokio::test]
async fn first_start_prints_the_sdk_settings_once_and_a_restart_keeps_keep_alive_sessions() {
    let dir = data_dir();
    let server = serve(dir.path(), &[]);
    let banner = server.banner.join("\n");
    let base_line = format!("BROWSERBASE_BASE_URL={}", server.base);
    assert!(banner.contains(&base_line), "{banner}");
    let key = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("BROWSERBASE_API_KEY="))
        .expect("the key is printed")
        .to_owned();
    let db = std::fs::read(dir.path().join("browserd.db")).unwrap();
    assert!(
        memchr::memmem::find(&db, key.as_bytes()).is_none(),
        "the key itself is not stored"
    );

    let kept = create(&server.base, &key, json!({"keepAlive": true})).await;
    let gone = create(&server.base, &key, json!({})).await;
    let mut client = Cdp::connect(kept["connectUrl"].as_str().unwrap()).await;
    assert_eq!(
        client.eval_in_page("window.kept = 'across restarts'").await,
        "across restarts"
    );

    // SIGTERM: the keepAlive session's client is told to reconnect; its browser stays.
    signal(&server.child, rustix::process::Signal::TERM);
    let frame = client.closed().await.expect("a close frame on shutdown");
    assert_eq!(u16::from(frame.code), 1012, "service restart");
    assert!(frame.reason.contains("reconnect"), "{}", frame.reason);
    let status = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");

    // The next start keeps the project, prints no new key, and resumes the session.
    let mut again = serve_on(port_of(&again_base(&kept)), dir.path(), &[]);
    let banner = again.banner.join("\n");
    assert!(!banner.contains("BROWSERBASE_API_KEY"), "{banner}");
    assert!(banner.contains("resumed 1 keepAlive session"), "{banner}");
    let id = kept["id"].as_str().unwrap();
    assert_eq!(get(&again.base, &key, id).await["status"], "RUNNING");
    assert_eq!(
        get(&again.base, &key, gone["id"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    let mut back = Cdp::connect(kept["connectUrl"].as_str().unwrap()).await;
    assert_eq!(back.eval_in_page("window.kept").await, "across restarts");

    // Released now, and a SIGTERM with nothing live leaves no browser behind.
    assert_eq!(release(&again.base, &key, id).await["status"], "COMPLETED");
    signal(&again.child, rustix::process::Signal::TERM);
    again.child.wait().unwrap();
    assert!(browserd::browser::procs::find_by_cmdline(&dir.path().join("sessions")).is_empty());
}

/// A keepAlive session's proxy outlives a restart: its password, sealed in the database with
/// the context key, is opened again by the next browserd, which takes the session back and
/// sends its pages through the same upstream with the same credentials.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_a_sessions_upstream_proxy_and_its_credentials() {
    let proxy = common::Tinyproxy::start("erin", "restart-proxy-pw").await;
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_port = site.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = site.accept().await {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nthrough",
                )
                .await;
        }
    });
    let dir = data_dir();
    let flags = [
        "--allow-local-egress",
        "true",
        "--api-key",
        "bd_restart_proxy_key",
    ];
    let key = "bd_restart_proxy_key";
    let server = serve(dir.path(), &flags);
    let s = create(
        &server.base,
        key,
        json!({"keepAlive": true, "proxies": [{"type": "external", "server": proxy.server(), "username": "erin", "password": "restart-proxy-pw"}]}),
    )
    .await;
    let url = format!("http://localhost:{site_port}/");
    let host = format!("localhost:{site_port}");
    let through = |n: usize| proxy.tunnels().iter().filter(|t| **t == host).count() >= n;
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    assert_eq!(
        common::visit(&mut cdp, &page, &url).await,
        Ok("through".into())
    );
    assert!(through(1), "{:?}", proxy.tunnels());
    let before = proxy.tunnels().iter().filter(|t| **t == host).count();

    signal(&server.child, rustix::process::Signal::TERM);
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.child.wait().unwrap()
    })
    .await
    .unwrap();
    let again = serve_on(port_of(&again_base(&s)), dir.path(), &flags);
    assert!(
        again
            .banner
            .join("\n")
            .contains("resumed 1 keepAlive session")
    );
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    assert_eq!(
        common::visit(&mut cdp, &page, &format!("{url}?again")).await,
        Ok("through".into())
    );
    assert!(through(before + 1), "{:?}", proxy.tunnels());
    assert_eq!(
        release(&again.base, key, s["id"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
}

/// The browser folder of the session created last (warm pool off: one folder per session).
fn newest_folder(data_dir: &Path, known: &[std::path::PathBuf]) -> std::path::PathBuf {
    let folders: Vec<_> = std::fs::read_dir(data_dir.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !known.contains(p))
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    folders[0].clone()
}

#[tokio::test]
async fn after_browserd_is_killed_each_session_gets_the_status_it_deserves() {
    let dir = data_dir();
    let key = "restart-test-key";
    let args = ["--api-key", key, "--warm-pool", "0"];
    let mut server = serve(dir.path(), &args);
    let mut folders = Vec::new();
    let mut session = async |body: Value| {
        let s = create(&server.base, key, body).await;
        folders.push(newest_folder(dir.path(), &folders));
        s
    };
    let kept = session(json!({"keepAlive": true, "timeout": 20})).await;
    let cut = session(json!({"timeout": 600})).await;
    let crashed = session(json!({"keepAlive": true, "timeout": 600})).await;
    let others = [
        session(json!({"keepAlive": true, "timeout": 600})).await,
        session(json!({"keepAlive": true, "timeout": 600})).await,
    ];
    let mut client = Cdp::connect(kept["connectUrl"].as_str().unwrap()).await;
    client.eval_in_page("document.title = 'still here'").await;
    for (i, other) in others.iter().enumerate() {
        let mut c = Cdp::connect(other["connectUrl"].as_str().unwrap()).await;
        c.eval_in_page(&format!("document.title = 'page {i}'"))
            .await;
    }
    let _cut_client = Cdp::connect(cut["connectUrl"].as_str().unwrap()).await;
    // Last, so that it is surely still running when browserd is killed.
    let expiring = session(json!({"keepAlive": true, "timeout": 4})).await;
    let (kept_dir, cut_dir, crashed_dir, expiring_dir) = (
        folders[0].clone(),
        folders[1].clone(),
        folders[2].clone(),
        folders[5].clone(),
    );

    signal(&server.child, rustix::process::Signal::KILL);
    server.child.wait().unwrap();
    // Chromium runs in its own process group, so every browser outlives a SIGKILLed browserd.
    for folder in &folders {
        assert!(!browserd::browser::procs::find_by_cmdline(folder).is_empty());
    }
    // While browserd is down: one browser dies, one session's time runs out.
    browserd::browser::procs::kill_by_cmdline(&crashed_dir);
    let expiry = time::OffsetDateTime::parse(
        expiring["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    eventually(|| async { (time::OffsetDateTime::now_utc() > expiry).then_some(()) })
        .await
        .unwrap();

    let mut again = serve_on(port_of(&again_base(&kept)), dir.path(), &args);
    let banner = again.banner.join("\n");
    assert!(banner.contains("resumed 3 keepAlive session"), "{banner}");
    assert!(banner.contains("ended 3 session"), "{banner}");
    let status_of = async |s: &Value| get(&again.base, key, s["id"].as_str().unwrap()).await;
    assert_eq!(status_of(&kept).await["status"], "RUNNING");
    let cut_now = status_of(&cut).await;
    assert_eq!(cut_now["status"], "COMPLETED");
    assert!(
        cut_now["endReason"].as_str().unwrap().contains("restarted"),
        "{cut_now}"
    );
    let expired = status_of(&expiring).await;
    assert_eq!(expired["status"], "TIMED_OUT");
    assert_eq!(expired["endedAt"], expired["expiresAt"]);
    assert_eq!(status_of(&crashed).await["status"], "ERROR");
    for folder in [&cut_dir, &crashed_dir, &expiring_dir] {
        assert!(
            browserd::browser::procs::find_by_cmdline(folder).is_empty(),
            "{folder:?}"
        );
        assert!(!folder.exists(), "{folder:?}");
    }

    // The resumed session is the same browser, and its timer runs from the stored expiresAt.
    let mut back = Cdp::connect(kept["connectUrl"].as_str().unwrap()).await;
    assert_eq!(back.eval_in_page("document.title").await, "still here");
    let frame = tokio::time::timeout(patience(), back.closed())
        .await
        .unwrap()
        .expect("a close frame at expiry");
    assert!(frame.reason.contains("timed out"), "{}", frame.reason);
    let ended = status_of(&kept).await;
    assert_eq!(ended["status"], "TIMED_OUT");
    assert_eq!(
        ended["expiresAt"], kept["expiresAt"],
        "expiresAt survived the restart"
    );
    assert!(
        eventually(|| async { (!kept_dir.exists()).then_some(()) })
            .await
            .is_some(),
        "the adopted browser's folder is removed at its end"
    );
    assert!(browserd::browser::procs::find_by_cmdline(&kept_dir).is_empty());

    // The other two keepAlive sessions are reachable with their pages too; then released.
    for (i, other) in others.iter().enumerate() {
        let mut c = Cdp::connect(other["connectUrl"].as_str().unwrap()).await;
        assert_eq!(c.eval_in_page("document.title").await, format!("page {i}"));
        let id = other["id"].as_str().unwrap();
        assert_eq!(release(&again.base, key, id).await["status"], "COMPLETED");
    }
    signal(&again.child, rustix::process::Signal::TERM);
    again.child.wait().unwrap();
    assert!(browserd::browser::procs::find_by_cmdline(dir.path()).is_empty());
}

#[tokio::test]
async fn the_cli_manages_projects_and_releases_live_sessions() {
    let dir = data_dir();
    let key = "cli-test-key";
    let mut server = serve(dir.path(), &["--api-key", key]);

    let (ok, out, err) = cli(
        dir.path(),
        &["project", "create", "scrapers", "--concurrency", "3"],
    );
    assert!(ok, "{err}");
    let (new_id, new_key) = created_project(&out);
    let (ok, out, _) = cli(dir.path(), &["project", "list"]);
    assert!(
        ok && out.contains("scrapers") && out.contains(&new_id),
        "{out}"
    );

    // The new project's key works against the running server, with its own settings.
    let (ok, _, err) = cli(
        dir.path(),
        &[
            "project",
            "set-default-timeout",
            "--project",
            &new_id,
            "120",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(dir.path(), &["project", "set-default-timeout", "5"]);
    assert!(!ok && err.contains("timeout must be >= 60"), "{err}");
    let s = create(&server.base, &new_key, json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["projectId"], new_id);
    let start = time::OffsetDateTime::parse(
        s["startedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let end = time::OffsetDateTime::parse(
        s["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((end - start).whole_seconds(), 120);

    let (ok, out, _) = cli(dir.path(), &["sessions", "list", "--status", "running"]);
    assert!(ok && out.contains(&id), "{out}");
    let mut client = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let (ok, out, err) = cli(dir.path(), &["sessions", "release", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("COMPLETED"), "{out}");
    let frame = tokio::time::timeout(patience(), client.closed())
        .await
        .unwrap()
        .expect("close frame");
    assert!(frame.reason.contains("released"));
    assert_eq!(
        get(&server.base, &new_key, &id).await["status"],
        "COMPLETED"
    );

    // A server whose admin socket does not answer still runs its browsers: the CLI says so
    // and records nothing (the data dir's lock, not a failed connect, says a server runs).
    let kept = create(&server.base, &new_key, json!({"keepAlive": true})).await;
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    std::fs::remove_file(dir.path().join("admin.sock")).unwrap();
    let (ok, _, err) = cli(dir.path(), &["sessions", "release", &kept_id]);
    assert!(!ok && err.contains("did not answer"), "{err}");
    assert_eq!(
        get(&server.base, &new_key, &kept_id).await["status"],
        "RUNNING"
    );

    // Stopped with the default policy, the keepAlive session's browser goes on running; a
    // release while no server runs ends it through the one ending path: browser stopped,
    // folder removed.
    signal(&server.child, rustix::process::Signal::TERM);
    server.child.wait().unwrap();
    let sessions_dir = dir.path().join("sessions");
    let folders = || std::fs::read_dir(&sessions_dir).unwrap().count();
    assert_eq!(folders(), 1, "the keepAlive browser's folder is there");
    assert!(!browserd::browser::procs::find_by_cmdline(&sessions_dir).is_empty());
    let (ok, out, err) = cli(dir.path(), &["sessions", "release", &kept_id]);
    assert!(ok, "{err}");
    assert!(
        out.contains("COMPLETED") && out.contains("not running"),
        "{out}"
    );
    assert_eq!(folders(), 0, "its folder is gone");
    assert!(
        browserd::browser::procs::find_by_cmdline(&sessions_dir).is_empty(),
        "its browser is gone"
    );
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_projects_sessions_and_contexts() {
    let (dir, restored) = (data_dir(), data_dir());
    let key = "backup-test-key";
    let server = serve(dir.path(), &["--api-key", key]);
    let http = reqwest::Client::new();
    let ctx = create_context(&server.base, key).await;
    let s = create(
        &server.base,
        key,
        json!({"keepAlive": true, "browserSettings": {"context": {"id": ctx, "persist": true}}}),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let set = cdp
        .call(
            "Storage.setCookies",
            json!({"cookies": [{"name": "kept", "value": "yes", "domain": "example.test",
                                "path": "/", "expires": expires}]}),
            None,
        )
        .await;
    assert!(set.get("error").is_none(), "{set}");
    drop(cdp);
    release(&server.base, key, &id).await;
    assert_eq!(get(&server.base, key, &id).await["status"], "COMPLETED");
    let (ok, _, err) = cli(dir.path(), &["project", "set-default-timeout", "777"]);
    assert!(ok, "{err}");

    // Taken while the server runs.
    let file = dir.path().join("backup.zip");
    let (ok, out, err) = cli(dir.path(), &["backup", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backed up"), "{out}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "it holds the context key");
    drop(server);

    let (ok, _, err) = cli(restored.path(), &["restore", "/etc/hostname"]);
    assert!(!ok && err.contains("not a browserd backup"), "{err}");
    let (ok, _, err) = cli(restored.path(), &["restore", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(restored.path(), &["restore", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("already holds a browserd database"),
        "{err}"
    );

    let server = serve(restored.path(), &[]);
    assert_eq!(get(&server.base, key, &id).await["status"], "COMPLETED");
    let projects: Value = http
        .get(format!("{}/v1/projects", server.base))
        .header("X-BB-API-Key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projects[0]["defaultTimeout"], 777);
    // The context opens (the key came along) with what the first server saved in it.
    let cookies = cookies_of_context(&server.base, key, &ctx).await;
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == "kept" && c["value"] == "yes"),
        "{cookies:?}"
    );
}

/// Data dirs made by earlier versions (`tests/fixtures/upgrade/<date>/`, each with a
/// `fixture.json` of what it holds), which every later browserd must open and serve.
fn upgrade_fixtures() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let mut found: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("fixture.json").exists())
        .collect();
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

async fn api_get(base: &str, key: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("X-BB-API-Key", key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Today's binary opens every committed fixture data dir (migrating its schema) and serves
/// all it holds: the project and its custom timeout, each session with its status (the
/// ones live when the old server died end as ERROR, as after any crash), its logs, usage,
/// the saved context with its cookie, the extension.
#[tokio::test]
async fn every_older_data_dir_opens_migrates_and_serves_all_it_holds() {
    let fixtures = upgrade_fixtures();
    assert!(
        !fixtures.is_empty(),
        "no fixtures in tests/fixtures/upgrade"
    );
    for fixture in fixtures {
        let facts: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("fixture.json")).unwrap())
                .unwrap();
        let dir = data_dir();
        copy_dir(&fixture, dir.path());
        let key = facts["apiKey"].as_str().unwrap();
        // The fixture's sessions ended long ago: keep them past any default retention.
        let server = serve(
            dir.path(),
            &["--retention-days", "36500", "--warm-pool", "0"],
        );
        let base = &server.base;
        let (status, projects) = api_get(base, key, "/v1/projects").await;
        assert_eq!(status, 200, "{fixture:?}: {projects}");
        assert_eq!(projects[0]["defaultTimeout"], facts["defaultTimeout"]);
        let (_, listed) = api_get(base, key, "/v1/sessions").await;
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        for s in facts["sessions"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            assert!(listed.contains(&id), "{fixture:?}: {id} not listed");
            let got = get(base, key, id).await;
            let was = s["status"].as_str().unwrap();
            let now = if was == "RUNNING" || was == "PENDING" {
                "ERROR"
            } else {
                was
            };
            assert_eq!(got["status"], now, "{fixture:?}: {got}");
            assert_eq!(got["userMetadata"], s["userMetadata"], "{fixture:?}");
        }
        let completed = facts["completed"].as_str().unwrap();
        let (status, logs) = api_get(base, key, &format!("/v1/sessions/{completed}/logs")).await;
        assert_eq!(status, 200);
        assert!(!logs.as_array().unwrap().is_empty(), "{fixture:?}: no logs");
        let pid = projects[0]["id"].as_str().unwrap();
        let (_, usage) = api_get(base, key, &format!("/v1/projects/{pid}/usage")).await;
        assert!(
            usage["browserMinutes"].as_u64().unwrap()
                >= facts["browserMinutesAtLeast"].as_u64().unwrap(),
            "{fixture:?}: {usage}"
        );
        let extension = facts["extension"].as_str().unwrap();
        let (status, _) = api_get(base, key, &format!("/v1/extensions/{extension}")).await;
        assert_eq!(status, 200, "{fixture:?}: extension");
        let with_extension = create(base, key, json!({"extensionId": extension})).await;
        release(base, key, with_extension["id"].as_str().unwrap()).await;
        let cookies = cookies_of_context(base, key, facts["context"].as_str().unwrap()).await;
        assert!(
            cookies
                .iter()
                .any(|c| c["name"] == "fixture" && c["value"] == "kept"),
            "{fixture:?}: {cookies:?}"
        );
    }
}

/// Makes today's fixture for the test above; run it when the schema or the data dir's
/// layout changes, and commit what it writes:
/// `cargo nextest run --test it --run-ignored only binary::make_an_upgrade_fixture`.
#[tokio::test]
#[ignore = "writes tests/fixtures/upgrade/<today>/; run on purpose"]
async fn make_an_upgrade_fixture() {
    use browserd::model::{Session, SessionStatus};
    let dir = data_dir();
    let key = "bd_upgrade_fixture_key";
    let mut server = serve(dir.path(), &["--api-key", key, "--warm-pool", "0"]);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let post = |path: &str| {
        http.post(format!("{base}{path}"))
            .header("X-BB-API-Key", key)
    };
    let (ok, _, err) = cli(dir.path(), &["project", "set-default-timeout", "4321"]);
    assert!(ok, "{err}");
    let context = create_context(&base, key).await;
    let extension: Value = post("/v1/extensions")
        .multipart(common::file_form("e.zip", common::extension_zip()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let extension = extension["id"].as_str().unwrap().to_owned();
    let meta = |name: &str| json!({"fixture": name});

    // COMPLETED, with a log and a cookie saved into the context.
    let s = create(
        &base,
        key,
        json!({"keepAlive": true, "userMetadata": meta("completed"),
               "browserSettings": {"context": {"id": context, "persist": true}}}),
    )
    .await;
    let completed = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 10 * 365 * 86_400;
    cdp.call(
        "Storage.setCookies",
        json!({"cookies": [{"name": "fixture", "value": "kept", "domain": "example.test",
                            "path": "/", "expires": expires}]}),
        None,
    )
    .await;
    cdp.eval_in_page("document.title = 'fixture'").await;
    drop(cdp);
    release(&base, key, &completed).await;
    // TIMED_OUT.
    let s = create(
        &base,
        key,
        json!({"timeout": 1, "userMetadata": meta("timed out")}),
    )
    .await;
    let timed_out = s["id"].as_str().unwrap().to_owned();
    eventually(|| async {
        (get(&base, key, &timed_out).await["status"] == "TIMED_OUT").then_some(())
    })
    .await
    .expect("timed out");
    // RUNNING when the server dies.
    let s = create(
        &base,
        key,
        json!({"keepAlive": true, "userMetadata": meta("running")}),
    )
    .await;
    let running = s["id"].as_str().unwrap().to_owned();
    signal(&server.child, rustix::process::Signal::KILL);
    server.child.wait().unwrap();
    browserd::browser::procs::kill_by_cmdline(dir.path());

    // PENDING and ERROR, written by today's store.
    let store = browserd::store::open(&dir.path().join("browserd.db"))
        .await
        .unwrap();
    let first = store
        .sessions
        .get_session(completed.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let t = browserd::model::now();
    let row = |name: &str| Session {
        id: uuid::Uuid::new_v4(),
        status: SessionStatus::Pending,
        user_metadata: meta(name).as_object().cloned(),
        created_at: t,
        updated_at: t,
        started_at: t,
        expires_at: t + time::Duration::hours(1),
        ended_at: None,
        end_reason: None,
        browser: None,
        ..first.clone()
    };
    let limits = browserd::store::ProjectLimits {
        concurrency: 100,
        per_minute: 0,
    };
    let pending = row("pending");
    store
        .sessions
        .insert_session(&pending, limits)
        .await
        .unwrap()
        .unwrap();
    let failed = row("error");
    store
        .sessions
        .insert_session(&failed, limits)
        .await
        .unwrap()
        .unwrap();
    store
        .sessions
        .finish_session(
            failed.id,
            SessionStatus::Error,
            t + time::Duration::seconds(2),
            "the browser failed to start (fixture)",
        )
        .await
        .unwrap();
    let usage = store
        .sessions
        .usage(&first.project_id, browserd::model::now())
        .await
        .unwrap();
    store.close().await;

    // Named by date and schema (how many migrations made it).
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = std::fs::read_dir(manifest.join("migrations/sqlite"))
        .unwrap()
        .count();
    let out = manifest
        .join("tests/fixtures/upgrade")
        .join(format!("{today}-schema{schema}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    browserd::store::snapshot_sqlite(&dir.path().join("browserd.db"), &out.join("browserd.db"))
        .await
        .unwrap();
    std::fs::copy(dir.path().join("context.key"), out.join("context.key")).unwrap();
    for folder in ["contexts", "extensions", "session-files"] {
        copy_dir(&dir.path().join(folder), &out.join(folder));
    }
    let status_of = |id: &str, status: &str, name: &str| json!({"id": id, "status": status, "userMetadata": meta(name)});
    let facts = json!({
        "madeBy": format!("browserd {}", env!("CARGO_PKG_VERSION")),
        "apiKey": key,
        "defaultTimeout": 4321,
        "sessions": [
            status_of(&completed, "COMPLETED", "completed"),
            status_of(&timed_out, "TIMED_OUT", "timed out"),
            status_of(&running, "RUNNING", "running"),
            status_of(&pending.id.to_string(), "PENDING", "pending"),
            status_of(&failed.id.to_string(), "ERROR", "error"),
        ],
        "completed": completed,
        "browserMinutesAtLeast": usage.browser_minutes,
        "context": context,
        "extension": extension,
    });
    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&facts).unwrap(),
    )
    .unwrap();
}

/// The systemd unit docs/operations.md points at: `systemd-analyze verify` finds nothing
/// to say about it (with the binary where ExecStart expects it), and every flag its
/// ExecStart passes is one browserd knows.
#[test]
fn the_systemd_unit_verifies_and_passes_only_known_flags() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/browserd.service"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("browserd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/browserd", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed for this test");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    let exec = unit
        .split("ExecStart=")
        .nth(1)
        .unwrap()
        .split("\n#")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let known = help(&[]) + &help(&["serve"]);
    let flags: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 3, "{exec}");
    for flag in flags {
        assert!(
            known.contains(&format!("{flag} ")),
            "{flag} is not a browserd flag"
        );
    }
}

/// The status of `GET /v1/projects` with `key` against a running server.
async fn projects_status(base: &str, key: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/projects"))
        .header("X-BB-API-Key", key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// `browserd keys` lists a project's keys by id, makes one that the running server takes at
/// once, revokes one that it refuses at once, and keeps a project's last key;
/// `project set-concurrency` changes what the server reports and refuses 0.
#[tokio::test]
async fn the_cli_lists_makes_and_revokes_keys_and_sets_concurrency() {
    let dir = data_dir();
    let key = "cli-keys-operator-key";
    let mut server = serve(dir.path(), &["--api-key", key, "--warm-pool", "0"]);

    let (ok, out, err) = cli(dir.path(), &["project", "create", "tenant"]);
    assert!(ok, "{err}");
    let (project, first) = created_project(&out);
    let first_id = browserd::store::api_key_id(&browserd::secrets::hash_api_key(&first));

    let (ok, out, err) = cli(dir.path(), &["keys", "list", "--project", &project]);
    assert!(ok, "{err}");
    assert!(out.contains(&first_id) && !out.contains(&first), "{out}");

    let (ok, out, err) = cli(dir.path(), &["keys", "create", "--project", &project]);
    assert!(ok, "{err}");
    let second = out
        .split_whitespace()
        .find(|w| w.starts_with("bd_"))
        .expect("the new key")
        .to_owned();
    assert_eq!(projects_status(&server.base, &second).await.0, 200);

    let (ok, out, err) = cli(
        dir.path(),
        &["keys", "revoke", "--project", &project, &first_id],
    );
    assert!(ok && out.contains("revoked"), "{out}{err}");
    assert_eq!(projects_status(&server.base, &first).await.0, 401);
    let second_id = browserd::store::api_key_id(&browserd::secrets::hash_api_key(&second));
    let (ok, _, err) = cli(
        dir.path(),
        &["keys", "revoke", "--project", &project, &second_id],
    );
    assert!(!ok && err.contains("last key"), "{err}");
    assert_eq!(projects_status(&server.base, &second).await.0, 200);

    let (ok, _, err) = cli(
        dir.path(),
        &["project", "set-concurrency", "--project", &project, "0"],
    );
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = cli(
        dir.path(),
        &["project", "set-concurrency", "--project", &project, "7"],
    );
    assert!(ok, "{err}");
    let (status, listed) = projects_status(&server.base, &second).await;
    assert_eq!((status, listed[0]["concurrency"].as_u64()), (200, Some(7)));
    let (ok, _, err) = cli(dir.path(), &["keys", "revoke", "--project", &project, "%"]);
    assert!(!ok && err.contains("not a key id"), "{err}");

    // The operator's configured key, revoked, stays revoked: a restart with it refuses to
    // start instead of putting it back.
    let (ok, _, err) = cli(dir.path(), &["keys", "create"]);
    assert!(ok, "{err}");
    let operator_id = browserd::store::api_key_id(&browserd::secrets::hash_api_key(key));
    let (ok, out, err) = cli(dir.path(), &["keys", "revoke", &operator_id]);
    assert!(ok, "{out}{err}");
    assert_eq!(projects_status(&server.base, key).await.0, 401);
    signal(&server.child, rustix::process::Signal::TERM);
    server.child.wait().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            key,
            "--warm-pool",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a revoked key");
    assert!(err.contains("was revoked"), "{err}");
}

/// The config file takes every setting `browserd serve --help` lists (the global ones
/// included): each flag, spelled with `_`, is a key the file knows. A key it does not know
/// is an error that names it, so a flag added without a file key fails here.
#[test]
fn the_config_file_takes_every_serve_flag() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: std::collections::BTreeSet<String> =
        regex_lite::Regex::new(r"(?m)^\s+(?:-\w, )?--([a-z][a-z0-9-]+)")
            .unwrap()
            .captures_iter(&help)
            .map(|c| c[1].to_owned())
            .filter(|f| !["help", "version", "config"].contains(&f.as_str()))
            .collect();
    assert!(flags.len() > 30, "flags read from --help: {flags:?}");
    let known = |key: &str| {
        // Any value: a wrong type is an error too, but not an unknown key.
        match toml::from_str::<browserd::config::Settings>(&format!("{key} = \"x\"\n")) {
            Ok(_) => true,
            Err(e) => !e.to_string().contains("unknown field"),
        }
    };
    assert!(!known("no_such_setting"), "the check can fail");
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !known(&f.replace('-', "_")))
        .collect();
    assert!(
        missing.is_empty(),
        "flags the config file does not take: {missing:?}"
    );
}

/// `browserd --version` names the commit it was built from.
#[test]
fn the_version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!(
            "browserd {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )
    );
}

/// `browserd doctor` on this machine (the test command installed everything): every check
/// passes, Chromium really rendered a page; with a Chromium that is not there, a data dir
/// that others may read, or a database that does not answer, it says which and how to fix
/// it, and exits 1 when browserd could not run.
#[test]
fn doctor_says_what_works_and_what_to_install() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = data_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let doctor = |extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("doctor")
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = doctor(&[]);
    assert!(ok, "{out}{err}");
    for line in [
        "ok    chromium run  rendered a page headless",
        "ok    sandbox",
        "ok    chromedriver  ChromeDriver",
        "ok    ad lists      2 of 2",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(!out.contains("FAIL") && !out.contains("warn"), "{out}");

    let (ok, out, err) = doctor(&["--chromium", "/nonexistent/chromium"]);
    assert!(!ok && err.contains("a check failed"), "{err}");
    assert!(
        out.contains("FAIL  chromium      /nonexistent/chromium does not answer --version"),
        "{out}"
    );

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out, _) = doctor(&[]);
    assert!(ok, "a warning is not a failure: {out}");
    assert!(
        out.contains("warn  data dir") && out.contains("chmod 700"),
        "{out}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    let closed = free_port();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("doctor")
        .env(
            "BROWSERD_DATABASE",
            format!("postgres://browserd@127.0.0.1:{closed}/browserd"),
        )
        .env("BROWSERD_CONTEXT_KEY", "00".repeat(32))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  database") && text.contains("Connection refused"),
        "{text}"
    );
}

/// `/readyz` of a running server: its status and body.
async fn readyz(base: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Waits (bounded) for a child to exit; its exit status.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    eventually(|| {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
    .expect("browserd exited")
}

/// `--shutdown drain`: on SIGTERM `/readyz` turns 503 at once and creates are refused with
/// a retry, while the live keepAlive session goes on (its client keeps working and may
/// reconnect); browserd exits 0 once that session ends.
#[tokio::test]
async fn a_draining_server_keeps_its_sessions_and_exits_when_the_last_ends() {
    let dir = data_dir();
    let key = "drain-key";
    let mut server = serve(
        dir.path(),
        &["--api-key", key, "--warm-pool", "0", "--shutdown", "drain"],
    );
    let s = create(&server.base, key, json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    cdp.eval_in_page("window.kept = 41").await;

    signal(&server.child, rustix::process::Signal::TERM);
    let (status, body) = eventually(|| async {
        let (status, body) = readyz(&server.base).await;
        (body["checks"]["draining"]["ok"] == false).then_some((status, body))
    })
    .await
    .expect("/readyz says draining");
    assert_eq!(
        (status, &body["checks"]["draining"]["ok"]),
        (503, &json!(false)),
        "{body}"
    );
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.base))
        .header("X-BB-API-Key", key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-should-retry"], "true");

    // The session goes on, and a client may come back to it.
    assert_eq!(cdp.eval_in_page("++window.kept").await, json!(42));
    drop(cdp);
    let mut again = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    assert_eq!(again.eval_in_page("window.kept").await, json!(42));
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    assert_eq!(release(&server.base, key, &id).await["status"], "COMPLETED");
    let status = exit_of(&mut server.child).await;
    assert!(status.success(), "{status}");
    assert!(browserd::browser::procs::find_by_cmdline(dir.path()).is_empty());
}

/// A second SIGTERM during a drain stops browserd at once, ending what is live as
/// `--shutdown drain` says (ended, COMPLETED), and it exits 0.
#[tokio::test]
async fn a_second_sigterm_during_a_drain_stops_at_once() {
    let dir = data_dir();
    let key = "drain-twice-key";
    let mut server = serve(
        dir.path(),
        &["--api-key", key, "--warm-pool", "0", "--shutdown", "drain"],
    );
    let s = create(&server.base, key, json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    signal(&server.child, rustix::process::Signal::TERM);
    eventually(|| async {
        let (_, body) = readyz(&server.base).await;
        (body["checks"]["draining"]["ok"] == false).then_some(())
    })
    .await
    .expect("draining");
    assert!(server.child.try_wait().unwrap().is_none(), "a drain waits");
    signal(&server.child, rustix::process::Signal::TERM);
    let status = exit_of(&mut server.child).await;
    assert!(status.success(), "{status}");
    let (ok, out, _) = cli(dir.path(), &["sessions", "list"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("COMPLETED"), "{line}");
    assert!(browserd::browser::procs::find_by_cmdline(dir.path()).is_empty());
}

/// `browserd drain` on a server started with the default (`keep`); with `--drain-timeout`
/// the sessions still live at its end are ended, their clients told why, and browserd
/// exits 0.
#[tokio::test]
async fn browserd_drain_ends_what_is_left_at_the_drain_timeout() {
    let dir = data_dir();
    let key = "drain-timeout-key";
    let mut server = serve(
        dir.path(),
        &["--api-key", key, "--warm-pool", "0", "--drain-timeout", "2"],
    );
    let s = create(&server.base, key, json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;

    let (ok, out, err) = cli(dir.path(), &["drain"]);
    assert!(ok && out.contains("1 live session"), "{out}{err}");
    let (status, body) = readyz(&server.base).await;
    assert_eq!(
        (status, &body["checks"]["draining"]["ok"]),
        (503, &json!(false)),
        "draining at once: {body}"
    );
    let frame = tokio::time::timeout(patience(), cdp.closed())
        .await
        .unwrap()
        .expect("a close frame");
    assert!(frame.reason.contains("--drain-timeout"), "{frame:?}");
    let status = exit_of(&mut server.child).await;
    assert!(status.success(), "{status}");
    let (ok, out, _) = cli(dir.path(), &["sessions", "list"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.contains("COMPLETED") && line.contains("--drain-timeout"),
        "{line}"
    );
    let (ok, _, err) = cli(dir.path(), &["drain"]);
    assert!(!ok && err.contains("no browserd is running"), "{err}");
}

/// `/readyz` proves Chromium: a server without a warm pool is ready only once its launch
/// probe started a real browser; one whose Chromium cannot start never is, and says why.
#[tokio::test]
async fn readiness_waits_for_a_browser_that_really_started() {
    let dir = data_dir();
    let mut server = serve(dir.path(), &["--warm-pool", "0"]);
    // Nothing has started a browser yet: not ready (this ask starts the probe).
    let (status, body) = readyz(&server.base).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["chromium"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no browser has started")),
        "{body}"
    );
    let (_, body) = eventually(|| async {
        let (status, body) = readyz(&server.base).await;
        (status == 200).then_some((status, body))
    })
    .await
    .expect("ready once the probe's browser started");
    assert_eq!(body["checks"]["chromium"]["ok"], true);
    signal(&server.child, rustix::process::Signal::TERM);
    server.child.wait().unwrap();

    let broken = data_dir();
    let mut server = serve(
        broken.path(),
        &[
            "--warm-pool",
            "0",
            "--sandbox",
            "off",
            "--chromium",
            "/bin/false",
        ],
    );
    let body = eventually(|| async {
        let (_, body) = readyz(&server.base).await;
        body["checks"]["chromium"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("the last browser launch failed"))
            .then_some(body)
    })
    .await
    .expect("the failed launch is named");
    assert_eq!(body["ready"], false, "{body}");
    signal(&server.child, rustix::process::Signal::TERM);
    server.child.wait().unwrap();
}
