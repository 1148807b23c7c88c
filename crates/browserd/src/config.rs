//! Configuration: command-line flags over `BROWSERD_*` environment variables over an
//! optional TOML file over built-in defaults.
//!
//! clap reads flags and environment variables together (so `--help` shows both); the file
//! fills what neither set. A few lines of merging, rather than a layered-config crate,
//! because there is exactly one file and one struct.
#![allow(
    rustdoc::bare_urls,
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    reason = "its doc comments are the --help text, written for a terminal"
)]

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::model::MAX_TIMEOUT_SECS;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_DATA_DIR: &str = "./browserd-data";
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_MIN_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_MESSAGE_MIB: usize = 256;
/// Memory planned per session when sizing `--max-sessions` (Chromium with a few busy tabs).
pub const MIB_PER_SESSION: u64 = 512;

/// A secret setting (an API key, the context key): its `Debug` shows no part of it, so a
/// logged or printed configuration never leaks it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Every setting, as given by any one source (all optional).
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to serve the API and connectUrl websockets on [default: 127.0.0.1:3000]
    #[arg(long, env = "BROWSERD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Base URL put in connectUrl, e.g. https://browsers.example.com; when unset, taken from
    /// the Host header of each request
    #[arg(long, env = "BROWSERD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Chromium executable, run as given [default: the first of chromium, chromium-browser,
    /// google-chrome on PATH; for Debian's wrapper script, the binary it runs]
    #[arg(long, env = "BROWSERD_CHROMIUM", value_name = "PATH")]
    pub chromium: Option<PathBuf>,

    /// API key of the default project (for scripts and CI); when unset, a random key is
    /// made on first start and printed once. Prefer --api-key-file or the environment
    /// variable: a flag's value shows in `ps` to every local user
    #[arg(
        long,
        env = "BROWSERD_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<Secret>,

    /// File holding the default project's API key (its first line), kept out of `ps`
    #[arg(
        long,
        env = "BROWSERD_API_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "api_key"
    )]
    pub api_key_file: Option<PathBuf>,

    /// Concurrent sessions on this server; with --database, 0 makes a node that runs no
    /// browsers and passes creates to the others [default: one per 512 MiB of memory, less
    /// 1 GiB for the system]
    #[arg(long, env = "BROWSERD_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Browsers kept started and ready, so a create takes one at once; 0 turns the pool off.
    /// Warm browsers use free session slots [default: one per core, at most 4]
    #[arg(long, env = "BROWSERD_WARM_POOL", value_name = "N")]
    pub warm_pool: Option<usize>,

    /// The default project's defaultTimeout when it is first created, in seconds [default: 300]
    #[arg(long, env = "BROWSERD_DEFAULT_TIMEOUT", value_name = "SECONDS")]
    pub default_timeout: Option<u64>,

    /// Smallest session timeout accepted, in seconds; tests may lower it to 1 [default: 60]
    #[arg(long, env = "BROWSERD_MIN_TIMEOUT", value_name = "SECONDS")]
    pub min_timeout: Option<u64>,

    /// Largest CDP websocket message relayed in either direction, in MiB [default: 256]
    #[arg(long, env = "BROWSERD_MAX_MESSAGE_MIB", value_name = "MIB")]
    pub max_message_mib: Option<usize>,

    /// Memory that websocket messages of 1 MiB and more may hold at once, all clients
    /// together, in MiB (each needs twice its size while it is relayed; at least twice
    /// --max-message-mib): a large message waits for room, its sender seeing backpressure,
    /// and after 30 s its client is closed with 1013, try again later [default: 1024, or
    /// twice --max-message-mib if more]
    #[arg(long, env = "BROWSERD_RELAY_MEMORY_MIB", value_name = "MIB")]
    pub relay_memory_mib: Option<u64>,

    /// What SIGTERM does with live sessions. keep: keepAlive browsers run on and the next
    /// browserd on this data dir takes them over (systemd on one machine); end: every
    /// session ends (COMPLETED) and browserd exits; drain: no new sessions here (503 with
    /// x-should-retry, /readyz 503, a cluster places creates elsewhere), live sessions go on
    /// and clients may reconnect, and browserd exits 0 when the last one ends or at
    /// --drain-timeout (Kubernetes, where a restart kills every process) [default: keep]
    #[arg(long, env = "BROWSERD_SHUTDOWN", value_name = "MODE")]
    pub shutdown: Option<ShutdownMode>,

    /// Same as --shutdown end (true) or keep (false); kept for older configurations
    #[arg(long, env = "BROWSERD_SHUTDOWN_ENDS_SESSIONS", value_name = "BOOL")]
    pub shutdown_ends_sessions: Option<bool>,

    /// How long a drain (--shutdown drain, `browserd drain`) waits for live sessions to
    /// end before ending them (COMPLETED, their clients told why), in seconds. Kubernetes:
    /// keep terminationGracePeriodSeconds above it [default: 21600, the longest a session
    /// may live]
    #[arg(long, env = "BROWSERD_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,

    /// Seconds between websocket pings to each client; a client that answers none for about
    /// two intervals is disconnected [default: 30]
    #[arg(long, env = "BROWSERD_PING_INTERVAL", value_name = "SECONDS")]
    pub ping_interval: Option<u64>,

    /// Disconnect a client that sends no CDP command for this many seconds; its session
    /// goes on by its own rules [default: 600]
    #[arg(long, env = "BROWSERD_CLIENT_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub client_idle_timeout: Option<u64>,

    /// The default project's creation rate when it is first created: sessions per minute,
    /// 0 for no limit [default: 0]
    #[arg(long, env = "BROWSERD_CREATION_RATE", value_name = "N")]
    pub creation_rate: Option<u32>,

    /// Refuse to start a browser (503) when the machine has less memory available than
    /// this, in MiB [default: 512]
    #[arg(long, env = "BROWSERD_MIN_FREE_MEMORY_MIB", value_name = "MIB")]
    pub min_free_memory_mib: Option<u64>,

    /// Refuse new sessions (503) when the data dir's disk has less free space than this, in
    /// MiB; what is already stored is left intact [default: 1024]
    #[arg(long, env = "BROWSERD_MIN_FREE_DISK_MIB", value_name = "MIB")]
    pub min_free_disk_mib: Option<u64>,

    /// Websocket clients one session may have at once [default: 16]
    #[arg(long, env = "BROWSERD_MAX_CLIENTS_PER_SESSION", value_name = "N")]
    pub max_clients_per_session: Option<usize>,

    /// Tabs one session's browser may have open at once: Target.createTarget past it is a
    /// CDP error, a tab a page opens past it is closed [default: 100]
    #[arg(long, env = "BROWSERD_MAX_TABS_PER_SESSION", value_name = "N")]
    pub max_tabs_per_session: Option<usize>,

    /// Connections (HTTP and websockets) one client address may hold at once. Behind a
    /// reverse proxy every client has the proxy's address: raise it there [default: 1024]
    #[arg(long, env = "BROWSERD_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Which pages may embed the live view (`debuggerFullscreenUrl`) in a frame, as CSP
    /// `frame-ancestors` sources separated by spaces, e.g. "https://app.example.com" or
    /// "'self'" [default: any page, as Browserbase's]
    #[arg(
        long,
        env = "BROWSERD_LIVE_VIEW_FRAME_ANCESTORS",
        value_name = "SOURCES"
    )]
    pub live_view_frame_ancestors: Option<String>,

    /// Key that encrypts saved contexts (browser profiles) at rest: 64 hex digits. When
    /// unset, browserd makes one on first start and keeps it in <data dir>/context.key;
    /// contexts saved under one key do not open under another
    #[arg(
        long,
        env = "BROWSERD_CONTEXT_KEY",
        value_name = "HEX",
        hide_env_values = true
    )]
    pub context_key: Option<Secret>,

    /// Days an ended session is kept: its row (GET /v1/sessions/{id}, lists) and its files.
    /// Then both are deleted, by a sweep every 10 minutes; the project's usage totals keep
    /// what the session was billed for [default: 30]
    #[arg(long, env = "BROWSERD_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u64>,

    /// Hours a session's files (downloads, uploads, CDP log, recording) are kept after it
    /// ends, if shorter than --retention-days (its downloads, logs and recording endpoints
    /// work until then); 0 removes them at the next sweep [default: --retention-days]
    #[arg(long, env = "BROWSERD_FILES_RETENTION_HOURS", value_name = "HOURS")]
    pub files_retention_hours: Option<u64>,

    /// Disk one session's files may use, in MiB: downloads, uploads, CDP log and recording
    /// together. Past it, uploads are refused (413), downloads that do not fit are removed
    /// (the server log names them), the CDP log stops with a last entry saying why, and the
    /// recording stops; the session keeps running [default: 1024]
    #[arg(long, env = "BROWSERD_SESSION_DISK_MIB", value_name = "MIB")]
    pub session_disk_mib: Option<u64>,

    /// Largest file accepted by POST /v1/sessions/{id}/uploads, in MiB [default: 512]
    #[arg(long, env = "BROWSERD_MAX_UPLOAD_MIB", value_name = "MIB")]
    pub max_upload_mib: Option<u64>,

    /// Run each browser in a sandbox of its own (bubblewrap: its own uid, mount, pid and
    /// network namespaces), so a client of one session reaches neither the host's files nor
    /// other sessions. auto: when browserd runs as root and bwrap is installed, else a
    /// warning; on: or refuse to start; off: never [default: auto]
    #[arg(long, env = "BROWSERD_SANDBOX", value_name = "MODE")]
    pub sandbox: Option<crate::browser::sandbox::SandboxMode>,

    /// Let pages of sandboxed browsers connect to services on this machine (loopback and
    /// its own addresses), e.g. to test a local app; browserd's own ports stay closed
    /// [default: false]
    #[arg(long, env = "BROWSERD_ALLOW_LOCAL_EGRESS", value_name = "BOOL")]
    pub allow_local_egress: Option<bool>,

    /// Open a network that is closed to pages by default (private, link-local, CGNAT, ULA…):
    /// an address or CIDR, e.g. an internal test site's 10.20.0.0/16; repeat the flag or
    /// separate with commas. This machine's own addresses stay governed by
    /// --allow-local-egress [default: none]
    #[arg(
        long,
        env = "BROWSERD_EGRESS_ALLOW",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub egress_allow: Option<Vec<crate::browser::egress::Cidr>>,

    /// Close a network to pages although it is public (wins over --egress-allow); repeat
    /// or separate with commas [default: none]
    #[arg(
        long,
        env = "BROWSERD_EGRESS_DENY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub egress_deny: Option<Vec<crate::browser::egress::Cidr>>,

    /// Upstream HTTP proxies this server offers sessions that ask for `proxies: true` or
    /// `type: "browserbase"` (TOML: [[proxy]] tables with name, server, username, password,
    /// country, state, city, remote_dns; see the README). Without it such sessions are
    /// refused (400)
    #[arg(long, env = "BROWSERD_PROXY_POOL", value_name = "FILE")]
    pub proxy_pool: Option<PathBuf>,

    /// Filter lists whose whole-host rules (||host^) browserSettings.blockAds refuses at
    /// the egress, comma-separated; read when a session first asks for blockAds, missing
    /// files skipped [default: EasyList and EasyPrivacy from Debian's
    /// webext-ublock-origin-chromium]
    #[arg(
        long,
        env = "BROWSERD_BLOCK_ADS_LISTS",
        value_name = "FILES",
        value_delimiter = ','
    )]
    pub block_ads_lists: Option<Vec<PathBuf>>,

    /// Only read from the config file; on the command line it is a global flag (`Common`).
    #[arg(skip)]
    pub database: Option<Secret>,

    /// This node's name in a cluster, unique among the nodes sharing a database; a node
    /// restarted under the same name takes back its keepAlive sessions [default: the host
    /// name]
    #[arg(long, env = "BROWSERD_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Where the other nodes reach this one (http://host:port): they forward requests and
    /// websockets for this node's sessions there [default: http://<--listen>, which must
    /// then not be 0.0.0.0]
    #[arg(long, env = "BROWSERD_NODE_URL", value_name = "URL")]
    pub node_url: Option<String>,

    /// Seconds a node's heartbeat keeps it alive for the others; a node silent for longer
    /// is declared lost and its sessions end as ERROR (within about 1.2 times this)
    /// [default: 10]
    #[arg(long, env = "BROWSERD_NODE_LEASE", value_name = "SECONDS")]
    pub node_lease: Option<f64>,

    /// Also serve GET /metrics (Prometheus) on this address without an API key; on the API
    /// port it needs the default project's key. Bind it where only Prometheus reaches
    /// [default: off]
    #[arg(long, env = "BROWSERD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Only read from the config file; on the command line it is a global flag (`Common`).
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,

    /// Only read from the config file; on the command line it is a global flag (`Common`).
    #[arg(skip)]
    pub log_format: Option<LogFormat>,
}

/// Settings every command shares.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Common {
    /// TOML file with any of the serve settings (keys as the flags, with _ for -)
    #[arg(long, env = "BROWSERD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Where browserd keeps its database and session files [default: ./browserd-data]
    #[arg(long, env = "BROWSERD_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Share a PostgreSQL database with other browserd nodes (postgres://user:pass@host/db):
    /// any node then serves any session. Unset: the embedded SQLite database in the data
    /// dir, one node. Put the password in the environment variable, not a flag
    #[arg(
        long,
        env = "BROWSERD_DATABASE",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database: Option<Secret>,

    /// Log lines as text or as JSON objects, one per line (time, level, message, and the
    /// request and session they belong to); colours only when stderr is a terminal
    /// [default: text]
    #[arg(
        long,
        env = "BROWSERD_LOG_FORMAT",
        value_name = "FORMAT",
        global = true
    )]
    pub log_format: Option<LogFormat>,
}

/// What SIGTERM does with live sessions (`--shutdown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    #[default]
    Keep,
    End,
    Drain,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub chromium: Option<PathBuf>,
    pub api_key: Option<Secret>,
    pub max_sessions: usize,
    pub warm_pool: usize,
    pub default_timeout_secs: u64,
    pub min_timeout_secs: u64,
    pub max_message_size: usize,
    /// `--relay-memory-mib`, in bytes.
    pub relay_memory: u64,
    pub shutdown: ShutdownMode,
    pub drain_timeout: std::time::Duration,
    pub ping_interval_secs: u64,
    pub client_idle_timeout_secs: u64,
    pub creation_rate: u32,
    pub min_free_memory_mib: u64,
    pub min_free_disk_mib: u64,
    pub max_clients_per_session: usize,
    pub max_connections_per_address: usize,
    /// `--live-view-frame-ancestors`, checked: CSP sources, or `None` for any page.
    pub live_view_frame_ancestors: Option<String>,
    pub max_tabs_per_session: usize,
    pub context_key: Option<Secret>,
    /// How long ended sessions' rows are kept.
    pub retention: std::time::Duration,
    pub files_retention: std::time::Duration,
    pub session_disk_bytes: u64,
    pub max_upload_bytes: u64,
    pub sandbox: crate::browser::sandbox::SandboxMode,
    pub allow_local_egress: bool,
    /// `--egress-allow`, `--egress-deny`.
    pub egress_allow: Vec<crate::browser::egress::Cidr>,
    pub egress_deny: Vec<crate::browser::egress::Cidr>,
    /// The operator's upstream proxies (`--proxy-pool`); empty without one.
    pub proxy_pool: std::sync::Arc<crate::browser::proxy::ProxyPool>,
    /// `--block-ads-lists`.
    pub ad_block_lists: Vec<PathBuf>,
    /// A shared PostgreSQL database's URL; `None`: the embedded database.
    pub database: Option<Secret>,
    pub node_name: String,
    /// Where other nodes reach this one; `None`: `http://` and the address it listens on
    /// (known once bound: see [`Config::node_url_of`]).
    pub node_url: Option<String>,
    pub node_lease: std::time::Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// This server's metrics: made with its configuration, so the launcher, the sandbox's
    /// egress, the relay's budget and the sessions all count into the same set.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Config {
    /// Merges flags/env (`cli`) over the file named by `--config` over defaults, and checks it.
    pub fn resolve(common: &Common, cli: &Settings) -> anyhow::Result<Self> {
        let f = match &common.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let min_timeout_secs = cli
            .min_timeout
            .or(f.min_timeout)
            .unwrap_or(DEFAULT_MIN_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&min_timeout_secs) {
            bail!("--min-timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds");
        }
        let default_timeout_secs = cli
            .default_timeout
            .or(f.default_timeout)
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(min_timeout_secs..=MAX_TIMEOUT_SECS).contains(&default_timeout_secs) {
            bail!(
                "--default-timeout must be between --min-timeout ({min_timeout_secs}) and {MAX_TIMEOUT_SECS} seconds"
            );
        }
        let max_sessions = cli
            .max_sessions
            .or(f.max_sessions)
            .unwrap_or_else(default_max_sessions);
        let public_url = cli.public_url.clone().or(f.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("--public-url must start with http:// or https:// (got {url:?})");
        }
        let ping_interval_secs = cli.ping_interval.or(f.ping_interval).unwrap_or(30);
        let client_idle_timeout_secs = cli
            .client_idle_timeout
            .or(f.client_idle_timeout)
            .unwrap_or(600);
        if ping_interval_secs == 0 || client_idle_timeout_secs == 0 {
            bail!("--ping-interval and --client-idle-timeout must be at least 1 second");
        }
        let max_message_mib = cli
            .max_message_mib
            .or(f.max_message_mib)
            .unwrap_or(DEFAULT_MAX_MESSAGE_MIB);
        if !(1..=2048).contains(&max_message_mib) {
            bail!("--max-message-mib must be between 1 and 2048");
        }
        let relay_memory_mib = cli
            .relay_memory_mib
            .or(f.relay_memory_mib)
            .unwrap_or_else(|| 1024.max(2 * max_message_mib as u64));
        if relay_memory_mib < 2 * max_message_mib as u64 {
            bail!(
                "--relay-memory-mib ({relay_memory_mib}) must be at least twice --max-message-mib ({max_message_mib}): a message being relayed needs its size twice"
            );
        }
        let max_upload_mib = cli.max_upload_mib.or(f.max_upload_mib).unwrap_or(512);
        if max_upload_mib == 0 {
            bail!("--max-upload-mib must be at least 1");
        }
        let listen = cli
            .listen
            .or(f.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
        let database = common.database.clone().or(f.database.clone());
        if let Some(url) = &database
            && !url.expose().starts_with("postgres://")
            && !url.expose().starts_with("postgresql://")
        {
            bail!(
                "--database must be a postgres:// URL (leave it unset for the embedded database)"
            );
        }
        let node_url = match cli.node_url.clone().or(f.node_url.clone()) {
            Some(url) => {
                if !url.starts_with("http://") {
                    bail!("--node-url must start with http:// (got {url:?})");
                }
                Some(url.trim_end_matches('/').to_owned())
            }
            None if database.is_some() && listen.ip().is_unspecified() => bail!(
                "--listen {listen} does not say where other nodes reach this one: give --node-url http://<this machine's address>:{}",
                listen.port()
            ),
            None => None,
        };
        // 0: a node of a cluster that runs no browsers and passes every create on.
        if max_sessions == 0 && database.is_none() {
            bail!(
                "--max-sessions must be at least 1 (0, a node that runs no browsers, only makes sense with --database)"
            );
        }
        let node_lease = cli.node_lease.or(f.node_lease).unwrap_or(10.0);
        if !(0.5..=3600.0).contains(&node_lease) {
            bail!("--node-lease must be between 0.5 and 3600 seconds");
        }
        let node_name = match cli.node_name.clone().or(f.node_name.clone()) {
            Some(name) if name.trim().is_empty() => bail!("--node-name must not be empty"),
            Some(name) => name,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "browserd".to_owned()),
        };
        let retention_days = cli.retention_days.or(f.retention_days).unwrap_or(30);
        if !(1..=36_500).contains(&retention_days) {
            bail!("--retention-days must be between 1 and 36500");
        }
        let files_retention_hours = cli
            .files_retention_hours
            .or(f.files_retention_hours)
            .unwrap_or(retention_days * 24);
        // Files are found through their session's row: they cannot outlive it.
        if files_retention_hours > retention_days * 24 {
            bail!(
                "--files-retention-hours {files_retention_hours} is longer than --retention-days {retention_days}: a session's files are deleted with its row at the latest"
            );
        }
        let session_disk_mib = cli.session_disk_mib.or(f.session_disk_mib).unwrap_or(1024);
        if session_disk_mib == 0 {
            bail!("--session-disk-mib must be at least 1");
        }
        let proxy_pool = match cli.proxy_pool.as_ref().or(f.proxy_pool.as_ref()) {
            Some(path) => crate::browser::proxy::ProxyPool::load(path)
                .map_err(|e| anyhow::anyhow!("--proxy-pool: {e}"))?,
            None => Default::default(),
        };
        // The flags (and environment) win over the file, as for every setting; within one
        // source, the two spellings must agree.
        let one_source = |mode: Option<ShutdownMode>,
                          ends: Option<bool>|
         -> anyhow::Result<Option<ShutdownMode>> {
            let from_ends = ends.map(|e| {
                if e {
                    ShutdownMode::End
                } else {
                    ShutdownMode::Keep
                }
            });
            match (mode, from_ends) {
                (Some(m), Some(e)) if m != e => bail!(
                    "--shutdown {} and --shutdown-ends-sessions {} disagree: give only --shutdown (keep, end or drain)",
                    format!("{m:?}").to_lowercase(),
                    ends.unwrap_or_default()
                ),
                (m, e) => Ok(m.or(e)),
            }
        };
        let shutdown = one_source(cli.shutdown, cli.shutdown_ends_sessions)?
            .or(one_source(f.shutdown, f.shutdown_ends_sessions)?)
            .unwrap_or_default();
        let drain_timeout = cli
            .drain_timeout
            .or(f.drain_timeout)
            .unwrap_or(MAX_TIMEOUT_SECS);
        if drain_timeout == 0 {
            bail!("--drain-timeout must be at least 1 second");
        }
        Ok(Self {
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
            proxy_pool: std::sync::Arc::new(proxy_pool),
            ad_block_lists: cli
                .block_ads_lists
                .clone()
                .or_else(|| f.block_ads_lists.clone())
                .unwrap_or_else(crate::browser::adblock::debian_lists),
            sandbox: cli.sandbox.or(f.sandbox).unwrap_or_default(),
            allow_local_egress: cli
                .allow_local_egress
                .or(f.allow_local_egress)
                .unwrap_or(false),
            egress_allow: cli
                .egress_allow
                .clone()
                .or_else(|| f.egress_allow.clone())
                .unwrap_or_default(),
            egress_deny: cli
                .egress_deny
                .clone()
                .or_else(|| f.egress_deny.clone())
                .unwrap_or_default(),
            context_key: cli.context_key.clone().or(f.context_key),
            retention: std::time::Duration::from_secs(retention_days * 86_400),
            files_retention: std::time::Duration::from_secs(
                files_retention_hours.saturating_mul(3600),
            ),
            session_disk_bytes: session_disk_mib.saturating_mul(1024 * 1024),
            max_upload_bytes: max_upload_mib.saturating_mul(1024 * 1024),
            listen,
            metrics_listen: cli.metrics_listen.or(f.metrics_listen),
            database,
            node_name,
            node_url,
            node_lease: std::time::Duration::from_secs_f64(node_lease),
            public_url,
            data_dir: common
                .data_dir
                .clone()
                .or(f.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            chromium: cli.chromium.clone().or(f.chromium),
            api_key: match cli.api_key.clone().or(f.api_key) {
                Some(key) => Some(key),
                None => match cli.api_key_file.as_ref().or(f.api_key_file.as_ref()) {
                    Some(path) => Some(Secret(read_key_file(path)?)),
                    None => None,
                },
            },
            max_sessions,
            warm_pool: cli
                .warm_pool
                .or(f.warm_pool)
                .unwrap_or_else(default_warm_pool)
                .min(max_sessions),
            default_timeout_secs,
            min_timeout_secs,
            max_message_size: max_message_mib * 1024 * 1024,
            relay_memory: relay_memory_mib.saturating_mul(1024 * 1024),
            ping_interval_secs,
            client_idle_timeout_secs,
            creation_rate: cli.creation_rate.or(f.creation_rate).unwrap_or(0),
            min_free_memory_mib: cli
                .min_free_memory_mib
                .or(f.min_free_memory_mib)
                .unwrap_or(512),
            min_free_disk_mib: cli
                .min_free_disk_mib
                .or(f.min_free_disk_mib)
                .unwrap_or(1024),
            max_tabs_per_session: cli
                .max_tabs_per_session
                .or(f.max_tabs_per_session)
                .unwrap_or(crate::cdp::filter::MAX_PAGES)
                .max(1),
            max_connections_per_address: cli
                .max_connections_per_address
                .or(f.max_connections_per_address)
                .unwrap_or(crate::http_server::MAX_CONNECTIONS_PER_ADDRESS)
                .max(1),
            live_view_frame_ancestors: frame_ancestors(
                cli.live_view_frame_ancestors
                    .clone()
                    .or(f.live_view_frame_ancestors.clone()),
            )?,
            max_clients_per_session: cli
                .max_clients_per_session
                .or(f.max_clients_per_session)
                .unwrap_or(16)
                .max(1),
            shutdown,
            drain_timeout: std::time::Duration::from_secs(drain_timeout),
        })
    }

    /// Where pages of sandboxed browsers may connect.
    pub fn egress_policy(&self) -> crate::browser::egress::EgressPolicy {
        crate::browser::egress::EgressPolicy {
            allow_local: self.allow_local_egress,
            allow: self.egress_allow.clone(),
            deny: self.egress_deny.clone(),
            own_ports: [
                Some(self.listen.port()),
                self.metrics_listen.map(|m| m.port()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }

    /// Where other nodes reach this one, listening on `bound`.
    pub fn node_url_of(&self, bound: SocketAddr) -> String {
        self.node_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("browserd.db")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}

/// The first line of an API key file, trimmed; an empty one is an error.
fn read_key_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read --api-key-file {}", path.display()))?;
    let key = text.lines().next().unwrap_or_default().trim();
    if key.is_empty() {
        bail!("--api-key-file {} is empty", path.display());
    }
    Ok(key.to_owned())
}

/// The log format in force: the flag or environment, else the config file's `log_format`
/// (read before anything else, for the first log line; a bad file is reported later, by
/// [`Config::resolve`]).
pub fn log_format(common: &Common) -> LogFormat {
    common
        .log_format
        .or_else(|| {
            let file = read_file(common.config.as_ref()?).ok()?;
            file.log_format
        })
        .unwrap_or_default()
}

fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// One warm browser per core, at most 4: enough to absorb a burst of creates without
/// idle browsers crowding a small machine.
fn default_warm_pool() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// One session per 512 MiB of memory after leaving 1 GiB to the system; at least 1.
fn default_max_sessions() -> usize {
    let total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib / 1024)
        .unwrap_or(4096);
    (total_mib.saturating_sub(1024) / MIB_PER_SESSION).max(1) as usize
}

/// `--live-view-frame-ancestors`: CSP source expressions (a scheme, a host with its scheme
/// and port, `'self'`, `'none'`, `*`), separated by spaces. Anything that could end the
/// directive or the header (`;`, `,`, quotes elsewhere, control characters) is refused.
fn frame_ancestors(sources: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(sources) = sources else {
        return Ok(None);
    };
    let words: Vec<&str> = sources.split_ascii_whitespace().collect();
    let fits = |w: &str| {
        matches!(w, "'self'" | "'none'" | "*")
            || w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:/*[]".contains(&b))
    };
    // Browsers ignore 'none' beside other sources: it must stand alone.
    let none_with_others = words.len() > 1 && words.contains(&"'none'");
    if words.is_empty() || none_with_others || !words.iter().all(|w| fits(w)) {
        bail!(
            "--live-view-frame-ancestors takes CSP sources separated by spaces (e.g. \"https://app.example.com 'self'\"), not {sources:?}"
        );
    }
    Ok(Some(words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_view_frame_ancestors_take_csp_sources_and_nothing_that_ends_the_header() {
        let ok = |s: &str| frame_ancestors(Some(s.into())).unwrap().unwrap();
        assert_eq!(
            ok("  https://app.example.com   'self' "),
            "https://app.example.com 'self'"
        );
        assert_eq!(
            ok("https://*.example.com:8443"),
            "https://*.example.com:8443"
        );
        for bad in [
            "",
            "https://a; script-src *",
            "a,b",
            "'unsafe-inline'",
            "x\u{1}y",
            "'none' https://a",
        ] {
            assert!(frame_ancestors(Some(bad.into())).is_err(), "{bad:?}");
        }
        assert_eq!(frame_ancestors(None).unwrap(), None);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("browserd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4000\"\nmax_sessions = 7\nmin_timeout = 5\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let common = Common {
            config: Some(file),
            data_dir: None,
            database: None,
            log_format: None,
        };
        let cli = Settings {
            max_sessions: Some(3),
            ..Settings::default()
        };
        let c = Config::resolve(&common, &cli).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.min_timeout_secs, 5);
        assert_eq!(c.default_timeout_secs, 300);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.max_message_size, 256 * 1024 * 1024);
    }

    #[test]
    fn printed_configuration_shows_no_secret() {
        let (api_key, context_key) = ("bd_printed_key_0123", "ab".repeat(32));
        let cli = Settings {
            api_key: Some(api_key.into()),
            context_key: Some(context_key.as_str().into()),
            ..Settings::default()
        };
        let c = Config::resolve(&Common::default(), &cli).unwrap();
        assert_eq!(c.api_key.as_ref().map(Secret::expose), Some(api_key));
        for printed in [format!("{c:?}"), format!("{cli:?}")] {
            assert!(!printed.contains(api_key), "{printed}");
            assert!(!printed.contains(&context_key), "{printed}");
            assert!(printed.contains("redacted"), "{printed}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let common = Common::default();
        let err = Config::resolve(
            &common,
            &Settings {
                default_timeout: Some(30),
                ..Settings::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--default-timeout"), "{err}");
        let err = Config::resolve(
            &common,
            &Settings {
                public_url: Some("example.com".into()),
                ..Settings::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--public-url"), "{err}");
    }

    #[test]
    fn the_file_may_choose_the_log_format_and_the_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "log_format = \"json\"\nmax_sessions = 3\n").unwrap();
        let mut common = Common {
            config: Some(file),
            data_dir: Some(dir.path().to_owned()),
            database: None,
            log_format: None,
        };
        assert_eq!(log_format(&common), LogFormat::Json);
        assert_eq!(
            Config::resolve(&common, &Settings::default())
                .unwrap()
                .max_sessions,
            3
        );
        common.log_format = Some(LogFormat::Text);
        assert_eq!(log_format(&common), LogFormat::Text);
    }

    #[test]
    fn shutdown_flags_win_over_the_file_and_one_source_must_agree_with_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "shutdown_ends_sessions = true\n").unwrap();
        let common = Common {
            config: Some(file),
            ..Common::default()
        };
        let resolve = |settings: Settings| Config::resolve(&common, &settings);
        assert_eq!(
            resolve(Settings::default()).unwrap().shutdown,
            ShutdownMode::End
        );
        let drain = Settings {
            shutdown: Some(ShutdownMode::Drain),
            ..Settings::default()
        };
        assert_eq!(
            resolve(drain).unwrap().shutdown,
            ShutdownMode::Drain,
            "the flag wins"
        );
        let both = Settings {
            shutdown: Some(ShutdownMode::Drain),
            shutdown_ends_sessions: Some(true),
            ..Settings::default()
        };
        let err = resolve(both).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
        let none = Config::resolve(&Common::default(), &Settings::default()).unwrap();
        assert_eq!(none.shutdown, ShutdownMode::Keep);
        assert_eq!(none.drain_timeout, std::time::Duration::from_secs(21600));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").unwrap();
        let common = Common {
            config: Some(file),
            data_dir: None,
            database: None,
            log_format: None,
        };
        let err = Config::resolve(&common, &Settings::default()).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
    }

    #[test]
    fn the_default_session_limit_fits_the_memory() {
        assert!(default_max_sessions() >= 1);
    }
}
