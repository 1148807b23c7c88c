//! Where a session's browser runs: a sandbox that shows it only its own folder.
//!
//! Each sandboxed browser runs under `bwrap` (Debian's `bubblewrap`) in new mount, pid,
//! network, IPC and UTS namespaces, as a uid of its own with no capabilities, and with
//! Chromium's own sandbox on:
//!
//! - **Files.** The mount namespace holds the system (`/usr`, a few files of `/etc`),
//!   private `/tmp` and `/dev/shm`, and the browser's own folder at its real path (so paths
//!   in CDP mean the same inside and out). The data dir, the database, the keys and other
//!   sessions' folders do not exist in there; `file://` and `DOM.setFileInputFiles` see only
//!   what is listed here.
//! - **Network.** The namespace has only its own loopback: the DevTools port listens there,
//!   out of reach of other browsers, pages and local users ([`crate::netns`]); pages go out
//!   through browserd's egress proxy ([`super::egress`]).
//! - **Processes.** The pid namespace hides every other process; killing its init ends them
//!   all.
//! - **User.** bwrap runs as root to set up the mounts; the browser is started by `setpriv`
//!   as the browser's own uid, with no capabilities and no way to gain any (bwrap sets
//!   `no_new_privs`). Its folder is chowned to that uid.

use super::egress::EgressPolicy;
use crate::fault::Failure;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

/// Whether browsers run sandboxed (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Sandboxed when browserd runs as root and bwrap is installed; otherwise a warning at
    /// start-up says what is missing.
    #[default]
    Auto,
    /// Sandboxed, or browserd refuses to start.
    On,
    /// Not sandboxed: every browser runs as browserd's user on the host's network.
    Off,
}

/// The first uid given to a browser. Far above any uid a system hands out to people or
/// services (Debian's subordinate ranges start at 100000 and are 65536 wide per user).
const UID_BASE: u32 = 1_900_000_000;

/// How many uids browsers may have; also keeps [`devtools_port`](UidLease::devtools_port) within the port range.
const UID_SPAN: u32 = 50_000;

/// The first DevTools port: the browser with uid `UID_BASE + n` listens on this plus `n`
/// inside its own namespace, which makes the port name the browser (see [`crate::netns`]).
const PORT_BASE: u32 = 10_000;

/// uids of the browsers of this process. A std mutex: held for a set operation only.
static UIDS_IN_USE: LazyLock<Mutex<HashSet<u32>>> = LazyLock::new(Default::default);

/// A uid taken for one browser; given back when dropped.
#[derive(Debug)]
pub struct UidLease(u32);

impl UidLease {
    /// A uid no other browser of this process has.
    pub fn take() -> Option<Self> {
        let mut used = UIDS_IN_USE.lock().unwrap();
        let start =
            u32::from_le_bytes(crate::secrets::random_bytes()[..4].try_into().ok()?) % UID_SPAN;
        (0..UID_SPAN)
            .map(|i| UID_BASE + (start + i) % UID_SPAN)
            .find(|uid| used.insert(*uid))
            .map(Self)
    }

    /// The uid of a browser that is already running (taken over after a restart).
    pub fn claim(uid: u32) -> Option<Self> {
        ((UID_BASE..UID_BASE + UID_SPAN).contains(&uid) && UIDS_IN_USE.lock().unwrap().insert(uid))
            .then_some(Self(uid))
    }

    /// The uid of the browser whose DevTools listen on `port`, if it is a sandbox port.
    pub fn uid_of_port(port: u16) -> Option<u32> {
        let n = u32::from(port).checked_sub(PORT_BASE)?;
        (n < UID_SPAN).then_some(UID_BASE + n)
    }

    pub fn uid(&self) -> u32 {
        self.0
    }

    /// The DevTools port of the browser with this uid, inside its namespace.
    pub fn devtools_port(&self) -> u16 {
        (PORT_BASE + (self.0 - UID_BASE)) as u16
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        UIDS_IN_USE.lock().unwrap().remove(&self.0);
    }
}

/// How browsers are sandboxed on this machine.
#[derive(Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    setpriv: PathBuf,
    egress: Arc<EgressPolicy>,
    /// The way into its browsers' namespaces: each registers there while it runs.
    dialer: crate::netns::Dialer,
    /// The server's metrics (its egress counts refusals).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Sandbox {
    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// How browserd reaches this sandbox's browsers.
    pub fn dialer(&self) -> &crate::netns::Dialer {
        &self.dialer
    }

    /// Decides, once at start-up, whether browsers are sandboxed. `Ok(None)`: they are not
    /// (`--sandbox off`, or `auto` where it is not possible: the reason is logged).
    pub fn detect(
        mode: SandboxMode,
        egress: EgressPolicy,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Option<Arc<Self>>, Failure> {
        if mode == SandboxMode::Off {
            tracing::warn!(
                "--sandbox off: browsers run as browserd's user with the host's files and network; a client of one session can read what that user reads and reach every other browser's DevTools port"
            );
            return Ok(None);
        }
        let why_not = if !rustix::process::geteuid().is_root() {
            Some("browserd is not running as root, so it cannot give each browser its own uid and namespaces".to_owned())
        } else {
            match (find_program("bwrap"), find_program("setpriv")) {
                (Some(bwrap), Some(setpriv)) => {
                    return Ok(Some(Arc::new(Self {
                        bwrap,
                        setpriv,
                        egress: Arc::new(egress),
                        dialer: crate::netns::Dialer::sandboxed(),
                        metrics,
                    })));
                }
                (None, _) => Some("bwrap is not installed (apt-get install bubblewrap)".to_owned()),
                (_, None) => {
                    Some("setpriv is not installed (apt-get install util-linux)".to_owned())
                }
            }
        };
        let why_not = why_not.expect("set on every path that gets here");
        if mode == SandboxMode::On {
            return Err(Failure::operator(format!("--sandbox on: {why_not}")));
        }
        tracing::warn!(
            "browsers are NOT sandboxed: {why_not}. Chromium's own sandbox stays on, but a client of one session can read what browserd's user reads and reach other browsers' DevTools ports; pass --sandbox on to refuse to start instead"
        );
        Ok(None)
    }

    pub fn egress(&self) -> &Arc<EgressPolicy> {
        &self.egress
    }

    /// The command that runs `chromium args…` as `uid` in a sandbox showing `dir`
    /// (read-write) and `read_only` paths besides the system.
    pub fn command(
        &self,
        uid: u32,
        dir: &Path,
        read_only: &[PathBuf],
        chromium: &Path,
    ) -> (PathBuf, Vec<std::ffi::OsString>) {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut push =
            |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
        push(&[
            "--unshare-pid".as_ref(),
            "--unshare-net".as_ref(),
            "--unshare-ipc".as_ref(),
            "--unshare-uts".as_ref(),
            "--unshare-cgroup-try".as_ref(),
            "--hostname".as_ref(),
            "browserd".as_ref(),
            "--ro-bind".as_ref(),
            "/usr".as_ref(),
            "/usr".as_ref(),
        ]);
        // Merged-/usr systems have these as symlinks into /usr; others as folders.
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(top) {
                Ok(target) => push(&["--symlink".as_ref(), target.as_os_str(), top.as_ref()]),
                Err(_) if Path::new(top).is_dir() => {
                    push(&["--ro-bind".as_ref(), top.as_ref(), top.as_ref()])
                }
                Err(_) => {}
            }
        }
        // What Chromium reads of /etc (libraries, fonts, certificates, its own settings),
        // nothing else: no config file of browserd or anyone else.
        // bwrap makes a missing parent 0700 when run as root: /etc must be passable.
        push(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            "/etc".as_ref(),
        ]);
        for etc in ETC_FILES {
            push(&["--ro-bind-try".as_ref(), etc.as_ref(), etc.as_ref()]);
        }
        // fontconfig's system cache (font names and metrics, read-only): without it every
        // browser's home is new and fontconfig scans every font file at each launch, the
        // largest part of what the sandbox added to a cold create.
        if Path::new(FONT_CACHE).is_dir() {
            for dir in ["/var", "/var/cache"] {
                push(&[
                    "--perms".as_ref(),
                    "0755".as_ref(),
                    "--dir".as_ref(),
                    dir.as_ref(),
                ]);
            }
            push(&[
                "--ro-bind".as_ref(),
                FONT_CACHE.as_ref(),
                FONT_CACHE.as_ref(),
            ]);
        }
        push(&[
            "--proc".as_ref(),
            "/proc".as_ref(),
            "--dev".as_ref(),
            "/dev".as_ref(),
            "--perms".as_ref(),
            "1777".as_ref(),
            "--tmpfs".as_ref(),
            "/tmp".as_ref(),
            "--perms".as_ref(),
            "1777".as_ref(),
            "--tmpfs".as_ref(),
            "/dev/shm".as_ref(),
        ]);
        // A browser installed outside /usr (e.g. /opt/google/chrome).
        let install = std::fs::canonicalize(chromium)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.starts_with("/usr"));
        let mounts = std::iter::once((dir, false))
            .chain(install.iter().map(|p| (p.as_path(), true)))
            .chain(read_only.iter().map(|p| (p.as_path(), true)));
        for (path, ro) in mounts {
            // bwrap makes missing parents with the modes of the real ones (the data dir is
            // 0700): make them passable for the browser's uid first.
            for ancestor in path
                .ancestors()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if ancestor == Path::new("/")
                    || ancestor.starts_with("/usr")
                    || ancestor == Path::new("/tmp")
                {
                    continue;
                }
                push(&[
                    "--perms".as_ref(),
                    "0755".as_ref(),
                    "--dir".as_ref(),
                    ancestor.as_os_str(),
                ]);
            }
            let bind = if ro { "--ro-bind" } else { "--bind" };
            push(&[bind.as_ref(), path.as_os_str(), path.as_os_str()]);
        }
        let uid = uid.to_string();
        push(&[
            "--setenv".as_ref(),
            "HOME".as_ref(),
            dir.as_os_str(),
            "--setenv".as_ref(),
            "PATH".as_ref(),
            "/usr/bin:/bin".as_ref(),
            "--chdir".as_ref(),
            dir.as_os_str(),
            "--".as_ref(),
            self.setpriv.as_os_str(),
            format!("--reuid={uid}").as_ref(),
            format!("--regid={uid}").as_ref(),
            "--clear-groups".as_ref(),
            "--inh-caps=-all".as_ref(),
            "--bounding-set=-all".as_ref(),
            "--".as_ref(),
            chromium.as_os_str(),
        ]);
        (self.bwrap.clone(), args)
    }
}

/// fontconfig's system-wide cache.
const FONT_CACHE: &str = "/var/cache/fontconfig";

/// The files and folders of /etc a browser may read (those that exist).
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/fonts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/mime.types",
    "/etc/chromium",
    "/etc/chromium.d",
];

/// Gives `dir` and everything in it to `uid` (its group too), without following links.
pub fn give_to(dir: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            give_to(&entry.path(), uid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// `name` in the usual system folders (not `PATH`: a sandbox tool must not come from a
/// folder someone else can write to).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}
