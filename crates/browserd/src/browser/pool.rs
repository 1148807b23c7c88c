//! The warm pool: browsers started ahead of demand, so a create can take one that is
//! already listening instead of waiting for Chromium to start.
//!
//! Every pooled browser is fresh (new profile, never used) and goes to exactly one session,
//! which destroys it when it ends: no state crosses sessions. The pool refills one browser
//! at a time, at low CPU priority, and only once no browser has been taken for
//! [`REFILL_QUIET`], so refilling never competes with running sessions for more than one
//! launch's worth of CPU, and not with the first page of a session that just took one.

use super::{BrowserInstance, LaunchSpec, Launcher, Viewport};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The viewport pooled browsers start with; a create asking for another one launches cold.
pub const POOL_VIEWPORT: Viewport = Viewport {
    width: 1280,
    height: 720,
};

/// Longest wait between refill attempts after launches keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long after the last take the refill waits before it launches. A client's first page
/// load follows its create within a few hundred ms; a launch beside it, even at low
/// priority, made that load 1.6x slower than in a fresh browser of its own (bench section
/// 9). A burst of creates is served by cold launches meanwhile either way.
pub const REFILL_QUIET: Duration = Duration::from_millis(500);

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
}

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
        self.len() + self.launching.load(Ordering::SeqCst)
    }

    /// Takes a ready browser, if there is one that is still running.
    pub fn take(&self) -> Option<Box<dyn BrowserInstance>> {
        let taken = loop {
            let mut browser = self.idle.lock().unwrap().pop()?;
            if browser.is_running() {
                browser.to_foreground();
                *self.last_take.lock().unwrap() = Some(tokio::time::Instant::now());
                break Some(browser);
            }
            // A pooled browser died while waiting: clean it up, try the next.
            tokio::spawn(async move { browser.shutdown().await });
        };
        self.wake.notify_one();
        taken
    }

    /// Returns a browser taken by a create that was then refused: it never served a
    /// session, so it is as fresh as when it was pooled. A pool drained meanwhile (shutdown)
    /// takes nothing: the browser is stopped.
    pub async fn put_back(&self, mut browser: Box<dyn BrowserInstance>) {
        browser.to_background();
        {
            let mut idle = self.idle.lock().unwrap();
            // Read under the lock that `drain` takes after setting it: either the browser
            // is in the pool before the drain empties it, or it is not put back.
            if !self.drained.load(Ordering::SeqCst) {
                idle.push(browser);
                return;
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
            while !stop.is_cancelled() && self.footprint() < self.target && has_room() {
                self.launching.fetch_add(1, Ordering::SeqCst);
                let spec = LaunchSpec {
                    background: true,
                    // Whether its session records is not known yet: ready either way.
                    recorder: true,
                    ..LaunchSpec::new(POOL_VIEWPORT)
                };
                // Not cancelled by `stop`: a launch cut short would leave a browser without
                // an owner to stop it properly. Shutdown waits for it instead (one launch).
                match launcher.launch(&spec).await {
                    Ok(browser) => {
                        self.idle.lock().unwrap().insert(0, browser);
                        backoff = Duration::from_millis(250);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "could not start a warm browser");
                        self.launching.fetch_sub(1, Ordering::SeqCst);
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
            tokio::select! {
                () = self.wake.notified() => {}
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
        let idle: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap());
        for mut browser in idle {
            browser.shutdown().await;
        }
    }
}
