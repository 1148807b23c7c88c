//! The Browserbase REST API: shapes, validation and every error case. Sessions created
//! here are real Chromium sessions.

use crate::common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = server.req(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{path} answered {:?}",
        headers["content-type"]
    );
    (status, resp.json().await.unwrap(), headers)
}

fn seconds_between(a: &Value, b: &Value) -> i64 {
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    (parse(b) - parse(a)).whole_seconds()
}

#[tokio::test]
async fn create_returns_the_full_session_with_connect_credentials() {
    let server = TestServer::start().await;
    let (status, s, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({
            "keepAlive": true,
            "timeout": 120,
            "region": "eu-central-1",
            "userMetadata": {"order": {"id": "42"}},
            "browserSettings": {"viewport": {"width": 1000, "height": 700}, "blockAds": false,
                                "solveCaptchas": true, "os": "windows", "notAField": 1},
            "proxies": false,
        })),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    for field in [
        "id",
        "createdAt",
        "updatedAt",
        "projectId",
        "startedAt",
        "expiresAt",
        "connectUrl",
        "seleniumRemoteUrl",
        "signingKey",
    ] {
        assert!(s[field].is_string(), "{field} missing in {s}");
    }
    assert_eq!(s["status"], "RUNNING");
    assert_eq!(s["keepAlive"], true);
    assert_eq!(s["proxyBytes"], 0);
    assert_eq!(s["region"], "eu-central-1");
    assert_eq!(s["userMetadata"], json!({"order": {"id": "42"}}));
    // Stealth and captcha settings are accepted without effect, and the answer says so.
    assert_eq!(
        s["browserd"]["ignoredSettings"],
        json!(["solveCaptchas", "os"])
    );
    assert_eq!(seconds_between(&s["startedAt"], &s["expiresAt"]), 120);
    assert!(
        s["connectUrl"]
            .as_str()
            .unwrap()
            .ends_with(s["signingKey"].as_str().unwrap())
    );

    // Retrieve gives the same connectUrl while the session is live.
    let got = server.get(s["id"].as_str().unwrap()).await;
    assert_eq!(got["connectUrl"], s["connectUrl"]);
    assert_eq!(got["status"], "RUNNING");
    server.stop().await;
}

#[tokio::test]
async fn an_empty_json_body_is_an_empty_object_and_the_project_default_applies() {
    let server = TestServer::start().await;
    let resp = server
        .req(Method::POST, "/v1/sessions")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["keepAlive"], false);
    assert_eq!(s["region"], "us-west-2");
    assert_eq!(seconds_between(&s["startedAt"], &s["expiresAt"]), 300);
    server.stop().await;
}

#[tokio::test]
async fn api_timeout_is_the_raw_api_alias_of_timeout() {
    // (Validation of create bodies, which needs no browser, is in validation.rs.)
    let server = TestServer::start_with(Options {
        min_timeout: 60,
        ..Options::default()
    })
    .await;
    let (status, s, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({"api_timeout": 90})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(seconds_between(&s["startedAt"], &s["expiresAt"]), 90);
    server.stop().await;
}

#[tokio::test]
async fn keys_and_projects_are_checked() {
    let server = TestServer::start().await;
    let resp = server
        .http
        .get(server.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_error(401, &body, 401, "missing X-BB-API-Key");
    let resp = server
        .http
        .get(server.url("/v1/sessions"))
        .header("X-BB-API-Key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let mine = server.create(json!({})).await;
    let (status, err, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({"projectId": "someone-else"})),
    )
    .await;
    assert_error(status, &err, 403, "projectId");
    let (status, _, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({"projectId": mine["projectId"]})),
    )
    .await;
    assert_eq!(status, 201, "the key's own projectId is accepted");

    // Another project's key sees none of it.
    server.add_project("other", 2, "other-key").await;
    let id = mine["id"].as_str().unwrap();
    for (method, path, body) in [
        (Method::GET, format!("/v1/sessions/{id}"), None),
        (
            Method::POST,
            format!("/v1/sessions/{id}"),
            Some(json!({"status": "REQUEST_RELEASE"})),
        ),
        (
            Method::GET,
            format!("/v1/projects/{}", mine["projectId"].as_str().unwrap()),
            None,
        ),
    ] {
        let mut req = server
            .http
            .request(method, server.url(&path))
            .header("X-BB-API-Key", "other-key");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let theirs: Value = server
        .http
        .get(server.url("/v1/sessions"))
        .header("X-BB-API-Key", "other-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs, json!([]));
    assert_eq!(
        server.get(id).await["status"],
        "RUNNING",
        "the other key released nothing"
    );

    let (status, err, _) = call(
        &server,
        Method::GET,
        &format!("/v1/sessions/{}", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    assert_error(status, &err, 404, "not found");
    let (status, _, _) = call(&server, Method::GET, "/v1/sessions/not-a-uuid", None).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn limits_answer_429_without_retry_and_free_at_release() {
    let server = TestServer::start_with(Options {
        max_sessions: 2,
        ..Options::default()
    })
    .await;
    // The project may run one session at a time.
    server.add_project("small", 1, "small-key").await;
    let create = |key: &'static str| {
        let req = server
            .http
            .post(server.url("/v1/sessions"))
            .header("X-BB-API-Key", key)
            .json(&json!({}));
        async move { req.send().await.unwrap() }
    };
    let first: Value = create("small-key").await.json().await.unwrap();
    let refused = create("small-key").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let body: Value = refused.json().await.unwrap();
    assert_error(
        429,
        &body,
        429,
        "max concurrent sessions limit (limit 1, currently 1)",
    );

    // The server limit of 2: one more from the default project fills it.
    server.create(json!({})).await;
    let (status, body, headers) =
        call(&server, Method::POST, "/v1/sessions", Some(json!({}))).await;
    assert_error(status, &body, 429, "limit of 2 concurrent sessions");
    assert_eq!(headers["x-should-retry"], "false");

    // A slot is free the moment its session ends.
    let released: Value = server
        .http
        .post(server.url(&format!("/v1/sessions/{}", first["id"].as_str().unwrap())))
        .header("X-BB-API-Key", "small-key")
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(released["status"], "COMPLETED");
    assert_eq!(create("small-key").await.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn release_forms_and_their_validation() {
    let server = TestServer::start().await;
    let a = server.create(json!({"keepAlive": true})).await;
    let id = a["id"].as_str().unwrap();
    let (status, err, _) = call(
        &server,
        Method::POST,
        &format!("/v1/sessions/{id}"),
        Some(json!({})),
    )
    .await;
    assert_error(status, &err, 400, "status is required");
    let (status, err, _) = call(
        &server,
        Method::POST,
        &format!("/v1/sessions/{id}"),
        Some(json!({"status": "STOP"})),
    )
    .await;
    assert_error(status, &err, 400, "status must be REQUEST_RELEASE");
    assert_eq!(server.get(id).await["status"], "RUNNING");

    // The docs' raw-API form: POST /v1/sessions with sessionId and status.
    let (status, s, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({"sessionId": id, "status": "REQUEST_RELEASE", "projectId": a["projectId"]})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["status"], "COMPLETED");
    let (status, err, _) = call(
        &server,
        Method::POST,
        "/v1/sessions",
        Some(json!({"status": "REQUEST_RELEASE"})),
    )
    .await;
    assert_error(status, &err, 400, "sessionId is required");
    server.stop().await;
}

#[tokio::test]
async fn list_filters_by_status_and_user_metadata() {
    let server = TestServer::start().await;
    let a = server
        .create(json!({"keepAlive": true, "userMetadata": {"run": {"name": "alpha"}}}))
        .await;
    let b = server
        .create(json!({"keepAlive": true, "userMetadata": {"run": {"name": "beta"}}}))
        .await;
    server.release(a["id"].as_str().unwrap()).await;

    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all, _) = call(&server, Method::GET, "/v1/sessions", None).await;
    assert_eq!(
        ids(all),
        [b["id"].as_str().unwrap(), a["id"].as_str().unwrap()],
        "newest first"
    );
    let (_, running, _) = call(&server, Method::GET, "/v1/sessions?status=RUNNING", None).await;
    assert_eq!(ids(running), [b["id"].as_str().unwrap()]);
    let (_, done, _) = call(&server, Method::GET, "/v1/sessions?status=COMPLETED", None).await;
    assert_eq!(ids(done), [a["id"].as_str().unwrap()]);
    let q = urlencode("user_metadata['run']['name']:'alpha'");
    let (_, found, _) = call(&server, Method::GET, &format!("/v1/sessions?q={q}"), None).await;
    assert_eq!(ids(found), [a["id"].as_str().unwrap()]);

    // `limit` keeps the newest; with a metadata query, of the matching ones.
    let (_, newest, _) = call(&server, Method::GET, "/v1/sessions?limit=1", None).await;
    assert_eq!(ids(newest), [b["id"].as_str().unwrap()]);
    let (_, found, _) = call(
        &server,
        Method::GET,
        &format!("/v1/sessions?limit=1&q={q}"),
        None,
    )
    .await;
    assert_eq!(ids(found), [a["id"].as_str().unwrap()]);
    for bad in ["0", "10001", "many"] {
        let (status, err, _) = call(
            &server,
            Method::GET,
            &format!("/v1/sessions?limit={bad}"),
            None,
        )
        .await;
        assert_error(
            status,
            &err,
            400,
            "limit must be a whole number from 1 to 10000",
        );
    }

    let (status, err, _) = call(&server, Method::GET, "/v1/sessions?status=DONE", None).await;
    assert_error(status, &err, 400, "status must be one of");
    let (status, err, _) = call(&server, Method::GET, "/v1/sessions?q=name%3Dalpha", None).await;
    assert_error(status, &err, 400, "q must look like");
    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn projects_show_and_change_the_default_timeout_and_count_usage() {
    let server = TestServer::start_with(Options {
        min_timeout: 60,
        ..Options::default()
    })
    .await;
    let (status, list, _) = call(&server, Method::GET, "/v1/projects", None).await;
    assert_eq!(status, 200);
    let project = list[0].clone();
    let pid = project["id"].as_str().unwrap();
    assert_eq!(project["defaultTimeout"], 300);
    assert_eq!(project["concurrency"], 4);
    for field in ["name", "ownerId", "createdAt", "updatedAt"] {
        assert!(project[field].is_string(), "{field}");
    }
    assert_eq!(project["browserd"]["maxSessions"], 4);
    assert_eq!(project["browserd"]["warmPool"], 0);
    let (_, one, _) = call(&server, Method::GET, &format!("/v1/projects/{pid}"), None).await;
    assert_eq!(one, project);
    let (status, _, _) = call(&server, Method::GET, "/v1/projects/nope", None).await;
    assert_eq!(status, 404);

    let (status, err, _) = call(
        &server,
        Method::PATCH,
        &format!("/v1/projects/{pid}"),
        Some(json!({"defaultTimeout": 30})),
    )
    .await;
    assert_error(status, &err, 400, "defaultTimeout must be >= 60");
    let (status, err, _) = call(
        &server,
        Method::PATCH,
        &format!("/v1/projects/{pid}"),
        Some(json!({})),
    )
    .await;
    assert_error(status, &err, 400, "give defaultTimeout");
    let (status, updated, _) = call(
        &server,
        Method::PATCH,
        &format!("/v1/projects/{pid}"),
        Some(json!({"defaultTimeout": 900})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["defaultTimeout"], 900);
    let s = server.create(json!({})).await;
    assert_eq!(
        seconds_between(&s["startedAt"], &s["expiresAt"]),
        900,
        "new sessions use the new default"
    );
    let explicit = server.create(json!({"timeout": 120})).await;
    assert_eq!(
        seconds_between(&explicit["startedAt"], &explicit["expiresAt"]),
        120
    );

    server.release(s["id"].as_str().unwrap()).await;
    server.release(explicit["id"].as_str().unwrap()).await;
    let (status, usage, _) = call(
        &server,
        Method::GET,
        &format!("/v1/projects/{pid}/usage"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        usage,
        json!({"browserMinutes": 2, "proxyBytes": 0}),
        "two sessions, a minute each at least"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_creation_rate_answers_429_with_retry_after() {
    let server = TestServer::start().await;
    let pid = server.create(json!({})).await["projectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, p, _) = call(
        &server,
        Method::PATCH,
        &format!("/v1/projects/{pid}"),
        Some(json!({"creationRate": 1})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(p["creationRate"], 1);
    // The limit counts every create of the last minute (the store counts them, on every
    // server alike), the one made before the limit was set too.
    let (status2, err, headers) =
        call(&server, Method::POST, "/v1/sessions", Some(json!({}))).await;
    assert_error(
        status2,
        &err,
        429,
        "creation rate limit (limit 1 per minute)",
    );
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        headers.get("x-should-retry").is_none(),
        "waiting helps, so the SDKs may retry"
    );
    server.stop().await;
}

#[tokio::test]
async fn below_the_disk_floor_a_create_is_refused_with_503_and_stored_sessions_stay() {
    let server = TestServer::start().await;
    let before = server.create(json!({"keepAlive": true})).await;
    let server = {
        // The same data dir, restarted with a floor above any disk's free space.
        let data_dir = server.stop().await;
        TestServer::start_in(
            data_dir,
            Options {
                min_free_disk_mib: u64::MAX / 2,
                ..Options::default()
            },
        )
        .await
    };
    let (status, err, _) = call(&server, Method::POST, "/v1/sessions", Some(json!({}))).await;
    assert_error(status, &err, 503, "below browserd's floor");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("--min-free-disk-mib"),
        "{err}"
    );
    let ready = server.get_json("/readyz").await;
    assert_eq!(ready["checks"]["disk"]["ok"], false, "{ready}");
    // What was stored is all there.
    let got = server.get(before["id"].as_str().unwrap()).await;
    assert_eq!(got["id"], before["id"]);
    server.stop().await;
}

#[tokio::test]
async fn below_the_memory_floor_a_create_is_refused_with_503() {
    let server = TestServer::start_with(Options {
        // More memory than any machine has: every cold launch is refused.
        min_free_memory_mib: u64::MAX / 2,
        ..Options::default()
    })
    .await;
    let (status, err, headers) = call(&server, Method::POST, "/v1/sessions", Some(json!({}))).await;
    assert_error(
        status,
        &err,
        503,
        "of memory available, below browserd's floor",
    );
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(server.state.sessions.live_count(), 0, "no slot is held");
    server.stop().await;
}

#[tokio::test]
async fn a_session_takes_only_so_many_clients() {
    let server = TestServer::start_with(Options {
        max_clients_per_session: 2,
        ..Options::default()
    })
    .await;
    let s = server.create(json!({"keepAlive": true})).await;
    let url = s["connectUrl"].as_str().unwrap();
    let a = Cdp::connect(url).await;
    let _b = Cdp::connect(url).await;
    let (status, body) = refused_handshake(url).await;
    assert_eq!(status, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already has 2 clients"),
        "{body}"
    );
    drop(a);
    eventually(|| async { tokio_tungstenite::connect_async(url).await.ok().map(|_| ()) })
        .await
        .expect("a client that left frees its place");
    server.stop().await;
}

/// Sessions past `--retention-days` go, rows and files, when the server sweeps (at start and
/// every 10 minutes); the project's usage keeps their minutes; newer sessions stay.
#[tokio::test]
async fn the_retention_sweep_deletes_old_sessions_and_their_files_but_not_their_usage() {
    use browserd::model::{Session, SessionStatus};
    let server = TestServer::start().await;
    let (_, list, _) = call(&server, Method::GET, "/v1/projects", None).await;
    let pid = list[0]["id"].as_str().unwrap().to_owned();
    // A session of today, a minute.
    let recent = server.create(json!({})).await;
    let recent = recent["id"].as_str().unwrap().to_owned();
    server.release(&recent).await;
    let data_dir = server.stop().await;

    // While no server runs: a session that ran 5 minutes and ended 31 days ago (the
    // default keeps 30), with files last touched then.
    let ended = browserd::model::now() - time::Duration::days(31);
    let started = ended - time::Duration::minutes(5);
    let old = Session {
        id: uuid::Uuid::new_v4(),
        project_id: pid.clone(),
        status: SessionStatus::Pending,
        keep_alive: false,
        timeout_secs: 3600,
        region: "us-west-2".into(),
        user_metadata: None,
        browser_settings: None,
        extension_id: None,
        proxies: None,
        proxy_bytes: 0,
        created_at: started,
        updated_at: started,
        started_at: started,
        expires_at: started + time::Duration::hours(1),
        ended_at: None,
        end_reason: None,
        browser: None,
        node: None,
    };
    let store = browserd::store::open(&data_dir.path().join("browserd.db"))
        .await
        .unwrap();
    let roomy = browserd::store::ProjectLimits {
        concurrency: 10,
        per_minute: 0,
    };
    let sessions = &store.sessions;
    sessions.insert_session(&old, roomy).await.unwrap().unwrap();
    sessions
        .mark_running(old.id, started, old.expires_at, None)
        .await
        .unwrap();
    sessions
        .finish_session(old.id, SessionStatus::Completed, ended, "done")
        .await
        .unwrap();
    let usage = sessions.usage(&pid, browserd::model::now()).await.unwrap();
    assert_eq!(usage.browser_minutes, 6, "5 + 1");
    store.close().await;
    let files = data_dir.path().join(format!("session-files/{}", old.id));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("logs.jsonl"), "{}\n").unwrap();
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 86_400);
    std::fs::File::open(&files)
        .unwrap()
        .set_modified(then)
        .unwrap();

    // The server sweeps as it starts.
    let server = TestServer::start_in(data_dir, Options::default()).await;
    let swept = eventually(|| async {
        let (status, _, _) = call(
            &server,
            Method::GET,
            &format!("/v1/sessions/{}", old.id),
            None,
        )
        .await;
        (status == 404 && !files.exists()).then_some(())
    })
    .await;
    assert!(
        swept.is_some(),
        "the old session or its files were not deleted"
    );
    let (status, _, _) = call(
        &server,
        Method::GET,
        &format!("/v1/sessions/{recent}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "a recent session stays");
    let usage_path = format!("/v1/projects/{pid}/usage");
    let (_, usage, _) = call(&server, Method::GET, &usage_path, None).await;
    assert_eq!(usage["browserMinutes"], 6, "usage outlives the rows");
    let (_, all, _) = call(&server, Method::GET, "/v1/sessions", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn create_fields_browserd_does_not_know_are_named_in_a_header() {
    let server = TestServer::start().await;
    let resp = server
        .req(Method::POST, "/v1/sessions")
        .json(&json!({"keepAlive": false, "fancyNewField": 1, "browserSettings": {"someFutureSetting": true, "viewport": {"width": 1280, "height": 720}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()["x-browserd-unknown-fields"],
        "fancyNewField, browserSettings.someFutureSetting"
    );
    let plain = server
        .req(Method::POST, "/v1/sessions")
        .json(&json!({"keepAlive": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
    assert!(plain.headers().get("x-browserd-unknown-fields").is_none());
    server.stop().await;
}
