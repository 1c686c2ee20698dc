//! The redirect service over HTTP, against real PostgreSQL and Redis.

mod helpers;
mod metrics;
mod redirect;
mod resilience;
mod scan;
