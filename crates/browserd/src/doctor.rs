//! `browserd doctor`: is this machine ready to run browserd with these settings?
//!
//! Each check does the real thing where it is cheap (Chromium renders a page, bubblewrap
//! makes namespaces, the database answers) rather than only looking for files: a browser
//! image whose Chromium crashes at launch passes a file check. Each line says what works,
//! or what is missing and the exact command that fixes it. Exit status 1 when a check that
//! browserd needs fails; warnings are for features only some sessions use. It changes
//! nothing: the database is only read (no migration), so it may run beside a server or
//! before an upgrade.

use crate::config::Config;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long Chromium may take to render the test page (a cold start on a small machine).
const CHROMIUM_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    /// A feature some sessions use will not work; browserd runs.
    Warn(String),
    /// browserd will not start, or sessions will fail.
    Fail(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mark, text) = match &self.outcome {
            Outcome::Ok(t) => ("ok  ", t),
            Outcome::Warn(t) => ("warn", t),
            Outcome::Fail(t) => ("FAIL", t),
        };
        write!(f, "{mark}  {:<13} {text}", self.name)
    }
}

fn check(name: &'static str, outcome: Outcome) -> Check {
    Check { name, outcome }
}

/// Runs every check for `config`, in the order a reader fixes them.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = vec![user(config)];
    let chromium = config
        .chromium
        .clone()
        .or_else(crate::browser::chromium::ChromiumLauncher::find_on_path);
    let version = chromium.as_deref().and_then(chromium_version);
    checks.push(match (&chromium, &version) {
        (None, _) => check(
            "chromium",
            Outcome::Fail("not found on PATH: apt-get install chromium (or pass --chromium PATH)".into()),
        ),
        (Some(path), None) => check(
            "chromium",
            Outcome::Fail(format!(
                "{} does not answer --version: reinstall it (apt-get install --reinstall chromium) or pass another --chromium",
                path.display()
            )),
        ),
        (Some(path), Some(v)) => check("chromium", Outcome::Ok(format!("{v} ({})", path.display()))),
    });
    if let (Some(path), Some(_)) = (&chromium, &version) {
        let path = path.clone();
        let renders = tokio::task::spawn_blocking(move || chromium_renders(&path))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        checks.push(check(
            "chromium run",
            match renders {
                Ok(ms) => Outcome::Ok(format!("rendered a page headless in {ms} ms")),
                Err(why) => Outcome::Fail(format!("Chromium did not render a page: {why}")),
            },
        ));
    }
    checks.push(sandbox(config));
    checks.push(chromedriver(version.as_deref()));
    checks.push(program_check(
        "certutil",
        "certutil",
        "for sessions' CA certificates (proxySettings.caCertificates): apt-get install libnss3-tools",
    ));
    checks.push(ad_lists(config));
    checks.push(fonts());
    checks.push(memory(config));
    checks.push(disk(config));
    checks.push(data_dir(&config.data_dir));
    checks.push(database(config).await);
    checks
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| matches!(c.outcome, Outcome::Fail(_)))
}

fn user(config: &Config) -> Check {
    use crate::browser::sandbox::SandboxMode;
    match (rustix::process::geteuid().is_root(), config.sandbox) {
        (true, _) => check("user", Outcome::Ok("root: each browser gets a sandbox and a uid of its own".into())),
        (false, SandboxMode::Off) => check("user", Outcome::Ok("not root, --sandbox off".into())),
        (false, SandboxMode::On) => check(
            "user",
            Outcome::Fail("not root, and --sandbox on: browserd refuses to start; run it as root (docs/security.md)".into()),
        ),
        (false, SandboxMode::Auto) => check(
            "user",
            Outcome::Warn(
                "not root: browsers would not be sandboxed (--sandbox auto runs them without; --sandbox on refuses to start); run browserd as root (docs/security.md)".into(),
            ),
        ),
    }
}

/// `chromium --version`'s answer, e.g. "Chromium 156.0.8078.129 built on Debian …".
fn chromium_version(path: &Path) -> Option<String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The major version in a `--version` answer ("Chromium 156.0…", "ChromeDriver 156.0…").
fn major(version: &str) -> Option<&str> {
    version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?
        .split('.')
        .next()
}

/// Chromium renders a page headless (unsandboxed, as the check's own quick run; the real
/// sandbox is checked on its own): how long it took.
fn chromium_renders(path: &Path) -> Result<u128, String> {
    // A profile of its own, removed after (tempfile is only a dev-dependency).
    let profile = std::env::temp_dir().join(format!("browserd-doctor-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&profile).map_err(|e| e.to_string())?;
    let result = render_in(path, &profile);
    let _ = std::fs::remove_dir_all(&profile);
    result
}

#[expect(
    clippy::disallowed_methods,
    reason = "the doctor is a synchronous command: no runtime to block"
)]
fn render_in(path: &Path, profile: &Path) -> Result<u128, String> {
    let started = std::time::Instant::now();
    let mut child = Command::new(path)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--dump-dom",
            "data:text/html,<title>doctor</title><p id=x></p><script>x.textContent='browserd '+'doctor'</script>",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", path.display()))?;
    // A Chromium that hangs is a failure too: killed after the patience.
    let deadline = started + CHROMIUM_PATIENCE;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no page within {CHROMIUM_PATIENCE:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let dom = String::from_utf8_lossy(&out.stdout);
    if dom.contains("browserd doctor") {
        Ok(started.elapsed().as_millis())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!("{} ({last})", out.status))
    }
}

fn sandbox(config: &Config) -> Check {
    use crate::browser::sandbox::SandboxMode;
    if config.sandbox == SandboxMode::Off {
        return check(
            "sandbox",
            Outcome::Warn(
                "--sandbox off: browsers run with browserd's files and network (docs/security.md)"
                    .into(),
            ),
        );
    }
    let (Some(bwrap), Some(_)) = (find("bwrap"), find("setpriv")) else {
        return check(
            "sandbox",
            Outcome::Fail(
                "bubblewrap or setpriv missing: apt-get install bubblewrap util-linux".into(),
            ),
        );
    };
    // The namespaces a browser's sandbox makes, tried for real (a container without the
    // privileges refuses here: docs/deploy.md says which it needs).
    let out = Command::new(&bwrap)
        .args([
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "true",
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && rustix::process::geteuid().is_root() => check(
            "sandbox",
            Outcome::Ok(format!(
                "{} makes the namespaces a browser runs in",
                bwrap.display()
            )),
        ),
        Ok(o) if o.status.success() => check(
            "sandbox",
            Outcome::Warn(
                "bubblewrap works, but browserd is not root: browsers would not be sandboxed"
                    .into(),
            ),
        ),
        Ok(o) => check(
            "sandbox",
            Outcome::Fail(format!(
                "bubblewrap could not make a browser's namespaces: {} (in a container: the privileges docs/deploy.md lists)",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        ),
        Err(e) => check(
            "sandbox",
            Outcome::Fail(format!("could not run {}: {e}", bwrap.display())),
        ),
    }
}

fn chromedriver(chromium: Option<&str>) -> Check {
    let fix = "for Selenium (seleniumRemoteUrl): apt-get install chromium-driver";
    let Some(path) = find("chromedriver") else {
        return check("chromedriver", Outcome::Warn(format!("not found: {fix}")));
    };
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    match (chromium.and_then(major), major(&version)) {
        (Some(a), Some(b)) if a != b => check(
            "chromedriver",
            Outcome::Warn(format!(
                "{version} does not match Chromium {a}: apt-get install chromium chromium-driver (the same version)"
            )),
        ),
        _ if version.is_empty() => check(
            "chromedriver",
            Outcome::Warn(format!(
                "{} does not answer --version: {fix}",
                path.display()
            )),
        ),
        _ => check("chromedriver", Outcome::Ok(version)),
    }
}

fn program_check(name: &'static str, program: &str, fix: &str) -> Check {
    match find(program) {
        Some(path) => check(name, Outcome::Ok(path.display().to_string())),
        None => check(name, Outcome::Warn(format!("not found, {fix}"))),
    }
}

fn ad_lists(config: &Config) -> Check {
    let lists: Vec<PathBuf> = if config.ad_block_lists.is_empty() {
        crate::browser::adblock::DEBIAN_LISTS
            .iter()
            .map(PathBuf::from)
            .collect()
    } else {
        config.ad_block_lists.clone()
    };
    let found = lists.iter().filter(|l| l.is_file()).count();
    if found == 0 {
        check(
            "ad lists",
            Outcome::Warn(
                "none found, so blockAds is refused: apt-get install webext-ublock-origin-chromium"
                    .into(),
            ),
        )
    } else {
        check(
            "ad lists",
            Outcome::Ok(format!("{found} of {} lists for blockAds", lists.len())),
        )
    }
}

fn fonts() -> Check {
    let count = walk_count(Path::new("/usr/share/fonts"), 4);
    if count == 0 {
        check(
            "fonts",
            Outcome::Warn("no fonts in /usr/share/fonts: pages render text as boxes: apt-get install fonts-liberation fonts-dejavu-core".into()),
        )
    } else {
        check("fonts", Outcome::Ok(format!("{count} font files")))
    }
}

/// Files under `dir`, at most `depth` folders down.
fn walk_count(dir: &Path, depth: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => walk_count(&e.path(), depth - 1),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

fn memory(config: &Config) -> Check {
    let floor = config.min_free_memory_mib;
    match crate::sessions::mem_available_mib() {
        None => check("memory", Outcome::Warn("/proc/meminfo unreadable".into())),
        Some(free) if floor > 0 && free < floor => check(
            "memory",
            Outcome::Fail(format!(
                "{free} MiB available, below --min-free-memory-mib {floor}: creates would be refused"
            )),
        ),
        Some(free) => check(
            "memory",
            Outcome::Ok(format!(
                "{free} MiB available (floor {floor} MiB; --max-sessions {})",
                config.max_sessions
            )),
        ),
    }
}

fn disk(config: &Config) -> Check {
    let floor = config.min_free_disk_mib;
    // The data dir, or the nearest folder above it that exists (it may not be made yet).
    let Some(at) = config
        .data_dir
        .ancestors()
        .find(|p| p.is_dir())
        .and_then(|p| std::fs::canonicalize(p).ok())
    else {
        return check("disk", Outcome::Warn("no folder to measure".into()));
    };
    let at = at.as_path();
    match rustix::fs::statvfs(at) {
        Err(e) => check("disk", Outcome::Warn(format!("{}: {e}", at.display()))),
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize) / (1024 * 1024);
            if floor > 0 && free < floor {
                check(
                    "disk",
                    Outcome::Fail(format!(
                        "{free} MiB free at {}, below --min-free-disk-mib {floor}: creates would be refused",
                        at.display()
                    )),
                )
            } else {
                check(
                    "disk",
                    Outcome::Ok(format!(
                        "{free} MiB free at {} (floor {floor} MiB)",
                        at.display()
                    )),
                )
            }
        }
    }
}

fn data_dir(dir: &Path) -> Check {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Ok(meta) = std::fs::metadata(dir) else {
        return check(
            "data dir",
            Outcome::Ok(format!(
                "{} does not exist yet: browserd makes it (mode 0700)",
                dir.display()
            )),
        );
    };
    if !meta.is_dir() {
        return check(
            "data dir",
            Outcome::Fail(format!("{} is not a folder", dir.display())),
        );
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return check(
            "data dir",
            Outcome::Fail(format!(
                "{} belongs to uid {}, browserd runs as {me}: chown -R {me} {}",
                dir.display(),
                meta.uid(),
                dir.display()
            )),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return check(
            "data dir",
            Outcome::Warn(format!(
                "{} is mode {mode:o}: other users may read sessions' files and the context key: chmod 700 {}",
                dir.display(),
                dir.display()
            )),
        );
    }
    let key = dir.join("context.key");
    if let Ok(m) = std::fs::metadata(&key)
        && m.permissions().mode() & 0o077 != 0
    {
        return check(
            "data dir",
            Outcome::Warn(format!(
                "{} is readable by others: chmod 600 {}",
                key.display(),
                key.display()
            )),
        );
    }
    check(
        "data dir",
        Outcome::Ok(format!("{} (mode {mode:o})", dir.display())),
    )
}

async fn database(config: &Config) -> Check {
    use crate::store::SchemaState;
    let path = config.db_path();
    let which = match &config.database {
        Some(_) => "the shared PostgreSQL".to_owned(),
        None => path.display().to_string(),
    };
    let url = config.database.as_ref().map(crate::config::Secret::expose);
    match crate::store::probe(url, &path).await {
        Ok(SchemaState::Empty) => check(
            "database",
            Outcome::Ok(format!(
                "{which} answers; browserd makes its tables on the first start"
            )),
        ),
        Ok(SchemaState::Current) => check(
            "database",
            Outcome::Ok(format!("{which} answers, its schema is current")),
        ),
        Ok(SchemaState::Behind { applied, latest }) => check(
            "database",
            Outcome::Ok(format!(
                "{which} answers; its schema ({applied}) is brought up to {latest} when this version starts"
            )),
        ),
        Ok(SchemaState::Ahead { applied, latest }) => check(
            "database",
            Outcome::Fail(format!(
                "{which} has schema {applied}, newer than this browserd's {latest}: a later browserd wrote it; run that version"
            )),
        ),
        Err(e) => check(
            "database",
            Outcome::Fail(format!(
                "{which}: {}",
                crate::cli::one_line(&anyhow::Error::new(e))
            )),
        ),
    }
}

fn find(program: &str) -> Option<PathBuf> {
    crate::browser::sandbox::find_program(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_version_is_read_from_either_answer() {
        assert_eq!(
            major("Chromium 156.0.8078.129 built on Debian GNU/Linux 12"),
            Some("156")
        );
        assert_eq!(
            major("ChromeDriver 156.0.8078.129 (abc-refs/branch-heads/1@{#1})"),
            Some("156")
        );
        assert_eq!(major("nothing here"), None);
    }

    #[test]
    fn a_world_readable_data_dir_is_a_warning_and_a_file_a_failure() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            matches!(data_dir(dir.path()).outcome, Outcome::Warn(w) if w.contains("chmod 700"))
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(data_dir(dir.path()).outcome, Outcome::Ok(_)));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(data_dir(&file).outcome, Outcome::Fail(_)));
    }
}
