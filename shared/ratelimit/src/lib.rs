#![doc = include_str!("../README.md")]
//! # Layout
//! - [`quota`]: [`Limit`] (which limit: metric label, header policy, Redis key), [`Quota`]
//!   (requests per period, with a burst) and [`Budget`] (events per window).
//! - [`store`]: [`Store`], the shared Redis connection and call budget, and the outage
//!   state that sends decisions in-process while Redis is down or slow.
//! - [`gcra`]: [`Limiter`], request rate limits as one GCRA script call; [`Decision`].
//! - [`window`]: [`WindowCounter`], failure budgets that block a subject until its window
//!   ends; [`Verdict`].
//! - [`headers`]: `RateLimit-Policy`, `RateLimit`, `X-RateLimit-*` and `Retry-After`.
//! - `local`: the in-process fallbacks (governor limiters, window counts) and the block
//!   list, each bounded in memory.
//! - `counts`: the decision counters, registered once per limiter.

mod counts;
pub mod gcra;
pub mod headers;
mod local;
pub mod quota;
pub mod store;
pub mod window;

pub use gcra::{Decision, Limiter};
pub use quota::{Budget, Limit, Quota};
pub use store::Store;
pub use window::{Verdict, WindowCounter};
