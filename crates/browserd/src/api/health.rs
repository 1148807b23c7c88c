//! Health checks for load balancers and process supervisors; no API key.
//!
//! `GET /healthz`: the process is up and serving. `GET /readyz`: a create could start a
//! session now — the store answers, Chromium is there, the machine is above the memory
//! floor, the data dir's disk above its floor, and this server is under `--max-sessions` — with a JSON body that names each check,
//! and 503 when one fails. A cluster node that runs no browsers (`--max-sessions 0`) places
//! creates on other nodes: it is ready while its store answers. A node that runs browsers
//! is ready only once a browser has really started here (and the last launch that tells did
//! not fail: `browser::proof`); a draining node is not ready.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// How long the store may take to answer a readiness check.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = match tokio::time::timeout(
        STORE_PATIENCE,
        // Any key: that the store answers is the check, not what it holds.
        state.store.settings.get_setting("readyz"),
    )
    .await
    {
        Ok(Ok(_)) => json!({ "ok": true }),
        Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => json!({ "ok": false, "error": format!("no answer within {STORE_PATIENCE:?}") }),
    };
    let limits = state.sessions.limits();
    // A node of a cluster that runs no browsers (--max-sessions 0) places every create on
    // another node: it is ready when its store answers, whatever its Chromium.
    let gateway = limits.max_sessions == 0;
    let chromium = match state.sessions.launcher_readiness() {
        _ if gateway => json!({ "ok": true, "skipped": "this node runs no browsers" }),
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e.message(), "side": e.side().as_str() }),
    };
    let available = crate::sessions::mem_available_mib();
    let floor = limits.min_free_memory_mib;
    let memory = json!({
        "ok": gateway || floor == 0 || available.is_none_or(|a| a >= floor),
        "availableMib": available,
        "floorMib": floor,
    });
    let disk_floor = limits.min_free_disk_mib;
    let disk_free = state.sessions.files().free_disk_mib();
    let disk = json!({
        "ok": gateway || disk_floor == 0 || disk_free.is_none_or(|a| a >= disk_floor),
        "freeMib": disk_free,
        "floorMib": disk_floor,
    });
    let live = state.sessions.live_count();
    let sessions = json!({
        "ok": gateway || live < limits.max_sessions,
        "live": live,
        "max": limits.max_sessions,
        "gateway": gateway,
    });
    // A draining node takes no new sessions: out of a load balancer's rotation at once,
    // while its live sessions go on (any node forwards their clients to it).
    let draining = state.sessions.is_draining();
    let drain = json!({ "ok": !draining, "draining": draining });
    let checks = json!({ "draining": drain, "store": store, "chromium": chromium, "memory": memory, "disk": disk, "sessions": sessions });
    let ready = checks
        .as_object()
        .is_some_and(|c| c.values().all(|check| check["ok"] == true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks })))
}
