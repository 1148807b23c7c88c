//! Where a sandboxed browser's pages may connect.
//!
//! A sandboxed browser's network namespace has nothing but its own loopback (see
//! [`crate::netns`]). Its pages reach the world through a SOCKS5 proxy that browserd serves
//! on [`PROXY_PORT`] inside that namespace: Chromium is started with
//! `--proxy-server=socks5://127.0.0.1:PROXY_PORT` and `--proxy-bypass-list=<-loopback>`,
//! so every connection, loopback ones included, goes through it. browserd resolves the
//! destination itself and checks the address it will actually connect to (no DNS rebinding),
//! against [`EgressPolicy`] (policy.rs: closed by default to this machine, private networks,
//! link-local and cloud metadata, and every other non-public range). A page that tries another path (a client that makes a browser
//! context with `proxyServer: direct://`, WebRTC) finds no route out of the namespace.
//!
//! SOCKS5 rather than an HTTP proxy: every connection is one CONNECT, so there is no HTTP
//! to parse, and Chromium hands the proxy host names, not addresses. Written here (RFC 1928,
//! CONNECT without authentication: ~100 lines) rather than taken from a crate, because the
//! policy check sits between resolving and connecting, where proxy crates offer no hook.

mod policy;

pub use policy::{Cidr, EgressPolicy, Refusal, protect_own_port};

use super::proxy::{Metered, ProxyRoutes, TunnelError, Upstream, Via};
use crate::fault::Failure;
use crate::metrics::Metrics;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy's port inside each browser's namespace (each namespace has its own ports).
pub const PROXY_PORT: u16 = 1080;

/// How long a destination may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a browser may take to say where it wants to go.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one session adds to the machine-wide [`EgressPolicy`] for its browser's pages, and
/// where their connections go.
#[derive(Debug, Default)]
pub struct SessionRules {
    /// A warm browser with an extension, not yet any session's: nothing leaves (its
    /// extension's code runs, but it has no owner to answer for its traffic).
    pub unassigned: bool,
    /// `browserSettings.allowedDomains`: the hosts pages may connect to; `None`: any.
    pub allowed: Option<AllowedHosts>,
    /// `browserSettings.riskPolicyId`: the session's copy of its navigation policy.
    pub navigation: Option<Arc<crate::model::PolicyRules>>,
    /// Where a refusal is written for the session's owner: its session log.
    pub log: Option<crate::inspect::logs::LogTap>,
    /// `browserSettings.blockAds`: the ad and tracker hosts refused.
    pub block_ads: Option<Arc<super::adblock::AdHosts>>,
    /// `proxies`: which connections leave through which upstream proxy.
    pub routes: ProxyRoutes,
    /// Bytes through upstream proxies not yet added to the session's record; the
    /// supervisor takes them (`swap(0)`), this proxy adds to them as they flow.
    pub proxy_bytes: Arc<AtomicU64>,
    /// The session, and the one way back into browserd its browser has: its own
    /// `connectUrl` websocket (see [`OwnConnect`]).
    pub own_connect: Option<(uuid::Uuid, DoorCell)>,
}

/// Where the door is, once the server that serves connectUrls has set it.
pub type DoorCell = Arc<std::sync::OnceLock<Arc<dyn OwnConnect>>>;

/// The one door back into browserd for a session's own browser: its own session's
/// `connectUrl` websocket. Stagehand 4's extension opens the `connectUrl` from inside the
/// browser; everything else of browserd (the API, other sessions, the dashboard, metrics)
/// stays closed to pages. The connection never touches the network: the egress hands the
/// page's socket to browserd's connect handler in this process.
pub trait OwnConnect: Send + Sync + std::fmt::Debug {
    /// Whether `port` (on this machine) is where browserd serves `connectUrl`s.
    fn serves(&self, port: u16) -> bool;
    /// Serves `page` as an HTTP connection that may only open `session`'s own connect
    /// websocket, with the session's own credential; returns when the connection ends or
    /// is handed to the relay.
    fn enter(
        &self,
        session: uuid::Uuid,
        page: TcpStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// A browser's [`SessionRules`], set when it becomes a session's (a warm browser waits
/// without any). A std RwLock: read once per connection, written once per session, never
/// held across an await.
pub type SessionSlot = Arc<std::sync::RwLock<SessionRules>>;

/// Domains a session's pages may reach: each one and its subdomains. An IP address is
/// reached only if it is listed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// Checks and normalises a list of domains (lower case, no trailing dot); the error
    /// names the first entry that is not a host name or an IP address.
    pub fn parse<'a>(domains: impl IntoIterator<Item = &'a str>) -> Result<Self, Failure> {
        let mut hosts = Vec::new();
        for raw in domains {
            let host = normalise(raw);
            let plain = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            let ip = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
            if host.is_empty() || !(ip || host.chars().all(plain)) || host.starts_with('.') {
                return Err(Failure::client(format!(
                    "{raw:?} is not a domain (give names like example.com, without scheme, port or path)"
                )));
            }
            hosts.push(host.trim_matches(['[', ']']).to_owned());
        }
        Ok(Self(hosts))
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = normalise(host);
        let host = host.trim_matches(['[', ']']);
        self.0.iter().any(|d| {
            host == d
                || (host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
                    && d.parse::<IpAddr>().is_err())
        })
    }
}

fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` is a number or dotted numbers that is not an address in its usual
/// spelling (inet_aton's forms: `167772161`, `0x0a.0.0.1`, `10.1`, `012.0.0.1`).
fn is_odd_address(host: &str) -> bool {
    let bare = host.trim_end_matches('.').trim_matches(['[', ']']);
    if bare.parse::<IpAddr>().is_ok() {
        // A dotted quad with leading zeros parses elsewhere as octal.
        return bare.contains('.')
            && bare
                .split('.')
                .any(|part| part.len() > 1 && part.starts_with('0'));
    }
    let last = bare
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit())))
}

/// Letters, digits, `-`, `.` and `_` (Chromium sends names in ASCII, IDNs as punycode).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Serves the proxy on `listener` until the returned task is aborted (its browser stops);
/// aborting it also ends every connection it carries. The task ends by itself only when
/// the proxy cannot go on (its listener failed for good), with the reason: the session has
/// no network from then on.
pub fn serve(
    listener: TcpListener,
    policy: Arc<EgressPolicy>,
    session: SessionSlot,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        // Owns the connections: dropped with this task, so aborting it closes them all.
        let mut connections = tokio::task::JoinSet::new();
        // After a failed accept (out of descriptors, most likely: another tenant's flood),
        // wait before the next, doubling up to a second: the proxy must outlive the flood,
        // or the session has no network for the rest of its life.
        let mut backoff = ACCEPT_BACKOFF_MIN;
        // Each connection costs browserd two descriptors: one browser (a compromised one
        // can raise its own limits) must not take every tenant's.
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_BROWSER));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((page, _)) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            tracing::warn!(limit = MAX_CONNECTIONS_PER_BROWSER, "a browser's pages hold too many connections; one more refused");
                            continue;
                        };
                        let (policy, session, metrics) =
                            (Arc::clone(&policy), Arc::clone(&session), Arc::clone(&metrics));
                        connections.spawn(async move {
                            let _permit = permit;
                            if let Err(e) = proxy(page, &policy, &session, &metrics).await {
                                tracing::debug!(error = %e, "egress connection failed");
                            }
                        });
                    }
                    Err(e) if !accept_error_passes(&e) => {
                        tracing::error!(error = %e, "the egress proxy's listener failed");
                        return format!("the session's network proxy stopped: accepting a connection failed ({e})");
                    }
                    Err(e) => {
                        if backoff == ACCEPT_BACKOFF_MIN {
                            tracing::warn!(error = %e, "the egress proxy could not accept a connection; retrying");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
                // Reaps finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

/// Whether a failed accept leaves the listener usable: the system was short of
/// descriptors or memory (a flood, most likely; it passes), or one connection failed
/// before it was accepted. Anything else means the listener itself is broken.
fn accept_error_passes(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    match Errno::from_io_error(e) {
        Some(errno) => [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::NOMEM,
            Errno::CONNABORTED,
            Errno::INTR,
            Errno::AGAIN,
            Errno::PROTO,
            Errno::PERM,
            Errno::TIMEDOUT,
            Errno::NETDOWN,
            Errno::NETUNREACH,
            Errno::HOSTDOWN,
            Errno::HOSTUNREACH,
            Errno::OPNOTSUPP,
            Errno::NOPROTOOPT,
            Errno::NONET,
        ]
        .contains(&errno),
        None => true,
    }
}

/// Connections one browser's pages may have open through the egress at once (Chromium
/// itself keeps at most 256 sockets in its pools).
pub const MAX_CONNECTIONS_PER_BROWSER: usize = 512;

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// SOCKS5 reply codes (RFC 1928 §6).
mod reply {
    pub(super) const SUCCEEDED: u8 = 0;
    pub(super) const GENERAL_FAILURE: u8 = 1;
    pub(super) const NOT_ALLOWED: u8 = 2;
    pub(super) const HOST_UNREACHABLE: u8 = 4;
    pub(super) const CONNECTION_REFUSED: u8 = 5;
    pub(super) const COMMAND_NOT_SUPPORTED: u8 = 7;
    pub(super) const ADDRESS_NOT_SUPPORTED: u8 = 8;
}

/// Says that a connection was refused: in the server log, the refusals metric (by `rule`),
/// and the session's log as a `browserd.egressRefused` entry its owner can read.
fn report_refusal(
    metrics: &Metrics,
    log: Option<&crate::inspect::logs::LogTap>,
    host: &str,
    port: u16,
    address: Option<SocketAddr>,
    rule: &'static str,
    reason: &str,
) {
    tracing::info!(%host, port, address = ?address, rule, reason, "egress refused");
    metrics.egress_refused(rule);
    if let Some(log) = log {
        let mut params =
            serde_json::json!({ "host": host, "port": port, "rule": rule, "reason": reason });
        if let Some(address) = address {
            params["address"] = address.ip().to_canonical().to_string().into();
        }
        log.note("browserd.egressRefused", params);
    }
}

/// Reports a destination the policy closed; `through`: the proxy it would have taken.
fn report_closed(
    metrics: &Metrics,
    log: Option<&crate::inspect::logs::LogTap>,
    host: &str,
    port: u16,
    address: SocketAddr,
    refusal: Refusal,
    through: Option<&str>,
) {
    let reason = match through {
        Some(proxy) => format!("{refusal} (through the proxy {proxy})"),
        None => refusal.to_string(),
    };
    report_refusal(
        metrics,
        log,
        host,
        port,
        Some(address),
        refusal.rule(),
        &reason,
    );
}

async fn proxy(
    mut page: TcpStream,
    policy: &EgressPolicy,
    session: &SessionSlot,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let (host, port) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut page)).await {
        Ok(Ok(Ok(dest))) => dest,
        Ok(Ok(Err(code))) => return answer(&mut page, code).await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    // The session's rules, read once (a std lock: released before any await). Its own
    // rules are judged on the name the page asked for: any redirect, new window or
    // CDP-made target comes through here the same way.
    let (door, unassigned, refused, via, bytes, log) = {
        let rules = session.read().unwrap();
        let door = rules
            .own_connect
            .as_ref()
            .and_then(|(id, cell)| Some((*id, Arc::clone(cell.get()?))));
        let blocked_by_policy = rules
            .navigation
            .as_ref()
            .is_some_and(|p| p.decide(&host) == crate::model::Decision::Block);
        let refused = match (&rules.allowed, &rules.block_ads) {
            (Some(allowed), _) if !allowed.allows(&host) => {
                Some(("allowed_domains", "not in browserSettings.allowedDomains"))
            }
            _ if blocked_by_policy => Some((
                "navigation_policy",
                "blocked by the session's navigation policy (browserSettings.riskPolicyId)",
            )),
            (_, Some(ads)) if ads.blocks(&host) => Some((
                "block_ads",
                "browserSettings.blockAds: an ad or tracker host (EasyList, EasyPrivacy)",
            )),
            _ => None,
        };
        (
            door,
            rules.unassigned,
            refused,
            rules.routes.route(&host),
            Arc::clone(&rules.proxy_bytes),
            rules.log.clone(),
        )
    };
    // A name spelled like a number ("0x0a.0.0.1", "167772161") resolves, through the C
    // library, to an address that no domain rule would see: Chromium sends addresses in
    // their one spelling, so only a browser that was made to misbehave sends these.
    if is_odd_address(&host) {
        let reason = "an address spelled as a name";
        report_refusal(
            metrics,
            log.as_ref(),
            &host,
            port,
            None,
            "odd_address",
            reason,
        );
        return answer(&mut page, reply::NOT_ALLOWED).await;
    }
    // The way back in: the session's own connect websocket is browserd, not egress, so
    // neither the policy nor the session's rules apply to it.
    if let Some((id, door)) = door
        && door.serves(port)
        && is_this_machine(&host, port, policy).await
    {
        answer(&mut page, reply::SUCCEEDED).await?;
        door.enter(id, page).await;
        return Ok(());
    }
    if unassigned {
        tracing::debug!(%host, port, "a warm browser's connection refused: no session owns it yet");
        return answer(&mut page, reply::NOT_ALLOWED).await;
    }
    if let Some((rule, reason)) = refused {
        report_refusal(metrics, log.as_ref(), &host, port, None, rule, reason);
        return answer(&mut page, reply::NOT_ALLOWED).await;
    }
    match via {
        Via::Direct => match connect(&host, port, Some(policy)).await {
            Ok(mut upstream) => {
                answer(&mut page, reply::SUCCEEDED).await?;
                let _ = tokio::io::copy_bidirectional(&mut page, &mut upstream).await;
                Ok(())
            }
            Err(NoConnection::Closed(address, refusal)) => {
                report_closed(metrics, log.as_ref(), &host, port, address, refusal, None);
                answer(&mut page, reply::NOT_ALLOWED).await
            }
            Err(NoConnection::Failed(code)) => answer(&mut page, code).await,
        },
        Via::Upstream(proxy) => {
            // The policy decides on the destination before any proxy is asked for a tunnel:
            // an operator's proxy on this machine or in a private network would otherwise
            // carry pages to whatever it can reach. The pool's proxies are asked for the
            // address judged here, not the name (which could resolve otherwise there); a
            // proxy that resolves names itself gets the name, judged here as well as it can be.
            let closed = |address, refusal| {
                let through = Some(proxy.label.as_str());
                report_closed(
                    metrics,
                    log.as_ref(),
                    &host,
                    port,
                    address,
                    refusal,
                    through,
                );
            };
            let targets = if proxy.remote_dns {
                if let Some((address, refusal)) = closed_destination(&host, port, policy).await {
                    closed(address, refusal);
                    return answer(&mut page, reply::NOT_ALLOWED).await;
                }
                vec![host.clone()]
            } else {
                match judged_addresses(&host, port, policy).await {
                    Ok(addresses) => addresses.iter().map(|a| a.ip().to_string()).collect(),
                    Err(NoConnection::Closed(address, refusal)) => {
                        closed(address, refusal);
                        return answer(&mut page, reply::NOT_ALLOWED).await;
                    }
                    Err(NoConnection::Failed(code)) => return answer(&mut page, code).await,
                }
            };
            // The next address when the proxy cannot reach one (an IPv4-only proxy asked
            // for an IPv6 address); any other failure is the proxy's answer.
            let mut tunnelled = Err(TunnelError::Refused("no address".into()));
            for target in &targets {
                tunnelled = tunnel(&proxy, target, port, policy).await;
                if !matches!(tunnelled, Err(TunnelError::Refused(_))) {
                    break;
                }
            }
            match tunnelled {
                Ok((upstream, early)) => {
                    answer(&mut page, reply::SUCCEEDED).await?;
                    // The tunnel's first bytes, read with the proxy's answer, go first.
                    page.write_all(&early).await?;
                    bytes.fetch_add(early.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let mut upstream = Metered::new(upstream, bytes);
                    let _ = tokio::io::copy_bidirectional(&mut page, &mut upstream).await;
                    Ok(())
                }
                Err(e) => {
                    tracing::info!(%host, port, proxy = %proxy.label, reason = %e, "upstream proxy failed");
                    if let TunnelError::Closed(refusal) = &e {
                        metrics.egress_refused(refusal.rule());
                    }
                    if let Some(log) = log {
                        log.note(
                            "browserd.proxyFailed",
                            serde_json::json!({ "proxy": proxy.label, "host": host, "port": port, "reason": e.to_string() }),
                        );
                    }
                    let code = match e {
                        TunnelError::Closed(_) => reply::NOT_ALLOWED,
                        TunnelError::Unreachable(_) => reply::HOST_UNREACHABLE,
                        _ => reply::GENERAL_FAILURE,
                    };
                    answer(&mut page, code).await
                }
            }
        }
    }
}

/// Whether `host:port` is one of browserd's own ports on this machine (every address the
/// name resolves to is): where the session's own connect websocket is served.
async fn is_this_machine(host: &str, port: u16, policy: &EgressPolicy) -> bool {
    match resolve(host, port).await {
        Ok(addrs) => {
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|addr| policy.refusal(*addr) == Some(Refusal::OwnPort))
        }
        Err(_) => false,
    }
}

/// How long resolving a destination may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the policy closes where `host` leads, asked before a proxy that resolves names
/// itself is: an address is judged as it is, a name by every address it resolves to here
/// (one closed address refuses it). A name this machine cannot resolve is left to the
/// proxy, which may see other names (docs/security.md says what that leaves open).
async fn closed_destination(
    host: &str,
    port: u16,
    policy: &EgressPolicy,
) -> Option<(SocketAddr, Refusal)> {
    let addrs = resolve(host, port).await.ok()?;
    addrs
        .into_iter()
        .find_map(|addr| policy.refusal(addr).map(|why| (addr, why)))
}

/// The addresses of `host` the policy allows, IPv4 first (proxies that speak only IPv4
/// are common): what an operator's proxy is asked for, in turn.
async fn judged_addresses(
    host: &str,
    port: u16,
    policy: &EgressPolicy,
) -> Result<Vec<SocketAddr>, NoConnection> {
    let mut allowed = allowed_addresses(host, port, Some(policy)).await?;
    allowed.sort_by_key(SocketAddr::is_ipv6);
    Ok(allowed)
}

/// The addresses `host` resolves to that `policy` allows (`None`: all of them), in the
/// resolver's order; none allowed is the policy's refusal of the last one closed.
async fn allowed_addresses(
    host: &str,
    port: u16,
    policy: Option<&EgressPolicy>,
) -> Result<Vec<SocketAddr>, NoConnection> {
    let addrs = resolve(host, port)
        .await
        .map_err(|_| NoConnection::Failed(reply::HOST_UNREACHABLE))?;
    let mut closed = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|addr| match policy.and_then(|p| p.refusal(*addr)) {
            None => true,
            Some(why) => {
                closed = Some((*addr, why));
                false
            }
        })
        .collect();
    match (allowed.is_empty(), closed) {
        (false, _) => Ok(allowed),
        (true, Some((addr, why))) => Err(NoConnection::Closed(addr, why)),
        (true, None) => Err(NoConnection::Failed(reply::HOST_UNREACHABLE)),
    }
}

/// Why no connection was made.
enum NoConnection {
    /// Every address the name resolved to is closed by the policy: the last one, and why.
    Closed(SocketAddr, Refusal),
    /// Not reached: the SOCKS reply that says why.
    Failed(u8),
}

/// Connects to `host:port`, checking each address it resolves to against `policy` (`None`:
/// an operator's upstream proxy, which may be anywhere).
async fn connect(
    host: &str,
    port: u16,
    policy: Option<&EgressPolicy>,
) -> Result<TcpStream, NoConnection> {
    let allowed = allowed_addresses(host, port, policy).await?;
    let mut last_error = None;
    for addr in allowed {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(NoConnection::Failed(match last_error.map(|e| e.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => reply::CONNECTION_REFUSED,
        _ => reply::HOST_UNREACHABLE,
    }))
}

/// A tunnel to `host:port` through `proxy`. A client's own proxy is held to the same
/// policy as a page (it could otherwise be pointed at this machine's services or a
/// private network); the operator's may be anywhere.
async fn tunnel(
    proxy: &Upstream,
    host: &str,
    port: u16,
    policy: &EgressPolicy,
) -> Result<(TcpStream, Vec<u8>), TunnelError> {
    let policy = (!proxy.operator).then_some(policy);
    let mut stream = match connect(proxy.host(), proxy.port(), policy).await {
        Ok(stream) => stream,
        Err(NoConnection::Closed(_, why)) => return Err(TunnelError::Closed(why)),
        Err(NoConnection::Failed(code)) => {
            return Err(TunnelError::Unreachable(
                match code {
                    reply::CONNECTION_REFUSED => "connection refused",
                    _ => "no route, unknown name or no answer",
                }
                .into(),
            ));
        }
    };
    let early = proxy.open_tunnel(&mut stream, host, port).await?;
    Ok((stream, early))
}

/// The addresses of `host`: `localhost` and its subdomains are loopback (RFC 6761, as
/// Chromium itself treats them), whatever the system's resolver says.
async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let name = normalise(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    }
    // The page's wait is bounded; the lookup itself (on a blocking thread) runs on until
    // the system's resolver gives up.
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(addrs) => Ok(addrs?.collect()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads the greeting and the request; `Ok(Err(code))` is a request to refuse with `code`.
async fn handshake(page: &mut TcpStream) -> std::io::Result<Result<(String, u16), u8>> {
    let mut head = [0u8; 2];
    page.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(std::io::Error::other("not SOCKS5"));
    }
    let mut methods = vec![0u8; head[1] as usize];
    page.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        // "No acceptable methods": browserd's proxy needs no authentication.
        page.write_all(&[5, 0xff]).await?;
        return Err(std::io::Error::other(
            "the client offers no method without authentication",
        ));
    }
    page.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    page.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            page.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let len = page.read_u8().await? as usize;
            let mut name = vec![0u8; len];
            page.read_exact(&mut name).await?;
            // Host-name characters only: the name goes into an upstream's CONNECT line,
            // where a CR or LF would be a header of the page's making.
            // Chromium sends IPv6 literals as names too (with or without brackets).
            match String::from_utf8(name) {
                Ok(name) if is_host_name(&name) => name,
                Ok(name) => match name.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>() {
                    Ok(ip) => ip.to_string(),
                    Err(_) => return Ok(Err(reply::ADDRESS_NOT_SUPPORTED)),
                },
                Err(_) => return Ok(Err(reply::ADDRESS_NOT_SUPPORTED)),
            }
        }
        4 => {
            let mut ip = [0u8; 16];
            page.read_exact(&mut ip).await?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => return Ok(Err(reply::ADDRESS_NOT_SUPPORTED)),
    };
    let port = page.read_u16().await?;
    if request[1] != 1 {
        // BIND and UDP ASSOCIATE: pages get TCP connections only.
        return Ok(Err(reply::COMMAND_NOT_SUPPORTED));
    }
    Ok(Ok((host, port)))
}

async fn answer(page: &mut TcpStream, code: u8) -> std::io::Result<()> {
    let code = if code > reply::ADDRESS_NOT_SUPPORTED {
        reply::GENERAL_FAILURE
    } else {
        code
    };
    page.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_spelled_as_names_are_odd_and_usual_addresses_and_names_are_not() {
        for odd in [
            "167772161",
            "0x0a.0.0.1",
            "10.1",
            "012.0.0.1",
            "1.2.3.0x4",
            "0x7f000001",
            "a.b.1",
        ] {
            assert!(is_odd_address(odd), "{odd}");
        }
        for fine in [
            "10.0.0.1",
            "1.2.3.4",
            "example.com",
            "1password.com",
            "x.com.",
            "::1",
            "[2001:db8::1]",
            "a1b2.example",
        ] {
            assert!(!is_odd_address(fine), "{fine}");
        }
    }

    #[test]
    fn allowed_domains_take_subdomains_and_only_listed_addresses() {
        let allowed = AllowedHosts::parse(["Example.com.", "10.1.2.3", "::1"]).unwrap();
        for yes in [
            "example.com",
            "www.example.com",
            "a.b.EXAMPLE.com.",
            "10.1.2.3",
            "[::1]",
        ] {
            assert!(allowed.allows(yes), "{yes}");
        }
        for no in [
            "badexample.com",
            "example.com.evil.net",
            "com",
            "10.1.2.30",
            "1.10.1.2.3",
            "127.0.0.1",
        ] {
            assert!(!allowed.allows(no), "{no}");
        }
        for bad in [
            "https://example.com",
            "example.com/path",
            "example.com:443",
            "",
            " ",
            ".com",
            "a b",
        ] {
            assert!(AllowedHosts::parse([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_host_names_are_taken_from_a_socks_request() {
        for yes in [
            "example.com",
            "xn--bcher-kva.example",
            "a_b.localhost",
            "10.0.0.1",
        ] {
            assert!(is_host_name(yes), "{yes}");
        }
        for no in [
            "",
            "a b",
            "evil.test\r\nX-Injected: 1",
            "a:b",
            "a/b",
            "é.test",
        ] {
            assert!(!is_host_name(no), "{no:?}");
        }
    }

    #[tokio::test]
    async fn the_proxy_ends_with_a_reason_only_when_its_listener_is_broken() {
        use std::os::fd::AsFd as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Held so the socket can be broken under the running proxy.
        let fd = listener.as_fd().try_clone_to_owned().unwrap();
        let proxy = serve(
            listener,
            Arc::default(),
            SessionSlot::default(),
            Arc::default(),
        );
        // Working: it takes connections.
        let first = tokio::net::TcpStream::connect(addr).await;
        assert!(first.is_ok(), "{first:?}");
        assert!(!proxy.is_finished());
        // A listening socket shut down fails every accept with EINVAL: for good.
        nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::sys::socket::Shutdown::Read,
        )
        .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("the proxy stops")
            .unwrap();
        assert!(reason.contains("network proxy stopped"), "{reason}");
        // What passes: a flood's shortage of descriptors, one connection's failure.
        for passing in [rustix::io::Errno::MFILE, rustix::io::Errno::CONNABORTED] {
            let e = std::io::Error::from_raw_os_error(passing.raw_os_error());
            assert!(accept_error_passes(&e), "{e}");
        }
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error());
        assert!(!accept_error_passes(&e));
    }

    #[tokio::test]
    async fn a_clients_proxy_on_this_machine_is_refused_unless_pages_may_reach_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let entries = crate::browser::proxy::parse_request(
            &serde_json::json!([{"type": "external", "server": server}]),
        )
        .unwrap()
        .unwrap();
        let routes = ProxyRoutes::resolve(&entries, &Default::default()).unwrap();
        let Via::Upstream(proxy) = routes.route("example.com") else {
            panic!("routed direct")
        };
        let deny = EgressPolicy::default();
        let refused = tunnel(&proxy, "example.com", 443, &deny).await.unwrap_err();
        assert!(
            matches!(refused, TunnelError::Closed(Refusal::ThisMachine)),
            "{refused}"
        );
        // Allowed, it is asked (and this listener never answers the CONNECT: it is reached).
        let allow = EgressPolicy {
            allow_local: true,
            ..Default::default()
        };
        let asked = tokio::spawn(async move {
            let (held, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(held);
        });
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            tunnel(&proxy, "example.com", 443, &allow),
        );
        assert!(attempt.await.is_err(), "waits for the proxy's answer");
        asked.await.unwrap();
    }
}
