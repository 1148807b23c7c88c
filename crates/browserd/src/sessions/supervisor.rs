//! The task that owns one session from launch to end.

use super::{Command, CreateError, Ending, SessionManager};
use crate::browser::{BrowserInstance, LaunchSpec, SessionSetup, Viewport};
use crate::files::contexts::ContextSnapshot;
use crate::model::{Session, SessionStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

/// How a session's time on this server ends.
enum Outcome {
    /// The session ends; `done` is answered once it has.
    End(Ending, Option<oneshot::Sender<()>>),
    /// browserd stops but the session goes on.
    Detach(String, oneshot::Sender<()>),
}

pub(super) struct Supervisor {
    pub(super) manager: Arc<SessionManager>,
    pub(super) session: Session,
    pub(super) viewport: Viewport,
    /// The loaded context the browser starts with.
    pub(super) context: Option<Arc<ContextSnapshot>>,
    /// An unpacked extension the browser loads.
    pub(super) extension: Option<PathBuf>,
    /// A ready browser (from the warm pool, or adopted after a restart); `None`: launch one.
    pub(super) warm: Option<Box<dyn BrowserInstance>>,
    /// When the session expires, where it is known before launch (a ready browser).
    pub(super) deadline: Option<Instant>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    /// Set exactly once, when the session has ended; relays close their clients on it.
    pub(super) ended: watch::Sender<Option<Ending>>,
}

impl Supervisor {
    pub(super) async fn run(self, ready: oneshot::Sender<Result<Session, CreateError>>) {
        let span = tracing::info_span!("session", id = %self.session.id, project = %self.session.project_id);
        self.run_inner(ready).instrument(span).await
    }

    async fn run_inner(mut self, ready: oneshot::Sender<Result<Session, CreateError>>) {
        let id = self.session.id;
        let mut browser = match (self.warm.take(), self.deadline) {
            (Some(ready_browser), Some(deadline)) => {
                // Stored as RUNNING already; its clock started then.
                return self.serve(ready_browser, deadline, ready).await;
            }
            (Some(mut unexpected), None) => {
                // A ready browser always comes with its deadline; do not leak it if not.
                unexpected.shutdown().await;
                self.manager.free_slot(id);
                let _ = ready.send(Err(CreateError::SupervisorGone));
                return;
            }
            (None, _) => match self
                .manager
                .launcher
                .launch(&LaunchSpec {
                    context: self.context.clone(),
                    extension: self.extension.clone(),
                    ..LaunchSpec::new(self.viewport)
                })
                .await
            {
                Ok(browser) => browser,
                Err(e) => {
                    tracing::warn!(error = %e, "browser failed to start");
                    let reason = format!("the browser failed to start: {e}");
                    self.record_end(SessionStatus::Error, &reason).await;
                    self.manager.free_slot(id);
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            },
        };

        // The timer starts when the browser is ready: expiresAt = startedAt + timeout.
        let timeout = Duration::from_secs(self.session.timeout_secs);
        let deadline = Instant::now() + timeout;
        let started_at = crate::model::now();
        let expires_at = started_at + timeout;
        if let Err(e) = self
            .manager
            .store
            .mark_running(id, started_at, expires_at, browser.record().as_ref())
            .await
        {
            tracing::error!(error = %e, "could not record the session as running");
            browser.shutdown().await;
            self.record_end(
                SessionStatus::Error,
                "browserd could not record the session",
            )
            .await;
            self.manager.free_slot(id);
            let _ = ready.send(Err(e.into()));
            return;
        }
        self.session.status = SessionStatus::Running;
        self.session.started_at = started_at;
        self.session.updated_at = started_at;
        self.session.expires_at = expires_at;
        self.serve(browser, deadline, ready).await;
    }

    /// Runs a session whose browser is ready, from its first client to its end.
    async fn serve(
        mut self,
        mut browser: Box<dyn BrowserInstance>,
        deadline: Instant,
        ready: oneshot::Sender<Result<Session, CreateError>>,
    ) {
        if let Err(e) = self.begin(&mut *browser).await {
            tracing::warn!(error = %e, "could not set up the session's browser");
            let reason = format!("the session's browser could not be set up: {e}");
            // Not `finish`: a session that never began has no context to save.
            self.record_end(SessionStatus::Error, &reason).await;
            browser.shutdown().await;
            self.manager.free_slot(self.session.id);
            let _ = ready.send(Err(e));
            return;
        }
        self.manager.set_ready(self.session.id, &*browser);
        tracing::info!(
            timeout_secs = self.session.timeout_secs,
            keep_alive = self.session.keep_alive,
            "session running"
        );
        if ready.send(Ok(self.session.clone())).is_err() {
            // The create request went away (client hung up). The session still exists and
            // follows its rules: it ends at its timeout if nobody connects.
            tracing::debug!("creator left before the session was ready");
        }

        match self.watch(&mut *browser, deadline).await {
            Outcome::End(ending, done) => {
                self.finish(&mut *browser, ending).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Outcome::Detach(reason, done) => {
                tracing::info!("browserd is stopping; the session's browser keeps running");
                let _ = self.ended.send(Some(Ending {
                    status: SessionStatus::Running,
                    reason,
                }));
                browser.detach();
                self.manager.free_slot(self.session.id);
                let _ = done.send(());
            }
        }
    }

    /// Readies the browser for this session: its downloads folder, its context's cookies.
    async fn begin(&mut self, browser: &mut dyn BrowserInstance) -> Result<(), CreateError> {
        let id = self.session.id;
        let files = &self.manager.files;
        let setting = |name: &str| {
            self.session
                .browser_settings
                .as_ref()
                .and_then(|s| s.get(name))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true)
        };
        let cookies = self
            .context
            .take()
            .and_then(|c| Arc::into_inner(c).map(|c| c.cookies))
            .unwrap_or_default();
        let setup = SessionSetup {
            keep_downloads_in: files.downloads_dir(id),
            cookies,
            recording: setting("recordSession").then(|| (id, files.recording_path(id))),
        };
        browser.begin_session(&setup).await?;
        // The CDP log (`logSession`, on by default) and the primary tab for the live view.
        let log = setting("logSession").then(|| crate::inspect::logs::start(files.logs_path(id)));
        let primary_tab = browser.primary_tab();
        if primary_tab.is_none() && browser.has_devtools() {
            // Asked in the background: on a browser that just started, under a burst of
            // creates, the answer can take a while, and the create need not wait for it.
            // Until it is known the inspector shows the first tab the browser lists.
            let (manager, cdp_url) = (Arc::clone(&self.manager), browser.cdp_url().to_owned());
            tokio::spawn(async move {
                if let Ok(tabs) = crate::inspect::tabs(&cdp_url, None).await
                    && let Some(first) = tabs.into_iter().next()
                {
                    manager.set_primary_tab(id, first.id);
                }
            });
        }
        self.manager.set_inspection(id, log, primary_tab);
        Ok(())
    }

    /// Waits for whatever ends the session first.
    async fn watch(&mut self, browser: &mut dyn BrowserInstance, deadline: Instant) -> Outcome {
        let mut clients: usize = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    let reason = format!(
                        "session timed out: it reached its timeout of {}s",
                        self.session.timeout_secs
                    );
                    return Outcome::End(Ending { status: SessionStatus::TimedOut, reason }, None);
                }
                how = browser.exited() => {
                    return Outcome::End(Ending { status: SessionStatus::Error, reason: how }, None);
                }
                command = self.commands.recv() => match command {
                    Some(Command::ClientConnected) => clients += 1,
                    Some(Command::ClientDisconnected) => {
                        clients = clients.saturating_sub(1);
                        if clients == 0 && !self.session.keep_alive {
                            let reason = "session ended: its last client disconnected and keepAlive is off".to_owned();
                            return Outcome::End(Ending { status: SessionStatus::Completed, reason }, None);
                        }
                    }
                    Some(Command::End { ending, done }) => return Outcome::End(ending, Some(done)),
                    Some(Command::Detach { reason, done }) => return Outcome::Detach(reason, done),
                    // The manager holds a sender while the session is live, so this is unreachable
                    // in practice; treat it as an orderly end.
                    None => {
                        let reason = "browserd is shutting down".to_owned();
                        return Outcome::End(Ending { status: SessionStatus::Completed, reason }, None);
                    }
                },
            }
        }
    }

    /// The one ending path: record the status, close clients with the reason, save the
    /// profile into its context (`persist: true`), stop the browser and remove its files,
    /// free the slot.
    async fn finish(&mut self, browser: &mut dyn BrowserInstance, ending: Ending) {
        tracing::info!(status = ending.status.as_str(), reason = %ending.reason, "session ending");
        let persist = self
            .session
            .context()
            .filter(|c| c.persist)
            .map(|c| c.id.to_owned());
        // Taken before the end is recorded: a create that sees this session ended and
        // loads the context waits for this save.
        let vault = self.manager.files.vault();
        let guard = match &persist {
            Some(id) => Some(vault.lock(id).await),
            None => None,
        };
        // Recorded before clients are told, so a client that sees the close and asks the
        // API about the session already reads the final status.
        self.record_end(ending.status, &ending.reason).await;
        let _ = self.ended.send(Some(ending));
        if let (Some(id), Some(guard)) = (&persist, &guard) {
            let files = &self.manager.files;
            super::save_context(files, &*self.manager.store, id, browser, guard).await;
        }
        drop(guard);
        browser.shutdown().await;
        self.manager.free_slot(self.session.id);
    }

    async fn record_end(&self, status: SessionStatus, reason: &str) {
        if let Err(e) = self
            .manager
            .store
            .finish_session(self.session.id, status, crate::model::now(), reason)
            .await
        {
            tracing::error!(error = %e, "could not record the session's end");
        }
    }
}
