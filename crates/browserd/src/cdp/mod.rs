//! The CDP side: relaying a client's websocket to its session's browser, and browserd's
//! own small CDP client for what it does to a browser itself.

pub mod budget;
pub mod client;
pub mod filter;
pub mod frames;
pub mod relay;
