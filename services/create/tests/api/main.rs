//! The create API over HTTP, end to end with the redirect service and the key-pool worker,
//! against real PostgreSQL and Redis.

mod auth;
mod bulk;
mod concurrency;
mod durability;
mod edit;
mod fastpath;
mod group_commit;
mod helpers;
mod idempotency;
mod import;
mod keys;
mod links;
mod listing;
mod metrics;
mod nginx;
mod openapi;
mod page;
mod qr;
mod ratelimit;
mod resilience;
mod stats;
mod validation;
