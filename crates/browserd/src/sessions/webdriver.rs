//! WebDriver sessions as clients of a browserd session: one chromedriver per browserd
//! session, started on the first new-session and stopped with the session, and each
//! WebDriver session a client lease of it, let go when it quits or falls silent for the
//! clients' idle limit. The HTTP side (authentication, the W3C commands forwarded, the
//! answers' shape) is `api::webdriver`.

use super::{ClientLease, Seat as _};
use crate::browser::chromedriver::Chromedriver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// A kept-alive HTTP/1 connection to a chromedriver.
pub(crate) type Connection =
    hyper::client::conn::http1::SendRequest<http_body_util::Full<axum::body::Bytes>>;

/// How often idle WebDriver sessions are looked for.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The chromedrivers of this server's sessions and the WebDriver sessions on them.
#[derive(Default)]
pub(crate) struct Hub {
    /// By browserd session. A std Mutex: held for map operations only.
    hosts: Mutex<HashMap<Uuid, Arc<Host>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// One browserd session's chromedriver and its WebDriver sessions.
pub(crate) struct Host {
    pub(crate) driver: tokio::sync::OnceCell<Chromedriver>,
    /// WebDriver session id → its client. A std Mutex: map operations only.
    pub(crate) clients: Mutex<HashMap<String, WdClient>>,
}

pub(crate) struct WdClient {
    /// Counts it among the browserd session's clients; dropped on quit or when idle.
    pub(crate) lease: ClientLease,
    pub(crate) last_used: Instant,
    /// Its kept connection to chromedriver (see `api::webdriver::send`): one per WebDriver session, so a
    /// command that waits long holds up no other client.
    pub(crate) connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
}

impl Hub {
    /// The browserd session's host, made (with its watcher) on first use.
    pub(crate) fn host(
        self: &Arc<Self>,
        id: Uuid,
        lease: &ClientLease,
        idle_after: Duration,
    ) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap();
        if let Some(host) = hosts.get(&id) {
            return Arc::clone(host);
        }
        let host = Arc::new(Host {
            driver: tokio::sync::OnceCell::new(),
            clients: Mutex::default(),
        });
        hosts.insert(id, Arc::clone(&host));
        // Ends the chromedriver with the session (or when browserd leaves it running), and
        // lets go of WebDriver sessions that fell silent.
        let (hub, farewell, watched) = (Arc::clone(self), lease.farewell(), Arc::clone(&host));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_CHECK_EVERY);
            let ended = until_ended(farewell);
            tokio::pin!(ended);
            loop {
                tokio::select! {
                    () = &mut ended => break,
                    _ = tick.tick() => {
                        watched.clients.lock().unwrap().retain(|wdid, client| {
                            let keep = client.last_used.elapsed() < idle_after;
                            if !keep {
                                tracing::info!(session = %id, webdriver = %wdid, "a silent WebDriver session was let go");
                            }
                            keep
                        });
                    }
                }
            }
            hub.hosts.lock().unwrap().remove(&id);
        });
        host
    }

    pub(crate) fn existing(&self, id: Uuid) -> Option<Arc<Host>> {
        self.hosts.lock().unwrap().get(&id).cloned()
    }
}

impl Host {
    /// Counts a new WebDriver session among the browserd session's clients.
    pub(crate) fn add_client(
        &self,
        wdid: String,
        lease: ClientLease,
        connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
    ) {
        self.clients.lock().unwrap().insert(
            wdid,
            WdClient {
                lease,
                last_used: Instant::now(),
                connection,
            },
        );
    }
}

/// Returns when the session has ended (or browserd leaves it running).
pub(crate) async fn until_ended(
    mut farewell: tokio::sync::watch::Receiver<Option<crate::model::Farewell>>,
) {
    let _ = farewell.wait_for(Option::is_some).await.map(drop);
}
