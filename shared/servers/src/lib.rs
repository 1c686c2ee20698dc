#![doc = include_str!("../README.md")]
//! # Layout
//! - [`postgres`]: [`PostgresServer`], throwaway for a test or kept for the local stack.
//! - [`redis`]: [`RedisServer`], the same for Redis.
//! - [`redis_cluster`]: [`RedisCluster`], six Redis nodes as one cluster (three masters, three
//!   replicas), for code that must work on a cluster and through a failover.
//! - [`nginx`]: [`NginxServer`], nginx in front of instances, routed by `infra/nginx/kurz.conf`.
//! - [`pgbouncer`]: [`PgBouncerServer`], PgBouncer in transaction mode in front of PostgreSQL.
//! - [`process`]: starting servers (as `nobody` when we are root), signals, free ports.
//! - the `kurz-servers` binary (`src/bin/kurz-servers.rs`): one kept server in the
//!   foreground until SIGTERM, for the shell scripts.

pub mod nginx;
pub mod pgbouncer;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod redis_cluster;

pub use crate::nginx::{NginxServer, Upstream};
pub use crate::pgbouncer::PgBouncerServer;
pub use crate::postgres::{PostgresServer, ShutdownMode};
pub use crate::redis::RedisServer;
pub use crate::redis_cluster::RedisCluster;
