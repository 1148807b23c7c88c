//! Where a session's connections leave: straight out, or through an upstream proxy (HTTP
//! or SOCKS5).
//!
//! A session's `proxies` become [`ProxyRoutes`], which the browser's egress proxy
//! ([`super::egress`]) consults for every connection a page opens. Through an upstream,
//! every connection is one tunnel to `host:port` (an HTTP `CONNECT`, or a SOCKS5 `CONNECT`
//! with the host name for the upstream to resolve), plain HTTP too: browserd never parses
//! or terminates the page's traffic, the tunnel stays opaque, and the credentials are added
//! here, where pages cannot see them. The bytes that cross an upstream are counted
//! (`proxyBytes`).
//!
//! Written here rather than taken from a crate: the client side of either handshake is a
//! few short messages, and it must sit behind the same egress checks as a direct connection.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

/// How long an upstream may take to accept a connection and answer the CONNECT.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest CONNECT answer read (status line and headers).
const MAX_ANSWER: usize = 16 * 1024;

/// One entry of a create's `proxies`, as the API takes it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProxyEntry {
    /// The client's own proxy.
    #[serde(rename_all = "camelCase")]
    External {
        server: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// In the store: sealed with the context key (see [`seal_passwords`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
    },
    /// Browserbase's own pool; here, the operator's `--proxy-pool`.
    #[serde(rename_all = "camelCase")]
    Browserbase {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        geolocation: Option<Geolocation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
        /// The pool entry chosen at create (kept, so an adopted session uses the same one).
        #[serde(
            default,
            rename = "browserdPoolEntry",
            skip_serializing_if = "Option::is_none"
        )]
        chosen: Option<String>,
    },
    /// Matching hosts go direct.
    #[serde(rename_all = "camelCase")]
    None {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_pattern: Option<String>,
    },
}

impl ProxyEntry {
    fn domain_pattern(&self) -> Option<&str> {
        match self {
            ProxyEntry::External { domain_pattern, .. }
            | ProxyEntry::Browserbase { domain_pattern, .. }
            | ProxyEntry::None { domain_pattern } => domain_pattern.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geolocation {
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// Reads a create's `proxies` (`true`, or a list of entries); `Ok(None)`: no proxies (left
/// out, `false` or an empty list). Errors say what is wrong, for a 400.
pub fn parse_request(value: &serde_json::Value) -> Result<Option<Vec<ProxyEntry>>, String> {
    let entries = match value {
        serde_json::Value::Bool(false) | serde_json::Value::Null => return Ok(None),
        serde_json::Value::Bool(true) => vec![ProxyEntry::Browserbase {
            geolocation: None,
            domain_pattern: None,
            chosen: None,
        }],
        serde_json::Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value::<ProxyEntry>(v.clone())
                    .map_err(|e| format!("proxies[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("proxies must be true or a list of proxy configurations".into()),
    };
    if entries.is_empty() {
        return Ok(None);
    }
    for (i, entry) in entries.iter().enumerate() {
        if let Some(pattern) = entry.domain_pattern() {
            compile_pattern(pattern).map_err(|e| format!("proxies[{i}].domainPattern: {e}"))?;
        }
        match entry {
            ProxyEntry::External {
                server,
                username,
                password,
                ..
            } => {
                ServerAddr::parse(server).map_err(|e| format!("proxies[{i}].server: {e}"))?;
                // The whole upstream as a session would make it (credentials' limits too).
                Upstream::new(server, username.as_deref(), password.as_deref(), None)
                    .map_err(|e| format!("proxies[{i}]: {e}"))?;
            }
            ProxyEntry::Browserbase {
                geolocation: Some(geo),
                ..
            } if geo.country.len() != 2
                || !geo.country.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                return Err(format!(
                    "proxies[{i}].geolocation.country must be a two-letter ISO 3166 code (got {:?})",
                    geo.country
                ));
            }
            _ => {}
        }
    }
    Ok(Some(entries))
}

/// A domainPattern: a regular expression that must match the whole host name.
fn compile_pattern(pattern: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a regular expression: {e}"))
}

/// How browserd asks an upstream for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// HTTP `CONNECT`, with basic auth.
    Http,
    /// SOCKS5 `CONNECT` by host name (so the upstream resolves it, as `socks5h` means),
    /// with username/password auth (RFC 1929).
    Socks5,
}

impl Protocol {
    fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// An upstream's address, from `http://host:port`, `socks5://host:port` (or `socks5h`,
/// `socks`), or `host:port` (HTTP); the port defaults to 80 for HTTP, 1080 for SOCKS5.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerAddr {
    protocol: Protocol,
    host: String,
    port: u16,
}

impl ServerAddr {
    fn parse(server: &str) -> Result<Self, String> {
        let (protocol, rest) = match server.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Protocol::Http, rest),
                "socks5" | "socks5h" | "socks" => (Protocol::Socks5, rest),
                _ => {
                    return Err(format!(
                        "{scheme}:// upstream proxies are not supported; give an HTTP proxy that takes CONNECT (http://host:port) or a SOCKS5 proxy (socks5://host:port)"
                    ));
                }
            },
            None => (Protocol::Http, server),
        };
        let default_port = match protocol {
            Protocol::Http => 80,
            Protocol::Socks5 => 1080,
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '@', '?', '#', ' ']) || rest.is_empty() {
            return Err(format!(
                "{server:?} is not host:port (credentials go in username and password)"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{server:?} has no valid port"))?,
            ),
            _ => (rest, default_port),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(format!("{server:?} names no host"));
        }
        Ok(Self {
            protocol,
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One upstream proxy with its credentials.
pub struct Upstream {
    addr: ServerAddr,
    /// Never logged or shown.
    credentials: Option<Credentials>,
    /// What logs call it: `http://user@host:port` (a pool entry: also its name), no password.
    pub label: String,
    /// The operator's (from `--proxy-pool`): may be on this machine, which a client's own
    /// proxy may only be where pages may reach this machine.
    pub operator: bool,
    /// The proxy is asked for host names, which it resolves itself: a client's own proxy,
    /// or a pool entry with `remote_dns = true`. Otherwise (the pool's default) browserd
    /// resolves the name, judges the address and asks for that address, so a proxy on this
    /// machine or its network cannot be steered by a name that resolves differently there.
    pub remote_dns: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Upstream {
    fn new(
        server: &str,
        username: Option<&str>,
        password: Option<&str>,
        name: Option<&str>,
    ) -> Result<Self, String> {
        let addr = ServerAddr::parse(server)?;
        let credentials = (username.is_some() || password.is_some()).then(|| Credentials {
            username: username.unwrap_or_default().to_owned(),
            password: password.unwrap_or_default().to_owned(),
        });
        if let (Protocol::Socks5, Some(c)) = (addr.protocol, &credentials)
            && (c.username.len() > 255 || c.password.len() > 255)
        {
            return Err("a SOCKS5 proxy's username and password are at most 255 bytes each".into());
        }
        let user = username.map(|u| format!("{u}@")).unwrap_or_default();
        let url = format!("{}://{user}{addr}", addr.protocol.scheme());
        let label = match name {
            Some(name) => format!("{name} ({url})"),
            None => url,
        };
        Ok(Self {
            addr,
            credentials,
            label,
            operator: name.is_some(),
            remote_dns: name.is_none(),
        })
    }

    /// Where to connect to reach the upstream itself.
    pub fn host(&self) -> &str {
        &self.addr.host
    }

    pub fn port(&self) -> u16 {
        self.addr.port
    }

    /// Asks the upstream, already connected on `stream`, for a tunnel to `host:port`.
    pub async fn open_tunnel(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), TunnelError> {
        let asked = async {
            match self.addr.protocol {
                Protocol::Http => self.http_connect(stream, host, port).await,
                Protocol::Socks5 => {
                    socks5_connect(stream, self.credentials.as_ref(), host, port).await
                }
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, asked).await {
            Ok(asked) => asked,
            Err(_) => Err(TunnelError::Broken(
                "no answer to CONNECT within 30 s".into(),
            )),
        }
    }

    async fn http_connect(
        &self,
        stream: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), TunnelError> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let pair = format!("{}:{}", c.username, c.password);
            request.push_str("Proxy-Authorization: Basic ");
            request.push_str(&base64::engine::general_purpose::STANDARD.encode(pair));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let exchange = async {
            stream.write_all(request.as_bytes()).await?;
            read_answer(stream).await
        };
        let status = exchange
            .await
            .map_err(|e| TunnelError::Broken(e.to_string()))?;
        match status {
            (200..=299, _) => Ok(()),
            // 407 is the standard answer; some proxies (tinyproxy) answer 401.
            (code @ (401 | 407), reason) => {
                Err(TunnelError::Authentication(format!("{code} {reason}")))
            }
            (code, reason) => Err(TunnelError::Refused(format!("{code} {reason}"))),
        }
    }
}

/// An upstream's username and password.
struct Credentials {
    username: String,
    password: String,
}

/// The client side of SOCKS5 (RFC 1928) `CONNECT`, with username/password auth (RFC 1929)
/// when there are credentials. Every read is of an exact length: nothing of the tunnel's
/// first bytes is read here.
async fn socks5_connect(
    stream: &mut TcpStream,
    credentials: Option<&Credentials>,
    host: &str,
    port: u16,
) -> Result<(), TunnelError> {
    use tokio::io::AsyncReadExt as _;
    let broken = |e: std::io::Error| TunnelError::Broken(e.to_string());
    // Methods offered: no auth, and username/password when there are credentials.
    let greeting: &[u8] = if credentials.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    stream.write_all(greeting).await.map_err(broken)?;
    let mut chosen = [0u8; 2];
    stream.read_exact(&mut chosen).await.map_err(broken)?;
    match (chosen, credentials) {
        ([5, 0], _) => {}
        ([5, 2], Some(c)) => {
            let mut auth = Vec::with_capacity(3 + c.username.len() + c.password.len());
            auth.push(1);
            auth.push(c.username.len() as u8);
            auth.extend_from_slice(c.username.as_bytes());
            auth.push(c.password.len() as u8);
            auth.extend_from_slice(c.password.as_bytes());
            stream.write_all(&auth).await.map_err(broken)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(broken)?;
            if status[1] != 0 {
                return Err(TunnelError::Authentication(format!(
                    "SOCKS5 authentication status {}",
                    status[1]
                )));
            }
        }
        ([5, 0xff], _) => {
            return Err(TunnelError::Authentication(
                if credentials.is_some() {
                    "the SOCKS5 proxy accepts neither no authentication nor a username and password"
                } else {
                    "the SOCKS5 proxy wants credentials (give username and password)"
                }
                .into(),
            ));
        }
        (other, _) => {
            return Err(TunnelError::Broken(format!(
                "not a SOCKS5 answer to the greeting: {other:?}"
            )));
        }
    }
    let mut request = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let name = host.as_bytes();
            let len = u8::try_from(name.len())
                .map_err(|_| TunnelError::Refused("the host name is too long for SOCKS5".into()))?;
            request.push(3);
            request.push(len);
            request.extend_from_slice(name);
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await.map_err(broken)?;
    // The reply: version, status, reserved, then the bound address (read and dropped).
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.map_err(broken)?;
    if head[0] != 5 {
        return Err(TunnelError::Broken(format!(
            "not a SOCKS5 reply: version {}",
            head[0]
        )));
    }
    if head[1] != 0 {
        let why = match head[1] {
            1 => "general failure",
            2 => "not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unknown status",
        };
        return Err(TunnelError::Refused(format!(
            "SOCKS5 status {} ({why})",
            head[1]
        )));
    }
    let address_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(broken)?;
            usize::from(len[0])
        }
        other => {
            return Err(TunnelError::Broken(format!(
                "SOCKS5 reply with address type {other}"
            )));
        }
    };
    let mut bound = vec![0u8; address_len + 2];
    stream.read_exact(&mut bound).await.map_err(broken)?;
    Ok(())
}

/// Why an upstream gave no tunnel. Its `Display` is what the session log says.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the proxy is unreachable: {0}")]
    Unreachable(String),
    #[error("the proxy refused the credentials ({0})")]
    Authentication(String),
    #[error("the proxy refused the connection: {0}")]
    Refused(String),
    #[error("the proxy broke off: {0}")]
    Broken(String),
    /// The proxy a client named is at an address the egress policy closes to pages.
    #[error("the proxy's address is closed to pages: {0}")]
    Closed(super::egress::Refusal),
}

/// Reads a CONNECT answer's status line and headers, up to the blank line, and no further:
/// what follows is the tunnel's. Hence a buffer of one byte (an answer is ~100 bytes, read
/// once per connection); a larger one could swallow the first bytes of the tunnel.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut head = Vec::with_capacity(256);
    let mut reader = BufReader::with_capacity(1, stream);
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(std::io::Error::other("the proxy closed the connection"));
        }
        if head.len() > MAX_ANSWER {
            return Err(std::io::Error::other("the proxy's answer is too long"));
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next(), parts.next(), parts.next());
    match (version, code.and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => {
            Ok((code, reason.unwrap_or_default().trim().to_owned()))
        }
        _ => Err(std::io::Error::other(format!(
            "not an HTTP answer: {:?}",
            status_line.chars().take(60).collect::<String>()
        ))),
    }
}

/// Where one connection goes.
#[derive(Debug, Clone)]
pub enum Via {
    Direct,
    Upstream(Arc<Upstream>),
}

#[derive(Debug)]
struct Route {
    pattern: Option<regex_lite::Regex>,
    via: Via,
}

/// A session's proxies, in order. The rule (also in the README): the first entry whose
/// `domainPattern` matches the whole host name wins; a host that matches none goes through
/// the last entry without a pattern, or direct if every entry has one. No routes: direct.
#[derive(Debug, Default)]
pub struct ProxyRoutes(Vec<Route>);

impl ProxyRoutes {
    /// The routes for stored entries (passwords already opened), with pool entries looked up
    /// by the name chosen at create.
    pub fn resolve(entries: &[ProxyEntry], pool: &ProxyPool) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(entries.len());
        for entry in entries {
            let pattern = entry.domain_pattern().map(compile_pattern).transpose()?;
            let via = match entry {
                ProxyEntry::None { .. } => Via::Direct,
                ProxyEntry::External {
                    server,
                    username,
                    password,
                    ..
                } => Via::Upstream(Arc::new(Upstream::new(
                    server,
                    username.as_deref(),
                    password.as_deref(),
                    None,
                )?)),
                ProxyEntry::Browserbase { chosen, .. } => {
                    let name = chosen
                        .as_deref()
                        .ok_or("a pool proxy was never chosen for this session")?;
                    let member = pool.named(name).ok_or_else(|| {
                        format!(
                            "the proxy pool no longer has {name:?}, the entry this session uses"
                        )
                    })?;
                    Via::Upstream(Arc::clone(&member.upstream))
                }
            };
            routes.push(Route { pattern, via });
        }
        Ok(Self(routes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where a connection to `host` goes.
    pub fn route(&self, host: &str) -> Via {
        let host = host.trim_end_matches('.').trim_matches(['[', ']']);
        if let Some(hit) = self
            .0
            .iter()
            .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(host)))
        {
            return hit.via.clone();
        }
        self.0
            .iter()
            .rev()
            .find(|r| r.pattern.is_none())
            .map_or(Via::Direct, |r| r.via.clone())
    }
}

/// The operator's upstream proxies (`--proxy-pool FILE`), for `proxies: true` and
/// `type: "browserbase"`.
#[derive(Debug, Default)]
pub struct ProxyPool(Vec<PoolMember>);

#[derive(Debug)]
struct PoolMember {
    name: String,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    upstream: Arc<Upstream>,
}

/// The pool file's shape: `[[proxy]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    #[serde(default)]
    proxy: Vec<PoolFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFileEntry {
    name: Option<String>,
    server: String,
    username: Option<String>,
    password: Option<String>,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    /// Ask this proxy for host names (it resolves them) instead of the addresses browserd
    /// resolved and judged: for a proxy that is neither on this machine nor in a network
    /// pages must not reach (docs/security.md).
    #[serde(default)]
    remote_dns: bool,
}

impl ProxyPool {
    /// Reads a pool file; errors name the entry at fault.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("could not read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PoolFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut members: Vec<PoolMember> = Vec::new();
        for (i, entry) in file.proxy.into_iter().enumerate() {
            let name = entry.name.unwrap_or_else(|| format!("proxy{}", i + 1));
            if members.iter().any(|m| m.name == name) {
                return Err(format!("two proxies are named {name:?}"));
            }
            let mut upstream = Upstream::new(
                &entry.server,
                entry.username.as_deref(),
                entry.password.as_deref(),
                Some(&name),
            )
            .map_err(|e| format!("proxy {name:?}: {e}"))?;
            upstream.remote_dns = entry.remote_dns;
            members.push(PoolMember {
                name,
                country: entry.country,
                state: entry.state,
                city: entry.city,
                upstream: Arc::new(upstream),
            });
        }
        Ok(Self(members))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn named(&self, name: &str) -> Option<&PoolMember> {
        self.0.iter().find(|m| m.name == name)
    }

    /// Picks, at random, a member that serves `geolocation` (any, without one): its name.
    pub fn choose(&self, geolocation: Option<&Geolocation>) -> Result<String, String> {
        if self.0.is_empty() {
            return Err("this server has no proxy pool (its operator can give one with --proxy-pool); use proxies of type \"external\" with your own proxy".into());
        }
        let same = |want: &Option<String>, have: &Option<String>| match (want, have) {
            (None, _) => true,
            (Some(w), Some(h)) => squash(w) == squash(h),
            (Some(_), None) => false,
        };
        let matching: Vec<&PoolMember> = self
            .0
            .iter()
            .filter(|m| {
                geolocation.is_none_or(|g| {
                    same(&Some(g.country.clone()), &m.country)
                        && same(&g.state, &m.state)
                        && same(&g.city, &m.city)
                })
            })
            .collect();
        if matching.is_empty() {
            let geo = geolocation.expect("every member serves a request without a geolocation");
            let place = [
                Some(&geo.city),
                Some(&geo.state),
                Some(&Some(geo.country.clone())),
            ]
            .into_iter()
            .flatten()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
            return Err(format!(
                "no proxy in this server's pool serves {place}; leave geolocation out, or ask its operator"
            ));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS random source is available");
        let pick = u64::from_le_bytes(random) as usize % matching.len();
        Ok(matching[pick].name.clone())
    }
}

/// Places compared without case, spaces, dashes or underscores ("New York" = "newyork").
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The purpose under which a session's proxy passwords are sealed with the context key.
fn seal_purpose(session: uuid::Uuid) -> String {
    format!("proxy-password:{session}")
}

/// Chooses the pool member of each pool entry; the error says why none serves it.
pub fn choose_from_pool(entries: &mut [ProxyEntry], pool: &ProxyPool) -> Result<(), String> {
    for entry in entries {
        if let ProxyEntry::Browserbase {
            geolocation,
            chosen,
            ..
        } = entry
        {
            *chosen = Some(pool.choose(geolocation.as_ref())?);
        }
    }
    Ok(())
}

/// A create's entries as the store keeps them: passwords sealed with the context key (the
/// store never holds them in the clear). The stored form is internal: the API never shows a
/// session's `proxies`.
pub fn for_store(
    mut entries: Vec<ProxyEntry>,
    session: uuid::Uuid,
    vault: &crate::files::contexts::ContextVault,
) -> serde_json::Value {
    for entry in &mut entries {
        if let ProxyEntry::External {
            password: Some(password),
            ..
        } = entry
        {
            *password = vault.seal_secret(&seal_purpose(session), password);
        }
    }
    serde_json::to_value(entries).expect("proxy entries serialise")
}

/// The routes of a stored session's `proxies`.
pub fn from_store(
    stored: &serde_json::Value,
    session: uuid::Uuid,
    pool: &ProxyPool,
    vault: &crate::files::contexts::ContextVault,
) -> Result<ProxyRoutes, String> {
    // Rows written before browserd took proxies hold `false` (anything else was refused).
    if !stored.is_array() {
        return Ok(ProxyRoutes::default());
    }
    let mut entries: Vec<ProxyEntry> = serde_json::from_value(stored.clone())
        .map_err(|e| format!("the session's stored proxies are unreadable: {e}"))?;
    for entry in &mut entries {
        if let ProxyEntry::External {
            password: Some(password),
            ..
        } = entry
        {
            *password = vault
                .open_secret(&seal_purpose(session), password)
                .map_err(|e| format!("a proxy password could not be opened: {e}"))?;
        }
    }
    ProxyRoutes::resolve(&entries, pool)
}

/// Counts the bytes that cross an upstream, both ways; the supervisor takes them into the
/// store (see `SessionRules::proxy_bytes`).
pub struct Metered<S> {
    inner: S,
    bytes: Arc<AtomicU64>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, bytes: Arc<AtomicU64>) -> Self {
        Self { inner, bytes }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routes(value: serde_json::Value, pool: &ProxyPool) -> ProxyRoutes {
        let mut entries = parse_request(&value).unwrap().unwrap();
        for e in &mut entries {
            if let ProxyEntry::Browserbase {
                chosen,
                geolocation,
                ..
            } = e
            {
                *chosen = Some(pool.choose(geolocation.as_ref()).unwrap());
            }
        }
        ProxyRoutes::resolve(&entries, pool).unwrap()
    }

    fn label(via: Via) -> String {
        match via {
            Via::Direct => "direct".into(),
            Via::Upstream(u) => u.label.clone(),
        }
    }

    #[test]
    fn the_first_matching_pattern_wins_then_the_last_entry_without_one_then_direct() {
        let pool = ProxyPool::default();
        let r = routes(
            json!([
                {"type": "external", "server": "http://a.test:1", "domainPattern": ".*\\.shop\\.test"},
                {"type": "none", "domainPattern": "direct\\.test|.*\\.direct\\.test"},
                {"type": "external", "server": "b.test:2", "username": "u", "password": "secret"},
                {"type": "external", "server": "c.test:3"},
                {"type": "external", "server": "d.test:4", "domainPattern": ".*"},
            ]),
            &pool,
        );
        assert_eq!(label(r.route("www.shop.test")), "http://a.test:1");
        assert_eq!(label(r.route("WWW.Shop.Test.")), "http://a.test:1");
        // Whole host names only: the pattern does not match inside a longer name.
        assert_eq!(label(r.route("www.shop.test.evil.net")), "http://d.test:4");
        assert_eq!(label(r.route("direct.test")), "direct");
        assert_eq!(label(r.route("a.direct.test")), "direct");
        let only_fallbacks = routes(
            json!([
                {"type": "external", "server": "b.test:2", "username": "u", "password": "secret"},
                {"type": "external", "server": "c.test:3"},
            ]),
            &pool,
        );
        assert_eq!(label(only_fallbacks.route("any.test")), "http://c.test:3");
        let only_patterns = routes(
            json!([{"type": "external", "server": "a.test:1", "domainPattern": "x\\.test"}]),
            &pool,
        );
        assert_eq!(label(only_patterns.route("y.test")), "direct");
        // A label never carries the password.
        let with_user = routes(
            json!([{"type": "external", "server": "b.test:2", "username": "u", "password": "secret"}]),
            &pool,
        );
        let shown = label(with_user.route("x"));
        assert_eq!(shown, "http://u@b.test:2");
        assert!(!format!("{with_user:?}").contains("secret"));
    }

    #[test]
    fn bad_entries_are_named() {
        for (value, says) in [
            (json!("yes"), "proxies must be true or a list"),
            (json!([{"type": "socks"}]), "proxies[0]: unknown variant"),
            (
                json!([{"type": "external"}]),
                "proxies[0]: missing field `server`",
            ),
            (
                json!([{"type": "none"}, {"type": "external", "server": "https://p.test:1"}]),
                "proxies[1].server: https:// upstream",
            ),
            (
                json!([{"type": "external", "server": "http://u:p@p.test:1"}]),
                "credentials go in username",
            ),
            (
                json!([{"type": "external", "server": "p.test:99999"}]),
                "no valid port",
            ),
            (
                json!([{"type": "external", "server": "socks4://p.test:1"}]),
                "socks4:// upstream proxies are not supported",
            ),
            (
                json!([{"type": "external", "server": "socks5://p.test", "username": "u", "password": "x".repeat(256)}]),
                "proxies[0]: a SOCKS5 proxy's username and password are at most 255 bytes",
            ),
            (
                json!([{"type": "none", "domainPattern": "("}]),
                "proxies[0].domainPattern: not a regular expression",
            ),
            (
                json!([{"type": "browserbase", "geolocation": {"country": "Germany"}}]),
                "two-letter",
            ),
        ] {
            let err = parse_request(&value).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
        }
        assert_eq!(parse_request(&json!(false)).unwrap(), None);
        assert_eq!(parse_request(&json!([])).unwrap(), None);
        assert_eq!(
            ServerAddr::parse("[::1]:8080").unwrap(),
            ServerAddr {
                protocol: Protocol::Http,
                host: "::1".into(),
                port: 8080
            }
        );
        assert_eq!(ServerAddr::parse("http://p.test").unwrap().port, 80);
        for server in ["socks5://p.test", "SOCKS5H://p.test", "socks://p.test"] {
            let addr = ServerAddr::parse(server).unwrap();
            assert_eq!(
                (addr.protocol, addr.port),
                (Protocol::Socks5, 1080),
                "{server}"
            );
        }
        let upstream =
            Upstream::new("socks5h://p.test:9", Some("u"), Some("secret"), None).unwrap();
        assert_eq!(upstream.label, "socks5://u@p.test:9");
    }

    /// The bytes of a SOCKS5 CONNECT with username/password, against a scripted upstream
    /// (the real one, microsocks, is in the compat suite): the host name goes unresolved,
    /// and the tunnel's first bytes are left for the tunnel.
    #[tokio::test]
    async fn a_socks5_tunnel_authenticates_and_names_the_host() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).await.unwrap();
            s.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 1 + 1 + 3 + 1 + 6];
            s.read_exact(&mut auth).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut request = [0u8; 4 + 1 + 9 + 2];
            s.read_exact(&mut request).await.unwrap();
            // Bound to a domain-name address, then the tunnel's first bytes at once.
            s.write_all(&[5, 0, 0, 3, 2, b'h', b'i', 0, 80, b'o', b'k'])
                .await
                .unwrap();
            (greeting, auth, request)
        });
        let proxy = Upstream::new(
            &format!("socks5://{addr}"),
            Some("bob"),
            Some("secret"),
            None,
        )
        .unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        proxy
            .open_tunnel(&mut stream, "shop.test", 443)
            .await
            .unwrap();
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"ok");
        let (greeting, auth, request) = upstream.await.unwrap();
        assert_eq!(greeting, [5, 2, 0, 2]);
        assert_eq!(&auth, b"\x01\x03bob\x06secret");
        assert_eq!(&request, b"\x05\x01\x00\x03\x09shop.test\x01\xbb");
    }

    #[tokio::test]
    async fn a_socks5_refusal_says_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            s.write_all(&[5, 0]).await.unwrap();
            let _ = s.read(&mut buf).await;
            s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        let proxy = Upstream::new(&format!("socks5://{addr}"), None, None, None).unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let err = proxy
            .open_tunnel(&mut stream, "10.1.2.3", 80)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the proxy refused the connection: SOCKS5 status 5 (connection refused)"
        );
    }

    #[test]
    fn the_pool_serves_geolocations_and_says_when_it_cannot() {
        let pool = ProxyPool::parse(
            r#"
            [[proxy]]
            name = "us-ny"
            server = "http://127.0.0.1:3001"
            username = "u"
            password = "p"
            country = "US"
            state = "NY"
            city = "New York"
            [[proxy]]
            name = "de"
            server = "127.0.0.1:3002"
            country = "de"
            "#,
        )
        .unwrap();
        let geo = |c: &str, s: Option<&str>, city: Option<&str>| Geolocation {
            country: c.into(),
            state: s.map(Into::into),
            city: city.map(Into::into),
        };
        assert_eq!(
            pool.choose(Some(&geo("US", Some("ny"), Some("new_york"))))
                .unwrap(),
            "us-ny"
        );
        assert_eq!(pool.choose(Some(&geo("DE", None, None))).unwrap(), "de");
        let err = pool
            .choose(Some(&geo("DE", None, Some("Berlin"))))
            .unwrap_err();
        assert!(
            err.contains("no proxy in this server's pool serves Berlin, DE"),
            "{err}"
        );
        assert!(pool.choose(None).is_ok());
        let none = ProxyPool::default().choose(None).unwrap_err();
        assert!(none.contains("--proxy-pool"), "{none}");
        assert!(
            ProxyPool::parse(
                "[[proxy]]\nserver = \"a:1\"\n[[proxy]]\nname = \"proxy1\"\nserver = \"b:2\""
            )
            .is_err()
        );
        assert!(ProxyPool::parse("[[proxy]]\nserver = \"a:1\"\npasword = \"typo\"").is_err());
    }
}
