//! Where a session's traffic goes: `proxies` through real upstream proxies (Debian's
//! tinyproxy, with basic auth, two of them on loopback), the operator's proxy pool, proxy
//! failures and `proxyBytes`. Real Chromium in its sandbox; pages on loopback.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The size of `/big`, served to count proxy bytes.
const BIG: usize = 256 * 1024;

/// A page with a first-party image and one from a well-known ad host (a whole-host rule of
/// EasyList: `||ad.doubleclick.net^`).
const AD_PAGE: &str = "<html><body><img id=own src=/pixel.png><img id=ad src=http://ad.doubleclick.net/pixel.png></body></html>";

/// A 1×1 PNG.
const PIXEL: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A site on `addr` answering `hello <host>` (and `BIG` bytes at `/big`); returns its port.
async fn site(addr: &str, hosts: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let hosts = Arc::clone(&hosts);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: ").or(l.strip_prefix("host: ")))
                    .unwrap_or_default()
                    .to_owned();
                hosts.lock().unwrap().push(host.clone());
                let (kind, body): (&str, Vec<u8>) = if head.starts_with("GET /big ") {
                    ("text/plain", vec![b'x'; BIG])
                } else if head.starts_with("GET /ads ") {
                    ("text/html", AD_PAGE.as_bytes().to_vec())
                } else if head.starts_with("GET /pixel.png ") {
                    ("image/png", PIXEL.to_vec())
                } else {
                    ("text/plain", format!("hello {host}").into_bytes())
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(&[head.as_bytes(), &body].concat()).await;
            });
        }
    });
    port
}

async fn session_logs(server: &TestServer, id: &str) -> Vec<Value> {
    server
        .get_json(&format!("/v1/sessions/{id}/logs"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One upstream for `localhost` (by domainPattern), `127.0.0.1` direct (`type: none`), and
/// everything else through the other upstream (the entry without a pattern): each load
/// arrives, and only the upstream it names saw it, with its own credentials. The bytes of a
/// 256 KiB page through an upstream show as the session's and the project's proxyBytes; no
/// password is in the store, the API or the logs.
#[tokio::test(flavor = "multi_thread")]
async fn proxies_route_each_host_through_the_upstream_its_entry_names_and_count_its_bytes() {
    let (a, b) = (
        Tinyproxy::start("alice", "wonderland-a7").await,
        Tinyproxy::start("bob", "builder-b9").await,
    );
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let port = site("127.0.0.1:0", Arc::clone(&hosts)).await;
    let other_port = site("127.0.0.2:0", Arc::clone(&hosts)).await;
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let s = server
        .create(json!({"keepAlive": true, "proxies": [
            {"type": "external", "server": a.server(), "username": "alice", "password": "wonderland-a7", "domainPattern": "localhost"},
            {"type": "none", "domainPattern": "127\\.0\\.0\\.1"},
            {"type": "external", "server": b.server(), "username": "bob", "password": "builder-b9"},
        ]}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;

    let via_a = format!("localhost:{port}");
    assert_eq!(
        visit(&mut cdp, &page, &format!("http://{via_a}/")).await,
        Ok(format!("hello {via_a}"))
    );
    assert!(a.tunnels().contains(&via_a), "{:?}", a.tunnels());
    let direct = format!("127.0.0.1:{port}");
    assert_eq!(
        visit(&mut cdp, &page, &format!("http://{direct}/")).await,
        Ok(format!("hello {direct}"))
    );
    let via_b = format!("127.0.0.2:{other_port}");
    assert_eq!(
        visit(&mut cdp, &page, &format!("http://{via_b}/")).await,
        Ok(format!("hello {via_b}"))
    );
    assert!(b.tunnels().contains(&via_b), "{:?}", b.tunnels());
    assert!(
        !a.tunnels().iter().any(|t| t != &via_a),
        "{:?}",
        a.tunnels()
    );
    assert!(
        !b.tunnels()
            .iter()
            .any(|t| t.contains(&direct) || t.contains(&via_a)),
        "{:?}",
        b.tunnels()
    );

    let big = visit(&mut cdp, &page, &format!("http://{via_b}/big")).await;
    assert_eq!(big.map(|t| t.len()), Ok(BIG));
    let project = s["projectId"].as_str().unwrap().to_owned();
    server.release(&id).await;
    let bytes = server.get(&id).await["proxyBytes"].as_u64().unwrap();
    // The page, the two small ones and the requests (headers): a little more than BIG.
    assert!(
        (BIG as u64..BIG as u64 + 32 * 1024).contains(&bytes),
        "proxyBytes {bytes} for a {BIG}-byte page"
    );
    let usage = server
        .get_json(&format!("/v1/projects/{project}/usage"))
        .await;
    assert_eq!(usage["proxyBytes"].as_u64(), Some(bytes), "{usage}");

    // Credentials: sealed in the store, absent from every answer and log.
    let shown = format!(
        "{}{}{}",
        server.get(&id).await,
        Value::Array(session_logs(&server, &id).await),
        server.get_json("/v1/sessions").await
    );
    let mut db = Vec::new();
    for file in ["browserd.db", "browserd.db-wal"] {
        db.extend(std::fs::read(server.data_dir.path().join(file)).unwrap_or_default());
    }
    assert!(
        memchr::memmem::find(&db, b.server().as_bytes()).is_some(),
        "the database files hold sessions"
    );
    for secret in ["wonderland-a7", "builder-b9"] {
        assert!(!shown.contains(secret), "{secret} shown");
        assert!(
            memchr::memmem::find(&db, secret.as_bytes()).is_none(),
            "{secret} stored"
        );
    }
}

/// Wrong credentials and an upstream that is down: the load fails in the client, and the
/// session log names the proxy (never its password) and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_fail_the_load_and_are_named_in_the_session_log() {
    let a = Tinyproxy::start("alice", "wonderland-a7").await;
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let port = site("127.0.0.1:0", Arc::clone(&hosts)).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    let s = server
        .create(json!({"keepAlive": true, "proxies": [
            {"type": "external", "server": a.server(), "username": "alice", "password": "not-the-password", "domainPattern": "localhost"},
            {"type": "external", "server": dead},
        ]}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    for host in ["localhost", "127.0.0.1"] {
        let seen = visit(&mut cdp, &page, &format!("http://{host}:{port}/")).await;
        assert!(seen.is_err(), "{host} loaded: {seen:?}");
    }
    assert!(hosts.lock().unwrap().is_empty(), "the site was reached");
    let named = eventually(|| async {
        let found: Vec<Value> = session_logs(&server, &id)
            .await
            .into_iter()
            .filter(|e| e["method"] == "browserd.proxyFailed")
            .collect();
        let named = |proxy: &str, reason: &str| {
            found.iter().any(|e| {
                let said = &e["request"]["params"];
                said["proxy"] == proxy && said["reason"].as_str().unwrap_or("").contains(reason)
            })
        };
        (named(
            &format!("http://alice@127.0.0.1:{}", a.port),
            "refused the credentials",
        ) && named(&dead, "connection refused"))
        .then_some(())
    })
    .await;
    let logs = Value::Array(session_logs(&server, &id).await);
    assert!(named.is_some(), "both failures named: {logs}");
    assert!(!logs.to_string().contains("not-the-password"));
    server.release(&id).await;
}

/// `proxies: true` and `type: "browserbase"` take the operator's pool: a geolocation picks
/// the upstream tagged with it; one the pool does not serve is a 400 that says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_pool_serves_proxies_true_and_picks_upstreams_by_geolocation() {
    let (ny, de) = (
        Tinyproxy::start("nyuser", "ny-pass-1").await,
        Tinyproxy::start("deuser", "de-pass-2").await,
    );
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let port = site("127.0.0.1:0", Arc::clone(&hosts)).await;
    let pool = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pool.path(),
        format!(
            "[[proxy]]\nname = \"us-ny\"\nserver = \"{}\"\nusername = \"nyuser\"\npassword = \"ny-pass-1\"\ncountry = \"US\"\nstate = \"NY\"\ncity = \"New York\"\nremote_dns = true\n\n\
             [[proxy]]\nname = \"de\"\nserver = \"{}\"\nusername = \"deuser\"\npassword = \"de-pass-2\"\ncountry = \"DE\"\nremote_dns = true\n",
            ny.server(),
            de.server()
        ),
    )
    .unwrap();
    // The site is on this machine: pages may reach it (through the pool too, where the
    // policy decides on the destination before the tunnel; tests/egress.rs refuses).
    let server = TestServer::start_with(Options {
        proxy_pool: Some(pool.path().to_owned()),
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    // Each session visits a host of its own, so each upstream's log tells whose load it
    // carried (Chromium's own background requests go through them too): the entries say
    // `remote_dns = true`, so the proxies are asked for names (the default asks for the
    // address browserd judged; tests/egress.rs).
    let (de_host, ny_host) = (format!("localhost:{port}"), format!("127.0.0.1:{port}"));
    for (proxies, host) in [
        (
            json!([{"type": "browserbase", "geolocation": {"country": "de"}}]),
            &de_host,
        ),
        (
            json!([{"type": "browserbase", "geolocation": {"country": "US", "state": "NY", "city": "new york"}}]),
            &ny_host,
        ),
    ] {
        let s = server.create(json!({ "proxies": proxies })).await;
        let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
        let page = cdp.page_session().await;
        assert_eq!(
            visit(&mut cdp, &page, &format!("http://{host}/")).await,
            Ok(format!("hello {host}"))
        );
        server.release(s["id"].as_str().unwrap()).await;
    }
    let (de_saw, ny_saw) = (de.tunnels(), ny.tunnels());
    assert!(
        de_saw.contains(&de_host) && !de_saw.contains(&ny_host),
        "{de_saw:?}"
    );
    assert!(
        ny_saw.contains(&ny_host) && !ny_saw.contains(&de_host),
        "{ny_saw:?}"
    );
    let s = server.create(json!({ "proxies": true })).await;
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;
    let host = format!("localhost:{port}");
    assert_eq!(
        visit(&mut cdp, &page, &format!("http://{host}/any")).await,
        Ok(format!("hello {host}"))
    );
    server.release(s["id"].as_str().unwrap()).await;

    let resp = server
        .req(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"proxies": [{"type": "browserbase", "geolocation": {"country": "FR", "city": "Paris"}}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(
        status,
        &body,
        400,
        "no proxy in this server's pool serves Paris, FR",
    );
}

/// blockAds: on a page with a first-party image and one from ad.doubleclick.net, the
/// first-party image loads and the ad host is refused at the egress (named in the session
/// log); a session without blockAds asks for the ad host (nothing refused).
#[tokio::test(flavor = "multi_thread")]
async fn block_ads_refuses_a_listed_ad_host_and_loads_first_party_images() {
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let port = site("127.0.0.1:0", Arc::clone(&hosts)).await;
    let server = TestServer::start_with(Options {
        allow_local_egress: true,
        ..Options::default()
    })
    .await;
    for block in [true, false] {
        let s = server
            .create(json!({"keepAlive": true, "browserSettings": {"blockAds": block}}))
            .await;
        let id = s["id"].as_str().unwrap().to_owned();
        let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
        let page = cdp.page_session().await;
        visit(&mut cdp, &page, &format!("http://127.0.0.1:{port}/ads"))
            .await
            .unwrap();
        let widths = cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": "[own.naturalWidth, ad.naturalWidth]", "returnByValue": true}),
                Some(&page),
            )
            .await;
        assert_eq!(
            widths["result"]["result"]["value"],
            json!([1, 0]),
            "blockAds {block}"
        );
        let refused = |logs: &[Value]| {
            logs.iter().any(|e| {
                e["method"] == "browserd.egressRefused"
                    && e["request"]["params"]["host"] == "ad.doubleclick.net"
                    && e["request"]["params"]["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("blockAds")
            })
        };
        if block {
            let named =
                eventually(|| async { refused(&session_logs(&server, &id).await).then_some(()) })
                    .await;
            assert!(named.is_some(), "the ad host is named in the session log");
        } else {
            server.release(&id).await;
            assert!(
                !refused(&session_logs(&server, &id).await),
                "refused without blockAds"
            );
        }
        server.release(&id).await;
    }
}
