//! The warm pool with real Chromium: creates take a browser that was already running, and
//! nothing of one session reaches the next.

use crate::common;

use common::*;
use serde_json::json;

/// Pids of the browsers (the process browserd started for each: Chromium, or the sandbox
/// around it; not their helpers) running from this server's data dir.
fn browser_pids(server: &TestServer) -> Vec<u32> {
    let sessions = server.data_dir.path().join("sessions");
    let all = browserd::browser::procs::find_by_cmdline(&sessions);
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    all.iter()
        .copied()
        .filter(|&pid| parent(pid).is_none_or(|p| !all.contains(&p)))
        .filter(|pid| {
            // Crashpad's handler double-forks away from its browser.
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            memchr::memmem::find(&cmd, b"crashpad").is_none()
        })
        .collect()
}

async fn wait_for_warm(server: &TestServer, n: usize) {
    eventually(|| async { (server.state.sessions.pool().len() == n).then_some(()) })
        .await
        .expect("the pool filled");
}

#[tokio::test]
async fn a_create_takes_an_already_running_browser_and_the_pool_refills() {
    let server = TestServer::start_with(Options {
        warm_pool: 1,
        ..Options::default()
    })
    .await;
    wait_for_warm(&server, 1).await;
    let warm = browser_pids(&server);
    assert_eq!(warm.len(), 1, "{warm:?}");

    let s = server.create(json!({"keepAlive": true})).await;
    let id: uuid::Uuid = s["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(server.state.sessions.browser_pid(id), Some(warm[0]));
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    assert_eq!(cdp.eval_in_page("location.href").await, "about:blank");

    // The pool starts a replacement; a create with another viewport launches cold.
    wait_for_warm(&server, 1).await;
    let before = browser_pids(&server);
    let cold = server
        .create(json!({"browserSettings": {"viewport": {"width": 640, "height": 480}}}))
        .await;
    let cold_id: uuid::Uuid = cold["id"].as_str().unwrap().parse().unwrap();
    let cold_pid = server.state.sessions.browser_pid(cold_id).unwrap();
    assert!(
        !before.contains(&cold_pid),
        "a 640x480 session cannot use a warm browser"
    );
    assert_eq!(server.state.sessions.pool().len(), 1);
    server.stop().await;
    assert!(browser_pids_after_stop_are_gone(&before));
}

fn browser_pids_after_stop_are_gone(pids: &[u32]) -> bool {
    pids.iter()
        .all(|&pid| !browserd::browser::procs::is_alive(pid))
}

#[tokio::test]
async fn no_state_crosses_from_one_session_to_the_next() {
    let server = TestServer::start_with(Options {
        warm_pool: 1,
        ..Options::default()
    })
    .await;
    wait_for_warm(&server, 1).await;
    let a = server.create(json!({"keepAlive": true})).await;
    let mut cdp = Cdp::connect(a["connectUrl"].as_str().unwrap()).await;
    let cookies = cdp
        .call(
            "Storage.setCookies",
            json!({"cookies": [{"name": "secret", "value": "a", "domain": "example.test", "path": "/"}]}),
            None,
        )
        .await;
    assert!(cookies.get("error").is_none(), "{cookies}");
    server.release(a["id"].as_str().unwrap()).await;

    wait_for_warm(&server, 1).await;
    let b = server.create(json!({"keepAlive": true})).await;
    let mut cdp = Cdp::connect(b["connectUrl"].as_str().unwrap()).await;
    let got = cdp.call("Storage.getCookies", json!({}), None).await;
    assert_eq!(
        got["result"]["cookies"],
        json!([]),
        "session b sees a's cookie"
    );
    server.stop().await;
}
