//! The frame pump between one client and its session's browser.
//!
//! Each client gets its own websocket to the browser's browser-level CDP endpoint, so
//! clients never see each other's ids or events. Two loops run concurrently, one per
//! direction, each awaiting the other side's sink: a slow reader stalls only its own
//! direction and applies backpressure instead of making browserd buffer.
//!
//! Browser→client messages are never parsed. Every client→browser text frame passes
//! [`filter::check`]: scanned strictly and forwarded as the client sent it, rewritten where
//! a rule says so, or refused with a CDP error; binary frames are refused.

use super::budget::{BudgetExhausted, MessageBudget, Metered};
use super::filter::{self, Rules, Verdict};
use crate::model::SessionStatus;
use crate::model::{Ending, Farewell};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
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

/// The client leg's settings: messages from the client end where Chromium's do
/// ([`CHROMIUM_MAX_INCOMING`]; one byte more, so the refusal can say why), so a client can
/// make browserd hold at most that much of a message it sends; messages to it may be as
/// large as `max_message_size`.
pub fn client_ws_config(max_message_size: usize) -> WebSocketConfig {
    let inbound = max_message_size.min(CHROMIUM_MAX_INCOMING + 1);
    ws_config(max_message_size)
        .max_message_size(Some(inbound))
        .max_frame_size(Some(inbound))
}

/// How much of an oversized message is read and dropped after refusing it, so the client
/// (still writing it) reads the close frame instead of a connection reset.
const DRAIN_AFTER_REFUSAL: u64 = 256 * 1024 * 1024;

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a relay whose browser leg dropped waits to learn why the session ended.
const ENDING_GRACE: Duration = Duration::from_secs(2);

/// Chromium's DevTools server drops the connection on a message over 100 MiB (its receive
/// buffer); browserd refuses such a client message itself, with a reason.
pub const CHROMIUM_MAX_INCOMING: usize = 100 * 1024 * 1024;

/// The browser leg of a relay.
pub type BrowserWs = WebSocketStream<Metered<tokio::net::TcpStream>>;

/// What the relay needs of the session its client belongs to. Defined here, implemented by
/// the lifecycle (`sessions::ClientLease`), so the relay depends on no module above it.
/// Dropping it tells the session that the client left.
pub trait Seat: Send + Sync {
    /// This client's number (unique on this server), for the log.
    fn number(&self) -> u64;
    /// The session's CDP log, if it logs.
    fn log(&self) -> Option<&dyn FrameLog>;
    /// The folders this client's commands may name.
    fn rules(&self) -> &Rules;
    /// Becomes `Some` once the session has ended, or browserd leaves it running.
    fn farewell(&self) -> watch::Receiver<Option<Farewell>>;
    /// Asks for the session's end (a client's `Browser.close`). Does not wait.
    fn request_end(&self, ending: Ending);
}

/// Where the relay hands a session's commands and replies for its CDP log. Called on the
/// relay's path for every frame: must neither block nor wait.
pub trait FrameLog: Send + Sync {
    /// A client's command, as it goes to the browser.
    fn command(&self, client: u64, text: &Utf8Bytes);
    /// A browser message going to a client (the log keeps replies only).
    fn reply(&self, client: u64, text: &Utf8Bytes);
}

/// Relays one client until either side leaves or the session ends, then closes the client
/// with a reason. Consumes the seat: the client counts as connected until this returns.
pub async fn run<S, L>(
    client: WebSocketStream<Metered<S>>,
    browser: BrowserWs,
    lease: L,
    watch: ClientWatch,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    L: Seat,
{
    // Set when the client sent a message larger than Chromium takes: it is refused before
    // browserd reads it, and the rest of it is drained after the close frame.
    let oversized = std::sync::atomic::AtomicBool::new(false);
    let (mut client_tx, mut client_rx) = client.split();
    let (mut browser_tx, mut browser_rx) = browser.split();
    // Replies browserd itself owes the client (to an intercepted Browser.close); bounded,
    // and a handful at most.
    let (reply_tx, mut reply_rx) = mpsc::channel::<Message>(8);
    // Two views of the session's farewell: one waited on in the pump (created once, not per
    // message), one read when the browser leg drops.
    let mut ended = lease.farewell();
    let mut ended_again = lease.farewell();
    // When the client last sent anything (a pong counts), and last sent a CDP message, in
    // ms since `start`. Atomics because both directions' futures read or write them.
    let start = Instant::now();
    let last_frame = AtomicU64::new(0);
    let last_command = AtomicU64::new(0);
    let since_start = || start.elapsed().as_millis() as u64;
    let mut tick = tokio::time::interval_at(start + watch.ping_every, watch.ping_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Atomic counters made once: counting a message takes no lock and allocates nothing.
    let flows = metrics.cdp();
    let client_to_browser = async {
        while let Some(msg) = client_rx.next().await {
            let msg = match msg {
                Ok(msg) => msg,
                Err(tokio_tungstenite::tungstenite::Error::Capacity(e)) => {
                    oversized.store(true, Ordering::Relaxed);
                    let reason = format!(
                        "message refused ({e}): Chromium accepts CDP messages up to {CHROMIUM_MAX_INCOMING} bytes"
                    );
                    return Some(close_message(CloseCode::Size, &reason));
                }
                Err(e) => {
                    if let Some(exhausted) = BudgetExhausted::find(&e) {
                        return Some(close_message(CloseCode::Again, &exhausted.to_string()));
                    }
                    tracing::debug!(error = %e, "client connection failed");
                    return None;
                }
            };
            let now = since_start();
            last_frame.store(now, Ordering::Relaxed);
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                last_command.store(now, Ordering::Relaxed);
            }
            if msg.len() > CHROMIUM_MAX_INCOMING {
                let reason = format!(
                    "message of {} bytes refused: Chromium accepts CDP messages up to {CHROMIUM_MAX_INCOMING} bytes",
                    msg.len()
                );
                return Some(close_message(CloseCode::Size, &reason));
            }
            match msg {
                Message::Text(ref text) => {
                    let forward = match filter::check(text, lease.rules()) {
                        // The original bytes: a cheap clone of the frame's buffer.
                        Verdict::AsSent => text.clone(),
                        Verdict::Forward(checked) => Utf8Bytes::from(checked),
                        Verdict::Refuse(reply) => {
                            let _ = reply_tx.send(Message::text(reply)).await;
                            continue;
                        }
                        Verdict::CloseBrowser(reply) => {
                            let _ = reply_tx.send(Message::text(reply)).await;
                            lease.request_end(Ending {
                                status: SessionStatus::Completed,
                                reason: "session ended: a client sent Browser.close".into(),
                            });
                            continue;
                        }
                    };
                    // What the browser receives, which is what browserd checked.
                    if let Some(log) = lease.log() {
                        log.command(lease.number(), &forward);
                    }
                    flows.commands.messages.inc();
                    flows.commands.bytes.inc_by(forward.len() as u64);
                    if let Err(e) = send_within(&mut browser_tx, Message::Text(forward)).await {
                        tracing::debug!(error = %e, "could not write to the browser");
                        return None;
                    }
                }
                Message::Binary(_) => {
                    // Chromium would read a binary frame as CBOR, which the filter does
                    // not check: no CDP client sends one.
                    return Some(close_message(
                        CloseCode::Unsupported,
                        "binary frames are not accepted: send CDP as JSON text",
                    ));
                }
                Message::Close(_) => return None,
                // tungstenite answers pings itself; nothing else needs forwarding.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        None
    };

    let browser_to_client = async {
        let session_ended = ended.changed();
        tokio::pin!(session_ended);
        loop {
            tokio::select! {
                // Replies first, so Browser.close's answer precedes the close frame.
                biased;
                Some(reply) = reply_rx.recv() => {
                    if let Err(e) = client_tx.send(reply).await {
                        tracing::debug!(error = %e, "could not answer the client");
                        return None;
                    }
                }
                changed = &mut session_ended => {
                    let farewell = if changed.is_ok() { ended_again.borrow().clone() } else { None };
                    return Some(farewell_close(&farewell.unwrap_or_else(browserd_gone)));
                }
                _ = tick.tick() => {
                    let now = since_start();
                    let ping_ms = watch.ping_every.as_millis() as u64;
                    // No frame at all since the previous ping, not even its pong: gone.
                    if now.saturating_sub(last_frame.load(Ordering::Relaxed)) > ping_ms + ping_ms / 2 {
                        return Some(client_gone(Duration::from_millis(now - last_frame.load(Ordering::Relaxed))));
                    }
                    if now.saturating_sub(last_command.load(Ordering::Relaxed)) >= watch.idle_after.as_millis() as u64 {
                        metrics.idle_disconnects.inc();
                        return Some(client_idle(watch.idle_after));
                    }
                    if client_tx.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                }
                msg = browser_rx.next() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        if let (Some(log), Message::Text(text)) = (lease.log(), &msg) {
                            log.reply(lease.number(), text);
                        }
                        flows.replies.messages.inc();
                        flows.replies.bytes.inc_by(msg.len() as u64);
                        if let Err(e) = send_within(&mut client_tx, msg).await {
                            tracing::debug!(error = %e, "could not write to the client");
                            return None;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(e)) if BudgetExhausted::find(&e).is_some() => {
                        let reason = BudgetExhausted::find(&e).map(|x| x.to_string()).unwrap_or_default();
                        return Some(close_message(CloseCode::Again, &reason));
                    }
                    other @ (Some(Ok(Message::Close(_)) | Err(_)) | None) => {
                        tracing::debug!(?other, "browser connection ended");
                        // The browser went away: most likely the session is ending. Say why.
                        let farewell = tokio::time::timeout(ENDING_GRACE, ended_again.wait_for(Option::is_some))
                            .await
                            .ok()
                            .and_then(|r| r.ok().and_then(|e| e.clone()));
                        return Some(farewell_close(&farewell.unwrap_or_else(|| Farewell::Ended(Ending {
                            status: SessionStatus::Error,
                            reason: "the browser closed the connection".into(),
                        }))));
                    }
                },
            }
        }
    };

    // Whichever direction stops first decides the close frame the client gets, if any.
    let close = tokio::select! {
        close = client_to_browser => close,
        close = browser_to_client => close,
    };
    if let Some(close) = close {
        let _ = client_tx.send(close).await;
    }
    // Flushes the close frame (or the reply to a client that closed first). Bounded: a
    // closing handshake waits for the peer, and a broken or hostile peer never answers.
    let _ = tokio::time::timeout(CLOSE_GRACE, client_tx.close()).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, browser_tx.close()).await;
    if oversized.load(Ordering::Relaxed)
        && let Ok(mut client) = client_tx.reunite(client_rx)
    {
        // The client is still writing the message it was refused: read and drop the rest
        // (bounded), or closing now would reset the connection before it reads why.
        use tokio::io::AsyncReadExt as _;
        let mut sink = tokio::io::sink();
        let mut rest = client.get_mut().inner_mut().take(DRAIN_AFTER_REFUSAL);
        let drain = tokio::io::copy(&mut rest, &mut sink);
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

/// How a relay watches its client.
#[derive(Debug, Clone, Copy)]
pub struct ClientWatch {
    /// How often the client is pinged; one that answers nothing for about two intervals
    /// is taken as gone.
    pub ping_every: Duration,
    /// A client that sends no CDP message for this long is disconnected.
    pub idle_after: Duration,
}

/// The close a vanished client gets (it will rarely read it). The session goes on under
/// its own rules: without keepAlive, losing its last client ends it.
fn client_gone(silent: Duration) -> Message {
    let reason = format!(
        "client disconnected: no answer to pings for {}s",
        silent.as_secs()
    );
    close_message(CloseCode::Policy, &reason)
}

/// The close an idle client gets.
fn client_idle(after: Duration) -> Message {
    let reason = format!(
        "client disconnected: no CDP command for {}s; the session goes on by its own rules",
        after.as_secs()
    );
    close_message(CloseCode::Policy, &reason)
}

fn browserd_gone() -> Farewell {
    Farewell::Ended(Ending {
        status: SessionStatus::Error,
        reason: "browserd lost track of the session".into(),
    })
}

/// The close frame a client gets when its session ends (or browserd leaves it running).
fn farewell_close(farewell: &Farewell) -> Message {
    let code = match farewell {
        Farewell::Ended(Ending {
            status: SessionStatus::Error,
            ..
        }) => CloseCode::Error,
        Farewell::Ended(_) => CloseCode::Normal,
        // The session goes on without this server: "service restart".
        Farewell::Detached { .. } => CloseCode::Restart,
    };
    close_message(code, farewell.reason())
}

/// Opens the browser leg: a websocket to the browser's own CDP endpoint on loopback.
/// Messages of 1 MiB and more from the browser are held to `budget` (`None`: browserd's
/// own connections, whose replies it bounds itself).
pub async fn connect_browser(
    dialer: &crate::netns::Dialer,
    url: &str,
    max_message_size: usize,
    budget: Option<&MessageBudget>,
) -> Result<BrowserWs, Box<dyn std::error::Error + Send + Sync>> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("malformed CDP url")?;
    let tcp = dialer.connect(authority).await?;
    tcp.set_nodelay(true)?;
    // Metered from the end of the handshake's HTTP response: frames that come with it too.
    let tcp = Metered::after_http(tcp, budget.cloned());
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config(max_message_size)))
            .await?;
    Ok(ws)
}

/// Sends `msg`, in bounded time when it is large: a peer that stops reading must not keep
/// the relay memory the message holds (`cdp::budget`) for as long as its TCP stays up.
/// 30 s, and a second more per MiB; past it the connection is given up (a frame half
/// written cannot be followed by a close frame).
pub async fn send_within<S>(sink: &mut S, msg: Message) -> Result<(), SendError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let len = msg.len() as u64;
    if len < super::budget::LARGE {
        return sink.send(msg).await.map_err(SendError::Failed);
    }
    let limit = super::budget::WAIT_LIMIT + Duration::from_secs(len >> 20);
    match tokio::time::timeout(limit, sink.send(msg)).await {
        Ok(sent) => sent.map_err(SendError::Failed),
        Err(_) => Err(SendError::TooSlow(limit)),
    }
}

/// Why [`send_within`] could not send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Failed(tokio_tungstenite::tungstenite::Error),
    #[error("the peer did not take a large message within {0:?}")]
    TooSlow(Duration),
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

#[cfg(test)]
mod tests {
    use super::*;

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
