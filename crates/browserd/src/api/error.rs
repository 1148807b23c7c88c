//! Errors as the Browserbase SDKs expect them: a status code and a JSON body
//! `{"statusCode", "error", "message"}` with `Content-Type: application/json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a rule; the message names the field and the rule.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// The session has ended; connecting to it cannot work.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A limit was reached. `retry` says whether waiting a little could help; the SDKs
    /// retry 429s unless told `x-should-retry: false`.
    #[error("{message}")]
    TooManyRequests { message: String, retry: bool },
    /// A rate limit: 429 with `retry-after`, so the SDKs wait and retry.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    NotImplemented(String),
    /// browserd or its browser failed; the message says which.
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    /// The database cannot be reached now; retrying in a moment can work.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The node running the session is down; it may come back.
    #[error("{0}")]
    NodeDown(String),
    /// This node is draining: a retry reaches another node (or this one's replacement).
    #[error("{0}")]
    Draining(String),
    /// The session's browser could not be reached.
    #[error("{0}")]
    BadGateway(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } | Self::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_)
            | Self::StoreUnavailable(_)
            | Self::NodeDown(_)
            | Self::Draining(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Why a request failed, as its answer said: left on the response for the access log.
#[derive(Debug, Clone)]
pub(crate) struct Failed(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = serde_json::json!({
            "statusCode": status.as_u16(),
            "error": status.canonical_reason().unwrap_or("Error"),
            "message": message,
        });
        let mut response = (status, axum::Json(body)).into_response();
        // The access log says why a request failed (one line per request, in its span).
        response.extensions_mut().insert(Failed(message));
        let no_retry = match &self {
            Self::TooManyRequests { retry, .. } => !retry,
            // Retrying cannot fix a browser that failed to start the same way twice; the
            // SDKs would otherwise retry creates and launch more browsers.
            // Nor can a machine short of memory, or one shutting down, within the SDK's retries.
            Self::Internal(_) | Self::NotImplemented(_) | Self::Unavailable(_) => true,
            // The SDKs retry 409s; ours (a taken name, an ended session) stay as they are.
            Self::Conflict(_) => true,
            _ => false,
        };
        if let Self::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            );
        }
        if no_retry {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Self::StoreUnavailable(_) | Self::NodeDown(_) | Self::Draining(_) = &self {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("true"));
        }
        debug_assert!(response.headers().contains_key(header::CONTENT_TYPE));
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            return Self::StoreUnavailable(format!(
                "browserd's database cannot be reached right now ({e}); running sessions are not affected, retry shortly"
            ));
        }
        Self::Internal(format!("browserd's database failed: {e}"))
    }
}

/// A failure's side decides the status: the client's is a 400, the store's a 503 the SDKs
/// retry, a browser's a 502, the operator's and browserd's own a 500.
impl From<crate::fault::Failure> for ApiError {
    fn from(f: crate::fault::Failure) -> Self {
        use crate::fault::Side;
        let message = f.message().to_owned();
        match f.side() {
            Side::Client => Self::BadRequest(message),
            Side::Store => Self::StoreUnavailable(message),
            Side::Browser => Self::BadGateway(message),
            Side::Operator | Side::Internal => Self::Internal(message),
        }
    }
}

impl From<crate::sessions::CreateError> for ApiError {
    fn from(e: crate::sessions::CreateError) -> Self {
        use crate::sessions::CreateError as E;
        match e {
            E::ServerFull { .. } | E::ProjectFull { .. } => Self::TooManyRequests {
                message: e.to_string(),
                retry: false,
            },
            // Waiting helps here: the SDKs retry, honouring retry-after.
            E::RateLimited {
                retry_after_secs, ..
            } => Self::RateLimited {
                message: e.to_string(),
                retry_after_secs,
            },
            E::LowMemory { .. } | E::LowDisk { .. } => Self::Unavailable(e.to_string()),
            E::ShuttingDown => Self::Unavailable(e.to_string()),
            E::Draining => Self::Draining(e.to_string()),
            // A context that does not open will not open on a retry either.
            E::Launch(_) | E::SupervisorGone | E::Context(_) | E::Setup(_) => {
                Self::Internal(e.to_string())
            }
            E::Store(e) => e.into(),
            E::Asked(crate::sessions::AskError::NotFound(m)) => Self::NotFound(m),
            E::Asked(crate::sessions::AskError::Refused(m)) => Self::BadRequest(m),
            E::Internal(m) => Self::Internal(m),
        }
    }
}
