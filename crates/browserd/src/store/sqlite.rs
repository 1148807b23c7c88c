//! The embedded SQLite store (`browserd.db` in the data dir).

use super::rows::{self as rows, rules_text};
use super::{API_KEY_ID_LEN, ApiKeyInfo, Revoke, api_key_id, revoked_key_setting};
use super::{
    BlobLock, BlobStore, CertificateStore, ContextStore, Database, ExtensionStore, NodeStore,
    ProjectLimits, ProjectStore, Refusal, Result, SessionQuery, SessionStore, SettingStore,
    StoreError, Usage,
};
use crate::model::{
    BrowserRecord, Certificate, Context, Extension, Node, Project, Session, SessionStatus,
    fmt_time, parse_time,
};
use serde_json::Value;
use sqlx::FromRow as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Cheap to clone: a handle to a connection pool.
#[derive(Clone, Debug)]
pub(super) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub(super) async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL lets the CLI read while a server writes; busy_timeout makes writers wait
            // for each other instead of failing.
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL is safe against a browserd crash (only a power cut can lose
            // the last commits) and saves an fsync per write, which a create would wait for.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// See [`super::probe`]: a read-only connection (a missing file is `Empty`, not made).
pub(super) async fn probe(path: &Path) -> Result<super::SchemaState> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let latest = sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    if !path.exists() {
        return Ok(super::SchemaState::of(None, latest));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await?;
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut conn)
    .await?;
    let applied: Option<i64> = match table {
        Some(_) => {
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await?
        }
        None => None,
    };
    conn.close().await?;
    Ok(super::SchemaState::of(applied, latest))
}

/// `VACUUM INTO`: SQLite writes one read transaction's view of the database to `dest`; the
/// connection is read-only, so a server using the file goes on writing meanwhile.
pub(super) async fn snapshot(db: &Path, dest: &Path) -> Result<()> {
    use sqlx::ConnectOptions as _;
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    sqlx::query("VACUUM INTO ?")
        .bind(dest.to_string_lossy())
        .execute(&mut conn)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn list_sessions(&self, q: SessionQuery<'_>) -> Result<Vec<Session>> {
        // Built for the filters given (no `? IS NULL OR …`, which keeps SQLite off the
        // indexes): a page is then a walk down sessions_page(_by_status).
        let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM sessions WHERE 1 = 1");
        if let Some(project) = q.project_id {
            sql.push(" AND project_id = ").push_bind(project);
        }
        if let Some(status) = q.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some((at, id)) = q.after {
            let at = fmt_time(at);
            sql.push(" AND (created_at < ").push_bind(at.clone());
            sql.push(" OR (created_at = ").push_bind(at);
            sql.push(" AND id < ").push_bind(id.to_string()).push("))");
        }
        // A JSON path of quoted keys; a key with a double quote cannot be written in one,
        // and is left to the caller's own check.
        if let Some((keys, value)) = q.metadata
            && keys.iter().all(|k| !k.contains('"'))
        {
            let path: String = std::iter::once("$".to_owned())
                .chain(keys.iter().map(|k| format!(".\"{k}\"")))
                .collect();
            sql.push(" AND json_valid(user_metadata) AND json_type(user_metadata, ")
                .push_bind(path.clone())
                .push(") = 'text' AND json_extract(user_metadata, ")
                .push_bind(path)
                .push(") = ")
                .push_bind(value);
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(q.limit);
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn usage(&self, project_id: &str, now: OffsetDateTime) -> Result<Usage> {
        // Session::browser_minutes in SQL, over the sessions not billed yet: whole seconds
        // run (stored times are whole milliseconds, so rounding the julianday difference to
        // them is exact), rounded up to minutes, at least one; PENDING ones have not run.
        let row = sqlx::query(
            "SELECT \
               (SELECT COALESCE(SUM(MAX(1, (CAST(ROUND((julianday(COALESCE(ended_at, ?2)) \
                   - julianday(started_at)) * 86400000) AS INTEGER) / 1000 + 59) / 60)), 0) \
                FROM sessions WHERE project_id = ?1 AND billed = 0 AND status != 'PENDING') \
                 AS unbilled, \
               (SELECT COALESCE(SUM(proxy_bytes), 0) FROM sessions \
                WHERE project_id = ?1 AND billed = 0) AS unbilled_bytes, \
               (SELECT COALESCE(SUM(browser_minutes), 0) FROM usage_totals \
                WHERE project_id = ?1) AS billed_minutes, \
               (SELECT COALESCE(SUM(proxy_bytes), 0) FROM usage_totals \
                WHERE project_id = ?1) AS billed_bytes",
        )
        .bind(project_id)
        .bind(fmt_time(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage::from_sums(
            (row.try_get("unbilled")?, row.try_get("unbilled_bytes")?),
            (row.try_get("billed_minutes")?, row.try_get("billed_bytes")?),
        ))
    }

    async fn bill_ended(&self, batch: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let billed = sqlx::query(
            "UPDATE sessions SET billed = 1 WHERE id IN (SELECT id FROM sessions \
             WHERE billed = 0 AND ended_at IS NOT NULL LIMIT ?) RETURNING *",
        )
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(session_from_row)
        .collect::<Result<Vec<_>>>()?;
        add_to_totals(&mut tx, &billed).await?;
        tx.commit().await?;
        Ok(billed.len() as u64)
    }

    async fn purge_ended(&self, ended_before: OffsetDateTime, batch: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT ?) RETURNING *",
        )
        .bind(fmt_time(ended_before))
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut unbilled = Vec::new();
        for row in &rows {
            if !row.try_get::<bool, _>("billed")? {
                unbilled.push(session_from_row(row)?);
            }
        }
        add_to_totals(&mut tx, &unbilled).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn unended_sessions(&self, node: Option<&str>) -> Result<Vec<Session>> {
        sqlx::query(
            "SELECT * FROM sessions WHERE status IN ('PENDING', 'RUNNING') \
             AND (?1 IS NULL OR node IS NULL OR node = ?1)",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn context_saved(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let updated = sqlx::query("UPDATE contexts SET updated_at = ? WHERE id = ?")
            .bind(fmt_time(at))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn insert_session(
        &self,
        s: &Session,
        limits: ProjectLimits,
    ) -> Result<std::result::Result<(), Refusal>> {
        // One statement, one round trip: SQLite takes the write lock as a writing
        // statement starts, so the counts in its WHERE and the insert see one state and no
        // other create can come between them.
        let since = fmt_time(s.created_at - time::Duration::MINUTE);
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, project_id, status, keep_alive, timeout_secs, region, \
             user_metadata, browser_settings, extension_id, proxies, created_at, updated_at, \
             started_at, expires_at, ended_at, end_reason, \
             browser_pid, browser_start_ticks, browser_dir, browser_cdp_url, node) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM sessions \
                    WHERE project_id = ? AND status IN ('PENDING', 'RUNNING')) < ? \
               AND (? = 0 OR (SELECT COUNT(*) FROM sessions \
                              WHERE project_id = ? AND created_at > ?) < ?)",
        )
        .bind(s.id.to_string())
        .bind(&s.project_id)
        .bind(s.status.as_str())
        .bind(s.keep_alive)
        .bind(s.timeout_secs as i64)
        .bind(&s.region)
        .bind(
            s.user_metadata
                .as_ref()
                .map(|m| Value::Object(m.clone()).to_string()),
        )
        .bind(
            s.browser_settings
                .as_ref()
                .map(|b| serde_json::to_string(b).expect("browser settings serialise")),
        )
        .bind(&s.extension_id)
        .bind(s.proxies.as_ref().map(|v| v.to_string()))
        .bind(fmt_time(s.created_at))
        .bind(fmt_time(s.updated_at))
        .bind(fmt_time(s.started_at))
        .bind(fmt_time(s.expires_at))
        .bind(s.ended_at.map(fmt_time))
        .bind(&s.end_reason)
        .bind(s.browser.as_ref().map(|b| b.pid as i64))
        .bind(s.browser.as_ref().map(|b| b.start_ticks as i64))
        .bind(
            s.browser
                .as_ref()
                .map(|b| b.dir.to_string_lossy().into_owned()),
        )
        .bind(s.browser.as_ref().map(|b| b.cdp_url.clone()))
        .bind(&s.node)
        .bind(&s.project_id)
        .bind(i64::from(limits.concurrency))
        .bind(i64::from(limits.per_minute))
        .bind(&s.project_id)
        .bind(&since)
        .bind(i64::from(limits.per_minute))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Ok(()));
        }
        // Refused: which limit, and by how much (read after the fact, for the message).
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE project_id = ? AND status IN ('PENDING', 'RUNNING')",
        )
        .bind(&s.project_id)
        .fetch_one(&self.pool)
        .await?;
        if limits.per_minute == 0 || live >= i64::from(limits.concurrency) {
            return Ok(Err(Refusal::ProjectFull {
                limit: limits.concurrency,
                current: live as usize,
            }));
        }
        let oldest: Option<String> = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM sessions WHERE project_id = ? AND created_at > ?",
        )
        .bind(&s.project_id)
        .bind(&since)
        .fetch_one(&self.pool)
        .await?;
        let oldest = oldest
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .unwrap_or(s.created_at);
        Ok(Err(Refusal::RateLimited {
            limit: limits.per_minute,
            retry_after_secs: super::retry_after(oldest, s.created_at),
        }))
    }

    async fn mark_running(
        &self,
        id: Uuid,
        started_at: OffsetDateTime,
        expires_at: OffsetDateTime,
        browser: Option<&BrowserRecord>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET status = 'RUNNING', started_at = ?, expires_at = ?, updated_at = ?, \
             browser_pid = ?, browser_start_ticks = ?, browser_dir = ?, browser_cdp_url = ? \
             WHERE id = ? AND status = 'PENDING'",
        )
        .bind(fmt_time(started_at))
        .bind(fmt_time(expires_at))
        .bind(fmt_time(started_at))
        .bind(browser.map(|b| b.pid as i64))
        .bind(browser.map(|b| b.start_ticks as i64))
        .bind(browser.map(|b| b.dir.to_string_lossy().into_owned()))
        .bind(browser.map(|b| b.cdp_url.clone()))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish_session(
        &self,
        id: Uuid,
        status: SessionStatus,
        ended_at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET status = ?, ended_at = ?, updated_at = ?, end_reason = ? \
             WHERE id = ? AND status IN ('PENDING', 'RUNNING')",
        )
        .bind(status.as_str())
        .bind(fmt_time(ended_at))
        .bind(fmt_time(ended_at))
        .bind(reason)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_proxy_bytes(&self, id: Uuid, bytes: u64) -> Result<()> {
        sqlx::query("UPDATE sessions SET proxy_bytes = proxy_bytes + ? WHERE id = ?")
            .bind(bytes as i64)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| session_from_row(&r))
            .transpose()
    }
}

#[async_trait::async_trait]
impl SettingStore for SqliteStore {
    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.get_setting(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting {key} vanished")))
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProjectStore for SqliteStore {
    async fn create_project(
        &self,
        name: &str,
        default_timeout_secs: u64,
        concurrency: u32,
        creations_per_minute: u32,
    ) -> Result<Project> {
        let now = crate::model::now();
        let project = Project {
            id: Uuid::new_v4().to_string(),
            name: name.to_owned(),
            owner_id: "browserd".to_owned(),
            default_timeout_secs,
            concurrency,
            creations_per_minute,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO projects (id, name, owner_id, default_timeout, concurrency, \
             creations_per_minute, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(&project.owner_id)
        .bind(project.default_timeout_secs as i64)
        .bind(project.concurrency as i64)
        .bind(project.creations_per_minute as i64)
        .bind(fmt_time(now))
        .bind(fmt_time(now))
        .execute(&self.pool)
        .await?;
        Ok(project)
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| project_from_row(&r))
            .transpose()
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        sqlx::query("SELECT * FROM projects ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(project_from_row)
            .collect()
    }

    async fn set_default_timeout(&self, id: &str, secs: u64) -> Result<Option<Project>> {
        sqlx::query("UPDATE projects SET default_timeout = ?, updated_at = ? WHERE id = ?")
            .bind(secs as i64)
            .bind(fmt_time(crate::model::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn set_creation_rate(&self, id: &str, per_minute: u32) -> Result<Option<Project>> {
        sqlx::query("UPDATE projects SET creations_per_minute = ?, updated_at = ? WHERE id = ?")
            .bind(per_minute as i64)
            .bind(fmt_time(crate::model::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn set_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>> {
        sqlx::query("UPDATE projects SET concurrency = ?, updated_at = ? WHERE id = ?")
            .bind(i64::from(concurrency))
            .bind(fmt_time(crate::model::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn list_api_keys(&self, project_id: &str) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(
            "SELECT key_hash, created_at FROM api_keys WHERE project_id = ? ORDER BY created_at, key_hash",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: api_key_id(&r.try_get::<String, _>("key_hash")?),
                    created_at: parse_time(&r.try_get::<String, _>("created_at")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn revoke_api_key(&self, project_id: &str, key_id: &str) -> Result<Revoke> {
        let mut tx = self.pool.begin().await?;
        // One statement decides: SQLite runs it alone (writes are serialised), so the
        // count it checks is the count it changes.
        let revoked: Option<String> = sqlx::query_scalar(
            "DELETE FROM api_keys WHERE project_id = ? AND substr(key_hash, 1, ?) = ? \
             AND (SELECT COUNT(*) FROM api_keys WHERE project_id = ?) > 1 RETURNING key_hash",
        )
        .bind(project_id)
        .bind(API_KEY_ID_LEN as i64)
        .bind(key_id)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(hash) = revoked {
            sqlx::query("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)")
                .bind(revoked_key_setting(&hash))
                .bind(fmt_time(crate::model::now()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Revoke::Revoked);
        }
        tx.rollback().await?;
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE project_id = ? AND substr(key_hash, 1, ?) = ?",
        )
        .bind(project_id)
        .bind(API_KEY_ID_LEN as i64)
        .bind(key_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(if exists > 0 {
            Revoke::LastKey
        } else {
            Revoke::NoSuchKey
        })
    }

    async fn lower_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>> {
        let changed = sqlx::query(
            "UPDATE projects SET concurrency = ?, updated_at = ? WHERE id = ? AND concurrency >= ?",
        )
        .bind(i64::from(concurrency))
        .bind(fmt_time(crate::model::now()))
        .bind(id)
        .bind(i64::from(concurrency))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        self.get_project(id).await
    }

    async fn tighten_creation_rate(&self, id: &str, per_minute: u32) -> Result<Option<Project>> {
        let changed = sqlx::query(
            "UPDATE projects SET creations_per_minute = ?1, updated_at = ?2 WHERE id = ?3 \
             AND (creations_per_minute = ?1 OR (?1 != 0 AND (creations_per_minute = 0 OR creations_per_minute > ?1)))",
        )
        .bind(i64::from(per_minute))
        .bind(fmt_time(crate::model::now()))
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        self.get_project(id).await
    }

    async fn add_api_key(&self, project_id: &str, key_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO api_keys (key_hash, project_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(key_hash)
        .bind(project_id)
        .bind(fmt_time(crate::model::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn project_for_key(&self, key_hash: &str) -> Result<Option<Project>> {
        sqlx::query(
            "SELECT p.* FROM projects p JOIN api_keys k ON k.project_id = p.id WHERE k.key_hash = ?",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| project_from_row(&r))
        .transpose()
    }
}

/// Contexts: rows only; their files are the `files` module's.
#[async_trait::async_trait]
impl ContextStore for SqliteStore {
    async fn create_context(
        &self,
        project_id: &str,
        name: Option<&str>,
    ) -> Result<Option<Context>> {
        let now = crate::model::now();
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let context = Context {
            id: Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            name: name.map(str::to_owned),
            created_at: now,
            updated_at: now,
        };
        let inserted = sqlx::query(
            "INSERT INTO contexts (id, project_id, name, name_key, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&context.id)
        .bind(project_id)
        .bind(name)
        .bind(name.map(str::to_lowercase))
        .bind(fmt_time(now))
        .bind(fmt_time(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((inserted == 1).then_some(context))
    }

    async fn get_context(&self, id: &str) -> Result<Option<Context>> {
        sqlx::query("SELECT * FROM contexts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| rows::ContextRow::<String>::from_row(&row)?.try_into())
            .transpose()
    }

    async fn delete_context(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM contexts WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

/// Extensions: rows only; their files are the `files` module's.
#[async_trait::async_trait]
impl ExtensionStore for SqliteStore {
    async fn insert_extension(&self, extension: &Extension) -> Result<()> {
        sqlx::query(
            "INSERT INTO extensions (id, project_id, file_name, created_at, updated_at, content) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&extension.id)
        .bind(&extension.project_id)
        .bind(&extension.file_name)
        .bind(fmt_time(extension.created_at))
        .bind(fmt_time(extension.updated_at))
        .bind(&extension.content)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_extension(&self, id: &str) -> Result<Option<Extension>> {
        sqlx::query("SELECT * FROM extensions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| rows::ExtensionRow::<String>::from_row(&row)?.try_into())
            .transpose()
    }

    async fn extension_content_in_use(&self, content: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM extensions WHERE content = ? LIMIT 1")
            .bind(content)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn delete_extension(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM extensions WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

/// Certificates: rows with their PEM text.
#[async_trait::async_trait]
impl CertificateStore for SqliteStore {
    async fn insert_certificate(&self, certificate: &Certificate) -> Result<()> {
        sqlx::query(
            "INSERT INTO certificates (id, project_id, pem, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&certificate.id)
        .bind(&certificate.project_id)
        .bind(&certificate.pem)
        .bind(fmt_time(certificate.created_at))
        .bind(fmt_time(certificate.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_certificate(&self, id: &str) -> Result<Option<Certificate>> {
        sqlx::query("SELECT * FROM certificates WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| certificate_row(&row))
            .transpose()
    }

    async fn list_certificates(&self, project_id: &str) -> Result<Vec<Certificate>> {
        sqlx::query("SELECT * FROM certificates WHERE project_id = ? ORDER BY created_at, id")
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(certificate_row)
            .collect()
    }

    async fn delete_certificate(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM certificates WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

fn certificate_row(row: &SqliteRow) -> Result<Certificate> {
    rows::CertificateRow::<String>::from_row(row)?.try_into()
}

/// The embedded database's one node. Times are this machine's clock: there is no other.
#[async_trait::async_trait]
impl NodeStore for SqliteStore {
    async fn register_node(
        &self,
        name: &str,
        url: &str,
        public_url: Option<&str>,
        max_sessions: u32,
        lease: Duration,
    ) -> Result<i64> {
        let now = crate::model::now();
        Ok(sqlx::query_scalar(
            "INSERT INTO nodes (name, url, public_url, epoch, state, started_at, heartbeat_at, \
             lease_expires_at, live_sessions, max_sessions) VALUES (?, ?, ?, 1, 'live', ?, ?, ?, 0, ?) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, public_url = excluded.public_url, \
             epoch = nodes.epoch + 1, state = 'live', started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, lease_expires_at = excluded.lease_expires_at, \
             live_sessions = 0, max_sessions = excluded.max_sessions RETURNING epoch",
        )
        .bind(name)
        .bind(url)
        .bind(public_url)
        .bind(fmt_time(now))
        .bind(fmt_time(now))
        .bind(fmt_time(now + lease))
        .bind(i64::from(max_sessions))
        .fetch_one(&self.pool)
        .await?)
    }

    async fn heartbeat(
        &self,
        name: &str,
        epoch: i64,
        live_sessions: u32,
        draining: bool,
        lease: Duration,
    ) -> Result<bool> {
        let now = crate::model::now();
        let renewed = sqlx::query(
            "UPDATE nodes SET heartbeat_at = ?, lease_expires_at = ?, live_sessions = ?, draining = ? \
             WHERE name = ? AND epoch = ? AND state = 'live'",
        )
        .bind(fmt_time(now))
        .bind(fmt_time(now + lease))
        .bind(i64::from(live_sessions))
        .bind(draining)
        .bind(name)
        .bind(epoch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn leave_node(&self, name: &str, epoch: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET state = 'left' WHERE name = ? AND epoch = ?")
            .bind(name)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        sqlx::query("SELECT * FROM nodes ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn get_node(&self, name: &str) -> Result<Option<Node>> {
        sqlx::query("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| node_from_row(&r))
            .transpose()
    }

    async fn sweep(&self, reason: &str, grace: Duration) -> Result<Vec<Uuid>> {
        let now = fmt_time(crate::model::now());
        let mut tx = self.pool.begin().await?;
        let lost: Vec<String> = sqlx::query_scalar(
            "UPDATE nodes SET state = 'lost', epoch = epoch + 1 \
             WHERE state = 'live' AND lease_expires_at < ? RETURNING name",
        )
        .bind(&now)
        .fetch_all(&mut *tx)
        .await?;
        let mut ended = Vec::new();
        for node in &lost {
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE sessions SET status = 'ERROR', ended_at = ?, updated_at = ?, \
                 end_reason = ? WHERE node = ? AND status IN ('PENDING', 'RUNNING') RETURNING id",
            )
            .bind(&now)
            .bind(&now)
            .bind(format!("{reason}{node}"))
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
            ended.extend(ids);
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE sessions SET status = 'TIMED_OUT', ended_at = expires_at, updated_at = ?, \
             end_reason = 'session timed out (ended by the cluster: its node did not)' \
             WHERE status IN ('PENDING', 'RUNNING') AND expires_at < ? RETURNING id",
        )
        .bind(&now)
        .bind(fmt_time(crate::model::now() - grace))
        .fetch_all(&mut *tx)
        .await?;
        ended.extend(ids);
        tx.commit().await?;
        ended
            .iter()
            .map(|id| {
                Uuid::try_parse(id).map_err(|e| StoreError::Corrupt(format!("id {id:?}: {e}")))
            })
            .collect()
    }
}

fn node_from_row(row: &SqliteRow) -> Result<Node> {
    rows::NodeRow::<String>::from_row(row)?.try_into()
}

#[async_trait::async_trait]
impl BlobStore for SqliteStore {
    async fn get_blob(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT data FROM blobs WHERE kind = ? AND id = ?")
                .bind(kind)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_blob(&self, kind: &str, id: &str, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (kind, id, data, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(id)
        .bind(data)
        .bind(fmt_time(crate::model::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_blob(&self, kind: &str, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM blobs WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    async fn lock_blob(&self, _kind: &str, _id: &str) -> Result<BlobLock> {
        Ok(BlobLock::none())
    }
}

#[async_trait::async_trait]
impl Database for SqliteStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

fn project_from_row(row: &SqliteRow) -> Result<Project> {
    rows::ProjectRow::<String>::from_row(row)?.try_into()
}

/// Adds ended sessions' minutes to their projects' usage totals.
async fn add_to_totals(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ended: &[Session],
) -> Result<()> {
    for (project, billed) in super::fold_usage(ended) {
        sqlx::query(
            "INSERT INTO usage_totals (project_id, browser_minutes, proxy_bytes, sessions) \
             VALUES (?1, ?2, ?4, ?3) ON CONFLICT (project_id) DO UPDATE SET \
             browser_minutes = browser_minutes + ?2, proxy_bytes = proxy_bytes + ?4, \
             sessions = sessions + ?3",
        )
        .bind(project)
        .bind(billed.minutes as i64)
        .bind(billed.sessions as i64)
        .bind(billed.proxy_bytes as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn session_from_row(row: &SqliteRow) -> Result<Session> {
    rows::SessionRow::<String>::from_row(row)?.try_into()
}

/// Navigation policies: rows with their rules as JSON.
#[async_trait::async_trait]
impl crate::store::NavigationPolicyStore for SqliteStore {
    async fn insert_policy(&self, policy: &crate::model::NavigationPolicy) -> Result<()> {
        sqlx::query(
            "INSERT INTO navigation_policies (id, project_id, name, rules, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&policy.id)
        .bind(&policy.project_id)
        .bind(&policy.name)
        .bind(rules_text(policy)?)
        .bind(fmt_time(policy.created_at))
        .bind(fmt_time(policy.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_policy(&self, id: &str) -> Result<Option<crate::model::NavigationPolicy>> {
        sqlx::query("SELECT * FROM navigation_policies WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| policy_row(&row))
            .transpose()
    }

    async fn list_policies(&self, project_id: &str) -> Result<Vec<crate::model::NavigationPolicy>> {
        sqlx::query("SELECT * FROM navigation_policies WHERE project_id = ? ORDER BY name, id")
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(policy_row)
            .collect()
    }

    async fn update_policy(&self, policy: &crate::model::NavigationPolicy) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE navigation_policies SET name = ?, rules = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&policy.name)
        .bind(rules_text(policy)?)
        .bind(fmt_time(policy.updated_at))
        .bind(&policy.id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn delete_policy(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM navigation_policies WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

fn policy_row(row: &SqliteRow) -> Result<crate::model::NavigationPolicy> {
    rows::PolicyRow::<String>::from_row(row)?.try_into()
}
