//! browserd's integration tests: one test binary (one link of the crate, not one per file),
//! a module per area. Tests that start real Chromium are grouped in `.config/nextest.toml`
//! by module name, so they run at most two at a time.

mod common;

mod api;
mod attacks;
mod binary;
mod chaos;
mod chromium_lifecycle;
mod chromium_pool;
mod cluster;
mod egress;
mod files_api;
mod hostile;
mod layering;
mod logs;
mod metrics;
mod observability_files;
mod postgres_tls;
mod traffic;
mod validation;
