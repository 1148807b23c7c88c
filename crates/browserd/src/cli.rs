//! The `browserd` command line.
//!
//! `serve` runs the server. The `project` and `sessions` commands work on the data dir's
//! database directly (the embedded database allows that while a server runs); `sessions
//! release` asks the running server over its admin socket, so the browser is really
//! stopped, or, with no server running (the data dir's lock is free), ends it itself.

use crate::config::{Common, Config, Settings};
use crate::model::{SessionStatus, fmt_time};
use crate::secrets::{hash_api_key, new_api_key};
use crate::store::{SessionQuery, Store};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "browserd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BROWSERD_COMMIT"), ")"),
    about = "A self-hosted, Browserbase-compatible browser session server",
    long_about = "A self-hosted, Browserbase-compatible browser session server.\n\n\
        Point the official Browserbase SDKs at it with BROWSERBASE_BASE_URL and BROWSERBASE_API_KEY, \
        then drive each session's Chromium through its connectUrl with Playwright, Puppeteer or any CDP client.\n\n\
        Settings come from flags, then BROWSERD_* environment variables, then the --config TOML file, then defaults."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server
    Serve(Box<Settings>),
    /// Check this machine for what browserd needs with these settings (the serve flags):
    /// Chromium renders a page, the sandbox's namespaces, chromedriver, certutil, the ad
    /// lists, fonts, free memory and disk, the data dir, the database. Prints what works
    /// and what to install; exits 1 if something browserd needs fails
    Doctor(Box<Settings>),
    /// Manage projects (owners of sessions and API keys)
    #[command(subcommand)]
    Project(ProjectCommand),
    /// List, create and revoke a project's API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and release sessions
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// The nodes sharing the database (--database), with their load and health
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Drain the server running on this data dir: no new sessions there (/readyz 503, a
    /// cluster places creates elsewhere), live ones go on; it exits when the last ends, or
    /// at its --drain-timeout
    Drain,
    /// Copy the data dir's database (a consistent snapshot, while the server runs), context
    /// key, saved contexts and extensions into one zip (mode 0600: it holds the context key).
    /// Session files are not included. With --database, use pg_dump instead
    Backup {
        /// The zip to write (replaced once the new one is complete)
        file: PathBuf,
    },
    /// Unpack a backup into an empty --data-dir; then start `browserd serve` on it (an older
    /// backup's schema is brought up to date as it starts)
    Restore {
        /// A zip written by `browserd backup`
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the nodes: state, sessions and limit, last heartbeat, address
    List,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project and print its id and a new API key
    Create {
        name: String,
        /// Sessions the project may run at once [default: the server's --max-sessions default]
        #[arg(long)]
        concurrency: Option<u32>,
        /// The project's defaultTimeout in seconds [default: --default-timeout]
        #[arg(long, value_name = "SECONDS")]
        default_timeout: Option<u64>,
        /// Sessions the project may create per minute; 0 for no limit [default: 0]
        #[arg(long, value_name = "N", default_value_t = 0)]
        creation_rate: u32,
    },
    /// List projects
    List,
    /// Set a project's default session timeout (for sessions created without `timeout`)
    SetDefaultTimeout {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
        seconds: u64,
    },
    /// Set how many sessions a project may create per minute (0: no limit)
    SetCreationRate {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
        per_minute: u32,
    },
    /// Set how many sessions a project may run at once (at least 1); the next create on
    /// any node is checked against it
    SetConcurrency {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
        sessions: u32,
    },
    /// Add another API key to a project and print it (as `browserd keys create`)
    CreateKey {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// A project's keys by id (a key itself is shown only when it is made), oldest first
    List {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
    },
    /// Make a new key for a project and print it, once
    Create {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
    },
    /// Revoke a key by its id (from `keys list`): it stops working at once, on every node.
    /// A project's last key cannot be revoked
    Revoke {
        /// The project [default: the default project]
        #[arg(long)]
        project: Option<String>,
        /// The key's id, as `keys list` shows it
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first
    List {
        /// Only sessions with this status (PENDING, RUNNING, COMPLETED, TIMED_OUT, ERROR)
        #[arg(long)]
        status: Option<String>,
        /// Only sessions of this project
        #[arg(long)]
        project: Option<String>,
        /// At most this many (the newest)
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// End a session now (REQUEST_RELEASE)
    Release { id: Uuid },
}

/// An error and its causes on one line, each cause said once: many errors (sqlx's, ours
/// that wrap them) repeat their source's text in their own, which `{:#}` would print again.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database.is_some() {
        return crate::server::open_store(config).await;
    }
    if !config.db_path().exists() {
        bail!(
            "no browserd database in {} (run `browserd serve` once, or pass --data-dir)",
            config.data_dir.display()
        );
    }
    crate::store::open(&config.db_path())
        .await
        .with_context(|| format!("could not open {}", config.db_path().display()))
}

async fn project_or_default(store: &Store, id: Option<String>) -> anyhow::Result<String> {
    let id = match id {
        Some(id) => id,
        None => store
            .settings
            .get_setting(crate::store::SETTING_DEFAULT_PROJECT)
            .await?
            .context("there is no default project yet; run `browserd serve` once")?,
    };
    store
        .projects
        .get_project(&id)
        .await?
        .map(|p| p.id)
        .with_context(|| format!("project {id} not found"))
}

pub async fn run_project(common: &Common, cmd: ProjectCommand) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    let store = open_store(&config).await?;
    let check = |secs: u64| {
        crate::api::check_timeout_secs(secs, config.min_timeout_secs)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    match cmd {
        ProjectCommand::Create {
            name,
            concurrency,
            default_timeout,
            creation_rate,
        } => {
            let timeout = check(default_timeout.unwrap_or(config.default_timeout_secs))?;
            let concurrency = concurrency.unwrap_or(config.max_sessions as u32);
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let project = store
                .projects
                .create_project(&name, timeout, concurrency, creation_rate)
                .await?;
            let key = new_api_key();
            store
                .projects
                .add_api_key(&project.id, &hash_api_key(&key))
                .await?;
            println!("project id: {}", project.id);
            println!("API key:    {key}   (shown only this once)");
        }
        ProjectCommand::List => {
            println!(
                "{:<36}  {:<20}  {:>15}  {:>11}  {:>13}",
                "ID", "NAME", "DEFAULT TIMEOUT", "CONCURRENCY", "CREATES/MIN"
            );
            for p in store.projects.list_projects().await? {
                println!(
                    "{:<36}  {:<20}  {:>14}s  {:>11}  {:>13}",
                    p.id,
                    p.name,
                    p.default_timeout_secs,
                    p.concurrency,
                    match p.creations_per_minute {
                        0 => "no limit".to_owned(),
                        n => n.to_string(),
                    }
                );
            }
        }
        ProjectCommand::SetConcurrency { project, sessions } => {
            if sessions == 0 {
                bail!("a project's concurrency must be at least 1");
            }
            let id = project_or_default(&store, project).await?;
            store.projects.set_concurrency(&id, sessions).await?;
            println!("project {id}: concurrency is now {sessions} sessions at once");
        }
        ProjectCommand::SetDefaultTimeout { project, seconds } => {
            let id = project_or_default(&store, project).await?;
            let secs = check(seconds)?;
            store.projects.set_default_timeout(&id, secs).await?;
            println!("project {id}: defaultTimeout is now {secs}s");
        }
        ProjectCommand::SetCreationRate {
            project,
            per_minute,
        } => {
            let id = project_or_default(&store, project).await?;
            store.projects.set_creation_rate(&id, per_minute).await?;
            println!("project {id}: creation rate is now {per_minute} per minute (0: no limit)");
        }
        ProjectCommand::CreateKey { project } => {
            store.close().await;
            return run_keys(common, KeysCommand::Create { project }).await;
        }
    }
    store.close().await;
    Ok(())
}

pub async fn run_keys(common: &Common, cmd: KeysCommand) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    let store = open_store(&config).await?;
    match cmd {
        KeysCommand::List { project } => {
            let id = project_or_default(&store, project).await?;
            println!("{:<12}  CREATED", "ID");
            for key in store.projects.list_api_keys(&id).await? {
                println!("{:<12}  {}", key.id, fmt_time(key.created_at));
            }
        }
        KeysCommand::Create { project } => {
            let id = project_or_default(&store, project).await?;
            let key = new_api_key();
            let hash = hash_api_key(&key);
            store.projects.add_api_key(&id, &hash).await?;
            println!(
                "API key {} for project {id}: {key}   (shown only this once)",
                crate::store::api_key_id(&hash)
            );
        }
        KeysCommand::Revoke {
            project,
            id: key_id,
        } => {
            if !crate::store::is_api_key_id(&key_id) {
                bail!(
                    "{key_id:?} is not a key id: 12 lowercase hex digits, as `browserd keys list` shows them"
                );
            }
            let id = project_or_default(&store, project).await?;
            match store.projects.revoke_api_key(&id, &key_id).await? {
                crate::store::Revoke::Revoked => {
                    println!("project {id}: key {key_id} revoked")
                }
                crate::store::Revoke::NoSuchKey => {
                    bail!("project {id} has no key {key_id} (see `browserd keys list`)")
                }
                crate::store::Revoke::LastKey => bail!(
                    "key {key_id} is project {id}'s last key: create another first (`browserd keys create`)"
                ),
            }
        }
    }
    store.close().await;
    Ok(())
}

pub async fn run_sessions(common: &Common, cmd: SessionsCommand) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    match cmd {
        SessionsCommand::List {
            status,
            project,
            limit,
        } => {
            let status = status
                .map(|s| {
                    SessionStatus::parse(&s.to_uppercase())
                        .with_context(|| format!("unknown status {s:?}"))
                })
                .transpose()?;
            let store = open_store(&config).await?;
            println!(
                "{:<36}  {:<9}  {:<5}  {:<24}  {:<24}  END REASON",
                "ID", "STATUS", "KEEP", "CREATED", "EXPIRES"
            );
            for s in store
                .sessions
                .list_sessions(SessionQuery {
                    status,
                    ..SessionQuery::newest(project.as_deref(), limit)
                })
                .await?
            {
                println!(
                    "{:<36}  {:<9}  {:<5}  {:<24}  {:<24}  {}",
                    s.id,
                    s.status.as_str(),
                    if s.keep_alive { "yes" } else { "no" },
                    fmt_time(s.created_at),
                    fmt_time(s.expires_at),
                    s.end_reason.as_deref().unwrap_or("")
                );
            }
            store.close().await;
        }
        SessionsCommand::Release { id } => release(&config, id).await?,
    }
    Ok(())
}

pub async fn run_nodes(common: &Common, cmd: NodesCommand) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    let store = open_store(&config).await?;
    match cmd {
        NodesCommand::List => {
            println!(
                "{:<20}  {:<8}  {:>8}  {:<24}  {:<24}  URL",
                "NAME", "STATE", "SESSIONS", "LAST HEARTBEAT", "LEASE UNTIL"
            );
            for n in store.nodes.list_nodes().await? {
                println!(
                    "{:<20}  {:<8}  {:>8}  {:<24}  {:<24}  {}",
                    n.name,
                    n.shown_state(),
                    format!("{}/{}", n.live_sessions, n.max_sessions),
                    fmt_time(n.heartbeat_at),
                    fmt_time(n.lease_expires_at),
                    n.url
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn release(config: &Config, id: Uuid) -> anyhow::Result<()> {
    if config.database.is_some() {
        bail!(
            "with a shared database, release sessions through the API of any node: POST /v1/sessions/{id} {{\"status\": \"REQUEST_RELEASE\"}}"
        );
    }
    // Opened first: a data dir without a database gets its own clear error.
    let store = open_store(config).await?;
    // Whether a server runs is the data dir's lock, not whether its socket answers: a
    // server that does not answer still holds its browsers, and only it may end them.
    let Some(_lock) = crate::server::try_lock_data_dir(config)? else {
        let socket = config.admin_socket();
        return match admin_post(&socket, &format!("/sessions/{id}/release")).await {
            Ok((status, body)) if status.is_success() => {
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                println!("session {id}: {}", v["status"].as_str().unwrap_or("?"));
                Ok(())
            }
            Ok((status, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                bail!(
                    "{status}: {}",
                    v["message"].as_str().unwrap_or("request failed")
                )
            }
            Err(e) => bail!(
                "browserd is running on {} but its admin socket {} did not answer ({e}); the session was not released: retry, or release it through the API",
                config.data_dir.display(),
                socket.display()
            ),
        };
    };
    // No server runs, and none can start while the lock is held here.
    let session = store
        .sessions
        .get_session(id)
        .await?
        .with_context(|| format!("session {id} not found"))?;
    crate::server::release_offline(config, &store, session).await?;
    let after = store
        .sessions
        .get_session(id)
        .await?
        .context("session vanished")?;
    println!(
        "session {id}: {} (browserd is not running)",
        after.status.as_str()
    );
    store.close().await;
    Ok(())
}

/// `browserd drain`: asks the server on this data dir, over its admin socket.
pub async fn run_drain(common: &Common) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    if crate::server::try_lock_data_dir(&config)?.is_some() {
        bail!(
            "no browserd is running on {} (nothing to drain)",
            config.data_dir.display()
        );
    }
    let socket = config.admin_socket();
    let (status, body) = admin_post(&socket, "/drain").await.with_context(|| {
        format!(
            "browserd is running on {} but its admin socket {} did not answer",
            config.data_dir.display(),
            socket.display()
        )
    })?;
    if !status.is_success() {
        bail!("{status}: the server refused to drain");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "draining: {} live session(s); browserd exits when they have ended (or at its --drain-timeout)",
        v["liveSessions"]
    );
    Ok(())
}

/// A bodiless POST to the admin socket; the status and body of the answer.
async fn admin_post(
    socket: &std::path::Path,
    path: &str,
) -> anyhow::Result<(axum::http::StatusCode, axum::body::Bytes)> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // Drives the connection while the one request is in flight.
    tokio::spawn(conn);
    let req = axum::http::Request::post(path)
        .header(axum::http::header::HOST, "browserd")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub async fn run_backup(common: &Common, file: &Path) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    if config.database.is_some() {
        bail!(
            "with --database the state is in PostgreSQL (contexts and extensions too): back it up with pg_dump; see docs/operations.md"
        );
    }
    let copied = crate::backup::backup(&config.data_dir, file).await?;
    println!(
        "backed up {} ({} files, {} bytes) to {}",
        config.data_dir.display(),
        copied.files,
        copied.bytes,
        file.display()
    );
    Ok(())
}

pub fn run_restore(common: &Common, file: &Path) -> anyhow::Result<()> {
    let config = Config::resolve(common, &Settings::default())?;
    if config.database.is_some() {
        bail!("with --database the state is in PostgreSQL: restore it with pg_restore / psql");
    }
    let copied = crate::backup::restore(file, &config.data_dir)?;
    println!(
        "restored {} files ({} bytes) into {}; start it with: browserd serve --data-dir {}",
        copied.files,
        copied.bytes,
        config.data_dir.display(),
        config.data_dir.display()
    );
    Ok(())
}
