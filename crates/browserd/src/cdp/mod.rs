//! The CDP side: relaying a client's websocket to its session's browser.

pub mod relay;
