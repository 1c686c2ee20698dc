#![doc = include_str!("../README.md")]
//! # Layout
//! - [`settings`]: `KURZ_*` variables of the worker.
//! - [`worker`]: [`Worker::refill_once`], the one step tests call, and the loop around it.

pub mod settings;
pub mod worker;

pub use settings::Settings;
pub use worker::{RefillOutcome, Worker};
