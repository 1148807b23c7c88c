//! Where a session's connections leave: straight out, or through an upstream proxy (HTTP
//! or SOCKS5).
//!
//! A session's `proxies` ([`request`]) become [`ProxyRoutes`] ([`routes`]), which the
//! browser's egress proxy ([`super::egress`]) consults for every connection a page opens.
//! Through an upstream, every connection is one tunnel to `host:port` ([`tunnel`]: an HTTP
//! `CONNECT`, or a SOCKS5 `CONNECT` with the host name for the upstream to resolve), plain
//! HTTP too: browserd never parses or terminates the page's traffic, the tunnel stays
//! opaque, and the credentials are added here, where pages cannot see them. The operator's
//! proxies are the [`pool`]; passwords are stored sealed ([`sealed`]); the bytes that cross
//! an upstream are counted ([`metered`], `proxyBytes`).

mod address;
mod metered;
mod pool;
mod request;
mod routes;
mod sealed;
mod tunnel;

pub(crate) use metered::Metered;
pub(crate) use pool::{ProxyPool, choose_from_pool};
pub(crate) use request::{ProxyEntry, parse_request};
pub(crate) use routes::{ProxyRoutes, Via};
pub(crate) use sealed::{for_store, from_store};
pub(crate) use tunnel::{TunnelError, Upstream};
