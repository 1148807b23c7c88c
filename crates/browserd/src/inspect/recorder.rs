//! Session recordings: rrweb (MIT, vendored in `assets/vendor/rrweb`, embedded in the
//! binary) records the primary tab's DOM, and its events are written, one JSON object per
//! line, to the session's `recording.jsonl`.
//!
//! The recorder runs on browserd's own CDP connection, never in a client's: it attaches to
//! the first page, adds rrweb to every document of its main frame in an isolated world (page
//! scripts cannot see or break it; it shares the DOM), and receives events through a CDP
//! binding that exists only in that world.

use crate::cdp::client::{CdpClient, CdpError};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// rrweb's recorder, `@rrweb/record` 2.1.6 (global `rrwebRecord`).
const RRWEB_RECORD: &str = include_str!("../../assets/vendor/rrweb/record.min.js");
/// The isolated world the recorder lives in, and its binding's name there.
const WORLD: &str = "__browserd_recorder";
const BINDING: &str = "__browserdRecord";
/// Largest recording kept per session; events past it are dropped (the replay then ends
/// there).
pub(crate) const MAX_BYTES: u64 = 100 * 1024 * 1024;

/// rrweb installed in a browser's first page, not yet recording into a session: a warm
/// browser gets one while it waits (off the create path: adding rrweb costs Chromium tens of
/// milliseconds), and the session that takes the browser starts or discards it.
pub(crate) struct Recorder {
    cdp: CdpClient,
    /// Our flattened CDP session on the tab.
    target_session: String,
    /// The script's id, to remove it if the session does not record.
    script: String,
    tab: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("tab", &self.tab)
            .finish_non_exhaustive()
    }
}

/// Adds rrweb to every new document of the browser's first page, in an isolated world.
/// `now`: also start it in the current document (a browser taken over after a restart is
/// already showing pages; a fresh one shows about:blank, not worth recording).
pub(crate) async fn install(
    dialer: &crate::netns::Dialer,
    cdp_url: &str,
    now: bool,
) -> Result<Recorder, CdpError> {
    let mut cdp = CdpClient::connect(dialer, cdp_url).await?;
    let targets = cdp.call("Target.getTargets", json!({})).await?;
    let tab = targets["targetInfos"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["targetId"].as_str())
        .ok_or_else(|| CdpError::Command {
            method: "Target.getTargets".into(),
            message: "the browser has no page to record".into(),
        })?
        .to_owned();
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": &tab, "flatten": true }),
        )
        .await?;
    let target_session = attached["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let on = Some(target_session.as_str());
    // Without Page.enable the script is added but never runs in later documents.
    cdp.call_in(on, "Page.enable", json!({})).await?;
    cdp.call_in(on, "Runtime.enable", json!({})).await?;
    cdp.call_in(
        on,
        "Runtime.addBinding",
        json!({ "name": BINDING, "executionContextName": WORLD }),
    )
    .await?;
    // Main frame only (rrweb records same-origin iframes itself); once per document. rrweb
    // starts once the page has loaded and the main thread is idle: its first run in a
    // document costs V8 tens of milliseconds (it compiles lazily), which would otherwise
    // delay the page's load and the client's next command. What changed before it starts is
    // in its first full snapshot.
    let source = format!(
        "{RRWEB_RECORD}\n;(() => {{\
           if (window.top !== window || window.__browserdRecording) return;\
           window.__browserdRecording = true;\
           const send = globalThis.{BINDING};\
           const start = () => rrwebRecord.record({{ emit(e) {{ send(JSON.stringify(e)); }},\
             sampling: {{ mousemove: 50, scroll: 150, input: 'last' }} }});\
           const idle = () => (window.requestIdleCallback || ((f) => setTimeout(f, 50)))(start, {{ timeout: 2000 }});\
           if (document.readyState === 'complete') idle();\
           else window.addEventListener('load', idle, {{ once: true }});\
         }})();"
    );
    let added = cdp
        .call_in(
            on,
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source, "worldName": WORLD, "runImmediately": now }),
        )
        .await?;
    Ok(Recorder {
        script: added["identifier"].as_str().unwrap_or_default().to_owned(),
        cdp,
        target_session,
        tab,
    })
}

/// Where a session's recording goes.
#[derive(Debug, Clone)]
pub struct Recording {
    pub session: uuid::Uuid,
    pub path: std::path::PathBuf,
    /// The session's disk allowance: recording stops once its files reach it.
    pub quota: std::sync::Arc<crate::files::quota::DiskQuota>,
}

impl Recorder {
    /// The recorded tab: the session's primary tab.
    pub(crate) fn tab(&self) -> &str {
        &self.tab
    }

    /// Records until the browser goes away.
    pub(crate) fn start(self, recording: Recording) {
        // Runs until the browser (and so this connection) goes away.
        tokio::spawn(record(self.cdp, recording));
    }

    /// The session does not record: rrweb is removed before any document ran it.
    pub(crate) async fn discard(mut self) {
        let on = Some(self.target_session.as_str());
        let params = json!({ "identifier": self.script });
        if let Err(e) = self
            .cdp
            .call_in(on, "Page.removeScriptToEvaluateOnNewDocument", params)
            .await
        {
            tracing::warn!(error = %e, "could not remove the recorder from a browser");
        }
    }
}

async fn record(mut cdp: CdpClient, recording: Recording) {
    let Recording {
        session,
        path,
        quota,
    } = recording;
    let mut out: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
    let mut written = 0u64;
    let mut next_id = 0u64;
    // Events go through a buffer, written out every 100 ms (a live replay is that far
    // behind at most), not a write and flush per event: rrweb sends hundreds a second.
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            // next_event is cancel-safe: its one await is the websocket's next frame.
            event = cdp.next_event() => match event {
                Some(event) => event,
                None => break,
            },
            _ = flush.tick() => {
                if let Some(file) = &mut out
                    && file.flush().await.is_err()
                {
                    tracing::warn!(path = %path.display(), "could not write the recording");
                    break;
                }
                continue;
            }
        };
        if event["method"] != "Runtime.bindingCalled" || event["params"]["name"] != BINDING {
            continue;
        }
        let Some(Ok(Value::Object(mut rr))) = event["params"]["payload"]
            .as_str()
            .map(serde_json::from_str::<Value>)
        else {
            continue;
        };
        next_id += 1;
        rr.insert("sessionId".into(), session.to_string().into());
        rr.insert("id".into(), next_id.to_string().into());
        let mut line = Value::Object(rr).to_string();
        line.push('\n');
        written += line.len() as u64;
        if written > MAX_BYTES {
            tracing::info!(%session, "recording reached its limit; later events are dropped");
            break;
        }
        if quota.is_reached() {
            tracing::warn!(%session, limit = quota.limit(), "the session's files reached its disk allowance (--session-disk-mib); recording stopped");
            break;
        }
        if out.is_none() {
            out = open(&path).await.map(tokio::io::BufWriter::new);
        }
        let Some(file) = &mut out else { break };
        if file.write_all(line.as_bytes()).await.is_err() {
            tracing::warn!(path = %path.display(), "could not write the recording");
            break;
        }
    }
    if let Some(file) = &mut out {
        let _ = file.flush().await;
    }
}

/// How often buffered recording events are written out.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

async fn open(path: &std::path::Path) -> Option<tokio::fs::File> {
    if let Some(parent) = path.parent() {
        let _ = tokio::fs::create_dir_all(parent).await;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .ok()
}
