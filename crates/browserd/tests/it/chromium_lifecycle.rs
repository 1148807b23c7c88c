//! The session lifecycle against real Chromium: connect, keepAlive, timeout, release,
//! Browser.close, crashes, and what each ending leaves behind (nothing).

use crate::common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::path::PathBuf;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn id_of(s: &serde_json::Value) -> String {
    s["id"].as_str().unwrap().to_owned()
}

fn connect_url(s: &serde_json::Value) -> String {
    s["connectUrl"].as_str().unwrap().to_owned()
}

/// The pid and folder of a live session's browser.
fn browser_of(server: &TestServer, id: &str) -> (u32, PathBuf) {
    let pid = server
        .state
        .sessions
        .browser_pid(id.parse().unwrap())
        .expect("a live session has a browser pid");
    (pid, server.browser_dir(id))
}

/// After an ending: the browser process and every process naming its profile are gone,
/// and so is the browser's folder.
async fn assert_cleaned_up((pid, dir): (u32, PathBuf)) {
    assert!(wait_gone(pid).await, "browser {pid} survived the session");
    assert!(
        eventually(|| async { (!dir.exists()).then_some(()) })
            .await
            .is_some(),
        "session dir {} was not removed",
        dir.display()
    );
    assert!(browserd::browser::procs::find_by_cmdline(&dir).is_empty());
    assert!(
        !browserd::browser::tmp_dir_of(&dir).exists(),
        "its temporary folder was not removed"
    );
}

#[tokio::test]
async fn an_unsandboxed_browser_keeps_its_temporary_files_in_its_own_folder() {
    let server = TestServer::start_with(Options {
        sandbox_off: true,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let browser = browser_of(&server, id);
    let tmp = browserd::browser::tmp_dir_of(&browser.1);
    // Chromium's singleton socket folder is there, not loose in the host's /tmp.
    let singleton = eventually(|| async {
        std::fs::read_dir(&tmp)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("org.chromium."))
    })
    .await;
    assert!(
        singleton.is_some(),
        "no org.chromium.* in {}",
        tmp.display()
    );
    server.release(id).await;
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn a_browser_that_fails_to_start_ends_its_session_as_error_and_leaves_nothing() {
    // An executable that exits at once, in Chromium's place, inside the sandbox.
    let server = TestServer::start_with(Options {
        chromium: Some("/bin/false".into()),
        ..Options::default()
    })
    .await;
    let resp = server
        .req(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("failed to start"),
        "{body}"
    );
    let listed = server.get_json("/v1/sessions").await;
    assert_eq!(listed[0]["status"], "ERROR", "{listed}");
    assert_eq!(server.state.sessions.live_count(), 0, "its slot is free");
    let sessions_dir = server.data_dir.path().join("sessions");
    let left: Vec<_> = std::fs::read_dir(&sessions_dir)
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "folders left: {left:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_session_is_a_real_browser_with_one_blank_page() {
    let server = TestServer::start().await;
    let s = server.create(json!({})).await;
    assert_eq!(s["status"], "RUNNING");
    let url = connect_url(&s);
    assert!(
        url.starts_with(&format!("ws://{}/?signingKey=", server.addr)),
        "{url}"
    );
    assert!(
        !url.contains("devtools"),
        "Chromium's own endpoint never shows: {url}"
    );

    let mut cdp = Cdp::connect(&url).await;
    let version = cdp.call("Browser.getVersion", json!({}), None).await;
    assert!(
        version["result"]["product"]
            .as_str()
            .unwrap()
            .contains("Chrome"),
        "{version}"
    );
    let targets = cdp.call("Target.getTargets", json!({}), None).await;
    let pages: Vec<_> = targets["result"]["targetInfos"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "page")
        .collect();
    assert_eq!(pages.len(), 1, "{targets}");
    assert_eq!(pages[0]["url"], "about:blank");
    assert_eq!(cdp.eval_in_page("1 + 1").await, 2);

    let browser = browser_of(&server, &id_of(&s));
    server.release(&id_of(&s)).await;
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn the_viewport_setting_sizes_the_window() {
    let server = TestServer::start().await;
    let s = server
        .create(json!({"browserSettings": {"viewport": {"width": 800, "height": 600}}}))
        .await;
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    let size = cdp
        .eval_in_page("[window.outerWidth, window.outerHeight]")
        .await;
    assert_eq!(size, json!([800, 600]));
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_survives_disconnects_and_serves_several_clients() {
    let server = TestServer::start().await;
    let s = server
        .create(json!({"keepAlive": true, "timeout": 600}))
        .await;
    let (id, url) = (id_of(&s), connect_url(&s));

    let mut first = Cdp::connect(&url).await;
    first
        .eval_in_page("window.remembered = 'kept'; document.title = 'state'")
        .await;
    drop(first);

    // The disconnect is processed before the next connect; the session must still be there.
    let mut again = Cdp::connect(&url).await;
    assert_eq!(again.eval_in_page("window.remembered").await, "kept");
    let mut other = Cdp::connect(&url).await;
    assert_eq!(other.eval_in_page("document.title").await, "state");
    assert_eq!(server.get(&id).await["status"], "RUNNING");

    let browser = browser_of(&server, &id);
    let released = server.release(&id).await;
    assert_eq!(released["status"], "COMPLETED");
    assert!(released["endedAt"].is_string());
    for client in [&mut again, &mut other] {
        let frame = client.closed().await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Normal);
        assert!(frame.reason.contains("released"), "{}", frame.reason);
    }
    assert_cleaned_up(browser).await;

    // An ended session answers 410 before any upgrade, with the reason.
    let (status, body) = refused_handshake(&url).await;
    assert_eq!(status, 410);
    assert!(
        body["message"].as_str().unwrap().contains("COMPLETED"),
        "{body}"
    );
    // Releasing again is harmless and returns it unchanged.
    assert_eq!(server.release(&id).await, released);
    server.stop().await;
}

#[tokio::test]
async fn without_keep_alive_the_last_disconnect_completes_the_session() {
    let server = TestServer::start().await;
    let s = server.create(json!({"timeout": 600})).await;
    let id = id_of(&s);
    let browser = browser_of(&server, &id);
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    assert_eq!(cdp.eval_in_page("2 * 21").await, 42);
    drop(cdp);
    let ended = server.wait_for_status(&id, "COMPLETED").await;
    assert!(ended["endedAt"].is_string());
    assert!(
        ended.get("connectUrl").is_none(),
        "no connectUrl once ended"
    );
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn at_its_timeout_a_session_closes_clients_with_the_reason() {
    let server = TestServer::start().await;
    let s = server
        .create(json!({"keepAlive": true, "timeout": 2}))
        .await;
    let id = id_of(&s);
    let browser = browser_of(&server, &id);
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    let frame = cdp.closed().await.expect("a close frame");
    assert!(frame.reason.contains("timed out"), "{}", frame.reason);
    let ended = server.get(&id).await;
    assert_eq!(
        ended["status"], "TIMED_OUT",
        "status is recorded before clients are told"
    );
    let expires = time::OffsetDateTime::parse(
        ended["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ended_at = time::OffsetDateTime::parse(
        ended["endedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        ended_at >= expires,
        "ended {ended_at} before expiry {expires}"
    );
    assert!((ended_at - expires) < time::Duration::seconds(2));
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn browser_close_from_a_client_completes_the_session() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = id_of(&s);
    let browser = browser_of(&server, &id);
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    let answer = cdp.call("Browser.close", json!({}), None).await;
    assert_eq!(answer["result"], json!({}));
    let frame = cdp.closed().await.expect("a close frame");
    assert!(frame.reason.contains("Browser.close"), "{}", frame.reason);
    assert_eq!(server.get(&id).await["status"], "COMPLETED");
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn a_killed_browser_ends_the_session_as_error() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = id_of(&s);
    let browser = browser_of(&server, &id);
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    assert_eq!(cdp.eval_in_page("1").await, 1);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(browser.0 as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let frame = cdp.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Error);
    assert!(
        frame.reason.contains("exited unexpectedly"),
        "{}",
        frame.reason
    );
    let ended = server.get(&id).await;
    assert_eq!(ended["status"], "ERROR");
    assert!(
        ended["endReason"].as_str().unwrap().contains("SIGKILL"),
        "{ended}"
    );
    assert_cleaned_up(browser).await;
    server.stop().await;
}

#[tokio::test]
async fn connect_credentials_are_checked_before_the_upgrade() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = id_of(&s);
    let good = connect_url(&s);
    let ws_base = format!("ws://{}", server.addr);

    let (status, _) = refused_handshake(&format!("{ws_base}/?signingKey={id}.AAAA")).await;
    assert_eq!(status, 401);
    let (status, _) = refused_handshake(&format!("{ws_base}/?signingKey=garbage")).await;
    assert_eq!(status, 401);
    let (status, body) = refused_handshake(&format!("{ws_base}/")).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("signingKey"));
    let (status, _) = refused_handshake(&format!("{ws_base}/?apiKey=wrong&sessionId={id}")).await;
    assert_eq!(status, 401);
    let (status, _) = refused_handshake(&format!(
        "{ws_base}/?apiKey={API_KEY}&sessionId={}",
        uuid::Uuid::new_v4()
    ))
    .await;
    assert_eq!(status, 404);

    // Compression is never negotiated, so frames pass as they are.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut offer = good.as_str().into_client_request().unwrap();
    offer.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (_ws, answer) = tokio_tungstenite::connect_async(offer).await.unwrap();
    assert!(answer.headers().get("sec-websocket-extensions").is_none());

    // The legacy form reaches the same browser.
    let mut legacy = Cdp::connect(&format!("{ws_base}/?apiKey={API_KEY}&sessionId={id}")).await;
    legacy.eval_in_page("window.via = 'legacy'").await;
    let mut signed = Cdp::connect(&good).await;
    assert_eq!(signed.eval_in_page("window.via").await, "legacy");

    // Playwright given an http:// URL asks /json/version/ (query kept) for the websocket.
    let http_url = good
        .replacen("ws://", "http://", 1)
        .replacen("/?", "/json/version/?", 1);
    let version: serde_json::Value = server
        .http
        .get(&http_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["webSocketDebuggerUrl"], good.as_str());

    // A plain GET of the connectUrl explains itself.
    let plain = server
        .http
        .get(good.replacen("ws://", "http://", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn messages_of_100_mb_pass_both_ways() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    const MB100: usize = 100_000_000;

    // Browser → client: a 100 MB string result.
    let big = cdp.eval_in_page(&format!("'x'.repeat({MB100})")).await;
    assert_eq!(big.as_str().map(str::len), Some(MB100));

    // Client → browser: a 100 MB expression.
    let literal = format!("'{}'.length", "y".repeat(MB100));
    assert_eq!(cdp.eval_in_page(&literal).await, MB100);

    // Past Chromium's own 100 MiB limit, browserd answers with a reason instead of a reset.
    let too_big = format!(
        "{{\"id\":1,\"method\":\"Runtime.evaluate\",\"params\":{{\"expression\":\"'{}'\"}}}}",
        "z".repeat(101 * 1024 * 1024)
    );
    cdp.ws
        .send(tokio_tungstenite::tungstenite::Message::text(too_big))
        .await
        .unwrap();
    let frame = cdp.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    assert!(
        frame.reason.contains("Chromium accepts"),
        "{}",
        frame.reason
    );
    assert_eq!(
        server.get(&id_of(&s)).await["status"],
        "RUNNING",
        "the session lives on"
    );
    server.stop().await;
}

/// The relay forwards a command as the client wrote it: numbers a lossy parser would move,
/// object keys in the client's order (a re-serialising relay sorts them), big integers.
#[tokio::test]
async fn the_page_receives_the_clients_numbers_and_key_order_exactly() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let mut cdp = Cdp::connect(&connect_url(&s)).await;
    let page = cdp.page_session().await;
    let window = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": "window"}),
            Some(&page),
        )
        .await;
    let object = window["result"]["result"]["objectId"].as_str().unwrap();
    let text = format!(
        r#"{{"id":77,"sessionId":"{page}","method":"Runtime.callFunctionOn","params":{{"objectId":"{object}","returnByValue":true,"functionDeclaration":"function(a,b,c,d,o){{return [a,b,c,d,Object.keys(o).join()].map(String).join(' ')}}","arguments":[{{"value":1.0000000000000002}},{{"value":5e-324}},{{"value":1.7976931348623157e308}},{{"value":0.30000000000000004}},{{"value":{{"zeta":1,"alpha":2,"mid":3}}}}]}}}}"#
    );
    let answer = cdp.raw(&text, 77).await;
    assert_eq!(
        answer["result"]["result"]["value"],
        "1.0000000000000002 5e-324 1.7976931348623157e+308 0.30000000000000004 zeta,alpha,mid",
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_and_stops_every_browser() {
    let server = TestServer::start().await;
    let a = server.create(json!({"keepAlive": true})).await;
    let b = server.create(json!({})).await;
    let browsers = [
        browser_of(&server, &id_of(&a)),
        browser_of(&server, &id_of(&b)),
    ];
    let mut client = Cdp::connect(&connect_url(&a)).await;
    let closing = tokio::spawn(async move { client.closed().await });
    let data_dir = server.stop().await;
    let store = browserd::store::open(&data_dir.path().join("browserd.db"))
        .await
        .unwrap();
    let frame = closing.await.unwrap().expect("a close frame");
    assert!(frame.reason.contains("shutting down"), "{}", frame.reason);
    for (pid, dir) in browsers {
        assert!(
            !browserd::browser::procs::is_alive(pid),
            "browser {pid} outlived shutdown"
        );
        assert!(!dir.exists());
    }
    for s in [&a, &b] {
        let stored = store
            .sessions
            .get_session(id_of(s).parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status.as_str(), "COMPLETED");
    }
}

/// Resident memory of this test process (the server runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_backpressure_not_buffering() {
    use tokio_tungstenite::tungstenite::Message;
    const REPLIES: usize = 20;
    const EACH: usize = 10 * 1024 * 1024;

    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let mut slow = Cdp::connect(&connect_url(&s)).await;
    let targets = slow.call("Target.getTargets", json!({}), None).await;
    let page = targets["result"]["targetInfos"][0]["targetId"].clone();
    let attached = slow
        .call(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
            None,
        )
        .await;
    let page_session = attached["result"]["sessionId"].as_str().unwrap().to_owned();

    let before = rss_mib();
    // 200 MiB of replies asked for; the client reads none of them for now.
    for i in 0..REPLIES {
        let cmd = json!({"id": 1000 + i, "sessionId": page_session, "method": "Runtime.evaluate",
            "params": {"expression": format!("'x'.repeat({EACH})"), "returnByValue": true}});
        slow.ws.send(Message::text(cmd.to_string())).await.unwrap();
    }
    // Another client of the same page is not stalled by the slow one. Its evaluation runs
    // after the slow client's in the page, so its answer also means all 20 are produced.
    let mut other = Cdp::connect(&connect_url(&s)).await;
    assert_eq!(
        other.eval_in_page("'still responsive'").await,
        "still responsive"
    );
    let grown = rss_mib().saturating_sub(before);
    assert!(
        grown < 100,
        "browserd buffered {grown} MiB for a client that reads nothing (replies: {} MiB)",
        REPLIES * EACH / 1024 / 1024
    );

    // Nothing was lost: the slow client gets every reply once it reads.
    let mut seen = 0;
    while seen < REPLIES {
        match slow.ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["id"].as_u64().is_some_and(|id| id >= 1000) {
                    assert_eq!(
                        v["result"]["result"]["value"].as_str().map(str::len),
                        Some(EACH)
                    );
                    seen += 1;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the slow client's connection ended: {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_vanished_is_noticed_and_a_session_without_keep_alive_ends() {
    let server = TestServer::start_with(Options {
        ping_interval: 1,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({"timeout": 600})).await;
    // Connected, then silent: it never reads, so it never answers a ping (as a peer whose
    // machine went away would).
    let _vanished = Cdp::connect(&connect_url(&s)).await;
    let ended = server.wait_for_status(&id_of(&s), "COMPLETED").await;
    assert!(
        ended["endReason"]
            .as_str()
            .unwrap()
            .contains("last client disconnected"),
        "{ended}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_client_is_disconnected_with_a_reason_and_the_session_goes_on() {
    let server = TestServer::start_with(Options {
        ping_interval: 1,
        client_idle_timeout: 3,
        ..Options::default()
    })
    .await;
    let s = server
        .create(json!({"keepAlive": true, "timeout": 600}))
        .await;

    // A client that keeps sending commands stays connected past the idle limit.
    let mut busy = Cdp::connect(&connect_url(&s)).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        assert_eq!(busy.eval_in_page("1").await, 1);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // One that only answers pings is let go with the reason.
    let mut idle = Cdp::connect(&connect_url(&s)).await;
    let frame = idle.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("no CDP command"), "{}", frame.reason);
    assert_eq!(server.get(&id_of(&s)).await["status"], "RUNNING");
    server.stop().await;
}

/// An HTTPS server on loopback with a self-signed certificate (`openssl s_server -www`,
/// which answers with a page about the connection). Killed when dropped.
struct SelfSigned {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn self_signed_site() -> SelfSigned {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    serve_tls(dir).await
}

/// An HTTPS site for 127.0.0.1 whose certificate a private CA signed; the CA's certificate
/// is `ca.pem` in the site's folder.
async fn private_ca_site() -> SelfSigned {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    openssl(
        at,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=browserd test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        at,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "site.csr",
        ],
    );
    std::fs::write(
        at.join("site.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        at,
        &[
            "x509",
            "-req",
            "-in",
            "site.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "site.ext",
            "-out",
            "cert.pem",
        ],
    );
    serve_tls(dir).await
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let made = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package) makes the test's certificates");
    assert!(made.status.success(), "{made:?}");
}

/// `openssl s_server -www` on `cert.pem` and `key.pem` of `dir`, on a free loopback port.
async fn serve_tls(dir: tempfile::TempDir) -> SelfSigned {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "cert.pem", "-key", "key.pem"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(|| async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(up.is_some(), "openssl s_server did not start");
    SelfSigned {
        child,
        port,
        _dir: dir,
    }
}

/// `proxySettings.caCertificates` with browsers outside the sandbox too (their `$HOME`, where
/// Chromium finds the certificate database, is set to their folder); a session that names
/// no certificate does not trust the CA.
#[tokio::test]
async fn a_sessions_ca_certificate_is_trusted_outside_the_sandbox_too() {
    let site = private_ca_site().await;
    let server = TestServer::start_with(Options {
        sandbox_off: true,
        ..Options::default()
    })
    .await;
    let ca = std::fs::read(site._dir.path().join("ca.pem")).unwrap();
    let uploaded: serde_json::Value = server
        .req(reqwest::Method::POST, "/v1/certificates")
        .multipart(file_form("ca.pem", ca))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cert = uploaded["id"].as_str().expect("an id").to_owned();
    let url = format!("https://127.0.0.1:{}/", site.port);
    for trusted in [true, false] {
        let ids: Vec<&str> = if trusted { vec![&cert] } else { vec![] };
        let s = server
            .create(json!({"keepAlive": true, "proxySettings": {"caCertificates": ids}}))
            .await;
        let mut cdp = Cdp::connect(&connect_url(&s)).await;
        let page = cdp.page_session().await;
        let seen = visit(&mut cdp, &page, &url).await;
        if trusted {
            let text = seen.expect("the private CA's site loads");
            assert!(text.contains("s_server"), "{text}");
        } else {
            let error = seen.expect_err("only a session that names the CA trusts it");
            assert!(error.contains("ERR_CERT_AUTHORITY_INVALID"), "{error}");
        }
        drop(cdp);
        server.release(&id_of(&s)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn ignore_certificate_errors_loads_a_self_signed_site_and_without_it_the_load_fails() {
    let site = self_signed_site().await;
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let url = format!("https://localhost:{}/", site.port);
    for ignore in [false, true] {
        let s = server
            .create(
                json!({"keepAlive": true, "browserSettings": {"ignoreCertificateErrors": ignore}}),
            )
            .await;
        let mut cdp = Cdp::connect(&connect_url(&s)).await;
        let page = cdp.page_session().await;
        let seen = visit(&mut cdp, &page, &url).await;
        if ignore {
            let text = seen.expect("the self-signed site loads");
            assert!(text.contains("s_server"), "{text}");
        } else {
            let error = seen.expect_err("a self-signed site must not load by default");
            assert!(error.contains("CERT"), "{error}");
        }
        drop(cdp);
        server.release(&id_of(&s)).await;
    }
    server.stop().await;
}

/// A WebDriver session is a client of its browserd session until it quits or falls silent:
/// one that sends nothing for longer than the clients' idle limit is let go, and a session
/// without keepAlive then completes, its chromedriver stopped with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_webdriver_session_is_let_go_and_ends_a_session_without_keep_alive() {
    let server = TestServer::start_with(Options {
        client_idle_timeout: 2,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let webdriver = s["seleniumRemoteUrl"].as_str().unwrap();
    let new_session = reqwest::Client::new()
        .post(format!("{webdriver}/session"))
        .header("x-bb-signing-key", s["signingKey"].as_str().unwrap())
        .json(&json!({"capabilities": {"alwaysMatch": {"browserName": "chrome"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(new_session.status(), 200);
    let answer: serde_json::Value = new_session.json().await.unwrap();
    assert!(answer["value"]["sessionId"].is_string(), "{answer}");
    let dir = server.browser_dir(&id);
    let log = dir.join("chromedriver.log");
    assert!(
        !browserd::browser::procs::find_by_cmdline(&log).is_empty(),
        "a chromedriver runs for the session"
    );
    // Still running while the WebDriver session is its client, then completed once it
    // has been silent past the limit.
    assert_eq!(server.get(&id).await["status"], "RUNNING");
    let ended = server.wait_for_status(&id, "COMPLETED").await;
    let reason = ended["endReason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("last client"), "{ended}");
    assert!(
        eventually(|| async {
            browserd::browser::procs::find_by_cmdline(&log)
                .is_empty()
                .then_some(())
        })
        .await
        .is_some(),
        "its chromedriver stopped"
    );
}
