//! browserd: a self-hosted, Browserbase-compatible browser session server.
//!
//! Module map, following a request:
//! - [`api`]: the Browserbase REST API (`/v1/...`) and the `connectUrl` websocket, on axum.
//! - [`sessions`]: the lifecycle; one supervisor task per session owns its browser,
//!   deadline, clients and keepAlive rule, and every ending goes through one path.
//! - [`browser`]: launching and stopping Chromium (a trait, so tests can fake it).
//! - [`cdp`]: relaying a client's CDP websocket to its session's browser.
//! - [`files`]: what lives on disk beside the database: session uploads and downloads,
//!   encrypted contexts, unpacked extensions.
//! - [`inspect`]: looking into a session: live view, DevTools, CDP log, rrweb recording.
//! - [`store`]: persistence of projects, key hashes, sessions, contexts, extensions and
//!   settings: one trait per aggregate; the embedded database is SQLite.
//! - [`cluster`]: several nodes sharing one PostgreSQL: leases, sweeping for lost nodes,
//!   forwarding a session's requests and websockets to the node that runs it.
//! - [`server`]: start-up (data dir, reconciliation, default project) and serving.
//! - [`cli`], [`config`], [`admin`]: the command line, its settings, and its local socket.
//! - [`netns`]: sockets inside sandboxed browsers' network namespaces.
//! - [`metrics`]: the Prometheus metrics every layer counts into.
//!
//! Layering: dependencies run one way, down this list, never back up (DESIGN.md;
//! `tests/it/layering.rs` checks it):
//! `cli` → `server` → `config`/`admin`/`backup` → `api` → `cluster` → `http_server` →
//! `sessions` → `browser` → `inspect` → `cdp` → `files` → `store` →
//! `model`/`netns`/`secrets`/`metrics`/`fault`. The relay learns about its session through traits
//! it defines (`cdp::relay::Seat`, `FrameLog`) that `sessions` and `inspect` implement.

pub(crate) mod admin;
pub mod api;
pub(crate) mod backup;
pub mod browser;
pub mod cdp;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub mod doctor;
pub mod fault;
pub mod files;
pub mod http_server;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod secrets;
pub mod server;
pub(crate) mod sessions;
pub mod store;
