//! Starting and stopping the browser behind a session.
//!
//! [`Launcher`] is the seam between the session lifecycle and a real Chromium
//! ([`chromium::ChromiumLauncher`]); the lifecycle's unit tests put a fake behind it.

pub(crate) mod adblock;
pub(crate) mod chromedriver;
pub mod chromium;
pub mod egress;
pub(crate) mod pool;
pub mod procs;
pub(crate) mod proof;
pub(crate) mod proxy;
pub mod sandbox;
pub(crate) mod trust;

use crate::cdp::client::CdpError;
use crate::fault::Failure;
use crate::files::contexts::ContextSnapshot;
use crate::model::BrowserRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// The window size a session's browser starts with (Browserbase's `browserSettings.viewport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
}

impl Default for Viewport {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
        }
    }
}

/// What a browser is started with.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Names the browser's folder. Not the session id: a warm browser is started before
    /// its session exists.
    pub browser_id: Uuid,
    pub viewport: Viewport,
    /// Started ahead of demand (the warm pool): run at a low CPU priority until a session
    /// takes it, so starting it never slows running sessions.
    pub background: bool,
    /// A saved context whose profile the browser starts with.
    pub context: Option<Arc<ContextSnapshot>>,
    /// An unpacked extension to load.
    pub extension: Option<PathBuf>,
    /// Install the session recorder while launching (see [`crate::inspect::recorder`]).
    pub recorder: bool,
    /// CA certificates (PEM) the browser trusts beyond the system's (see [`trust`]).
    pub ca_certificates: Vec<String>,
    /// Nothing leaves its egress until a session takes it (a warm browser whose extension
    /// runs before it has an owner).
    pub egress_closed_until_taken: bool,
}

impl LaunchSpec {
    pub fn new(viewport: Viewport) -> Self {
        Self {
            browser_id: Uuid::new_v4(),
            viewport,
            background: false,
            context: None,
            extension: None,
            recorder: false,
            ca_certificates: Vec::new(),
            egress_closed_until_taken: false,
        }
    }
}

/// What a browser is told when a session takes it.
#[derive(Debug, Clone)]
pub struct SessionSetup {
    /// Cookies of the session's context, set before any client connects. Chromium keeps
    /// persistent cookies in its profile but never session cookies, so all are set.
    pub cookies: Vec<serde_json::Value>,
    /// Record the session's primary tab (`recordSession`); `None`: do not.
    pub recording: Option<Recording>,
    /// `browserSettings.ignoreCertificateErrors`: pages with invalid certificates load.
    pub ignore_certificate_errors: bool,
}

pub use crate::inspect::recorder::Recording;

/// A browser's state at its end, for saving into a context.
#[derive(Debug)]
pub struct ProfileState {
    /// The profile folder, complete on disk (the browser has exited or crashed).
    pub profile_dir: PathBuf,
    /// The browser's cookies, session cookies included; empty if it could not be asked.
    pub cookies: Vec<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not start Chromium at {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not prepare the session's profile dir {path}: {source}")]
    ProfileDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Chromium exited during start-up ({status}); its last output: {log_tail}")]
    EarlyExit { status: String, log_tail: String },
    #[error("Chromium did not open its DevTools port within {0:?}")]
    NotReady(std::time::Duration),
    #[error("every sandbox uid is taken by a running browser")]
    NoUid,
    #[error("could not set up the browser's sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error("could not unpack the context's profile into {path}: {source}")]
    Context {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not install the session's CA certificates: {0}")]
    Trust(#[from] trust::TrustError),
}

/// Starts browsers.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts a browser and returns once its CDP endpoint accepts connections.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn BrowserInstance>, LaunchError>;

    /// Takes over a browser a previous browserd started (see [`BrowserRecord`]), if it is
    /// still the very process recorded. Default: none can be (fakes).
    async fn adopt(&self, _record: BrowserRecord) -> Option<Box<dyn BrowserInstance>> {
        None
    }

    /// Whether a launch could start now, as far as can be told without launching (for
    /// `/readyz`): `Err` says what is missing. Default: ready (fakes).
    fn readiness(&self) -> Result<(), Failure> {
        Ok(())
    }

    /// How browserd reaches its browsers' DevTools (no default: a sandboxed launcher that
    /// forgot it would dial the host's loopback).
    fn dialer(&self) -> crate::netns::Dialer;

    /// Whether its browsers' pages leave only through browserd's egress proxy (sandboxed),
    /// so that a session's own egress rules (allowedDomains) can be enforced. Default: no.
    fn enforces_egress(&self) -> bool {
        false
    }
}

/// One running browser, owned by one session's supervisor.
#[async_trait::async_trait]
pub trait BrowserInstance: Send + Sync {
    /// Browser-level CDP websocket URL on loopback. Only browserd connects to it; it never
    /// appears in a response.
    fn cdp_url(&self) -> &str;

    /// The browser's process id, where there is a process.
    fn pid(&self) -> Option<u32>;

    /// The folder holding the browser's profile and log, where there is one.
    fn dir(&self) -> Option<&Path>;

    /// Whether the browser is still running (checked without waiting).
    fn is_running(&mut self) -> bool;

    /// Gives a browser started in the background the normal CPU priority. Default: nothing.
    fn to_foreground(&mut self) {}

    /// Back to the low CPU priority of a browser waiting in the pool. Default: nothing.
    fn to_background(&mut self) {}

    /// What a restarted browserd needs to find this browser again; `None` where it cannot.
    fn record(&self) -> Option<BrowserRecord> {
        None
    }

    /// Lets the browser outlive this browserd (a restart with keepAlive sessions): it is
    /// neither stopped now nor when dropped. Default: nothing to let go of.
    fn detach(&mut self) {}

    /// Whether the browser speaks CDP at [`BrowserInstance::cdp_url`] (fakes do not), so
    /// browserd may open its own connections to it (recording, live view).
    fn has_devtools(&self) -> bool {
        false
    }

    /// The session's first tab (recorded, and the live view's default), once known.
    fn primary_tab(&self) -> Option<String> {
        None
    }

    /// The folder the browser saves downloads in: its default download directory, and where
    /// clients' download requests are pointed. Default: none (fakes).
    fn downloads_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Where the session's own egress rules go (allowedDomains), if its pages leave through
    /// browserd's egress proxy (a sandboxed browser). Default: none.
    fn egress_rules(&self) -> Option<egress::SessionSlot> {
        None
    }

    /// Readies a started browser for its session (where its downloads are kept, context
    /// cookies). Default: nothing to do (fakes).
    async fn begin_session(&mut self, _setup: &SessionSetup) -> Result<(), CdpError> {
        Ok(())
    }

    /// Ends the browser gracefully so its profile is complete on disk, and returns that
    /// profile and the browser's cookies, for saving into a context. The files stay until
    /// [`BrowserInstance::shutdown`]. Default: no profile (fakes).
    async fn close_for_save(&mut self) -> Option<ProfileState> {
        None
    }

    /// Resolves when the browser exits by itself (crash, kill, `Browser.close`), with a
    /// description of how it exited.
    async fn exited(&mut self) -> String;

    /// Stops the browser's whole process tree; its files stay. Idempotent.
    async fn stop(&mut self);

    /// Stops the browser (see [`BrowserInstance::stop`]) and removes its folder. Idempotent.
    async fn shutdown(&mut self) {
        self.stop().await;
        if let Some(dir) = self.dir().map(Path::to_path_buf) {
            let _ = tokio::task::spawn_blocking(move || remove_files(&dir)).await;
        }
    }
}

/// The temporary folder of an unsandboxed browser whose folder is `dir` (`TMPDIR`: Chromium
/// keeps its singleton socket there). Not inside `dir`: a unix socket's path must stay under
/// 108 bytes. Named after the browser's folder, so whoever removes one finds the other. A
/// sandboxed browser has a private `/tmp` instead, gone with its namespace.
pub fn tmp_dir_of(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    std::env::temp_dir().join(format!("browserd-{name}"))
}

/// Removes everything of a browser on disk: its folder and its temporary folder.
pub fn remove_files(dir: &Path) {
    remove_dir(dir);
    remove_dir(&tmp_dir_of(dir));
}

/// Removes a browser's folder, retrying briefly: a process of the browser that was just
/// killed may still be closing files in it.
#[expect(
    clippy::disallowed_methods,
    reason = "blocking file work: every caller runs it on spawn_blocking"
)]
pub fn remove_dir(dir: &Path) {
    for attempt in 1..=5 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 5 => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a browser's folder");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
