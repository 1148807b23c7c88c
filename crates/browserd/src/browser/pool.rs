//! The warm pool: browsers started ahead of demand, so a create can take one that is
//! already listening instead of waiting for Chromium to start.
//!
//! Every pooled browser is fresh (new profile, never used) and goes to exactly one session,
//! which destroys it when it ends: no state crosses sessions. The pool refills one browser
//! at a time, at low CPU priority, and only once no browser has been taken for
//! [`REFILL_QUIET`], so refilling never competes with running sessions for more than one
//! launch's worth of CPU, and not with the first page of a session that just took one.

use super::{BrowserInstance, LaunchSpec, Launcher, Viewport};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The viewport pooled browsers start with; a create asking for another one launches cold.
pub(crate) const POOL_VIEWPORT: Viewport = Viewport {
    width: 1280,
    height: 720,
};

/// Longest wait between refill attempts after launches keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long after the last take the refill waits before it launches. A client's first page
/// load follows its create within a few hundred ms; a launch beside it, even at low
/// priority, made that load 1.6x slower than in a fresh browser of its own (bench section
/// 9). A burst of creates is served by cold launches meanwhile either way.
pub(crate) const REFILL_QUIET: Duration = Duration::from_millis(500);

pub struct WarmPool {
    target: usize,
    /// Ready browsers, oldest first. A std Mutex: pushed and popped, never held across await.
    idle: Mutex<Vec<Box<dyn BrowserInstance>>>,
    /// Launches under way for the pool (they count against the server's capacity).
    launching: AtomicUsize,
    /// Wakes the refill loop after a take, or when capacity frees up.
    wake: Notify,
    /// Set by [`WarmPool::drain`]: nothing goes back into a drained pool.
    drained: std::sync::atomic::AtomicBool,
    /// When a browser was last taken (see [`REFILL_QUIET`]). A std Mutex: set and read,
    /// never held across await.
    last_take: Mutex<Option<tokio::time::Instant>>,
    /// Browsers kept ready with an extension loaded. A std Mutex: never held across await.
    extension: Mutex<ExtensionWarm>,
}

/// The extension kept warm: the one the latest create that could take a warm browser
/// named (Stagehand 4 names the same one for every session), and up to
/// [`EXTENSION_TARGET`] browsers started with it.
#[derive(Default)]
struct ExtensionWarm {
    /// Its unpacked folder (a content folder: identical uploads share it).
    wanted: Option<PathBuf>,
    /// Ready browsers with `wanted` loaded.
    idle: Vec<Box<dyn BrowserInstance>>,
    /// When a create last named `wanted`.
    asked: Option<tokio::time::Instant>,
}

/// How long the pool keeps a browser warm with an extension no create has named since: a
/// warm browser runs its extension's code for nobody.
pub(crate) const EXTENSION_UNWANTED_AFTER: Duration = Duration::from_secs(600);

/// Browsers kept ready with the wanted extension (when the pool is on): one, since a
/// browser with an extension only serves sessions that name the same one.
pub(crate) const EXTENSION_TARGET: usize = 1;

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("target", &self.target)
            .field("idle", &self.len())
            .finish_non_exhaustive()
    }
}

impl WarmPool {
    pub fn new(target: usize) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::new()),
            launching: AtomicUsize::new(0),
            wake: Notify::new(),
            drained: Default::default(),
            last_take: Mutex::new(None),
            extension: Default::default(),
        }
    }

    /// How many browsers the pool keeps ready.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Ready browsers now.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Browsers the pool holds or is starting: what it costs the server's capacity.
    pub fn footprint(&self) -> usize {
        self.len()
            + self.extension.lock().unwrap().idle.len()
            + self.launching.load(Ordering::SeqCst)
    }

    /// Takes a ready browser with the extension in `dir` loaded, if there is one.
    pub fn take_with_extension(&self, dir: &Path) -> Option<Box<dyn BrowserInstance>> {
        let mut warm = self.extension.lock().unwrap();
        if warm.wanted.as_deref() != Some(dir) {
            return None;
        }
        let taken = self.take_from(&mut warm.idle);
        if taken.is_some() {
            self.wake.notify_one();
        }
        taken
    }

    /// Keeps the extension in `dir` warm from now on (a session that names it was just
    /// created): a browser ready with another one is stopped. Asked only once the session
    /// is recorded, so a create refused by its project's limits changes nothing.
    pub fn want_extension(&self, dir: &Path) {
        if self.target == 0 {
            return;
        }
        let stale = {
            let mut warm = self.extension.lock().unwrap();
            warm.asked = Some(tokio::time::Instant::now());
            if warm.wanted.as_deref() == Some(dir) {
                Vec::new()
            } else {
                warm.wanted = Some(dir.to_path_buf());
                std::mem::take(&mut warm.idle)
            }
        };
        stale.into_iter().for_each(stop_later);
        // A session's browser starts now: the refill waits its quiet spell.
        *self.last_take.lock().unwrap() = Some(tokio::time::Instant::now());
        self.wake.notify_one();
    }

    /// Stops keeping an extension nobody asked for in [`EXTENSION_UNWANTED_AFTER`]; returns
    /// how long until the wanted one would expire, if one is wanted.
    fn expire_extension(&self) -> Option<Duration> {
        let stale = {
            let mut warm = self.extension.lock().unwrap();
            let asked = warm.asked?;
            match EXTENSION_UNWANTED_AFTER.checked_sub(asked.elapsed()) {
                Some(left) if !left.is_zero() => return Some(left),
                _ => {}
            }
            warm.wanted = None;
            warm.asked = None;
            std::mem::take(&mut warm.idle)
        };
        stale.into_iter().for_each(stop_later);
        None
    }

    /// Whether the pool keeps, or wants to keep, browsers with the extension in `dir`.
    pub fn holds_extension(&self, dir: &Path) -> bool {
        self.extension.lock().unwrap().wanted.as_deref() == Some(dir)
    }

    /// The extension folder to start a warm browser with, if one is wanted and missing.
    fn extension_to_start(&self) -> Option<PathBuf> {
        let warm = self.extension.lock().unwrap();
        (warm.idle.len() < EXTENSION_TARGET)
            .then(|| warm.wanted.clone())
            .flatten()
    }

    /// Takes a ready browser, if there is one that is still running.
    pub fn take(&self) -> Option<Box<dyn BrowserInstance>> {
        let taken = self.take_from(&mut self.idle.lock().unwrap());
        self.wake.notify_one();
        taken
    }

    /// The newest running browser of `idle`, brought to the foreground, the take noted
    /// (see [`REFILL_QUIET`]). One that died while waiting is cleaned up on the way.
    fn take_from(
        &self,
        idle: &mut Vec<Box<dyn BrowserInstance>>,
    ) -> Option<Box<dyn BrowserInstance>> {
        while let Some(mut browser) = idle.pop() {
            if browser.is_running() {
                browser.to_foreground();
                *self.last_take.lock().unwrap() = Some(tokio::time::Instant::now());
                return Some(browser);
            }
            stop_later(browser);
        }
        None
    }

    /// Returns a browser taken by a create that was then refused: it never served a
    /// session, so it is as fresh as when it was pooled (`extension`: the folder it was
    /// started with). A pool drained meanwhile (shutdown) takes nothing, and a browser
    /// whose extension is no longer the wanted one is not kept: either is stopped.
    pub async fn put_back(&self, mut browser: Box<dyn BrowserInstance>, extension: Option<&Path>) {
        browser.to_background();
        match extension {
            None => {
                let mut idle = self.idle.lock().unwrap();
                // Read under the lock that `drain` takes after setting it: either the
                // browser is in the pool before the drain empties it, or it is not put back.
                if !self.drained.load(Ordering::SeqCst) {
                    idle.push(browser);
                    return;
                }
            }
            Some(dir) => {
                let mut warm = self.extension.lock().unwrap();
                if !self.drained.load(Ordering::SeqCst) && warm.wanted.as_deref() == Some(dir) {
                    warm.idle.push(browser);
                    return;
                }
            }
        }
        browser.shutdown().await;
    }

    /// Tells the refill loop that capacity may have freed up.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Keeps the pool at its target while `has_room()` says the server can hold another
    /// browser, until `stop` is cancelled; then stops every idle browser.
    pub async fn refill(
        &self,
        launcher: &dyn Launcher,
        has_room: impl Fn() -> bool,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(250);
        loop {
            // Quiet first: the session that just took a browser loads its first page alone.
            while let Some(wait) = self.until_quiet() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => break,
                }
            }
            loop {
                if stop.is_cancelled() || !has_room() {
                    break;
                }
                // Plain browsers first (any create without special needs takes one), then
                // one with the wanted extension.
                let extension = if self.len() + self.launching.load(Ordering::SeqCst) < self.target
                {
                    None
                } else if let Some(dir) = self.extension_to_start() {
                    Some(dir)
                } else {
                    break;
                };
                self.launching.fetch_add(1, Ordering::SeqCst);
                let spec = LaunchSpec {
                    background: true,
                    // Whether its session records is not known yet: ready either way.
                    recorder: true,
                    extension: extension.clone(),
                    // Its extension runs before any session owns it: nothing leaves.
                    egress_closed_until_taken: extension.is_some(),
                    ..LaunchSpec::new(POOL_VIEWPORT)
                };
                // Not cancelled by `stop`: a launch cut short would leave a browser without
                // an owner to stop it properly. Shutdown waits for it instead (one launch).
                match launcher.launch(&spec).await {
                    Ok(browser) => {
                        match &extension {
                            None => self.idle.lock().unwrap().insert(0, browser),
                            Some(dir) => {
                                let mut warm = self.extension.lock().unwrap();
                                if warm.wanted.as_ref() == Some(dir) {
                                    warm.idle.insert(0, browser);
                                } else {
                                    // Another extension is wanted now: this one serves nobody.
                                    stop_later(browser);
                                }
                            }
                        }
                        backoff = Duration::from_millis(250);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, extension = extension.is_some(), "could not start a warm browser");
                        self.launching.fetch_sub(1, Ordering::SeqCst);
                        if let Some(dir) = &extension {
                            // The extension does not start: stop wanting it until asked
                            // again (unless another one is wanted by now).
                            let mut warm = self.extension.lock().unwrap();
                            if warm.wanted.as_ref() == Some(dir) {
                                warm.wanted = None;
                            }
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stop.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                self.launching.fetch_sub(1, Ordering::SeqCst);
            }
            // Woken by a take or freed capacity, or when the wanted extension expires.
            let expires = self.expire_extension();
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(expires.unwrap_or(Duration::MAX)), if expires.is_some() => {}
                () = stop.cancelled() => break,
            }
        }
        self.drain().await;
    }

    /// How much longer the refill waits for [`REFILL_QUIET`] after the last take, if at all.
    fn until_quiet(&self) -> Option<Duration> {
        let last = (*self.last_take.lock().unwrap())?;
        REFILL_QUIET
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Stops every idle browser.
    pub async fn drain(&self) {
        self.drained.store(true, Ordering::SeqCst);
        let mut idle: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap());
        idle.append(&mut self.extension.lock().unwrap().idle);
        for mut browser in idle {
            browser.shutdown().await;
        }
    }
}

/// Stops a browser the pool no longer keeps, without making the caller wait.
fn stop_later(mut browser: Box<dyn BrowserInstance>) {
    tokio::spawn(async move { browser.shutdown().await });
}
