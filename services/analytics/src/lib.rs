#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the worker.
//! - [`streams`]: the Redis side: the consumer group, reads, claims, acknowledgements.
//! - [`classify`]: bot or human, browser, OS, device, referrer host and country of a click.
//! - [`worker`]: [`Worker::process_once`], the one step tests call, and the loop around it.
//! - [`startup`]: [`Application`], the worker with its metrics endpoint, as `run` starts it.
//! - The SQL, and what makes an entry count once, are in `kurz_repository::analytics`.

pub mod classify;
pub mod settings;
pub mod startup;
pub mod streams;
pub mod worker;

pub use settings::Settings;
pub use startup::Application;
pub use worker::{Outcome, StepError, Worker};
