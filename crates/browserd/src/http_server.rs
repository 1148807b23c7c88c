//! The HTTP/1 accept loop in front of the API and the websockets.
//!
//! hyper's own connection driver, rather than `axum::serve`, for two limits `axum::serve`
//! cannot set: a client must send a request's headers within [`HEADER_READ_TIMEOUT`] (an
//! idle or slow connection is closed instead of held forever), and one client address holds
//! at most [`MAX_CONNECTIONS_PER_ADDRESS`] connections at once (more are closed at accept).
//! Upgraded websockets leave the connection driver and are watched by their own pings.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client may take to send a request's headers, and how long an idle
/// keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections one client address may hold at once: room for many sessions' clients from
/// one automation host (16 clients × 45 sessions is 720), not for a flood.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 1024;

/// How long open HTTP exchanges get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Counts of open connections by client address. A std mutex: held for a map update only.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in its address's count; freed when dropped.
struct Slot {
    counts: Counts,
    ip: IpAddr,
}

impl Slot {
    fn take(counts: &Counts, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap();
        let n = map.entry(ip).or_default();
        if *n >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open exchanges finish
/// (bounded) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Without TCP_NODELAY, Nagle and delayed ACKs add tens of ms to small CDP round trips.
    // TCP keepalive notices a peer that vanished without a FIN even when nothing is sent.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let counts = Counts::default();
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
                let Some(slot) = Slot::take(&counts, peer.ip()) else {
                    tracing::warn!(%peer, limit = MAX_CONNECTIONS_PER_ADDRESS, "too many connections from one address; closed");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let mut closing = closing_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
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
