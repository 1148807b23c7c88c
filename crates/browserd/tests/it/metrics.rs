//! `/metrics` as Prometheus sees it: a real Prometheus (Debian's package) scrapes a real
//! browserd on loopback, and its query API returns the series a few sessions made.

use crate::common;

use common::{Cdp, eventually};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");

/// Kills its process when dropped (a failed test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browserd under test: stopped with SIGTERM (which ends its sessions and stops its
/// warm browsers), and whatever still names its data dir killed, passed or failed.
struct Server {
    child: Child,
    data_dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
        browserd::browser::procs::kill_by_cmdline(&self.data_dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the one series `query` selects, if Prometheus has it.
async fn query(prometheus: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let v: Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query?query={encoded}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let result = v["data"]["result"].as_array()?;
    let [series] = result.as_slice() else {
        return None;
    };
    series["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_the_sessions_creates_endings_and_relay_counts() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let data_dir = dir.path().join("data");
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--min-timeout", "1"])
        .args(["--warm-pool", "1"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--shutdown-ends-sessions", "true"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("BROWSERD_API_KEY", common::API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = common::until_listening(&mut server).base;
    let _server = Server {
        child: server,
        data_dir,
    };
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .header("x-bb-api-key", common::API_KEY)
    };

    // A warm create, a cold one (the pool holds one browser), a refused one; CDP through
    // one of them; both released.
    let project: Value = api(reqwest::Method::GET, "/v1/projects")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        eventually(|| async {
            let p: Value = api(reqwest::Method::GET, "/v1/projects")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (p[0]["browserd"]["warmReady"] == 1).then_some(())
        })
        .await
        .is_some(),
        "the warm browser is ready: {project}"
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let s: Value = api(reqwest::Method::POST, "/v1/sessions")
            .json(&json!({"keepAlive": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(s);
    }
    let refused = api(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"timeout": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let mut cdp = Cdp::connect(ids[0]["connectUrl"].as_str().unwrap()).await;
    for _ in 0..3 {
        assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    }
    drop(cdp);
    for s in &ids {
        let released = api(
            reqwest::Method::POST,
            &format!("/v1/sessions/{}", s["id"].as_str().unwrap()),
        )
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap();
        assert_eq!(released.status(), 200);
    }

    // The exposition is valid for promtool, and needs the key on the API port.
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let without_key = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(without_key.status(), 401);
    let with_key = api(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(with_key.status(), 200, "the default project's key");
    // Another project's key: the figures name every project, so no.
    let made = Command::new(BIN)
        .args(["project", "create", "tenant"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&made.stdout);
    let other_key = out
        .lines()
        .find_map(|l| l.strip_prefix("API key:"))
        .and_then(|k| k.split_whitespace().next())
        .expect("the CLI prints the new key");
    let other = http
        .get(format!("{base}/metrics"))
        .header("x-bb-api-key", other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    // A real Prometheus scrapes it every second.
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: browserd\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package; scripts/test installs it)");
    let _prometheus = Running(prometheus);
    let prom = format!("http://127.0.0.1:{prom_port}");
    for (q, want) in [
        (r#"browserd_session_creates_total{outcome="created"}"#, 2.0),
        (
            r#"browserd_session_creates_total{outcome="client_error"}"#,
            1.0,
        ),
        (
            r#"browserd_session_endings_total{status="COMPLETED",reason="release"}"#,
            2.0,
        ),
        (r#"browserd_session_create_seconds_count{kind="warm"}"#, 1.0),
        (r#"browserd_session_create_seconds_count{kind="cold"}"#, 1.0),
        (
            r#"browserd_cdp_messages_total{direction="client_to_browser"}"#,
            3.0,
        ),
        (
            r#"browserd_cdp_messages_total{direction="browser_to_client"}"#,
            3.0,
        ),
        ("browserd_clients_connected", 0.0),
        ("browserd_build_info", 1.0),
        ("browserd_memory_floor_bytes", 512.0 * 1024.0 * 1024.0),
    ] {
        let got = eventually(|| async {
            let v = query(&prom, q).await?;
            (v == want).then_some(v)
        })
        .await;
        assert_eq!(
            got,
            Some(want),
            "{q}: Prometheus has {:?}",
            query(&prom, q).await
        );
    }
    // Gauges of state: the pool refilled; no session is live after the releases.
    assert!(
        eventually(|| async {
            (query(&prom, "browserd_warm_pool_ready").await? == 1.0).then_some(())
        })
        .await
        .is_some()
    );
    assert!(
        query(&prom, "browserd_memory_available_bytes")
            .await
            .unwrap()
            > 0.0
    );
    assert!(
        query(&prom, "browserd_browser_launch_seconds_count")
            .await
            .unwrap()
            >= 2.0
    );
}
