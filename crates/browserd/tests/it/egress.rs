//! The egress policy end to end, with no packet able to leave the machine: the browserd
//! under test runs in a network namespace this test makes (its only way out is a veth to a
//! second namespace the test also makes), and every "private", "metadata" or "CGNAT"
//! address a page tries is an address of that second namespace, where the test's own HTTP
//! server answers and records who reached it. So a broken policy shows as a reached server,
//! never as traffic to a real network.
//!
//! ```text
//!   host (the test)            ns A (browserd, its browsers' sandboxes)      ns B (targets)
//!   127.0.0.1:X ── forwarder ─▶ 127.0.0.1:3000 API    va 10.213.0.1 ─── vb 10.213.0.2
//!                                                     default route ─▶   169.254.169.254
//!                                                                        100.100.100.200
//!                                                                        192.168.77.1
//!                                                                        fd00:ec2::254
//! ```

use crate::common;

use common::{Cdp, eventually, patience, visit};
use serde_json::{Value, json};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_browserd");
const KEY: &str = "bd_egress_test_key";
/// browserd's API port and its metrics port, inside ns A.
const API_PORT: u16 = 3000;
const METRICS_PORT: u16 = 9464;
/// The operator's pool proxy, a tinyproxy inside ns A.
const POOL_PROXY_PORT: u16 = 8888;

/// A process that holds a network (and mount) namespace open; killed on drop.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new(with_mounts: bool) -> Self {
        let mut unshare = Command::new("unshare");
        unshare.arg("--net");
        if with_mounts {
            unshare.args(["--mount", "--propagation", "private"]);
        }
        let holder = unshare
            .args(["sleep", "3600"])
            .spawn()
            .expect("unshare (util-linux) runs");
        let ns = Self { holder };
        // The holder has unshared once its namespace differs from ours.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = std::time::Instant::now() + patience();
        while std::fs::read_link(format!("/proc/{}/ns/net", ns.pid())).ok() == Some(own.clone()) {
            assert!(std::time::Instant::now() < deadline, "unshare never did");
            std::thread::yield_now();
        }
        ns
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Runs `script` with sh inside this namespace; panics with its output if it fails.
    fn run(&self, script: &str) {
        let out = self
            .enter()
            .args(["sh", "-ec", script])
            .output()
            .expect("nsenter runs");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that runs inside this namespace (network and mounts).
    fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "--net", "--mount", "--"]);
        c
    }

    fn fd(&self) -> Arc<OwnedFd> {
        let file = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        Arc::new(file.into())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The test's world: ns A with browserd, ns B with the targets' HTTP server.
struct World {
    a: Namespace,
    _b: Namespace,
    /// The local address of every connection that reached ns B's server.
    reached: Arc<Mutex<Vec<String>>>,
    browserd: Child,
    tinyproxy: Child,
    data_dir: tempfile::TempDir,
    tinyproxy_log: std::path::PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Drop for World {
    fn drop(&mut self) {
        for child in [&mut self.browserd, &mut self.tinyproxy] {
            let _ = child.kill();
            let _ = child.wait();
        }
        browserd::browser::procs::kill_by_cmdline(self.data_dir.path());
    }
}

async fn world() -> World {
    let a = Namespace::new(true);
    let b = Namespace::new(false);
    let veth = format!("e{}", a.pid());
    a.run(&format!(
        "ip link set lo up
         ip link add {veth}a type veth peer name {veth}b netns {b}
         ip link set {veth}a up
         ip addr add 10.213.0.1/24 dev {veth}a
         ip -6 addr add fd13::1/64 dev {veth}a nodad
         ip route add default via 10.213.0.2
         ip -6 route add default via fd13::2",
        b = b.pid()
    ));
    b.run(&format!(
        "ip link set lo up
         ip link set {veth}b up
         ip addr add 10.213.0.2/24 dev {veth}b
         for a in 169.254.169.254 100.100.100.200 192.168.77.1; do ip addr add $a/32 dev {veth}b; done
         ip -6 addr add fd13::2/64 dev {veth}b nodad
         ip -6 addr add fd00:ec2::254/128 dev {veth}b nodad"
    ));
    // Names for the resolver browserd uses, in ns A's own mount namespace only.
    let data_dir = tempfile::tempdir().unwrap();
    let hosts = data_dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n169.254.169.254 metadata.test\n10.213.0.2 intranet.test\n192.168.77.1 allowed.test\n",
    )
    .unwrap();
    a.run(&format!("mount --bind {} /etc/hosts", hosts.display()));

    // ns B's server: every address of ns B, port 80, IPv4 and IPv6.
    let reached = Arc::new(Mutex::new(Vec::new()));
    let listener = browserd::netns::listen(b.fd(), "[::]:80".parse().unwrap())
        .await
        .expect("a server in ns B");
    tokio::spawn({
        let reached = Arc::clone(&reached);
        async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let local = conn.local_addr().unwrap().ip().to_canonical().to_string();
                reached.lock().unwrap().push(local.clone());
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = conn.read(&mut head).await;
                    let body = format!("reached {local}");
                    let _ = conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        }
    });

    // The operator's pool proxy, in ns A beside browserd.
    let tinyproxy_log = data_dir.path().join("tinyproxy.log");
    let conf = data_dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {POOL_PROXY_PORT}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Connect\nLogFile \"{}\"\n",
            tinyproxy_log.display()
        ),
    )
    .unwrap();
    let pool = data_dir.path().join("pool.toml");
    std::fs::write(
        &pool,
        format!("[[proxy]]\nname = \"local\"\nserver = \"http://127.0.0.1:{POOL_PROXY_PORT}\"\n"),
    )
    .unwrap();
    let tinyproxy = a
        .enter()
        .arg("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (the test command installs it)");

    let browserd = a
        .enter()
        .arg(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{API_PORT}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{METRICS_PORT}")])
        .args(["--api-key", KEY, "--min-timeout", "1", "--warm-pool", "0"])
        .args(["--egress-allow", "192.168.77.0/24", "--sandbox", "on"])
        .arg("--proxy-pool")
        .arg(&pool)
        .arg("--data-dir")
        .arg(data_dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // The test reaches browserd's API through a forwarder into ns A (the one direction
    // there is: nothing in ns A can reach the host).
    let forwarder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", forwarder.local_addr().unwrap());
    let ns_a = a.fd();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = forwarder.accept().await {
            let ns_a = Arc::clone(&ns_a);
            tokio::spawn(async move {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], API_PORT));
                if let Ok(mut server) = browserd::netns::connect_in(ns_a, addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let world = World {
        a,
        _b: b,
        reached,
        browserd,
        tinyproxy,
        data_dir,
        tinyproxy_log,
        base,
        http: reqwest::Client::new(),
    };
    let http = world.http.clone();
    let health = format!("{}/healthz", world.base);
    eventually(|| async { http.get(&health).send().await.ok().map(drop) })
        .await
        .expect("browserd answers in ns A");
    world
}

impl World {
    async fn create(&self, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .header("x-bb-api-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "create {body}");
        resp.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-bb-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.text().await.unwrap()
    }

    /// The session log's `browserd.egressRefused` entries' params.
    async fn refusals(&self, id: &str) -> Vec<Value> {
        let logs: Value =
            serde_json::from_str(&self.get(&format!("/v1/sessions/{id}/logs")).await).unwrap();
        logs.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "browserd.egressRefused")
            .map(|e| e["request"]["params"].clone())
            .collect()
    }

    fn reached(&self) -> Vec<String> {
        self.reached.lock().unwrap().clone()
    }

    /// The `host:port` of every CONNECT the pool proxy was asked for.
    fn tunnels(&self) -> Vec<String> {
        common::tunnels_in(&self.tinyproxy_log)
    }
}

/// By default pages reach no private, link-local (metadata), CGNAT, ULA or local address, by
/// address or by a name that resolves to one, directly or through the operator's pool
/// proxy; the operator's --egress-allow opens a network; each refusal is in the session's
/// log with the rule, and counted.
#[tokio::test(flavor = "multi_thread")]
async fn pages_reach_no_private_or_metadata_address_unless_the_operator_allows_it() {
    let world = world().await;
    assert!(
        world.a.pid() > 0 && world.reached().is_empty(),
        "nothing reached ns B yet"
    );

    let s = world.create(json!({"keepAlive": true})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut cdp = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
    let page = cdp.page_session().await;

    // Refused, with the rule the session log names.
    let closed = [
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            "link_local",
        ),
        (
            "http://metadata.test/computeMetadata/v1/",
            "169.254.169.254",
            "link_local",
        ),
        ("http://10.213.0.2/", "10.213.0.2", "private"),
        ("http://intranet.test/", "10.213.0.2", "private"),
        (
            "http://100.100.100.200/latest/meta-data/",
            "100.100.100.200",
            "cgnat",
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/",
            "fd00:ec2::254",
            "private",
        ),
        (
            "http://[::ffff:a9fe:a9fe]/",
            "169.254.169.254",
            "link_local",
        ),
        ("http://127.0.0.1:8080/", "127.0.0.1", "this_machine"),
        ("http://10.213.0.1:8080/", "10.213.0.1", "this_machine"),
        (
            &format!("http://localhost:{METRICS_PORT}/metrics"),
            "127.0.0.1",
            "own_port",
        ),
    ];
    for (url, address, rule) in &closed {
        let seen = visit(&mut cdp, &page, url).await;
        assert!(
            seen.as_ref()
                .is_err_and(|e| e.contains("ERR_SOCKS_CONNECTION_FAILED")),
            "{url}: {seen:?}"
        );
        let logged = eventually(|| async {
            world
                .refusals(&id)
                .await
                .into_iter()
                .find(|r| r["address"] == **address && r["rule"] == **rule)
        })
        .await;
        assert!(
            logged.is_some(),
            "{url}: no {rule} refusal of {address} in {:?}",
            world.refusals(&id).await
        );
    }
    assert!(
        world.reached().is_empty(),
        "ns B reached: {:?}",
        world.reached()
    );

    // browserd's API port is not egress: it is the door to the session's own connectUrl,
    // which a page (not an extension) is refused, and which serves nothing else.
    let door = visit(
        &mut cdp,
        &page,
        &format!("http://127.0.0.1:{API_PORT}/v1/sessions"),
    )
    .await;
    assert!(
        door.as_ref()
            .is_ok_and(|body| body.contains("only that session's own connectUrl")),
        "{door:?}"
    );

    // --egress-allow 192.168.77.0/24 opens that network, by address and by name.
    for url in ["http://192.168.77.1/", "http://allowed.test/"] {
        assert_eq!(
            visit(&mut cdp, &page, url).await,
            Ok("reached 192.168.77.1".to_owned()),
            "{url}"
        );
    }
    assert!(world.reached().iter().all(|a| a == "192.168.77.1"));

    // A proxy the client names on a private address is refused before it is dialled.
    let before = world.reached().len();
    let s2 = world
        .create(json!({"proxies": [{"type": "external", "server": "http://10.213.0.2:80"}]}))
        .await;
    let mut cdp2 = Cdp::connect(s2["connectUrl"].as_str().unwrap()).await;
    let page2 = cdp2.page_session().await;
    let seen = visit(&mut cdp2, &page2, "http://allowed.test/").await;
    assert!(seen.is_err(), "through a private proxy: {seen:?}");
    drop(cdp2);

    // The operator's pool proxy (on this machine, which it may be) carries pages only where
    // the policy lets them go: it is never asked for a closed destination.
    let s3 = world.create(json!({"proxies": true})).await;
    let id3 = s3["id"].as_str().unwrap().to_owned();
    let mut cdp3 = Cdp::connect(s3["connectUrl"].as_str().unwrap()).await;
    let page3 = cdp3.page_session().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.test/",
        "http://127.0.0.1:8080/",
        &format!("http://localhost:{METRICS_PORT}/metrics"),
    ] {
        let seen = visit(&mut cdp3, &page3, url).await;
        assert!(seen.is_err(), "{url} through the pool proxy: {seen:?}");
    }
    assert_eq!(
        visit(&mut cdp3, &page3, "http://allowed.test/").await,
        Ok("reached 192.168.77.1".to_owned()),
        "an allowed destination through the pool proxy"
    );
    // The pool proxy is asked for the address browserd resolved and judged, never the name
    // (which the proxy might resolve otherwise).
    let tunnels = world.tunnels();
    assert!(
        tunnels.iter().any(|t| t == "192.168.77.1:80"),
        "the pool proxy carried the allowed load: {tunnels:?}"
    );
    assert!(
        !tunnels.iter().any(|t| t.starts_with("allowed.test")),
        "{tunnels:?}"
    );
    for closed in ["169.254.169.254", "metadata.test", "127.0.0.1", "localhost"] {
        assert!(
            !tunnels.iter().any(|t| t.starts_with(closed)),
            "the pool proxy was asked for {closed}: {tunnels:?}"
        );
    }
    let refused3 = world.refusals(&id3).await;
    assert!(
        refused3
            .iter()
            .any(|r| r["rule"] == "link_local" && r["reason"].as_str().unwrap().contains("proxy")),
        "{refused3:?}"
    );
    // ns B was reached only at the allowed address (each closed one is an address of ns B
    // too: the private proxy's 10.213.0.2 among them), and the pool proxy's load arrived.
    let reached = world.reached();
    assert!(
        reached.len() > before && reached.iter().all(|a| a == "192.168.77.1"),
        "{reached:?}"
    );

    // Counted by rule.
    let metrics = world.get("/metrics").await;
    for rule in ["link_local", "private", "cgnat", "this_machine", "own_port"] {
        let line = format!("browserd_egress_refusals_total{{rule=\"{rule}\"}}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}
