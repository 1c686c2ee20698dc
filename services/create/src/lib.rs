#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the create service.
//! - [`validate`]: every rule a request must pass, each with its own error code.
//! - [`request`]: the create body, and how it becomes a link to store.
//! - [`blocklist`]: the domains refused as targets, and the watcher that reloads their file.
//! - [`keys`]: the in-memory buffer of keys claimed from the pool in batches.
//! - [`auth`]: API keys in request headers, the verified-key cache, scopes as extractors.
//! - [`guard`]: the middleware in front of `/api`: client IP, credentials, rate limits.
//! - [`routes`]: `POST /api/v1/links`, `GET` and `DELETE /api/v1/links/{code}`, disabling
//!   links, probes.
//! - [`bulk`]: `POST /api/v1/links/bulk`, many links in one call and one transaction.
//! - [`import`]: `kurz-create import`, links from a CSV file, resumable.
//! - [`manage`]: editing links (`PATCH /api/v1/links/{code}`), listing and counting them.
//! - [`stats`]: click analytics, `GET /api/v1/links/{code}/stats` and `GET /api/v1/stats`,
//!   with the time-zone bucket arithmetic.
//! - [`qr`]: `GET /api/v1/links/{code}/qr`, a link's QR code as SVG or PNG, with an `ETag`.
//! - [`admin`]: accounts and API keys (`/api/v1/accounts`, `/api/v1/keys`).
//! - [`openapi`]: the OpenAPI document generated from the handlers' annotations, served at
//!   `/api/v1/openapi.json` and `/docs`, and the 404/405 of requests no route takes.
//! - [`web`]: the web page at `/` and its assets under `/assets/`, embedded in the binary.
//! - [`error`]: [`ApiError`], the one place failures become HTTP responses.
//! - [`startup`]: [`Application`], built from settings and run until a shutdown signal.

pub mod admin;
pub mod auth;
pub mod blocklist;
pub mod bulk;
pub mod error;
pub mod guard;
pub mod import;
pub mod keys;
pub mod manage;
pub mod openapi;
pub mod qr;
pub mod request;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod stats;
pub mod validate;
pub mod web;

pub use error::ApiError;
pub use settings::Settings;
pub use startup::Application;
