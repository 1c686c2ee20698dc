#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the redirect service.
//! - [`resolve`]: cache-first lookup of a code (Redis, then PostgreSQL, then fill Redis).
//! - [`routes`]: `GET`/`HEAD /{code}`, `/healthz`, `/readyz`.
//! - [`behaviour`]: per-link behaviour as the redirect uses it, and `Cache-Control` by status.
//! - [`query`]: `forward_query`, the request's query merged into the target's.
//! - [`visits`]: visit limits: which requests use up a visit, and asking PostgreSQL.
//! - [`pages`]: the 404, 410, 414 and 429 answers, HTML for browsers and text otherwise.
//! - [`clicks`]: click capture: a bounded queue filled by the handler, shipped in batches to
//!   the Redis click streams by a background task.
//! - [`scan`]: scan resistance, a budget of unknown codes per client IP, shared in Redis.
//! - [`error`]: the one place failures become HTTP responses.
//! - [`startup`]: [`Application`], built from settings and run until a shutdown signal.

pub mod behaviour;
pub mod clicks;
pub mod error;
pub mod pages;
pub mod query;
pub mod resolve;
pub mod routes;
pub mod scan;
pub mod settings;
pub mod startup;
pub mod visits;

pub use settings::Settings;
pub use startup::Application;
