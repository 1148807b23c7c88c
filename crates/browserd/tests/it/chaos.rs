//! Chaos: many sessions created, used, cut and released at random, and concurrent creates
//! racing a limit. Afterwards nothing may be left: no Chromium, no folder, no descriptor.

use crate::common;

use common::*;
use serde_json::{Value, json};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A small deterministic generator, so a failing run can be repeated exactly.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn two_hundred_random_lifecycles_leave_nothing_behind() {
    const CYCLES: usize = 200;
    let fds_before = open_fds();
    let server = TestServer::start_with(Options {
        warm_pool: 2,
        max_sessions: 6,
        ..Options::default()
    })
    .await;
    let data_dir = server.data_dir.path().to_owned();
    let mut rng = XorShift(0x5eed_b10c);
    let mut expected: Vec<(String, &'static str)> = Vec::new();

    for _ in 0..CYCLES {
        let keep_alive = rng.pick(2) == 0;
        let s = server
            .create(json!({"keepAlive": keep_alive, "timeout": 600}))
            .await;
        let id = s["id"].as_str().unwrap().to_owned();
        let mut client = Cdp::connect(s["connectUrl"].as_str().unwrap()).await;
        if rng.pick(2) == 0 {
            assert_eq!(client.eval_in_page("1 + 1").await, 2);
        }
        match rng.pick(4) {
            // Cut the connection without a close frame (a crashed client).
            0 => drop(client),
            // Close politely.
            1 => {
                let _ = client.ws.close(None).await;
            }
            // Puppeteer's browser.close().
            2 => {
                client.call("Browser.close", json!({}), None).await;
                client.closed().await;
            }
            // Stay connected until the release closes us.
            _ => {
                server.release(&id).await;
                let frame = client.closed().await.expect("a close frame");
                assert!(frame.reason.contains("released"), "{}", frame.reason);
            }
        }
        // Whatever happened, a release settles it (a no-op if it already ended).
        let ended = server.release(&id).await;
        assert_eq!(ended["status"], "COMPLETED", "{ended}");
        expected.push((id, "COMPLETED"));
    }

    // Every final status, as stored.
    for (id, status) in &expected {
        let stored = server
            .state
            .store
            .sessions
            .get_session(id.parse().unwrap())
            .await;
        let s = stored.unwrap().unwrap();
        assert_eq!(s.status.as_str(), *status, "{id}");
        assert!(s.ended_at.is_some());
    }
    let kept_dir = server.stop().await;

    assert!(
        browserd::browser::procs::find_by_cmdline(&data_dir).is_empty(),
        "Chromium processes outlived the server"
    );
    let left: Vec<_> = std::fs::read_dir(data_dir.join("sessions"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "browser folders left: {left:?}");
    drop(kept_dir);
    let fds_after = eventually(|| async {
        let n = open_fds();
        (n <= fds_before).then_some(n)
    })
    .await;
    assert!(
        fds_after.is_some(),
        "descriptors leaked: {} before, {} after",
        fds_before,
        open_fds()
    );
}

#[tokio::test]
async fn twenty_concurrent_creates_against_a_limit_of_five() {
    let server = TestServer::start_with(Options {
        max_sessions: 30,
        ..Options::default()
    })
    .await;
    server.add_project("five", 5, "five-key").await;
    let creates = (0..20).map(|_| {
        server
            .http
            .post(server.url("/v1/sessions"))
            .header("X-BB-API-Key", "five-key")
            .json(&json!({"keepAlive": true}))
            .send()
    });
    let answers = futures_util::future::join_all(creates).await;
    let mut created = 0;
    let mut refused = 0;
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status().as_u16() {
            201 => created += 1,
            429 => {
                assert_eq!(answer.headers()["x-should-retry"], "false");
                let body: Value = answer.json().await.unwrap();
                let message = body["message"].as_str().unwrap();
                assert!(message.contains("limit 5, currently 5"), "{message}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, refused), (5, 15));
    assert_eq!(server.state.sessions.live_count(), 5);
    server.stop().await;
}
