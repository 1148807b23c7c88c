//! A failure that says which side failed, as pingora's errors carry their source: what a
//! log line, a status code and the user's next step depend on. Functions whose error is a
//! message for someone (a 400's text, a session's end reason, a start-up refusal) return a
//! [`Failure`] instead of a bare `String`.

/// Who is at fault, from browserd's point of view. (An upstream proxy's failures have
/// their own type, `browser::proxy::TunnelError`, which the session log names.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What a client sent (a request, a CDP command, an upload): theirs to fix.
    Client,
    /// A session's browser (or its chromedriver) failed or answered wrongly.
    Browser,
    /// The database or the files beside it.
    Store,
    /// The operator's setup: flags, files, the host's tools.
    Operator,
    /// browserd itself.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Browser => "browser",
            Side::Store => "store",
            Side::Operator => "operator",
            Side::Internal => "internal",
        }
    }
}

/// A failure with its side and a message in words its reader can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    side: Side,
    message: String,
}

impl Failure {
    pub fn new(side: Side, message: impl Into<String>) -> Self {
        Self {
            side,
            message: message.into(),
        }
    }

    pub fn client(message: impl Into<String>) -> Self {
        Self::new(Side::Client, message)
    }

    pub fn browser(message: impl Into<String>) -> Self {
        Self::new(Side::Browser, message)
    }

    pub fn store(message: impl Into<String>) -> Self {
        Self::new(Side::Store, message)
    }

    pub fn operator(message: impl Into<String>) -> Self {
        Self::new(Side::Operator, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Side::Internal, message)
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same message, blamed on `side` (a proxy address is the client's mistake in a
    /// create, the operator's in the pool file).
    pub fn on(self, side: Side) -> Self {
        Self { side, ..self }
    }

    /// The same failure, its message put in context (`"proxies[0]: " + message`).
    pub fn within(self, context: impl std::fmt::Display) -> Self {
        Self {
            side: self.side,
            message: format!("{context}{}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_side_through_context() {
        let f = Failure::client("must be a string").within("browserSettings.os ");
        assert_eq!(f.side(), Side::Client);
        assert_eq!(f.to_string(), "browserSettings.os must be a string");
        assert_eq!(Side::Operator.as_str(), "operator");
    }
}
