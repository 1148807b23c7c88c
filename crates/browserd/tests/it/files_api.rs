//! Contexts, extensions, uploads, downloads and inspector links at the HTTP level: shapes, isolation between
//! projects, and every refusal. (The SDK suites prove the features work in a browser.)

use crate::common;

use common::*;
use reqwest::Method;
use reqwest::multipart::Form;
use serde_json::{Value, json};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = if status == 204 {
        Value::Null
    } else {
        resp.json().await.unwrap()
    };
    (status, body, headers)
}

#[tokio::test]
async fn contexts_have_the_browserbase_shapes() {
    let server = TestServer::start().await;
    let (status, created, _) = send(
        server
            .req(Method::POST, "/v1/contexts")
            .json(&json!({"name": " Shop "})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(
        created["uploadUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/contexts/{id}/upload"))
    );
    assert_eq!(created["publicKey"], "");
    assert_eq!(created["cipherAlgorithm"], "AES-256-GCM");
    assert_eq!(created["initializationVectorSize"], 12);

    let (status, got, _) = send(server.req(Method::GET, &format!("/v1/contexts/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Shop", "trimmed");
    for field in ["id", "createdAt", "updatedAt", "projectId"] {
        assert!(got[field].is_string(), "{field} in {got}");
    }

    // The SDKs' PUT has an empty body; it answers the create shape.
    let (status, put, _) = send(
        server
            .req(Method::PUT, &format!("/v1/contexts/{id}"))
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(put["id"], id);

    let (status, body, headers) = send(
        server
            .req(Method::POST, "/v1/contexts")
            .json(&json!({"name": "shop"})),
    )
    .await;
    assert_error(status, &body, 409, "already has a context named");
    assert_eq!(headers["x-should-retry"], "false");

    let (status, body, _) =
        send(server.req(Method::GET, &format!("/v1/contexts/{id}/upload"))).await;
    assert_error(status, &body, 410, "persist");

    let (status, _, _) = send(server.req(Method::DELETE, &format!("/v1/contexts/{id}"))).await;
    assert_eq!(status, 204);
    let (status, body, _) = send(server.req(Method::GET, &format!("/v1/contexts/{id}"))).await;
    assert_error(status, &body, 404, "not found");
    // The name is free again.
    let (status, _, _) = send(
        server
            .req(Method::POST, "/v1/contexts")
            .json(&json!({"name": "shop"})),
    )
    .await;
    assert_eq!(status, 201);
    server.stop().await;
}

#[tokio::test]
async fn another_projects_contexts_extensions_and_certificates_are_not_found() {
    let server = TestServer::start().await;
    let (_, ctx, _) = send(server.req(Method::POST, "/v1/contexts").json(&json!({}))).await;
    let ctx = ctx["id"].as_str().unwrap().to_owned();
    let (status, ext, _) = send(
        server
            .req(Method::POST, "/v1/extensions")
            .multipart(file_form("e.zip", common::extension_zip())),
    )
    .await;
    assert_eq!(status, 200, "{ext}");
    let ext = ext["id"].as_str().unwrap().to_owned();
    let der = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs/ca.der"),
    )
    .unwrap();
    let (status, cert, _) = send(
        server
            .req(Method::POST, "/v1/certificates")
            .multipart(file_form("ca.der", der)),
    )
    .await;
    assert_eq!(status, 200, "{cert}");
    let cert = cert["id"].as_str().unwrap().to_owned();

    server.add_project("other", 2, "other-key").await;
    let other = |method: Method, path: &str| {
        server
            .http
            .request(method, server.url(path))
            .header("X-BB-API-Key", "other-key")
    };
    for (method, path) in [
        (Method::GET, format!("/v1/contexts/{ctx}")),
        (Method::DELETE, format!("/v1/contexts/{ctx}")),
        (Method::GET, format!("/v1/extensions/{ext}")),
        (Method::DELETE, format!("/v1/extensions/{ext}")),
        (Method::GET, format!("/v1/certificates/{cert}")),
        (Method::DELETE, format!("/v1/certificates/{cert}")),
    ] {
        let (status, body, _) = send(other(method, &path)).await;
        assert_error(status, &body, 404, "not found");
    }
    let (status, body, _) = send(
        other(Method::POST, "/v1/sessions")
            .json(&json!({"browserSettings": {"context": {"id": ctx, "persist": true}}})),
    )
    .await;
    assert_error(status, &body, 404, "context");
    let (status, body, _) =
        send(other(Method::POST, "/v1/sessions").json(&json!({"extensionId": ext}))).await;
    assert_error(status, &body, 404, "extension");
    let (status, body, _) = send(
        other(Method::POST, "/v1/sessions")
            .json(&json!({"proxySettings": {"caCertificates": [cert]}})),
    )
    .await;
    assert_error(status, &body, 404, "certificate");
    let (status, listed, _) = send(other(Method::GET, "/v1/certificates")).await;
    assert_eq!(
        (status, listed),
        (200, json!([])),
        "another project lists none"
    );
    let (status, mine, _) =
        send(server.req(Method::GET, &format!("/v1/certificates/{cert}"))).await;
    assert_eq!(status, 200, "still there for its own project: {mine}");
    assert_eq!(server.state.sessions.live_count(), 0, "nothing started");
    server.stop().await;
}

#[tokio::test]
async fn a_context_that_does_not_open_fails_the_create_and_starts_no_browser() {
    let server = TestServer::start().await;
    let (_, ctx, _) = send(server.req(Method::POST, "/v1/contexts").json(&json!({}))).await;
    let ctx = ctx["id"].as_str().unwrap().to_owned();
    let with_ctx = json!({"browserSettings": {"context": {"id": ctx, "persist": true}}});

    // A first session fills the context.
    let s = server.create(with_ctx.clone()).await;
    server.release(s["id"].as_str().unwrap()).await;
    let file = server.data_dir.path().join(format!("contexts/{ctx}.ctx"));
    assert!(file.is_file(), "the release saved the context");

    // Damage one byte: it no longer authenticates.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let listed_before = server
        .req(Method::GET, "/v1/sessions")
        .send()
        .await
        .unwrap();
    let listed_before: Vec<Value> = listed_before.json().await.unwrap();
    let (status, body, headers) =
        send(server.req(Method::POST, "/v1/sessions").json(&with_ctx)).await;
    assert_error(status, &body, 500, "could not be restored");
    assert!(
        body["message"].as_str().unwrap().contains("context key"),
        "{body}"
    );
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(server.state.sessions.live_count(), 0, "no browser started");
    let listed_after: Vec<Value> = server
        .req(Method::GET, "/v1/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed_after.len(),
        listed_before.len(),
        "no session recorded"
    );
    let browsers = std::fs::read_dir(server.data_dir.path().join("sessions"))
        .unwrap()
        .count();
    assert_eq!(browsers, 0, "no browser folder");
    server.stop().await;
}

#[tokio::test]
async fn uploads_and_extensions_refuse_bad_input() {
    let server = TestServer::start_with(Options {
        max_upload_mib: 1,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap();
    let uploads = format!("/v1/sessions/{id}/uploads");

    let (status, body, _) = send(server.req(Method::POST, &uploads).json(&json!({}))).await;
    assert_error(status, &body, 415, "multipart/form-data");
    let (status, body, _) = send(
        server
            .req(Method::POST, &uploads)
            .multipart(Form::new().text("other", "x")),
    )
    .await;
    assert_error(status, &body, 400, "no part named \"file\"");
    let (status, body, _) = send(
        server
            .req(Method::POST, &uploads)
            .multipart(file_form("..", b"x".to_vec())),
    )
    .await;
    assert_error(status, &body, 400, "usable file name");
    let (status, body, _) = send(
        server
            .req(Method::POST, &uploads)
            .multipart(file_form("big.bin", vec![0; 2 * 1024 * 1024])),
    )
    .await;
    assert_error(status, &body, 413, "larger than");

    // A traversal attempt lands inside the session's uploads folder.
    let (status, body, _) = send(
        server
            .req(Method::POST, &uploads)
            .multipart(file_form("../../../escape.txt", b"inside".to_vec())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let path = std::path::PathBuf::from(body["path"].as_str().unwrap());
    let expected_dir = server
        .data_dir
        .path()
        .join(format!("session-files/{id}/uploads"));
    assert_eq!(path, expected_dir.join("escape.txt"));
    assert_eq!(std::fs::read(&path).unwrap(), b"inside");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(path.to_str().unwrap())
    );
    let tmp = std::fs::read_dir(server.data_dir.path().join("tmp")).unwrap();
    assert_eq!(tmp.count(), 0, "refused uploads leave no scratch files");

    let (status, body, _) = send(
        server
            .req(Method::POST, "/v1/extensions")
            .multipart(file_form("e.zip", b"PK but not really".to_vec())),
    )
    .await;
    assert_error(status, &body, 415, "not a zip");

    let (status, body, _) = send(server.req(
        Method::GET,
        "/v1/sessions/00000000-0000-0000-0000-000000000000/downloads",
    ))
    .await;
    assert_error(status, &body, 404, "not found");

    // Downloads: a zip, empty while there are none, also after the end.
    for _ in 0..2 {
        let resp = server
            .req(Method::GET, &format!("/v1/sessions/{id}/downloads"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/zip");
        let zip = zip::ZipArchive::new(std::io::Cursor::new(resp.bytes().await.unwrap())).unwrap();
        assert_eq!(zip.len(), 0);
        server.release(id).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn inspector_links_are_checked_on_every_request() {
    let server = TestServer::start().await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap();
    let debug = |query: &str| server.req(Method::GET, &format!("/v1/sessions/{id}/debug{query}"));

    let (status, body, _) = send(debug("?expiresIn=0")).await;
    assert_error(status, &body, 400, "expiresIn");
    let (status, body, _) = send(debug("?expiresIn=21601")).await;
    assert_error(status, &body, 400, "expiresIn");
    let (status, body, _) = send(debug("?readOnly=maybe")).await;
    assert_error(status, &body, 400, "readOnly");

    let (status, urls, _) = send(debug("")).await;
    assert_eq!(status, 200, "{urls}");
    let live = urls["debuggerFullscreenUrl"].as_str().unwrap().to_owned();
    let tabs = live.replace("/live", "/tabs");
    let get = |url: String| async move {
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };
    let (status, text) = get(tabs.clone()).await;
    assert_eq!(status, 200, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["readOnly"], false);
    assert_eq!(listed["tabs"].as_array().unwrap().len(), 1);

    // A forged or altered grant is refused.
    let token = live
        .split("/debug/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let forged = tabs.replace(token, &token.replacen(".w.", ".r.", 1));
    assert_eq!(get(forged).await.0, 401);
    assert_eq!(get(tabs.replace(token, "nonsense")).await.0, 401);
    // DevTools files cannot climb out of /devtools (with a DevTools link: a live-view link
    // opens no DevTools at all). Sent raw: HTTP clients normalise `..` away, a hostile one
    // would not.
    let ws_url = urls["wsUrl"].as_str().unwrap();
    let token = ws_url
        .split("/debug/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let raw = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /debug/{token}/devtools/../json/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer
    };
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(raw.contains("no DevTools file"), "{raw}");

    // A short grant expires.
    let (_, short, _) = send(debug("?expiresIn=1")).await;
    let short_tabs = short["debuggerFullscreenUrl"]
        .as_str()
        .unwrap()
        .replace("/live", "/tabs");
    let expired = eventually(|| {
        let url = short_tabs.clone();
        async move { (get(url).await.0 == 401).then_some(()) }
    })
    .await;
    assert!(expired.is_some(), "a 1 s grant stops working");

    // After the session ends: 410 for the links, 409 for new ones.
    server.release(id).await;
    assert_eq!(get(tabs).await.0, 410);
    let (status, body, _) = send(debug("")).await;
    assert_error(status, &body, 409, "only while it runs");
    server.stop().await;
}

/// The names in a session's downloads zip.
async fn downloaded(server: &TestServer, id: &str) -> Vec<String> {
    let resp = server
        .req(Method::GET, &format!("/v1/sessions/{id}/downloads"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let zip = zip::ZipArchive::new(std::io::Cursor::new(resp.bytes().await.unwrap())).unwrap();
    zip.file_names().map(|n| n.unwrap().into_owned()).collect()
}

/// Makes the page download `len` bytes as `name`, and returns the download's final state
/// (`completed` or `canceled`) with the bytes Chromium received.
async fn download(cdp: &mut Cdp, page: &str, name: &str, len: usize) -> (String, u64) {
    let script = format!(
        "(() => {{ const a = document.createElement('a'); \
           a.href = URL.createObjectURL(new Blob([new Uint8Array({len}).fill(7)])); \
           a.download = '{name}'; document.body.appendChild(a); a.click(); return true; }})()"
    );
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": script, "returnByValue": true}),
            Some(page),
        )
        .await;
    assert_eq!(r["result"]["result"]["value"], true, "{r}");
    let begun = cdp
        .event("Browser.downloadWillBegin", |p| {
            p["suggestedFilename"] == name
        })
        .await;
    let guid = begun["params"]["guid"].clone();
    let done = cdp
        .event("Browser.downloadProgress", |p| {
            p["guid"] == guid && p["state"] != "inProgress"
        })
        .await;
    (
        done["params"]["state"].as_str().unwrap().to_owned(),
        done["params"]["receivedBytes"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn a_session_past_its_disk_allowance_refuses_new_files_and_keeps_running() {
    let server = TestServer::start_with(Options {
        session_disk_mib: 1,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    cdp.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": "/tmp", "eventsEnabled": true}),
        None,
    )
    .await;
    cdp.call(
        "Runtime.evaluate",
        json!({"expression": "document.body.innerHTML = '<p>x</p>'"}),
        Some(&page),
    )
    .await;

    let upload = |bytes: usize| {
        server
            .req(Method::POST, &format!("/v1/sessions/{id}/uploads"))
            .multipart(file_form(&format!("f{bytes}.bin"), vec![1u8; bytes]))
    };
    // 600 KiB of the 1 MiB fits; 600 more do not: 413 naming the flag, nothing kept.
    let (status, body, _) = send(upload(600 * 1024)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send(upload(601 * 1024)).await;
    assert_error(status, &body, 413, "--session-disk-mib");
    let uploads = server
        .data_dir
        .path()
        .join(format!("session-files/{id}/uploads"));
    assert!(!uploads.join(format!("f{}.bin", 601 * 1024)).exists());

    // A small download fits and stays.
    let (state, _) = download(&mut cdp, &page, "small.bin", 10_000).await;
    assert_eq!(state, "completed");
    // One that does not fit is written by Chromium, then removed by browserd.
    let (_, received) = download(&mut cdp, &page, "big.bin", 800 * 1024).await;
    assert!(received > 0, "the big download started");
    let gone = eventually(|| async {
        let names = downloaded(&server, &id).await;
        (names.contains(&"small.bin".to_owned()) && !names.contains(&"big.bin".to_owned()))
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "{:?}", downloaded(&server, &id).await);
    // The session goes on: still RUNNING, its page still answers.
    assert_eq!(server.get(&id).await["status"], "RUNNING");
    let r = cdp
        .call(
            "Runtime.evaluate",
            json!({"expression": "6 * 7"}),
            Some(&page),
        )
        .await;
    assert_eq!(r["result"]["result"]["value"], 42);
    drop(cdp);
    server.release(&id).await;
    server.stop().await;
}

#[tokio::test]
async fn identical_extension_uploads_share_one_folder_and_a_delete_removes_only_its_row() {
    let server = TestServer::start().await;
    server.add_project("other", 2, "other-key").await;
    let upload = |key: &str| {
        server
            .http
            .request(Method::POST, server.url("/v1/extensions"))
            .header("X-BB-API-Key", key)
            .multipart(file_form("e.zip", common::extension_zip()))
    };
    let (status, mine, _) = send(upload(API_KEY)).await;
    assert_eq!(status, 200, "{mine}");
    let (status, theirs, _) = send(upload("other-key")).await;
    assert_eq!(status, 200, "{theirs}");
    assert_ne!(
        mine["id"], theirs["id"],
        "each project has its own extension"
    );
    let folders = || {
        std::fs::read_dir(server.data_dir.path().join("extensions"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect::<Vec<_>>()
    };
    let shared = folders();
    assert_eq!(shared.len(), 1, "unpacked once: {shared:?}");
    let name = shared[0].file_name().unwrap().to_str().unwrap().to_owned();
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(common::extension_zip());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(name, hex, "named by the zip's SHA-256");

    // My delete is mine: their extension still loads into their session.
    let (status, _, _) = send(server.req(
        Method::DELETE,
        &format!("/v1/extensions/{}", mine["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(status, 204);
    let files = std::sync::Arc::clone(server.state.sessions.files());
    let extensions = server.state.store.extensions.clone();
    let age = |dir: &std::path::Path| {
        let old = std::time::SystemTime::now() - browserd::files::UNUSED_EXTENSION_GRACE * 2;
        std::fs::File::open(dir).unwrap().set_modified(old).unwrap();
    };
    age(&shared[0]);
    assert_eq!(
        files.sweep_extensions(&*extensions, |_| false).await,
        0,
        "still theirs"
    );
    assert_eq!(folders(), shared, "their folder stays");
    let (status, session, _) = send(
        server
            .http
            .request(Method::POST, server.url("/v1/sessions"))
            .header("X-BB-API-Key", "other-key")
            .json(&json!({"extensionId": theirs["id"]})),
    )
    .await;
    assert_eq!(status, 201, "{session}");

    // Their delete too: the folder waits out its grace, then the sweep removes it, unless
    // a warm browser holds it.
    let (status, _, _) = send(
        server
            .http
            .request(
                Method::DELETE,
                server.url(&format!(
                    "/v1/extensions/{}",
                    theirs["id"].as_str().unwrap()
                )),
            )
            .header("X-BB-API-Key", "other-key"),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        files.sweep_extensions(&*extensions, |_| true).await,
        0,
        "held by a warm browser"
    );
    let (status, again, _) = send(upload(API_KEY)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        folders(),
        shared,
        "uploaded again: the same folder, its grace restarted"
    );
    assert_eq!(
        files.sweep_extensions(&*extensions, |_| false).await,
        0,
        "named again, and fresh"
    );
    let (status, _, _) = send(server.req(
        Method::DELETE,
        &format!("/v1/extensions/{}", again["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(status, 204);
    age(&shared[0]);
    assert_eq!(files.sweep_extensions(&*extensions, |_| false).await, 1);
    assert!(folders().is_empty());
}
