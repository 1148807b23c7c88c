//! The session lifecycle.
//!
//! One [`supervisor`] task owns each live session: its browser, its deadline, its count of
//! connected clients and its keepAlive rule. Everything that can end a session (release,
//! timeout, last disconnect without keepAlive, `Browser.close`, a browser crash, shutdown)
//! reaches that task and leaves through its single ending path, so a session ends once,
//! with one status, and always with its browser stopped and its files removed.
//!
//! [`SessionManager`] is the front door: it enforces limits, starts supervisors, and hands
//! out [`ClientLease`]s to websocket clients.

mod creation;
pub(crate) mod ending;
mod supervisor;
#[cfg(test)]
mod tests;
pub(crate) mod webdriver;

pub(crate) use creation::{AskError, NewSession};

use crate::browser::adblock::AdHosts;
use crate::browser::pool::WarmPool;
use crate::browser::proof::{LaunchProof, Prober, Proving};
use crate::browser::proxy::ProxyPool;
use crate::browser::{BrowserInstance, LaunchError, Launcher, Viewport};
use crate::cdp::client::CdpError;
use crate::cdp::filter::Rules;
use crate::cdp::relay::FrameLog;
pub(crate) use crate::cdp::relay::Seat;
use crate::fault::Failure;
use crate::files::FileStore;
use crate::files::contexts::ContextError;
use crate::inspect::logs::LogTap;
pub(crate) use crate::model::{Ending, Farewell};
use crate::model::{Project, Session, SessionStatus};
use crate::store::{ProjectLimits, Refusal, SessionStore, StoreError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Server-wide limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions this server runs at once, across projects. Warm browsers live in the free
    /// slots: live sessions plus warm browsers never exceed it.
    pub max_sessions: usize,
    /// Browsers kept started ahead of demand (0: none).
    pub warm_pool: usize,
    /// Websocket clients one session may have at once.
    pub max_clients_per_session: usize,
    /// Tabs one session's browser may have open at once.
    pub max_tabs_per_session: usize,
    /// No browser is started while the machine has less memory available (MiB; 0: no floor).
    pub min_free_memory_mib: u64,
    /// Below this much free space in the data dir, no session is created (its files, logs and
    /// recording need room; what is stored already must not be damaged by a full disk).
    pub min_free_disk_mib: u64,
}

impl Limits {
    /// No limits beyond a number of sessions (for tests).
    pub fn sessions(max_sessions: usize) -> Self {
        Self {
            max_sessions,
            warm_pool: 0,
            max_clients_per_session: usize::MAX,
            max_tabs_per_session: usize::MAX,
            min_free_memory_mib: 0,
            min_free_disk_mib: 0,
        }
    }
}

/// Memory the kernel says is available to new processes, in MiB.
pub(crate) fn mem_available_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// A validated request for a new session.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub project: Project,
    pub keep_alive: bool,
    /// `None`: the project's default timeout.
    pub timeout_secs: Option<u64>,
    pub region: String,
    pub user_metadata: Option<Map<String, Value>>,
    pub browser_settings: Option<crate::model::BrowserSettings>,
    pub extension_id: Option<String>,
    /// Checked, pool members chosen; sealed for the store once the session has an id.
    pub proxies: Option<Vec<crate::browser::proxy::ProxyEntry>>,
    pub viewport: Viewport,
    /// The unpacked extension to load (the API resolved `extensionId` to it).
    pub extension_dir: Option<PathBuf>,
    /// `proxySettings.caCertificates`, resolved to their PEM texts.
    pub ca_certificates: Vec<String>,
}

impl CreateRequest {
    /// The id of the context the session starts with, if any.
    pub fn context_id(&self) -> Option<&str> {
        Some(&self.browser_settings.as_ref()?.context.as_ref()?.id)
    }

    /// Whether a warm browser (default viewport, no extension, no context, no CA
    /// certificates of its own) serves this request.
    pub fn fits_warm_browser(&self) -> bool {
        self.extension_id.is_none() && self.fits_warm_launch()
    }

    /// The extension folder, if a warm browser started with that extension serves this
    /// request: as [`Self::fits_warm_browser`], but with an extension. (Its egress stayed
    /// closed until now, so the session's rules hold from its first connection.)
    pub fn fits_warm_browser_with_extension(&self) -> Option<&Path> {
        if !self.fits_warm_launch() {
            return None;
        }
        self.extension_dir.as_deref()
    }

    /// A launch like the warm pool's: default viewport, no context, no CA certificates.
    fn fits_warm_launch(&self) -> bool {
        self.viewport == Viewport::default()
            && self.ca_certificates.is_empty()
            && self.context_id().is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "this browserd has reached its limit of {limit} concurrent sessions (currently {current}); release a session or raise --max-sessions"
    )]
    ServerFull { limit: usize, current: usize },
    #[error(
        "you've exceeded your max concurrent sessions limit (limit {limit}, currently {current}); release a session first"
    )]
    ProjectFull { limit: u32, current: usize },
    #[error(
        "you've exceeded your session creation rate limit (limit {limit} per minute); retry in {retry_after_secs}s"
    )]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error(
        "this machine has {available_mib} MiB of memory available, below browserd's floor of {floor_mib} MiB (--min-free-memory-mib); release sessions or add memory"
    )]
    LowMemory { available_mib: u64, floor_mib: u64 },
    #[error(
        "the data dir's disk has {available_mib} MiB free, below browserd's floor of {floor_mib} MiB (--min-free-disk-mib); free some space (ended sessions' files go after --files-retention-hours) or give the data dir a larger disk"
    )]
    LowDisk { available_mib: u64, floor_mib: u64 },
    #[error("browserd is shutting down and takes no new sessions")]
    ShuttingDown,
    #[error(
        "this browserd node is draining and takes no new sessions; retry (another node takes it)"
    )]
    Draining,
    #[error("the session's browser failed to start: {0}")]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the session supervisor stopped before the browser was ready")]
    SupervisorGone,
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("the session's browser could not be set up: {0}")]
    Setup(#[from] CdpError),
    #[error(transparent)]
    Asked(#[from] AskError),
    /// This server failed at its part of a create (an extension it could not unpack, lists
    /// it could not read).
    #[error("{0}")]
    Internal(String),
}

impl From<Refusal> for CreateError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::ProjectFull { limit, current } => Self::ProjectFull { limit, current },
            Refusal::RateLimited {
                limit,
                retry_after_secs,
            } => Self::RateLimited {
                limit,
                retry_after_secs,
            },
        }
    }
}

/// Why a connect was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("session {0} is not live on this server")]
    NotLive(Uuid),
    #[error("session {0} is still starting")]
    Starting(Uuid),
    #[error("session {id} already has {limit} clients connected (its limit); disconnect one first")]
    TooManyClients { id: Uuid, limit: usize },
}

/// What the supervisor is told. Sent over an unbounded channel: at most a few messages per
/// client connection, and [`ClientLease`]'s `Drop` must be able to send without awaiting.
#[derive(Debug)]
enum Command {
    ClientConnected,
    ClientDisconnected,
    End {
        ending: Ending,
        /// Answered once the session has fully ended.
        done: oneshot::Sender<()>,
    },
    /// browserd is stopping but the session goes on: close the clients, leave the browser
    /// running for the next browserd, record nothing.
    Detach {
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// What shutdown does with keepAlive sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPolicy {
    /// Their browsers keep running and the next browserd on this data dir adopts them.
    KeepAliveSurvives,
    /// Every session ends as COMPLETED.
    EndAll,
    /// The node drained and its `--drain-timeout` passed: what is still live ends as
    /// COMPLETED, its clients told why.
    DrainTimedOut,
}

/// The manager's view of one live session.
#[derive(Debug)]
struct LiveEntry {
    keep_alive: bool,
    /// Its project (for the metrics' live sessions by project).
    project: String,
    commands: mpsc::UnboundedSender<Command>,
    farewell: watch::Receiver<Option<Farewell>>,
    /// Set once the browser is ready; until then clients cannot connect.
    cdp_url: Option<String>,
    browser_pid: Option<u32>,
    browser_dir: Option<PathBuf>,
    /// The folders its clients' commands may name (once the browser is ready): where the
    /// browser saves downloads and reads uploads. See [`crate::cdp::filter`].
    rules: Option<Arc<Rules>>,
    /// The session's CDP log, if it logs (`browserSettings.logSession`, on by default).
    log: Option<LogTap>,
    /// The session's first tab: the one recorded, and the live view's default.
    primary_tab: Option<String>,
    /// Connected clients, counted by their leases.
    clients: Arc<AtomicUsize>,
    /// The unpacked extension it loaded: kept while the session lives (see
    /// [`SessionManager::uses_extension_dir`]).
    extension_dir: Option<PathBuf>,
    /// Connections the session's own browser made to its own connectUrl, counted apart:
    /// they neither keep a session without keepAlive going nor take an outside client's seat.
    inside_clients: Arc<AtomicUsize>,
}

impl LiveEntry {
    /// A session that holds its slot but whose browser is not ready yet.
    fn new(
        keep_alive: bool,
        project: String,
        commands: mpsc::UnboundedSender<Command>,
        farewell: watch::Receiver<Option<Farewell>>,
    ) -> Self {
        Self {
            keep_alive,
            project,
            commands,
            farewell,
            cdp_url: None,
            browser_pid: None,
            browser_dir: None,
            rules: None,
            log: None,
            primary_tab: None,
            clients: Arc::default(),
            inside_clients: Arc::default(),
            extension_dir: None,
        }
    }
}

pub struct SessionManager {
    /// The chromedrivers of its sessions and the WebDriver sessions on them.
    webdriver: Arc<webdriver::Hub>,
    /// This server's metrics.
    metrics: Arc<crate::metrics::Metrics>,
    store: Arc<dyn SessionStore>,
    launcher: Arc<dyn Launcher>,
    files: Arc<FileStore>,
    limits: Limits,
    /// Live sessions. A std Mutex: every critical section is a map operation, never an await.
    /// Holding a slot here is what counts against the limits, so check-and-insert is atomic.
    live: Mutex<HashMap<Uuid, LiveEntry>>,
    /// The supervisors and the pool's refill loop, so shutdown can wait until every
    /// browser is stopped.
    tasks: TaskTracker,
    shutting_down: AtomicBool,
    /// Draining (`--shutdown drain`, `browserd drain`): no new session here, live ones go
    /// on until they end. A watch: the server waits for a drain asked over the admin socket.
    draining: watch::Sender<bool>,
    /// Wakes a drain waiting for the last session to end (every freed slot notifies).
    slot_freed: tokio::sync::Notify,
    /// Whether Chromium has been seen to start here (`/readyz`); the launcher records it.
    proof: Arc<LaunchProof>,
    /// Starts a probe browser when readiness is asked and nothing proved Chromium.
    prober: Arc<Prober>,
    pool: WarmPool,
    /// Stops the pool's refill loop at shutdown.
    stop_pool: CancellationToken,
    /// Numbers clients for the log (command ids are only unique per client).
    client_numbers: std::sync::atomic::AtomicU64,
    /// This node's name, stamped on every session it creates.
    node: String,
    /// The operator's upstream proxies (`--proxy-pool`), for sessions that ask for them.
    proxy_pool: Arc<ProxyPool>,
    /// `--block-ads-lists`, read when the first session asks for `blockAds` (tens of
    /// thousands of lines that most servers never need); `None` inside: no list exists.
    ad_block_lists: Vec<PathBuf>,
    ad_hosts: tokio::sync::OnceCell<Option<Arc<AdHosts>>>,
    /// The door a session's own browser opens its own `connectUrl` through (set once by the
    /// server that serves connectUrls; unset: browsers cannot reach their session). Shared
    /// with every session's egress rules, which read it per connection: a session resumed
    /// before the server set it still finds it.
    own_connect: crate::browser::egress::DoorCell,
}

/// What sessions' traffic may be sent through or kept from, besides the sandbox's egress
/// policy: the operator's proxy pool and the ad-block lists.
#[derive(Debug, Default)]
pub struct TrafficOptions {
    pub proxy_pool: Arc<ProxyPool>,
    pub ad_block_lists: Vec<PathBuf>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("limits", &self.limits)
            .field("live", &self.live_count())
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    pub fn new(
        store: Arc<dyn SessionStore>,
        launcher: Arc<dyn Launcher>,
        files: Arc<FileStore>,
        limits: Limits,
        node: String,
        metrics: Arc<crate::metrics::Metrics>,
        traffic: TrafficOptions,
    ) -> Arc<Self> {
        // Every launch (the pool's, a create's, the probe's) tells whether Chromium works.
        let proof = Arc::new(LaunchProof::default());
        let launcher: Arc<dyn Launcher> = Arc::new(Proving::new(launcher, Arc::clone(&proof)));
        let manager = Arc::new(Self {
            webdriver: Arc::default(),
            node,
            metrics,
            draining: watch::Sender::new(false),
            slot_freed: tokio::sync::Notify::new(),
            proof,
            prober: Default::default(),
            proxy_pool: traffic.proxy_pool,
            ad_block_lists: traffic.ad_block_lists,
            ad_hosts: Default::default(),
            store,
            launcher,
            files,
            pool: WarmPool::new(limits.warm_pool.min(limits.max_sessions)),
            limits,
            live: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutting_down: AtomicBool::new(false),
            stop_pool: CancellationToken::new(),
            client_numbers: Default::default(),
            own_connect: Default::default(),
        });
        if manager.pool.target() > 0 {
            let this = Arc::clone(&manager);
            // Keeps warm browsers ready until shutdown; holds the manager, which is fine:
            // shutdown cancels it.
            manager.tasks.spawn(async move {
                let has_room =
                    || this.live_count() + this.pool.footprint() < this.limits.max_sessions;
                this.pool
                    .refill(&*this.launcher, has_room, this.stop_pool.clone())
                    .await;
            });
        }
        manager
    }

    /// The operator's upstream proxies (empty without `--proxy-pool`).
    pub fn proxy_pool(&self) -> &ProxyPool {
        &self.proxy_pool
    }

    /// The hosts `blockAds` refuses, read from `--block-ads-lists` on first use; `Ok(None)`:
    /// none of the lists exists on this machine.
    pub async fn ad_hosts(&self) -> Result<Option<Arc<AdHosts>>, Failure> {
        self.ad_hosts
            .get_or_try_init(|| async {
                let paths = self.ad_block_lists.clone();
                let started = std::time::Instant::now();
                let loaded = tokio::task::spawn_blocking(move || AdHosts::load(&paths))
                    .await
                    .map_err(|e| Failure::internal(e.to_string()))??;
                if let Some(hosts) = &loaded {
                    tracing::info!(
                        hosts = hosts.len(),
                        from = ?hosts.sources,
                        ms = started.elapsed().as_millis() as u64,
                        "blockAds: ad-block lists read"
                    );
                }
                Ok(loaded.map(Arc::new))
            })
            .await
            .cloned()
    }

    /// The warm pool (its target and how many browsers are ready).
    pub fn pool(&self) -> &WarmPool {
        &self.pool
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the launcher could start a browser now (see [`Launcher::readiness`]).
    /// Whether sessions' own egress rules (allowedDomains) can be enforced here.
    pub fn enforces_egress(&self) -> bool {
        self.launcher.enforces_egress()
    }

    /// The chromedrivers of its sessions and the WebDriver sessions on them.
    pub(crate) fn webdriver(&self) -> &Arc<webdriver::Hub> {
        &self.webdriver
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// How browserd reaches this server's browsers' DevTools (into their namespaces when
    /// sandboxed): whoever dials a session's browser goes through it.
    pub fn dialer(&self) -> crate::netns::Dialer {
        self.launcher.dialer()
    }

    /// Whether a launch could start now: Chromium is there, and a browser has been seen to
    /// start (and the last plain launch did not fail). Asked while Chromium is not proven,
    /// it starts a probe browser in the background, if there is room for one (a free slot,
    /// memory and disk above the floors): the next ask has the answer.
    pub fn launcher_readiness(&self) -> Result<(), Failure> {
        self.launcher.readiness()?;
        let proven = self.proof.readiness();
        if proven.is_err()
            && self.limits.max_sessions > 0
            && !self.shutting_down.load(Ordering::SeqCst)
            // (Draining included: no new browser on a node that is leaving.)
            && self.has_room()
            && self.live_count() + self.pool.footprint() < self.limits.max_sessions
            && self.prober.begin()
        {
            self.tasks.spawn(crate::browser::proof::probe_once(
                Arc::clone(&self.launcher),
                Arc::clone(&self.prober),
            ));
        }
        proven
    }

    /// Stops taking sessions here (creates are refused, 503 with `x-should-retry`, or in a
    /// cluster placed on another node) while live ones go on; warm browsers are stopped.
    /// Idempotent.
    pub fn start_drain(&self) {
        if !self.draining.send_replace(true) {
            tracing::info!(
                live = self.live_count(),
                "draining: no new sessions here; live ones go on"
            );
            self.metrics.draining.set(1);
            // The refill loop stops and stops its idle browsers.
            self.stop_pool.cancel();
        }
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once a drain has started (at once if it has).
    pub async fn drain_started(&self) {
        let mut draining = self.draining.subscribe();
        // The sender lives as long as `self`: an error cannot happen while we borrow it.
        let _ = draining.wait_for(|d| *d).await;
    }

    /// Resolves once no session is live here.
    pub async fn until_empty(&self) {
        loop {
            // Registered before the check: a slot freed in between still wakes it.
            let freed = self.slot_freed.notified();
            if self.live_count() == 0 {
                return;
            }
            freed.await;
        }
    }

    pub fn files(&self) -> &Arc<FileStore> {
        &self.files
    }

    /// Each live session's status (PENDING until its browser is ready) and project.
    pub fn live_by_status(&self) -> Vec<(SessionStatus, String)> {
        self.live
            .lock()
            .unwrap()
            .values()
            .map(|e| {
                let status = if e.cdp_url.is_some() {
                    SessionStatus::Running
                } else {
                    SessionStatus::Pending
                };
                (status, e.project.clone())
            })
            .collect()
    }

    /// Whether a create could start here now: a free slot and memory above the floor.
    pub fn has_room(&self) -> bool {
        !self.is_draining()
            && self.live_count() < self.limits.max_sessions
            && self.memory_shortage().is_none()
            && self.disk_shortage().is_none()
    }

    /// This node's name (`--node-name`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sessions live on this server now.
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// Whether a session is running here and accepts clients.
    pub fn is_live(&self, id: Uuid) -> bool {
        self.live
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|e| e.cdp_url.is_some() && e.farewell.borrow().is_none())
    }

    /// The pid of a live session's browser (for tests and diagnostics).
    pub fn browser_pid(&self, id: Uuid) -> Option<u32> {
        self.live.lock().unwrap().get(&id)?.browser_pid
    }

    /// The folder of a live session's browser (for tests and diagnostics).
    pub fn browser_dir(&self, id: Uuid) -> Option<PathBuf> {
        self.live.lock().unwrap().get(&id)?.browser_dir.clone()
    }

    /// Where a session's downloads are now: its browser's folder while it runs, the
    /// session's kept files after.
    pub fn downloads_dir(&self, id: Uuid) -> PathBuf {
        let live = self.live.lock().unwrap();
        match live.get(&id).and_then(|e| e.rules.as_deref()) {
            Some(rules) => rules.downloads.clone(),
            None => self.files.downloads_dir(id),
        }
    }

    /// Starts a session and returns it once its browser accepts CDP connections.
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<Session, CreateError> {
        let started = std::time::Instant::now();
        let mut warm = false;
        let created = self.create_inner(req, &mut warm).await;
        if created.is_ok() {
            self.metrics
                .create_seconds
                .get_or_create(&crate::metrics::Kind {
                    kind: if warm { "warm" } else { "cold" },
                })
                .observe(started.elapsed().as_secs_f64());
        }
        created
    }

    /// [`Self::create`]; sets `warm_taken` when it takes a browser from the pool.
    async fn create_inner(
        self: &Arc<Self>,
        req: CreateRequest,
        warm_taken: &mut bool,
    ) -> Result<Session, CreateError> {
        if let Some(e) = self.disk_shortage() {
            return Err(e);
        }
        let id = Uuid::new_v4();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (farewell_tx, farewell) = watch::channel(None);
        // Freed when dropped: by any early return below, or by the supervisor at its end.
        let slot = self.reserve_slot(
            id,
            LiveEntry {
                extension_dir: req.extension_dir.clone(),
                ..LiveEntry::new(req.keep_alive, req.project.id.clone(), commands, farewell)
            },
        )?;

        // A context is read (and checked) before anything starts: one that cannot be
        // restored fails the create, never a session with half a profile.
        let context = match req.context_id() {
            Some(context_id) => self.files.vault().load(context_id).await?.map(Arc::new),
            None => None,
        };

        let timeout_secs = req.timeout_secs.unwrap_or(req.project.default_timeout_secs);
        // A warm browser with the session's extension already loaded, or a plain one.
        let warm_extension = req
            .fits_warm_browser_with_extension()
            .map(Path::to_path_buf);
        let warm = match &warm_extension {
            Some(dir) => self.pool.take_with_extension(dir),
            None => req.fits_warm_browser().then(|| self.pool.take()).flatten(),
        };
        *warm_taken = warm.is_some();
        // A warm browser is already in memory; only a new one needs room.
        if let (None, Some(e)) = (&warm, self.memory_shortage()) {
            return Err(e);
        }
        let now = crate::model::now();
        let session = Session {
            id,
            project_id: req.project.id.clone(),
            // A warm browser is ready now: the session starts RUNNING, in one write.
            status: if warm.is_some() {
                SessionStatus::Running
            } else {
                SessionStatus::Pending
            },
            keep_alive: req.keep_alive,
            timeout_secs,
            region: req.region,
            user_metadata: req.user_metadata,
            browser_settings: req.browser_settings,
            extension_id: req.extension_id,
            proxies: req
                .proxies
                .map(|entries| crate::browser::proxy::for_store(entries, id, self.files.vault())),
            proxy_bytes: 0,
            created_at: now,
            updated_at: now,
            started_at: now,
            expires_at: now + time::Duration::seconds(timeout_secs as i64),
            ended_at: None,
            end_reason: None,
            browser: warm.as_ref().and_then(|b| b.record()),
            node: Some(self.node.clone()),
        };
        // The project's concurrency and creation rate are the store's to decide (the same
        // answer on every server sharing it), together with the insert.
        let limits = ProjectLimits {
            concurrency: req.project.concurrency,
            per_minute: req.project.creations_per_minute,
        };
        let inserted = self.metrics.time_store(
            "insert_session",
            self.store.insert_session(&session, limits),
        );
        let refused = match inserted.await {
            Ok(Ok(())) => None,
            Ok(Err(refusal)) => Some(CreateError::from(refusal)),
            Err(e) => Some(e.into()),
        };
        if let Some(e) = refused {
            // No row, so no ending to record. A warm browser taken for it served nobody:
            // back to the pool.
            if let Some(browser) = warm {
                self.pool.put_back(browser, warm_extension.as_deref()).await;
            }
            return Err(e);
        }
        // Recorded: its extension is the one to keep warm now.
        if let Some(dir) = &warm_extension {
            self.pool.want_extension(dir);
        }

        let (ready_tx, ready_rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
        let supervisor = supervisor::Supervisor {
            manager: Arc::clone(self),
            session,
            viewport: req.viewport,
            context,
            extension: req.extension_dir,
            ca_certificates: req.ca_certificates,
            ready_browser: warm.map(|browser| (browser, deadline)),
            began: false,
            commands: command_rx,
            farewell: farewell_tx,
            quota: Arc::new(self.files.session_quota()),
            proxy_bytes: Default::default(),
        };
        // The session's owner for the rest of its life; tracked so shutdown can wait for it.
        self.tasks.spawn(supervisor.run(slot, ready_tx));
        ready_rx.await.map_err(|_| CreateError::SupervisorGone)?
    }

    /// The full-disk refusal, if the data dir's disk is below the floor.
    pub fn disk_shortage(&self) -> Option<CreateError> {
        let floor_mib = self.limits.min_free_disk_mib;
        let available_mib = self.files.free_disk_mib()?;
        (floor_mib > 0 && available_mib < floor_mib).then_some(CreateError::LowDisk {
            available_mib,
            floor_mib,
        })
    }

    /// The low-memory refusal, if the machine is below the floor.
    fn memory_shortage(&self) -> Option<CreateError> {
        let floor_mib = self.limits.min_free_memory_mib;
        let available_mib = mem_available_mib()?;
        (floor_mib > 0 && available_mib < floor_mib).then_some(CreateError::LowMemory {
            available_mib,
            floor_mib,
        })
    }

    /// A place among this server's live sessions (`--max-sessions`; a project's limits are
    /// the store's, checked as the session is stored).
    fn reserve_slot(self: &Arc<Self>, id: Uuid, entry: LiveEntry) -> Result<Slot, CreateError> {
        let mut live = self.live.lock().unwrap();
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(CreateError::ShuttingDown);
        }
        if self.is_draining() {
            return Err(CreateError::Draining);
        }
        if live.len() >= self.limits.max_sessions {
            return Err(CreateError::ServerFull {
                limit: self.limits.max_sessions,
                current: live.len(),
            });
        }
        live.insert(id, entry);
        Ok(Slot {
            manager: Arc::clone(self),
            id,
        })
    }

    /// Only [`Slot`]'s drop calls this.
    fn free_slot(&self, id: Uuid) {
        self.live.lock().unwrap().remove(&id);
        self.slot_freed.notify_waiters();
        // A freed slot may let the pool start another browser.
        self.pool.nudge();
    }

    /// What the inspector needs of a live, ready session: its browser's CDP url, its
    /// primary tab, and its end.
    pub fn inspect(&self, id: Uuid) -> Option<Inspectable> {
        let live = self.live.lock().unwrap();
        let entry = live.get(&id)?;
        if entry.farewell.borrow().is_some() {
            return None;
        }
        Some(Inspectable {
            cdp_url: entry.cdp_url.clone()?,
            rules: entry.rules.clone()?,
            primary_tab: entry.primary_tab.clone(),
            farewell: entry.farewell.clone(),
        })
    }

    /// Set by the supervisor as it readies the session.
    fn set_inspection(&self, id: Uuid, log: Option<LogTap>, primary_tab: Option<String>) {
        if let Some(entry) = self.live.lock().unwrap().get_mut(&id) {
            entry.log = log;
            entry.primary_tab = primary_tab;
        }
    }

    /// What a ready session's tab watcher needs: the count of open tabs its filter reads,
    /// the bound, and its log.
    #[allow(clippy::type_complexity)]
    fn tab_watch(
        &self,
        id: Uuid,
    ) -> Option<(Arc<std::sync::atomic::AtomicUsize>, usize, Option<LogTap>)> {
        let live = self.live.lock().unwrap();
        let entry = live.get(&id)?;
        let rules = entry.rules.as_ref()?;
        Some((
            Arc::clone(&rules.open_pages),
            rules.max_pages,
            entry.log.clone(),
        ))
    }

    /// The session's first tab, once known (see [`Self::set_inspection`]).
    fn set_primary_tab(&self, id: Uuid, tab: String) {
        if let Some(entry) = self.live.lock().unwrap().get_mut(&id) {
            entry.primary_tab.get_or_insert(tab);
        }
    }

    /// Where a session's browser saves downloads and reads uploads.
    fn rules_for(&self, id: Uuid, browser: &dyn BrowserInstance) -> Rules {
        let uploads = self.files.uploads_dir(id);
        Rules {
            open_pages: Default::default(),
            max_pages: self.limits.max_tabs_per_session,
            downloads: browser
                .downloads_dir()
                .unwrap_or_else(|| self.files.downloads_dir(id)),
            uploads_in_browser: browser
                .dir()
                .map_or_else(|| uploads.clone(), |dir| dir.join(UPLOADS_IN_BROWSER)),
            uploads,
        }
    }

    fn set_ready(&self, id: Uuid, browser: &dyn BrowserInstance) {
        if let Some(entry) = self.live.lock().unwrap().get_mut(&id) {
            entry.cdp_url = Some(browser.cdp_url().to_owned());
            entry.browser_pid = browser.pid();
            entry.browser_dir = browser.dir().map(Path::to_path_buf);
            entry.rules = Some(Arc::new(self.rules_for(id, browser)));
        }
    }

    /// Sets where sessions' own browsers open their own `connectUrl` (once; later calls are
    /// ignored).
    pub fn set_own_connect(&self, door: Arc<dyn crate::browser::egress::OwnConnect>) {
        let _ = self.own_connect.set(door);
    }

    /// Whether a live session here loaded the extension in `dir`, or the warm pool keeps
    /// it: the unused-extension sweep leaves such a folder alone.
    pub fn uses_extension_dir(&self, dir: &Path) -> bool {
        self.pool.holds_extension(dir)
            || self
                .live
                .lock()
                .unwrap()
                .values()
                .any(|e| e.extension_dir.as_deref() == Some(dir))
    }

    /// Where sessions' own browsers open their own `connectUrl` (once the server set it).
    pub(crate) fn own_connect(&self) -> crate::browser::egress::DoorCell {
        Arc::clone(&self.own_connect)
    }

    /// Registers a new client of a live session. The lease counts as connected until dropped.
    pub fn attach(&self, id: Uuid) -> Result<ClientLease, AttachError> {
        self.attach_as(id, Side::Outside)
    }

    /// Registers a connection the session's own browser made to its own connectUrl
    /// (Stagehand 4's extension): relayed like any client, through the same filter, but it
    /// does not count as a client for keepAlive (a session without keepAlive still ends
    /// when its last outside client leaves) and has seats of its own.
    pub fn attach_from_inside(&self, id: Uuid) -> Result<ClientLease, AttachError> {
        self.attach_as(id, Side::Inside)
    }

    fn attach_as(&self, id: Uuid, side: Side) -> Result<ClientLease, AttachError> {
        let live = self.live.lock().unwrap();
        let entry = live.get(&id).ok_or(AttachError::NotLive(id))?;
        if entry.farewell.borrow().is_some() {
            return Err(AttachError::NotLive(id));
        }
        let cdp_url = entry.cdp_url.clone().ok_or(AttachError::Starting(id))?;
        let (counter, limit) = match side {
            Side::Outside => (&entry.clients, self.limits.max_clients_per_session),
            Side::Inside => (&entry.inside_clients, MAX_INSIDE_CLIENTS),
        };
        if counter.load(Ordering::SeqCst) >= limit {
            return Err(AttachError::TooManyClients { id, limit });
        }
        if side == Side::Outside {
            entry
                .commands
                .send(Command::ClientConnected)
                .map_err(|_| AttachError::NotLive(id))?;
        }
        counter.fetch_add(1, Ordering::SeqCst);
        self.metrics.clients_connected.inc();
        Ok(ClientLease {
            side,
            session_id: id,
            number: self.client_numbers.fetch_add(1, Ordering::Relaxed),
            log: entry.log.clone(),
            cdp_url,
            rules: entry.rules.clone().ok_or(AttachError::Starting(id))?,
            commands: entry.commands.clone(),
            farewell: entry.farewell.clone(),
            clients: Arc::clone(counter),
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Ends a live session with `ending` and waits until it has fully ended. A session that
    /// is not live is left as it is.
    pub async fn end(&self, id: Uuid, ending: Ending) {
        let commands = self
            .live
            .lock()
            .unwrap()
            .get(&id)
            .map(|e| e.commands.clone());
        if let Some(commands) = commands {
            let (done, done_rx) = oneshot::channel();
            if commands.send(Command::End { ending, done }).is_ok() {
                // An error means the session ended some other way first: just as good.
                let _ = done_rx.await;
            }
        }
    }

    /// Ends every live session with `ending` (this node lost its lease: the cluster has
    /// already recorded them as ended, and their browsers must not run on unseen).
    pub async fn end_all(&self, ending: Ending) {
        let ids: Vec<Uuid> = self.live.lock().unwrap().keys().copied().collect();
        let ends = ids.into_iter().map(|id| self.end(id, ending.clone()));
        futures_util::future::join_all(ends).await;
    }

    /// `REQUEST_RELEASE`: ends the session as COMPLETED, then returns it as stored.
    pub async fn release(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        self.end(
            id,
            Ending {
                status: SessionStatus::Completed,
                reason: "session released (REQUEST_RELEASE)".into(),
            },
        )
        .await;
        self.store.get_session(id).await
    }

    /// Takes over a session whose browser a previous browserd left running (keepAlive across
    /// a restart). Its deadline stays `expiresAt`; limits are not checked, it already ran.
    pub fn adopt(self: &Arc<Self>, session: Session, browser: Box<dyn BrowserInstance>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (farewell_tx, farewell) = watch::channel(None);
        let left = (session.expires_at - crate::model::now()).max(time::Duration::ZERO);
        self.live.lock().unwrap().insert(
            session.id,
            LiveEntry::new(
                session.keep_alive,
                session.project_id.clone(),
                commands,
                farewell,
            ),
        );
        let slot = Slot {
            manager: Arc::clone(self),
            id: session.id,
        };
        let deadline = tokio::time::Instant::now() + left.unsigned_abs();
        let supervisor = supervisor::Supervisor {
            manager: Arc::clone(self),
            session,
            viewport: Viewport::default(),
            context: None,
            extension: None,
            // An adopted browser's certificate database was written at its launch.
            ca_certificates: Vec::new(),
            ready_browser: Some((browser, deadline)),
            began: false,
            commands: command_rx,
            farewell: farewell_tx,
            quota: Arc::new(self.files.session_quota()),
            proxy_bytes: Default::default(),
        };
        let (ready, _) = oneshot::channel();
        self.tasks.spawn(supervisor.run(slot, ready));
    }

    /// Stops this server's part in every session: keepAlive sessions survive or end as
    /// `policy` says, the others end as COMPLETED. Returns once every browser that is to
    /// stop has stopped.
    pub async fn shutdown(&self, policy: ShutdownPolicy) {
        self.shutting_down.store(true, Ordering::SeqCst);
        // The refill loop stops and stops its idle browsers.
        self.stop_pool.cancel();
        let live: Vec<(Uuid, bool, mpsc::UnboundedSender<Command>)> = self
            .live
            .lock()
            .unwrap()
            .iter()
            .map(|(id, e)| (*id, e.keep_alive, e.commands.clone()))
            .collect();
        let stops = live
            .into_iter()
            .map(|(id, keep_alive, commands)| async move {
                if keep_alive && policy == ShutdownPolicy::KeepAliveSurvives {
                    let (done, done_rx) = oneshot::channel();
                    let reason =
                        "browserd is restarting; reconnect to the same connectUrl".to_owned();
                    if commands.send(Command::Detach { reason, done }).is_ok() {
                        let _ = done_rx.await;
                    }
                } else {
                    let reason = if policy == ShutdownPolicy::DrainTimedOut {
                        "this browserd node was drained and its --drain-timeout passed"
                    } else {
                        "browserd is shutting down"
                    };
                    let ending = Ending {
                        status: SessionStatus::Completed,
                        reason: reason.into(),
                    };
                    self.end(id, ending).await;
                }
            });
        futures_util::future::join_all(stops).await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Saves a session's browser profile into its context (`persist: true`): closes the
/// browser gracefully, archives and seals the profile. `guard` is the context's lock, held
/// by the caller since before the session's end was recorded. Failures are logged: the
/// session has ended either way.
pub(crate) async fn save_context(
    files: &FileStore,
    store: &dyn SessionStore,
    id: &str,
    browser: &mut dyn BrowserInstance,
    guard: &crate::files::contexts::ContextLock,
) {
    let Some(state) = browser.close_for_save().await else {
        return;
    };
    // Nothing of the browser runs while its profile is archived: a compromised one could
    // otherwise keep adding to what the archiver walks. (Stopping is idempotent; the ending
    // stops it again.)
    browser.stop().await;
    let still_exists = async {
        store
            .context_saved(id, crate::model::now())
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not record the context's save");
                false
            })
    };
    match files
        .vault()
        .save(
            guard,
            id,
            files.root(),
            &state.profile_dir,
            state.cookies,
            still_exists,
        )
        .await
    {
        Ok(true) => tracing::info!(context = id, "context saved"),
        Ok(false) => tracing::info!(context = id, "context was deleted; its save is dropped"),
        Err(e) => tracing::error!(context = id, error = %e, "could not save the context"),
    }
}

/// The folder in a browser's own folder where it sees the session's uploads (hard links
/// to the kept files: the sandbox shows the browser nothing else).
pub(crate) const UPLOADS_IN_BROWSER: &str = "uploads";

/// A live session as the inspector sees it.
#[derive(Debug, Clone)]
pub struct Inspectable {
    pub cdp_url: String,
    /// What DevTools' commands may name, as for a client.
    pub rules: Arc<Rules>,
    pub primary_tab: Option<String>,
    /// Becomes `Some` when the session ends (or browserd leaves it running).
    pub farewell: watch::Receiver<Option<Farewell>>,
}

/// A live session's place in the server's count (its limits, the pool's room). Dropping it
/// frees the place, whatever ends the holder: its end, an early return, a panic.
pub(crate) struct Slot {
    manager: Arc<SessionManager>,
    id: Uuid,
}

impl Slot {
    /// The folder of the session's browser, once it was ready.
    fn browser_dir(&self) -> Option<PathBuf> {
        self.manager.browser_dir(self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.manager.free_slot(self.id);
    }
}

/// Connections a session's own browser may hold to its own connectUrl at once (Stagehand's
/// extension holds one; a few spare for its reconnects).
pub(crate) const MAX_INSIDE_CLIENTS: usize = 4;

/// Where a client connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Anyone with the connectUrl, over the network.
    Outside,
    /// The session's own browser, through its egress (see [`SessionManager::attach_from_inside`]).
    Inside,
}

/// One connected client of a live session. Dropping it tells the supervisor the client left.
#[derive(Debug)]
pub struct ClientLease {
    side: Side,
    session_id: Uuid,
    /// Unique among this server's clients.
    number: u64,
    log: Option<LogTap>,
    cdp_url: String,
    rules: Arc<Rules>,
    commands: mpsc::UnboundedSender<Command>,
    farewell: watch::Receiver<Option<Farewell>>,
    clients: Arc<AtomicUsize>,
    /// Counts it out when it ends.
    metrics: Arc<crate::metrics::Metrics>,
}

impl ClientLease {
    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// The browser's CDP endpoint this client is relayed to.
    pub fn cdp_url(&self) -> &str {
        &self.cdp_url
    }
}

impl Seat for ClientLease {
    fn number(&self) -> u64 {
        self.number
    }

    fn log(&self) -> Option<&dyn FrameLog> {
        self.log.as_ref().map(|log| log as &dyn FrameLog)
    }

    fn rules(&self) -> &Rules {
        &self.rules
    }

    fn farewell(&self) -> watch::Receiver<Option<Farewell>> {
        self.farewell.clone()
    }

    fn request_end(&self, ending: Ending) {
        let (done, _) = oneshot::channel();
        let _ = self.commands.send(Command::End { ending, done });
    }
}

impl Drop for ClientLease {
    fn drop(&mut self) {
        self.metrics.clients_connected.dec();
        self.clients.fetch_sub(1, Ordering::SeqCst);
        if self.side == Side::Outside {
            let _ = self.commands.send(Command::ClientDisconnected);
        }
    }
}
