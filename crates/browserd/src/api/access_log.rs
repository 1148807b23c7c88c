//! One access-log line per request: method, path (secrets taken out), status, time, and a
//! request id that every log line of the request carries (its span) and the response
//! returns in `x-request-id`.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub(super) const REQUEST_ID: &str = "x-request-id";

/// The middleware.
pub(crate) async fn access_log(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = request_id(&req);
    // Carried on if the request is forwarded: the owner node logs it under the same id.
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    let span = tracing::info_span!("request", id = %id);
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let failed = response.extensions_mut().remove::<super::error::Failed>();
    span.in_scope(|| match failed {
        // A failure on browserd's side is an error line, with the reason the client got.
        Some(super::error::Failed(message)) if response.status().is_server_error() => {
            tracing::error!(target: "browserd::access", %method, path = %path, status, ms, %message, "request failed");
        }
        // A client's mistake is told to the client only: its message may quote what it sent
        // (a proxy URL with a password in it).
        _ => tracing::info!(target: "browserd::access", %method, path = %path, status, ms, "request"),
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The client's `x-request-id` when it is a plain token (so a log line cannot be forged
/// through it), else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The path as it may be logged: never the query (`signingKey`, `apiKey` ride there), and
/// an inspector link's token (a credential in the path) replaced.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/debug/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, after)) => format!("/debug/<token>/{after}"),
            None => "/debug/<token>".to_owned(),
        },
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_carry_no_credential() {
        assert_eq!(loggable_path("/v1/sessions/abc"), "/v1/sessions/abc");
        assert_eq!(
            loggable_path("/debug/0123.99.d.mac/devtools/page/X"),
            "/debug/<token>/devtools/page/X"
        );
        assert_eq!(loggable_path("/debug/0123.99.r.mac"), "/debug/<token>");
    }

    #[test]
    fn only_plain_request_ids_are_taken() {
        let with = |id: &str| {
            let req = Request::builder()
                .header(REQUEST_ID, id)
                .body(axum::body::Body::empty())
                .unwrap();
            request_id(&req)
        };
        assert_eq!(with("abc-123_X"), "abc-123_X");
        assert_ne!(with("evil\" status=200"), "evil\" status=200");
        assert_eq!(with(&"a".repeat(65)).len(), 32, "a new one");
    }
}
