//! The CDP side: relaying a client's websocket to its session's browser, and browserd's
//! own small CDP client for what it does to a browser itself.

pub(crate) mod budget;
pub(crate) mod client;
pub(crate) mod filter;
pub(crate) mod frames;
pub mod relay;
