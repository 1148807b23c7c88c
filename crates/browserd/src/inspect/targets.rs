//! How many tabs a session's browser holds: bounded, so neither a client's
//! `Target.createTarget` loop nor a page's `window.open` loop can fill the machine's memory
//! with renderers.
//!
//! A watcher on browserd's own CDP connection (`Target.setDiscoverTargets`) counts the page
//! targets; the relay's filter refuses `Target.createTarget` with a CDP error at the bound
//! (`--max-tabs-per-session`), and a page opened past it some other way (a script's
//! `window.open`) is closed as soon as it appears, with a `browserd.targetRefused` entry in
//! the session's log.

use super::logs::LogTap;
use crate::cdp::client::CdpClient;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the pages of the browser at `cdp_url` into `open` and closes those past `max`,
/// until the browser's connection closes (the session ended).
pub(crate) async fn watch(
    dialer: crate::netns::Dialer,
    cdp_url: String,
    open: Arc<AtomicUsize>,
    max: usize,
    log: Option<LogTap>,
) {
    let Ok(mut cdp) = CdpClient::connect(&dialer, &cdp_url).await else {
        return;
    };
    if let Err(e) = cdp
        .call("Target.setDiscoverTargets", json!({"discover": true}))
        .await
    {
        tracing::warn!(error = %e, "the tab count is not watched");
        return;
    }
    let mut pages: HashSet<String> = HashSet::new();
    while let Some(event) = cdp.next_event().await {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Target.targetCreated") if params["targetInfo"]["type"] == "page" => {
                let Some(id) = params["targetInfo"]["targetId"].as_str() else {
                    continue;
                };
                if pages.len() >= max {
                    let _ = cdp
                        .call("Target.closeTarget", json!({"targetId": id}))
                        .await;
                    tracing::warn!(limit = max, "a tab past the session's bound was closed");
                    if let Some(log) = &log {
                        log.note(
                            "browserd.targetRefused",
                            json!({
                                "targetId": id,
                                "url": params["targetInfo"]["url"],
                                "reason": format!("the session already has {max} tabs open, the most it may (--max-tabs-per-session)"),
                            }),
                        );
                    }
                    continue;
                }
                pages.insert(id.to_owned());
            }
            Some("Target.targetDestroyed") => {
                if let Some(id) = params["targetId"].as_str() {
                    pages.remove(id);
                }
            }
            _ => continue,
        }
        open.store(pages.len(), Ordering::Relaxed);
    }
}
