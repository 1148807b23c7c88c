//! browserd's log as an operator reads it: JSON lines, one access line per request, the
//! session a line belongs to, and no secret, even at debug level.

use crate::common;

use common::Cdp;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");

#[tokio::test]
async fn logs_are_json_lines_with_an_access_line_per_request_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, log_path) = (dir.path().join("data"), dir.path().join("browserd.log"));
    let (api_key, context_key) = ("bd_log_test_key_0123456789", "fe".repeat(32));
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--min-timeout", "1"])
        .args(["--warm-pool", "0", "--log-format", "json"])
        .args(["--shutdown-ends-sessions", "true"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "debug")
        .env("BROWSERD_API_KEY", api_key)
        .env("BROWSERD_CONTEXT_KEY", &context_key)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = common::until_listening(&mut child).base;
    // Whatever still names the data dir goes when the test ends, passed or failed.
    struct Sweep(std::path::PathBuf);
    impl Drop for Sweep {
        fn drop(&mut self) {
            browserd::browser::procs::kill_by_cmdline(&self.0);
        }
    }
    let _sweep = Sweep(data_dir.clone());
    let http = reqwest::Client::new();
    let req = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .header("x-bb-api-key", api_key)
    };

    // A session with a context, reached every way a client can: its signing key, the
    // legacy apiKey + sessionId pair, its live view link; then released.
    let ctx: Value = req(reqwest::Method::POST, "/v1/contexts")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session: Value = req(reqwest::Method::POST, "/v1/sessions")
        .header("x-request-id", "trace-me-42")
        .json(&json!({"keepAlive": true,
            "browserSettings": {"context": {"id": ctx["id"], "persist": true}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap();
    let signing_key = session["signingKey"].as_str().unwrap();
    let mut cdp = Cdp::connect(session["connectUrl"].as_str().unwrap()).await;
    assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    drop(cdp);
    let legacy = format!(
        "{}/?apiKey={api_key}&sessionId={id}",
        base.replace("http://", "ws://")
    );
    let mut cdp = Cdp::connect(&legacy).await;
    assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    drop(cdp);
    let debug: Value = req(reqwest::Method::GET, &format!("/v1/sessions/{id}/debug"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = debug["debuggerFullscreenUrl"].as_str().unwrap();
    let token = live
        .split("/debug/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(http.get(live).send().await.unwrap().status(), 200);
    let released = req(reqwest::Method::POST, &format!("/v1/sessions/{id}"))
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    for (what, secret) in [
        ("the API key", api_key),
        ("the context key", context_key.as_str()),
        ("the signing key", signing_key),
        ("the live view token", token),
    ] {
        assert!(!log.contains(secret), "{what} is in the log");
    }
    assert!(!log.contains("\u{1b}["), "no colour codes in a file");

    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &entries {
        assert!(e["timestamp"].is_string() && e["level"].is_string(), "{e}");
    }
    assert!(
        entries.iter().any(|e| e["level"] == "DEBUG"),
        "the secrets were looked for in a debug-level log"
    );
    let access: Vec<&Value> = entries
        .iter()
        .filter(|e| e["target"] == "browserd::access")
        .collect();
    let has = |method: &str, path: &str, status: u16| {
        access
            .iter()
            .any(|e| e["method"] == method && e["path"] == path && e["status"] == status)
    };
    assert!(has("POST", "/v1/sessions", 201), "{access:#?}");
    assert!(has("GET", "/", 101), "the websocket upgrades");
    assert!(has("GET", "/debug/<token>/live", 200));
    assert!(has("POST", &format!("/v1/sessions/{id}"), 200));
    assert!(
        access
            .iter()
            .any(|e| e["span"]["id"] == "trace-me-42" && e["status"] == 201),
        "the client's request id is the line's"
    );
    // The session's own lines carry its id and project.
    assert!(
        entries.iter().any(|e| e["message"] == "session running"
            && e["span"]["id"] == id
            && e["span"]["project"].is_string()),
        "a session line names its session"
    );
}
