//! A chromedriver for one session's browser, where only browserd reaches it.
//!
//! For a sandboxed browser, chromedriver runs inside the browser's sandbox (`nsenter` into
//! its mount and network namespaces: it sees the browser's files only), as the browser's own
//! uid (`setpriv`), listening on that namespace's loopback: like the browser's DevTools port,
//! no page, other session or local user can reach it, and browserd gets in the same way
//! ([`crate::netns`]). It attaches to the running browser
//! through `goog:chromeOptions.debuggerAddress`; it never starts a browser of its own.
//! Its log file lives in the browser's folder, so the folder's name is on its command line:
//! the leak checks and the clean-up of a browser's processes find it there.

use super::sandbox::find_program;
use crate::fault::Failure;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// chromedriver's port inside a browser's namespace (each namespace has its own ports).
const PORT_IN_NAMESPACE: u16 = 9515;

/// How long chromedriver may take to answer `/status`.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// Where a browser's chromedriver runs.
pub(crate) struct DriverPlace {
    /// The browser's DevTools `127.0.0.1:PORT` (inside its namespace, if sandboxed).
    pub devtools: String,
    /// A sandboxed browser's cell; `None`: an unsandboxed browser on the host.
    pub jail: Option<Cell>,
    /// The browser's folder (chromedriver's log goes there).
    pub dir: PathBuf,
}

/// Where a sandboxed browser lives.
pub(crate) struct Cell {
    /// Its network namespace, as browserd holds it (to reach chromedriver).
    pub ns: Arc<OwnedFd>,
    /// A process inside its sandbox (whose namespaces chromedriver joins).
    pub pid: u32,
    /// The browser's uid.
    pub uid: u32,
}

/// A running chromedriver; stopped (killed) when dropped.
pub(crate) struct Chromedriver {
    _child: tokio::process::Child,
    port: u16,
    ns: Option<Arc<OwnedFd>>,
    devtools: String,
}

impl Chromedriver {
    pub(crate) async fn start(place: &DriverPlace) -> Result<Self, Failure> {
        let binary = find_program("chromedriver").ok_or_else(|| {
            Failure::operator(
                "chromedriver is not installed (apt-get install chromium-driver, the same version as chromium)",
            )
        })?;
        let log = place.dir.join("chromedriver.log");
        // One an earlier browserd left (it stopped while keeping the session) would hold the
        // port; the browser's own processes do not name this file.
        let stale = log.clone();
        let _ = tokio::task::spawn_blocking(move || super::procs::kill_by_cmdline(&stale)).await;
        let (mut command, port) = match &place.jail {
            Some(Cell { pid, uid, .. }) => {
                let nsenter = find_program("nsenter")
                    .ok_or_else(|| Failure::operator("nsenter is not installed (util-linux)"))?;
                let setpriv = find_program("setpriv")
                    .ok_or_else(|| Failure::operator("setpriv is not installed (util-linux)"))?;
                let mut command = tokio::process::Command::new(nsenter);
                command
                    .arg(format!("--target={pid}"))
                    .args(["--mount", "--net", "--"])
                    .arg(setpriv)
                    .args([
                        &format!("--reuid={uid}"),
                        &format!("--regid={uid}"),
                        "--clear-groups",
                        "--no-new-privs",
                        "--inh-caps=-all",
                        "--bounding-set=-all",
                        "--",
                    ])
                    .arg(&binary);
                (command, PORT_IN_NAMESPACE)
            }
            None => (tokio::process::Command::new(&binary), free_port()?),
        };
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .arg("--log-level=WARNING")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // In the browser's own folder, which its uid may have filled with links: made
            // new, never opened through one.
            .stderr(
                crate::files::confined::create_new(&place.dir, "chromedriver.err")
                    .map_err(|e| Failure::store(format!("chromedriver's error file: {e}")))?,
            )
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| Failure::operator(format!("chromedriver could not be started: {e}")))?;
        let driver = Self {
            _child: child,
            port,
            ns: place.jail.as_ref().map(|cell| Arc::clone(&cell.ns)),
            devtools: place.devtools.clone(),
        };
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        while driver.connect().await.is_err() {
            if tokio::time::Instant::now() > deadline {
                let said = crate::files::confined::read_tail(
                    &place.dir.join("chromedriver.err"),
                    16 * 1024,
                )
                .unwrap_or_default();
                return Err(Failure::browser(format!(
                    "chromedriver did not listen within {} s: {} (its log: {})",
                    START_PATIENCE.as_secs(),
                    said.trim(),
                    log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(driver)
    }

    /// The browser's DevTools address, as chromedriver reaches it.
    pub(crate) fn devtools(&self) -> &str {
        &self.devtools
    }

    /// A new TCP connection to chromedriver.
    pub(crate) async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        match &self.ns {
            Some(ns) => crate::netns::connect_in(Arc::clone(ns), addr).await,
            None => tokio::net::TcpStream::connect(addr).await,
        }
    }
}

fn free_port() -> Result<u16, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::internal(format!("no free port for chromedriver: {e}")))
}
