//! Several `browserd` processes sharing one real PostgreSQL, each on its own loopback
//! address with real Chromium: any node serves any session; a lost node's sessions end.

use crate::common;

use common::{API_KEY, Cdp, eventually, refused_handshake};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");
/// Every node of a cluster seals contexts under the same key.
const CONTEXT_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One node: a `browserd serve` process, killed (with its browsers) when dropped.
struct Node {
    child: Child,
    name: String,
    /// `http://127.0.0.N:PORT`
    base: String,
    data_dir: tempfile::TempDir,
    /// The API key requests carry (any node takes any key of the shared store).
    key: String,
    launch: Launch,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        browserd::browser::procs::kill_by_cmdline(self.data_dir.path());
    }
}

/// How a node is started (kept for its restart).
#[derive(Clone)]
struct Launch {
    name: String,
    host: u8,
    database: String,
    max_sessions: usize,
    /// `--shutdown-ends-sessions`: false leaves keepAlive browsers for the node's return.
    shutdown_ends_sessions: bool,
    /// `--max-connections-per-address`, when not the default.
    per_address: Option<usize>,
}

impl Node {
    /// Starts node `name` on `127.0.0.<host>` against `database`, room for `max_sessions`.
    fn start(name: &str, host: u8, database: &str, max_sessions: usize) -> Self {
        Self::launch(
            &Launch {
                name: name.to_owned(),
                host,
                database: database.to_owned(),
                max_sessions,
                shutdown_ends_sessions: true,
                per_address: None,
            },
            tempfile::tempdir().unwrap(),
        )
    }

    fn launch(how: &Launch, data_dir: tempfile::TempDir) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.{}:0", how.host)])
            .args(["--node-name", &how.name, "--node-lease", "2"])
            .args(["--min-timeout", "1", "--warm-pool", "0"])
            .args(["--max-sessions", &how.max_sessions.to_string()])
            .args([
                "--shutdown-ends-sessions",
                &how.shutdown_ends_sessions.to_string(),
            ])
            .args(
                how.per_address
                    .map(|n| vec!["--max-connections-per-address".to_owned(), n.to_string()])
                    .unwrap_or_default(),
            )
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("BROWSERD_DATABASE", &how.database)
            .env("BROWSERD_API_KEY", API_KEY)
            .env("BROWSERD_CONTEXT_KEY", CONTEXT_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = common::until_listening(&mut child).base;
        Self {
            child,
            name: how.name.clone(),
            base,
            data_dir,
            key: API_KEY.to_owned(),
            launch: how.clone(),
        }
    }

    fn host_port(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .header("x-bb-api-key", &self.key)
    }

    async fn create(&self, body: Value) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::POST, "/v1/sessions")
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn get(&self, id: &str) -> Value {
        let resp = self
            .req(reqwest::Method::GET, &format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {id} on {}", self.name);
        resp.json().await.unwrap()
    }

    /// The pids of the browsers this node started (their command lines name its data dir).
    fn browsers(&self) -> Vec<u32> {
        let mut pids = browserd::browser::procs::find_by_cmdline(self.data_dir.path());
        pids.retain(|&pid| pid != self.child.id());
        pids
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            sig,
        )
        .unwrap();
    }
}

/// A new project with room for `concurrency` sessions, made with the CLI: its API key.
fn project(database: &str, concurrency: u32) -> String {
    let out = Command::new(BIN)
        .args(["project", "create", "cluster-test"])
        .args(["--concurrency", &concurrency.to_string()])
        .env("BROWSERD_DATABASE", database)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("API key:"))
        .expect("the CLI prints the key")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Three nodes on 127.0.0.2-4, requests carrying a key of a project with room for 10.
async fn three_nodes(max_sessions: [usize; 3]) -> (String, [Node; 3]) {
    let db = common::fresh_postgres_database().await;
    let mut nodes = [
        Node::start("node-a", 2, &db, max_sessions[0]),
        Node::start("node-b", 3, &db, max_sessions[1]),
        Node::start("node-c", 4, &db, max_sessions[2]),
    ];
    let key = project(&db, 10);
    for n in &mut nodes {
        n.key = key.clone();
    }
    (db, nodes)
}

/// `connectUrl` with its host swapped for `node`'s: the same session through another door.
fn through(connect_url: &str, node: &Node) -> String {
    let rest = connect_url.trim_start_matches("ws://");
    let path = &rest[rest.find('/').unwrap()..];
    format!("ws://{}{path}", node.host_port())
}

async fn wait_status(node: &Node, id: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = node.get(id).await;
        if s["status"] == status {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} is {} on {}, not {status}, after {within:?}: {s}",
            s["status"],
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node's last heartbeat (as `GET /v1/nodes` through `via` shows it) is
/// after `after`: each has renewed its lease since then. The caller asks for two leases
/// after the database came back, by when a node that was going to sweep has swept.
async fn every_node_beat_after(via: &Node, after: time::OffsetDateTime) {
    let mut nodes: Value;
    common::wait_until!(
        {
            nodes = match via.req(reqwest::Method::GET, "/v1/nodes").send().await {
                Ok(resp) => resp.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            nodes.as_array().filter(|n| !n.is_empty()).and_then(|n| {
                n.iter()
                    .all(|node| {
                        node["heartbeatAt"].as_str().is_some_and(|at| {
                            time::OffsetDateTime::parse(
                                at,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .is_ok_and(|at| at > after)
                        })
                    })
                    .then_some(())
            })
        },
        "not every node beat after {after}: {nodes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_session() {
    let (_db, [a, b, c]) = three_nodes([2, 2, 2]).await;

    let (status, session) = a.create(json!({"keepAlive": true})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let connect_url = session["connectUrl"].as_str().unwrap();
    assert!(connect_url.contains(a.host_port()), "{connect_url}");

    // Through node B: the bytes go to A's browser.
    let mut cdp = Cdp::connect(&through(connect_url, &b)).await;
    let version = cdp.call("Browser.getVersion", json!({}), None).await;
    assert!(version["result"]["product"].is_string(), "{version}");
    cdp.eval_in_page("document.title = 'set through node-b'")
        .await;
    drop(cdp);

    // keepAlive: reconnect through node C to the same page; C reads the row as RUNNING.
    assert_eq!(c.get(&id).await["status"], "RUNNING");
    let mut cdp = Cdp::connect(&through(connect_url, &c)).await;
    assert_eq!(
        cdp.eval_in_page("document.title").await,
        "set through node-b"
    );
    // Playwright asks /json/version first when given an http:// URL: answered through C.
    let version_url = through(connect_url, &c)
        .replace("ws://", "http://")
        .replace("/?", "/json/version/?");
    let v: Value = reqwest::get(&version_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .contains("signingKey"),
        "{v}"
    );

    // Released through B, by a request that says it was already forwarded but has no
    // cluster credential: B does not take it as forwarded (it would answer for a session it
    // does not run, and release nothing), it routes it: A stops the browser; the client
    // through C is told why.
    let resp = b
        .req(reqwest::Method::POST, &format!("/v1/sessions/{id}"))
        .header("x-browserd-forwarded-by", "node-a")
        .header("x-browserd-cluster-auth", "1800000000.AAAA")
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let released: Value = resp.json().await.unwrap();
    assert_eq!(released["status"], "COMPLETED", "{released}");
    let close = cdp.closed().await.expect("a close frame");
    assert!(close.reason.contains("released"), "{close:?}");
    assert_eq!(a.get(&id).await["status"], "COMPLETED");
    assert!(
        eventually(|| async { a.browsers().is_empty().then_some(()) })
            .await
            .is_some(),
        "node-a's browser stopped"
    );
    let (status, body) = refused_handshake(&through(connect_url, &c)).await;
    assert_eq!(status, 410, "{body}");

    // The raw-API release form (sessionId in the body) through another node, and the
    // session's files and logs read through a node that does not run it.
    let (_, second) = c.create(json!({})).await;
    let second_id = second["id"].as_str().unwrap();
    let logs = a
        .req(
            reqwest::Method::GET,
            &format!("/v1/sessions/{second_id}/logs"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    let resp = a
        .req(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({"sessionId": second_id, "status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(c.get(second_id).await["status"], "COMPLETED");
    assert!(
        eventually(|| async { c.browsers().is_empty().then_some(()) })
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_nodes_and_a_full_node_places_creates_elsewhere() {
    let (db, [a, b, c]) = three_nodes([1, 6, 6]).await;

    // node-a holds one; a second create through it lands on another node (the CLI shows
    // where the sessions are).
    let (s1, first) = a.create(json!({})).await;
    assert_eq!(s1, 201, "{first}");
    let (s2, second) = a.create(json!({})).await;
    assert_eq!(s2, 201, "placed elsewhere: {second}");
    assert!(
        !second["connectUrl"].as_str().unwrap().is_empty(),
        "{second}"
    );
    assert!(!a.browsers().is_empty());
    let nodes = eventually(|| async {
        let out = Command::new(BIN)
            .args(["nodes", "list"])
            .env("BROWSERD_DATABASE", &db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let load = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().nth(2).unwrap().to_owned())
        };
        let (la, lb, lc) = (load("node-a")?, load("node-b")?, load("node-c")?);
        (la == "1/1" && (lb == "1/6") != (lc == "1/6")).then_some(text)
    })
    .await;
    assert!(nodes.is_some(), "one session on node-a, one on b or c");

    // A project whose limit is 5, 20 creates at once through three nodes: exactly 5 run.
    let release = |node: &Node, id: String| {
        node.req(reqwest::Method::POST, &format!("/v1/sessions/{id}"))
            .json(&json!({"status": "REQUEST_RELEASE"}))
            .send()
    };
    for s in [&first, &second] {
        release(&b, s["id"].as_str().unwrap().to_owned())
            .await
            .unwrap();
    }
    let key = project(&db, 5);
    let nodes = [&a, &b, &c];
    let tries = (0..20).map(|i| {
        let url = format!("{}/v1/sessions", nodes[i % 3].base);
        let key = key.clone();
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("x-bb-api-key", key)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        })
    });
    let mut created = Vec::new();
    let mut refused = 0;
    for t in tries {
        match t.await.unwrap() {
            (201, s) => created.push(s),
            (429, body) => {
                assert!(
                    body["message"].as_str().unwrap().contains("concurrent"),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((created.len(), refused), (5, 15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_s_sessions_end_as_error_and_the_others_go_on() {
    let (db, [a, b, mut c]) = three_nodes([2, 2, 2]).await;

    let (_, on_a) = a.create(json!({"keepAlive": true})).await;
    let (_, on_b) = b.create(json!({"keepAlive": true})).await;
    let (_, on_c) = c.create(json!({"keepAlive": true})).await;
    let (a_id, b_id, c_id) = (
        on_a["id"].as_str().unwrap(),
        on_b["id"].as_str().unwrap(),
        on_c["id"].as_str().unwrap(),
    );

    // kill -9 node-c: within 15 s its session is ERROR, saying the node was lost; a client
    // of it connected through node-a is told so in a close frame.
    let mut through_a = Cdp::connect(&through(on_c["connectUrl"].as_str().unwrap(), &a)).await;
    assert!(through_a.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    let killed = Instant::now();
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    wait_status(&a, c_id, "ERROR", Duration::from_secs(15)).await;
    let took = killed.elapsed();
    let close = through_a.closed().await.expect("a close frame from node-a");
    assert_eq!(u16::from(close.code), 1011, "{close:?}");
    assert!(close.reason.contains("node-c was lost"), "{close:?}");
    // The reason is the CLI's to show (the SDKs' session shape has no field for it).
    let listed = Command::new(BIN)
        .args(["sessions", "list", "--status", "ERROR"])
        .env("BROWSERD_DATABASE", &db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(c_id) && l.contains("node node-c")),
        "{text}"
    );
    eprintln!("node-c's session ended as ERROR {took:?} after kill -9");

    // The others go on: node-a's session through node-b still answers.
    let mut cdp = Cdp::connect(&through(on_a["connectUrl"].as_str().unwrap(), &b)).await;
    assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    assert_eq!(b.get(b_id).await["status"], "RUNNING");

    // SIGSTOP node-b past its lease: the cluster ends its session; SIGCONT: node-b finds
    // out and stops that browser instead of serving it on.
    assert!(!b.browsers().is_empty());
    // A client of node-b's session through node-a: node-b stops answering without closing
    // anything, and node-a tells the client once the cluster marks node-b lost.
    let mut stalled = Cdp::connect(&through(on_b["connectUrl"].as_str().unwrap(), &a)).await;
    assert!(stalled.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    b.signal(rustix::process::Signal::STOP);
    wait_status(&a, b_id, "ERROR", Duration::from_secs(15)).await;
    let close = stalled.closed().await.expect("a close frame from node-a");
    assert_eq!(u16::from(close.code), 1011, "{close:?}");
    assert!(close.reason.contains("node-b was lost"), "{close:?}");
    b.signal(rustix::process::Signal::CONT);
    assert!(
        eventually(|| async { b.browsers().is_empty().then_some(()) })
            .await
            .is_some(),
        "node-b stopped the browser of a session the cluster had ended"
    );
    // node-b joins again and takes new sessions.
    let (status, again) = b.create(json!({})).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(a.get(a_id).await["status"], "RUNNING");
    drop(cdp);
}

/// `pg_ctlcluster <version> regress <action>` on the test's PostgreSQL (pg_virtualenv's).
fn database_server(action: &str) {
    let version = std::env::var("PGVERSION")
        .expect("PGVERSION is not set: this test stops and starts the pg_virtualenv cluster scripts/test makes");
    let ok = Command::new("pg_ctlcluster")
        .args([&version, "regress", action])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_ctlcluster {action}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_on_while_the_database_is_down_and_creates_wait_for_it() {
    let (_db, [a, b, _c]) = three_nodes([2, 2, 2]).await;
    let (_, session) = a.create(json!({"keepAlive": true})).await;
    let id = session["id"].as_str().unwrap();
    let connect_url = session["connectUrl"].as_str().unwrap();
    let mut direct = Cdp::connect(connect_url).await;
    let mut hop = Cdp::connect(&through(connect_url, &b)).await;

    database_server("stop");
    // Longer than a lease: nobody may be declared lost for the database's absence.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        for cdp in [&mut direct, &mut hop] {
            assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = b
        .req(reqwest::Method::POST, "/v1/sessions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-should-retry"], "true");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("database"),
        "{body}"
    );

    database_server("start");
    // Creates work again, and the sessions were not marked wrongly meanwhile. What must not
    // happen is a sweep: two leases after the database came back, every node has swept.
    let created = eventually(|| async {
        let (status, s) = b.create(json!({})).await;
        (status == 201).then_some(s)
    })
    .await;
    assert!(
        created.is_some(),
        "creates resume once the database is back"
    );
    let back = time::OffsetDateTime::now_utc();
    every_node_beat_after(&a, back + Duration::from_secs(4)).await;
    assert_eq!(a.get(id).await["status"], "RUNNING");
    assert!(direct.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    assert!(hop.call("Browser.getVersion", json!({}), None).await["result"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_and_extensions_are_usable_from_any_node() {
    let (db, [a, b, c]) = three_nodes([2, 2, 2]).await;

    // A context made through node-a, filled by a session on node-b, saved at its release
    // through node-c, loaded by a session on node-c.
    let ctx: Value = a
        .req(reqwest::Method::POST, "/v1/contexts")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let with_ctx = json!({"browserSettings": {"context": {"id": ctx["id"], "persist": true}},
        "keepAlive": true});
    let (status, first) = b.create(with_ctx.clone()).await;
    assert_eq!(status, 201, "{first}");
    let mut cdp = Cdp::connect(first["connectUrl"].as_str().unwrap()).await;
    let set = cdp
        .call(
            "Storage.setCookies",
            json!({"cookies": [{"name": "who", "value": "node-b", "domain": "example.com",
                "path": "/", "expires": 4102444800i64}]}),
            None,
        )
        .await;
    assert!(set["result"].is_object(), "{set}");
    drop(cdp);
    let released = c
        .req(
            reqwest::Method::POST,
            &format!("/v1/sessions/{}", first["id"].as_str().unwrap()),
        )
        .json(&json!({"status": "REQUEST_RELEASE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let (status, second) = c.create(with_ctx).await;
    assert_eq!(status, 201, "{second}");
    assert!(
        second["connectUrl"]
            .as_str()
            .unwrap()
            .contains(c.host_port())
    );
    let mut cdp = Cdp::connect(second["connectUrl"].as_str().unwrap()).await;
    let cookies = cdp.call("Storage.getCookies", json!({}), None).await;
    let found = cookies["result"]["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "who" && c["value"] == "node-b");
    assert!(
        found,
        "the cookie saved on node-b is back on node-c: {cookies}"
    );
    drop(cdp);

    // An extension uploaded through node-a, loaded by a session on node-b.
    let ext: Value = a
        .req(reqwest::Method::POST, "/v1/extensions")
        .multipart(common::file_form("e.zip", common::extension_zip()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ext_id = ext["id"].as_str().unwrap();
    let (status, with_ext) = b.create(json!({"extensionId": ext_id})).await;
    assert_eq!(status, 201, "{with_ext}");
    use sha2::Digest as _;
    let content: String = sha2::Sha256::digest(common::extension_zip())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        b.data_dir
            .path()
            .join(format!("extensions/{content}/manifest.json"))
            .is_file(),
        "unpacked on node-b from the shared store"
    );

    // A node with another context key is refused: it would seal contexts no other node opens.
    let data_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.5:0", "--node-name", "node-d"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("BROWSERD_DATABASE", &db)
        .env("BROWSERD_CONTEXT_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--context-key differs"), "{stderr}");

    // Nor may a second process take a live node's name: each would end the other's sessions.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.6:0", "--node-name", "node-a"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("BROWSERD_DATABASE", &db)
        .env("BROWSERD_CONTEXT_KEY", CONTEXT_KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node node-a is already live"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_takes_back_its_keepalive_sessions_and_the_cluster_times_out_the_rest() {
    let (db, [_a, b, _c]) = three_nodes([2, 2, 2]).await;
    let mut a = Node::launch(
        &Launch {
            name: "node-d".into(),
            host: 5,
            database: db.clone(),
            max_sessions: 2,
            shutdown_ends_sessions: false,
            per_address: None,
        },
        tempfile::tempdir().unwrap(),
    );
    a.key = b.key.clone();
    let (_, long) = a.create(json!({"keepAlive": true, "timeout": 600})).await;
    let (_, short) = a.create(json!({"keepAlive": true, "timeout": 3})).await;
    let (long_id, short_id) = (long["id"].as_str().unwrap(), short["id"].as_str().unwrap());
    let long_url = long["connectUrl"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(&long_url).await;
    cdp.eval_in_page("document.title = 'kept by node-d'").await;
    drop(cdp);

    // node-d stops (SIGTERM, keepAlive browsers left running for its return) ...
    a.signal(rustix::process::Signal::TERM);
    assert!(a.child.wait().unwrap().success());
    let (status, body) = refused_handshake(&through(&long_url, &b)).await;
    assert_eq!(status, 503, "its node is down: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("node-d"),
        "{body}"
    );
    // ... and the cluster times out the session whose timeout passed meanwhile.
    wait_status(&b, short_id, "TIMED_OUT", Duration::from_secs(20)).await;
    assert_eq!(b.get(long_id).await["status"], "RUNNING");

    // node-d is back: it takes back the other keepAlive session, same page, and stops the
    // browser of the one the cluster ended.
    let a = Node::launch(
        &a.launch.clone(),
        std::mem::replace(&mut a.data_dir, tempfile::tempdir().unwrap()),
    );
    let mut cdp = Cdp::connect(&through(&long_url, &b)).await;
    assert_eq!(cdp.eval_in_page("document.title").await, "kept by node-d");
    assert_eq!(b.get(short_id).await["status"], "TIMED_OUT");
    drop(cdp);
    let sessions_dir = a.data_dir.path().join("sessions");
    let folders: Vec<_> = std::fs::read_dir(&sessions_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        folders.len(),
        1,
        "only the kept session's browser: {folders:?}"
    );
    let kept = browserd::browser::procs::find_by_cmdline(&folders[0]).len();
    assert_eq!(
        a.browsers().len(),
        kept,
        "no process of the timed-out session's browser"
    );
}

/// A node that runs no browsers (--max-sessions 0, the one docs/cluster.md puts behind a
/// load balancer) is ready while its store answers: it places creates on the other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_runs_no_browsers_is_ready_and_places_creates_elsewhere() {
    let db = common::fresh_postgres_database().await;
    let mut gateway = Node::start("gateway", 5, &db, 0);
    let mut worker = Node::start("worker", 6, &db, 2);
    let key = project(&db, 10);
    gateway.key = key.clone();
    worker.key = key;
    for node in [&gateway, &worker] {
        // The worker is ready once a browser has started there (its pool or its probe);
        // the gateway at once.
        let readyz = || async {
            let ready = reqwest::get(format!("{}/readyz", node.base)).await.unwrap();
            let status = ready.status();
            let body: Value = ready.json().await.unwrap();
            (status, body)
        };
        let ready = eventually(|| async {
            let (status, body) = readyz().await;
            (status == 200).then_some(body)
        })
        .await;
        let body = match ready {
            Some(body) => body,
            None => panic!("{} never ready: {:?}", node.name, readyz().await),
        };
        let gateway_said = body["checks"]["sessions"]["gateway"] == true;
        assert_eq!(gateway_said, node.name == "gateway", "{body}");
    }
    let (status, created) = gateway.create(json!({})).await;
    assert_eq!(status, 201, "{created}");
    let on_worker = worker.get(created["id"].as_str().unwrap()).await;
    assert_eq!(on_worker["status"], "RUNNING", "{on_worker}");
}

/// A raw upload to session `id` through `node`, from `from`, that sends its headers and the
/// start of its body, then nothing: it holds its connection (and the forwarded one behind it).
async fn slow_upload(from: [u8; 4], node: &Node, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let mut tcp = socket
        .connect(node.host_port().parse().unwrap())
        .await
        .unwrap();
    let head = format!(
        "POST /v1/sessions/{id}/uploads HTTP/1.1\r\nhost: {}\r\nx-bb-api-key: {}\r\n\
         content-type: multipart/form-data; boundary=b\r\ncontent-length: 1000000\r\n\r\n--b\r\n",
        node.host_port(),
        node.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// A client of `node` from address `from`.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_flood_through_a_node_leaves_others_forwarded_traffic_working() {
    // Every node takes at most 8 connections from one address.
    let db = common::fresh_postgres_database().await;
    let start = |name: &str, host| {
        Node::launch(
            &Launch {
                name: name.into(),
                host,
                database: db.clone(),
                max_sessions: 2,
                shutdown_ends_sessions: true,
                per_address: Some(8),
            },
            tempfile::tempdir().unwrap(),
        )
    };
    let (mut a, mut b) = (start("node-a", 2), start("node-b", 3));
    let key = project(&db, 10);
    a.key = key.clone();
    b.key = key;
    let (_, flooded) = a.create(json!({"keepAlive": true})).await;
    let (_, other) = a.create(json!({"keepAlive": true})).await;
    let flooded = flooded["id"].as_str().unwrap().to_owned();

    // One tenant's client (127.0.0.50) holds eight slow uploads to its session on node-a
    // through node-b: node-b forwards each on a connection of its own to node-a.
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(slow_upload([127, 0, 0, 50], &b, &flooded).await);
    }
    // node-a holds them all (and this scrape): they are not refused as one address's.
    let metrics = client_from([127, 0, 0, 70]);
    let held = eventually(|| async {
        let text = metrics
            .get(format!("{}/metrics", a.base))
            .header("x-bb-api-key", API_KEY)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let open: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("browserd_http_connections "))?
            .parse()
            .ok()?;
        (open >= 9.0).then_some(open)
    });
    assert!(
        held.await.is_some(),
        "node-a holds the eight forwarded uploads"
    );

    // The entry node applies the per-client bound: a ninth from the same address is closed.
    let mut ninth = slow_upload([127, 0, 0, 50], &b, &flooded).await;
    let mut answer = Vec::new();
    use tokio::io::AsyncReadExt as _;
    let read = tokio::time::timeout(Duration::from_secs(10), ninth.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{read:?} {answer:?}"
    );

    // Another client (127.0.0.60), routed node-b -> node-a like the flood, is served:
    // HTTP and CDP alike.
    let other_id = other["id"].as_str().unwrap();
    let debug = client_from([127, 0, 0, 60])
        .get(format!("{}/v1/sessions/{other_id}/debug", b.base))
        .header("x-bb-api-key", &b.key)
        .send()
        .await
        .unwrap();
    assert_eq!(debug.status(), 200, "{:?}", debug.text().await);
    let mut cdp = Cdp::connect(&through(other["connectUrl"].as_str().unwrap(), &b)).await;
    assert!(cdp.call("Browser.getVersion", json!({}), None).await["result"].is_object());
    drop(flood);
}
