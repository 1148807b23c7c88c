//! A plain websocket pipe between an inspector client (Chrome DevTools, a debugger on
//! `wsUrl`) and the browser. Unlike a `connectUrl` client it does not count as a client of
//! the session: opening and closing DevTools never ends a session without keepAlive.

use crate::cdp::budget::BudgetExhausted;
use crate::cdp::filter::{self, Rules, Verdict};
use crate::cdp::relay::{BrowserWs, close_message, send_within};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Forwards frames both ways until either side leaves or `stop` resolves with the reason
/// the inspector client is told. The inspector's commands pass the same filter as a
/// client's ([`filter::check`]); a `Browser.close` is refused (an inspector does not end
/// sessions: release it).
pub(crate) async fn run<S>(
    client: WebSocketStream<S>,
    browser: BrowserWs,
    rules: &Rules,
    stop: impl Future<Output = String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut browser_tx, mut browser_rx) = browser.split();
    tokio::pin!(stop);
    let close = loop {
        tokio::select! {
            reason = &mut stop => break Some(close_message(CloseCode::Normal, &reason)),
            msg = client_rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let forward = match filter::check(&text, rules) {
                        Verdict::AsSent => text,
                        Verdict::Forward(checked) => checked.into(),
                        Verdict::Refuse(reply) => {
                            if client_tx.send(Message::text(reply)).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                        Verdict::CloseBrowser(_) => {
                            let reply = filter::refusal(&text, "an inspector does not close the browser: release the session instead");
                            if client_tx.send(Message::text(reply)).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                    };
                    if send_within(&mut browser_tx, Message::Text(forward)).await.is_err() {
                        break Some(close_message(CloseCode::Away, "the browser went away"));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    break Some(close_message(CloseCode::Unsupported, "binary frames are not accepted: send CDP as JSON text"));
                }
                Some(Err(e)) if BudgetExhausted::find(&e).is_some() => {
                    let reason = BudgetExhausted::find(&e).map(ToString::to_string).unwrap_or_default();
                    break Some(close_message(CloseCode::Again, &reason));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
            msg = browser_rx.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if send_within(&mut client_tx, msg).await.is_err() {
                        break None;
                    }
                }
                Some(Err(e)) if BudgetExhausted::find(&e).is_some() => {
                    let reason = BudgetExhausted::find(&e).map(ToString::to_string).unwrap_or_default();
                    break Some(close_message(CloseCode::Again, &reason));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    break Some(close_message(CloseCode::Away, "the tab or browser went away"));
                }
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(close) = close {
        let _ = client_tx.send(close).await;
    }
    let _ = client_tx.close().await;
    let _ = browser_tx.close().await;
}
