//! The one way a session ends.
//!
//! Every exit passes through [`end_session`]: release, timeout, last disconnect,
//! `Browser.close`, a crash, shutdown, a browser that fails to start or to be set up, a
//! panicking supervisor (see `supervisor.rs`), start-up reconciliation of sessions a previous
//! run left (`server.rs`) and a release from the command line while no server runs. The
//! slot a live session holds is freed by its [`super::Slot`] guard, after this returns.

use crate::browser::BrowserInstance;
use crate::files::FileStore;
use crate::model::{BrowserRecord, Ending, Session};
use crate::store::SessionStore;
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;

/// What is left of a session's browser at its end.
pub(crate) enum Remains<'a> {
    /// A browser process (running, or exited but not yet cleaned up); `began`: it was set
    /// up for the session, so its profile is the session's to save into a context.
    Browser {
        browser: &'a mut dyn BrowserInstance,
        began: bool,
    },
    /// Only its folder: the browser died while browserd was down.
    Folder(PathBuf),
    /// Nothing was ever started (a launch failed, a fake browser).
    Nothing,
}

impl<'a> Remains<'a> {
    /// What is left of a session an earlier browserd ran: the browser taken over from it
    /// (`adopted`), else the folder its record names. A browser from an earlier run was set
    /// up for its session.
    pub(crate) fn of_earlier_run(
        adopted: &'a mut Option<Box<dyn BrowserInstance>>,
        record: Option<&BrowserRecord>,
    ) -> Self {
        match (adopted, record) {
            (Some(browser), _) => Remains::Browser {
                browser: &mut **browser,
                began: true,
            },
            (None, Some(record)) => Remains::Folder(record.dir.clone()),
            (None, None) => Remains::Nothing,
        }
    }
}

/// Where an ending is recorded: the store, the files beside it, the metrics.
#[derive(Clone, Copy)]
pub(crate) struct Records<'a> {
    pub(crate) store: &'a dyn SessionStore,
    pub(crate) files: &'a Arc<FileStore>,
    pub(crate) metrics: &'a crate::metrics::Metrics,
}

/// Ends `session` with `ending`, in this order:
///
/// 1. record the end (first recorded end wins; a create that loads the session's context
///    waits for step 3, since the context's lock is taken before this record);
/// 2. `tell_clients` (they read the final status if they ask the API right away);
/// 3. save the profile into its context (`persist: true`), where the session began;
/// 4. stop the browser's whole process tree;
/// 5. keep its downloads among the session's files (after the stop: no download is still
///    being written when it is moved);
/// 6. remove its folder.
///
/// Failures are logged, never returned: the session has ended either way, and every later
/// step still runs.
pub(crate) async fn end_session(
    records: Records<'_>,
    session: &Session,
    ending: &Ending,
    ended_at: OffsetDateTime,
    mut remains: Remains<'_>,
    tell_clients: impl FnOnce(),
) {
    let Records {
        store,
        files,
        metrics,
    } = records;
    tracing::info!(status = ending.status.as_str(), reason = %ending.reason, "session ending");
    metrics
        .endings
        .get_or_create(&crate::metrics::Ended {
            status: ending.status.as_str(),
            reason: crate::metrics::reason_class(&ending.reason),
        })
        .inc();
    let persist = session
        .context()
        .filter(|c| c.persist && matches!(remains, Remains::Browser { began: true, .. }))
        .map(|c| c.id.to_owned());
    let vault = files.vault();
    let guard = match &persist {
        Some(id) => Some(vault.lock(id).await),
        None => None,
    };
    let finished = metrics.time_store(
        "finish_session",
        store.finish_session(session.id, ending.status, ended_at, &ending.reason),
    );
    if let Err(e) = finished.await {
        tracing::error!(error = %e, "could not record the session's end");
    }
    tell_clients();
    if let (Some(id), Some(guard), Remains::Browser { browser, .. }) =
        (&persist, &guard, &mut remains)
    {
        super::save_context(files, store, id, &mut **browser, guard).await;
    }
    drop(guard);
    let folder = match &mut remains {
        Remains::Browser { browser, .. } => {
            browser.stop().await;
            browser.dir().map(|d| d.to_path_buf())
        }
        Remains::Folder(dir) => Some(dir.clone()),
        Remains::Nothing => None,
    };
    if let Some(dir) = &folder {
        let (from, to) = (dir.join("downloads"), files.downloads_dir(session.id));
        let store = Arc::clone(files);
        let _ = tokio::task::spawn_blocking(move || store.keep_downloads(&from, &to)).await;
    }
    match remains {
        Remains::Browser { browser, .. } => browser.shutdown().await,
        Remains::Folder(dir) => {
            let _ = tokio::task::spawn_blocking(move || {
                crate::browser::procs::kill_by_cmdline(&dir);
                crate::browser::remove_files(&dir);
            })
            .await;
        }
        Remains::Nothing => {}
    }
}
