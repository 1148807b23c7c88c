//! The task that owns one session from launch to end.

use super::ending::{self, Remains};
use super::{Command, CreateError, Ending, Farewell, SessionManager, Slot};
use crate::browser::egress::{AllowedHosts, SessionRules};
use crate::browser::{BrowserInstance, LaunchError, LaunchSpec, Recording, SessionSetup, Viewport};
use crate::fault::Failure;
use crate::files::contexts::ContextSnapshot;
use crate::files::quota::{self, DiskQuota};
use crate::model::{Session, SessionStatus};
use futures_util::FutureExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

/// How often a session's proxy bytes are added to its record while it runs.
const RECORD_PROXY_BYTES_EVERY: Duration = Duration::from_secs(10);

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
    /// CA certificates (PEM) the browser trusts; handed to the launch.
    pub(super) ca_certificates: Vec<String>,
    /// A ready browser (from the warm pool, or adopted after a restart) and when the
    /// session expires; `None`: launch one, and the clock starts when it is ready.
    pub(super) ready_browser: Option<(Box<dyn BrowserInstance>, Instant)>,
    /// Whether the session began (its browser set up for it): only then is its profile
    /// saved into its context at the end.
    pub(super) began: bool,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    /// Set exactly once: when the session has ended, or browserd leaves it running.
    /// Relays and inspectors close their clients on it.
    pub(super) farewell: watch::Sender<Option<Farewell>>,
    /// The session's disk allowance: measured here while the session runs, read by its
    /// log and recording writers. See [`crate::files::quota`].
    pub(super) quota: Arc<DiskQuota>,
    /// Bytes through the session's upstream proxies not yet in its record: the browser's
    /// egress proxy adds to it, [`Self::record_proxy_bytes`] takes from it.
    pub(super) proxy_bytes: Arc<AtomicU64>,
}

impl Supervisor {
    /// Runs the session to its end. `slot` is held here, outside the session's own future,
    /// so that even a panic in it ends the session through [`ending::end_session`] before
    /// the slot is freed.
    pub(super) async fn run(
        self,
        slot: Slot,
        ready: oneshot::Sender<Result<Session, CreateError>>,
    ) {
        let span = tracing::info_span!("session", id = %self.session.id, project = %self.session.project_id);
        let (manager, session, farewell) = (
            Arc::clone(&self.manager),
            self.session.clone(),
            self.farewell.clone(),
        );
        let outcome = std::panic::AssertUnwindSafe(self.run_inner(ready).instrument(span.clone()))
            .catch_unwind()
            .await;
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(parent: &span, panic = %what, "the session's supervisor panicked");
            // Its browser was dropped with the panicked future (its Drop kills the
            // process); what is left of it is its folder.
            let remains = slot.browser_dir().map_or(Remains::Nothing, Remains::Folder);
            let ending = Ending {
                status: SessionStatus::Error,
                reason: "browserd failed while running the session (an internal error); its browser was stopped".into(),
            };
            ending::end_session(
                ending::Records {
                    store: &*manager.store,
                    files: &manager.files,
                    metrics: &manager.metrics,
                },
                &session,
                &ending,
                crate::model::now(),
                remains,
                || {
                    farewell.send_replace(Some(Farewell::Ended(ending.clone())));
                },
            )
            .instrument(span)
            .await;
        }
        drop(slot);
    }

    async fn run_inner(mut self, ready: oneshot::Sender<Result<Session, CreateError>>) {
        if let Some((browser, deadline)) = self.ready_browser.take() {
            // Stored as RUNNING already; its clock started then.
            return self.serve(browser, deadline, ready).await;
        }
        let spec = LaunchSpec {
            context: self.context.clone(),
            extension: self.extension.clone(),
            ca_certificates: std::mem::take(&mut self.ca_certificates),
            ..LaunchSpec::new(self.viewport)
        };
        let launched = self.manager.launcher.launch(&spec).await;
        // The spec holds the context's snapshot too; `begin` takes its cookies.
        drop(spec);
        let mut browser = match launched {
            Ok(browser) => browser,
            Err(e) => {
                tracing::warn!(error = %e, "browser failed to start");
                let reason = format!("the browser failed to start: {e}");
                self.finish(None, Ending::error(reason)).await;
                let _ = ready.send(Err(e.into()));
                return;
            }
        };

        // The timer starts when the browser is ready: expiresAt = startedAt + timeout.
        let timeout = Duration::from_secs(self.session.timeout_secs);
        let deadline = Instant::now() + timeout;
        let started_at = crate::model::now();
        let expires_at = started_at + timeout;
        let record = browser.record();
        let marked = self.manager.metrics.time_store(
            "mark_running",
            self.manager.store.mark_running(
                self.session.id,
                started_at,
                expires_at,
                record.as_ref(),
            ),
        );
        if let Err(e) = marked.await {
            tracing::error!(error = %e, "could not record the session as running");
            let reason = "browserd could not record the session".to_owned();
            self.finish(Some(&mut *browser), Ending::error(reason))
                .await;
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
            self.finish(Some(&mut *browser), Ending::error(reason))
                .await;
            let _ = ready.send(Err(e));
            return;
        }
        self.began = true;
        self.manager.set_ready(self.session.id, &*browser);
        if browser.has_devtools()
            && let Some((open, max, log)) = self.manager.tab_watch(self.session.id)
        {
            // Counts the session's tabs for its filter and closes those past the bound;
            // ends with the browser's connection.
            tokio::spawn(crate::inspect::targets::watch(
                self.manager.dialer(),
                browser.cdp_url().to_owned(),
                open,
                max,
                log,
            ));
        }
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
                self.finish(Some(&mut *browser), ending).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Outcome::Detach(reason, done) => {
                tracing::info!("browserd is stopping; the session's browser keeps running");
                self.farewell
                    .send_replace(Some(Farewell::Detached { reason }));
                browser.detach();
                let _ = done.send(());
            }
        }
    }

    /// Readies the browser for this session: its downloads folder, its context's cookies.
    async fn begin(&mut self, browser: &mut dyn BrowserInstance) -> Result<(), CreateError> {
        let id = self.session.id;
        let files = &self.manager.files;
        let settings = self.session.browser_settings.clone().unwrap_or_default();
        let cookies = self
            .context
            .take()
            .map(|c| Arc::try_unwrap(c).map_or_else(|c| c.cookies.clone(), |c| c.cookies))
            .unwrap_or_default();
        let setup = SessionSetup {
            ignore_certificate_errors: settings.ignore_certificate_errors.unwrap_or(false),
            cookies,
            recording: settings.record_session.unwrap_or(true).then(|| Recording {
                session: id,
                path: files.recording_path(id),
                quota: Arc::clone(&self.quota),
            }),
        };
        browser.begin_session(&setup).await?;
        // The CDP log (`logSession`, on by default) and the primary tab for the live view.
        let log = settings
            .log_session
            .unwrap_or(true)
            .then(|| crate::inspect::logs::start(files.logs_path(id), Arc::clone(&self.quota)));
        // allowedDomains: in place before any client can connect (the session is not ready
        // yet); enforced at the browser's egress, so redirects, new windows and targets made
        // over CDP meet the same check.
        let allowed = settings
            .allowed_domains()
            .map(|list| AllowedHosts::parse(list.iter().map(String::as_str)))
            .transpose()
            .map_err(|e| LaunchError::Sandbox(std::io::Error::other(e)))?;
        // proxies: set in the same place, for the same reason.
        let routes = match &self.session.proxies {
            Some(stored) => crate::browser::proxy::from_store(
                stored,
                id,
                &self.manager.proxy_pool,
                files.vault(),
            )
            .map_err(|e| LaunchError::Sandbox(std::io::Error::other(e)))?,
            None => Default::default(),
        };
        let block_ads = match settings.block_ads.unwrap_or(false) {
            false => None,
            true => Some(
                self.manager
                    .ad_hosts()
                    .await
                    .and_then(|hosts| {
                        hosts.ok_or_else(|| {
                            Failure::operator("no ad-block list exists on this server")
                        })
                    })
                    .map_err(|e| {
                        LaunchError::Sandbox(std::io::Error::other(format!(
                            "browserSettings.blockAds: {e}"
                        )))
                    })?,
            ),
        };
        // A navigation policy: its copy from the create, checked like allowedDomains.
        let navigation = settings.navigation_policy.map(Arc::new);
        match browser.egress_rules() {
            Some(slot) => {
                *slot.write().unwrap() = SessionRules {
                    // The session owns it now: its rules, no longer the warm wait's.
                    unassigned: false,
                    allowed,
                    navigation: navigation.clone(),
                    block_ads: block_ads.clone(),
                    log: log.clone(),
                    routes,
                    proxy_bytes: Arc::clone(&self.proxy_bytes),
                    own_connect: Some((id, self.manager.own_connect())),
                };
            }
            None if allowed.is_some()
                || block_ads.is_some()
                || navigation.is_some()
                || !routes.is_empty() =>
            {
                return Err(LaunchError::Sandbox(std::io::Error::other(
                    "browserSettings.allowedDomains, blockAds and proxies need a sandboxed browser, whose pages leave only through browserd",
                ))
                .into());
            }
            None => {}
        }
        let primary_tab = browser.primary_tab();
        if primary_tab.is_none() && browser.has_devtools() {
            // Asked in the background: on a browser that just started, under a burst of
            // creates, the answer can take a while, and the create need not wait for it.
            // Until it is known the inspector shows the first tab the browser lists.
            let (manager, cdp_url) = (Arc::clone(&self.manager), browser.cdp_url().to_owned());
            tokio::spawn(async move {
                if let Ok(tabs) = crate::inspect::tabs(&manager.dialer(), &cdp_url, None).await
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
        let folders = vec![self.manager.files.session_dir(self.session.id)];
        let downloads = browser
            .downloads_dir()
            .unwrap_or_else(|| self.manager.files.downloads_dir(self.session.id));
        let mut disk_check = tokio::time::interval(quota::CHECK_EVERY);
        disk_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut proxy_count = tokio::time::interval(RECORD_PROXY_BYTES_EVERY);
        proxy_count.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = disk_check.tick() => self.check_disk(&folders, &downloads).await,
                _ = proxy_count.tick() => self.record_proxy_bytes().await,
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

    /// Measures the session's files against its disk allowance, removing downloads past it.
    async fn check_disk(&self, folders: &[PathBuf], downloads: &std::path::Path) {
        let (quota, root, folders, downloads) = (
            Arc::clone(&self.quota),
            self.manager.files.root().to_owned(),
            folders.to_vec(),
            downloads.to_path_buf(),
        );
        let Ok(measured) =
            tokio::task::spawn_blocking(move || quota.enforce(&root, &folders, &downloads)).await
        else {
            return;
        };
        for name in measured.removed {
            tracing::warn!(
                file = %name,
                limit = self.quota.limit(),
                "a download was removed: the session's files reached its disk allowance (--session-disk-mib)"
            );
        }
    }

    /// Adds the bytes counted at the egress since the last call to the session's record
    /// (`proxyBytes`); kept for the next call if the store fails.
    async fn record_proxy_bytes(&self) {
        let bytes = self.proxy_bytes.swap(0, Ordering::Relaxed);
        if bytes == 0 {
            return;
        }
        if let Err(e) = self
            .manager
            .store
            .add_proxy_bytes(self.session.id, bytes)
            .await
        {
            tracing::warn!(error = %e, bytes, "could not record the session's proxy bytes; trying again later");
            self.proxy_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Ends the session through [`ending::end_session`], then tells clients why.
    async fn finish(&mut self, browser: Option<&mut dyn BrowserInstance>, ending: Ending) {
        // Before the end is recorded: billing reads an ended session's bytes once.
        self.record_proxy_bytes().await;
        let remains = match browser {
            Some(browser) => Remains::Browser {
                browser,
                began: self.began,
            },
            None => Remains::Nothing,
        };
        let farewell = &self.farewell;
        ending::end_session(
            ending::Records {
                store: &*self.manager.store,
                files: &self.manager.files,
                metrics: &self.manager.metrics,
            },
            &self.session,
            &ending,
            crate::model::now(),
            remains,
            || {
                farewell.send_replace(Some(Farewell::Ended(ending.clone())));
            },
        )
        .await;
    }
}
