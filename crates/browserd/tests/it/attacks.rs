//! The attack suite: a client of one session, holding an ordinary project key, tries to
//! reach the host, another session or browserd's secrets (docs/security.md). Real Chromium,
//! in its sandbox. Each test names the attack; each would pass on a browserd without the
//! defence only if the attack failed.

use crate::common;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn connected(server: &TestServer) -> (Value, Cdp, String) {
    let s = server.create(json!({"keepAlive": true})).await;
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    cdp.call("Page.enable", json!({}), Some(&page)).await;
    (s, cdp, page)
}

/// A tiny HTTP server on the host's loopback that answers every request with `body`.
async fn local_site(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_page_cannot_read_the_data_dir_or_another_sessions_folder() {
    let server = TestServer::start().await;
    let (a, mut cdp, page) = connected(&server).await;
    let (b, _cdp_b, _) = connected(&server).await;
    let data = server.data_dir.path();
    let b_dir = server.browser_dir(b["id"].as_str().unwrap());
    for target in [
        data.join("browserd.db"),
        data.join("context.key"),
        b_dir.join("profile").join("Local State"),
        b_dir.clone(),
        "/root".into(),
        "/etc/shadow".into(),
    ] {
        let url = format!("file://{}", target.display());
        let seen = visit(&mut cdp, &page, &url).await;
        assert!(seen.is_err(), "{url} was readable: {seen:?}");
    }
    // The folders on the way to its own are bare: nothing of the data dir or of B.
    for dir in [data.to_path_buf(), data.join("sessions")] {
        let listing = visit(&mut cdp, &page, &format!("file://{}/", dir.display()))
            .await
            .unwrap_or_default();
        for secret in ["browserd.db", "context.key", "contexts", "session-files"] {
            assert!(
                !listing.contains(secret),
                "{} shows {secret}: {listing}",
                dir.display()
            );
        }
        let b_name = b_dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !listing.contains(&b_name),
            "{} shows B's folder",
            dir.display()
        );
    }
    // Its own folder is there (the checks above can fail): the sandbox shows it.
    let own = server.browser_dir(a["id"].as_str().unwrap());
    let listing = visit(&mut cdp, &page, &format!("file://{}/", own.display())).await;
    assert!(listing.unwrap().contains("profile"), "its own folder lists");
    server.stop().await;
}

/// Puts a file input (`#f`) in the page on `session`; its DOM node id.
async fn file_input(cdp: &mut Cdp, session: &str) -> Value {
    cdp.call(
        "Runtime.evaluate",
        json!({"expression": "document.body.innerHTML = '<input type=file id=f>'"}),
        Some(session),
    )
    .await;
    let doc = cdp.call("DOM.getDocument", json!({}), Some(session)).await;
    let node = cdp
        .call(
            "DOM.querySelector",
            json!({"nodeId": doc["result"]["root"]["nodeId"], "selector": "#f"}),
            Some(session),
        )
        .await;
    node["result"]["nodeId"].clone()
}

#[tokio::test]
async fn a_client_cannot_hand_host_files_to_a_file_input() {
    let server = TestServer::start().await;
    let (_s, mut cdp, page) = connected(&server).await;
    let node = file_input(&mut cdp, &page).await;
    for path in [
        "/etc/passwd",
        &server
            .data_dir
            .path()
            .join("context.key")
            .display()
            .to_string(),
    ] {
        let r = cdp
            .call(
                "DOM.setFileInputFiles",
                json!({"files": [path], "nodeId": node}),
                Some(&page),
            )
            .await;
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("not a file uploaded to this session"),
            "{path}: {r}"
        );
    }
    let count = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": "document.getElementById('f').files.length", "returnByValue": true}),
            Some(&page),
        )
        .await;
    assert_eq!(count["result"]["result"]["value"], 0);
    server.stop().await;
}

#[tokio::test]
async fn no_page_or_local_process_reaches_another_browsers_devtools() {
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let (_a, mut cdp, page) = connected(&server).await;
    let (b, _cdp_b, _) = connected(&server).await;
    let b_id: uuid::Uuid = b["id"].as_str().unwrap().parse().unwrap();
    let b_cdp = server.state.sessions.inspect(b_id).unwrap().cdp_url;
    let authority = browserd::inspect::devtools_authority(&b_cdp)
        .unwrap()
        .to_owned();
    // A local process: nothing listens there on the host.
    assert!(
        tokio::net::TcpStream::connect(&authority).await.is_err(),
        "B's DevTools port {authority} is open on the host"
    );
    // A page of session A, even with local egress allowed.
    let seen = visit(&mut cdp, &page, &format!("http://{authority}/json/list")).await;
    assert!(seen.is_err(), "A's page read B's targets: {seen:?}");
    // Its own DevTools port is inside its own namespace only; the egress proxy goes to the
    // host, where it is not.
    let own = server
        .state
        .sessions
        .inspect(_a["id"].as_str().unwrap().parse().unwrap())
        .unwrap()
        .cdp_url;
    let own = browserd::inspect::devtools_authority(&own)
        .unwrap()
        .to_owned();
    assert!(
        visit(&mut cdp, &page, &format!("http://{own}/json/version"))
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn pages_reach_local_services_only_when_allowed_and_never_browserd() {
    let site = local_site("hello from the host").await;
    let closed = TestServer::start().await;
    let (_s, mut cdp, page) = connected(&closed).await;
    let seen = visit(&mut cdp, &page, &format!("http://127.0.0.1:{site}/")).await;
    assert!(seen.is_err(), "local egress is off by default: {seen:?}");
    let seen = visit(&mut cdp, &page, &format!("http://localhost:{site}/")).await;
    assert!(seen.is_err(), "localhost too: {seen:?}");
    closed.stop().await;

    let open = TestServer::start_with(Options {
        allow_local_egress: true,
        metrics: true,
        ..Options::default()
    })
    .await;
    let (_s, mut cdp, page) = connected(&open).await;
    let seen = visit(&mut cdp, &page, &format!("http://127.0.0.1:{site}/")).await;
    assert_eq!(seen.as_deref(), Ok("hello from the host"));
    // browserd's own API and websockets stay closed, and so does the metrics port (which
    // needs no key and names every project's sessions), while it serves the test.
    let metrics = open.metrics_addr.unwrap();
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200, "the metrics port serves");
    for url in [
        format!("http://127.0.0.1:{}/metrics", metrics.port()),
        format!("http://localhost:{}/metrics", metrics.port()),
    ] {
        let seen = visit(&mut cdp, &page, &url).await;
        assert!(
            seen.as_ref()
                .is_err_and(|e| e.contains("ERR_SOCKS_CONNECTION_FAILED")),
            "a page reached browserd at {url}: {seen:?}"
        );
    }
    // The API port leads only to the door of the session's own connectUrl (for its
    // extensions): every other path, and every page, is a 403 there.
    for path in [
        "/v1/projects",
        "/v1/sessions",
        "/dashboard",
        "/metrics",
        "/json/version",
    ] {
        let url = format!("http://127.0.0.1:{}{path}", open.addr.port());
        let seen = visit(&mut cdp, &page, &url).await;
        assert!(
            seen.as_ref()
                .is_ok_and(|body| body.contains("only that session's own connectUrl")),
            "a page reached browserd at {url}: {seen:?}"
        );
    }
    open.stop().await;
}

#[tokio::test]
async fn escaped_or_wrapped_download_commands_still_save_in_the_session() {
    let server = TestServer::start().await;
    let (s, mut cdp, page) = connected(&server).await;
    let id = s["id"].as_str().unwrap();
    let evil = tempfile::tempdir().unwrap();
    let evil_path = evil.path().display().to_string();
    // The method name with a JSON escape, as the review sent it.
    let text = format!(
        r#"{{"id":9001,"method":"Browser.set\u0044ownloadBehavior","params":{{"behavior":"allow","downloadPath":"{evil_path}"}}}}"#
    );
    let r = cdp.raw(&text, 9001).await;
    assert!(r.get("error").is_none(), "{r}");
    cdp.call(
        "Runtime.evaluate",
        json!({"expression": "const a = document.createElement('a'); a.href = 'data:text/plain,secret'; a.download = 'x.txt'; document.body.appendChild(a); a.click();"}),
        Some(&page),
    )
    .await;
    let downloads = server.state.sessions.downloads_dir(id.parse().unwrap());
    eventually(|| async { downloads.join("x.txt").is_file().then_some(()) })
        .await
        .expect("the download landed in the session's folder");
    assert!(
        std::fs::read_dir(evil.path()).unwrap().next().is_none(),
        "nothing in {evil_path}"
    );

    // Duplicate keys, a lone surrogate, nesting deeper than browserd parses: refused with
    // a CDP error, never forwarded.
    let dup = format!(
        r#"{{"id":9002,"method":"Runtime.evaluate","method":"Browser.setDownloadBehavior","params":{{"behavior":"allow","downloadPath":"{evil_path}"}}}}"#
    );
    assert_eq!(cdp.raw(&dup, 9002).await["error"]["code"], -32600);
    let surrogate = r#"{"id":9003,"method":"Runtime.evaluate","params":{"expression":"'\ud800'"}}"#;
    assert_eq!(cdp.raw(surrogate, 9003).await["error"]["code"], -32600);
    let deep = format!(
        r#"{{"id":9004,"method":"Browser.setDownloadBehavior","params":{{"behavior":"allow","downloadPath":"{evil_path}","x":{}{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(cdp.raw(&deep, 9004).await["error"]["code"], -32600);

    // A Browser.close wrapped for a target is refused, not passed to the browser.
    let wrapped = json!({"id": 9005, "method": "Target.sendMessageToTarget", "params": {"sessionId": page, "message": r#"{"id":1,"method":"Browser.close"}"#}});
    let r = cdp.raw(&wrapped.to_string(), 9005).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Browser.close"),
        "{r}"
    );
    assert_eq!(server.get(id).await["status"], "RUNNING");
    server.stop().await;
}

#[tokio::test]
async fn a_live_view_link_does_not_open_devtools() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap();
    let debug = server.get_json(&format!("/v1/sessions/{id}/debug")).await;
    let live = debug["debuggerFullscreenUrl"].as_str().unwrap();
    let live_root = live.strip_suffix("/live").unwrap();
    let ws_root = live_root.replacen("http://", "ws://", 1);
    let (status, body) = refused_handshake(&format!("{ws_root}/devtools/browser")).await;
    assert_eq!(status, 403, "{body}");
    let files = server
        .http
        .get(format!("{live_root}/devtools/inspector.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(files.status(), 403);
    // The DevTools link opens DevTools; it is not a live-view link.
    let mut devtools = Cdp::connect(debug["wsUrl"].as_str().unwrap()).await;
    let version = devtools.call("Browser.getVersion", json!({}), None).await;
    assert!(version["result"]["product"].as_str().is_some(), "{version}");
    let devtools_root = debug["wsUrl"]
        .as_str()
        .unwrap()
        .strip_suffix("/devtools/browser")
        .unwrap();
    let live_page = devtools_root.replacen("ws://", "http://", 1) + "/live";
    assert_eq!(
        server.http.get(live_page).send().await.unwrap().status(),
        403
    );
    server.stop().await;
}

#[tokio::test]
async fn browsers_run_sandboxed_as_their_own_users_and_secrets_are_closed() {
    let server = TestServer::start().await;
    let a = server.create(json!({})).await;
    let b = server.create(json!({})).await;
    let uid_of = |id: &str| {
        let dir = server.browser_dir(id);
        let pids = browserd::browser::procs::find_by_cmdline(&dir);
        let chromium: Vec<u32> = pids
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.to_string_lossy().contains("chrom"))
            })
            .collect();
        assert!(!chromium.is_empty(), "no Chromium process for {id}");
        let uids: std::collections::HashSet<String> = chromium
            .iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                assert!(
                    memchr::memmem::find(&cmd, b"--no-sandbox").is_none(),
                    "Chromium's own sandbox is off"
                );
                Some(
                    status
                        .lines()
                        .find(|l| l.starts_with("Uid:"))?
                        .split_whitespace()
                        .nth(1)?
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(uids.len(), 1, "{uids:?}");
        uids.into_iter().next().unwrap()
    };
    let (ua, ub) = (
        uid_of(a["id"].as_str().unwrap()),
        uid_of(b["id"].as_str().unwrap()),
    );
    assert_ne!(ua, "0", "Chromium runs as root");
    assert_ne!(ua, ub, "two sessions share a uid");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(server.data_dir.path()), 0o700);
    assert_eq!(mode(&server.data_dir.path().join("context.key")), 0o600);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_or_silent_http_client_is_disconnected() {
    let server = TestServer::start().await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /v1/projects HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One whole request, answered, then nothing: an idle keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz-none HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let limit = browserd::http_server::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    for (name, tcp) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
    ] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(limit, tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "the {name} connection was still open after {limit:?}"
        );
        if name == "idle" {
            assert!(buf.starts_with(b"HTTP/1.1 "), "the idle one was answered");
        }
    }
    server.stop().await;
}

/// The text of target `target_id` once its document has loaded, and its address.
async fn target_text(cdp: &mut Cdp, target_id: &Value) -> (String, String) {
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            None,
        )
        .await;
    let session = attached["result"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("attach: {attached}"))
        .to_owned();
    // Until the navigation commits, the new target shows about:blank.
    let read = json!({"expression": "document.readyState === 'complete' && location.href !== 'about:blank' ? [location.href, document.body ? document.body.innerText : ''] : null", "returnByValue": true});
    common::wait_until!(
        {
            let r = cdp
                .call("Runtime.evaluate", read.clone(), Some(&session))
                .await;
            match r["result"]["result"]["value"].as_array().map(Vec::as_slice) {
                Some([href, text]) => Some((
                    href.as_str().unwrap_or_default().to_owned(),
                    text.as_str().unwrap_or_default().to_owned(),
                )),
                _ => None,
            }
        },
        "the target's document never loaded"
    )
}

async fn target_ids(cdp: &mut Cdp) -> Vec<Value> {
    let targets = cdp.call("Target.getTargets", json!({}), None).await;
    targets["result"]["targetInfos"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "page")
        .map(|t| t["targetId"].clone())
        .collect()
}

#[tokio::test]
async fn file_urls_opened_by_new_targets_or_window_open_show_only_the_session() {
    let server = TestServer::start().await;
    let (a, mut cdp, page) = connected(&server).await;
    let canary = server.data_dir.path().join("canary.txt");
    std::fs::write(&canary, "CANARY-OF-THE-DATA-DIR").unwrap();
    let own = server
        .browser_dir(a["id"].as_str().unwrap())
        .join("own.html");
    std::fs::write(&own, "<p>OWN-FILE</p>").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (canary_url, own_url) = (
        format!("file://{}", canary.display()),
        format!("file://{}", own.display()),
    );

    // Target.createTarget: its own folder's file shows (so the check below can fail), the
    // data dir's does not.
    for (url, readable) in [(&own_url, true), (&canary_url, false)] {
        let created = cdp
            .call("Target.createTarget", json!({"url": url}), None)
            .await;
        let (_, text) = target_text(&mut cdp, &created["result"]["targetId"]).await;
        assert_eq!(text.contains("OWN-FILE"), readable, "{url}: {text}");
        assert!(
            !text.contains("CANARY"),
            "{url} showed the data dir: {text}"
        );
    }

    // window.open from a file:// page (which may open other file:// URLs).
    assert!(
        visit(&mut cdp, &page, &own_url)
            .await
            .unwrap()
            .contains("OWN-FILE")
    );
    for (url, readable) in [(&own_url, true), (&canary_url, false)] {
        let before = target_ids(&mut cdp).await;
        cdp.call(
            "Runtime.evaluate",
            // As a user's click would: no popup blocker in the way.
            json!({"expression": format!("window.open({url:?}); true"), "userGesture": true}),
            Some(&page),
        )
        .await;
        let opened = common::wait_until!(
            {
                target_ids(&mut cdp)
                    .await
                    .into_iter()
                    .find(|t| !before.contains(t))
            },
            "window.open made no target"
        );
        let (_, text) = target_text(&mut cdp, &opened).await;
        assert_eq!(text.contains("OWN-FILE"), readable, "{url}: {text}");
        assert!(
            !text.contains("CANARY"),
            "{url} showed the data dir: {text}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_page_scanning_loopback_finds_only_what_the_operator_allows() {
    let site = local_site("a local app").await;
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let (a, mut cdp, page) = connected(&server).await;
    let (b, _cdp_b, _) = connected(&server).await;
    let devtools_port = |s: &Value| {
        let url = server
            .state
            .sessions
            .inspect(s["id"].as_str().unwrap().parse().unwrap())
            .unwrap()
            .cdp_url;
        let authority = browserd::inspect::devtools_authority(&url).unwrap();
        authority
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    let ports = [
        site,
        server.addr.port(),
        devtools_port(&a),
        devtools_port(&b),
        browserd::browser::egress::PROXY_PORT,
    ];
    visit(&mut cdp, &page, &format!("http://127.0.0.1:{site}/"))
        .await
        .unwrap();
    let scan = format!(
        "Promise.all({ports:?}.map(p => fetch('http://127.0.0.1:' + p + '/json/version', {{mode: 'no-cors'}}).then(() => 'open', () => 'closed')))"
    );
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": scan, "awaitPromise": true, "returnByValue": true}),
            Some(&page),
        )
        .await;
    let seen = r["result"]["result"]["value"].as_array().unwrap().clone();
    // The API port answers, but only as the door to the session's own connectUrl, which
    // refuses pages (pages_reach_local_services_only_when_allowed_and_never_browserd).
    assert_eq!(
        seen,
        vec!["open", "open", "closed", "closed", "closed"],
        "ports {ports:?}"
    );

    // A browser context with its own (direct) proxy would skip the egress: refused.
    let r = cdp
        .call(
            "Target.createBrowserContext",
            json!({"proxyServer": "direct://"}),
            None,
        )
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("proxyServer")),
        "{r}"
    );
    server.stop().await;
}

#[tokio::test]
async fn page_level_and_non_flattened_download_commands_still_save_in_the_session() {
    let server = TestServer::start().await;
    let (s, mut cdp, page) = connected(&server).await;
    let id = s["id"].as_str().unwrap();
    let downloads = server.state.sessions.downloads_dir(id.parse().unwrap());
    let evil = tempfile::tempdir().unwrap();
    let download = |name: &str| // A block: each evaluation declares its own `a`.
        json!({"expression": format!("{{ const a = document.createElement('a'); a.href = 'data:text/plain,x'; a.download = '{name}'; document.body.appendChild(a); a.click(); }}")});

    // Page. rather than Browser., on the flattened page session.
    let r = cdp
        .call(
            "Page.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": evil.path()}),
            Some(&page),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    cdp.call("Runtime.evaluate", download("page.txt"), Some(&page))
        .await;
    eventually(|| async { downloads.join("page.txt").is_file().then_some(()) })
        .await
        .expect("the Page. download landed in the session's folder");

    // A non-flattened session: the command travels wrapped, its method escaped.
    let targets = target_ids(&mut cdp).await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": targets[0], "flatten": false}),
            None,
        )
        .await;
    let wrapped_session = attached["result"]["sessionId"].as_str().unwrap();
    let inner = format!(
        r#"{{"id":1,"method":"Page.set\u0044ownloadBehavior","params":{{"behavior":"allow","downloadPath":{:?}}}}}"#,
        evil.path().display().to_string()
    );
    let r = cdp
        .call(
            "Target.sendMessageToTarget",
            json!({"sessionId": wrapped_session, "message": inner}),
            None,
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let click = json!({"id": 2, "method": "Runtime.evaluate", "params": download("wrapped.txt")});
    cdp.call(
        "Target.sendMessageToTarget",
        json!({"sessionId": wrapped_session, "message": click.to_string()}),
        None,
    )
    .await;
    eventually(|| async { downloads.join("wrapped.txt").is_file().then_some(()) })
        .await
        .expect("the wrapped download landed in the session's folder");
    assert!(
        std::fs::read_dir(evil.path()).unwrap().next().is_none(),
        "nothing outside the session"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_inspectors_devtools_link_passes_the_same_filter() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap();
    let debug = server.get_json(&format!("/v1/sessions/{id}/debug")).await;
    let mut devtools = Cdp::connect(debug["wsUrl"].as_str().unwrap()).await;
    let page = devtools.page_session().await;
    let node = file_input(&mut devtools, &page).await;
    let r = devtools
        .call(
            "DOM.setFileInputFiles",
            json!({"files": ["/etc/passwd"], "nodeId": node}),
            Some(&page),
        )
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a file uploaded to this session")),
        "{r}"
    );
    let r = devtools
        .raw(r#"{"id":77,"method":"Browser.\u0063lose"}"#, 77)
        .await;
    assert!(r.get("error").is_some(), "{r}");
    assert_eq!(server.get(id).await["status"], "RUNNING");
    server.stop().await;
}

async fn input_value(cdp: &mut Cdp, page: &str) -> String {
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": "document.getElementById('n').value", "returnByValue": true}),
            Some(page),
        )
        .await;
    r["result"]["result"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_read_only_live_view_link_sends_no_input() {
    let server = TestServer::start().await;
    let (s, mut cdp, page) = connected(&server).await;
    let id = s["id"].as_str().unwrap();
    cdp.call(
        "Runtime.evaluate",
        json!({"expression": "document.body.innerHTML = '<input id=n>'; document.getElementById('n').focus()"}),
        Some(&page),
    )
    .await;
    let screencast = |query: &'static str| {
        let server = &server;
        async move {
            let debug = server
                .get_json(&format!("/v1/sessions/{id}/debug{query}"))
                .await;
            let live = debug["debuggerFullscreenUrl"].as_str().unwrap();
            let url = live
                .replacen("http://", "ws://", 1)
                .replace("/live", "/screencast");
            tokio_tungstenite::connect_async(url).await.unwrap().0
        }
    };
    let typed = Message::text(r#"{"type":"text","text":"typed"}"#);

    // Read-only: the server says it dropped the input, and the page did not get it.
    let mut ro = screencast("?readOnly=true").await;
    ro.send(typed.clone()).await.unwrap();
    let said = tokio::time::timeout(patience(), async {
        while let Some(Ok(msg)) = ro.next().await {
            if let Message::Text(text) = msg
                && text.contains("\"ignored\"")
            {
                return text.to_string();
            }
        }
        panic!("the read-only view closed without a word");
    })
    .await
    .expect("the server answers input on a read-only view");
    assert!(said.contains("read-only"), "{said}");
    assert_eq!(input_value(&mut cdp, &page).await, "");

    // An interactive link's input arrives (so the check above can fail).
    let mut rw = screencast("").await;
    rw.send(typed).await.unwrap();
    common::wait_until!(
        { (input_value(&mut cdp, &page).await == "typed").then_some(()) },
        "interactive input never arrived"
    );
    server.stop().await;
}

/// A site on the host's loopback that records the `Host` of every request it gets and
/// redirects `/go?to=URL` there.
async fn recording_site() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hosts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&hosts);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let host = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Host: ")
                            .or_else(|| l.strip_prefix("host: "))
                    })
                    .unwrap_or_default()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(host);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let resp = match path.strip_prefix("/go?to=") {
                    Some(to) => format!(
                        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    ),
                    None => "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\nallowed".to_owned(),
                };
                let _ = tcp.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, hosts)
}

/// browserSettings.allowedDomains holds at the browser's egress: the listed domain and its
/// subdomains load; every other host fails in the client, however the page gets there
/// (navigation, a redirect from an allowed page, window.open, a target made over CDP, the
/// parent domain, an IP literal), never reaches the site, and the session log names it.
#[tokio::test]
async fn allowed_domains_hold_against_redirects_new_windows_cdp_targets_and_ip_literals() {
    let (port, hosts) = recording_site().await;
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let s = server
        .create(json!({"keepAlive": true, "browserSettings": {"allowedDomains": ["allowed.localhost"]}}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    let url = |host: &str, path: &str| format!("http://{host}:{port}{path}");

    for host in ["allowed.localhost", "deep.sub.allowed.localhost"] {
        assert_eq!(
            visit(&mut cdp, &page, &url(host, "/")).await,
            Ok("allowed".into()),
            "{host}"
        );
    }
    for host in ["127.0.0.1", "localhost", "notallowed.localhost"] {
        let seen = visit(&mut cdp, &page, &url(host, "/")).await;
        assert!(seen.is_err(), "{host} loaded: {seen:?}");
    }
    let redirect = url(
        "allowed.localhost",
        &format!("/go?to={}", url("redirected.localhost", "/")),
    );
    let seen = visit(&mut cdp, &page, &redirect).await;
    assert!(seen.is_err(), "the redirect loaded: {seen:?}");
    cdp.call(
        "Runtime.evaluate",
        json!({"expression": format!("window.open('{}'); true", url("popup.localhost", "/")), "userGesture": true}),
        Some(&page),
    )
    .await;
    cdp.call(
        "Target.createTarget",
        json!({"url": url("target.localhost", "/")}),
        None,
    )
    .await;

    let refused = [
        "127.0.0.1",
        "localhost",
        "notallowed.localhost",
        "redirected.localhost",
        "popup.localhost",
        "target.localhost",
    ];
    let logged = eventually(|| async {
        let logs = server.get_json(&format!("/v1/sessions/{id}/logs")).await;
        let named: Vec<String> = logs
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "browserd.egressRefused")
            .map(|e| {
                e["request"]["params"]["host"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        refused
            .iter()
            .all(|h| named.iter().any(|n| n == h))
            .then_some(named)
    })
    .await;
    let logs = server.get_json(&format!("/v1/sessions/{id}/logs")).await;
    let notes: Vec<_> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["method"]
                .as_str()
                .unwrap_or_default()
                .starts_with("browserd.")
        })
        .map(|e| e["request"]["params"].clone())
        .collect();
    assert!(
        logged.is_some(),
        "the session log does not name every refused host: {notes:?}"
    );
    let reached = hosts.lock().unwrap().clone();
    assert!(
        reached.iter().any(|h| h == "deep.sub.allowed.localhost"),
        "{reached:?}"
    );
    for host in refused {
        assert!(
            !reached.iter().any(|h| h == host),
            "{host} reached the site: {reached:?}"
        );
    }
    server.stop().await;
}

/// Runs `script` with sh as a sandboxed browser's own uid, inside its sandbox's mount
/// namespace: what code that took over the browser process can do to its own folder.
fn as_the_browser(browser_dir: &std::path::Path, script: &str) {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata(browser_dir).unwrap().uid();
    assert_ne!(uid, 0, "the browser runs as its own uid (sandboxed)");
    // Any process of that uid is inside the sandbox: Chromium's own.
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .expect("a process of the browser's uid");
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
        ])
        .args(["--clear-groups", "--inh-caps=-all", "--"])
        .args(["sh", "-ec", script])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as the browser: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file of `dir` (recursively), with its contents.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(e.path());
            } else {
                let name = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((name, std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out
}

/// Code running as a session's browser uid (a browser-process exploit) replaces its
/// `downloads/` and `uploads/` with links to a root-only folder and puts links and a FIFO in
/// its profile, then later its whole `profile/` with a link. browserd works there as root,
/// yet: the downloads zip, an upload, the end-of-session keep and the context save neither
/// read, write, move nor block on anything outside; the canary outside is unchanged, the
/// context holds none of it, and the server still stops.
#[tokio::test]
async fn a_compromised_browser_cannot_make_browserd_follow_its_links() {
    let server = TestServer::start().await;
    let canary = tempfile::tempdir().unwrap();
    std::fs::set_permissions(canary.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = format!("canary-{}", uuid::Uuid::new_v4());
    std::fs::write(canary.path().join("secret.txt"), &secret).unwrap();
    let before = tree(canary.path());
    let context = server
        .req(reqwest::Method::POST, "/v1/contexts")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_context = json!({"keepAlive": true, "browserSettings": {"context": {"id": context, "persist": true}}});

    // 1. Links in place of downloads/ and uploads/, links and a FIFO in the profile.
    let s = server.create(with_context.clone()).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let dir = server.browser_dir(&id);
    let (c, data) = (canary.path().display(), server.data_dir.path().display());
    as_the_browser(
        &dir,
        &format!(
            "cd {dir}
             rm -rf downloads uploads
             ln -s {c} downloads
             ln -s {c} uploads
             mkdir -p profile/Default
             mkfifo profile/Default/evil-fifo
             ln -s {c}/secret.txt profile/Default/evil-link
             ln -s {data} profile/Default/evil-dir",
            dir = dir.display()
        ),
    );
    let zip = server
        .req(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/downloads"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    let zip = zip.bytes().await.unwrap();
    assert_eq!(
        zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec()))
            .unwrap()
            .len(),
        0,
        "the downloads zip serves nothing through the link"
    );
    let upload = server
        .req(reqwest::Method::POST, &format!("/v1/sessions/{id}/uploads"))
        .multipart(file_form("secret.txt", b"tenant bytes".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200, "{:?}", upload.text().await);
    assert!(
        std::fs::symlink_metadata(dir.join("uploads"))
            .unwrap()
            .is_dir(),
        "the upload made a real folder in place of the link"
    );
    assert_eq!(tree(canary.path()), before, "the canary is unchanged");
    // The release saves the context and keeps the downloads: neither follows a link nor
    // waits on the FIFO.
    let released = tokio::time::timeout(patience(), server.release(&id)).await;
    assert!(released.is_ok(), "the release (and context save) finished");
    server.wait_for_status(&id, "COMPLETED").await;
    assert_eq!(
        tree(canary.path()),
        before,
        "nothing was moved out of the canary"
    );
    let kept = server
        .state
        .sessions
        .files()
        .downloads_dir(id.parse().unwrap());
    assert!(
        !kept.join("secret.txt").exists(),
        "the canary was kept as a download"
    );
    let saved = eventually(|| async {
        server
            .state
            .sessions
            .files()
            .vault()
            .load(&context)
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("the context was saved");
    let profile = tempfile::tempdir().unwrap();
    browserd::files::contexts::unpack_profile(&saved.archive, profile.path()).unwrap();
    let saved_files = tree(profile.path());
    assert!(!saved_files.is_empty(), "the profile itself was saved");
    for (name, bytes) in &saved_files {
        assert!(!name.contains("evil"), "{name} saved");
        assert!(
            memchr::memmem::find(bytes, secret.as_bytes()).is_none(),
            "{name} holds the canary"
        );
    }

    // 2. The whole profile/ replaced with a link: the save fails, the context keeps what
    // it had, and nothing behind the link is read.
    let s = server.create(with_context.clone()).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let dir = server.browser_dir(&id);
    as_the_browser(
        &dir,
        &format!(
            "cd {dir} && mv profile profile.real && ln -s {c} profile",
            dir = dir.display()
        ),
    );
    let released = tokio::time::timeout(patience(), server.release(&id)).await;
    assert!(released.is_ok(), "the release finished");
    server.wait_for_status(&id, "COMPLETED").await;
    let again = server
        .state
        .sessions
        .files()
        .vault()
        .load(&context)
        .await
        .unwrap()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    browserd::files::contexts::unpack_profile(&again.archive, profile.path()).unwrap();
    for (name, bytes) in tree(profile.path()) {
        assert!(
            memchr::memmem::find(&bytes, secret.as_bytes()).is_none() && name != "secret.txt",
            "{name} holds the canary"
        );
    }
    assert_eq!(tree(canary.path()), before);

    // A later session of the context starts, and the server stops (no save left hanging).
    let s = server.create(with_context).await;
    assert_eq!(s["status"], "RUNNING");
    tokio::time::timeout(patience() * 2, server.stop())
        .await
        .expect("the server stops");
}

/// One live-view link opened again and again (a page that embeds it in a loop, or a flood):
/// each link holds at most 10 sockets and a session at most 20, the rest are refused with
/// 429 before any upgrade; another project's session works meanwhile, and a closed viewer's
/// place is free again.
#[tokio::test]
async fn one_live_view_link_cannot_hold_the_servers_sockets() {
    let server = TestServer::start().await;
    let (s, _cdp, _page) = connected(&server).await;
    let id = s["id"].as_str().unwrap();
    let debug = |query: &'static str| {
        let server = &server;
        async move {
            server
                .get_json(&format!("/v1/sessions/{id}/debug{query}"))
                .await
        }
    };
    let screencast = |debug: Value| {
        debug["debuggerFullscreenUrl"]
            .as_str()
            .unwrap()
            .replacen("http://", "ws://", 1)
            .replace("/live", "/screencast")
    };
    // A session's links are its read-only and interactive live views and DevTools.
    let first = screencast(debug("?readOnly=true").await);
    let mut open = Vec::new();
    for _ in 0..browserd::api::inspector::MAX_VIEWERS_PER_LINK {
        open.push(tokio_tungstenite::connect_async(&first).await.unwrap().0);
    }
    let (status, body) = refused_handshake(&first).await;
    assert_error(status, &body, 429, "this inspector link already has 10");
    // The same grant spelled otherwise (its session id in upper case) is the same link.
    let (head, tail) = first.split_once("/debug/").unwrap();
    let (uuid, rest) = tail.split_once('.').unwrap();
    let respelled = format!("{head}/debug/{}.{rest}", uuid.to_uppercase());
    let (status, body) = refused_handshake(&respelled).await;
    assert!(
        status == 429 || status == 401,
        "a respelled link got {status}: {body}"
    );
    let second = screencast(debug("").await);
    assert_ne!(first, second);
    for _ in 0..browserd::api::inspector::MAX_VIEWERS_PER_LINK {
        open.push(tokio_tungstenite::connect_async(&second).await.unwrap().0);
    }
    let devtools = debug("").await["wsUrl"].as_str().unwrap().to_owned();
    let (status, body) = refused_handshake(&devtools).await;
    assert_error(
        status,
        &body,
        429,
        "already has 20 live-view and DevTools connections",
    );
    // A flood of refused attempts holds nothing either.
    for _ in 0..200 {
        assert_eq!(refused_handshake(&first).await.0, 429);
    }

    // Another project's session works meanwhile.
    let other_key = "bd_other_project_key";
    server.add_project("other", 2, other_key).await;
    let created = server
        .req(reqwest::Method::POST, "/v1/sessions")
        .header("x-bb-api-key", other_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let other: Value = created.json().await.unwrap();
    let mut cdp = Cdp::connect(other["connectUrl"].as_str().unwrap()).await;
    assert_eq!(cdp.eval_in_page("6 * 7").await, 42);

    // A viewer that leaves frees its place.
    let mut leaving = open.pop().unwrap();
    leaving.close(None).await.unwrap();
    let again = eventually(|| async {
        tokio_tungstenite::connect_async(&second)
            .await
            .ok()
            .map(|(ws, _)| ws)
    })
    .await;
    assert!(again.is_some(), "the freed place is taken again");
    server.stop().await;
}

/// A websocket keeps its connection's place in the per-address and server-wide counts for
/// its whole life (it used to be freed at the upgrade, so websockets were never bounded).
#[tokio::test]
async fn websockets_count_as_connections_until_they_close() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let open_now = || server.state.sessions.metrics().http_connections.get();
    // reqwest's idle keep-alive connections count too: measure against what is open now.
    let before = open_now();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Cdp::connect(s["connectUrl"].as_str().unwrap()).await);
    }
    let counted = eventually(|| async { (open_now() == before + 5).then_some(()) }).await;
    assert!(counted.is_some(), "{} open, {before} before", open_now());
    for mut c in clients {
        c.ws.close(None).await.unwrap();
    }
    let freed = eventually(|| async { (open_now() == before).then_some(()) }).await;
    assert!(
        freed.is_some(),
        "{} open after closing, {before} before",
        open_now()
    );
    server.stop().await;
}

/// An unauthenticated client that announces a body and never sends it is answered at once
/// (the credentials are checked before any body is read), on /webdriver as on the API.
#[tokio::test]
async fn credentials_are_checked_before_a_body_is_waited_for() {
    let server = TestServer::start().await;
    for path in ["/webdriver/session", "/v1/sessions"] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer while the body was held back"))
            .unwrap();
        let head = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
    }
    server.stop().await;
}

/// A session's tabs are bounded (--max-tabs-per-session): a client's Target.createTarget
/// past the bound is a CDP error, and tabs a page opens past it are closed, each named in
/// the session's log.
#[tokio::test]
async fn a_session_cannot_open_tabs_without_bound() {
    let server = TestServer::start_with(Options {
        max_tabs_per_session: 3,
        ..Options::default()
    })
    .await;
    let (s, mut cdp, page) = connected(&server).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let pages = |targets: &Value| {
        targets["result"]["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["type"] == "page")
            .count()
    };
    for _ in 0..2 {
        let made = cdp
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await;
        assert!(made["result"]["targetId"].is_string(), "{made}");
    }
    // Once the watcher has counted three, the next create is refused.
    let refused = eventually(|| async {
        let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
        let made = cdp
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await;
        made["error"]["message"].as_str().map(str::to_owned)
    })
    .await
    .expect("a create past the bound is refused");
    assert!(refused.contains("3 tabs open"), "{refused}");

    // A page's own window.open, again and again (each with a click's activation, which one
    // popup consumes): the tabs past the bound are closed again.
    for i in 0..5 {
        cdp.call(
            "Runtime.evaluate",
            json!({"expression": format!("window.open('about:blank#{i}')"), "userGesture": true}),
            Some(&page),
        )
        .await;
    }
    let logged = eventually(|| async {
        let logs = server.get_json(&format!("/v1/sessions/{id}/logs")).await;
        let refusals = logs
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "browserd.targetRefused")
            .count();
        (refusals >= 5).then_some(refusals)
    })
    .await;
    assert!(logged.is_some(), "the closed tabs are in the session's log");
    let mut targets: Value;
    common::wait_until!(
        {
            targets = cdp.call("Target.getTargets", json!({}), None).await;
            (pages(&targets) == 3).then_some(())
        },
        "the session is not back at three tabs: {targets}"
    );
    server.stop().await;
}

/// More of what a client might send past the filter (issue 23's list), each refused or
/// harmless, and the test says which: `Network.loadNetworkResource` of a host file (the
/// sandbox shows none) and of the metadata address (the egress refuses it); `IO.read` of a
/// handle the client never got (an error); a ruled command split over continuation frames
/// (reassembled, then refused like a whole one); a binary frame (the client is closed).
#[tokio::test]
async fn resource_loads_foreign_handles_fragments_and_binary_frames_get_nothing() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let server = TestServer::start().await;
    let (s, mut cdp, page) = connected(&server).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let tree = cdp.call("Page.getFrameTree", json!({}), Some(&page)).await;
    let frame = tree["result"]["frameTree"]["frame"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let load = |url: &'static str| json!({"frameId": frame, "url": url, "options": {"disableCache": true, "includeCredentials": false}});
    // Harmless: the sandbox shows no host file, so nothing of the host's comes back.
    let host_file = cdp
        .call(
            "Network.loadNetworkResource",
            load("file:///etc/shadow"),
            Some(&page),
        )
        .await;
    assert!(
        !host_file.to_string().contains("root:"),
        "a host file came back: {host_file}"
    );
    // Refused at the egress (and logged), whatever CDP method made the request.
    let metadata = cdp
        .call(
            "Network.loadNetworkResource",
            load("http://169.254.169.254/latest/meta-data/"),
            Some(&page),
        )
        .await;
    assert_ne!(
        metadata["result"]["resource"]["success"], true,
        "the metadata address was reached: {metadata}"
    );
    let logged = eventually(|| async {
        let logs = server.get_json(&format!("/v1/sessions/{id}/logs")).await;
        logs.as_array()?
            .iter()
            .find(|e| {
                e["method"] == "browserd.egressRefused"
                    && e["request"]["params"]["rule"] == "link_local"
            })
            .cloned()
    })
    .await;
    assert!(logged.is_some(), "the refusal is in the session's log");
    // An error: a stream handle this client never got.
    let read = cdp.call("IO.read", json!({"handle": "1"}), None).await;
    assert!(read["error"].is_object(), "{read}");
    // Harmless: Tracing names no file; the trace comes back as a stream of this client's own
    // (and anything the browser process might write stays in its sandbox).
    let started = cdp
        .call(
            "Tracing.start",
            json!({"transferMode": "ReturnAsStream"}),
            None,
        )
        .await;
    assert!(started["error"].is_null(), "{started}");
    cdp.call("Tracing.end", json!({}), None).await;
    let done = cdp.event("Tracing.tracingComplete", |_| true).await;
    let stream = done["params"]["stream"].as_str().expect("a stream handle");
    let read = cdp.call("IO.read", json!({"handle": stream}), None).await;
    assert!(read["result"]["data"].is_string(), "{read:.300}");

    // A ruled command in two fragments is reassembled, then refused like a whole one.
    let text = r#"{"id":777,"method":"Target.exposeDevToolsProtocol","params":{"targetId":"x"}}"#;
    let (head, tail) = text.split_at(20);
    for (part, opcode, last) in [(head, Data::Text, false), (tail, Data::Continue, true)] {
        let frame = Frame::message(part.as_bytes().to_vec(), OpCode::Data(opcode), last);
        cdp.ws.send(Message::Frame(frame)).await.unwrap();
    }
    let answer = cdp.answer(777).await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not available through browserd"),
        "{answer}"
    );

    // A binary frame (CBOR to Chromium, which the filter does not read) closes the client.
    cdp.ws
        .send(Message::binary(vec![0xd8, 0x5a, 0x00]))
        .await
        .unwrap();
    let closed = cdp.closed().await.expect("a close frame");
    assert_eq!(u16::from(closed.code), 1003, "{closed:?}");
    assert_eq!(
        server.get(&id).await["status"],
        "RUNNING",
        "the session goes on"
    );
    server.stop().await;
}

/// The DevTools front end is served under browserd's rules, not the browser's: an opaque
/// origin of its own (CSP sandbox), browserd's content type with nosniff, no framing, no
/// referrer, and only its own link's websocket (a crafted `ws=` pointing elsewhere is a 400).
#[tokio::test]
async fn the_devtools_front_end_connects_only_to_its_own_link() {
    let server = TestServer::start().await;
    let (s, _cdp, _page) = connected(&server).await;
    let id = s["id"].as_str().unwrap();
    let debug = server.get_json(&format!("/v1/sessions/{id}/debug")).await;
    let url = debug["debuggerUrl"].as_str().unwrap().to_owned();
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200, "{url}");
    let h = page.headers();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let policy = h["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.starts_with("sandbox allow-scripts"), "{policy}");
    assert!(!policy.contains("allow-same-origin"), "{policy}");

    assert_eq!(h["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Object.defineProperty(window, name"),
        "the storage stand-in comes first"
    );
    let (before, target) = url.split_once("?ws=").unwrap();
    let (_, tab) = target.rsplit_once("/devtools/page/").unwrap();
    let host = server.addr.to_string();
    let token = before
        .split("/debug/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    // Another link's token, a stranger's host, a path of browserd's that is not DevTools.
    let other = server
        .get_json(&format!("/v1/sessions/{id}/debug?readOnly=true"))
        .await["debuggerFullscreenUrl"]
        .as_str()
        .unwrap()
        .split("/debug/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for target in [
        format!("evil.example/debug/{token}/devtools/page/{tab}"),
        format!("{host}/debug/{other}/devtools/page/{tab}"),
        format!("{host}/v1/sessions"),
    ] {
        let crafted = format!("{before}?ws={target}");
        let resp = reqwest::get(&crafted).await.unwrap();
        assert_eq!(resp.status(), 400, "{crafted}");
    }
    server.stop().await;
}

/// WebDriver's Element Send Keys to a file input sets files through chromedriver's own
/// DevTools connection, past the CDP filter: browserd applies the same rule there. A host
/// or sandbox path is an invalid argument; a file uploaded to the session is set (under the
/// browser's view of it); keys to a text input pass untouched. A `webSocketUrl` (BiDi, which
/// would talk to chromedriver directly) is never handed out.
#[tokio::test]
async fn webdriver_file_inputs_take_only_the_sessions_uploads() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let base = s["seleniumRemoteUrl"].as_str().unwrap().to_owned();
    let key = s["signingKey"].as_str().unwrap().to_owned();
    let wd = |method: reqwest::Method, path: String, body: Value| {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let resp = reqwest::Client::new()
                .request(method, format!("{base}{path}"))
                .header("x-bb-signing-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, made) = wd(
        reqwest::Method::POST,
        "/session".into(),
        json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "webSocketUrl": true}}}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert!(
        made["value"]["capabilities"].get("webSocketUrl").is_none(),
        "no BiDi address handed out: {made}"
    );
    let wdid = made["value"]["sessionId"].as_str().unwrap().to_owned();
    let page = "data:text/html,<input type=file id=f multiple><input id=t>";
    let (status, _) = wd(
        reqwest::Method::POST,
        format!("/session/{wdid}/url"),
        json!({"url": page}),
    )
    .await;
    assert_eq!(status, 200);
    let element = |css: &'static str| {
        let wd = &wd;
        let wdid = wdid.clone();
        async move {
            let (_, found) = wd(
                reqwest::Method::POST,
                format!("/session/{wdid}/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
            found["value"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let file_input = element("#f").await;
    let keys = |element: String, text: String| {
        let wd = &wd;
        let wdid = wdid.clone();
        async move {
            wd(
                reqwest::Method::POST,
                format!("/session/{wdid}/element/{element}/value"),
                json!({"text": text}),
            )
            .await
        }
    };
    let browser_dir = server.browser_dir(&id).display().to_string();
    for path in [
        "/etc/passwd".to_owned(),
        format!("{browser_dir}/profile/Default/Cookies"),
        format!("{browser_dir}/uploads/../profile/Local State"),
    ] {
        let (status, refused) = keys(file_input.clone(), path.clone()).await;
        assert_eq!(status, 400, "{path}: {refused}");
        assert_eq!(refused["value"]["error"], "invalid argument", "{refused}");
    }
    let uploaded = server
        .req(reqwest::Method::POST, &format!("/v1/sessions/{id}/uploads"))
        .multipart(file_form("report.txt", b"quarterly".to_vec()))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let path = uploaded["path"].as_str().unwrap().to_owned();
    let (status, set) = keys(file_input.clone(), path).await;
    assert_eq!(status, 200, "{set}");
    let text_input = element("#t").await;
    let (status, typed) = keys(text_input, "/etc/passwd".into()).await;
    assert_eq!(status, 200, "a text input takes any text: {typed}");
    let (_, said) = wd(
        reqwest::Method::POST,
        format!("/session/{wdid}/execute/sync"),
        json!({"script": "return [document.getElementById('f').files[0].name, document.getElementById('t').value]", "args": []}),
    )
    .await;
    assert_eq!(
        said["value"],
        json!(["report.txt", "/etc/passwd"]),
        "{said}"
    );
    server.stop().await;
}

/// An extension with a service worker and a page (whose scripts have the extension's
/// origin, like Stagehand 4's service worker).
fn door_extension_zip() -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (name, body) in [
        (
            "manifest.json",
            r#"{"manifest_version":3,"name":"door","version":"1","background":{"service_worker":"sw.js"}}"#,
        ),
        ("sw.js", "self.addEventListener('install', () => {});"),
        ("page.html", "<title>door</title>"),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// What became of a websocket opened to `url` by the page on `session`: `open` (after one
/// CDP round trip through it: `Browser.getVersion`'s product) or `refused`.
async fn page_websocket(cdp: &mut Cdp, session: &str, url: &str) -> String {
    let expression = format!(
        r#"new Promise((done) => {{
            const ws = new WebSocket({url:?});
            ws.onopen = () => ws.send(JSON.stringify({{id: 1, method: 'Browser.getVersion'}}));
            ws.onmessage = (m) => {{ done('open ' + JSON.parse(m.data).result.product); ws.close(); }};
            ws.onerror = () => done('refused');
        }})"#
    );
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            Some(session),
        )
        .await;
    r["result"]["result"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {r}"))
        .to_owned()
}

#[tokio::test]
async fn a_browser_reaches_only_its_own_connect_url_and_only_from_an_extension() {
    let server = TestServer::start().await;
    let form = file_form("door.zip", door_extension_zip());
    let ext: Value = server
        .req(reqwest::Method::POST, "/v1/extensions")
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Without keepAlive: the browser's own connection must not keep it going.
    let s = server
        .create(json!({"extensionId": ext["id"], "keepAlive": false}))
        .await;
    let other = server.create(json!({"keepAlive": true})).await;
    let own_url = s["connectUrl"].as_str().unwrap();
    let other_url = other["connectUrl"].as_str().unwrap();
    let mut cdp = Cdp::connect(own_url).await;

    // The extension's id, from its service worker's URL.
    let worker_url = eventually(|| async {
        let targets = Cdp::connect(own_url)
            .await
            .call("Target.getTargets", json!({}), None)
            .await;
        targets["result"]["targetInfos"]
            .as_array()?
            .iter()
            .find(|t| t["type"] == "service_worker")
            .and_then(|t| t["url"].as_str().map(str::to_owned))
    })
    .await
    .expect("the extension's service worker started");
    let origin = worker_url.trim_end_matches("sw.js");
    let created = cdp
        .call(
            "Target.createTarget",
            json!({"url": format!("{origin}page.html")}),
            None,
        )
        .await;
    let target = created["result"]["targetId"].clone();
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            None,
        )
        .await;
    let extension_page = attached["result"]["sessionId"].as_str().unwrap().to_owned();
    // Its document loaded (an evaluation during the load loses its context).
    let mut loaded = false;
    for _ in 0..500 {
        let r = cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": "location.protocol + document.readyState", "returnByValue": true}),
                Some(&extension_page),
            )
            .await;
        if r["result"]["result"]["value"] == "chrome-extension:complete" {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(loaded, "the extension's page never loaded");

    // From the extension: its own session's connectUrl opens and reaches its browser.
    let seen = page_websocket(&mut cdp, &extension_page, own_url).await;
    assert!(
        seen.starts_with("open HeadlessChrome") || seen.starts_with("open Chrome"),
        "{seen}"
    );
    // Another session's, the same key on another path, a forged key: refused.
    let forged = format!("{own_url}x");
    let on_another_path = own_url.replacen("/?", "/v1/sessions?", 1);
    for url in [other_url, forged.as_str(), on_another_path.as_str()] {
        assert_eq!(
            page_websocket(&mut cdp, &extension_page, url).await,
            "refused",
            "{url}"
        );
    }
    // A page (an http origin, or about:blank's null one) is refused its own connectUrl.
    let created = cdp
        .call("Target.createTarget", json!({"url": "about:blank"}), None)
        .await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": created["result"]["targetId"], "flatten": true}),
            None,
        )
        .await;
    let page = attached["result"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(page_websocket(&mut cdp, &page, own_url).await, "refused");

    // The extension holds a connection of its own (one that stays open) while the only
    // outside client leaves: the session ends all the same, without keepAlive.
    let hold = format!(
        r#"new Promise((done) => {{ window.held = new WebSocket({own_url:?}); window.held.onopen = () => done('open'); window.held.onerror = () => done('refused'); }})"#
    );
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": hold, "awaitPromise": true, "returnByValue": true}),
            Some(&extension_page),
        )
        .await;
    assert_eq!(r["result"]["result"]["value"], "open", "{r}");
    drop(cdp);
    let ended = server
        .wait_for_status(s["id"].as_str().unwrap(), "COMPLETED")
        .await;
    assert!(
        ended["endReason"]
            .as_str()
            .is_some_and(|r| r.contains("last client disconnected")),
        "{ended}"
    );
    assert_eq!(
        server.get(other["id"].as_str().unwrap()).await["status"],
        "RUNNING"
    );
    server.release(other["id"].as_str().unwrap()).await;
}

/// Clients sending large messages at once hold at most `--relay-memory-mib` between them: a
/// message that does not fit waits (its client sees backpressure) until another message has
/// been relayed and its share given back, then goes through whole.
#[tokio::test]
async fn large_messages_from_many_clients_share_one_memory_bound() {
    let server = TestServer::start_with(Options {
        relay_memory_mib: Some(24),
        max_message_mib: 12,
        ..Default::default()
    })
    .await;
    let metrics = server.state.sessions.metrics();
    let (s, mut a, page_a) = connected(&server).await;
    let mut b = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page_b = b.page_session().await;
    // A 10 MiB message needs 20 MiB of the 24 (the buffer it arrives in, the one it leaves by).
    let big = |id: u64, page: &str| {
        json!({"id": id, "sessionId": page, "method": "Runtime.evaluate",
               "params": {"expression": format!("'{}'.length", "x".repeat(10 << 20))}})
        .to_string()
    };
    // Relayed whole; once a reads on, its share is given back.
    let first = a.raw(&big(900, &page_a), 900).await;
    assert_eq!(first["result"]["result"]["value"], 10 << 20, "{first:.200}");
    let given_back = eventually(|| async { (metrics.relay_memory_held.get() == 0).then_some(()) });
    assert!(
        given_back.await.is_some(),
        "a relayed message holds nothing"
    );

    // c, a raw client, sends the first half of its 10 MiB message and pauses: the message
    // holds its share (20 MiB of the 24) while it comes.
    let mut c = raw_upgrade(server.addr, s["connectUrl"].as_str().unwrap()).await;
    let message = big(902, &page_a).into_bytes();
    // A masked text frame with a zero key: the payload goes as it is.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(message.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    let half = message.len() / 2;
    frame.extend_from_slice(&message[..half]);
    c.write_all(&frame).await.unwrap();
    let holds = eventually(|| async {
        let held = metrics.relay_memory_held.get();
        (held >= 20 << 20).then_some(held)
    });
    let held = holds.await.expect("c's message holds its share");
    assert!(held <= 24 << 20, "{held}");

    // b's message does not fit beside c's: it waits, unanswered, holding nothing more.
    let page = page_b.clone();
    let waiting = tokio::spawn(async move {
        let answer = b.raw(&big(901, &page), 901).await;
        (b, answer)
    });
    let waits = eventually(|| async { (metrics.relay_memory_waiting.get() == 1).then_some(()) });
    assert!(waits.await.is_some(), "b's message waits for relay memory");
    assert!(!waiting.is_finished(), "no answer while it waits");
    assert_eq!(
        metrics.relay_memory_held.get(),
        held,
        "nothing more is taken"
    );

    // c sends the rest: its message is relayed, its share goes to b's, which passes whole.
    c.write_all(&message[half..]).await.unwrap();
    let (mut b, answer) = tokio::time::timeout(patience(), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer["result"]["result"]["value"],
        10 << 20,
        "{answer:.200}"
    );
    assert_eq!(metrics.relay_memory_waiting.get(), 0);
    b.call(
        "Runtime.evaluate",
        json!({"expression": "1+1"}),
        Some(&page_b),
    )
    .await;
    let given_back = eventually(|| async { (metrics.relay_memory_held.get() == 0).then_some(()) });
    assert!(given_back.await.is_some(), "relayed messages hold nothing");
    drop((a, c));
    assert_eq!(
        server.get(s["id"].as_str().unwrap()).await["status"],
        "RUNNING"
    );
    server.stop().await;
}

/// The live view is meant to be framed (Browserbase's `debuggerFullscreenUrl`): by any page
/// unless the operator names which (`--live-view-frame-ancestors`), and then only by those.
#[tokio::test]
async fn the_live_view_may_be_framed_only_where_the_operator_says() {
    for (sources, expected) in [
        (None, None),
        (
            Some("https://app.example.com 'self'"),
            Some("frame-ancestors https://app.example.com 'self'"),
        ),
    ] {
        let server = TestServer::start_with(Options {
            live_view_frame_ancestors: sources.map(str::to_owned),
            ..Default::default()
        })
        .await;
        let (s, _cdp, _page) = connected(&server).await;
        let id = s["id"].as_str().unwrap();
        let debug = server.get_json(&format!("/v1/sessions/{id}/debug")).await;
        let live = debug["debuggerFullscreenUrl"].as_str().unwrap();
        let page = reqwest::get(live).await.unwrap();
        assert_eq!(page.status(), 200, "{live}");
        let policy = page
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(policy.as_deref(), expected, "{sources:?}");
        server.stop().await;
    }
}
