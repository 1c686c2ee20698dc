#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the worker.
//! - [`admin`]: the operator's `accounts` and `api-keys` commands.
//! - [`worker`]: [`Worker::refill_once`], the one step tests call, and the loop around it.
//! - [`schema`]: [`schema::wait_for_schema`], what an init container runs before a service
//!   starts (`wait-for-schema`).
//! - [`startup`]: [`Application`], the worker with its metrics endpoint, as `run` starts it.

pub mod admin;
pub mod schema;
pub mod settings;
pub mod startup;
pub mod worker;

pub use settings::Settings;
pub use startup::Application;
pub use worker::{RefillOutcome, Worker};
