//! The frame pump between one client and its session's browser.
//!
//! Each client gets its own websocket to the browser's browser-level CDP endpoint, so
//! clients never see each other's ids or events. Two loops run concurrently, one per
//! direction, each awaiting the other side's sink: a slow reader stalls only its own
//! direction and applies backpressure instead of making browserd buffer.
//!
//! Browser→client messages are never parsed. Client→browser text frames get a substring
//! pre-check for the one method browserd must see, `Browser.close`, and only on a hit are
//! they parsed (id and method only).

use crate::model::SessionStatus;
use crate::sessions::{ClientLease, Ending};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Websocket settings for both legs. Chromium sends every message as one frame, so the
/// frame limit must be as large as the message limit (screenshots, 100 MB evaluations).
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        // Room for one whole message (plus headers); beyond that, sends wait.
        .max_write_buffer_size(max_message_size.saturating_add(64 * 1024))
}

/// How long a relay whose browser leg dropped waits to learn why the session ended.
const ENDING_GRACE: Duration = Duration::from_secs(2);

/// Relays one client until either side leaves or the session ends, then closes the client
/// with a reason. Consumes the lease: the client counts as connected until this returns.
pub async fn run<S>(client: WebSocketStream<S>, lease: ClientLease, max_message_size: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut client_tx, mut client_rx) = client.split();
    let browser = match connect_browser(lease.cdp_url(), max_message_size).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::warn!(session = %lease.session_id(), error = %e, "could not reach the session's browser");
            let _ = client_tx
                .send(close_message(
                    CloseCode::Error,
                    "browserd could not reach the session's browser",
                ))
                .await;
            return;
        }
    };
    let (mut browser_tx, mut browser_rx) = browser.split();
    // Replies browserd itself owes the client (to an intercepted Browser.close); bounded,
    // and a handful at most.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Message>(8);
    let mut ended = lease.ended();

    let client_to_browser = async {
        while let Some(msg) = client_rx.next().await {
            let Ok(msg) = msg else { break };
            match msg {
                Message::Text(ref text) => {
                    if let Some(id) = browser_close_id(text) {
                        let reply = format!(r#"{{"id":{id},"result":{{}}}}"#);
                        let _ = reply_tx.send(Message::text(reply)).await;
                        lease.request_end(Ending {
                            status: SessionStatus::Completed,
                            reason: "session ended: a client sent Browser.close".into(),
                        });
                        continue;
                    }
                    if browser_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Message::Binary(_) => {
                    if browser_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                // tungstenite answers pings itself; nothing else needs forwarding.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };

    let browser_to_client = async {
        loop {
            tokio::select! {
                // Replies first, so Browser.close's answer precedes the close frame.
                biased;
                Some(reply) = reply_rx.recv() => {
                    if client_tx.send(reply).await.is_err() {
                        return None;
                    }
                }
                changed = ended.changed() => {
                    let ending = if changed.is_ok() { ended.borrow().clone() } else { None };
                    return ending.or_else(|| Some(browserd_gone()));
                }
                msg = browser_rx.next() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        if client_tx.send(msg).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        // The browser went away: most likely the session is ending. Say why.
                        let ending = tokio::time::timeout(ENDING_GRACE, ended.wait_for(Option::is_some))
                            .await
                            .ok()
                            .and_then(|r| r.ok().and_then(|e| e.clone()));
                        return Some(ending.unwrap_or_else(|| Ending {
                            status: SessionStatus::Error,
                            reason: "the browser closed the connection".into(),
                        }));
                    }
                },
            }
        }
    };

    let ending = tokio::select! {
        () = client_to_browser => None,
        ending = browser_to_client => ending,
    };
    if let Some(ending) = ending {
        let code = match ending.status {
            SessionStatus::Error => CloseCode::Error,
            _ => CloseCode::Normal,
        };
        let _ = client_tx.send(close_message(code, &ending.reason)).await;
    }
    // Flushes a pending close reply to a client that closed first.
    let _ = client_tx.close().await;
    let _ = browser_tx.close().await;
}

fn browserd_gone() -> Ending {
    Ending {
        status: SessionStatus::Error,
        reason: "browserd lost track of the session".into(),
    }
}

async fn connect_browser(
    url: &str,
    max_message_size: usize,
) -> Result<WebSocketStream<tokio::net::TcpStream>, Box<dyn std::error::Error + Send + Sync>> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("malformed CDP url")?;
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config(max_message_size)))
            .await?;
    Ok(ws)
}

/// A close frame; the reason is cut to the 123 bytes the protocol allows.
pub fn close_message(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason[..end].to_owned()),
    }))
}

/// The id of a browser-level `Browser.close` command, if `text` is one.
fn browser_close_id(text: &str) -> Option<u64> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Browser.close"));
    FINDER.find(text.as_bytes())?;

    #[derive(Deserialize)]
    struct Peek<'a> {
        id: Option<u64>,
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        #[serde(rename = "sessionId")]
        session_id: Option<serde::de::IgnoredAny>,
    }
    let peek: Peek<'_> = serde_json::from_str(text).ok()?;
    // A Browser.close sent on a page session is not ours to intercept (Chromium rejects it).
    (peek.method.as_deref() == Some("Browser.close") && peek.session_id.is_none())
        .then_some(peek.id?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_browser_close_command_is_intercepted() {
        assert_eq!(
            browser_close_id(r#"{"id":7,"method":"Browser.close"}"#),
            Some(7)
        );
        assert_eq!(
            browser_close_id(r#"{"method":"Browser.close","params":{"x":[1,{"y":2}]},"id":42}"#),
            Some(42)
        );
        assert_eq!(
            browser_close_id(
                r#"{"id":1,"method":"Runtime.evaluate","params":{"expression":"'Browser.close'"}}"#
            ),
            None
        );
        assert_eq!(
            browser_close_id(r#"{"id":1,"method":"Browser.close","sessionId":"AB"}"#),
            None
        );
        assert_eq!(
            browser_close_id(r#"{"id":1,"method":"Browser.closeX"}"#),
            None
        );
        assert_eq!(browser_close_id("Browser.close not json"), None);
        assert_eq!(
            browser_close_id(r#"{"id":1,"method":"Page.navigate"}"#),
            None
        );
    }

    #[test]
    fn close_reasons_fit_the_protocol_limit() {
        let long = "é".repeat(100);
        let Message::Close(Some(frame)) = close_message(CloseCode::Normal, &long) else {
            panic!("not a close frame");
        };
        assert!(frame.reason.len() <= 123);
        assert!(frame.reason.as_str().chars().all(|c| c == 'é'));
    }
}
