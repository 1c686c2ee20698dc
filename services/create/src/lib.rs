#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the create service.
//! - [`validate`]: every rule a request must pass, each with its own error code.
//! - [`blocklist`]: the domains refused as targets, and the watcher that reloads their file.
//! - [`keys`]: the in-memory buffer of keys claimed from the pool in batches.
//! - [`routes`]: `POST /api/v1/links`, `GET` and `DELETE /api/v1/links/{code}`, probes.
//! - [`error`]: [`ApiError`], the one place failures become HTTP responses.
//! - [`startup`]: [`Application`], built from settings and run until a shutdown signal.

pub mod blocklist;
pub mod error;
pub mod keys;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod validate;

pub use error::ApiError;
pub use settings::Settings;
pub use startup::Application;
