//! Persistence: projects, API key hashes, sessions, contexts, extensions and server settings.
//!
//! [`SqliteStore`] is the embedded database in the data dir. The session lifecycle only
//! needs the narrow [`SessionStore`] trait, so its state-machine tests can run on an
//! in-memory store under paused time (sqlx's worker thread and paused time do not mix).

mod sqlite;

pub use sqlite::SqliteStore;

use crate::model::{BrowserRecord, Session, SessionStatus};
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

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the session lifecycle writes. Every method is a single statement, so a crash
/// between two calls leaves a consistent (if unfinished) record.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &Session) -> Result<()>;

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

    async fn get_session(&self, id: Uuid) -> Result<Option<Session>>;

    /// Marks a context as saved now. Returns `false` if the context no longer exists (it
    /// was deleted while a session used it), in which case the save is dropped.
    async fn context_saved(&self, id: &str, at: OffsetDateTime) -> Result<bool>;
}

#[cfg(test)]
pub mod memory {
    //! A [`SessionStore`] in a map, for tests that pause time.
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct MemoryStore {
        // std Mutex: held for a map operation only, never across an await.
        sessions: Mutex<HashMap<Uuid, Session>>,
    }

    impl MemoryStore {
        /// Every stored session, in no particular order.
        pub fn all_sessions(&self) -> Vec<Session> {
            self.sessions.lock().unwrap().values().cloned().collect()
        }
    }

    #[async_trait::async_trait]
    impl SessionStore for MemoryStore {
        async fn insert_session(&self, session: &Session) -> Result<()> {
            self.sessions
                .lock()
                .unwrap()
                .insert(session.id, session.clone());
            Ok(())
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

        async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
            Ok(self.sessions.lock().unwrap().get(&id).cloned())
        }

        async fn context_saved(&self, _id: &str, _at: OffsetDateTime) -> Result<bool> {
            Ok(true)
        }
    }
}
