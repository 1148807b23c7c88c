//! Forwarding a request to the node that owns its session: HTTP/1.1 to the node's
//! `--node-url`, the client's own credentials passed on (every node shares the store, the
//! API keys and the signing secret). A websocket upgrade is answered with the owner's
//! `101` and then the two connections are joined as bytes: no message is parsed on this
//! hop. Only the frame headers coming from the owner are followed ([`FrameReader`]), so
//! that if the owner vanishes mid-stream the client still gets a close frame that says why.

use crate::cdp::frames::FrameReader;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::future::Future as _;
use std::time::Duration;

/// Set on a forwarded request (to the forwarding node's name): the owner serves it itself,
/// so a request is forwarded at most once, whatever two nodes believe about each other.
pub(crate) const FORWARDED_BY: &str = "x-browserd-forwarded-by";
/// The forwarding node's credential ([`crate::secrets::SigningSecret::cluster_credential`]):
/// a request that says it was forwarded is taken as such only with it.
pub(crate) const CLUSTER_AUTH: &str = "x-browserd-cluster-auth";

/// How often a joined websocket whose owner is silent asks the store whether the owner was
/// declared lost (and how long one asking may take).
const LOST_CHECK: Duration = Duration::from_secs(2);

/// How long an owner must be silent before its joined websockets start asking.
const OWNER_SILENT: Duration = Duration::from_secs(5);

/// How long a forwarded request may make no progress, either way, before it fails: the
/// owner stopped (SIGSTOP, a frozen VM) and its kernel still holds the connection open.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Why the owner could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("bad node url {0:?}")]
    BadUrl(String),
    #[error("could not connect to node {node}: {source}")]
    Connect {
        node: String,
        source: std::io::Error,
    },
    #[error("node {node} did not answer: {source}")]
    Http { node: String, source: hyper::Error },
    #[error("node {0} did not answer in time")]
    Timeout(String),
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "forwarding to the owning node failed");
        let body = serde_json::json!({
            "statusCode": 502,
            "error": "Bad Gateway",
            "message": format!("the browserd node that runs this session could not be reached ({self}); retry shortly"),
        });
        let mut response = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("true"));
        response
    }
}

/// `host:port` of an `http://host:port[/]` node URL.
fn authority(node_url: &str) -> Result<String, ForwardError> {
    let uri: Uri = node_url
        .parse()
        .map_err(|_| ForwardError::BadUrl(node_url.to_owned()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if a.port().is_some() => Ok(a.to_string()),
        (Some("http"), Some(a)) => Ok(format!("{}:80", a.host())),
        _ => Err(ForwardError::BadUrl(node_url.to_owned())),
    }
}

/// What a websocket client is told if the owner vanishes: the session's end as the
/// cluster records it (a sweeper ends a lost node's sessions within about a lease).
pub struct LostNotice {
    pub store: crate::store::Store,
    pub session: uuid::Uuid,
    /// How long to wait for the session's end to be recorded.
    pub wait: Duration,
}

impl LostNotice {
    /// The close frame's code and reason, once the session's end is recorded.
    async fn recorded_end(&self, node: &str) -> Option<(u16, String, bool)> {
        let s = self
            .store
            .sessions
            .get_session(self.session)
            .await
            .ok()
            .flatten()
            .filter(|s| s.status.is_ended())?;
        let code = if s.status == crate::model::SessionStatus::Error {
            1011
        } else {
            1000
        };
        let lost = s
            .end_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(super::NODE_LOST));
        let reason = if lost {
            format!(
                "session ended ({}): its node {node} was lost",
                s.status.as_str()
            )
        } else {
            s.end_reason.unwrap_or_default()
        };
        Some((code, reason, lost))
    }

    /// The close frame's code and reason.
    async fn reason(&self, node: &str) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            if let Some((code, reason, _)) = self.recorded_end(node).await {
                return (code, reason);
            }
            if tokio::time::Instant::now() >= deadline {
                return (
                    1011,
                    format!("the node running this session ({node}) stopped answering"),
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Sends `req` to the node at `node_url` and returns its answer; an upgrade is joined
/// through. `me` names this node in [`FORWARDED_BY`].
pub(crate) async fn forward(
    mut req: Request,
    node_name: &str,
    node_url: &str,
    me: &str,
    secret: &crate::secrets::SigningSecret,
    lost: Option<LostNotice>,
) -> Result<Response, ForwardError> {
    let address = authority(node_url)?;
    let connect = tokio::net::TcpStream::connect(&address);
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| ForwardError::Timeout(node_name.to_owned()))?
        .map_err(|source| ForwardError::Connect {
            node: node_name.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let http = |source| ForwardError::Http {
        node: node_name.to_owned(),
        source,
    };
    // Until a websocket is joined through (which has its own watch, above), a forwarded
    // exchange fails after STALL_LIMIT without progress.
    let watched = Watchdog::new(stream, STALL_LIMIT);
    let watching = watched.switch();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(watched))
        .await
        .map_err(http)?;
    // Drives the connection to the owner; `with_upgrades`: after a 101 it hands the socket on.
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended");
        }
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = path.parse().expect("a path and query parse as a URI");
    let me = HeaderValue::from_str(me).unwrap_or(HeaderValue::from_static("node"));
    let credential = secret.cluster_credential(
        crate::secrets::Hop {
            from: me.to_str().unwrap_or("node"),
            to: node_name,
        },
        crate::model::now().unix_timestamp(),
        req.method().as_str(),
        &path,
    );
    req.headers_mut().insert(FORWARDED_BY, me);
    req.headers_mut().insert(
        CLUSTER_AUTH,
        HeaderValue::from_str(&credential).expect("a credential is ASCII"),
    );
    let mut response = sender.send_request(req).await.map_err(http)?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An idle DevTools socket is quiet for minutes on end.
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let owner_upgrade = hyper::upgrade::on(&mut response);
        let node = node_name.to_owned();
        // Joins the client and the owner once both sides have switched; lives as long as
        // either side keeps its connection.
        tokio::spawn(async move {
            let (client, owner) = match tokio::try_join!(client_upgrade, owner_upgrade) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "a forwarded upgrade did not complete");
                    return;
                }
            };
            tunnel(TokioIo::new(client), TokioIo::new(owner), &node, lost).await;
        });
    }
    Ok(response.map(Body::new))
}

/// Moves bytes both ways until either side ends. If the owner's side ends without a
/// close frame (the node died or was cut off) between two frames, the client gets one.
async fn tunnel<C, O>(client: C, owner: O, node: &str, lost: Option<LostNotice>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    O: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut owner_read, mut owner_write) = tokio::io::split(owner);
    // Set once the client has finished sending: then the owner's side ends because the
    // client left, and there is nobody to tell anything.
    let client_done = std::sync::atomic::AtomicBool::new(false);
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut owner_write).await;
        let _ = owner_write.shutdown().await;
    };
    let downstream = async {
        let mut frames = FrameReader::default();
        let mut buf = vec![0u8; 64 * 1024];
        // A stopped owner (SIGSTOP, a frozen VM) keeps its connections open and sends
        // nothing: the cluster marks it lost after its lease, and this hop learns it from
        // the store and tells the client.
        let mut check = tokio::time::interval(LOST_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Asked only while the owner is silent (a live owner pings its clients, every 30 s
        // by default), so a busy tunnel costs the store nothing.
        let mut last_heard = tokio::time::Instant::now();
        let mut watching = lost.is_some();
        loop {
            tokio::select! {
                read = owner_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        last_heard = tokio::time::Instant::now();
                        // The owner is a node of this cluster: its frames are not metered here.
                        let _ = frames.scan(&buf[..n], u64::MAX);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
                // The guard is read when the select starts: silence is checked in the arm.
                _ = check.tick(), if watching => {
                    let Some(notice) = &lost else { continue };
                    if last_heard.elapsed() < OWNER_SILENT {
                        continue;
                    }
                    // Bounded: a slow store must not hold the owner's bytes back for long.
                    match tokio::time::timeout(LOST_CHECK, notice.recorded_end(node)).await {
                        Ok(Some((code, reason, true))) => {
                            if frames.at_boundary() && !frames.saw_close {
                                let _ = client_write.write_all(&close_frame(code, &reason)).await;
                            }
                            let _ = client_write.shutdown().await;
                            return;
                        }
                        // Ended on the owner: it closes its clients itself.
                        Ok(Some(_)) => watching = false,
                        Ok(None) | Err(_) => {}
                    }
                }
            }
        }
        let vanished = !client_done.load(std::sync::atomic::Ordering::Relaxed)
            && frames.at_boundary()
            && !frames.saw_close;
        if let Some(lost) = lost.as_ref().filter(|_| vanished) {
            let (code, reason) = lost.reason(node).await;
            let _ = client_write.write_all(&close_frame(code, &reason)).await;
        }
        let _ = client_write.shutdown().await;
    };
    let (mut upstream, mut downstream) = (std::pin::pin!(upstream), std::pin::pin!(downstream));
    tokio::select! {
        // The owner's side ended: the tunnel is over.
        _ = &mut downstream => {}
        // The client finished: what the owner still sends (its close reply) goes through.
        _ = &mut upstream => {
            client_done.store(true, std::sync::atomic::Ordering::Relaxed);
            downstream.await;
        }
    }
}

/// A stream that fails a read or write after `limit` without progress in either
/// direction, while switched on.
struct Watchdog<S> {
    inner: S,
    limit: Duration,
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// When the limit runs out; pushed back by every byte moved.
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> Watchdog<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            on: std::sync::Arc::new(true.into()),
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// The switch: store `false` to stop watching.
    fn switch(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        std::sync::Arc::clone(&self.on)
    }

    /// After a pending read or write: an error if the limit ran out with nothing moved.
    fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        if !self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return std::task::Poll::Pending;
        }
        std::task::ready!(self.deadline.as_mut().poll(cx));
        std::task::Poll::Ready(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the owning node made no progress for {}s",
                self.limit.as_secs()
            ),
        ))
    }

    /// Pushes the deadline back; nothing once switched off (a joined websocket's bytes
    /// then pass without touching the timer).
    fn moved(&mut self) {
        if self.on.load(std::sync::atomic::Ordering::Relaxed) {
            let next = tokio::time::Instant::now() + self.limit;
            self.deadline.as_mut().reset(next);
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watchdog<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                if buf.filled().len() > before {
                    this.moved();
                }
                ready
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watchdog<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, data) {
            std::task::Poll::Pending => this.stalled(cx).map(Err),
            ready => {
                if matches!(ready, std::task::Poll::Ready(Ok(n)) if n > 0) {
                    this.moved();
                }
                ready
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An unmasked (server to client) close frame; the reason cut to the 123 bytes allowed.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = vec![0x88, (2 + end) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_exchange_fails_after_the_limit_and_progress_holds_it_off() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut owner, ours) = tokio::io::duplex(64);
        let mut watched = Watchdog::new(ours, Duration::from_secs(10));
        // Bytes every 6 s: never 10 s without progress.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            owner.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            watched.read_exact(&mut byte).await.unwrap();
        }
        // Then silence: the read fails once 10 s have passed.
        let started = tokio::time::Instant::now();
        let mut byte = [0u8; 1];
        let error = watched.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // Switched off (a joined websocket), silence is fine.
        let mut watched = Watchdog::new(owner, Duration::from_secs(10));
        watched
            .switch()
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let waited = tokio::time::timeout(Duration::from_secs(60), watched.read(&mut byte)).await;
        assert!(waited.is_err(), "still waiting after 60 s");
    }

    #[test]
    fn close_frames_keep_to_the_size_the_protocol_allows() {
        let frame = close_frame(1011, &"é".repeat(100));
        assert_eq!(frame[0], 0x88);
        assert!(frame[1] as usize <= 125);
        assert_eq!(frame.len(), 2 + frame[1] as usize);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn node_urls_give_their_address() {
        assert_eq!(
            authority("http://127.0.0.2:3000").unwrap(),
            "127.0.0.2:3000"
        );
        assert_eq!(authority("http://10.0.0.5:3000/").unwrap(), "10.0.0.5:3000");
        assert_eq!(authority("http://node-b").unwrap(), "node-b:80");
        assert!(
            authority("https://node-b:443").is_err(),
            "TLS between nodes is not built in"
        );
        assert!(authority("node-b:3000").is_err());
    }
}
