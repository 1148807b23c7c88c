//! A real headless Chromium per session.
//!
//! Each browser gets `<sessions dir>/<session id>/` holding its profile and its log, starts
//! with `--remote-debugging-port=0` on loopback, and tells us its port through the
//! `DevToolsActivePort` file it writes into the profile (no stderr parsing). It runs as the
//! leader of its own process group so that stopping it stops its helpers too.

use super::sandbox::{Sandbox, UidLease};
use super::{
    BrowserInstance, LaunchError, LaunchSpec, Launcher, ProfileState, SessionSetup, egress, procs,
};
use crate::cdp::client::{CdpClient, CdpError};
use crate::fault::Failure;
use crate::inspect::recorder::{self, Recorder};
use crate::model::BrowserRecord;
use crate::netns;
use crate::netns::Dialer;
use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessGroup};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// Flags every session's Chromium gets. They keep the browser off the network except for what
/// pages request (no sync, updates, metrics or safe-browsing pings) and quiet on a server.
const BASE_FLAGS: &[&str] = &[
    "--headless",
    "--remote-debugging-address=127.0.0.1",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    // Chromium 151+ pre-renders the address bar's popup (a WebUI page in a renderer of its
    // own) at every start, headless too: ~40 MiB and one process per session for a popup
    // no headless browser shows (bench section 9). Puppeteer turns it off the same way. The
    // only --disable-features browserd passes: Chromium reads just the last one given.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
];

/// The nice value of a warm browser until a session takes it.
const BACKGROUND_NICE: i32 = 10;

/// coreutils' `nice`, looked up once: warm browsers start under it.
static NICE: std::sync::LazyLock<Option<PathBuf>> =
    std::sync::LazyLock::new(|| super::sandbox::find_program("nice"));

/// Sets the CPU priority of every thread of a browser's process group. Raising the priority
/// back needs root (CAP_SYS_NICE); without it the browser keeps the lower one, which is
/// logged. The crash handler leaves the group and keeps its priority: it idles unless a
/// process crashes.
fn set_group_priority(pid: Option<u32>, nice: i32) {
    let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return;
    };
    if let Err(e) = rustix::process::setpriority_pgrp(Some(pid), nice) {
        tracing::debug!(%pid, nice, error = %e, "could not change the browser's CPU priority");
    }
}

/// How long a browser may take to open its DevTools port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ChromiumLauncher {
    executable: PathBuf,
    sessions_dir: PathBuf,
    /// Where browsers run; `None`: unsandboxed, as browserd's own user.
    sandbox: Option<Arc<Sandbox>>,
    /// The sandbox's way into its browsers, or the host's loopback.
    dialer: Dialer,
    /// The server's metrics (launch times).
    metrics: Arc<crate::metrics::Metrics>,
}

impl ChromiumLauncher {
    pub fn new(
        executable: PathBuf,
        sessions_dir: PathBuf,
        sandbox: Option<Arc<Sandbox>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let dialer = sandbox
            .as_ref()
            .map_or_else(Dialer::host, |s| s.dialer().clone());
        Self {
            executable,
            sessions_dir,
            sandbox,
            dialer,
            metrics,
        }
    }

    /// Chromium's own sandbox cannot start as root: an unsandboxed browser of a browserd
    /// running as root needs `--no-sandbox`. A sandboxed one runs as its own uid.
    fn no_sandbox(&self) -> bool {
        self.sandbox.is_none() && rustix::process::geteuid().is_root()
    }

    /// Finds a Chromium on `PATH`: the first of `chromium`, `chromium-browser`, `google-chrome`,
    /// past Debian's wrapper script (see [`past_debian_wrapper`]).
    pub fn find_on_path() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
            .find(|candidate| candidate.is_file())
            .map(past_debian_wrapper)
    }

    pub fn executable(&self) -> &Path {
        &self.executable
    }
}

/// Debian's `/usr/bin/chromium` is a shell script that sources `/etc/chromium.d` and adds
/// flags of its own (a `--load-extension` for every package under
/// `/usr/share/chromium/extensions`, GPU rasterization…) before it runs
/// `/usr/lib/chromium/chromium`. browserd passes every flag it wants itself, so it runs the
/// binary: a cold create took 281 ms instead of 454 ms (docs/benchmarks.md §8), for the same
/// memory. Anything else (a binary, another wrapper) is used as given.
pub fn past_debian_wrapper(found: PathBuf) -> PathBuf {
    const DEBIAN_BINARY: &str = "/usr/lib/chromium/chromium";
    // The script's mark: it sources /etc/chromium.d (where packages add flags).
    let is_wrapper = std::fs::read(&found).is_ok_and(|text| {
        text.starts_with(b"#!") && memchr::memmem::find(&text, b"/etc/chromium.d").is_some()
    });
    if is_wrapper && Path::new(DEBIAN_BINARY).is_file() {
        PathBuf::from(DEBIAN_BINARY)
    } else {
        found
    }
}

#[async_trait::async_trait]
impl Launcher for ChromiumLauncher {
    fn dialer(&self) -> Dialer {
        self.dialer.clone()
    }

    async fn adopt(&self, record: BrowserRecord) -> Option<Box<dyn BrowserInstance>> {
        adopt(record, self.sandbox.as_ref(), &self.dialer).await
    }

    fn enforces_egress(&self) -> bool {
        self.sandbox.is_some()
    }

    fn readiness(&self) -> Result<(), Failure> {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(&self.executable) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(Failure::operator(format!(
                "{} is not an executable file",
                self.executable.display()
            ))),
            Err(e) => Err(Failure::operator(format!(
                "Chromium at {}: {e}",
                self.executable.display()
            ))),
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn BrowserInstance>, LaunchError> {
        let dir = self.sessions_dir.join(spec.browser_id.to_string());
        let started = std::time::Instant::now();
        let launched = self.launch_in(&dir, spec).await;
        if launched.is_ok() {
            self.metrics
                .launch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if launched.is_err() {
            // Nothing of a browser that did not start stays (a failure before its process
            // existed leaves the folder; after, `shutdown` removed it already).
            let _ = tokio::task::spawn_blocking(move || super::remove_files(&dir)).await;
        }
        launched
    }
}

impl ChromiumLauncher {
    async fn launch_in(
        &self,
        dir: &Path,
        spec: &LaunchSpec,
    ) -> Result<Box<dyn BrowserInstance>, LaunchError> {
        let launch_began = std::time::Instant::now();
        let dir = dir.to_path_buf();
        let profile = dir.join("profile");
        tokio::fs::create_dir_all(&profile)
            .await
            .map_err(|source| LaunchError::ProfileDir {
                path: profile.clone(),
                source,
            })?;
        // Chromium's own temporary files (its singleton socket's folder): unsandboxed, in a
        // folder of this browser's that goes with it, not loose in the host's /tmp.
        let tmp = match &self.sandbox {
            Some(_) => None,
            None => {
                let tmp = super::tmp_dir_of(&dir);
                tokio::fs::create_dir_all(&tmp).await.map_err(|source| {
                    LaunchError::ProfileDir {
                        path: tmp.clone(),
                        source,
                    }
                })?;
                Some(tmp)
            }
        };
        if let Some(context) = &spec.context {
            let (context, dest) = (Arc::clone(context), profile.clone());
            tokio::task::spawn_blocking(move || {
                crate::files::contexts::unpack_profile(&context.archive, &dest)
            })
            .await
            .expect("unpacking a profile does not panic")
            .map_err(|source| LaunchError::Context {
                path: profile.clone(),
                source,
            })?;
        }
        // Downloads land in the browser's own folder whatever a client asks for: it is
        // Chromium's default download directory, which is what a client's disconnect reverts
        // to, and the relay points clients' Browser.setDownloadBehavior at it too.
        let downloads = dir.join("downloads");
        set_download_preferences(&profile, &downloads)
            .await
            .map_err(|source| LaunchError::ProfileDir {
                path: downloads.clone(),
                source,
            })?;
        let log_path = dir.join("chromium.log");
        let log = std::fs::File::create(&log_path).map_err(|source| LaunchError::ProfileDir {
            path: log_path.clone(),
            source,
        })?;

        let uid = match &self.sandbox {
            Some(_) => Some(UidLease::take().ok_or(LaunchError::NoUid)?),
            None => None,
        };
        let mut chromium_args: Vec<std::ffi::OsString> =
            BASE_FLAGS.iter().map(Into::into).collect();
        chromium_args.extend(
            [
                format!("--user-data-dir={}", profile.display()),
                format!(
                    "--window-size={},{}",
                    spec.viewport.width, spec.viewport.height
                ),
                format!(
                    "--remote-debugging-port={}",
                    uid.as_ref().map_or(0, UidLease::devtools_port)
                ),
            ]
            .map(Into::into),
        );
        if self.no_sandbox() {
            chromium_args.push("--no-sandbox".into());
        }
        if uid.is_some() {
            // Every connection through browserd's egress proxy, loopback ones too (Chromium
            // would go direct to loopback, which in the sandbox is only its own).
            chromium_args
                .push(format!("--proxy-server=socks5://127.0.0.1:{}", egress::PROXY_PORT).into());
            chromium_args.push("--proxy-bypass-list=<-loopback>".into());
            chromium_args.push("--force-webrtc-ip-handling-policy=disable_non_proxied_udp".into());
        }
        if let Some(ext) = &spec.extension {
            chromium_args.push(format!("--load-extension={}", ext.display()).into());
            chromium_args.push(format!("--disable-extensions-except={}", ext.display()).into());
        }
        chromium_args.push("about:blank".into());

        let (program, args) = match (&self.sandbox, &uid) {
            (Some(sandbox), Some(uid)) => {
                let (owned, uid) = (dir.clone(), uid.uid());
                tokio::task::spawn_blocking(move || super::sandbox::give_to(&owned, uid))
                    .await
                    .expect("chown does not panic")
                    .map_err(|source| LaunchError::ProfileDir {
                        path: profile.clone(),
                        source,
                    })?;
                // Once the folder is the browser's uid's: certutil runs in the browser's
                // sandbox, as that uid.
                write_trust(&dir, spec, Some((Arc::clone(sandbox), uid))).await?;
                let (program, mut args) = sandbox.command(
                    uid,
                    &dir,
                    &spec.extension.iter().cloned().collect::<Vec<_>>(),
                    &self.executable,
                );
                args.extend(chromium_args);
                (program, args)
            }
            _ => {
                write_trust(&dir, spec, None).await?;
                (self.executable.clone(), chromium_args)
            }
        };
        tracing::debug!(program = %program.display(), ?args, "starting a browser");
        // A warm browser starts at low priority under coreutils' `nice`, which execs it:
        // every process and thread it starts inherits the priority. Set from outside after
        // the spawn instead, it raced the sandbox's first fork, and the refill's Chromium could
        // run at full priority beside the first page load of the session that had just taken
        // a warm browser. Without `nice`, the browser starts at normal priority.
        let (program, args) = match &*NICE {
            Some(nice) if spec.background => {
                let mut wrapped: Vec<std::ffi::OsString> = vec![
                    "-n".into(),
                    BACKGROUND_NICE.to_string().into(),
                    program.into(),
                ];
                wrapped.extend(args);
                (nice.clone(), wrapped)
            }
            _ => (program, args),
        };
        let mut cmd = CommandWrap::with_new(&program, |c| {
            c.args(&args);
            if let Some(tmp) = &tmp {
                c.env("TMPDIR", tmp);
                // Where Chromium finds the session's NSS database (`.pki/nssdb`): the
                // browser's own folder, as in the sandbox (bwrap sets HOME there).
                if !spec.ca_certificates.is_empty() {
                    c.env("HOME", &dir);
                }
            }
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                // A file, not a pipe: nobody reads a pipe and a full one would stall Chromium.
                .stderr(log);
        });
        // Its own process group, so one signal reaches its helpers. No kill-on-drop wrapper:
        // `ChromiumBrowser`'s Drop kills it unless it was detached for a restart.
        cmd.wrap(ProcessGroup::leader());
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            path: program.clone(),
            source,
        })?;
        let mut browser = ChromiumBrowser {
            dialer: self.dialer.clone(),
            certificates: None,
            child,
            dir,
            jail: None,
            cdp_url: String::new(),
            stopped: false,
            detached: false,
            recorder: None,
            primary_tab: None,
        };
        // Where a launch's time goes (debug log): the spawn, the sandbox's namespace and
        // egress, Chromium's start until DevTools listens, the recorder.
        let spawned = launch_began.elapsed();
        let mut jailed = spawned;
        let started = async {
            if let (Some(sandbox), Some(uid)) = (&self.sandbox, uid) {
                let pid = browser
                    .child
                    .id()
                    .ok_or(LaunchError::NotReady(START_TIMEOUT))?;
                let closed = spec.egress_closed_until_taken;
                browser.jail = Some(Jail::enter(pid, uid, sandbox, START_TIMEOUT, closed).await?);
                jailed = launch_began.elapsed();
            }
            browser.wait_for_devtools(&profile, &log_path).await
        };
        match started.await {
            Ok(url) => {
                browser.cdp_url = url;
                let listening = launch_began.elapsed();
                if spec.recorder {
                    browser.install_recorder(false).await;
                }
                tracing::debug!(
                    spawned_ms = spawned.as_millis() as u64,
                    jailed_ms = jailed.as_millis() as u64,
                    listening_ms = listening.as_millis() as u64,
                    ready_ms = launch_began.elapsed().as_millis() as u64,
                    background = spec.background,
                    "browser started"
                );
                Ok(Box::new(browser))
            }
            Err(e) => {
                browser.shutdown().await;
                Err(e)
            }
        }
    }
}

struct ChromiumBrowser {
    /// How its DevTools are reached (its namespace's, when sandboxed).
    dialer: Dialer,
    /// The DevTools connection that holds `ignoreCertificateErrors` on (see
    /// [`CertificateOverride`]).
    certificates: Option<CertificateOverride>,
    child: Box<dyn ChildWrapper>,
    /// The session's own folder; everything in it goes when the browser does.
    dir: PathBuf,
    /// The sandbox's uid, namespace and egress proxy, if sandboxed.
    jail: Option<Jail>,
    cdp_url: String,
    stopped: bool,
    /// Left running for the next browserd (a keepAlive session across a restart).
    detached: bool,
    /// rrweb, installed and waiting for the session to start or discard it.
    recorder: Option<Recorder>,
    primary_tab: Option<String>,
}

impl Drop for ChromiumBrowser {
    fn drop(&mut self) {
        if !self.stopped && !self.detached {
            // The last resort (a panic, an early return): at least no stray browser.
            let _ = self.child.start_kill();
        }
    }
}

impl ChromiumBrowser {
    /// Installs the session recorder; a browser without one still serves its session.
    async fn install_recorder(&mut self, now: bool) {
        match recorder::install(&self.dialer, &self.cdp_url, now).await {
            Ok(r) => {
                self.primary_tab = Some(r.tab().to_owned());
                self.recorder = Some(r);
            }
            Err(e) => tracing::warn!(error = %e, "could not install the session recorder"),
        }
    }

    /// Polls for `DevToolsActivePort` (port, then browser ws path) while watching for an
    /// early exit. Chromium writes that file only for `--remote-debugging-port=0`; a
    /// sandboxed browser has a fixed port, so its address is read from the line Chromium
    /// prints when its DevTools server listens (stderr, which goes to its log file).
    async fn wait_for_devtools(
        &mut self,
        profile: &Path,
        log_path: &Path,
    ) -> Result<String, LaunchError> {
        let port_file = profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = read_browsers_file(&port_file).await {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    return Ok(format!("ws://127.0.0.1:{port}{}", path.trim()));
                }
            }
            if self.jail.is_some()
                && let Ok(log) = read_browsers_file(log_path).await
                && let Some(url) = log
                    .lines()
                    .find_map(|l| l.strip_prefix("DevTools listening on "))
            {
                return Ok(url.trim().to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LaunchError::EarlyExit {
                    status: status.to_string(),
                    log_tail: log_tail(log_path).await,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LaunchError::NotReady(START_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The end of a file in a browser's own folder, which its uid may have replaced with a
/// link or a FIFO: neither is followed or waited on ([`crate::files::confined::read_tail`]).
async fn read_browsers_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || crate::files::confined::read_tail(&path, 256 * 1024))
        .await
        .map_err(std::io::Error::other)?
}

async fn log_tail(path: &Path) -> String {
    let text = read_browsers_file(path).await.unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Removes a session's folder. A helper that was still dying may create a file while the
/// tree is being removed, so a few tries are allowed.
#[async_trait::async_trait]
impl BrowserInstance for ChromiumBrowser {
    fn cdp_url(&self) -> &str {
        &self.cdp_url
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn is_running(&mut self) -> bool {
        !self.stopped && matches!(self.child.try_wait(), Ok(None))
    }

    fn to_foreground(&mut self) {
        set_group_priority(self.child.id(), 0);
    }

    fn to_background(&mut self) {
        set_group_priority(self.child.id(), BACKGROUND_NICE);
    }

    fn has_devtools(&self) -> bool {
        true
    }

    fn downloads_dir(&self) -> Option<PathBuf> {
        Some(self.dir.join("downloads"))
    }

    fn egress_rules(&self) -> Option<egress::SessionSlot> {
        self.jail.as_ref().map(|j| Arc::clone(&j.rules))
    }

    fn primary_tab(&self) -> Option<String> {
        self.primary_tab.clone()
    }

    async fn begin_session(&mut self, setup: &SessionSetup) -> Result<(), CdpError> {
        set_cookies(&self.dialer, &self.cdp_url, &setup.cookies).await?;
        if setup.ignore_certificate_errors {
            self.certificates = Some(CertificateOverride::set(&self.dialer, &self.cdp_url).await?);
        }
        match (self.recorder.take(), &setup.recording) {
            (Some(r), Some(recording)) => r.start(recording.clone()),
            // A browser launched for this session: installing rrweb waits for the first
            // tab's renderer (~130 ms), so it happens beside the client's connect instead of
            // before the create answers. It also starts in the document already showing.
            (None, Some(recording)) => {
                spawn_recorder(self.dialer.clone(), self.cdp_url.clone(), recording.clone());
            }
            // Off the create path: the next document is at least a client round trip
            // away, and nothing is recorded before the removal anyway (no recorder runs).
            (Some(r), None) => {
                tokio::spawn(r.discard());
            }
            (None, None) => {}
        }
        Ok(())
    }

    async fn close_for_save(&mut self) -> Option<ProfileState> {
        let cookies = if self.is_running() {
            let cookies = cookies_then_close(&self.dialer, &self.cdp_url).await;
            if tokio::time::timeout(GRACEFUL_EXIT, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "Chromium did not exit after Browser.close; saving its profile as it is"
                );
            }
            cookies
        } else {
            Vec::new()
        };
        Some(ProfileState {
            profile_dir: self.dir.join("profile"),
            cookies,
        })
    }

    fn record(&self) -> Option<BrowserRecord> {
        let pid = self.child.id()?;
        Some(BrowserRecord {
            pid,
            start_ticks: procs::start_ticks(pid)?,
            dir: self.dir.clone(),
            cdp_url: self.cdp_url.clone(),
        })
    }

    fn detach(&mut self) {
        self.detached = true;
    }

    async fn exited(&mut self) -> String {
        tokio::select! {
            waited = self.child.wait() => match waited {
                Ok(status) => format!("Chromium exited unexpectedly ({status})"),
                Err(e) => format!("lost track of the Chromium process: {e}"),
            },
            reason = egress_failed(&mut self.jail) => reason,
        }
    }

    async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // SIGKILL to the whole group: whatever a graceful exit would save was saved before
        // (a context's `close_for_save`). Then reap, then sweep helpers that left the group.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        sweep(self.dir.clone()).await;
    }
}

/// proxySettings.caCertificates: an NSS database in the browser's `$HOME` (its folder), where
/// Chromium reads the certificates a user added; written inside `jail` (the browser's
/// sandbox and uid) if given.
async fn write_trust(
    dir: &Path,
    spec: &LaunchSpec,
    jail: Option<(Arc<super::sandbox::Sandbox>, u32)>,
) -> Result<(), LaunchError> {
    if spec.ca_certificates.is_empty() {
        return Ok(());
    }
    let (home, certificates) = (dir.to_path_buf(), spec.ca_certificates.clone());
    tokio::task::spawn_blocking(move || match jail {
        Some((sandbox, uid)) => {
            let jailed = |certutil: &Path| {
                let (bwrap, args) = sandbox.command(uid, &home, &[], certutil);
                let mut command = std::process::Command::new(bwrap);
                command.args(args);
                command
            };
            super::trust::write_nss_db(&home, &certificates, Some((uid, &jailed)))
        }
        None => super::trust::write_nss_db(&home, &certificates, None),
    })
    .await
    .expect("writing the certificate database does not panic")?;
    Ok(())
}

/// Installs rrweb, starting in the document already showing, and records, all in the
/// background.
fn spawn_recorder(dialer: Dialer, cdp_url: String, recording: crate::browser::Recording) {
    // Lives as long as the recording: until the browser goes away.
    tokio::spawn(async move {
        match recorder::install(&dialer, &cdp_url, true).await {
            Ok(r) => r.start(recording),
            Err(e) => tracing::warn!(error = %e, "could not start the session recording"),
        }
    });
}

/// How long a browser may take to exit after `Browser.close` (it writes its profile).
const GRACEFUL_EXIT: Duration = Duration::from_secs(10);

/// Sets a context's cookies in the default browser context. Nothing to do (no connection)
/// for a session without them.
/// `Security.setIgnoreCertificateErrors` on the browser target: every page of the browser
/// loads despite certificate errors, for as long as the DevTools connection that asked
/// stays open (Chromium drops a session's overrides with it). So the connection is held by
/// a task of its own, ended when this is dropped with the browser.
struct CertificateOverride(tokio::task::JoinHandle<()>);

impl CertificateOverride {
    async fn set(dialer: &Dialer, cdp_url: &str) -> Result<Self, CdpError> {
        let mut cdp = CdpClient::connect(dialer, cdp_url).await?;
        cdp.call(
            "Security.setIgnoreCertificateErrors",
            json!({ "ignore": true }),
        )
        .await?;
        Ok(Self(tokio::spawn(async move {
            // Reads (and drops) whatever the browser sends, until it closes the connection.
            while cdp.next_event().await.is_some() {}
        })))
    }
}

impl Drop for CertificateOverride {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn set_cookies(dialer: &Dialer, cdp_url: &str, cookies: &[Value]) -> Result<(), CdpError> {
    if cookies.is_empty() {
        return Ok(());
    }
    let mut cdp = CdpClient::connect(dialer, cdp_url).await?;
    let cookies: Vec<Value> = cookies.iter().filter_map(cookie_param).collect();
    cdp.call("Storage.setCookies", json!({ "cookies": cookies }))
        .await?;
    Ok(())
}

/// Reads every cookie of the default browser context, then asks the browser to exit
/// (which flushes its profile). Best effort: a browser that does not answer gets no save
/// of its cookies, and is killed by the caller.
async fn cookies_then_close(dialer: &Dialer, cdp_url: &str) -> Vec<Value> {
    let mut cdp = match CdpClient::connect(dialer, cdp_url).await {
        Ok(cdp) => cdp,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the browser's cookies for its context");
            return Vec::new();
        }
    };
    let cookies = match cdp.call("Storage.getCookies", json!({})).await {
        Ok(mut result) => match result["cookies"].take() {
            Value::Array(cookies) => cookies,
            _ => Vec::new(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not read the browser's cookies for its context");
            Vec::new()
        }
    };
    // The reply may not arrive before the connection drops; the exit is what counts.
    let _ = cdp.call("Browser.close", json!({})).await;
    cookies
}

/// A cookie as `Storage.getCookies` gives it, as `Storage.setCookies` takes it: the
/// read-only fields dropped, and no expiry for a session cookie.
fn cookie_param(cookie: &Value) -> Option<Value> {
    const KEPT: &[&str] = &[
        "name",
        "value",
        "domain",
        "path",
        "secure",
        "httpOnly",
        "sameSite",
        "priority",
        "sourceScheme",
        "sourcePort",
        "partitionKey",
    ];
    let obj = cookie.as_object()?;
    let mut param: serde_json::Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let session = obj.get("session").and_then(Value::as_bool).unwrap_or(false);
    if !session && let Some(expires) = obj.get("expires") {
        param.insert("expires".into(), expires.clone());
    }
    Some(Value::Object(param))
}

/// Kills whatever still names `dir` (helpers that left the process group), off the async
/// threads.
async fn sweep(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || procs::kill_by_cmdline(&dir)).await;
}

/// Makes `downloads` the profile's default download folder, without a prompt, keeping
/// whatever else the profile's preferences say (a context's profile has some).
async fn set_download_preferences(profile: &Path, downloads: &Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(downloads).await?;
    let default_dir = profile.join("Default");
    tokio::fs::create_dir_all(&default_dir).await?;
    let path = default_dir.join("Preferences");
    let mut prefs: Value = match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({})),
        Err(_) => json!({}),
    };
    if !prefs.is_object() {
        prefs = json!({});
    }
    let dir = downloads.to_string_lossy();
    prefs["download"] = json!({
        "default_directory": dir,
        "prompt_for_download": false,
        "directory_upgrade": true,
    });
    prefs["savefile"] = json!({ "default_directory": dir });
    tokio::fs::write(&path, prefs.to_string()).await
}

/// A browser a previous browserd started and left running for a keepAlive session. It is
/// not our child: its exit is watched through a pidfd, and it is stopped by signalling its
/// process group.
struct AdoptedBrowser {
    /// How its DevTools are reached (its namespace's, when sandboxed).
    dialer: Dialer,
    record: BrowserRecord,
    certificates: Option<CertificateOverride>,
    /// Held for the browser's life; see [`Jail`].
    jail: Option<Jail>,
    /// Readable once the process has exited.
    exit: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    stopped: bool,
    detached: bool,
}

/// Takes over a browser described by `record`, if it is still the very process that was
/// recorded (same pid, same start time, same profile on its command line). A sandboxed one
/// gets its namespace registered and its egress proxy started again (the previous
/// browserd's went with it); a browser that does not match this server's sandboxing is
/// not taken over.
async fn adopt(
    record: BrowserRecord,
    sandbox: Option<&Arc<Sandbox>>,
    dialer: &Dialer,
) -> Option<Box<dyn BrowserInstance>> {
    if !procs::is_same_process(record.pid, record.start_ticks, &record.dir) {
        return None;
    }
    let pid = rustix::process::Pid::from_raw(record.pid as i32)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    // The pidfd names the process itself, so re-check that the pid was not recycled
    // between the check above and opening it.
    if !procs::is_same_process(record.pid, record.start_ticks, &record.dir) {
        return None;
    }
    // `AsyncFd::new` is deprecated because it is unsound for a `T` that does not own its
    // fd; an `OwnedFd` does, so this use is sound. Its replacement is an `unsafe fn`, and
    // this crate forbids unsafe code.
    #[allow(deprecated)]
    let exit = tokio::io::unix::AsyncFd::new(fd).ok()?;
    let jail = match sandbox {
        Some(sandbox) => {
            let port = crate::inspect::devtools_authority(&record.cdp_url)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let uid = UidLease::claim(UidLease::uid_of_port(port)?)?;
            match Jail::enter(record.pid, uid, sandbox, Duration::ZERO, false).await {
                Ok(jail) => Some(jail),
                Err(e) => {
                    tracing::warn!(error = %e, pid = record.pid, "could not take over a sandboxed browser");
                    return None;
                }
            }
        }
        // Unsandboxed now: a browser of a sandboxed run would have no way in.
        None if netns::of_sandbox(record.pid).is_ok() => return None,
        None => None,
    };
    Some(Box::new(AdoptedBrowser {
        dialer: dialer.clone(),
        certificates: None,
        record,
        exit,
        jail,
        stopped: false,
        detached: false,
    }))
}

impl AdoptedBrowser {
    fn kill_group(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.record.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for AdoptedBrowser {
    fn drop(&mut self) {
        if !self.stopped && !self.detached {
            self.kill_group();
        }
    }
}

#[async_trait::async_trait]
impl BrowserInstance for AdoptedBrowser {
    fn cdp_url(&self) -> &str {
        &self.record.cdp_url
    }

    fn pid(&self) -> Option<u32> {
        Some(self.record.pid)
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.record.dir)
    }

    fn is_running(&mut self) -> bool {
        !self.stopped && procs::is_alive(self.record.pid)
    }

    fn record(&self) -> Option<BrowserRecord> {
        Some(self.record.clone())
    }

    fn has_devtools(&self) -> bool {
        true
    }

    fn downloads_dir(&self) -> Option<PathBuf> {
        Some(self.record.dir.join("downloads"))
    }

    fn egress_rules(&self) -> Option<egress::SessionSlot> {
        self.jail.as_ref().map(|j| Arc::clone(&j.rules))
    }

    async fn begin_session(&mut self, setup: &SessionSetup) -> Result<(), CdpError> {
        // Its cookies were set by the browserd that started it; its recorder and its
        // certificate override went with that browserd's connections, so they start again.
        // The recorder, on the page as it is now, in the background: clients reconnect as
        // soon as the session is ready again.
        if setup.ignore_certificate_errors {
            self.certificates =
                Some(CertificateOverride::set(&self.dialer, &self.record.cdp_url).await?);
        }
        if let Some(recording) = &setup.recording {
            spawn_recorder(
                self.dialer.clone(),
                self.record.cdp_url.clone(),
                recording.clone(),
            );
        }
        Ok(())
    }

    async fn close_for_save(&mut self) -> Option<ProfileState> {
        let cookies = if self.is_running() {
            let cookies = cookies_then_close(&self.dialer, &self.record.cdp_url).await;
            let _ = tokio::time::timeout(GRACEFUL_EXIT, self.exit.readable()).await;
            cookies
        } else {
            Vec::new()
        };
        Some(ProfileState {
            profile_dir: self.record.dir.join("profile"),
            cookies,
        })
    }

    fn detach(&mut self) {
        self.detached = true;
    }

    async fn exited(&mut self) -> String {
        tokio::select! {
            readable = self.exit.readable() => match readable {
                Ok(_) => "Chromium exited unexpectedly".to_owned(),
                Err(e) => format!("lost track of the Chromium process: {e}"),
            },
            reason = egress_failed(&mut self.jail) => reason,
        }
    }

    async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.kill_group();
        // Its parent (init, after our restart) reaps it; wait until it is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.exit.readable()).await;
        sweep(self.record.dir.clone()).await;
    }
}

/// A sandboxed browser's share of the host: its uid, its namespace's entry in
/// [`netns`], and the egress proxy serving its pages. Dropping it gives all three back.
struct Jail {
    uid: UidLease,
    /// Ends by itself only when the session's network cannot go on, with the reason.
    egress: tokio::task::JoinHandle<String>,
    /// That reason, once read (a finished task is not polled again).
    egress_failure: Option<String>,
    /// The session's additions to the egress policy (allowedDomains).
    rules: egress::SessionSlot,
    /// Where its namespace is registered, until it is dropped.
    dialer: Dialer,
}

impl Jail {
    /// Finds the namespace of the sandbox whose outer bwrap is `pid`, registers it under
    /// the browser's DevTools port and starts the egress proxy inside it.
    async fn enter(
        pid: u32,
        uid: UidLease,
        sandbox: &Sandbox,
        patience: Duration,
        closed: bool,
    ) -> Result<Self, LaunchError> {
        let deadline = tokio::time::Instant::now() + patience;
        let ns = loop {
            match netns::of_sandbox(pid) {
                Ok(ns) => break Arc::new(ns),
                Err(_) if tokio::time::Instant::now() < deadline && procs::is_alive(pid) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => return Err(LaunchError::Sandbox(e)),
            }
        };
        let port = uid.devtools_port();
        let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], egress::PROXY_PORT));
        // bwrap brings the namespace's loopback up just after the namespace exists: until
        // then binding 127.0.0.1 fails with "cannot assign requested address" (seen under load).
        let listener = loop {
            match netns::listen(Arc::clone(&ns), proxy).await {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrNotAvailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => return Err(LaunchError::Sandbox(e)),
            }
        };
        sandbox.dialer().register(port, ns);
        // Set before the proxy serves its first connection.
        let rules = egress::SessionSlot::default();
        rules.write().unwrap().unassigned = closed;
        Ok(Self {
            dialer: sandbox.dialer().clone(),
            egress: egress::serve(
                listener,
                Arc::clone(sandbox.egress()),
                Arc::clone(&rules),
                Arc::clone(sandbox.metrics()),
            ),
            egress_failure: None,
            uid,
            rules,
        })
    }

    /// Resolves if the egress proxy stops by itself: the browser's pages are cut off.
    async fn egress_failed(&mut self) -> String {
        if self.egress_failure.is_none() {
            let reason = match (&mut self.egress).await {
                Ok(reason) => reason,
                Err(e) => format!("the session's network proxy failed: {e}"),
            };
            self.egress_failure = Some(reason);
        }
        self.egress_failure.clone().unwrap_or_default()
    }
}

/// Resolves when a sandboxed browser's egress proxy stops by itself; never without one.
async fn egress_failed(jail: &mut Option<Jail>) -> String {
    match jail {
        Some(jail) => jail.egress_failed().await,
        None => std::future::pending().await,
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.dialer.unregister(self.uid.devtools_port());
        self.egress.abort();
    }
}
