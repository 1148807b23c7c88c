//! The `browserd` binary as a user runs it: first start, the CLI, SIGTERM, and a restart
//! after browserd was killed.

mod common;

use common::{Cdp, PATIENCE, eventually};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");

struct Running {
    child: Child,
    base: String,
    /// Everything the server printed on stdout before it said it was listening.
    banner: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `browserd serve` and waits for its "listening" line.
fn serve(data_dir: &Path, extra: &[&str]) -> Running {
    let port = free_port();
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
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("listening on");
        banner.push(line);
        if done {
            break;
        }
    }
    assert!(
        banner.last().is_some_and(|l| l.contains("listening on")),
        "browserd did not start: {banner:?}"
    );
    // Keep reading so a full pipe never blocks the server.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
        banner,
    }
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
        ("--public-url", "BROWSERD_PUBLIC_URL", "Host header"),
        ("--data-dir", "BROWSERD_DATA_DIR", "./browserd-data"),
        ("--chromium", "BROWSERD_CHROMIUM", "chromium-browser"),
        ("--api-key", "BROWSERD_API_KEY", "printed once"),
        ("--max-sessions", "BROWSERD_MAX_SESSIONS", "512 MiB"),
        ("--default-timeout", "BROWSERD_DEFAULT_TIMEOUT", "300"),
        ("--min-timeout", "BROWSERD_MIN_TIMEOUT", "60"),
        ("--config", "BROWSERD_CONFIG", "TOML"),
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
async fn first_start_prints_the_sdk_settings_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
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

    let s = create(&server.base, &key, json!({"keepAlive": true})).await;
    let mut client = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    assert_eq!(client.eval_in_page("40 + 2").await, 42);

    signal(&server.child, rustix::process::Signal::TERM);
    let frame = client.closed().await.expect("a close frame on shutdown");
    assert!(frame.reason.contains("shutting down"), "{}", frame.reason);
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(browserd::browser::procs::find_by_cmdline(&dir.path().join("sessions")).is_empty());

    // The second start keeps the project and prints no new key; the old key still works.
    let mut again = serve(dir.path(), &[]);
    assert!(
        !again.banner.join("\n").contains("BROWSERBASE_API_KEY"),
        "{:?}",
        again.banner
    );
    let after = get(&again.base, &key, s["id"].as_str().unwrap()).await;
    assert_eq!(after["status"], "COMPLETED");
    signal(&again.child, rustix::process::Signal::TERM);
    again.child.wait().unwrap();
}

#[tokio::test]
async fn after_browserd_is_killed_a_restart_ends_its_sessions_and_removes_their_browsers() {
    let dir = tempfile::tempdir().unwrap();
    let key = "restart-test-key";
    // No warm pool: the one browser folder is the session's.
    let mut server = serve(dir.path(), &["--api-key", key, "--warm-pool", "0"]);
    let s = create(
        &server.base,
        key,
        json!({"keepAlive": true, "timeout": 600}),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let folders: Vec<_> = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let session_dir = folders[0].clone();
    assert!(!browserd::browser::procs::find_by_cmdline(&session_dir).is_empty());

    signal(&server.child, rustix::process::Signal::KILL);
    server.child.wait().unwrap();
    // Chromium runs in its own process group, so it outlives a SIGKILLed browserd...
    assert!(!browserd::browser::procs::find_by_cmdline(&session_dir).is_empty());

    // ...until the next start, which sweeps it and records the truth.
    let mut again = serve(dir.path(), &["--api-key", key, "--warm-pool", "0"]);
    assert!(
        again.banner.iter().any(|l| l.contains("ended 1 session")),
        "{:?}",
        again.banner
    );
    let after = get(&again.base, key, &id).await;
    assert_eq!(after["status"], "ERROR");
    assert!(after["endReason"].as_str().unwrap().contains("restarted"));
    assert!(
        eventually(|| async {
            browserd::browser::procs::find_by_cmdline(&session_dir)
                .is_empty()
                .then_some(())
        })
        .await
        .is_some()
    );
    assert!(!session_dir.exists());
    signal(&again.child, rustix::process::Signal::TERM);
    again.child.wait().unwrap();
}

#[tokio::test]
async fn the_cli_manages_projects_and_releases_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let key = "cli-test-key";
    let mut server = serve(dir.path(), &["--api-key", key]);

    let (ok, out, err) = cli(
        dir.path(),
        &["project", "create", "scrapers", "--concurrency", "3"],
    );
    assert!(ok, "{err}");
    let new_key = out
        .lines()
        .find_map(|l| l.strip_prefix("API key:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let new_id = out
        .lines()
        .find_map(|l| l.strip_prefix("project id:"))
        .unwrap()
        .trim()
        .to_owned();
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
    let frame = tokio::time::timeout(PATIENCE, client.closed())
        .await
        .unwrap()
        .expect("close frame");
    assert!(frame.reason.contains("released"));
    assert_eq!(
        get(&server.base, &new_key, &id).await["status"],
        "COMPLETED"
    );

    signal(&server.child, rustix::process::Signal::TERM);
    server.child.wait().unwrap();
}
