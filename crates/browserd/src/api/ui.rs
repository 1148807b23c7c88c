//! The web UI's files, embedded in the binary: the dashboard and rrweb's replayer.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const DASHBOARD: &str = include_str!("../../assets/ui/dashboard.html");
const REPLAY_JS: &str = include_str!("../../assets/vendor/rrweb/replay.min.js");
const REPLAY_CSS: &str = include_str!("../../assets/vendor/rrweb/replay.min.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The UI changes only with the binary; a day of caching is safe and an upgrade shows
    // within it.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// `GET /dashboard`.
pub(super) async fn dashboard() -> Response {
    let mut response = file("text/html; charset=utf-8", DASHBOARD);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn replay_js() -> Response {
    file("text/javascript; charset=utf-8", REPLAY_JS)
}

pub(super) async fn replay_css() -> Response {
    file("text/css; charset=utf-8", REPLAY_CSS)
}
