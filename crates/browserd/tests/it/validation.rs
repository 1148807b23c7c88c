//! Request validation and error shapes, on the in-process `Router` (`oneshot`): no socket,
//! no Chromium. A launcher that refuses every launch proves no refused request started a
//! browser. What needs a real browser is in `api.rs`.

use axum::body::Body;
use axum::http::{Method, Request};
use browserd::browser::{BrowserInstance, LaunchError, LaunchSpec, Launcher};
use browserd::config::{Common, Config, Settings};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt as _;

const KEY: &str = "bd_validation_key";

/// Counts launch attempts and refuses them all.
#[derive(Default)]
struct NoBrowsers {
    asked: AtomicUsize,
    /// The CA certificates of the last launch asked for.
    certificates: std::sync::Mutex<Vec<String>>,
    /// What its readiness check says is missing, if anything.
    missing: Option<String>,
}

#[async_trait::async_trait]
impl Launcher for NoBrowsers {
    fn dialer(&self) -> browserd::netns::Dialer {
        browserd::netns::Dialer::host()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn BrowserInstance>, LaunchError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        *self.certificates.lock().unwrap() = spec.ca_certificates.clone();
        Err(LaunchError::NotReady(std::time::Duration::ZERO))
    }

    fn readiness(&self) -> Result<(), browserd::fault::Failure> {
        self.missing
            .clone()
            .map_or(Ok(()), |why| Err(browserd::fault::Failure::operator(why)))
    }
}

struct App {
    router: axum::Router,
    launcher: Arc<NoBrowsers>,
    _data_dir: tempfile::TempDir,
    prepared: browserd::server::Prepared,
}

async fn app() -> App {
    app_with(NoBrowsers::default()).await
}

async fn app_with(launcher: NoBrowsers) -> App {
    let data_dir = tempfile::tempdir().unwrap();
    let common = Common {
        config: None,
        data_dir: Some(data_dir.path().to_owned()),
        database: None,
        log_format: None,
    };
    let settings = Settings {
        api_key: Some(KEY.into()),
        min_timeout: Some(60),
        warm_pool: Some(0),
        ..Settings::default()
    };
    let config = Config::resolve(&common, &settings).unwrap();
    let launcher = Arc::new(launcher);
    let prepared = browserd::server::prepare_with(&config, launcher.clone())
        .await
        .unwrap();
    App {
        router: browserd::api::app(prepared.state.clone()),
        launcher,
        _data_dir: data_dir,
        prepared,
    }
}

impl App {
    /// A multipart upload (part `file`) with the API key; its status and JSON body.
    async fn upload(&self, path: &str, file: &[u8]) -> (u16, Value) {
        let mut body = b"--b0undary\r\ncontent-disposition: form-data; name=\"file\"; filename=\"ca.pem\"\r\ncontent-type: application/octet-stream\r\n\r\n".to_vec();
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--b0undary--\r\n");
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "browserd.test")
            .header("x-bb-api-key", KEY)
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(Body::from(body))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// One request with the API key; its status and JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(Some(KEY), method, path, body).await
    }

    /// One request with `key` (or none); its status and JSON body.
    async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "browserd.test");
        if let Some(key) = key {
            req = req.header("x-bb-api-key", key);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        if status == 204 {
            return (204, Value::Null);
        }
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{path} answered {content_type}"
        );
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status.as_u16(), serde_json::from_slice(&bytes).unwrap())
    }
}

/// An error in Browserbase's shape, with this status and a message containing `needle`.
fn assert_error(status: u16, body: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["statusCode"], want, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn create_validation_names_the_field_and_the_rule() {
    let app = app().await;
    let cases = [
        (json!({"timeout": 59}), "timeout must be >= 60"),
        (json!({"timeout": 21601}), "timeout must be <= 21600"),
        (json!({"timeout": "long"}), "timeout must be an integer"),
        (json!({"timeout": 90.5}), "timeout must be an integer"),
        (json!({"api_timeout": 30}), "api_timeout must be >= 60"),
        (json!({"keepAlive": "yes"}), "keepAlive must be a boolean"),
        (json!({"region": "mars-1"}), "region must be one of"),
        (
            json!({"userMetadata": "x"}),
            "userMetadata must be an object",
        ),
        (
            json!({"userMetadata": {"k": "v".repeat(600)}}),
            "userMetadata must be under 512",
        ),
        (
            json!({"browserSettings": {"viewport": {"width": -1}}}),
            "browserSettings.viewport.width must be between",
        ),
        (
            json!({"browserSettings": {"context": {}}}),
            "browserSettings.context.id is required",
        ),
        (
            json!({"browserSettings": 5}),
            "browserSettings must be an object",
        ),
        (json!({"proxies": "on"}), "proxies must be"),
        (
            json!({"browserSettings": {"riskPolicyId": 5}}),
            "browserSettings.riskPolicyId must be a string",
        ),
    ];
    for (body, message) in cases {
        let (status, err) = app
            .call(Method::POST, "/v1/sessions", Some(&body.to_string()))
            .await;
        assert_error(status, &err, 400, message);
    }
    // An unknown navigation policy is not found, as an unknown context is.
    let unknown =
        json!({"browserSettings": {"riskPolicyId": "00000000-0000-0000-0000-000000000000"}});
    let (status, err) = app
        .call(Method::POST, "/v1/sessions", Some(&unknown.to_string()))
        .await;
    assert_error(
        status,
        &err,
        404,
        "browserSettings.riskPolicyId: navigation policy",
    );
    for bad in ["{not json", "[1]"] {
        let (status, err) = app.call(Method::POST, "/v1/sessions", Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {err}");
    }
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "no refused request started a browser"
    );
}

#[tokio::test]
async fn navigation_policies_have_the_sdk_shapes_and_refuse_what_they_cannot_keep() {
    let app = app().await;
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/navigation-policies",
            Some(&json!({"name": "only example", "domainOverrides": [{"domain": "Example.COM.", "decision": "allow"}]}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    // Omitted: enabled, block by default, block unknown domains.
    for (field, want) in [
        ("enabled", json!(true)),
        ("defaultDecision", json!("block")),
        ("unknownDomainBehavior", json!("block")),
        ("description", json!("")),
        ("allowedCategories", json!([])),
        ("blockedCategories", json!([])),
        (
            "domainOverrides",
            json!([{"domain": "example.com", "decision": "allow"}]),
        ),
    ] {
        assert_eq!(created[field], want, "{field}: {created}");
    }
    for field in ["id", "projectId", "createdAt", "updatedAt", "name"] {
        assert!(created[field].is_string(), "{field}: {created}");
    }
    let id = created["id"].as_str().unwrap();
    let (_, first) = app
        .call(
            Method::POST,
            "/v1/navigation-policies",
            Some(r#"{"name": "a first"}"#),
        )
        .await;
    let (status, listed) = app.call(Method::GET, "/v1/navigation-policies", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a first", "only example"], "by name");
    let (status, updated) = app
        .call(
            Method::PATCH,
            &format!("/v1/navigation-policies/{id}"),
            Some(r#"{"defaultDecision": "allow", "enabled": false}"#),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["defaultDecision"], "allow");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["name"], "only example", "untouched fields stay");
    // A disabled policy cannot be given to a session.
    let (status, err) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&json!({"browserSettings": {"riskPolicyId": id}}).to_string()),
        )
        .await;
    assert_error(status, &err, 400, "is disabled");
    for (body, message) in [
        (json!({}), "name is required"),
        (json!({"name": ""}), "name must be"),
        (
            json!({"name": "x", "defaultDecision": "maybe"}),
            "defaultDecision must be allow or block",
        ),
        (
            json!({"name": "x", "blockedCategories": ["malware"]}),
            "category rules need a feed",
        ),
        (
            json!({"name": "x", "allowedCategories": ["nonsense"]}),
            "is not a category",
        ),
        (
            json!({"name": "x", "domainOverrides": [{"domain": "http://x.com/", "decision": "allow"}]}),
            "domainOverrides[0].domain",
        ),
        (
            json!({"name": "x", "domainOverrides": [{"domain": "x.com", "decision": "perhaps"}]}),
            "domainOverrides[0].decision",
        ),
        (
            json!({"name": "x", "colour": "red"}),
            "colour is not a navigation policy field",
        ),
    ] {
        let (status, err) = app
            .call(
                Method::POST,
                "/v1/navigation-policies",
                Some(&body.to_string()),
            )
            .await;
        assert_error(status, &err, 400, message);
    }
    let first = first["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/navigation-policies/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, err) = app
        .call(
            Method::GET,
            &format!("/v1/navigation-policies/{first}"),
            None,
        )
        .await;
    assert_error(status, &err, 404, "not found");
    assert_eq!(app.launcher.asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_bodies_unknown_routes_and_methods_answer_json() {
    let app = app().await;
    let big = json!({"userMetadata": {"k": "x".repeat(2 * 1024 * 1024)}}).to_string();
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some(&big)).await;
    assert_error(status, &err, 413, "larger than");
    let (status, err) = app.call(Method::GET, "/v1/nothing", None).await;
    assert_error(status, &err, 404, "no route");
    let (status, err) = app.call(Method::DELETE, "/v1/sessions", None).await;
    assert_error(status, &err, 405, "DELETE");
}

#[tokio::test]
async fn a_failed_launch_is_a_500_with_the_reason_and_an_error_session() {
    let app = app().await;
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some("{}")).await;
    assert_error(status, &err, 500, "failed to start");
    let (status, listed) = app.call(Method::GET, "/v1/sessions", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["status"], "ERROR", "{listed}");
    assert_eq!(app.launcher.asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn health_and_readiness_need_no_key_and_name_each_check() {
    let app = app().await;
    let (status, body) = app.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // No browser has started here yet: not ready until one has (a broken Chromium is a
    // failed rollout, not a node that fails every create); every other check passes.
    let (status, body) = app.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert!(
        body["checks"]["chromium"]["error"]
            .as_str()
            .unwrap()
            .contains("no browser has started here yet"),
        "{body}"
    );
    for check in ["store", "memory", "disk", "sessions", "draining"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }
    assert_eq!(body["checks"]["sessions"]["live"], 0);
    // A launch that fails for Chromium's own reasons says so (this launcher's browsers
    // never open DevTools).
    let (status, _) = app.call(Method::POST, "/v1/sessions", Some("{}")).await;
    assert_eq!(status, 500);
    let (status, body) = app.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, 503);
    let error = body["checks"]["chromium"]["error"].as_str().unwrap();
    assert!(
        error.contains("the last browser launch failed") && error.contains("DevTools"),
        "{body}"
    );
    assert_eq!(body["checks"]["chromium"]["side"], "browser", "{body}");

    let missing = app_with(NoBrowsers {
        missing: Some("Chromium at /nowhere: not found".into()),
        ..NoBrowsers::default()
    })
    .await;
    let (status, body) = missing.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["chromium"]["ok"], false);
    assert!(
        body["checks"]["chromium"]["error"]
            .as_str()
            .unwrap()
            .contains("/nowhere"),
        "{body}"
    );
    // The operator's to fix, not the browser's.
    assert_eq!(body["checks"]["chromium"]["side"], "operator", "{body}");
    assert_eq!(
        body["checks"]["store"]["ok"], true,
        "only the failing check fails"
    );
}

#[tokio::test]
async fn the_overview_counts_creates_and_refusals_and_shows_the_headroom() {
    let app = app().await;
    let (status, err) = app.call_as(None, Method::GET, "/v1/overview", None).await;
    assert_error(status, &err, 401, "X-BB-API-Key");
    let (status, before) = app.call(Method::GET, "/v1/overview", None).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["intervalSeconds"], 10);
    assert!(before["maxSessions"].as_u64().unwrap() >= 1);
    assert_eq!(before["warmPool"], json!({"target": 0, "ready": 0}));
    assert!(before["memory"]["availableMib"].as_u64().unwrap() > 0);
    assert_eq!(before["memory"]["floorMib"], 512);
    assert!(before["disk"]["freeMib"].as_u64().unwrap() > 0);
    let last = |v: &Value| v["samples"].as_array().unwrap().last().unwrap().clone();
    let first = last(&before);
    assert_eq!(
        (first["created"].as_u64(), first["refused"].as_u64()),
        (Some(0), Some(0))
    );

    // One create a minute: the first fails to launch (an error, not a refusal), the next
    // is refused with 429, and the overview counts that refusal.
    let (_, projects) = app.call(Method::GET, "/v1/projects", None).await;
    let id = projects[0]["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/projects/{id}"),
            Some(r#"{"creationRate": 1}"#),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.call(Method::POST, "/v1/sessions", Some("{}")).await;
    assert_eq!(status, 500);
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some("{}")).await;
    assert_error(status, &err, 429, "");
    let (_, after) = app.call(Method::GET, "/v1/overview", None).await;
    let now = last(&after);
    assert_eq!(
        (now["created"].as_u64(), now["refused"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(now["liveSessions"], 0);
    assert!(now["at"].as_i64() >= first["at"].as_i64());
}

/// A field that would change what the browser can reach is honoured or refused by name,
/// never accepted without effect; turned off, it is accepted.
#[tokio::test]
async fn traffic_fields_browserd_cannot_honour_are_refused_by_name() {
    let app = app().await;
    for (body, needle) in [
        // No --proxy-pool on this server.
        (json!({"proxies": true}), "this server has no proxy pool"),
        (
            json!({"proxies": [{"type": "browserbase", "geolocation": {"country": "US"}}]}),
            "--proxy-pool",
        ),
        (
            json!({"proxies": [{"type": "external", "server": "http://p:8080"}]}),
            "proxies needs browsers in browserd's sandbox",
        ),
        (
            json!({"proxies": [{"type": "external", "server": "socks4://p:1080"}]}),
            "proxies[0].server: socks4:// upstream proxies are not supported",
        ),
        (
            json!({"proxies": [{"type": "none", "domainPattern": "(["}]}),
            "proxies[0].domainPattern",
        ),
        (json!({"proxies": "yes"}), "proxies must be true or a list"),
        (
            json!({"proxySettings": {"caCertificates": "c1"}}),
            "caCertificates must be a list",
        ),
        (
            json!({"proxySettings": {"caCertificates": [1]}}),
            "caCertificates must hold certificate ids",
        ),
        (json!({"browserSettings": {"blockAds": true}}), "blockAds"),
        (
            json!({"browserSettings": {"allowedDomains": ["example.com"]}}),
            "allowedDomains needs browsers in browserd's sandbox",
        ),
        (
            json!({"browserSettings": {"allowedDomains": ["https://example.com/"]}}),
            "is not a domain",
        ),
        (
            json!({"browserSettings": {"allowedDomains": "example.com"}}),
            "allowedDomains must be a list",
        ),
    ] {
        let (status, err) = app
            .call(Method::POST, "/v1/sessions", Some(&body.to_string()))
            .await;
        assert_error(status, &err, 400, needle);
    }
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "nothing launched"
    );
    for off in [
        json!({"proxies": false}),
        json!({"proxies": []}),
        json!({"browserSettings": {"blockAds": false, "allowedDomains": [], "ignoreCertificateErrors": false}}),
    ] {
        let (status, err) = app
            .call(Method::POST, "/v1/sessions", Some(&off.to_string()))
            .await;
        // Past validation: this launcher refuses every browser.
        assert_error(status, &err, 500, "failed to start");
    }
}

/// `seleniumRemoteUrl` answers in WebDriver's own error shape: no or wrong credentials are
/// a 401, `/status` needs none, and nothing reaches a chromedriver.
#[tokio::test]
async fn webdriver_requests_without_the_sessions_credentials_are_refused_in_webdrivers_shape() {
    let app = app().await;
    let new_session = r#"{"capabilities": {"alwaysMatch": {"browserName": "chrome"}}}"#;
    for (key, says) in [
        (None, "missing credentials"),
        (Some(KEY), "missing credentials"),
    ] {
        let (status, body) = app
            .call_as(key, Method::POST, "/webdriver/session", Some(new_session))
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["value"]["error"], "unknown error", "{body}");
        let message = body["value"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (status, body) = app
        .call_as(None, Method::GET, "/webdriver/status", None)
        .await;
    assert_eq!(
        (status, &body["value"]["ready"]),
        (200, &json!(true)),
        "{body}"
    );
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "nothing launched"
    );
}

/// A context name with a NUL is a client mistake, a 400 on every store (PostgreSQL's text
/// cannot hold one: schemathesis found it as a 500 through a cluster node).
#[tokio::test]
async fn a_context_name_with_a_nul_is_a_400() {
    let app = app().await;
    let (status, err) = app
        .call(
            Method::POST,
            "/v1/contexts",
            Some(r#"{"name": "a\u0000b"}"#),
        )
        .await;
    assert_error(status, &err, 400, "NUL");
}

/// userMetadata holding NUL is a 400: stored, it would break `q=` lists on PostgreSQL,
/// whose jsonb cannot hold one.
#[tokio::test]
async fn user_metadata_with_a_nul_is_a_400() {
    let app = app().await;
    let (status, err) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(r#"{"userMetadata": {"k": "a\u0000b"}}"#),
        )
        .await;
    assert_error(status, &err, 400, "NUL");
}

/// Certificates: uploaded as PEM or DER (keys and other files refused), listed, named by a
/// create's `proxySettings.caCertificates` (which reaches the launch as PEM), deleted.
#[tokio::test]
async fn certificates_are_checked_at_upload_and_reach_the_launch() {
    let app = app().await;
    let fixture = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/certs")
                .join(name),
        )
        .unwrap()
    };
    let (status, made) = app.upload("/v1/certificates", &fixture("ca.der")).await;
    assert_eq!(status, 200, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(
        made.get("pem").is_none(),
        "the API never shows the file: {made}"
    );
    assert_eq!(made["certificates"][0]["subject"], "CN=browserd fixture CA");
    assert!(
        made["certificates"][0]["expiresAt"]
            .as_str()
            .unwrap()
            .starts_with("2126-"),
        "{made}"
    );
    for (file, says) in [
        (
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n".to_vec(),
            "private key",
        ),
        (b"hello".to_vec(), "not a PEM or DER"),
        (fixture("leaf.pem"), "is not a CA certificate"),
        (fixture("expired.pem"), "expired on 2020-01-02"),
        (fixture("request.pem"), "certificate request"),
        (fixture("public-key.pem"), "public key"),
        (
            [fixture("ca.der"), b"junk".to_vec()].concat(),
            "4 bytes follow",
        ),
    ] {
        let (status, err) = app.upload("/v1/certificates", &file).await;
        assert_error(status, &err, 400, says);
    }
    let (status, list) = app.call(Method::GET, "/v1/certificates", None).await;
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(
        list[0]["certificates"][0]["subject"],
        "CN=browserd fixture CA"
    );
    let (status, one) = app
        .call(Method::GET, &format!("/v1/certificates/{id}"), None)
        .await;
    assert_eq!((status, &one["id"]), (200, &json!(id)), "{one}");

    // At most ten certificates a file, twenty a session (each is a certutil run at launch).
    let ten = fixture("ca.pem").repeat(10);
    let (status, err) = app
        .upload("/v1/certificates", &fixture("ca.pem").repeat(11))
        .await;
    assert_error(status, &err, 400, "at most 10");
    let mut bundles = Vec::new();
    for _ in 0..3 {
        let (status, made) = app.upload("/v1/certificates", &ten).await;
        assert_eq!(status, 200, "{made}");
        assert_eq!(made["certificates"].as_array().unwrap().len(), 10);
        bundles.push(made["id"].as_str().unwrap().to_owned());
    }
    let body = json!({"proxySettings": {"caCertificates": bundles}}).to_string();
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some(&body)).await;
    assert_error(
        status,
        &err,
        400,
        "hold 30 certificates; a session trusts at most 20",
    );
    for bundle in &bundles {
        let (status, _) = app
            .call(Method::DELETE, &format!("/v1/certificates/{bundle}"), None)
            .await;
        assert_eq!(status, 204);
    }

    let unknown = "00000000-0000-0000-0000-000000000000";
    let body = json!({"proxySettings": {"caCertificates": [unknown]}}).to_string();
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some(&body)).await;
    assert_error(status, &err, 404, "certificate 00000000");
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "nothing launched"
    );
    let body = json!({"proxySettings": {"caCertificates": [id, id]}}).to_string();
    let (status, err) = app.call(Method::POST, "/v1/sessions", Some(&body)).await;
    assert_error(status, &err, 500, "failed to start");
    let launched = app.launcher.certificates.lock().unwrap().clone();
    assert_eq!(launched.len(), 1, "named twice, installed once");
    assert!(
        launched[0].starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{launched:?}"
    );

    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/certificates/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, err) = app
        .call(Method::GET, &format!("/v1/certificates/{id}"), None)
        .await;
    assert_error(status, &err, 404, "not found");
}

/// Capacity is the operator's: a tenant's key may tighten its project's creation rate but
/// never loosen or lift it; the default project's key (the operator's, as for /metrics) may.
#[tokio::test]
async fn a_tenants_key_may_tighten_its_creation_rate_but_never_loosen_it() {
    let app = app().await;
    let store = &app.prepared.state.store;
    let tenant = store
        .projects
        .create_project("tenant", 300, 2, 10)
        .await
        .unwrap();
    let key = "bd_tenant_key_for_validation";
    store
        .projects
        .add_api_key(&tenant.id, &browserd::secrets::hash_api_key(key))
        .await
        .unwrap();
    let path = format!("/v1/projects/{}", tenant.id);
    let patch = |rate: u64| {
        let (app, path) = (&app, &path);
        async move {
            app.call_as(
                Some(key),
                Method::PATCH,
                path,
                Some(&format!(r#"{{"creationRate": {rate}}}"#)),
            )
            .await
        }
    };
    for loosen in [0, 11, 1000] {
        let (status, body) = patch(loosen).await;
        assert_error(status, &body, 403, "may only tighten");
    }
    let (status, body) = patch(10).await;
    assert_eq!(
        (status, body["creationRate"].as_u64()),
        (200, Some(10)),
        "unchanged is fine"
    );
    let (status, body) = patch(3).await;
    assert_eq!((status, body["creationRate"].as_u64()), (200, Some(3)));
    let (status, body) = patch(10).await;
    assert_error(status, &body, 403, "limit of 3 per minute");
    assert_eq!(
        store
            .projects
            .get_project(&tenant.id)
            .await
            .unwrap()
            .unwrap()
            .creations_per_minute,
        3,
        "nothing was stored"
    );

    // The operator's own project: any value, 0 (no limit) included.
    let (_, projects) = app.call(Method::GET, "/v1/projects", None).await;
    let own = format!("/v1/projects/{}", projects[0]["id"].as_str().unwrap());
    for rate in [5, 50, 0] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &own,
                Some(&format!(r#"{{"creationRate": {rate}}}"#)),
            )
            .await;
        assert_eq!((status, body["creationRate"].as_u64()), (200, Some(rate)));
    }
}

/// API JSON is parsed as strictly as CDP: a key given twice is a 400, at any depth, never
/// "the last one wins" (a proxy or log in front of browserd may have read the first).
#[tokio::test]
async fn a_key_given_twice_in_api_json_is_refused() {
    let app = app().await;
    for body in [
        r#"{"keepAlive": true, "keepAlive": false}"#,
        r#"{"browserSettings": {"viewport": {"width": 800, "width": 4000, "height": 600}}}"#,
        r#"{"userMetadata": {"a": 1, "\u0061": 2}}"#,
    ] {
        let (status, err) = app.call(Method::POST, "/v1/sessions", Some(body)).await;
        assert_error(status, &err, 400, "appears twice");
    }
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "nothing launched"
    );
}

/// A tenant with a project of its own, made in the store, and its key.
async fn tenant(app: &App, concurrency: u32, key: &str) -> browserd::model::Project {
    let store = &app.prepared.state.store;
    let project = store
        .projects
        .create_project("tenant", 300, concurrency, 0)
        .await
        .unwrap();
    store
        .projects
        .add_api_key(&project.id, &browserd::secrets::hash_api_key(key))
        .await
        .unwrap();
    project
}

/// A project's keys through the API: listed by id (the key of the request marked), a new
/// one shown once and working at once, a revoked one refused at once, the last one kept,
/// and another project's keys out of reach.
#[tokio::test]
async fn a_projects_keys_are_listed_made_and_revoked_and_its_last_key_stays() {
    let app = app().await;
    let first = "bd_tenant_first_key";
    let project = tenant(&app, 2, first).await;
    let keys = format!("/v1/projects/{}/keys", project.id);

    let (status, listed) = app.call_as(Some(first), Method::GET, &keys, None).await;
    assert_eq!(status, 200);
    let first_id = browserd::store::api_key_id(&browserd::secrets::hash_api_key(first));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], first_id.as_str());
    assert_eq!(listed[0]["current"], true);
    assert!(
        !listed.to_string().contains(first),
        "a listing never shows a key"
    );

    let (status, made) = app.call_as(Some(first), Method::POST, &keys, None).await;
    assert_eq!(status, 201);
    let second = made["key"].as_str().unwrap().to_owned();
    let second_id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        second_id,
        browserd::store::api_key_id(&browserd::secrets::hash_api_key(&second))
    );
    let (status, listed) = app.call_as(Some(&second), Method::GET, &keys, None).await;
    assert_eq!(status, 200, "the new key works at once");
    let current: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), k["current"] == true))
        .collect();
    assert_eq!(current.len(), 2);
    assert!(current.contains(&(first_id.as_str(), false)));
    assert!(current.contains(&(second_id.as_str(), true)));

    // Another project (the operator's) cannot see or touch this project's keys.
    let (status, err) = app.call(Method::GET, &keys, None).await;
    assert_error(status, &err, 404, "not found");
    let (status, err) = app
        .call(Method::DELETE, &format!("{keys}/{first_id}"), None)
        .await;
    assert_error(status, &err, 404, "not found");
    let (_, own) = app.call(Method::GET, "/v1/projects", None).await;
    let own_keys = format!("/v1/projects/{}/keys", own[0]["id"].as_str().unwrap());
    let (status, err) = app
        .call_as(
            Some(&second),
            Method::DELETE,
            &format!(
                "{own_keys}/{}",
                browserd::store::api_key_id(&browserd::secrets::hash_api_key(KEY))
            ),
            None,
        )
        .await;
    assert_error(status, &err, 404, "not found");

    // Revoked: refused at once.
    let (status, _) = app
        .call_as(
            Some(&second),
            Method::DELETE,
            &format!("{keys}/{first_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, err) = app.call_as(Some(first), Method::GET, &keys, None).await;
    assert_error(status, &err, 401, "invalid API key");
    let (status, err) = app
        .call_as(
            Some(&second),
            Method::DELETE,
            &format!("{keys}/{first_id}"),
            None,
        )
        .await;
    assert_error(status, &err, 404, "no key");

    // A key id has one shape; anything else names no key (and no prefix of several).
    for bad in ["%25", "abc", "ABCDEF012345", "0123456789abc"] {
        let (status, err) = app
            .call_as(
                Some(&second),
                Method::DELETE,
                &format!("{keys}/{bad}"),
                None,
            )
            .await;
        assert_error(status, &err, 400, "12 lowercase hex digits");
    }

    // The last key stays: the project would be out of reach.
    let (status, err) = app
        .call_as(
            Some(&second),
            Method::DELETE,
            &format!("{keys}/{second_id}"),
            None,
        )
        .await;
    assert_error(status, &err, 409, "last key");
    let (status, _) = app.call_as(Some(&second), Method::GET, &keys, None).await;
    assert_eq!(status, 200);

    // A project's key can make only so many keys.
    let store = &app.prepared.state.store;
    for i in 1..browserd::api::MAX_KEYS_PER_PROJECT {
        store
            .projects
            .add_api_key(&project.id, &format!("{i:064x}"))
            .await
            .unwrap();
    }
    let (status, err) = app.call_as(Some(&second), Method::POST, &keys, None).await;
    assert_error(status, &err, 409, "the most it may have");
}

/// A tenant's key may lower its project's concurrency, never raise it, nor touch another
/// project's; the next create is held to the new limit at once, and to a raised one.
#[tokio::test]
async fn a_tenant_may_lower_its_concurrency_and_the_next_create_is_held_to_it() {
    let app = app().await;
    let key = "bd_tenant_concurrency_key";
    let project = tenant(&app, 3, key).await;
    let path = format!("/v1/projects/{}", project.id);
    let patch = |who: &'static str, n: i64| {
        let (app, path) = (&app, &path);
        async move {
            app.call_as(
                Some(who),
                Method::PATCH,
                path,
                Some(&format!(r#"{{"concurrency": {n}}}"#)),
            )
            .await
        }
    };
    let (status, err) = patch(key, 4).await;
    assert_error(status, &err, 403, "may only lower it");
    for bad in [0, -1, 1 << 33] {
        let (status, err) = patch(key, bad).await;
        assert_error(status, &err, 400, "concurrency must be between 1");
    }
    let (status, body) = patch(key, 1).await;
    assert_eq!((status, body["concurrency"].as_u64()), (200, Some(1)));

    // One session already running (another node's, in the shared store): the project is
    // full at its new limit, and the create says so.
    let now = browserd::model::now();
    let running = browserd::model::Session {
        id: uuid::Uuid::new_v4(),
        project_id: project.id.clone(),
        status: browserd::model::SessionStatus::Running,
        keep_alive: true,
        timeout_secs: 300,
        region: "us-west-2".into(),
        user_metadata: None,
        browser_settings: None,
        extension_id: None,
        proxies: None,
        proxy_bytes: 0,
        created_at: now,
        updated_at: now,
        started_at: now,
        expires_at: now + time::Duration::seconds(300),
        ended_at: None,
        end_reason: None,
        browser: None,
        node: Some("another-node".into()),
    };
    let limits = browserd::store::ProjectLimits {
        concurrency: 3,
        per_minute: 0,
    };
    app.prepared
        .state
        .store
        .sessions
        .insert_session(&running, limits)
        .await
        .unwrap()
        .unwrap();
    let (status, err) = app
        .call_as(Some(key), Method::POST, "/v1/sessions", Some("{}"))
        .await;
    assert_error(status, &err, 429, "limit 1, currently 1");
    assert_eq!(app.launcher.asked.load(Ordering::SeqCst), 0, "no launch");

    // The operator raises it again (as `browserd project set-concurrency` does): the next
    // create gets past the limit (to the launcher).
    let (status, err) = app
        .call(Method::PATCH, &path, Some(r#"{"concurrency": 2}"#))
        .await;
    assert_error(status, &err, 404, "not found");
    app.prepared
        .state
        .store
        .projects
        .set_concurrency(&project.id, 2)
        .await
        .unwrap();
    let (status, _) = app
        .call_as(Some(key), Method::POST, "/v1/sessions", Some("{}"))
        .await;
    assert_ne!(status, 429);
    assert_eq!(app.launcher.asked.load(Ordering::SeqCst), 1, "launched");
}

/// A draining node: `/readyz` says so at once, a create is a 503 that tells the SDK to
/// retry (another node, or this one's replacement, takes it) and counts as `draining`.
#[tokio::test]
async fn a_draining_node_is_not_ready_and_refuses_creates_with_a_retry() {
    let app = app().await;
    let sessions = &app.prepared.state.sessions;
    assert!(!sessions.is_draining());
    sessions.start_drain();
    let (status, body) = app.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["draining"]["ok"], false, "{body}");

    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header("host", "browserd.test")
        .header("x-bb-api-key", KEY)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-should-retry"], "true");
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("draining"),
        "{body}"
    );
    assert_eq!(
        app.launcher.asked.load(Ordering::SeqCst),
        0,
        "nothing launched"
    );
    let refused = app
        .prepared
        .state
        .sessions
        .metrics()
        .creates
        .get_or_create(&browserd::metrics::Outcome {
            outcome: "draining",
        })
        .get();
    assert_eq!(refused, 1, "counted as a draining refusal");
}
