//! What every store must do, whatever database is behind it: [`check`] runs the whole
//! contract on a fresh, empty [`Store`]. SQLite runs it below; a shared database's store
//! runs the same function.

use super::*;
use crate::model::now;

/// The contract, aggregate by aggregate, on an empty store.
pub(super) async fn check(store: &Store) {
    projects_and_keys(store).await;
    sessions(store).await;
    retention(store).await;
    project_limits(store).await;
    racing_creates(store).await;
    contexts(store).await;
    extensions(store).await;
    certificates(store).await;
    navigation_policies(store).await;
    settings(store).await;
    nodes(store).await;
    blobs(store).await;
}

async fn blobs(store: &Store) {
    let b = &store.blobs;
    assert_eq!(b.get_blob("context", "x").await.unwrap(), None);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    b.put_blob("context", "x", &big).await.unwrap();
    b.put_blob("extension", "x", b"zip").await.unwrap();
    assert_eq!(
        b.get_blob("context", "x").await.unwrap().as_deref(),
        Some(&big[..])
    );
    b.put_blob("context", "x", b"replaced").await.unwrap();
    assert_eq!(
        b.get_blob("context", "x").await.unwrap().as_deref(),
        Some(&b"replaced"[..])
    );
    assert!(b.delete_blob("context", "x").await.unwrap());
    assert!(!b.delete_blob("context", "x").await.unwrap());
    assert_eq!(b.get_blob("context", "x").await.unwrap(), None);
    assert_eq!(
        b.get_blob("extension", "x").await.unwrap().as_deref(),
        Some(&b"zip"[..]),
        "kinds are apart"
    );

    // A shared store's blob lock is the cluster's: a second taker waits for the first.
    if store.is_shared() {
        let held = b.lock_blob("context", "y").await.unwrap();
        let other = Arc::clone(b);
        let waiting = tokio::spawn(async move { other.lock_blob("context", "y").await });
        let short = std::time::Duration::from_millis(300);
        tokio::time::sleep(short).await;
        assert!(!waiting.is_finished(), "the second lock waits");
        drop(held);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("taken once the first is dropped");
        drop(second);
        b.lock_blob("context", "other").await.unwrap();
    }
}

/// Leases: a heartbeat renews its own epoch only; an expired node is declared lost by the
/// sweep, its live sessions end as ERROR and its next heartbeat finds out.
async fn nodes(store: &Store) {
    let n = &store.nodes;
    let long = std::time::Duration::from_secs(60);
    let short = std::time::Duration::from_millis(300);
    let a = n
        .register_node("node-a", "http://127.0.0.2:1", None, 4, long)
        .await
        .unwrap();
    n.register_node("node-b", "http://127.0.0.3:1", Some("http://b"), 2, long)
        .await
        .unwrap();
    assert!(n.heartbeat("node-a", a, 3, false, long).await.unwrap());
    assert!(
        !n.heartbeat("node-a", a + 1, 3, false, long).await.unwrap(),
        "wrong epoch"
    );
    let listed = n.list_nodes().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
    assert!(
        names.contains(&"node-a") && names.contains(&"node-b"),
        "{names:?}"
    );
    let node_a = n.get_node("node-a").await.unwrap().unwrap();
    assert_eq!((node_a.live_sessions, node_a.max_sessions), (3, 4));
    assert_eq!(node_a.state, crate::model::NodeState::Live);
    assert!(node_a.has_room() && !node_a.draining);
    // A draining node is live (its sessions are served) but takes no new session.
    assert!(n.heartbeat("node-a", a, 3, true, long).await.unwrap());
    let node_a = n.get_node("node-a").await.unwrap().unwrap();
    assert!(node_a.draining && !node_a.has_room());
    assert_eq!(node_a.shown_state(), "draining");
    assert!(n.heartbeat("node-a", a, 3, false, long).await.unwrap());
    assert_eq!(
        n.get_node("node-b")
            .await
            .unwrap()
            .unwrap()
            .public_url
            .as_deref(),
        Some("http://b")
    );

    // node-b's lease runs out with a session live on it and one on node-a.
    let project = store.projects.create_project("n", 300, 9, 0).await.unwrap();
    let roomy = ProjectLimits {
        concurrency: 9,
        per_minute: 0,
    };
    let t0 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let on_a = session(&project.id, t0);
    let mut on_b = session(&project.id, t0);
    on_b.node = Some("node-b".into());
    for s in [&on_a, &on_b] {
        store
            .sessions
            .insert_session(s, roomy)
            .await
            .unwrap()
            .unwrap();
    }
    let b = n
        .register_node("node-b", "http://127.0.0.3:1", None, 2, short)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ended = loop {
        let ended = n.sweep("node lost: ", long).await.unwrap();
        if !ended.is_empty() || std::time::Instant::now() > deadline {
            break ended;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ended, [on_b.id], "only the lost node's session");
    let lost = store.sessions.get_session(on_b.id).await.unwrap().unwrap();
    assert_eq!(lost.status, SessionStatus::Error);
    assert_eq!(lost.end_reason.as_deref(), Some("node lost: node-b"));
    assert_eq!(
        store
            .sessions
            .get_session(on_a.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        SessionStatus::Pending
    );
    assert_eq!(
        n.get_node("node-b").await.unwrap().unwrap().state,
        crate::model::NodeState::Lost
    );
    assert!(
        !n.heartbeat("node-b", b, 0, false, long).await.unwrap(),
        "a lost node's heartbeat finds out"
    );
    assert!(
        n.sweep("node lost: ", long).await.unwrap().is_empty(),
        "once"
    );

    // The timeout backstop: a live session long past its expiry, whoever owns it.
    let mut overdue = session(&project.id, t0 - time::Duration::seconds(600));
    overdue.expires_at = t0 - time::Duration::seconds(300);
    store
        .sessions
        .insert_session(&overdue, roomy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.sweep("node lost: ", long).await.unwrap(), [overdue.id]);
    let timed_out = store
        .sessions
        .get_session(overdue.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(timed_out.status, SessionStatus::TimedOut);
    assert_eq!(timed_out.ended_at, Some(overdue.expires_at));

    n.leave_node("node-a", a).await.unwrap();
    assert_eq!(
        n.get_node("node-a").await.unwrap().unwrap().state,
        crate::model::NodeState::Left
    );
}

/// Creates racing for a project's last places through several stores (nodes) sharing one
/// database: exactly as many as the limit get in.
pub(super) async fn racing_creates_across(stores: &[Store]) {
    let project = stores[0]
        .projects
        .create_project("cluster-race", 300, 5, 0)
        .await
        .unwrap();
    let five = ProjectLimits {
        concurrency: 5,
        per_minute: 0,
    };
    let t0 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let tries = (0..20).map(|i| {
        let sessions = Arc::clone(&stores[i % stores.len()].sessions);
        let s = session(&project.id, t0);
        tokio::spawn(async move { sessions.insert_session(&s, five).await.unwrap() })
    });
    let mut admitted = 0;
    for t in tries {
        if t.await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}

async fn projects_and_keys(store: &Store) {
    let p = &store.projects;
    assert!(p.list_projects().await.unwrap().is_empty());
    let a = p.create_project("a", 300, 5, 0).await.unwrap();
    let b = p.create_project("b", 600, 2, 10).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(p.get_project(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(p.get_project("nope").await.unwrap(), None);
    let names: Vec<String> = p
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a", "b"], "oldest first");

    let changed = p.set_default_timeout(&a.id, 900).await.unwrap().unwrap();
    assert_eq!(changed.default_timeout_secs, 900);
    let changed = p.set_creation_rate(&a.id, 7).await.unwrap().unwrap();
    assert_eq!(changed.creations_per_minute, 7);
    assert_eq!(changed.default_timeout_secs, 900, "other fields kept");
    assert_eq!(p.set_default_timeout("nope", 900).await.unwrap(), None);
    assert_eq!(p.set_creation_rate("nope", 1).await.unwrap(), None);

    p.add_api_key(&a.id, "hash-a").await.unwrap();
    p.add_api_key(&a.id, "hash-a").await.unwrap();
    p.add_api_key(&b.id, "hash-b").await.unwrap();
    assert_eq!(p.project_for_key("hash-a").await.unwrap().unwrap().id, a.id);
    assert_eq!(p.project_for_key("hash-b").await.unwrap().unwrap().id, b.id);
    assert_eq!(p.project_for_key("hash-c").await.unwrap(), None);

    let changed = p.set_concurrency(&a.id, 9).await.unwrap().unwrap();
    assert_eq!(changed.concurrency, 9);
    assert_eq!(changed.creations_per_minute, 7, "other fields kept");
    assert_eq!(p.set_concurrency("nope", 1).await.unwrap(), None);

    // Keys are listed by id (a prefix of the hash), oldest first, and revoked by id, never
    // the last one of a project.
    use super::{Revoke, api_key_id};
    let (h1, h2) = (
        crate::secrets::hash_api_key("key one"),
        crate::secrets::hash_api_key("key two"),
    );
    let c = p.create_project("c", 300, 5, 0).await.unwrap();
    p.add_api_key(&c.id, &h1).await.unwrap();
    p.add_api_key(&c.id, &h2).await.unwrap();
    let ids: Vec<String> = p
        .list_api_keys(&c.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&api_key_id(&h1)) && ids.contains(&api_key_id(&h2)));
    assert_eq!(
        p.revoke_api_key(&b.id, &api_key_id(&h1)).await.unwrap(),
        Revoke::NoSuchKey,
        "another project's key"
    );
    assert_eq!(
        p.revoke_api_key(&c.id, &api_key_id(&h1)).await.unwrap(),
        Revoke::Revoked
    );
    assert_eq!(
        p.project_for_key(&h1).await.unwrap(),
        None,
        "revoked at once"
    );
    assert!(
        store
            .settings
            .get_setting(&super::revoked_key_setting(&h1))
            .await
            .unwrap()
            .is_some(),
        "a revoked key is remembered"
    );
    assert_eq!(
        p.revoke_api_key(&c.id, &api_key_id(&h1)).await.unwrap(),
        Revoke::NoSuchKey
    );
    assert_eq!(
        p.revoke_api_key(&c.id, &api_key_id(&h2)).await.unwrap(),
        Revoke::LastKey
    );
    assert_eq!(p.project_for_key(&h2).await.unwrap().unwrap().id, c.id);

    // A tenant's lowering only ever lowers: against a limit lowered meanwhile, nothing.
    let e = p.create_project("e", 300, 10, 0).await.unwrap();
    assert_eq!(
        p.lower_concurrency(&e.id, 4)
            .await
            .unwrap()
            .unwrap()
            .concurrency,
        4
    );
    assert_eq!(
        p.lower_concurrency(&e.id, 4)
            .await
            .unwrap()
            .unwrap()
            .concurrency,
        4
    );
    assert_eq!(p.lower_concurrency(&e.id, 5).await.unwrap(), None);
    assert_eq!(p.get_project(&e.id).await.unwrap().unwrap().concurrency, 4);
    assert_eq!(p.lower_concurrency("nope", 1).await.unwrap(), None);
    // ...and tightening a rate: from none to some, lower, the same; never looser or none.
    let rate = |n| p.tighten_creation_rate(&e.id, n);
    assert_eq!(
        rate(0).await.unwrap().unwrap().creations_per_minute,
        0,
        "none to none"
    );
    assert_eq!(rate(20).await.unwrap().unwrap().creations_per_minute, 20);
    assert_eq!(rate(5).await.unwrap().unwrap().creations_per_minute, 5);
    assert_eq!(rate(5).await.unwrap().unwrap().creations_per_minute, 5);
    assert_eq!(rate(6).await.unwrap(), None);
    assert_eq!(rate(0).await.unwrap(), None);
    assert_eq!(
        p.get_project(&e.id)
            .await
            .unwrap()
            .unwrap()
            .creations_per_minute,
        5
    );

    // Racing revokes of a project's last two keys leave one of them.
    let d = p.create_project("d", 300, 5, 0).await.unwrap();
    p.add_api_key(&d.id, &h1).await.unwrap();
    let h3 = crate::secrets::hash_api_key("key three");
    p.add_api_key(&d.id, &h3).await.unwrap();
    let (id1, id3) = (api_key_id(&h1), api_key_id(&h3));
    let (r1, r3) = tokio::join!(p.revoke_api_key(&d.id, &id1), p.revoke_api_key(&d.id, &id3));
    let mut outcomes = [r1.unwrap(), r3.unwrap()];
    outcomes.sort_by_key(|r| *r as u8);
    assert_eq!(outcomes, [Revoke::Revoked, Revoke::LastKey]);
    assert_eq!(p.list_api_keys(&d.id).await.unwrap().len(), 1);
}

fn session(project_id: &str, created_at: OffsetDateTime) -> Session {
    Session {
        id: Uuid::new_v4(),
        project_id: project_id.to_owned(),
        status: SessionStatus::Pending,
        keep_alive: true,
        timeout_secs: 300,
        region: "us-west-2".into(),
        user_metadata: Some(serde_json::json!({"k": "v"}).as_object().unwrap().clone()),
        browser_settings: None,
        extension_id: None,
        proxies: None,
        proxy_bytes: 0,
        created_at,
        updated_at: created_at,
        started_at: created_at,
        expires_at: created_at + time::Duration::seconds(300),
        ended_at: None,
        end_reason: None,
        browser: None,
        node: Some("node-a".into()),
    }
}

async fn sessions(store: &Store) {
    let s = &store.sessions;
    let project = store.projects.create_project("s", 300, 5, 0).await.unwrap();
    // Whole seconds: what every database keeps exactly.
    let t0 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let first = session(&project.id, t0);
    let second = session(&project.id, t0 + time::Duration::seconds(1));
    let roomy = ProjectLimits {
        concurrency: 10,
        per_minute: 0,
    };
    s.insert_session(&first, roomy).await.unwrap().unwrap();
    s.insert_session(&second, roomy).await.unwrap().unwrap();
    assert_eq!(
        s.get_session(first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(s.get_session(Uuid::new_v4()).await.unwrap(), None);

    let record = BrowserRecord {
        pid: 4242,
        start_ticks: 99,
        dir: "/data/sessions/x".into(),
        cdp_url: "ws://127.0.0.1:10001/devtools/browser/x".into(),
    };
    let started = t0 + time::Duration::seconds(2);
    s.mark_running(
        first.id,
        started,
        started + time::Duration::seconds(300),
        Some(&record),
    )
    .await
    .unwrap();
    let running = s.get_session(first.id).await.unwrap().unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    assert_eq!(running.started_at, started);
    assert_eq!(running.browser.as_ref(), Some(&record));

    let all = SessionQuery::newest(Some(&project.id), 10);
    let listed: Vec<Uuid> = s
        .list_sessions(all)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, [second.id, first.id], "newest first");
    let page = s
        .list_sessions(SessionQuery { limit: 1, ..all })
        .await
        .unwrap();
    assert_eq!(page.len(), 1, "at most the limit");
    let next = s
        .list_sessions(SessionQuery { limit: 1, ..all }.next_page(&page[0]))
        .await
        .unwrap();
    assert_eq!(next.iter().map(|s| s.id).collect::<Vec<_>>(), [first.id]);
    assert!(
        s.list_sessions(all.next_page(&next[0]))
            .await
            .unwrap()
            .is_empty(),
        "nothing after the last"
    );
    let running_only = s
        .list_sessions(SessionQuery {
            status: Some(SessionStatus::Running),
            ..all
        })
        .await
        .unwrap();
    assert_eq!(running_only.len(), 1);
    assert!(
        s.list_sessions(SessionQuery::newest(Some("other"), 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.unended_sessions(Some("node-a")).await.unwrap().len(), 2);
    assert!(
        s.unended_sessions(Some("node-b")).await.unwrap().is_empty(),
        "a node reconciles only its own rows"
    );
    assert_eq!(
        s.unended_sessions(None).await.unwrap().len(),
        2,
        "all of them"
    );

    // The first recorded end wins.
    let ended = t0 + time::Duration::seconds(3);
    assert!(
        s.finish_session(first.id, SessionStatus::TimedOut, ended, "timed out")
            .await
            .unwrap()
    );
    assert!(
        !s.finish_session(first.id, SessionStatus::Completed, ended, "released")
            .await
            .unwrap()
    );
    let done = s.get_session(first.id).await.unwrap().unwrap();
    assert_eq!(done.status, SessionStatus::TimedOut);
    assert_eq!(done.end_reason.as_deref(), Some("timed out"));
    assert_eq!(done.ended_at, Some(ended));
    assert!(
        !s.finish_session(Uuid::new_v4(), SessionStatus::Error, ended, "x")
            .await
            .unwrap(),
        "no such session"
    );
    let unended: Vec<Uuid> = s
        .unended_sessions(Some("node-a"))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(unended, [second.id]);
}

/// Usage counts what sessions ran, in whole minutes rounded up (at least one, none while
/// PENDING), and keeps counting it after the retention sweep deleted their rows.
async fn retention(store: &Store) {
    let s = &store.sessions;
    let project = store
        .projects
        .create_project("r", 300, 50, 0)
        .await
        .unwrap();
    let other = store
        .projects
        .create_project("o", 300, 50, 0)
        .await
        .unwrap();
    let roomy = ProjectLimits {
        concurrency: 50,
        per_minute: 0,
    };
    let t0 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap()
        - time::Duration::days(40);
    let ms = time::Duration::milliseconds;
    // (ran for, ended how long after t0): 5 s → 1 min, 60 s → 1, 60.999 s → 1 (whole
    // seconds), 61 s → 2, 3599.5 s → 60.
    let runs = [ms(5_000), ms(60_000), ms(60_999), ms(61_000), ms(3_599_500)];
    let mut ended = Vec::new();
    for (i, ran) in runs.iter().enumerate() {
        let created = t0 + time::Duration::hours(i as i64);
        let mut row = session(&project.id, created);
        row.started_at = created;
        s.insert_session(&row, roomy).await.unwrap().unwrap();
        s.mark_running(
            row.id,
            created + ms(0),
            created + time::Duration::hours(6),
            None,
        )
        .await
        .unwrap();
        s.finish_session(row.id, SessionStatus::Completed, created + *ran, "done")
            .await
            .unwrap();
        ended.push(row.id);
    }
    // A recent ended session, a live one and a PENDING one stay.
    let recent_start = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap()
        - time::Duration::minutes(10);
    let mut recent = session(&project.id, recent_start);
    recent.user_metadata = serde_json::json!({"n": {"m": "7"}}).as_object().cloned();
    s.insert_session(&recent, roomy).await.unwrap().unwrap();
    s.mark_running(
        recent.id,
        recent_start,
        recent_start + time::Duration::hours(1),
        None,
    )
    .await
    .unwrap();
    s.finish_session(
        recent.id,
        SessionStatus::TimedOut,
        recent_start + ms(150_000),
        "t",
    )
    .await
    .unwrap();
    let live_start = recent_start;
    let mut live = session(&project.id, live_start);
    live.user_metadata = serde_json::json!({"n": {"m": 7}}).as_object().cloned();
    s.insert_session(&live, roomy).await.unwrap().unwrap();
    s.mark_running(
        live.id,
        live_start,
        live_start + time::Duration::hours(1),
        None,
    )
    .await
    .unwrap();
    let pending = session(&project.id, live_start);
    s.insert_session(&pending, roomy).await.unwrap().unwrap();
    let elsewhere = session(&other.id, t0);
    s.insert_session(&elsewhere, roomy).await.unwrap().unwrap();
    s.mark_running(elsewhere.id, t0, t0 + time::Duration::hours(1), None)
        .await
        .unwrap();
    s.finish_session(elsewhere.id, SessionStatus::Completed, t0 + ms(1000), "x")
        .await
        .unwrap();

    // Lists narrowed by user metadata: string values only, at the whole path.
    let nested = ["n".to_owned(), "m".to_owned()];
    let flat = ["k".to_owned()];
    let by = |keys, value| SessionQuery {
        metadata: Some((keys, value)),
        ..SessionQuery::newest(Some(&project.id), 100)
    };
    let (nested, flat) = (&nested[..], &flat[..]);
    let found = s.list_sessions(by(nested, "7")).await.unwrap();
    assert_eq!(
        found.iter().map(|s| s.id).collect::<Vec<_>>(),
        [recent.id],
        "the number 7 is not the string 7"
    );
    assert_eq!(s.list_sessions(by(flat, "v")).await.unwrap().len(), 6);
    assert!(s.list_sessions(by(flat, "w")).await.unwrap().is_empty());
    assert!(
        s.list_sessions(by(&nested[..1], "7"))
            .await
            .unwrap()
            .is_empty()
    );

    // Live for 4 min 30 s at `at`: 5 minutes so far.
    let at = live_start + ms(270_000);
    let expected = 1 + 1 + 1 + 2 + 60 + 3 + 5;
    let before = s.usage(&project.id, at).await.unwrap();
    assert_eq!(before.browser_minutes, expected);

    // Billing moves the ended ones into the totals (once, however often it runs); the
    // usage does not move. Then the deletes, in batches of 2: only the five old ones of
    // this project and the one of the other go, and the usage still does not move.
    let mut billed = 0;
    loop {
        let n = s.bill_ended(3).await.unwrap();
        billed += n;
        if n < 3 {
            break;
        }
    }
    assert_eq!(
        billed, 8,
        "5 old, 1 recent, 1 of the other project, 1 of `sessions`"
    );
    assert_eq!(
        s.bill_ended(3).await.unwrap(),
        0,
        "each session is billed once"
    );
    assert_eq!(s.usage(&project.id, at).await.unwrap(), before);
    let cutoff = now() - time::Duration::days(30);
    let mut purged = 0;
    loop {
        let n = s.purge_ended(cutoff, 2).await.unwrap();
        purged += n;
        if n < 2 {
            break;
        }
    }
    assert_eq!(purged, 6);
    assert_eq!(
        s.purge_ended(cutoff, 2).await.unwrap(),
        0,
        "nothing left to purge"
    );
    for id in &ended {
        assert_eq!(s.get_session(*id).await.unwrap(), None, "old rows deleted");
    }
    for id in [recent.id, live.id, pending.id] {
        assert!(s.get_session(id).await.unwrap().is_some(), "kept");
    }
    assert_eq!(
        s.usage(&project.id, at).await.unwrap(),
        before,
        "usage kept"
    );
    assert_eq!(s.usage(&other.id, at).await.unwrap().browser_minutes, 1);
    // The live session's minutes grow with time, on top of what was archived.
    let later = s
        .usage(&project.id, at + time::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(later.browser_minutes, expected + 10);
    for id in [live.id, pending.id] {
        s.finish_session(id, SessionStatus::Completed, at, "end")
            .await
            .unwrap();
    }
}

async fn project_limits(store: &Store) {
    let s = &store.sessions;
    let project = store.projects.create_project("l", 300, 2, 0).await.unwrap();
    let t0 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let two = ProjectLimits {
        concurrency: 2,
        per_minute: 0,
    };
    let a = session(&project.id, t0);
    s.insert_session(&a, two).await.unwrap().unwrap();
    s.insert_session(&session(&project.id, t0), two)
        .await
        .unwrap()
        .unwrap();
    let third = session(&project.id, t0);
    assert_eq!(
        s.insert_session(&third, two).await.unwrap(),
        Err(Refusal::ProjectFull {
            limit: 2,
            current: 2
        })
    );
    assert_eq!(
        s.get_session(third.id).await.unwrap(),
        None,
        "nothing stored"
    );
    // An ended session frees its place; another project's sessions never count.
    s.finish_session(a.id, SessionStatus::Completed, t0, "done")
        .await
        .unwrap();
    s.insert_session(&third, two).await.unwrap().unwrap();
    let other = store.projects.create_project("m", 300, 2, 0).await.unwrap();
    s.insert_session(&session(&other.id, t0), two)
        .await
        .unwrap()
        .unwrap();

    // Two a minute: created at t, t+20s; at t+30s the next waits until t+60s.
    let rated = store
        .projects
        .create_project("r", 300, 10, 2)
        .await
        .unwrap();
    let rate = ProjectLimits {
        concurrency: 10,
        per_minute: 2,
    };
    let at = |secs: i64| session(&rated.id, t0 + time::Duration::seconds(secs));
    s.insert_session(&at(0), rate).await.unwrap().unwrap();
    s.insert_session(&at(20), rate).await.unwrap().unwrap();
    assert_eq!(
        s.insert_session(&at(30), rate).await.unwrap(),
        Err(Refusal::RateLimited {
            limit: 2,
            retry_after_secs: 30
        })
    );
    s.insert_session(&at(61), rate).await.unwrap().unwrap();
}

/// Creates racing for a project's last places: exactly as many as the limit get in.
async fn racing_creates(store: &Store) {
    racing_creates_across(std::slice::from_ref(store)).await;
}

async fn contexts(store: &Store) {
    let c = &store.contexts;
    let project = store.projects.create_project("c", 300, 5, 0).await.unwrap();
    let named = c
        .create_context(&project.id, Some(" Login "))
        .await
        .unwrap()
        .unwrap();
    assert!(
        c.create_context(&project.id, Some("login"))
            .await
            .unwrap()
            .is_none(),
        "a name is unique per project, trimmed and case-insensitive"
    );
    let other = store.projects.create_project("d", 300, 5, 0).await.unwrap();
    assert!(
        c.create_context(&other.id, Some("login"))
            .await
            .unwrap()
            .is_some()
    );
    let unnamed = c.create_context(&project.id, None).await.unwrap().unwrap();
    assert_ne!(named.id, unnamed.id);
    assert_eq!(
        c.get_context(&named.id).await.unwrap().unwrap().id,
        named.id
    );
    assert!(
        store
            .sessions
            .context_saved(&named.id, now())
            .await
            .unwrap()
    );
    assert!(c.delete_context(&named.id).await.unwrap());
    assert!(!c.delete_context(&named.id).await.unwrap());
    assert_eq!(c.get_context(&named.id).await.unwrap(), None);
    assert!(
        !store
            .sessions
            .context_saved(&named.id, now())
            .await
            .unwrap(),
        "a deleted context's save is dropped"
    );
}

async fn extensions(store: &Store) {
    let e = &store.extensions;
    let project = store.projects.create_project("e", 300, 5, 0).await.unwrap();
    let t = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let extension = Extension {
        id: Uuid::new_v4().to_string(),
        project_id: project.id.clone(),
        file_name: "ext.zip".into(),
        content: Some("ab".repeat(32)),
        created_at: t,
        updated_at: t,
    };
    e.insert_extension(&extension).await.unwrap();
    assert_eq!(
        e.get_extension(&extension.id).await.unwrap().as_ref(),
        Some(&extension)
    );
    // A second project's upload of the same bytes shares the content; each row is its own.
    let other = store
        .projects
        .create_project("e2", 300, 5, 0)
        .await
        .unwrap();
    let same = Extension {
        id: Uuid::new_v4().to_string(),
        project_id: other.id.clone(),
        ..extension.clone()
    };
    e.insert_extension(&same).await.unwrap();
    let content = extension.content.as_deref().unwrap();
    assert!(e.delete_extension(&same.id).await.unwrap());
    assert!(
        e.extension_content_in_use(content).await.unwrap(),
        "the first row holds it"
    );
    assert!(!e.extension_content_in_use(&"cd".repeat(32)).await.unwrap());
    assert!(e.delete_extension(&extension.id).await.unwrap());
    assert!(!e.extension_content_in_use(content).await.unwrap());
    assert!(!e.delete_extension(&extension.id).await.unwrap());
    assert_eq!(e.get_extension(&extension.id).await.unwrap(), None);
}

async fn navigation_policies(store: &Store) {
    use crate::model::{Decision, DomainOverride, NavigationPolicy, PolicyRules};
    let n = &store.navigation_policies;
    let project = store.projects.create_project("n", 300, 5, 0).await.unwrap();
    let other = store
        .projects
        .create_project("n2", 300, 5, 0)
        .await
        .unwrap();
    let t = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let policy = |name: &str, project: &str| NavigationPolicy {
        id: Uuid::new_v4().to_string(),
        project_id: project.to_owned(),
        name: name.to_owned(),
        rules: PolicyRules {
            description: "d".into(),
            enabled: true,
            default_decision: Decision::Block,
            unknown_domain_behavior: Decision::Block,
            allowed_categories: Vec::new(),
            blocked_categories: Vec::new(),
            domain_overrides: vec![DomainOverride {
                domain: "example.com".into(),
                decision: Decision::Allow,
            }],
        },
        created_at: t,
        updated_at: t,
    };
    let (b, a, theirs) = (
        policy("b", &project.id),
        policy("a", &project.id),
        policy("a", &other.id),
    );
    for p in [&b, &a, &theirs] {
        n.insert_policy(p).await.unwrap();
    }
    assert_eq!(n.get_policy(&b.id).await.unwrap().as_ref(), Some(&b));
    let names: Vec<String> = n
        .list_policies(&project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        names,
        vec![a.id.clone(), b.id.clone()],
        "by name, the project's only"
    );
    let mut changed = b.clone();
    changed.name = "c".into();
    changed.rules.default_decision = Decision::Allow;
    changed.updated_at = t + time::Duration::seconds(5);
    assert!(n.update_policy(&changed).await.unwrap());
    assert_eq!(n.get_policy(&b.id).await.unwrap().as_ref(), Some(&changed));
    assert!(n.delete_policy(&b.id).await.unwrap());
    assert!(!n.delete_policy(&b.id).await.unwrap());
    assert!(!n.update_policy(&changed).await.unwrap());
    assert_eq!(n.get_policy(&b.id).await.unwrap(), None);
}

async fn certificates(store: &Store) {
    let c = &store.certificates;
    let (a, b) = (
        store
            .projects
            .create_project("ca", 300, 5, 0)
            .await
            .unwrap(),
        store
            .projects
            .create_project("cb", 300, 5, 0)
            .await
            .unwrap(),
    );
    let t = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    let cert = |project: &str, pem: &str, at: OffsetDateTime| Certificate {
        id: Uuid::new_v4().to_string(),
        project_id: project.to_owned(),
        pem: pem.to_owned(),
        created_at: at,
        updated_at: at,
    };
    let first = cert(
        &a.id,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        t,
    );
    let second = cert(&a.id, "second", t + time::Duration::seconds(1));
    let other = cert(&b.id, "other", t);
    for each in [&second, &first, &other] {
        c.insert_certificate(each).await.unwrap();
    }
    assert_eq!(
        c.get_certificate(&first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    assert_eq!(
        c.list_certificates(&a.id).await.unwrap(),
        vec![first.clone(), second.clone()],
        "a project's own, oldest first"
    );
    assert!(c.delete_certificate(&first.id).await.unwrap());
    assert!(!c.delete_certificate(&first.id).await.unwrap());
    assert_eq!(c.get_certificate(&first.id).await.unwrap(), None);
    assert_eq!(c.list_certificates(&a.id).await.unwrap(), vec![second]);
    assert_eq!(c.list_certificates(&b.id).await.unwrap(), vec![other]);
}

async fn settings(store: &Store) {
    let s = &store.settings;
    assert_eq!(s.get_setting("k").await.unwrap(), None);
    assert_eq!(s.setting_or_insert("k", "first").await.unwrap(), "first");
    assert_eq!(
        s.setting_or_insert("k", "second").await.unwrap(),
        "first",
        "the value in force wins"
    );
    s.set_setting("k", "third").await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("third"));
}

/// A fresh, empty database on the test PostgreSQL (`BROWSERD_TEST_POSTGRES`, which
/// `scripts/test` sets to a server it starts): its URL.
pub(super) async fn fresh_postgres_database() -> String {
    let base = std::env::var("BROWSERD_TEST_POSTGRES").expect(
        "BROWSERD_TEST_POSTGRES is not set: run the suite with scripts/test, which starts a PostgreSQL, or point it at one (postgres://user:pass@host:port/db)",
    );
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{prefix}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite() {
    let url = fresh_postgres_database().await;
    let store = open_shared(&url).await.unwrap();
    check(&store).await;
    // Three nodes' stores, one database.
    let nodes = [
        store.clone(),
        open_shared(&url).await.unwrap(),
        open_shared(&url).await.unwrap(),
    ];
    racing_creates_across(&nodes).await;
    for n in nodes {
        n.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("browserd.db")).await.unwrap();
    check(&store).await;
    store.close().await;
}
