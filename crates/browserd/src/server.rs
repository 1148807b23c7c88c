//! Bringing a server up and down: open the data dir, reconcile what a previous run left,
//! make sure there is a project and a key, then serve until told to stop.

use crate::api::{ApiSettings, AppState};
use crate::browser::chromium::ChromiumLauncher;
use crate::browser::{Launcher, procs};
use crate::config::Config;
use crate::model::SessionStatus;
use crate::secrets::{SigningSecret, hash_api_key, new_api_key};
use crate::sessions::{Limits, SessionManager};
use crate::store::{SessionStore as _, SqliteStore};
use anyhow::{Context, bail};
use std::future::Future;
use std::sync::Arc;

const SETTING_DEFAULT_PROJECT: &str = "default_project_id";
const SETTING_SIGNING_SECRET: &str = "signing_secret";

/// What start-up found or made, for the banner.
#[derive(Debug)]
pub struct Prepared {
    pub state: AppState,
    pub default_project_id: String,
    /// A key made on this start (shown once; only its hash is stored).
    pub new_api_key: Option<String>,
    /// Unfinished sessions of a previous run that were ended as ERROR.
    pub reconciled: usize,
    /// Holds the data dir's lock for as long as the server runs.
    _lock: std::fs::File,
}

/// Opens the data dir and builds the server's state with a real Chromium launcher.
pub async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
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
    let launcher = Arc::new(ChromiumLauncher::new(chromium, config.sessions_dir()));
    prepare_with(config, launcher).await
}

/// [`prepare`] with any launcher (tests use it to count or fake browsers).
pub async fn prepare_with(
    config: &Config,
    launcher: Arc<dyn Launcher>,
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("could not create data dir {}", config.data_dir.display()))?;
    let lock = lock_data_dir(config)?;
    let store = SqliteStore::open(&config.db_path())
        .await
        .with_context(|| format!("could not open {}", config.db_path().display()))?;

    let reconciled = reconcile(config, &store).await?;

    let secret = store
        .setting_or_insert(SETTING_SIGNING_SECRET, &SigningSecret::generate().to_hex())
        .await?;
    let secret = SigningSecret::from_hex(&secret).context("stored signing secret is corrupt")?;

    let (default_project_id, new_api_key) = ensure_default_project(config, &store).await?;

    let sessions = SessionManager::new(
        Arc::new(store.clone()),
        launcher,
        Limits {
            max_sessions: config.max_sessions,
            warm_pool: config.warm_pool,
        },
    );
    let state = AppState {
        store,
        sessions,
        secret,
        settings: Arc::new(ApiSettings {
            public_url: config.public_url.clone(),
            min_timeout_secs: config.min_timeout_secs,
            max_message_size: config.max_message_size,
        }),
    };
    Ok(Prepared {
        state,
        default_project_id,
        new_api_key,
        reconciled,
        _lock: lock,
    })
}

/// One server per data dir: a second would sweep the first one's browsers.
fn lock_data_dir(config: &Config) -> anyhow::Result<std::fs::File> {
    let path = config.data_dir.join("browserd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another browserd is already serving data dir {}",
                config.data_dir.display()
            )
        },
    )?;
    Ok(file)
}

/// Ends sessions a previous run left unfinished (their browsers did not survive it) and
/// removes every browser process and profile dir it left behind.
async fn reconcile(config: &Config, store: &SqliteStore) -> anyhow::Result<usize> {
    let sessions_dir = config.sessions_dir();
    let dir = sessions_dir.clone();
    tokio::task::spawn_blocking(move || {
        let killed = procs::kill_by_cmdline(&dir);
        if killed > 0 {
            tracing::warn!(killed, "killed browsers left by a previous run");
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    })
    .await?;
    std::fs::create_dir_all(&sessions_dir)?;

    let unfinished = store.unended_sessions().await?;
    let now = crate::model::now();
    for s in &unfinished {
        store
            .finish_session(
                s.id,
                SessionStatus::Error,
                now,
                "browserd restarted and the session's browser did not survive",
            )
            .await?;
    }
    Ok(unfinished.len())
}

async fn ensure_default_project(
    config: &Config,
    store: &SqliteStore,
) -> anyhow::Result<(String, Option<String>)> {
    let existing = match store.get_setting(SETTING_DEFAULT_PROJECT).await? {
        Some(id) => store.get_project(&id).await?,
        None => None,
    };
    let (project, created) = match existing {
        Some(p) => (p, false),
        None => {
            let p = store
                .create_project(
                    "default",
                    config.default_timeout_secs,
                    config.max_sessions as u32,
                )
                .await?;
            store.set_setting(SETTING_DEFAULT_PROJECT, &p.id).await?;
            (p, true)
        }
    };
    let new_key = match &config.api_key {
        Some(key) => {
            if store.project_for_key(&hash_api_key(key)).await?.is_none() {
                store.add_api_key(&project.id, &hash_api_key(key)).await?;
            }
            None
        }
        None if created => {
            let key = new_api_key();
            store.add_api_key(&project.id, &hash_api_key(&key)).await?;
            Some(key)
        }
        None => None,
    };
    Ok((project.id, new_key))
}

/// Serves the API on `listener` (and the admin API on `admin`, if given) until `shutdown`
/// resolves; then ends every session and returns once their browsers are stopped.
pub async fn run(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::UnixListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
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

    // Without TCP_NODELAY, Nagle and delayed ACKs add tens of ms to small CDP round trips.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = crate::api::app(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: ending every session");
            // Sessions end first, so their clients get a close frame with the reason.
            sessions.shutdown().await;
            let _ = stop_tx.send(true);
        })
        .await
}
