//! Plumbing shared by every IntelliColab service.
//!
//! Nothing here knows about a particular service: configuration loading, telemetry,
//! RFC 9457 problem responses, the common HTTP middleware stack, client-IP resolution
//! behind trusted proxies, storage helpers for the SQLite/PostgreSQL backends and the
//! helpers tests use to get fresh state.

pub mod backfill;
pub mod chat_client;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod net;
pub mod ratelimit;
pub mod server;
pub mod telemetry;
pub mod testing;
pub mod text;
pub mod time;
pub mod trace;

pub use error::{ApiError, ApiResult};
