//! The live view's websocket: a CDP screencast of one tab, on browserd's own connection to
//! that tab, and the viewer's mouse, wheel, keyboard and text input sent back as CDP `Input`
//! commands.
//!
//! Frames pace themselves to the viewer: Chromium sends the next screencast frame only
//! after the previous one is acknowledged, and browserd acknowledges a frame only once the
//! viewer's socket took it. A slow viewer therefore gets fewer frames, each one the tab as it
//! is now, and nothing queues anywhere.
//!
//! To the viewer: a text message `{"type":"frame","metadata":{...}}` (CDP's
//! `ScreencastFrameMetadata`: CSS size of the tab, scroll offsets) followed by the JPEG as a
//! binary message. From the viewer: JSON input events, checked and rebuilt field by field
//! ([`input_command`]); nothing else reaches the browser.

use crate::cdp::relay::{close_message, connect_browser};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use std::future::Future;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Screencast frames are JPEGs of at most this size (CSS pixels are scaled down to fit).
const MAX_WIDTH: u32 = 1920;
const MAX_HEIGHT: u32 = 1080;
const QUALITY: u32 = 70;
/// Largest message on the tab connection (a frame is a few hundred KiB of base64).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Serves one viewer of the tab whose page-level CDP url is `tab_ws` until the viewer
/// leaves, the tab goes away, or `stop` resolves (the session ended or the viewer's grant
/// expired) with the reason the viewer is told.
pub(crate) async fn serve<S>(
    dialer: &crate::netns::Dialer,
    viewer: WebSocketStream<S>,
    tab_ws: &str,
    read_only: bool,
    stop: impl Future<Output = String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut view_tx, mut view_rx) = viewer.split();
    let tab = match connect_browser(dialer, tab_ws, MAX_MESSAGE, None).await {
        Ok(tab) => tab,
        Err(e) => {
            tracing::debug!(error = %e, "live view could not reach the tab");
            let _ = view_tx
                .send(close_message(CloseCode::Away, "the tab is gone"))
                .await;
            return;
        }
    };
    let (mut tab_tx, mut tab_rx) = tab.split();
    let mut next_id = 0u64;
    let mut command = |method: &str, params: Value| {
        next_id += 1;
        Message::text(json!({ "id": next_id, "method": method, "params": params }).to_string())
    };
    let start = command(
        "Page.startScreencast",
        json!({ "format": "jpeg", "quality": QUALITY, "maxWidth": MAX_WIDTH, "maxHeight": MAX_HEIGHT }),
    );
    if tab_tx.send(start).await.is_err() {
        return;
    }
    tokio::pin!(stop);
    let close = loop {
        tokio::select! {
            reason = &mut stop => break Some(close_message(CloseCode::Normal, &reason)),
            msg = tab_rx.next() => {
                let Some(Ok(Message::Text(text))) = msg else {
                    if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
                        continue;
                    }
                    break Some(close_message(CloseCode::Away, "the tab is gone"));
                };
                let Ok(event) = serde_json::from_str::<Value>(&text) else { continue };
                match event["method"].as_str() {
                    Some("Page.screencastFrame") => {
                        let params = &event["params"];
                        let Some(jpeg) = params["data"]
                            .as_str()
                            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                        else {
                            continue;
                        };
                        let meta = json!({ "type": "frame", "metadata": params["metadata"] });
                        if view_tx.send(Message::text(meta.to_string())).await.is_err()
                            || view_tx.send(Message::binary(jpeg)).await.is_err()
                        {
                            break None;
                        }
                        // Acknowledged only now that the viewer took it: the pacing.
                        let ack = command(
                            "Page.screencastFrameAck",
                            json!({ "sessionId": params["sessionId"] }),
                        );
                        if tab_tx.send(ack).await.is_err() {
                            break None;
                        }
                    }
                    Some("Inspector.detached" | "Inspector.targetCrashed") => {
                        break Some(close_message(CloseCode::Away, "the tab was closed"));
                    }
                    _ => {}
                }
            }
            msg = view_rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if read_only {
                        // Said, so a viewer (and a test) knows its input was seen and dropped.
                        let ignored = json!({ "type": "ignored", "reason": "this live view is read-only" });
                        if view_tx.send(Message::text(ignored.to_string())).await.is_err() {
                            break None;
                        }
                        continue;
                    }
                    if let Some((method, params)) = input_command(&text)
                        && tab_tx.send(command(method, params)).await.is_err()
                    {
                        break None;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(close) = close {
        let _ = view_tx.send(close).await;
    }
    let _ = view_tx.close().await;
    let _ = tab_tx.close().await;
}

/// The CDP command for one viewer input event, rebuilt from checked fields; `None` for
/// anything else.
pub(crate) fn input_command(text: &str) -> Option<(&'static str, Value)> {
    let event: Map<String, Value> = serde_json::from_str(text).ok()?;
    let num = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
    };
    let int = |k: &str| event.get(k).and_then(Value::as_i64);
    let string = |k: &str, max: usize| {
        event
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| s.len() <= max)
    };
    let modifiers = int("modifiers").unwrap_or(0).clamp(0, 15);
    match event.get("type")?.as_str()? {
        "mouse" => {
            let kind = match string("event", 16)? {
                k @ ("mousePressed" | "mouseReleased" | "mouseMoved") => k,
                _ => return None,
            };
            let button = match string("button", 8).unwrap_or("none") {
                b @ ("none" | "left" | "middle" | "right") => b,
                _ => return None,
            };
            Some((
                "Input.dispatchMouseEvent",
                json!({
                    "type": kind, "x": num("x")?, "y": num("y")?, "button": button,
                    "clickCount": int("clickCount").unwrap_or(0).clamp(0, 3),
                    "modifiers": modifiers,
                }),
            ))
        }
        "wheel" => Some((
            "Input.dispatchMouseEvent",
            json!({
                "type": "mouseWheel", "x": num("x")?, "y": num("y")?,
                "deltaX": num("deltaX").unwrap_or(0.0), "deltaY": num("deltaY").unwrap_or(0.0),
                "modifiers": modifiers,
            }),
        )),
        "key" => {
            let down = match string("event", 8)? {
                "keyDown" => true,
                "keyUp" => false,
                _ => return None,
            };
            let text = string("text", 8).unwrap_or("");
            // As Puppeteer does: a key that types text is a keyDown (it inserts the text),
            // any other key a rawKeyDown.
            let kind = match (down, text.is_empty()) {
                (true, false) => "keyDown",
                (true, true) => "rawKeyDown",
                (false, _) => "keyUp",
            };
            let mut params = json!({
                "type": kind,
                "key": string("key", 32)?,
                "code": string("code", 32).unwrap_or(""),
                "windowsVirtualKeyCode": int("keyCode").unwrap_or(0).clamp(0, 255),
                "modifiers": modifiers,
            });
            if down && !text.is_empty() {
                params["text"] = text.into();
                params["unmodifiedText"] = text.into();
            }
            Some(("Input.dispatchKeyEvent", params))
        }
        "text" => Some((
            "Input.insertText",
            json!({ "text": string("text", 64 * 1024)? }),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_input_becomes_checked_cdp_input() {
        let (method, params) = input_command(
            r#"{"type":"mouse","event":"mousePressed","x":10.5,"y":20,"button":"left","clickCount":1,"evil":"x"}"#,
        )
        .unwrap();
        assert_eq!(method, "Input.dispatchMouseEvent");
        assert_eq!(params["type"], "mousePressed");
        assert_eq!(params["x"], 10.5);
        assert!(params.get("evil").is_none());

        let (_, key) = input_command(
            r#"{"type":"key","event":"keyDown","key":"a","code":"KeyA","text":"a","keyCode":65}"#,
        )
        .unwrap();
        assert_eq!(key["type"], "keyDown");
        assert_eq!(key["text"], "a");
        let (_, enter) =
            input_command(r#"{"type":"key","event":"keyDown","key":"Backspace","keyCode":8}"#)
                .unwrap();
        assert_eq!(enter["type"], "rawKeyDown");
        let (method, text) = input_command(r#"{"type":"text","text":"héllo"}"#).unwrap();
        assert_eq!(
            (method, text["text"].as_str()),
            ("Input.insertText", Some("héllo"))
        );

        for bad in [
            r#"{"type":"mouse","event":"mouseWheel2","x":1,"y":1}"#,
            r#"{"type":"mouse","event":"mousePressed","x":"1","y":1}"#,
            r#"{"type":"cdp","method":"Browser.close"}"#,
            r#"{"type":"key","event":"keyDown"}"#,
            "not json",
        ] {
            assert_eq!(input_command(bad), None, "{bad}");
        }
    }
}
