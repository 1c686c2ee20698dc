//! The redirect service over HTTP, against real PostgreSQL and Redis.

mod behaviour;
mod clicks;
mod helpers;
mod metrics;
mod redirect;
mod resilience;
mod scan;
mod visits;
