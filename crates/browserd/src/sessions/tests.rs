//! The lifecycle state machine under paused time, with a fake browser and an in-memory store.

use super::*;
use crate::browser::{BrowserInstance, LaunchSpec};
use crate::store::memory::MemoryStore;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::time::Instant;

/// A browser that is only a promise: it "exits" when told to, and counts its shutdowns.
struct FakeLauncher {
    fail: AtomicBool,
    /// What its browsers do when a session takes them.
    setup: Mutex<Setup>,
    launched: AtomicUsize,
    shutdowns: Arc<AtomicUsize>,
    /// One flag per launched browser; set to make it "crash" (a flag, not a notification:
    /// the supervisor re-creates its `exited` future on every loop turn).
    crashes: Mutex<Vec<Arc<watch::Sender<bool>>>>,
    /// The extension each launch was asked to load, in order.
    extensions: Mutex<Vec<Option<std::path::PathBuf>>>,
}

impl FakeLauncher {
    /// Crashes every browser launched so far.
    fn crash_all(&self) {
        for crash in self.crashes.lock().unwrap().iter() {
            crash.send_replace(true);
        }
    }

    fn launched(&self) -> usize {
        self.launched.load(Ordering::SeqCst)
    }
}

/// How a fake browser's `begin_session` goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Works,
    Fails,
    Panics,
}

impl Default for FakeLauncher {
    fn default() -> Self {
        Self {
            fail: AtomicBool::new(false),
            setup: Mutex::new(Setup::Works),
            launched: AtomicUsize::new(0),
            shutdowns: Arc::default(),
            crashes: Mutex::default(),
            extensions: Mutex::default(),
        }
    }
}

struct FakeBrowser {
    setup: Setup,
    shutdowns: Arc<AtomicUsize>,
    crash: Arc<watch::Sender<bool>>,
    stopped: bool,
}

#[async_trait::async_trait]
impl Launcher for FakeLauncher {
    fn dialer(&self) -> crate::netns::Dialer {
        crate::netns::Dialer::host()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn BrowserInstance>, LaunchError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(LaunchError::NotReady(Duration::from_secs(30)));
        }
        self.launched.fetch_add(1, Ordering::SeqCst);
        self.extensions.lock().unwrap().push(spec.extension.clone());
        let crash = Arc::new(watch::channel(false).0);
        self.crashes.lock().unwrap().push(Arc::clone(&crash));
        Ok(Box::new(FakeBrowser {
            setup: *self.setup.lock().unwrap(),
            shutdowns: Arc::clone(&self.shutdowns),
            crash,
            stopped: false,
        }))
    }
}

#[async_trait::async_trait]
impl BrowserInstance for FakeBrowser {
    fn cdp_url(&self) -> &str {
        "ws://127.0.0.1:1/devtools/browser/fake"
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn dir(&self) -> Option<&std::path::Path> {
        None
    }
    fn is_running(&mut self) -> bool {
        !self.stopped && !*self.crash.borrow()
    }
    async fn exited(&mut self) -> String {
        let _ = self.crash.subscribe().wait_for(|crashed| *crashed).await;
        "fake browser crashed".into()
    }
    async fn begin_session(
        &mut self,
        _setup: &crate::browser::SessionSetup,
    ) -> Result<(), crate::cdp::client::CdpError> {
        match self.setup {
            Setup::Works => Ok(()),
            Setup::Fails => Err(crate::cdp::client::CdpError::Connect("fake refused".into())),
            Setup::Panics => panic!("a bug in setting up the browser"),
        }
    }
    async fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.shutdowns.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct Harness {
    manager: Arc<SessionManager>,
    store: Arc<MemoryStore>,
    launcher: Arc<FakeLauncher>,
    _files_dir: tempfile::TempDir,
}

fn harness(max_sessions: usize) -> Harness {
    harness_with_pool(max_sessions, 0)
}

fn harness_with_pool(max_sessions: usize, warm_pool: usize) -> Harness {
    let store = Arc::new(MemoryStore::default());
    let launcher = Arc::new(FakeLauncher::default());
    let (files, files_dir) = test_files();
    let manager = SessionManager::new(
        store.clone(),
        launcher.clone(),
        files,
        Limits {
            warm_pool,
            ..Limits::sessions(max_sessions)
        },
        "node-a".into(),
        Default::default(),
        Default::default(),
    );
    Harness {
        manager,
        store,
        launcher,
        _files_dir: files_dir,
    }
}

fn project(concurrency: u32) -> Project {
    let now = crate::model::now();
    Project {
        id: "proj".into(),
        name: "test".into(),
        owner_id: "o".into(),
        default_timeout_secs: 300,
        concurrency,
        creations_per_minute: 0,
        created_at: now,
        updated_at: now,
    }
}

fn request(keep_alive: bool, timeout_secs: Option<u64>) -> CreateRequest {
    CreateRequest {
        project: project(10),
        keep_alive,
        timeout_secs,
        region: "us-west-2".into(),
        user_metadata: None,
        browser_settings: None,
        extension_id: None,
        proxies: None,
        viewport: Viewport::default(),
        extension_dir: None,
        ca_certificates: Vec::new(),
    }
}

/// A file store in a temporary folder (removed when the returned guard drops).
fn test_files() -> (Arc<crate::files::FileStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let vault =
        crate::files::contexts::ContextVault::new(dir.path().join("contexts"), [3; 32]).unwrap();
    let files =
        crate::files::FileStore::open(dir.path(), vault, Duration::from_secs(60), None).unwrap();
    (Arc::new(files), dir)
}

impl Harness {
    async fn status(&self, id: Uuid) -> SessionStatus {
        self.store.get_session(id).await.unwrap().unwrap().status
    }

    async fn stored(&self, id: Uuid) -> Session {
        self.store.get_session(id).await.unwrap().unwrap()
    }

    fn shutdowns(&self) -> usize {
        self.launcher.shutdowns.load(Ordering::SeqCst)
    }
}

/// Waits for the session's farewell as a client sees it.
async fn farewell_of(lease: &ClientLease) -> Farewell {
    let mut farewell = lease.farewell();
    let f = farewell.wait_for(Option::is_some).await.unwrap().clone();
    f.unwrap()
}

/// Waits for the session's ending as a client sees it.
async fn ending_of(lease: &ClientLease) -> Ending {
    match farewell_of(lease).await {
        Farewell::Ended(ending) => ending,
        other => panic!("the session did not end: {other:?}"),
    }
}

/// Lets the supervisor task process what was sent to it (time is paused, so this is instant).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_session_times_out_at_its_own_timeout() {
    let h = harness(10);
    let started = Instant::now();
    let s = h.manager.create(request(true, Some(90))).await.unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    assert_eq!(s.expires_at - s.started_at, time::Duration::seconds(90));
    let lease = h.manager.attach(s.id).unwrap();

    tokio::time::sleep(Duration::from_secs(89)).await;
    assert_eq!(h.status(s.id).await, SessionStatus::Running);

    let ending = ending_of(&lease).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(90) && elapsed < Duration::from_secs(91),
        "{elapsed:?}"
    );
    assert_eq!(ending.status, SessionStatus::TimedOut);
    assert!(ending.reason.contains("timed out"), "{}", ending.reason);
    settle().await;
    let stored = h.stored(s.id).await;
    assert_eq!(stored.status, SessionStatus::TimedOut);
    assert!(stored.ended_at.is_some());
    assert_eq!(h.shutdowns(), 1);
    assert_eq!(h.manager.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_timeout_the_project_default_applies() {
    let h = harness(10);
    let s = h.manager.create(request(false, None)).await.unwrap();
    assert_eq!(s.timeout_secs, 300);
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert_eq!(h.status(s.id).await, SessionStatus::Running);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.status(s.id).await, SessionStatus::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn without_keep_alive_the_last_disconnect_ends_the_session() {
    let h = harness(10);
    let s = h.manager.create(request(false, Some(600))).await.unwrap();
    let first = h.manager.attach(s.id).unwrap();
    let second = h.manager.attach(s.id).unwrap();
    let watcher = first.farewell();
    drop(first);
    settle().await;
    assert_eq!(
        h.status(s.id).await,
        SessionStatus::Running,
        "one client is still connected"
    );
    drop(second);
    let mut watcher = watcher;
    let Some(Farewell::Ended(ending)) = watcher.wait_for(Option::is_some).await.unwrap().clone()
    else {
        panic!("not an ending")
    };
    assert_eq!(ending.status, SessionStatus::Completed);
    assert!(ending.reason.contains("last client disconnected"));
    settle().await;
    assert_eq!(h.status(s.id).await, SessionStatus::Completed);
    assert_eq!(h.shutdowns(), 1);
    assert!(matches!(
        h.manager.attach(s.id),
        Err(AttachError::NotLive(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_browsers_own_connection_neither_keeps_a_session_nor_takes_a_seat() {
    let h = harness(10);
    let s = h.manager.create(request(false, Some(600))).await.unwrap();
    let outside = h.manager.attach(s.id).unwrap();
    // Stagehand 4's extension, connected from inside the browser: its seats are its own.
    let inside: Vec<_> = (0..MAX_INSIDE_CLIENTS)
        .map(|_| h.manager.attach_from_inside(s.id).unwrap())
        .collect();
    assert!(matches!(
        h.manager.attach_from_inside(s.id),
        Err(AttachError::TooManyClients {
            limit: MAX_INSIDE_CLIENTS,
            ..
        })
    ));
    let another = h.manager.attach(s.id).expect("outside seats are untouched");
    drop(another);
    let mut watcher = outside.farewell();
    drop(outside);
    let Some(Farewell::Ended(ending)) = watcher.wait_for(Option::is_some).await.unwrap().clone()
    else {
        panic!("not an ending")
    };
    assert!(
        ending.reason.contains("last client disconnected"),
        "the inside connections did not keep it: {}",
        ending.reason
    );
    drop(inside);
    settle().await;
    assert_eq!(h.status(s.id).await, SessionStatus::Completed);
    assert_eq!(h.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn with_keep_alive_a_disconnect_keeps_the_session_for_reconnects() {
    let h = harness(10);
    let s = h.manager.create(request(true, Some(600))).await.unwrap();
    drop(h.manager.attach(s.id).unwrap());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.status(s.id).await, SessionStatus::Running);
    assert_eq!(h.shutdowns(), 0);

    // Several clients at once, then a release ends them all.
    let a = h.manager.attach(s.id).unwrap();
    let b = h.manager.attach(s.id).unwrap();
    let released = h.manager.release(s.id).await.unwrap().unwrap();
    assert_eq!(released.status, SessionStatus::Completed);
    assert!(released.ended_at.is_some());
    for lease in [&a, &b] {
        let ending = ending_of(lease).await;
        assert_eq!(ending.status, SessionStatus::Completed);
        assert!(ending.reason.contains("REQUEST_RELEASE"));
    }
    assert_eq!(h.shutdowns(), 1);
    assert_eq!(h.manager.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_session_nobody_connects_to_ends_at_its_timeout() {
    let h = harness(10);
    let s = h.manager.create(request(false, Some(60))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(h.status(s.id).await, SessionStatus::TimedOut);
    assert_eq!(h.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn releasing_an_ended_session_changes_nothing() {
    let h = harness(10);
    let s = h.manager.create(request(true, Some(60))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let before = h.stored(s.id).await;
    assert_eq!(before.status, SessionStatus::TimedOut);
    let after = h.manager.release(s.id).await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(h.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_browser_crash_ends_the_session_as_error() {
    let h = harness(10);
    let s = h.manager.create(request(true, Some(600))).await.unwrap();
    let lease = h.manager.attach(s.id).unwrap();
    h.launcher.crash_all();
    let ending = ending_of(&lease).await;
    assert_eq!(ending.status, SessionStatus::Error);
    assert!(ending.reason.contains("crashed"));
    settle().await;
    assert_eq!(h.status(s.id).await, SessionStatus::Error);
    assert_eq!(h.shutdowns(), 1, "a crashed browser is still cleaned up");
}

#[tokio::test(start_paused = true)]
async fn a_client_browser_close_ends_even_a_keep_alive_session() {
    let h = harness(10);
    let s = h.manager.create(request(true, Some(600))).await.unwrap();
    let lease = h.manager.attach(s.id).unwrap();
    lease.request_end(Ending {
        status: SessionStatus::Completed,
        reason: "a client sent Browser.close".into(),
    });
    assert_eq!(ending_of(&lease).await.status, SessionStatus::Completed);
    settle().await;
    assert_eq!(h.status(s.id).await, SessionStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn the_first_ending_wins() {
    let h = harness(10);
    let s = h.manager.create(request(true, Some(60))).await.unwrap();
    let lease = h.manager.attach(s.id).unwrap();
    // A release and a crash at once: one status, one cleanup.
    h.launcher.crash_all();
    let released = h.manager.release(s.id).await.unwrap().unwrap();
    let ending = ending_of(&lease).await;
    assert_eq!(released.status, ending.status);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.status(s.id).await, ending.status);
    assert_eq!(h.shutdowns(), 1);
}

#[tokio::test(start_paused = true)]
async fn project_and_server_limits_refuse_and_free_slots_at_once() {
    let h = harness(3);
    let mut req = request(true, Some(600));
    req.project = project(2);
    let a = h.manager.create(req.clone()).await.unwrap();
    let _b = h.manager.create(req.clone()).await.unwrap();
    match h.manager.create(req.clone()).await {
        Err(CreateError::ProjectFull {
            limit: 2,
            current: 2,
        }) => {}
        other => panic!("expected ProjectFull, got {other:?}"),
    }
    h.manager.release(a.id).await.unwrap();
    let _c = h
        .manager
        .create(req.clone())
        .await
        .expect("the released slot is free");

    let mut other = request(true, Some(600));
    other.project.id = "other".into();
    let _d = h.manager.create(other.clone()).await.unwrap();
    match h.manager.create(other).await {
        Err(CreateError::ServerFull {
            limit: 3,
            current: 3,
        }) => {}
        other => panic!("expected ServerFull, got {other:?}"),
    }
    assert_eq!(h.launcher.launched.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_launch_is_an_error_session_and_frees_its_slot() {
    let h = harness(1);
    h.launcher.fail.store(true, Ordering::SeqCst);
    let err = h.manager.create(request(false, None)).await.unwrap_err();
    assert!(matches!(err, CreateError::Launch(_)), "{err:?}");
    assert_eq!(h.manager.live_count(), 0);
    let stored = h.store.all_sessions();
    assert_eq!(stored[0].status, SessionStatus::Error);
    assert!(
        stored[0]
            .end_reason
            .as_deref()
            .unwrap_or_default()
            .contains("failed to start")
    );
    h.launcher.fail.store(false, Ordering::SeqCst);
    h.manager.create(request(false, None)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_browser_that_cannot_be_set_up_ends_as_error_and_is_stopped() {
    let h = harness(1);
    *h.launcher.setup.lock().unwrap() = Setup::Fails;
    let err = h.manager.create(request(false, None)).await.unwrap_err();
    assert!(matches!(err, CreateError::Setup(_)), "{err:?}");
    let stored = h.store.all_sessions();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, SessionStatus::Error);
    let reason = stored[0].end_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("could not be set up"), "{reason}");
    assert_eq!(h.shutdowns(), 1, "its browser was stopped");
    assert_eq!(h.manager.live_count(), 0, "its slot is free");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_supervisor_ends_its_session_as_error_and_frees_its_slot() {
    let h = harness(1);
    *h.launcher.setup.lock().unwrap() = Setup::Panics;
    let err = h.manager.create(request(false, None)).await.unwrap_err();
    assert!(matches!(err, CreateError::SupervisorGone), "{err:?}");
    // The panic is caught after the create's answer went away: wait for its ending.
    until(|| h.manager.live_count() == 0).await;
    let stored = h.store.all_sessions();
    assert_eq!(stored[0].status, SessionStatus::Error);
    let reason = stored[0].end_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("internal error"), "{reason}");
    *h.launcher.setup.lock().unwrap() = Setup::Works;
    h.manager.create(request(false, None)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_every_session_and_refuses_new_ones() {
    let h = harness(10);
    let a = h.manager.create(request(true, Some(600))).await.unwrap();
    let b = h.manager.create(request(false, Some(600))).await.unwrap();
    h.manager.shutdown(ShutdownPolicy::EndAll).await;
    for id in [a.id, b.id] {
        let s = h.stored(id).await;
        assert_eq!(s.status, SessionStatus::Completed);
        assert_eq!(s.end_reason.as_deref(), Some("browserd is shutting down"));
    }
    assert_eq!(h.shutdowns(), 2);
    assert!(matches!(
        h.manager.create(request(false, None)).await,
        Err(CreateError::ShuttingDown)
    ));
}

/// Lets background tasks run until `done` holds (time is paused, so this costs nothing).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        settle().await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn the_pool_fills_and_creates_take_warm_browsers() {
    let h = harness_with_pool(10, 2);
    until(|| h.manager.pool().len() == 2).await;
    assert_eq!(h.launcher.launched(), 2);

    let s = h.manager.create(request(true, Some(600))).await.unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    assert_eq!(
        h.stored(s.id).await.status,
        SessionStatus::Running,
        "stored RUNNING at once"
    );
    // The session got a warm browser; the pool then starts one replacement.
    until(|| h.manager.pool().len() == 2).await;
    assert_eq!(h.launcher.launched(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_pool_refills_only_after_a_quiet_spell_without_takes() {
    use crate::browser::pool::REFILL_QUIET;
    let h = harness_with_pool(10, 2);
    until(|| h.manager.pool().len() == 2).await;
    h.manager.create(request(true, Some(600))).await.unwrap();
    // The session that took a browser loads its first page without a launch beside it.
    tokio::time::sleep(REFILL_QUIET / 2).await;
    assert_eq!(h.launcher.launched(), 2, "no refill within the quiet spell");
    // Another take starts the spell again: past the first one, still within the second.
    h.manager.create(request(true, Some(600))).await.unwrap();
    let second = Instant::now();
    tokio::time::sleep(REFILL_QUIET * 3 / 4).await;
    assert_eq!(
        h.launcher.launched(),
        2,
        "no refill within the second spell"
    );
    until(|| h.manager.pool().len() == 2).await;
    assert_eq!(h.launcher.launched(), 4, "both taken browsers replaced");
    assert!(second.elapsed() >= REFILL_QUIET);
}

#[tokio::test(start_paused = true)]
async fn requests_a_warm_browser_cannot_serve_launch_cold() {
    let h = harness_with_pool(10, 1);
    until(|| h.manager.pool().len() == 1).await;
    let mut req = request(false, None);
    req.viewport = Viewport {
        width: 800,
        height: 600,
    };
    h.manager.create(req).await.unwrap();
    assert_eq!(h.launcher.launched(), 2);
    assert_eq!(h.manager.pool().len(), 1, "the warm browser is still there");
}

fn with_extension(dir: &str) -> CreateRequest {
    CreateRequest {
        extension_id: Some("e".into()),
        extension_dir: Some(std::path::PathBuf::from(dir)),
        ..request(false, Some(600))
    }
}

#[tokio::test(start_paused = true)]
async fn the_pool_keeps_a_browser_warm_with_the_extension_last_asked_for() {
    let h = harness_with_pool(10, 1);
    until(|| h.manager.pool().len() == 1).await;
    // Nothing is warm with it yet: a browser of its own.
    h.manager.create(with_extension("/ext/a")).await.unwrap();
    assert_eq!(h.launcher.launched(), 2);
    assert_eq!(h.manager.pool().len(), 1, "the plain warm browser stays");
    // The pool then starts one with it.
    until(|| h.manager.pool().footprint() == 2 && h.launcher.launched() == 3).await;
    let last = h
        .launcher
        .extensions
        .lock()
        .unwrap()
        .last()
        .cloned()
        .flatten();
    assert_eq!(last.as_deref(), Some(std::path::Path::new("/ext/a")));
    // The next create naming it takes that browser, RUNNING at once, and the pool starts
    // another with it.
    let s = h.manager.create(with_extension("/ext/a")).await.unwrap();
    assert_eq!(h.stored(s.id).await.status, SessionStatus::Running);
    assert_eq!(h.launcher.launched(), 3, "no launch for it");
    until(|| h.launcher.launched() == 4 && h.manager.pool().footprint() == 2).await;
    // Another extension becomes the wanted one: the browser with the first one is stopped.
    let stopped = h.shutdowns();
    h.manager.create(with_extension("/ext/b")).await.unwrap();
    until(|| h.shutdowns() == stopped + 1).await;
    assert!(
        h.manager
            .pool()
            .holds_extension(std::path::Path::new("/ext/b"))
    );
    assert!(
        !h.manager
            .pool()
            .holds_extension(std::path::Path::new("/ext/a"))
    );
    until(|| h.manager.pool().footprint() == 2 && h.launcher.launched() == 6).await;
    let last = h
        .launcher
        .extensions
        .lock()
        .unwrap()
        .last()
        .cloned()
        .flatten();
    assert_eq!(last.as_deref(), Some(std::path::Path::new("/ext/b")));
}

#[test]
fn a_browser_warm_with_an_extension_serves_sessions_that_start_like_the_pool() {
    assert!(
        with_extension("/ext/a")
            .fits_warm_browser_with_extension()
            .is_some()
    );
    assert!(!with_extension("/ext/a").fits_warm_browser());
    assert!(
        request(false, None)
            .fits_warm_browser_with_extension()
            .is_none()
    );
    let with_settings = |settings: Value| CreateRequest {
        browser_settings: Some(serde_json::from_value(settings).unwrap()),
        ..with_extension("/ext/a")
    };
    // Nothing left its egress before the session took it, so egress rules hold from the
    // first connection.
    for settings in [
        serde_json::json!({"allowedDomains": ["example.com"]}),
        serde_json::json!({"blockAds": true}),
    ] {
        assert!(
            with_settings(settings.clone())
                .fits_warm_browser_with_extension()
                .is_some(),
            "{settings}"
        );
    }
    // A context's profile, or another window size, is a launch of its own.
    assert!(
        with_settings(serde_json::json!({"context": {"id": "c"}}))
            .fits_warm_browser_with_extension()
            .is_none()
    );
    let sized = CreateRequest {
        viewport: Viewport {
            width: 800,
            height: 600,
        },
        ..with_extension("/ext/a")
    };
    assert!(sized.fits_warm_browser_with_extension().is_none());
}

#[tokio::test(start_paused = true)]
async fn warm_browsers_only_use_free_slots() {
    let h = harness_with_pool(2, 2);
    until(|| h.manager.pool().len() == 2).await;
    let a = h.manager.create(request(true, Some(600))).await.unwrap();
    let _b = h.manager.create(request(true, Some(600))).await.unwrap();
    settle().await;
    assert_eq!(h.manager.pool().len(), 0, "no room for a warm browser");
    assert_eq!(h.launcher.launched(), 2, "both sessions got warm browsers");
    assert!(matches!(
        h.manager.create(request(true, Some(600))).await,
        Err(CreateError::ServerFull {
            limit: 2,
            current: 2
        })
    ));
    h.manager.release(a.id).await.unwrap();
    until(|| h.manager.pool().len() == 1).await;
    assert_eq!(h.launcher.launched(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dead_warm_browser_is_never_handed_out() {
    let h = harness_with_pool(10, 1);
    until(|| h.manager.pool().len() == 1).await;
    h.launcher.crash_all();
    let s = h.manager.create(request(true, Some(600))).await.unwrap();
    settle().await;
    assert_eq!(h.status(s.id).await, SessionStatus::Running);
    assert!(
        h.launcher.launched() >= 2,
        "the session's browser was launched anew"
    );
    assert!(h.shutdowns() >= 1, "the dead warm browser was cleaned up");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_warm_browsers_too() {
    let h = harness_with_pool(10, 2);
    until(|| h.manager.pool().len() == 2).await;
    h.manager.create(request(true, Some(600))).await.unwrap();
    until(|| h.manager.pool().len() == 2).await;
    h.manager.shutdown(ShutdownPolicy::EndAll).await;
    assert_eq!(h.shutdowns(), h.launcher.launched());
    assert_eq!(h.manager.pool().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_keep_alive_sessions_survive_and_the_others_end() {
    let h = harness(10);
    let kept = h.manager.create(request(true, Some(600))).await.unwrap();
    let ended = h.manager.create(request(false, Some(600))).await.unwrap();
    let client = h.manager.attach(kept.id).unwrap();
    h.manager.shutdown(ShutdownPolicy::KeepAliveSurvives).await;

    let Farewell::Detached { reason } = farewell_of(&client).await else {
        panic!("the client hears the session goes on")
    };
    assert!(reason.contains("restarting"), "{reason}");
    assert_eq!(
        h.status(kept.id).await,
        SessionStatus::Running,
        "nothing recorded as ended"
    );
    assert_eq!(h.status(ended.id).await, SessionStatus::Completed);
    assert_eq!(
        h.shutdowns(),
        1,
        "only the session without keepAlive stopped its browser"
    );
    assert_eq!(h.manager.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_session_keeps_its_deadline() {
    let h = harness(10);
    // A session a previous run started 100 s ago with a 160 s timeout: 60 s are left.
    let mut s = h.manager.create(request(true, Some(160))).await.unwrap();
    h.manager.shutdown(ShutdownPolicy::KeepAliveSurvives).await;
    s.expires_at = crate::model::now() + time::Duration::seconds(60);

    let h2 = harness(10);
    h2.store
        .insert_session(
            &s,
            crate::store::ProjectLimits {
                concurrency: 10,
                per_minute: 0,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let browser = h2
        .launcher
        .launch(&LaunchSpec::new(Viewport::default()))
        .await
        .unwrap();
    h2.manager.adopt(s.clone(), browser);
    settle().await;
    let lease = h2
        .manager
        .attach(s.id)
        .expect("an adopted session takes clients");
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(h2.status(s.id).await, SessionStatus::Running);
    let ending = ending_of(&lease).await;
    assert_eq!(ending.status, SessionStatus::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn the_creation_rate_refuses_with_the_wait_and_lets_through_after_it() {
    let h = harness(10);
    let mut req = request(true, Some(600));
    req.project.creations_per_minute = 2;
    h.manager.create(req.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.manager.create(req.clone()).await.unwrap();
    match h.manager.create(req.clone()).await {
        Err(CreateError::RateLimited {
            limit: 2,
            retry_after_secs: 40,
        }) => {}
        other => panic!("expected RateLimited after 40s, got {other:?}"),
    }
    assert_eq!(
        h.launcher.launched(),
        2,
        "a refused create starts no browser"
    );
    assert_eq!(h.manager.live_count(), 2, "and holds no slot");
    tokio::time::sleep(Duration::from_secs(40)).await;
    h.manager
        .create(req)
        .await
        .expect("a minute after the first create, one more fits");
}

#[tokio::test(start_paused = true)]
async fn clients_per_session_are_capped_and_counted_back_down() {
    let store = Arc::new(MemoryStore::default());
    let launcher = Arc::new(FakeLauncher::default());
    let limits = Limits {
        max_clients_per_session: 2,
        ..Limits::sessions(10)
    };
    let (files, _files_dir) = test_files();
    let manager = SessionManager::new(
        store,
        launcher,
        files,
        limits,
        "node-a".into(),
        Default::default(),
        Default::default(),
    );
    let s = manager.create(request(true, Some(600))).await.unwrap();
    let a = manager.attach(s.id).unwrap();
    let _b = manager.attach(s.id).unwrap();
    assert!(matches!(
        manager.attach(s.id),
        Err(AttachError::TooManyClients { limit: 2, .. })
    ));
    drop(a);
    manager
        .attach(s.id)
        .expect("a slot freed when a client left");
}
