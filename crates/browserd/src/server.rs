//! Bringing a server up and down: open the data dir, reconcile what a previous run left,
//! make sure there is a project and a key, then serve until told to stop.

use crate::api::{ApiSettings, AppState};
use crate::browser::chromium::ChromiumLauncher;
use crate::browser::sandbox::Sandbox;
use crate::browser::{BrowserInstance, Launcher, procs};
use crate::cluster::{Cluster, NodeSettings};
use crate::config::Config;
use crate::files::FileStore;
use crate::files::contexts::ContextVault;
use crate::model::{Ending, Session, SessionStatus};
use crate::secrets::{SigningSecret, hash_api_key, new_api_key};
use crate::sessions::ending::{Records, Remains, end_session};
use crate::sessions::{Limits, SessionManager, ShutdownPolicy};
use crate::store::{SETTING_DEFAULT_PROJECT, Store};
use anyhow::{Context, bail};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SETTING_SIGNING_SECRET: &str = "signing_secret";
const SETTING_CONTEXT_KEY_CHECK: &str = "context_key_check";

/// What start-up found or made, for the banner.
#[derive(Debug)]
pub struct Prepared {
    pub state: AppState,
    pub default_project_id: String,
    /// A key made on this start (shown once; only its hash is stored).
    pub new_api_key: Option<String>,
    /// Unfinished sessions of a previous run that were ended now.
    pub reconciled: usize,
    /// keepAlive sessions of a previous run whose browsers were taken over.
    pub resumed: usize,
    /// What the server does when it is told to stop (`--shutdown`).
    pub shutdown: ShutdownPlan,
    /// Holds the data dir's lock for as long as the server runs.
    _lock: std::fs::File,
}

/// Opens the data dir and builds the server's state with a real Chromium launcher.
pub async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    prepare_with(config, chromium_launcher(config)?).await
}

/// The launcher `serve` uses: the configured Chromium, in the sandbox the machine allows.
fn chromium_launcher(config: &Config) -> anyhow::Result<Arc<ChromiumLauncher>> {
    let chromium = match &config.chromium {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!(
            "Chromium not found at {} (--chromium); install it with `apt-get install chromium` or point --chromium at a Chromium or Chrome binary",
            path.display()
        ),
        None => ChromiumLauncher::find_on_path().context(
            "no Chromium found on PATH (looked for chromium, chromium-browser, google-chrome); install it with `apt-get install chromium` or pass --chromium PATH",
        )?,
    };
    let sandbox = Sandbox::detect(
        config.sandbox,
        config.egress_policy(),
        Arc::clone(&config.metrics),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(ChromiumLauncher::new(
        chromium,
        config.sessions_dir(),
        sandbox,
        Arc::clone(&config.metrics),
    )))
}

/// [`prepare`] with any launcher (tests use it to count or fake browsers).
pub async fn prepare_with(
    config: &Config,
    launcher: Arc<dyn Launcher>,
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("could not create data dir {}", config.data_dir.display()))?;
    // The database, keys and session files are browserd's alone (its files are made with
    // umask 077; the dir closes them even to a server that ran with a looser one).
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not close data dir {}", config.data_dir.display()))?;
    }
    let lock = try_lock_data_dir(config)?.with_context(|| {
        format!(
            "another browserd is already serving data dir {}",
            config.data_dir.display()
        )
    })?;
    let store = open_store(config).await?;
    let files = open_files(config, &store).await?;
    // Registered before reconciling: a new epoch tells a sweeper that still believes in
    // the old one (this node restarted within its lease) that it is back.
    let cluster = Cluster::join(
        store.clone(),
        NodeSettings {
            name: config.node_name.clone(),
            url: config.node_url_of(config.listen),
            public_url: config.public_url.clone(),
            lease: config.node_lease,
        },
        config.max_sessions,
    )
    .await
    .context("could not register this node in the database")?;

    let Reconciled { ended, adopted } = reconcile(config, &store, &files, &*launcher).await?;

    let secret = store
        .settings
        .setting_or_insert(SETTING_SIGNING_SECRET, &SigningSecret::generate().to_hex())
        .await?;
    let secret = SigningSecret::from_hex(&secret).context("stored signing secret is corrupt")?;

    let (default_project_id, new_api_key) = ensure_default_project(config, &store).await?;

    let sessions = SessionManager::new(
        Arc::clone(&store.sessions),
        launcher,
        files,
        Limits {
            max_sessions: config.max_sessions,
            warm_pool: config.warm_pool,
            max_clients_per_session: config.max_clients_per_session,
            max_tabs_per_session: config.max_tabs_per_session,
            min_free_memory_mib: config.min_free_memory_mib,
            min_free_disk_mib: config.min_free_disk_mib,
        },
        config.node_name.clone(),
        Arc::clone(&config.metrics),
        crate::sessions::TrafficOptions {
            proxy_pool: Arc::clone(&config.proxy_pool),
            ad_block_lists: config.ad_block_lists.clone(),
        },
    );
    let resumed = adopted.len();
    for (session, browser) in adopted {
        sessions.adopt(session, browser);
    }
    let state = AppState {
        store,
        sessions,
        cluster,
        secret,
        history: Arc::default(),
        viewers: Arc::default(),
        settings: Arc::new(ApiSettings {
            public_url: config.public_url.clone(),
            min_timeout_secs: config.min_timeout_secs,
            max_message_size: config.max_message_size,
            message_budget: {
                let budget = crate::cdp::budget::MessageBudget::new(
                    config.relay_memory,
                    Arc::clone(&config.metrics),
                );
                config
                    .metrics
                    .relay_memory_budget
                    .set(budget.bytes() as i64);
                budget
            },
            max_upload_bytes: config.max_upload_bytes,
            retention: config.retention,
            client_watch: crate::cdp::relay::ClientWatch {
                ping_every: std::time::Duration::from_secs(config.ping_interval_secs),
                idle_after: std::time::Duration::from_secs(config.client_idle_timeout_secs),
            },
            max_connections_per_address: config.max_connections_per_address,
            live_view_frame_ancestors: config.live_view_frame_ancestors.as_ref().map(|sources| {
                axum::http::HeaderValue::from_str(&format!("frame-ancestors {sources}"))
                    .expect("config checks the sources are visible ASCII")
            }),
        }),
    };
    Ok(Prepared {
        state,
        default_project_id,
        new_api_key,
        reconciled: ended,
        resumed,
        shutdown: ShutdownPlan {
            policy: match config.shutdown {
                crate::config::ShutdownMode::Keep => ShutdownPolicy::KeepAliveSurvives,
                // A drain that ends before its timeout leaves nothing live; keepAlive
                // sessions not ended by then end too (their browsers would not be adopted
                // by a replacement somewhere else).
                crate::config::ShutdownMode::End | crate::config::ShutdownMode::Drain => {
                    ShutdownPolicy::EndAll
                }
            },
            drain_on_signal: config.shutdown == crate::config::ShutdownMode::Drain,
            drain_timeout: config.drain_timeout,
        },
        _lock: lock,
    })
}

/// The store `config` names: a shared PostgreSQL database, or the embedded one.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    match &config.database {
        Some(url) => crate::store::open_shared(url.expose())
            .await
            .context("could not open the shared database (--database)"),
        None => crate::store::open(&config.db_path())
            .await
            .with_context(|| format!("could not open {}", config.db_path().display())),
    }
}

async fn open_files(config: &Config, store: &Store) -> anyhow::Result<Arc<FileStore>> {
    let configured = config
        .context_key
        .as_ref()
        .map(crate::config::Secret::expose);
    if store.is_shared() && configured.is_none() {
        bail!(
            "with a shared database (--database), every node needs the same --context-key (64 hex digits, e.g. from `openssl rand -hex 32`): a context saved on one node must open on the others"
        );
    }
    let key = crate::files::contexts::load_or_create_key(&config.data_dir, configured)?;
    let mut vault = ContextVault::new(config.data_dir.join("contexts"), key)
        .context("could not create the contexts folder")?;
    let shared = store.is_shared().then(|| Arc::clone(&store.blobs));
    if let Some(blobs) = &shared {
        check_shared_context_key(store, &key).await?;
        vault = vault.shared(Arc::clone(blobs));
    }
    Ok(Arc::new(
        FileStore::open(&config.data_dir, vault, config.files_retention, shared)
            .context("could not create the file folders")?
            .with_session_disk_limit(config.session_disk_bytes),
    ))
}

/// The first node records a check value of its context key (an HMAC, which does not
/// reveal the key); a node started with another key is refused before it saves a context
/// the others could not open.
async fn check_shared_context_key(store: &Store, key: &[u8; 32]) -> anyhow::Result<()> {
    let check = crate::secrets::key_check(key);
    let in_force = store
        .settings
        .setting_or_insert(SETTING_CONTEXT_KEY_CHECK, &check)
        .await?;
    if in_force != check {
        bail!(
            "this node's --context-key differs from the one the other nodes sharing the database use; give every node the same key"
        );
    }
    Ok(())
}

/// One server per data dir: a second would sweep the first one's browsers. The data dir's
/// lock, held while this process runs; `None` if another process (a server) holds it.
pub fn try_lock_data_dir(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    let path = config.data_dir.join("browserd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not lock {}", path.display())),
    }
}

/// Ends a session while no server runs on the data dir (`browserd sessions release`): the
/// caller holds the data dir's lock (see [`try_lock_data_dir`]). A browser a previous server
/// left running (keepAlive) is taken over just to be ended through the one ending path.
pub async fn release_offline(
    config: &Config,
    store: &Store,
    session: Session,
) -> anyhow::Result<()> {
    if session.status.is_ended() {
        return Ok(());
    }
    let files = open_files(config, store).await?;
    let launcher = chromium_launcher(config)?;
    let mut browser = match session.browser.clone() {
        Some(record) => launcher.adopt(record).await,
        None => None,
    };
    let remains = Remains::of_earlier_run(&mut browser, session.browser.as_ref());
    let ending = Ending {
        status: SessionStatus::Completed,
        reason: "released from the command line while browserd was not running".into(),
    };
    let now = crate::model::now();
    end_session(
        Records {
            store: &*store.sessions,
            files: &files,
            metrics: &config.metrics,
        },
        &session,
        &ending,
        now,
        remains,
        || {},
    )
    .await;
    Ok(())
}

/// What start-up did with the sessions a previous run left unfinished.
struct Reconciled {
    /// Ended now, each with the status its fate deserves.
    ended: usize,
    /// keepAlive sessions whose browsers are still running: taken over.
    adopted: Vec<(Session, Box<dyn BrowserInstance>)>,
}

/// Settles the sessions a previous run left unfinished, then removes every browser process
/// and folder that no adopted session owns.
///
/// A session's browser is only trusted if it is the very process that was recorded (pid,
/// start time and profile path). Then: expired meanwhile → TIMED_OUT; keepAlive off → its
/// clients were cut, COMPLETED; keepAlive on → adopted, its timer resuming from `expiresAt`.
/// No trusted browser → ERROR.
async fn reconcile(
    config: &Config,
    store: &Store,
    files: &Arc<FileStore>,
    launcher: &dyn Launcher,
) -> anyhow::Result<Reconciled> {
    let now = crate::model::now();
    let mut ended = 0;
    let mut adopted = Vec::new();
    // With a shared store, only this node's sessions are its to settle; the embedded one
    // has a single node, whatever it was called last time (a container's host name changes).
    let mine = store.is_shared().then_some(config.node_name.as_str());
    for session in store.sessions.unended_sessions(mine).await? {
        let mut browser = match session.browser.clone() {
            Some(record) => launcher.adopt(record).await,
            None => None,
        };
        let (status, ended_at, reason) = match browser {
            None => (
                SessionStatus::Error,
                now,
                "the session's browser did not survive while browserd was down",
            ),
            Some(_) if session.expires_at <= now => (
                SessionStatus::TimedOut,
                session.expires_at,
                "session timed out while browserd was down",
            ),
            Some(_) if !session.keep_alive => (
                SessionStatus::Completed,
                now,
                "session ended: browserd restarted, which cut its clients, and keepAlive is off",
            ),
            Some(browser) => {
                adopted.push((session, browser));
                continue;
            }
        };
        // Ended through the one ending path: a surviving browser's profile is saved into
        // its context, downloads are kept, the browser stopped and its folder removed.
        let remains = Remains::of_earlier_run(&mut browser, session.browser.as_ref());
        let ending = Ending {
            status,
            reason: reason.to_owned(),
        };
        end_session(
            Records {
                store: &*store.sessions,
                files,
                metrics: &config.metrics,
            },
            &session,
            &ending,
            ended_at,
            remains,
            || {},
        )
        .await;
        ended += 1;
    }

    let sessions_dir = config.sessions_dir();
    std::fs::create_dir_all(&sessions_dir)?;
    let keep: Vec<PathBuf> = adopted
        .iter()
        .filter_map(|(_, b)| b.dir().map(Path::to_path_buf))
        .collect();
    tokio::task::spawn_blocking(move || {
        for entry in std::fs::read_dir(&sessions_dir)?.flatten() {
            let dir = entry.path();
            if keep.contains(&dir) {
                continue;
            }
            let killed = procs::kill_by_cmdline(&dir);
            if killed > 0 {
                tracing::warn!(killed, dir = %dir.display(), "killed a browser left by a previous run");
            }
            crate::browser::remove_files(&dir);
        }
        std::io::Result::Ok(())
    })
    .await??;
    Ok(Reconciled { ended, adopted })
}

async fn ensure_default_project(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(String, Option<String>)> {
    let existing = match store.settings.get_setting(SETTING_DEFAULT_PROJECT).await? {
        Some(id) => store.projects.get_project(&id).await?,
        None => None,
    };
    let (project, created) = match existing {
        Some(p) => (p, false),
        None => {
            let p = store
                .projects
                .create_project(
                    "default",
                    config.default_timeout_secs,
                    // The first node to start sets it; a node that runs no browsers still
                    // leaves the project room for one.
                    config.max_sessions.max(1) as u32,
                    config.creation_rate,
                )
                .await?;
            store
                .settings
                .set_setting(SETTING_DEFAULT_PROJECT, &p.id)
                .await?;
            (p, true)
        }
    };
    let new_key = match config.api_key.as_ref().map(crate::config::Secret::expose) {
        Some(key) => {
            // A key revoked through the API or `browserd keys revoke` stays revoked: the
            // configured one is not put back behind the operator's back.
            if store
                .settings
                .get_setting(&crate::store::revoked_key_setting(&hash_api_key(key)))
                .await?
                .is_some()
            {
                anyhow::bail!(
                    "the configured API key (--api-key, BROWSERD_API_KEY) was revoked; set a new one (browserd keys create prints one)"
                );
            }
            if store
                .projects
                .project_for_key(&hash_api_key(key))
                .await?
                .is_none()
            {
                store
                    .projects
                    .add_api_key(&project.id, &hash_api_key(key))
                    .await?;
            }
            None
        }
        None if created => {
            let key = new_api_key();
            store
                .projects
                .add_api_key(&project.id, &hash_api_key(&key))
                .await?;
            Some(key)
        }
        None => None,
    };
    Ok((project.id, new_key))
}

/// What the server does when it is told to stop.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownPlan {
    /// What becomes of sessions still live when the server stops.
    pub policy: ShutdownPolicy,
    /// Drain first (`--shutdown drain`): no new sessions, and wait for the live ones to end.
    pub drain_on_signal: bool,
    /// How long a drain waits (`--drain-timeout`); then what is live ends.
    pub drain_timeout: std::time::Duration,
}

impl ShutdownPlan {
    /// Every session ends at once (in-process test servers: no browser outlives a test).
    pub fn end_all() -> Self {
        Self {
            policy: ShutdownPolicy::EndAll,
            drain_on_signal: false,
            drain_timeout: std::time::Duration::from_secs(crate::model::MAX_TIMEOUT_SECS),
        }
    }
}

/// Serves the API on `listener` (and the admin API on `admin`, if given) until told to
/// stop: `signals` counts the stop signals received (SIGTERM, Ctrl-C). The first stops the
/// server, or with `plan`'s drain starts a drain; a drain (or one asked for over the admin
/// socket) lasts until the last session ends, `--drain-timeout`, or another signal (stop
/// now). Then it ends what `plan` says and returns once the browsers that are to stop have
/// stopped.
pub async fn run(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::UnixListener>,
    metrics: Option<tokio::net::TcpListener>,
    state: AppState,
    plan: ShutdownPlan,
    mut signals: tokio::sync::watch::Receiver<u64>,
) -> std::io::Result<()> {
    // Every port browserd serves on is closed to pages, Prometheus' included: it names
    // every project's sessions.
    for addr in [Some(&listener), metrics.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
    {
        crate::browser::egress::protect_own_port(addr.port());
    }
    // The one exception: a session's own browser may open its own connectUrl (Stagehand 4),
    // through a door in this process that serves nothing else.
    if let Ok(addr) = listener.local_addr() {
        let door = crate::api::InsideDoor::new(&state, addr.port());
        state.sessions.set_own_connect(Arc::new(door));
    }
    let sessions = Arc::clone(&state.sessions);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    if let Some(admin) = admin {
        let app = crate::admin::router(state.clone());
        let mut stop = stop_rx.clone();
        // The local admin API (the CLI's way in); lives as long as the main server.
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(admin, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "admin socket failed");
            }
        });
    }

    if let Some(metrics) = metrics {
        let app = crate::api::metrics::router(state.clone());
        let mut stop = stop_rx.clone();
        // Prometheus' own address (--metrics-listen); lives as long as the main server.
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(metrics, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "metrics listener failed");
            }
        });
    }

    // What is past its retention goes every 10 minutes (and once now).
    let sweeper = {
        let (files, store) = (Arc::clone(state.sessions.files()), state.store.clone());
        let sessions = Arc::clone(&state.sessions);
        let retention = state.settings.retention;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        sweep_retention(&files, &*store.sessions, retention).await;
                        // Extensions no project names any more, unless a live session or a
                        // warm browser here holds one.
                        let held = |dir: &std::path::Path| sessions.uses_extension_dir(dir);
                        let removed = files.sweep_extensions(&*store.extensions, held).await;
                        if removed > 0 {
                            tracing::info!(removed, "removed extensions no project names any more");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    };
    // The overview's hour: a sample every 10 seconds, the first now.
    let sampler = {
        let (state, mut stop) = (state.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::api::overview::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => state.history.record(crate::api::overview::sample_now(&state)),
                    _ = stop.changed() => return,
                }
            }
        })
    };
    // Heartbeats and sweeps for lost nodes while the server runs; leaves the cluster at the
    // end (after the sessions' endings are recorded).
    let membership =
        tokio::spawn(Arc::clone(&state.cluster).run(Arc::clone(&state.sessions), stop_rx.clone()));
    let per_address = state.settings.max_connections_per_address;
    let metrics = Arc::clone(state.sessions.metrics());
    let app = crate::api::app(state);
    let served = crate::http_server::serve(listener, app, per_address, metrics, async move {
        // A signal, or a drain an operator asked for (`browserd drain`).
        let asked_to_drain = tokio::select! {
            _ = signals.wait_for(|n| *n >= 1) => plan.drain_on_signal,
            () = sessions.drain_started() => true,
        };
        let mut policy = plan.policy;
        if asked_to_drain {
            let seen = *signals.borrow_and_update();
            sessions.start_drain();
            tracing::info!(live = sessions.live_count(), timeout = ?plan.drain_timeout, "draining: browserd exits when the last session ends (another stop signal stops it now)");
            tokio::select! {
                drained = tokio::time::timeout(plan.drain_timeout, sessions.until_empty()) => {
                    if drained.is_err() {
                        tracing::warn!(live = sessions.live_count(), "--drain-timeout passed: ending the sessions still live");
                        policy = ShutdownPolicy::DrainTimedOut;
                    }
                }
                _ = signals.wait_for(|n| *n > seen) => {
                    tracing::warn!(live = sessions.live_count(), "a stop signal during the drain: stopping now");
                }
            }
        }
        tracing::info!(?policy, "shutting down");
        // Sessions go first, so their clients get a close frame with the reason.
        sessions.shutdown(policy).await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = sweeper.await;
    let _ = sampler.await;
    let _ = membership.await;
    served
}

/// Deletes what is past its retention: session files first (found through their rows), then
/// the rows of sessions that ended more than `retention` ago. Ended sessions are billed
/// into their projects' usage totals first, so usage reads only recent rows. A batch per
/// transaction, so that creates never wait long behind the sweep.
async fn sweep_retention(
    files: &crate::files::FileStore,
    store: &dyn crate::store::SessionStore,
    retention: std::time::Duration,
) {
    let removed = files.sweep(store).await;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the files of sessions past their retention"
        );
    }
    if let Err(e) = in_batches(|batch| store.bill_ended(batch)).await {
        tracing::warn!(error = %e, "could not add ended sessions to the usage totals");
    }
    let cutoff = crate::model::now() - retention;
    match in_batches(|batch| store.purge_ended(cutoff, batch)).await {
        Ok(0) => {}
        Ok(purged) => {
            tracing::info!(
                purged,
                "deleted sessions past their retention (their usage is kept)"
            );
        }
        Err(e) => tracing::warn!(error = %e, "could not delete sessions past their retention"),
    }
}

/// Runs `step` with [`SWEEP_BATCH`] until it does less than a batch; the total done.
async fn in_batches<F, Fut>(mut step: F) -> Result<u64, crate::store::StoreError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut total = 0;
    loop {
        let done = step(SWEEP_BATCH).await?;
        total += done;
        if done < u64::from(SWEEP_BATCH) {
            return Ok(total);
        }
    }
}

const SWEEP_BATCH: u32 = 1000;
