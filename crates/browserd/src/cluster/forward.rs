//! Forwarding a request to the node that owns its session: HTTP/1.1 to the node's
//! `--node-url`, the client's own credentials passed on (every node shares the store, the
//! API keys and the signing secret). A websocket upgrade is answered with the owner's
//! `101` and then the two connections are joined as bytes: no message is parsed on this
//! hop. Only the frame headers coming from the owner are followed ([`FrameBoundary`]), so
//! that if the owner vanishes mid-stream the client still gets a close frame that says why.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Set on a forwarded request (to the forwarding node's name): the owner serves it itself,
/// so a request is forwarded at most once, whatever two nodes believe about each other.
pub const FORWARDED_BY: &str = "x-browserd-forwarded-by";
/// The forwarding node's credential ([`crate::secrets::SigningSecret::cluster_credential`]):
/// a request that says it was forwarded is taken as such only with it.
pub const CLUSTER_AUTH: &str = "x-browserd-cluster-auth";

/// Why the owner could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
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
    /// The close frame's code and reason.
    async fn reason(&self, node: &str) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            if let Ok(Some(s)) = self.store.sessions.get_session(self.session).await
                && s.status.is_ended()
            {
                let code = if s.status == crate::model::SessionStatus::Error {
                    1011
                } else {
                    1000
                };
                let reason = if s
                    .end_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(super::NODE_LOST))
                {
                    format!(
                        "session ended ({}): its node {node} was lost",
                        s.status.as_str()
                    )
                } else {
                    s.end_reason.unwrap_or_default()
                };
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
pub async fn forward(
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
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
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
        let mut frames = FrameBoundary::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match owner_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    frames.feed(&buf[..n]);
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let vanished = !client_done.load(std::sync::atomic::Ordering::Relaxed)
            && frames.at_boundary()
            && !frames.saw_close;
        if let Some(lost) = lost.filter(|_| vanished) {
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

/// Follows websocket frame headers in a byte stream (RFC 6455 §5.2) without keeping
/// payloads: where one frame ends and the next begins, and whether a close frame passed.
#[derive(Debug, Default)]
struct FrameBoundary {
    /// Bytes of the current frame's header seen so far (at most 14).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    saw_close: bool,
}

impl FrameBoundary {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = (self.payload_left.min(bytes.len() as u64)) as usize;
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(payload) = self.header_done() {
                if self.header[0] & 0x0f == 0x8 {
                    self.saw_close = true;
                }
                self.header.clear();
                self.payload_left = payload;
            }
        }
    }

    /// The payload length once the header is complete.
    fn header_done(&self) -> Option<u64> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let (len_bytes, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if h.len() < 2 + len_bytes + mask {
            return None;
        }
        Some(len.unwrap_or_else(|| {
            h[2..2 + len_bytes]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }))
    }

    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_followed_across_reads() {
        // A text frame of 5 bytes, one of 300 (16-bit length), a masked one of 2, a close.
        let mut stream = vec![0x81, 5];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        stream.extend_from_slice(&[b'x'; 300]);
        stream.extend_from_slice(&[0x82, 0x82, 1, 2, 3, 4, 9, 9]);
        let whole = stream.clone();
        // Fed one byte at a time: a boundary exactly after each frame.
        let mut frames = FrameBoundary::default();
        let mut boundaries = Vec::new();
        for (i, b) in whole.iter().enumerate() {
            frames.feed(std::slice::from_ref(b));
            if frames.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries, [7, 311, 319]);
        assert!(!frames.saw_close);
        frames.feed(&close_frame(1000, "bye"));
        assert!(frames.at_boundary() && frames.saw_close);
        // A 64-bit length, cut in its middle.
        let mut big = FrameBoundary::default();
        big.feed(&[0x82, 127, 0, 0, 0]);
        assert!(!big.at_boundary());
        big.feed(&[0, 0, 1, 0, 0]);
        assert_eq!(big.payload_left, 65536);
        big.feed(&vec![0; 65536]);
        assert!(big.at_boundary());
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
