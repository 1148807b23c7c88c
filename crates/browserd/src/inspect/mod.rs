//! Looking into a session: its live view (a screencast with input), Chrome DevTools on its
//! tabs, its CDP log and its rrweb recording. Everything here runs on browserd's own
//! connections to the browser, never inside a client's stream.

pub(crate) mod live;
pub(crate) mod logs;
pub(crate) mod pipe;
pub(crate) mod recorder;
pub(crate) mod targets;

use crate::fault::Failure;
use http_body_util::BodyExt as _;
use serde::Serialize;

/// The `host:port` of a browser's DevTools server, from its browser-level CDP url.
pub fn devtools_authority(cdp_url: &str) -> Option<&str> {
    cdp_url.strip_prefix("ws://")?.split('/').next()
}

/// The largest answer [`browser_get`] reads.
const MAX_BROWSER_ANSWER: usize = 32 * 1024 * 1024;

/// A GET on a browser's DevTools HTTP server (loopback): `/json/list`, `/devtools/...`.
pub async fn browser_get(
    dialer: &crate::netns::Dialer,
    authority: &str,
    path_and_query: &str,
) -> Result<hyper::Response<axum::body::Bytes>, Failure> {
    let tcp = dialer
        .connect(authority)
        .await
        .map_err(|e| Failure::browser(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| Failure::browser(e.to_string()))?;
    // Drives this one request's connection; ends with it.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path_and_query)
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .map_err(|e| Failure::browser(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::browser(e.to_string()))?;
    let (parts, body) = resp.into_parts();
    // The browser is not trusted with browserd's memory: its largest answer (a DevTools
    // front-end file) is a few MiB.
    let bytes = http_body_util::Limited::new(body, MAX_BROWSER_ANSWER)
        .collect()
        .await
        .map_err(|e| {
            Failure::browser(format!(
                "{e} (answers are read up to {MAX_BROWSER_ANSWER} bytes)"
            ))
        })?
        .to_bytes();
    Ok(hyper::Response::from_parts(parts, bytes))
}

/// One tab of a session, as the browser lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Tab {
    pub id: String,
    pub url: String,
    pub title: String,
    #[serde(rename = "faviconUrl", default)]
    pub favicon_url: String,
}

/// The browser's page tabs: `primary` first (the session's first tab), the others in the
/// order DevTools lists them (most recently active first).
pub async fn tabs(
    dialer: &crate::netns::Dialer,
    cdp_url: &str,
    primary: Option<&str>,
) -> Result<Vec<Tab>, Failure> {
    #[derive(serde::Deserialize)]
    struct Target {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        url: String,
        #[serde(default)]
        title: String,
        #[serde(rename = "faviconUrl", default)]
        favicon_url: String,
    }
    let authority =
        devtools_authority(cdp_url).ok_or_else(|| Failure::internal("malformed CDP url"))?;
    let resp = browser_get(dialer, authority, "/json/list").await?;
    let targets: Vec<Target> =
        serde_json::from_slice(resp.body()).map_err(|e| Failure::browser(e.to_string()))?;
    let mut tabs: Vec<Tab> = targets
        .into_iter()
        .filter(|t| t.kind == "page")
        .map(|t| Tab {
            id: t.id,
            url: t.url,
            title: t.title,
            favicon_url: t.favicon_url,
        })
        .collect();
    if let Some(at) = tabs.iter().position(|t| Some(t.id.as_str()) == primary) {
        let first = tabs.remove(at);
        tabs.insert(0, first);
    }
    Ok(tabs)
}

/// A JSON-lines file (a session's log or recording) as one JSON array, oldest first,
/// streamed a line at a time: a recording of 100 MiB is never held whole. A line that does
/// not parse (the one still being written) is skipped, and a file not yet written reads as
/// `[]`.
pub async fn jsonl_as_array(
    path: &std::path::Path,
) -> std::io::Result<impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + use<>> {
    use tokio::io::AsyncBufReadExt as _;
    let lines = match tokio::fs::File::open(path).await {
        Ok(file) => Some(tokio::io::BufReader::new(file).lines()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // (the lines left, whether the array has an element yet, whether it is closed)
    let state = (lines, false, false);
    Ok(futures_util::stream::unfold(
        state,
        |(mut lines, mut started, closed)| async move {
            if closed {
                return None;
            }
            loop {
                let next = match lines.as_mut() {
                    Some(lines) => lines.next_line().await,
                    None => Ok(None),
                };
                match next {
                    Ok(Some(line)) => {
                        if serde_json::from_str::<serde::de::IgnoredAny>(&line).is_err() {
                            continue;
                        }
                        let mut chunk = Vec::with_capacity(line.len() + 1);
                        chunk.push(if started { b',' } else { b'[' });
                        chunk.extend_from_slice(line.as_bytes());
                        started = true;
                        return Some((Ok(chunk.into()), (lines, started, false)));
                    }
                    Ok(None) => {
                        let end: &'static [u8] = if started { b"]" } else { b"[]" };
                        return Some((Ok(end.into()), (lines, started, true)));
                    }
                    Err(e) => return Some((Err(e), (lines, started, true))),
                }
            }
        },
    ))
}

/// The objects of a JSON-lines file, oldest first (for tests: the API streams them with
/// [`jsonl_as_array`]).
#[cfg(test)]
pub async fn read_jsonl(path: &std::path::Path) -> std::io::Result<Vec<serde_json::Value>> {
    use futures_util::StreamExt as _;
    let mut bytes = Vec::new();
    let mut stream = std::pin::pin!(jsonl_as_array(path).await?);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
