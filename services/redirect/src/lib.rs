#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the redirect service.
//! - [`resolve`]: cache-first lookup of a code (Redis, then PostgreSQL, then fill Redis).
//! - [`routes`]: `GET`/`HEAD /{code}`, `/healthz`, `/readyz`.
//! - [`scan`]: scan resistance, a budget of unknown codes per client IP, shared in Redis.
//! - [`error`]: the one place failures become HTTP responses.
//! - [`startup`]: [`Application`], built from settings and run until a shutdown signal.

pub mod error;
pub mod resolve;
pub mod routes;
pub mod scan;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
