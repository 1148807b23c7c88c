//! `GET /v1/overview`: this server's figures for the dashboard's overview (browserd's own
//! route, not Browserbase's): live sessions, creates and refusals over the last hour, the
//! warm pool, and the memory and disk headroom.
//!
//! The hour comes from [`History`]: a sample of the create counters and the live count
//! every [`SAMPLE_EVERY`], kept in memory (a restart starts a new hour; Prometheus keeps the
//! long view). The figures are counts only, no project names: every project's key already
//! sees this server's load in `GET /v1/projects` (`browserd.liveSessions`).

use super::AppState;
use super::error::ApiError;
use crate::metrics::Outcome;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How often [`History`] takes a sample.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const KEPT: usize = 360;

/// Create outcomes counted as refusals: the server or the project had no room, or the
/// server could not start a browser now (a client's own mistake is not a refusal).
const REFUSED: [&str; 5] = [
    "project_full",
    "rate_limited",
    "server_full",
    "unavailable",
    "draining",
];

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Unix time, milliseconds.
    pub at: i64,
    pub live_sessions: usize,
    /// Creates since this process started (a counter: the chart takes differences).
    pub created: u64,
    /// Refused creates since this process started.
    pub refused: u64,
}

/// The last hour of samples. A std mutex: held to push or copy, never across an await.
#[derive(Debug, Default)]
pub struct History(Mutex<VecDeque<Sample>>);

impl History {
    pub fn record(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    fn samples(&self) -> Vec<Sample> {
        self.0.lock().unwrap().iter().copied().collect()
    }
}

/// The figures now.
pub(crate) fn sample_now(state: &AppState) -> Sample {
    let metrics = state.sessions.metrics();
    let count = |outcome: &'static str| metrics.creates.get_or_create(&Outcome { outcome }).get();
    Sample {
        at: (crate::model::now().unix_timestamp_nanos() / 1_000_000) as i64,
        live_sessions: state.sessions.live_count(),
        created: count("created"),
        refused: REFUSED.into_iter().map(count).sum(),
    }
}

/// `GET /v1/overview`, any project's key.
pub(crate) async fn overview(
    State(state): State<AppState>,
    _auth: super::Auth,
) -> Result<Response, ApiError> {
    let now = sample_now(&state);
    // The stored hour, then now, so that a server started a moment ago draws something.
    let mut samples = state.history.samples();
    samples.push(now);
    let limits = state.sessions.limits();
    let files = state.sessions.files();
    let pool = state.sessions.pool();
    Ok(Json(serde_json::json!({
        "intervalSeconds": SAMPLE_EVERY.as_secs(),
        "samples": samples,
        "liveSessions": now.live_sessions,
        "maxSessions": limits.max_sessions,
        "warmPool": { "target": pool.target(), "ready": pool.len() },
        "memory": {
            "availableMib": crate::sessions::mem_available_mib(),
            "floorMib": limits.min_free_memory_mib,
        },
        "disk": {
            "freeMib": files.free_disk_mib(),
            "floorMib": limits.min_free_disk_mib,
        },
    }))
    .into_response())
}
