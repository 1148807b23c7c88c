//! The HTTP/1 accept loop in front of the API and the websockets.
//!
//! hyper's own connection driver, rather than `axum::serve`, for two limits `axum::serve`
//! cannot set: a client must send a request's headers within [`HEADER_READ_TIMEOUT`] (an
//! idle or slow connection is closed instead of held forever), and one client address holds
//! at most [`MAX_CONNECTIONS_PER_ADDRESS`] connections at once, and the whole server at most
//! [`connection_limit`] (more are closed at accept). A connection keeps its place in both
//! counts for its whole life, as a websocket too: the place is owned by the socket
//! ([`Counted`]), which an upgrade hands on to the websocket's task.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client may take to send a request's headers, and how long an idle
/// keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections one client address may hold at once, by default (`--max-connections-per-address`):
/// room for many sessions' clients from one automation host (16 clients × 45 sessions is
/// 720), not for a flood.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 1024;

/// How long open HTTP exchanges get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Descriptors kept free of client connections: for the database, browser launches (a
/// launch opens dozens), browser legs of relays, egress connections and cleanup. A quarter
/// of a small limit.
pub const RESERVED_DESCRIPTORS: u64 = 1024;

/// Client connections the whole server holds at once: each can cost two descriptors (a
/// relayed websocket has a browser leg), within the process's descriptor limit less a
/// reserve ([`RESERVED_DESCRIPTORS`], or a quarter of a smaller limit). A flood from many
/// addresses then meets a refusal at accept instead of starving everything else.
pub fn connection_limit() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let reserve = RESERVED_DESCRIPTORS.min(soft / 4);
    (soft.saturating_sub(reserve) / 2).clamp(16, 1 << 20) as usize
}

/// Raises the process's descriptor limit to its hard limit (systemd's default soft limit of
/// 1024 is what a browser server runs out of first), and says what it is.
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the descriptor limit");
        }
    }
    let descriptors = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if descriptors < 4096 {
        tracing::warn!(
            descriptors,
            connections = connection_limit(),
            "the descriptor limit is low for a browser server: raise it (systemd LimitNOFILE=, ulimit -n); client connections are bounded by it"
        );
    } else {
        tracing::info!(
            descriptors,
            connections = connection_limit(),
            "descriptor limit"
        );
    }
}

/// Open connections: by client address, and in all. A std mutex: held for a map update
/// only.
#[derive(Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

type SharedCounts = Arc<Mutex<Counts>>;

/// One connection's place in the counts; freed when dropped.
struct Slot(Arc<Place>);

struct Place {
    counts: SharedCounts,
    /// The server's metrics (open connections).
    metrics: Arc<crate::metrics::Metrics>,
    ip: IpAddr,
    /// Whether the place still counts against its address (see [`ConnectionPlace`]).
    by_address: std::sync::atomic::AtomicBool,
}

/// A handle on the place of the connection a request came on, in the request's extensions.
#[derive(Clone)]
pub struct ConnectionPlace(Arc<Place>);

impl ConnectionPlace {
    /// Takes the connection out of its address's count (it keeps its place in the server's
    /// total): for a connection from another node of the cluster, proven by its credential,
    /// which forwards many clients' requests. Those clients were counted by their own
    /// addresses on the node they entered; counted again here under the forwarding node's
    /// one address, one tenant's flood would shut every client routed through it out.
    pub fn not_by_address(&self) {
        use std::sync::atomic::Ordering;
        if self.0.by_address.swap(false, Ordering::AcqRel) {
            self.0.counts.lock().unwrap().release_address(self.0.ip);
        }
    }
}

impl Counts {
    fn release_address(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&ip);
            }
        }
    }
}

/// Why a connection got no place.
enum Full {
    Address,
    Server(usize),
}

impl Slot {
    fn take(
        counts: &SharedCounts,
        metrics: &Arc<crate::metrics::Metrics>,
        ip: IpAddr,
        limit: usize,
        per_address: usize,
    ) -> Result<Self, Full> {
        let mut c = counts.lock().unwrap();
        if c.total >= limit {
            return Err(Full::Server(limit));
        }
        let n = c.by_address.entry(ip).or_default();
        if *n >= per_address {
            return Err(Full::Address);
        }
        *n += 1;
        c.total += 1;
        metrics.http_connections.inc();
        Ok(Self(Arc::new(Place {
            counts: Arc::clone(counts),
            metrics: Arc::clone(metrics),
            ip,
            by_address: true.into(),
        })))
    }

    fn handle(&self) -> ConnectionPlace {
        ConnectionPlace(Arc::clone(&self.0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let place = &self.0;
        let mut c = place.counts.lock().unwrap();
        c.total -= 1;
        place.metrics.http_connections.dec();
        if place
            .by_address
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            c.release_address(place.ip);
        }
    }
}

/// A client's socket with its place in the counts: wherever the socket goes (into a
/// websocket after an upgrade, a cluster tunnel), the place goes with it, and is freed when
/// the socket is closed.
struct Counted {
    tcp: tokio::net::TcpStream,
    _slot: Slot,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open exchanges finish
/// (bounded) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    per_address: usize,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Without TCP_NODELAY, Nagle and delayed ACKs add tens of ms to small CDP round trips.
    // TCP keepalive notices a peer that vanished without a FIN even when nothing is sent.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let counts = SharedCounts::default();
    let limit = connection_limit();
    // Tells every connection to finish its exchange and close.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match Slot::take(&counts, &metrics, peer.ip(), limit, per_address) {
                    Ok(slot) => slot,
                    Err(Full::Address) => {
                        tracing::warn!(%peer, limit = per_address, "too many connections from one address (--max-connections-per-address); closed");
                        continue;
                    }
                    Err(Full::Server(limit)) => {
                        tracing::warn!(%peer, limit, "too many connections to this server (its descriptor limit less a reserve); closed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                // Each request carries its connection's place, for the cluster's routing.
                let place = slot.handle();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(place.clone());
                    hyper::service::Service::call(&service, req)
                });
                let mut closing = closing_rx.clone();
                let tcp = Counted { tcp, _slot: slot };
                connections.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .with_upgrades();
                    tokio::pin!(conn);
                    let closing = async move {
                        let _ = closing.wait_for(|c| *c).await;
                    };
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = closing => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
