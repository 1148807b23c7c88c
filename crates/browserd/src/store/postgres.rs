//! The shared PostgreSQL store: every node of a cluster reads and writes the same rows.
//!
//! Same contract as the embedded store (`conformance.rs` runs on both). What differs: a
//! project's limits are checked under a per-project advisory lock (two nodes' creates for
//! the same project queue for it; other projects' do not), and leases use the database's
//! clock (`now()`), so nodes need not agree on the time.

use super::rows::{self as rows, rules_text};
use super::{ApiKeyInfo, Revoke, api_key_id, revoked_key_setting};
use super::{
    BlobLock, BlobStore, CertificateStore, ContextStore, Database, ExtensionStore, NodeStore,
    ProjectLimits, ProjectStore, Refusal, Result, SessionQuery, SessionStore, SettingStore,
    StoreError, Usage,
};
use crate::model::SessionStatus;
use crate::model::{BrowserRecord, Certificate, Context, Extension, Node, Project, Session};
use serde_json::Value;
use sqlx::FromRow as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Cheap to clone: a handle to a connection pool.
#[derive(Clone, Debug)]
pub(super) struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub(super) async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("browserd");
        // One connection first, for its own error: a pool that cannot connect says only
        // that it timed out, not that the server refused, the name did not resolve or the
        // certificate did not verify.
        use sqlx::{ConnectOptions as _, Connection as _};
        options.connect().await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // While the database is down, a request waits this long for a connection and
            // then answers 503 (the data path never waits: it does not use the database).
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// See [`super::probe`].
pub(super) async fn probe(url: &str) -> Result<super::SchemaState> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let mut conn = PgConnectOptions::from_str(url)?
        .application_name("browserd doctor")
        .connect()
        .await?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&mut conn)
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
    let latest = sqlx::migrate!("./migrations/postgres")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    Ok(super::SchemaState::of(applied, latest))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn parse_id(id: &str) -> Result<Uuid> {
    Uuid::try_parse(id).map_err(|e| StoreError::Corrupt(format!("id {id:?}: {e}")))
}

#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(
        &self,
        s: &Session,
        limits: ProjectLimits,
    ) -> Result<std::result::Result<(), Refusal>> {
        let since = s.created_at - time::Duration::MINUTE;
        let mut tx = self.pool.begin().await?;
        // Creates for one project take turns (whichever node they reached); the insert's
        // snapshot is taken after the lock, so it counts every create committed before.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&s.project_id)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, project_id, status, keep_alive, timeout_secs, region, \
             user_metadata, browser_settings, extension_id, proxies, created_at, updated_at, \
             started_at, expires_at, ended_at, end_reason, \
             browser_pid, browser_start_ticks, browser_dir, browser_cdp_url, node) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21 \
             WHERE (SELECT COUNT(*) FROM sessions \
                    WHERE project_id = $2 AND status IN ('PENDING', 'RUNNING')) < $22 \
               AND ($23 = 0 OR (SELECT COUNT(*) FROM sessions \
                                WHERE project_id = $2 AND created_at > $24) < $23)",
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
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.started_at)
        .bind(s.expires_at)
        .bind(s.ended_at)
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
        .bind(i64::from(limits.concurrency))
        .bind(i64::from(limits.per_minute))
        .bind(since)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            tx.commit().await?;
            return Ok(Ok(()));
        }
        // Refused: which limit, and by how much (still under the lock, for the message).
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE project_id = $1 AND status IN ('PENDING', 'RUNNING')",
        )
        .bind(&s.project_id)
        .fetch_one(&mut *tx)
        .await?;
        let oldest: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM sessions WHERE project_id = $1 AND created_at > $2",
        )
        .bind(&s.project_id)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        // Ended here, not by the drop: a dropped transaction's rollback waits for the
        // connection's next use, and until then the project's lock stays taken and every
        // other create for it waits (found by 20 racing creates through three nodes).
        tx.rollback().await?;
        if limits.per_minute == 0 || live >= i64::from(limits.concurrency) {
            return Ok(Err(Refusal::ProjectFull {
                limit: limits.concurrency,
                current: live as usize,
            }));
        }
        Ok(Err(Refusal::RateLimited {
            limit: limits.per_minute,
            retry_after_secs: super::retry_after(oldest.unwrap_or(s.created_at), s.created_at),
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
            "UPDATE sessions SET status = 'RUNNING', started_at = $1, expires_at = $2, \
             updated_at = $1, browser_pid = $3, browser_start_ticks = $4, browser_dir = $5, \
             browser_cdp_url = $6 WHERE id = $7 AND status = 'PENDING'",
        )
        .bind(started_at)
        .bind(expires_at)
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
            "UPDATE sessions SET status = $1, ended_at = $2, updated_at = $2, end_reason = $3 \
             WHERE id = $4 AND status IN ('PENDING', 'RUNNING')",
        )
        .bind(status.as_str())
        .bind(ended_at)
        .bind(reason)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_proxy_bytes(&self, id: Uuid, bytes: u64) -> Result<()> {
        sqlx::query("UPDATE sessions SET proxy_bytes = proxy_bytes + $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(bytes as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        sqlx::query("SELECT * FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| session_from_row(&r))
            .transpose()
    }

    async fn list_sessions(&self, q: SessionQuery<'_>) -> Result<Vec<Session>> {
        // Built for the filters given, so that the planner sees plain conditions and walks
        // sessions_page(_by_status) for a page.
        let mut sql =
            sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM sessions WHERE TRUE");
        if let Some(project) = q.project_id {
            sql.push(" AND project_id = ").push_bind(project);
        }
        if let Some(status) = q.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some((at, id)) = q.after {
            sql.push(" AND (created_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id.to_string())
                .push(")");
        }
        if let Some((keys, value)) = q.metadata {
            // The column is text (what the client sent); a row whose text is not JSON
            // cannot be stored, so the cast holds.
            sql.push(" AND jsonb_typeof(user_metadata::jsonb #> ")
                .push_bind(keys.to_vec())
                .push(") = 'string' AND user_metadata::jsonb #>> ")
                .push_bind(keys.to_vec())
                .push(" = ")
                .push_bind(value);
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn usage(&self, project_id: &str, now: OffsetDateTime) -> Result<Usage> {
        // Session::browser_minutes in SQL, over the sessions not billed yet: whole seconds
        // run (TRUNC, as Rust's whole_seconds), rounded up to minutes, at least one;
        // PENDING ones have not run.
        let row = sqlx::query(
            "SELECT \
               (SELECT COALESCE(SUM(GREATEST(1, (TRUNC(EXTRACT(EPOCH FROM \
                   COALESCE(ended_at, $2) - started_at))::bigint + 59) / 60)), 0)::bigint \
                FROM sessions WHERE project_id = $1 AND NOT billed AND status != 'PENDING') \
                 AS unbilled, \
               (SELECT COALESCE(SUM(proxy_bytes), 0)::bigint FROM sessions \
                WHERE project_id = $1 AND NOT billed) AS unbilled_bytes, \
               (SELECT COALESCE(SUM(browser_minutes), 0)::bigint FROM usage_totals \
                WHERE project_id = $1) AS billed_minutes, \
               (SELECT COALESCE(SUM(proxy_bytes), 0)::bigint FROM usage_totals \
                WHERE project_id = $1) AS billed_bytes",
        )
        .bind(project_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(Usage::from_sums(
            (row.try_get("unbilled")?, row.try_get("unbilled_bytes")?),
            (row.try_get("billed_minutes")?, row.try_get("billed_bytes")?),
        ))
    }

    async fn bill_ended(&self, batch: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: nodes billing at once take different rows; the row lock makes a
        // row billed by another transaction fail `NOT billed` here, so none counts twice.
        let billed = sqlx::query(
            "UPDATE sessions SET billed = TRUE WHERE NOT billed AND id IN (SELECT id FROM sessions \
             WHERE NOT billed AND ended_at IS NOT NULL LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(i64::from(batch))
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
             WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(ended_before)
        .bind(i64::from(batch))
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
             AND ($1::text IS NULL OR node IS NULL OR node = $1)",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn context_saved(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let updated = sqlx::query("UPDATE contexts SET updated_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(updated == 1)
    }
}

#[async_trait::async_trait]
impl NodeStore for PostgresStore {
    async fn register_node(
        &self,
        name: &str,
        url: &str,
        public_url: Option<&str>,
        max_sessions: u32,
        lease: Duration,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO nodes (name, url, public_url, epoch, state, started_at, heartbeat_at, \
             lease_expires_at, live_sessions, max_sessions) \
             VALUES ($1, $2, $3, 1, 'live', now(), now(), now() + make_interval(secs => $4), 0, $5) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, public_url = excluded.public_url, \
             epoch = nodes.epoch + 1, state = 'live', started_at = now(), heartbeat_at = now(), \
             lease_expires_at = excluded.lease_expires_at, live_sessions = 0, \
             max_sessions = excluded.max_sessions RETURNING epoch",
        )
        .bind(name)
        .bind(url)
        .bind(public_url)
        .bind(secs(lease))
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
        let renewed = sqlx::query(
            "UPDATE nodes SET heartbeat_at = now(), \
             lease_expires_at = now() + make_interval(secs => $1), live_sessions = $2, \
             draining = $5 WHERE name = $3 AND epoch = $4 AND state = 'live'",
        )
        .bind(secs(lease))
        .bind(i64::from(live_sessions))
        .bind(name)
        .bind(epoch)
        .bind(draining)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn leave_node(&self, name: &str, epoch: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET state = 'left' WHERE name = $1 AND epoch = $2")
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
        sqlx::query("SELECT * FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| node_from_row(&r))
            .transpose()
    }

    async fn sweep(&self, reason: &str, grace: Duration) -> Result<Vec<Uuid>> {
        // One statement per step; `SKIP LOCKED`: sweepers on several nodes at once each take
        // a different expired node, none waits for another.
        let mut tx = self.pool.begin().await?;
        let lost: Vec<String> = sqlx::query_scalar(
            "UPDATE nodes SET state = 'lost', epoch = epoch + 1 WHERE name IN \
             (SELECT name FROM nodes WHERE state = 'live' AND lease_expires_at < now() \
              FOR UPDATE SKIP LOCKED) RETURNING name",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut ended: Vec<String> = sqlx::query_scalar(
            "UPDATE sessions SET status = 'ERROR', ended_at = now(), updated_at = now(), \
             end_reason = $1 || node WHERE node = ANY($2) AND status IN ('PENDING', 'RUNNING') \
             RETURNING id",
        )
        .bind(reason)
        .bind(&lost)
        .fetch_all(&mut *tx)
        .await?;
        let timed_out: Vec<String> = sqlx::query_scalar(
            "UPDATE sessions SET status = 'TIMED_OUT', ended_at = expires_at, updated_at = now(), \
             end_reason = 'session timed out (ended by the cluster: its node did not)' \
             WHERE status IN ('PENDING', 'RUNNING') \
             AND expires_at < now() - make_interval(secs => $1) RETURNING id",
        )
        .bind(secs(grace))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        ended.extend(timed_out);
        ended.iter().map(|id| parse_id(id)).collect()
    }
}

#[async_trait::async_trait]
impl SettingStore for PostgresStore {
    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.get_setting(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting {key} vanished")))
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProjectStore for PostgresStore {
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
             creations_per_minute, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(&project.owner_id)
        .bind(project.default_timeout_secs as i64)
        .bind(i64::from(project.concurrency))
        .bind(i64::from(project.creations_per_minute))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(project)
    }

    async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        sqlx::query("SELECT * FROM projects WHERE id = $1")
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
        sqlx::query("UPDATE projects SET default_timeout = $1, updated_at = $2 WHERE id = $3")
            .bind(secs as i64)
            .bind(crate::model::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn set_creation_rate(&self, id: &str, per_minute: u32) -> Result<Option<Project>> {
        sqlx::query("UPDATE projects SET creations_per_minute = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(per_minute))
            .bind(crate::model::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn set_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>> {
        sqlx::query("UPDATE projects SET concurrency = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(concurrency))
            .bind(crate::model::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_project(id).await
    }

    async fn list_api_keys(&self, project_id: &str) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(
            "SELECT key_hash, created_at FROM api_keys WHERE project_id = $1 ORDER BY created_at, key_hash",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: api_key_id(&r.try_get::<String, _>("key_hash")?),
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn revoke_api_key(&self, project_id: &str, key_id: &str) -> Result<Revoke> {
        let mut tx = self.pool.begin().await?;
        // The project's row locked: two revokes of one project's keys take turns, so the
        // count each checks is the one it changes (read committed would let both see two).
        sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE")
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE project_id = $1")
                .bind(project_id)
                .fetch_all(&mut *tx)
                .await?;
        let Some(hash) = keys.iter().find(|h| api_key_id(h) == key_id) else {
            return Ok(Revoke::NoSuchKey);
        };
        if keys.len() < 2 {
            return Ok(Revoke::LastKey);
        }
        sqlx::query("DELETE FROM api_keys WHERE key_hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(revoked_key_setting(hash))
        .bind(crate::model::fmt_time(crate::model::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Revoke::Revoked)
    }

    async fn lower_concurrency(&self, id: &str, concurrency: u32) -> Result<Option<Project>> {
        let changed = sqlx::query(
            "UPDATE projects SET concurrency = $1, updated_at = $2 WHERE id = $3 AND concurrency >= $1",
        )
        .bind(i64::from(concurrency))
        .bind(crate::model::now())
        .bind(id)
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
            "UPDATE projects SET creations_per_minute = $1, updated_at = $2 WHERE id = $3 \
             AND (creations_per_minute = $1 OR ($1 <> 0 AND (creations_per_minute = 0 OR creations_per_minute > $1)))",
        )
        .bind(i64::from(per_minute))
        .bind(crate::model::now())
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
            "INSERT INTO api_keys (key_hash, project_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key_hash)
        .bind(project_id)
        .bind(crate::model::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn project_for_key(&self, key_hash: &str) -> Result<Option<Project>> {
        sqlx::query(
            "SELECT p.* FROM projects p JOIN api_keys k ON k.project_id = p.id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| project_from_row(&r))
        .transpose()
    }
}

#[async_trait::async_trait]
impl ContextStore for PostgresStore {
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
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&context.id)
        .bind(project_id)
        .bind(name)
        .bind(name.map(str::to_lowercase))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((inserted == 1).then_some(context))
    }

    async fn get_context(&self, id: &str) -> Result<Option<Context>> {
        sqlx::query("SELECT * FROM contexts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| rows::ContextRow::<OffsetDateTime>::from_row(&row)?.try_into())
            .transpose()
    }

    async fn delete_context(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM contexts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

#[async_trait::async_trait]
impl ExtensionStore for PostgresStore {
    async fn insert_extension(&self, extension: &Extension) -> Result<()> {
        sqlx::query(
            "INSERT INTO extensions (id, project_id, file_name, created_at, updated_at, content) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&extension.id)
        .bind(&extension.project_id)
        .bind(&extension.file_name)
        .bind(extension.created_at)
        .bind(extension.updated_at)
        .bind(&extension.content)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_extension(&self, id: &str) -> Result<Option<Extension>> {
        sqlx::query("SELECT * FROM extensions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| rows::ExtensionRow::<OffsetDateTime>::from_row(&row)?.try_into())
            .transpose()
    }

    async fn extension_content_in_use(&self, content: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM extensions WHERE content = $1 LIMIT 1")
            .bind(content)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn delete_extension(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM extensions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

#[async_trait::async_trait]
impl CertificateStore for PostgresStore {
    async fn insert_certificate(&self, certificate: &Certificate) -> Result<()> {
        sqlx::query(
            "INSERT INTO certificates (id, project_id, pem, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&certificate.id)
        .bind(&certificate.project_id)
        .bind(&certificate.pem)
        .bind(certificate.created_at)
        .bind(certificate.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_certificate(&self, id: &str) -> Result<Option<Certificate>> {
        sqlx::query("SELECT * FROM certificates WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| certificate_row(&row))
            .transpose()
    }

    async fn list_certificates(&self, project_id: &str) -> Result<Vec<Certificate>> {
        sqlx::query("SELECT * FROM certificates WHERE project_id = $1 ORDER BY created_at, id")
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(certificate_row)
            .collect()
    }

    async fn delete_certificate(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM certificates WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

fn certificate_row(row: &PgRow) -> Result<Certificate> {
    rows::CertificateRow::<OffsetDateTime>::from_row(row)?.try_into()
}

#[async_trait::async_trait]
impl BlobStore for PostgresStore {
    async fn get_blob(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT data FROM blobs WHERE kind = $1 AND id = $2")
                .bind(kind)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_blob(&self, kind: &str, id: &str, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (kind, id, data, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(id)
        .bind(data)
        .bind(crate::model::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_blob(&self, kind: &str, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM blobs WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    async fn lock_blob(&self, kind: &str, id: &str) -> Result<BlobLock> {
        // A session-level advisory lock on a connection of its own, held by the guard: it
        // spans a context's whole save (seconds), longer than any transaction should.
        let mut conn = self.pool.acquire().await?;
        let key = format!("{kind}:{id}");
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 1))")
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        Ok(BlobLock::holding(AdvisoryLock {
            conn: Some(conn),
            key,
        }))
    }
}

/// Unlocks on drop (on a task: drop cannot wait); if that fails the connection is closed,
/// which releases the lock as well.
struct AdvisoryLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let (Some(mut conn), key) = (self.conn.take(), std::mem::take(&mut self.key)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let _ = conn.detach();
            return;
        };
        runtime.spawn(async move {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 1))")
                .bind(&key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                let _ = conn.close().await;
            }
        });
    }
}

#[async_trait::async_trait]
impl Database for PostgresStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

fn project_from_row(row: &PgRow) -> Result<Project> {
    rows::ProjectRow::<OffsetDateTime>::from_row(row)?.try_into()
}

fn node_from_row(row: &PgRow) -> Result<Node> {
    rows::NodeRow::<OffsetDateTime>::from_row(row)?.try_into()
}

/// Adds ended sessions' minutes to their projects' usage totals.
async fn add_to_totals(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ended: &[Session],
) -> Result<()> {
    for (project, billed) in super::fold_usage(ended) {
        sqlx::query(
            "INSERT INTO usage_totals (project_id, browser_minutes, proxy_bytes, sessions) \
             VALUES ($1, $2, $4, $3) ON CONFLICT (project_id) DO UPDATE SET \
             browser_minutes = usage_totals.browser_minutes + $2, \
             proxy_bytes = usage_totals.proxy_bytes + $4, \
             sessions = usage_totals.sessions + $3",
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

fn session_from_row(row: &PgRow) -> Result<Session> {
    rows::SessionRow::<OffsetDateTime>::from_row(row)?.try_into()
}

/// Navigation policies: rows with their rules as JSON.
#[async_trait::async_trait]
impl crate::store::NavigationPolicyStore for PostgresStore {
    async fn insert_policy(&self, policy: &crate::model::NavigationPolicy) -> Result<()> {
        sqlx::query(
            "INSERT INTO navigation_policies (id, project_id, name, rules, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&policy.id)
        .bind(&policy.project_id)
        .bind(&policy.name)
        .bind(rules_text(policy)?)
        .bind(policy.created_at)
        .bind(policy.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_policy(&self, id: &str) -> Result<Option<crate::model::NavigationPolicy>> {
        sqlx::query("SELECT * FROM navigation_policies WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| policy_row(&row))
            .transpose()
    }

    async fn list_policies(&self, project_id: &str) -> Result<Vec<crate::model::NavigationPolicy>> {
        sqlx::query("SELECT * FROM navigation_policies WHERE project_id = $1 ORDER BY name, id")
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(policy_row)
            .collect()
    }

    async fn update_policy(&self, policy: &crate::model::NavigationPolicy) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE navigation_policies SET name = $1, rules = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&policy.name)
        .bind(rules_text(policy)?)
        .bind(policy.updated_at)
        .bind(&policy.id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn delete_policy(&self, id: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM navigation_policies WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}

fn policy_row(row: &PgRow) -> Result<crate::model::NavigationPolicy> {
    rows::PolicyRow::<OffsetDateTime>::from_row(row)?.try_into()
}
