//! Persistence: projects, API key hashes, sessions, contexts, extensions and server settings.
//!
//! One trait per aggregate ([`ProjectStore`], [`SessionStore`], [`ContextStore`],
//! [`ExtensionStore`], [`SettingStore`]); the rest of browserd holds them as `Arc<dyn …>`
//! in a [`Store`] and never names a database. [`open`] gives the embedded SQLite database in
//! the data dir; a shared database implements the same traits and passes the same
//! conformance suite (`conformance.rs`). The session lifecycle needs only [`SessionStore`],
//! so its state-machine tests run on an in-memory one under paused time (sqlx's worker
//! thread and paused time do not mix).

#[cfg(test)]
mod conformance;
mod postgres;
mod rows;
mod sqlite;

use crate::model::{
    BrowserRecord, Certificate, Context, Extension, NavigationPolicy, Node, Project, Session,
    SessionStatus,
};
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database could not be reached (down, restarting, cut off), as opposed to
    /// refusing a statement: worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08: connection exception; 57P: the server is shutting down
                // or restarting.
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored API key, as listed: its id and age (only its hash is kept, never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub created_at: OffsetDateTime,
}

/// A key's id: the first 12 hex digits of its hash. Stable, derived (no column, so the keys
/// of older data dirs have one too), and it reveals nothing usable about the key.
pub fn api_key_id(key_hash: &str) -> String {
    key_hash.chars().take(API_KEY_ID_LEN).collect()
}

pub const API_KEY_ID_LEN: usize = 12;

/// Whether `id` has a key id's shape (12 lowercase hex digits): anything else names no key.
pub fn is_api_key_id(id: &str) -> bool {
    id.len() == API_KEY_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The setting that marks a key (by hash) as revoked.
pub fn revoked_key_setting(key_hash: &str) -> String {
    format!("revoked_api_key:{key_hash}")
}

/// What a [`ProjectStore::revoke_api_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    /// The project has no key with that id.
    NoSuchKey,
    /// That key is the project's last: kept.
    LastKey,
}

/// The setting that names the default project (the operator's, made on first start).
pub const SETTING_DEFAULT_PROJECT: &str = "default_project_id";

/// Opens (creating if needed) the embedded database at `path` and brings its schema up to
/// date.
/// Copies the embedded database at `db` to `dest` as one consistent snapshot, while a
/// server may be writing to it (see [`crate::backup`]).
pub async fn snapshot_sqlite(db: &Path, dest: &Path) -> Result<()> {
    sqlite::snapshot(db, dest).await
}

pub async fn open(path: &Path) -> Result<Store> {
    Ok(Store::new(
        Arc::new(sqlite::SqliteStore::open(path).await?),
        false,
    ))
}

/// Where a database's schema stands against this browserd's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// No browserd schema yet: the first start makes it.
    Empty,
    Current,
    /// Older: the next start of this version brings it up to date.
    Behind {
        applied: i64,
        latest: i64,
    },
    /// Newer than this browserd knows: a later version wrote it.
    Ahead {
        applied: i64,
        latest: i64,
    },
}

impl SchemaState {
    fn of(applied: Option<i64>, latest: i64) -> Self {
        match applied {
            None => Self::Empty,
            Some(a) if a == latest => Self::Current,
            Some(applied) if applied < latest => Self::Behind { applied, latest },
            Some(applied) => Self::Ahead { applied, latest },
        }
    }
}

/// Connects without changing anything (no migration, no row written; a read-only
/// connection for SQLite) and says where the schema stands: for `browserd doctor`, which
/// may run beside a server, or before a rolling upgrade.
pub async fn probe(database: Option<&str>, sqlite_path: &Path) -> Result<SchemaState> {
    match database {
        Some(url) => postgres::probe(url).await,
        None => sqlite::probe(sqlite_path).await,
    }
}

/// Connects to a PostgreSQL database that several nodes share (`postgres://…`) and brings
/// its schema up to date (migrations take a lock: nodes starting at once wait for one).
pub async fn open_shared(url: &str) -> Result<Store> {
    Ok(Store::new(
        Arc::new(postgres::PostgresStore::connect(url).await?),
        true,
    ))
}

/// Every aggregate's store, each behind its trait. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub projects: Arc<dyn ProjectStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub contexts: Arc<dyn ContextStore>,
    pub extensions: Arc<dyn ExtensionStore>,
    pub certificates: Arc<dyn CertificateStore>,
    pub navigation_policies: Arc<dyn NavigationPolicyStore>,
    pub settings: Arc<dyn SettingStore>,
    pub nodes: Arc<dyn NodeStore>,
    pub blobs: Arc<dyn BlobStore>,
    database: Arc<dyn Database>,
    /// Whether other nodes may share it (PostgreSQL): then nodes hold leases and sweep for
    /// each other. The embedded database belongs to one node.
    shared: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// One database serving every aggregate.
    pub fn new(database: Arc<dyn Database>, shared: bool) -> Self {
        Self {
            projects: database.clone(),
            sessions: database.clone(),
            contexts: database.clone(),
            extensions: database.clone(),
            certificates: database.clone(),
            navigation_policies: database.clone(),
            settings: database.clone(),
            nodes: database.clone(),
            blobs: database.clone(),
            database,
            shared,
        }
    }

    /// Whether several nodes may share this store.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Closes the database's connections (the CLI, before it exits).
    pub async fn close(&self) {
        self.database.close().await;
    }
}

/// A database that holds every aggregate.
#[async_trait::async_trait]
pub trait Database:
    ProjectStore
    + SessionStore
    + ContextStore
    + ExtensionStore
    + CertificateStore
    + NavigationPolicyStore
    + SettingStore
    + NodeStore
    + BlobStore
{
    async fn close(&self);
}

/// Projects and their API keys (stored as hashes).
#[async_trait::async_trait]
pub trait ProjectStore: Send + Sync + 'static {
    async fn create_project(
        &self,
        name: &str,
        default_timeout_secs: u64,
        concurrency: u32,
        creations_per_minute: u32,
    ) -> Result<Project>;

    async fn get_project(&self, id: &str) -> Result<Option<Project>>;

    /// Every project, oldest first.
    async fn list_projects(&self) -> Result<Vec<Project>>;

    /// Sets a project's default timeout; `None` if there is no such project.
    async fn set_default_timeout(&self, id: &str, secs: u64) -> Result<Option<Project>>;

    /// Sets a project's creation rate (sessions per minute, 0: none); `None` if no such project.
    async fn set_creation_rate(&self, id: &str, per_minute: u32) -> Result<Option<Project>>;

    /// Sets how many sessions a project may run at once; `None` if no such project. The
    /// next create checks against it (limits are read in the create's own transaction).
    async fn set_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>>;

    /// Adds a key (by hash) to a project; a hash already stored is left as it is.
    async fn add_api_key(&self, project_id: &str, key_hash: &str) -> Result<()>;

    /// A project's keys (their ids, never the keys), oldest first.
    async fn list_api_keys(&self, project_id: &str) -> Result<Vec<ApiKeyInfo>>;

    /// Removes a project's key by its id ([`api_key_id`]), unless it is the project's last
    /// (a project without a key could never be reached again through the API). Atomic:
    /// two revokes racing for a project's last two keys leave one. The revoked key's hash
    /// is remembered ([`revoked_key_setting`]), so a start-up with it configured (the
    /// operator's `BROWSERD_API_KEY`) refuses instead of bringing it back.
    async fn revoke_api_key(&self, project_id: &str, key_id: &str) -> Result<Revoke>;

    /// Lowers a project's concurrency to `concurrency` only if that is no more than it is
    /// now (read in the same statement): a tenant's lowering that raced an operator's
    /// cannot undo it. `None`: no such project, or the limit is already lower.
    async fn lower_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>>;

    /// Tightens a project's creation rate to `per_minute` only if that is no looser than it
    /// is now (0 is no limit), as one statement; `None` otherwise.
    async fn tighten_creation_rate(&self, id: &str, per_minute: u32) -> Result<Option<Project>>;

    /// The project an API key (by hash) belongs to.
    async fn project_for_key(&self, key_hash: &str) -> Result<Option<Project>>;
}

/// Contexts' rows (their sealed profiles are files, kept by the `files` module).
#[async_trait::async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// Creates a context; `None` if the project already has an active context of that name
    /// (compared trimmed and case-insensitively).
    async fn create_context(&self, project_id: &str, name: Option<&str>)
    -> Result<Option<Context>>;

    async fn get_context(&self, id: &str) -> Result<Option<Context>>;

    /// Deletes a context's row; whether there was one.
    async fn delete_context(&self, id: &str) -> Result<bool>;
}

/// Extensions' rows (their files are kept by the `files` module).
#[async_trait::async_trait]
pub trait ExtensionStore: Send + Sync + 'static {
    async fn insert_extension(&self, extension: &Extension) -> Result<()>;

    async fn get_extension(&self, id: &str) -> Result<Option<Extension>>;

    /// Deletes an extension's row; whether there was one.
    async fn delete_extension(&self, id: &str) -> Result<bool>;

    /// Whether any project's extension still has this content (its folder is in use).
    async fn extension_content_in_use(&self, content: &str) -> Result<bool>;
}

/// CA certificates' rows (their PEM text included: a few KiB each).
#[async_trait::async_trait]
pub trait CertificateStore: Send + Sync + 'static {
    async fn insert_certificate(&self, certificate: &Certificate) -> Result<()>;

    async fn get_certificate(&self, id: &str) -> Result<Option<Certificate>>;

    /// A project's certificates, oldest first.
    async fn list_certificates(&self, project_id: &str) -> Result<Vec<Certificate>>;

    /// Deletes a certificate's row; whether there was one.
    async fn delete_certificate(&self, id: &str) -> Result<bool>;
}

/// Navigation policies' rows.
#[async_trait::async_trait]
pub trait NavigationPolicyStore: Send + Sync + 'static {
    async fn insert_policy(&self, policy: &NavigationPolicy) -> Result<()>;

    async fn get_policy(&self, id: &str) -> Result<Option<NavigationPolicy>>;

    /// A project's policies by name.
    async fn list_policies(&self, project_id: &str) -> Result<Vec<NavigationPolicy>>;

    /// Replaces a policy's name and rules; whether there was one.
    async fn update_policy(&self, policy: &NavigationPolicy) -> Result<bool>;

    /// Deletes a policy's row; whether there was one.
    async fn delete_policy(&self, id: &str) -> Result<bool>;
}

/// Server-wide settings: a few named strings (the default project, the signing secret).
#[async_trait::async_trait]
pub trait SettingStore: Send + Sync + 'static {
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;

    /// Stores `value` unless the key already has one; returns the value in force (so two
    /// servers starting at once agree on one).
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String>;

    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}

/// Opaque blobs by kind and id, for files every node must read (sealed contexts, extension
/// zips) when the store is shared.
#[async_trait::async_trait]
pub trait BlobStore: std::fmt::Debug + Send + Sync + 'static {
    async fn get_blob(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>>;

    /// Stores (or replaces) a blob, whole.
    async fn put_blob(&self, kind: &str, id: &str, data: &[u8]) -> Result<()>;

    /// Deletes a blob; whether there was one.
    async fn delete_blob(&self, kind: &str, id: &str) -> Result<bool>;

    /// Waits for and takes the cluster-wide lock on one blob (a context being saved on one
    /// node while a session on another loads it); released when the guard drops, or when
    /// the holding node's connection dies with it. The embedded store's node is alone:
    /// nothing to take.
    async fn lock_blob(&self, kind: &str, id: &str) -> Result<BlobLock>;
}

/// Holds a blob's cluster-wide lock while it lives.
pub struct BlobLock(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

impl BlobLock {
    /// A lock that holds nothing (the embedded store).
    pub fn none() -> Self {
        Self(None)
    }

    pub fn holding(guard: impl Send + Sync + 'static) -> Self {
        Self(Some(Box::new(guard)))
    }
}

impl std::fmt::Debug for BlobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobLock").finish_non_exhaustive()
    }
}

/// The nodes that share the store, each with a lease it renews by heartbeat. Lease times
/// are the database's clock, so nodes' clocks need not agree.
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Registers (or re-registers) a node as live with a lease of `lease`, under a new
    /// epoch, which it returns.
    async fn register_node(
        &self,
        name: &str,
        url: &str,
        public_url: Option<&str>,
        max_sessions: u32,
        lease: std::time::Duration,
    ) -> Result<i64>;

    /// Renews a node's lease and records its load and whether it drains; `false` if the
    /// node is no longer live under `epoch` (a sweeper gave it up for dead while it was
    /// silent).
    async fn heartbeat(
        &self,
        name: &str,
        epoch: i64,
        live_sessions: u32,
        draining: bool,
        lease: std::time::Duration,
    ) -> Result<bool>;

    /// Marks a node as gone on purpose (shutdown).
    async fn leave_node(&self, name: &str, epoch: i64) -> Result<()>;

    /// Every node ever registered, by name.
    async fn list_nodes(&self) -> Result<Vec<Node>>;

    async fn get_node(&self, name: &str) -> Result<Option<Node>>;

    /// Declares every live node whose lease ran out lost (raising its epoch) and ends its
    /// PENDING and RUNNING sessions as ERROR with `reason` (the node's name appended), in
    /// one transaction; then times out, as the backstop for an owner that is gone, sessions
    /// past their `expires_at` by more than `grace`. Returns the sessions it ended.
    async fn sweep(&self, reason: &str, grace: std::time::Duration) -> Result<Vec<Uuid>>;
}

/// What a project allows when one of its sessions is created (see
/// [`SessionStore::insert_session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectLimits {
    /// Sessions PENDING or RUNNING at once.
    pub concurrency: u32,
    /// Sessions created per minute; 0: no limit.
    pub per_minute: u32,
}

/// Why a project's limits refused a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ProjectFull { limit: u32, current: usize },
    RateLimited { limit: u32, retry_after_secs: u64 },
}

/// The wait until a create fits its project's rate again: a minute after the oldest of
/// the creates counted in the minute before `at`.
fn retry_after(oldest: OffsetDateTime, at: OffsetDateTime) -> u64 {
    let wait = (oldest + time::Duration::MINUTE - at).as_seconds_f64();
    wait.ceil().max(1.0) as u64
}

/// Which sessions a list returns: newest first (by creation, then id), at most `limit`, of
/// one project and one status if given, and only those after `after` in that order (the
/// last one of the previous page) so that a long list is read a page at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionQuery<'a> {
    pub project_id: Option<&'a str>,
    pub status: Option<SessionStatus>,
    /// Only sessions whose user metadata holds this string at this path of keys. A store
    /// may return others too (callers check [`Session::user_metadata`] again): it narrows
    /// in the database where it can.
    pub metadata: Option<(&'a [String], &'a str)>,
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: u32,
}

impl<'a> SessionQuery<'a> {
    /// The first `limit` sessions of a project (`None`: of every project).
    pub fn newest(project_id: Option<&'a str>, limit: u32) -> Self {
        Self {
            project_id,
            limit,
            ..Self::default()
        }
    }

    /// The page that follows `last`, the last session of this one.
    pub fn next_page(self, last: &Session) -> Self {
        Self {
            after: Some((last.created_at, last.id)),
            ..self
        }
    }
}

/// What a project has used, as `GET /v1/projects/{id}/usage` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub browser_minutes: u64,
    pub proxy_bytes: u64,
}

impl Usage {
    /// From a usage query's sums: minutes and proxy bytes of sessions not billed yet, and
    /// the billed totals.
    fn from_sums(unbilled: (i64, i64), billed: (i64, i64)) -> Self {
        Self {
            browser_minutes: (unbilled.0 + billed.0).max(0) as u64,
            proxy_bytes: (unbilled.1 + billed.1).max(0) as u64,
        }
    }
}

/// What ended sessions add to their project's usage totals.
#[derive(Debug, Default, Clone, Copy)]
struct Billed {
    minutes: u64,
    proxy_bytes: u64,
    sessions: u64,
}

/// Ended sessions' usage, by project, as it is added to the usage totals.
fn fold_usage(ended: &[Session]) -> std::collections::BTreeMap<&str, Billed> {
    let mut by_project = std::collections::BTreeMap::<&str, Billed>::new();
    for s in ended {
        let entry = by_project.entry(s.project_id.as_str()).or_default();
        // An ended session's minutes do not depend on "now".
        entry.minutes += s.browser_minutes(s.ended_at.unwrap_or(s.started_at));
        entry.proxy_bytes += s.proxy_bytes;
        entry.sessions += 1;
    }
    by_project
}

/// What the session lifecycle writes. Every method is a single statement, so a crash
/// between two calls leaves a consistent (if unfinished) record.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session if its project has room, as one transaction (two creates
    /// racing for a project's last place cannot both get it, whichever server they reach):
    /// fewer than `limits.concurrency` of the project's sessions PENDING or RUNNING, and,
    /// with a rate, fewer than `limits.per_minute` created in the minute before
    /// `session.created_at`. `Ok(Err(_))`: refused, nothing stored.
    async fn insert_session(
        &self,
        session: &Session,
        limits: ProjectLimits,
    ) -> Result<std::result::Result<(), Refusal>>;

    /// PENDING → RUNNING, with the real start and deadline and where the browser runs.
    async fn mark_running(
        &self,
        id: Uuid,
        started_at: OffsetDateTime,
        expires_at: OffsetDateTime,
        browser: Option<&BrowserRecord>,
    ) -> Result<()>;

    /// Records the end of a session. Idempotent: a session that already ended keeps its
    /// first status. Returns whether this call ended it.
    async fn finish_session(
        &self,
        id: Uuid,
        status: SessionStatus,
        ended_at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool>;

    /// Adds bytes that crossed the session's upstream proxies to its record.
    async fn add_proxy_bytes(&self, id: Uuid, bytes: u64) -> Result<()>;

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>>;

    /// One page of sessions, newest first (see [`SessionQuery`]).
    async fn list_sessions(&self, query: SessionQuery<'_>) -> Result<Vec<Session>>;

    /// A project's usage: its usage total (see [`bill_ended`](Self::bill_ended)) plus the
    /// browser minutes of its sessions not billed yet, live ones counted up to `now`.
    async fn usage(&self, project_id: &str, now: OffsetDateTime) -> Result<Usage>;

    /// Adds up to `batch` ended sessions not billed yet to their projects' usage totals and
    /// marks them billed, in one transaction (nodes billing at once never count a row
    /// twice), so that usage never reads more than the recent sessions. Returns how many.
    async fn bill_ended(&self, batch: u32) -> Result<u64>;

    /// Deletes up to `batch` sessions that ended before `ended_before`, billing any not
    /// billed yet in the same transaction, so usage totals outlive the rows. Returns how
    /// many were deleted.
    async fn purge_ended(&self, ended_before: OffsetDateTime, batch: u32) -> Result<u64>;

    /// Sessions not yet ended (PENDING or RUNNING), for start-up reconciliation: of `node`
    /// (rows without a node, written before nodes had names, count as every node's), or all
    /// of them with `None` (the embedded database, which has one node whatever its name).
    async fn unended_sessions(&self, node: Option<&str>) -> Result<Vec<Session>>;

    /// Marks a context as saved now (the lifecycle's one write to a context). Returns `false` if the context no longer exists (it
    /// was deleted while a session used it), in which case the save is dropped.
    async fn context_saved(&self, id: &str, at: OffsetDateTime) -> Result<bool>;
}

/// The record `id` names, if it is `project`'s: `None` for a malformed id, a missing record
/// and another project's alike, so ids of other projects cannot be probed. `fetch` gets the
/// id in the stored (hyphenated) form, whatever form the client wrote.
pub async fn owned_by<T, Fut>(
    project: &str,
    id: &str,
    fetch: impl FnOnce(Uuid) -> Fut,
) -> Result<Option<T>>
where
    T: crate::model::ProjectOwned,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let Ok(uuid) = Uuid::try_parse(id) else {
        return Ok(None);
    };
    Ok(fetch(uuid)
        .await?
        .filter(|record| record.project_id() == project))
}

#[cfg(test)]
pub(crate) mod memory {
    //! A [`SessionStore`] in a map, for tests that pause time.
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct MemoryStore {
        // std Mutex: held for a map operation only, never across an await.
        sessions: Mutex<HashMap<Uuid, Session>>,
        /// When each session was inserted, by the (pausable) tokio clock: the rate limit
        /// here follows paused time, where `created_at` (the wall clock) does not move.
        inserted: Mutex<HashMap<Uuid, tokio::time::Instant>>,
        /// Browser minutes of purged sessions, by project.
        archived: Mutex<HashMap<String, Usage>>,
    }

    impl MemoryStore {
        /// Every stored session, in no particular order.
        pub(crate) fn all_sessions(&self) -> Vec<Session> {
            self.sessions.lock().unwrap().values().cloned().collect()
        }
    }

    #[async_trait::async_trait]
    impl SessionStore for MemoryStore {
        async fn insert_session(
            &self,
            session: &Session,
            limits: ProjectLimits,
        ) -> Result<std::result::Result<(), Refusal>> {
            let mut map = self.sessions.lock().unwrap();
            let mut inserted = self.inserted.lock().unwrap();
            let project = |s: &&Session| s.project_id == session.project_id;
            let live = map
                .values()
                .filter(project)
                .filter(|s| !s.status.is_ended())
                .count();
            if live >= limits.concurrency as usize {
                return Ok(Err(Refusal::ProjectFull {
                    limit: limits.concurrency,
                    current: live,
                }));
            }
            let now = tokio::time::Instant::now();
            let minute = std::time::Duration::from_secs(60);
            let recent: Vec<tokio::time::Instant> = map
                .values()
                .filter(project)
                .filter_map(|s| inserted.get(&s.id).copied())
                .filter(|at| now.duration_since(*at) < minute)
                .collect();
            if limits.per_minute > 0 && recent.len() >= limits.per_minute as usize {
                let oldest = recent.iter().min().copied().unwrap_or(now);
                let wait = minute.saturating_sub(now.duration_since(oldest));
                return Ok(Err(Refusal::RateLimited {
                    limit: limits.per_minute,
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }));
            }
            map.insert(session.id, session.clone());
            inserted.insert(session.id, now);
            Ok(Ok(()))
        }

        async fn mark_running(
            &self,
            id: Uuid,
            started_at: OffsetDateTime,
            expires_at: OffsetDateTime,
            browser: Option<&BrowserRecord>,
        ) -> Result<()> {
            let mut map = self.sessions.lock().unwrap();
            let s = map.get_mut(&id).expect("session inserted before it runs");
            if s.status == SessionStatus::Pending {
                s.status = SessionStatus::Running;
                s.started_at = started_at;
                s.expires_at = expires_at;
                s.updated_at = started_at;
                s.browser = browser.cloned();
            }
            Ok(())
        }

        async fn finish_session(
            &self,
            id: Uuid,
            status: SessionStatus,
            ended_at: OffsetDateTime,
            reason: &str,
        ) -> Result<bool> {
            let mut map = self.sessions.lock().unwrap();
            let Some(s) = map.get_mut(&id) else {
                return Ok(false);
            };
            if s.status.is_ended() {
                return Ok(false);
            }
            s.status = status;
            s.ended_at = Some(ended_at);
            s.updated_at = ended_at;
            s.end_reason = Some(reason.to_owned());
            Ok(true)
        }

        async fn add_proxy_bytes(&self, id: Uuid, bytes: u64) -> Result<()> {
            if let Some(s) = self.sessions.lock().unwrap().get_mut(&id) {
                s.proxy_bytes += bytes;
            }
            Ok(())
        }

        async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
            Ok(self.sessions.lock().unwrap().get(&id).cloned())
        }

        async fn list_sessions(&self, q: SessionQuery<'_>) -> Result<Vec<Session>> {
            let mut found: Vec<Session> = self
                .all_sessions()
                .into_iter()
                .filter(|s| q.project_id.is_none_or(|p| s.project_id == p))
                .filter(|s| q.status.is_none_or(|st| s.status == st))
                .filter(|s| q.after.is_none_or(|after| (s.created_at, s.id) < after))
                .filter(|s| {
                    q.metadata.is_none_or(|(keys, value)| {
                        let mut node = s.user_metadata.as_ref();
                        let (last, parents) = keys.split_last().expect("a path has a key");
                        for key in parents {
                            node = node.and_then(|m| m.get(key)).and_then(|v| v.as_object());
                        }
                        node.and_then(|m| m.get(last)).and_then(|v| v.as_str()) == Some(value)
                    })
                })
                .collect();
            found.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
            found.truncate(q.limit as usize);
            Ok(found)
        }

        async fn usage(&self, project_id: &str, now: OffsetDateTime) -> Result<Usage> {
            let mut usage = self
                .archived
                .lock()
                .unwrap()
                .get(project_id)
                .copied()
                .unwrap_or_default();
            for s in self.all_sessions() {
                if s.project_id == project_id {
                    usage.browser_minutes += s.browser_minutes(now);
                    usage.proxy_bytes += s.proxy_bytes;
                }
            }
            Ok(usage)
        }

        async fn bill_ended(&self, _batch: u32) -> Result<u64> {
            // Usage here is computed from every row, and purged rows are added to
            // `archived` as they go: there is nothing to bill ahead of time.
            Ok(0)
        }

        async fn purge_ended(&self, ended_before: OffsetDateTime, batch: u32) -> Result<u64> {
            let mut map = self.sessions.lock().unwrap();
            let mut archived = self.archived.lock().unwrap();
            let old: Vec<Uuid> = map
                .values()
                .filter(|s| s.ended_at.is_some_and(|end| end < ended_before))
                .map(|s| s.id)
                .take(batch as usize)
                .collect();
            for id in &old {
                let s = map.remove(id).expect("listed above");
                let total = archived.entry(s.project_id.clone()).or_default();
                total.browser_minutes += s.browser_minutes(ended_before);
                total.proxy_bytes += s.proxy_bytes;
            }
            Ok(old.len() as u64)
        }

        async fn unended_sessions(&self, node: Option<&str>) -> Result<Vec<Session>> {
            let mut found = self.all_sessions();
            found.retain(|s| {
                !s.status.is_ended()
                    && (node.is_none() || s.node.is_none() || s.node.as_deref() == node)
            });
            Ok(found)
        }

        async fn context_saved(&self, _id: &str, _at: OffsetDateTime) -> Result<bool> {
            Ok(true)
        }
    }
}
