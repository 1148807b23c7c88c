//! Rows as both databases return them (`sqlx::FromRow`), and their mapping to the model:
//! written once for SQLite and PostgreSQL. The dialects differ in how they keep a time
//! (SQLite: text in one format, PostgreSQL: `timestamptz`), so the rows are generic over it
//! ([`StoredTime`]); JSON columns are text in both.

use super::{Result, StoreError};
use crate::model::{
    BrowserRecord, Certificate, Context, Extension, NavigationPolicy, Node, NodeState, Project,
    Session, SessionStatus,
};
use time::OffsetDateTime;

/// How a dialect keeps a time.
pub(super) trait StoredTime {
    fn into_time(self, column: &str) -> Result<OffsetDateTime>;
}

/// SQLite: the text `model::fmt_time` wrote.
impl StoredTime for String {
    fn into_time(self, column: &str) -> Result<OffsetDateTime> {
        crate::model::parse_time(&self)
            .map_err(|e| StoreError::Corrupt(format!("{column} {self:?}: {e}")))
    }
}

/// PostgreSQL: `timestamptz`.
impl StoredTime for OffsetDateTime {
    fn into_time(self, _column: &str) -> Result<OffsetDateTime> {
        Ok(self)
    }
}

/// A JSON column's value, if it has one.
fn json<T: serde::de::DeserializeOwned>(text: Option<String>, column: &str) -> Result<Option<T>> {
    text.map(|s| {
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    })
    .transpose()
}

#[derive(sqlx::FromRow)]
pub(super) struct ProjectRow<T> {
    id: String,
    name: String,
    owner_id: String,
    default_timeout: i64,
    concurrency: i64,
    creations_per_minute: i64,
    created_at: T,
    updated_at: T,
}

impl<T: StoredTime> TryFrom<ProjectRow<T>> for Project {
    type Error = StoreError;
    fn try_from(r: ProjectRow<T>) -> Result<Self> {
        Ok(Project {
            id: r.id,
            name: r.name,
            owner_id: r.owner_id,
            default_timeout_secs: r.default_timeout as u64,
            concurrency: r.concurrency as u32,
            creations_per_minute: r.creations_per_minute as u32,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow<T> {
    id: String,
    project_id: String,
    status: String,
    keep_alive: bool,
    timeout_secs: i64,
    region: String,
    user_metadata: Option<String>,
    browser_settings: Option<String>,
    extension_id: Option<String>,
    proxies: Option<String>,
    proxy_bytes: i64,
    created_at: T,
    updated_at: T,
    started_at: T,
    expires_at: T,
    ended_at: Option<T>,
    end_reason: Option<String>,
    browser_pid: Option<i64>,
    browser_start_ticks: Option<i64>,
    browser_dir: Option<String>,
    browser_cdp_url: Option<String>,
    node: Option<String>,
}

impl<T: StoredTime> TryFrom<SessionRow<T>> for Session {
    type Error = StoreError;
    fn try_from(r: SessionRow<T>) -> Result<Self> {
        Ok(Session {
            id: uuid::Uuid::try_parse(&r.id)
                .map_err(|e| StoreError::Corrupt(format!("id {:?}: {e}", r.id)))?,
            project_id: r.project_id,
            status: SessionStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("status {:?}", r.status)))?,
            keep_alive: r.keep_alive,
            timeout_secs: r.timeout_secs as u64,
            region: r.region,
            user_metadata: json(r.user_metadata, "user_metadata")?,
            browser_settings: json(r.browser_settings, "browser_settings")?,
            extension_id: r.extension_id,
            proxies: json(r.proxies, "proxies")?,
            proxy_bytes: r.proxy_bytes.max(0) as u64,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
            started_at: r.started_at.into_time("started_at")?,
            expires_at: r.expires_at.into_time("expires_at")?,
            ended_at: r.ended_at.map(|t| t.into_time("ended_at")).transpose()?,
            end_reason: r.end_reason,
            // All four, or the row holds no browser (it never started, or it ended).
            browser: match (
                r.browser_pid,
                r.browser_start_ticks,
                r.browser_dir,
                r.browser_cdp_url,
            ) {
                (Some(pid), Some(ticks), Some(dir), Some(cdp_url)) => Some(BrowserRecord {
                    pid: pid as u32,
                    start_ticks: ticks as u64,
                    dir: dir.into(),
                    cdp_url,
                }),
                _ => None,
            },
            node: r.node,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct NodeRow<T> {
    name: String,
    url: String,
    public_url: Option<String>,
    epoch: i64,
    state: String,
    started_at: T,
    heartbeat_at: T,
    lease_expires_at: T,
    live_sessions: i64,
    draining: bool,
    max_sessions: i64,
}

impl<T: StoredTime> TryFrom<NodeRow<T>> for Node {
    type Error = StoreError;
    fn try_from(r: NodeRow<T>) -> Result<Self> {
        Ok(Node {
            name: r.name,
            url: r.url,
            public_url: r.public_url,
            epoch: r.epoch,
            state: NodeState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("node state {:?}", r.state)))?,
            started_at: r.started_at.into_time("started_at")?,
            heartbeat_at: r.heartbeat_at.into_time("heartbeat_at")?,
            lease_expires_at: r.lease_expires_at.into_time("lease_expires_at")?,
            live_sessions: r.live_sessions as u32,
            draining: r.draining,
            max_sessions: r.max_sessions as u32,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ContextRow<T> {
    id: String,
    project_id: String,
    name: Option<String>,
    created_at: T,
    updated_at: T,
}

impl<T: StoredTime> TryFrom<ContextRow<T>> for Context {
    type Error = StoreError;
    fn try_from(r: ContextRow<T>) -> Result<Self> {
        Ok(Context {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ExtensionRow<T> {
    id: String,
    project_id: String,
    file_name: String,
    content: Option<String>,
    created_at: T,
    updated_at: T,
}

impl<T: StoredTime> TryFrom<ExtensionRow<T>> for Extension {
    type Error = StoreError;
    fn try_from(r: ExtensionRow<T>) -> Result<Self> {
        Ok(Extension {
            id: r.id,
            project_id: r.project_id,
            file_name: r.file_name,
            content: r.content,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CertificateRow<T> {
    id: String,
    project_id: String,
    pem: String,
    created_at: T,
    updated_at: T,
}

impl<T: StoredTime> TryFrom<CertificateRow<T>> for Certificate {
    type Error = StoreError;
    fn try_from(r: CertificateRow<T>) -> Result<Self> {
        Ok(Certificate {
            id: r.id,
            project_id: r.project_id,
            pem: r.pem,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PolicyRow<T> {
    id: String,
    project_id: String,
    name: String,
    rules: String,
    created_at: T,
    updated_at: T,
}

impl<T: StoredTime> TryFrom<PolicyRow<T>> for NavigationPolicy {
    type Error = StoreError;
    fn try_from(r: PolicyRow<T>) -> Result<Self> {
        Ok(NavigationPolicy {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            rules: serde_json::from_str(&r.rules)
                .map_err(|e| StoreError::Corrupt(format!("navigation policy rules: {e}")))?,
            created_at: r.created_at.into_time("created_at")?,
            updated_at: r.updated_at.into_time("updated_at")?,
        })
    }
}

/// The policy's rules as the `rules` column keeps them (JSON text, in both dialects).
pub(super) fn rules_text(policy: &NavigationPolicy) -> Result<String> {
    serde_json::to_string(&policy.rules).map_err(|e| StoreError::Corrupt(e.to_string()))
}
