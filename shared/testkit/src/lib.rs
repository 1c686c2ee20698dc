#![doc = include_str!("../README.md")]
//! # Layout
//! - [`app`]: [`RunningApp`], a service running in-process on port 0, stopped when dropped.
//! - [`browser`]: [`Browser`], a headless Chromium driven over WebDriver, kept off the network.
//! - [`postgres`], [`redis`], [`process`]: the throwaway servers, from `kurz-servers` (the one
//!   implementation of starting them, shared with the local stack and the benches).
//! - [`service`]: [`ServiceProcess`], a service as its own process (the real binary), to
//!   kill with SIGKILL and restart.
//! - [`proxy`]: [`FaultProxy`], a TCP proxy that resets, blackholes or delays connections.
//! - [`otlp`]: [`OtlpSink`], an in-process OTLP/gRPC receiver that keeps exported spans.
//! - [`metrics`]: reading a Prometheus exposition in assertions.
//! - [`geoip`]: [`CountryDb`], a small MaxMind DB (mmdb) country database written for a test.
//! - [`TestEnv`]: both servers plus a per-test database copied from a migrated template, and
//!   the `KURZ_*` variables that point a service at them, through a PgBouncer in transaction
//!   mode unless a test asks for PostgreSQL itself.

pub mod app;
pub mod browser;
pub mod geoip;
pub mod metrics;
pub mod otlp;
pub mod proxy;
pub mod service;

// The servers themselves are kurz-servers', which the local stack and the benches use too.
pub use kurz_servers::{nginx, postgres, process, redis};

use std::sync::Once;

use kurz_settings::Source;

pub use crate::app::{RunningApp, Shutdown};
pub use crate::browser::Browser;
pub use crate::geoip::CountryDb;
pub use crate::otlp::{ExportedSpan, OtlpSink};
pub use crate::postgres::{PostgresServer, ShutdownMode};
pub use crate::proxy::{Fault, FaultProxy};
pub use crate::redis::RedisServer;
pub use crate::service::ServiceProcess;
pub use kurz_servers::{NginxServer, PgBouncerServer, RedisCluster, Upstream};

/// Name of the migrated template every test database is copied from.
pub const TEMPLATE_DATABASE: &str = "kurz_template";

/// Real PostgreSQL and Redis servers for one test, on free loopback ports, gone when dropped.
///
/// The services under test reach PostgreSQL through a real PgBouncer in transaction mode
/// (`pool_mode = transaction`, Debian 12's 1.18, which has no prepared statements in that
/// mode), as in a deployment behind one: so every suite proves that Kurz keeps no session
/// state and sends no named statement. When the env is dropped at the end of a passing test,
/// PostgreSQL's statement log is checked for named statements from any Kurz application
/// ([`PostgresServer::named_statements`]), direct connections included. Tests of faults
/// between a service and PostgreSQL itself point the service at a [`FaultProxy`] in front of
/// PostgreSQL's port instead ([`Self::database_url_via`]).
#[derive(Debug)]
pub struct TestEnv {
    pub postgres: PostgresServer,
    pub redis: RedisServer,
    pub pgbouncer: PgBouncerServer,
    /// A six-node Redis Cluster the services use instead of `redis`, when started with
    /// [`Self::start_with_cluster`].
    pub cluster: Option<RedisCluster>,
    database: String,
}

impl TestEnv {
    /// Starts PostgreSQL, PgBouncer in front of it and Redis, migrates the template database
    /// and gives this test its own copy.
    pub async fn start() -> Self {
        Self::start_inner(false).await
    }

    /// As [`Self::start`], with the services on a real six-node Redis Cluster (three masters,
    /// three replicas) instead of one Redis server: [`Self::source`] sets
    /// `KURZ_REDIS_CLUSTER_NODES`. It takes about two seconds more (a new master waits that
    /// long before it serves), so a test binary shares one between its scenarios where it can.
    pub async fn start_with_cluster() -> Self {
        Self::start_inner(true).await
    }

    async fn start_inner(with_cluster: bool) -> Self {
        init_tracing();
        let cluster = async {
            if with_cluster {
                Some(RedisCluster::start().await)
            } else {
                None
            }
        };
        let (postgres, redis, cluster) =
            tokio::join!(PostgresServer::start(), RedisServer::start(), cluster);
        let (pgbouncer, ()) = tokio::join!(
            PgBouncerServer::start(postgres.port()),
            create_migrated_template(&postgres, TEMPLATE_DATABASE)
        );
        let database = format!(
            "test_{}",
            kurz_repository::codes::generate_key(12).to_lowercase()
        );
        create_database_from(&postgres, &database, TEMPLATE_DATABASE).await;
        Self {
            postgres,
            redis,
            pgbouncer,
            cluster,
            database,
        }
    }

    /// This test's database as the services reach it: through PgBouncer.
    pub fn database_url(&self) -> String {
        self.pgbouncer.url(&self.database)
    }

    /// This test's database on PostgreSQL itself.
    pub fn direct_database_url(&self) -> String {
        self.postgres.url(&self.database)
    }

    /// The `KURZ_DATABASE_*` variables that point a service at this test's database:
    /// through PgBouncer, and the direct URL that migrations and VACUUM need.
    pub fn database_vars(&self) -> [(&'static str, String); 3] {
        [
            ("KURZ_DATABASE_URL", self.database_url()),
            ("KURZ_DATABASE_POOLER", "transaction".to_owned()),
            ("KURZ_DATABASE_DIRECT_URL", self.direct_database_url()),
        ]
    }

    pub fn redis_url(&self) -> String {
        self.redis.url()
    }

    /// A proxy in front of PostgreSQL, for injecting faults between a service and it.
    pub async fn postgres_proxy(&self) -> FaultProxy {
        FaultProxy::start(([127, 0, 0, 1], self.postgres.port()).into()).await
    }

    /// A proxy in front of Redis.
    pub async fn redis_proxy(&self) -> FaultProxy {
        FaultProxy::start(([127, 0, 0, 1], self.redis.port()).into()).await
    }

    /// This test's database, reached through `proxy`.
    pub fn database_url_via(&self, proxy: &FaultProxy) -> String {
        format!(
            "postgres://kurz@127.0.0.1:{}/{}",
            proxy.port(),
            self.database
        )
    }

    /// Redis, reached through `proxy`.
    pub fn redis_url_via(&self, proxy: &FaultProxy) -> String {
        format!("redis://127.0.0.1:{}", proxy.port())
    }

    /// `KURZ_*` variables for a service under test: this env's servers, a free port, a
    /// roomy Redis budget and request-head timeout. Tests add or override with [`Source::with`].
    pub fn source(&self) -> Source {
        let redis = match &self.cluster {
            Some(cluster) => ("KURZ_REDIS_CLUSTER_NODES", cluster.nodes_setting()),
            None => ("KURZ_REDIS_URL", self.redis_url()),
        };
        Source::from_vars(self.database_vars().into_iter().chain([
            redis,
            ("KURZ_LISTEN", "127.0.0.1:0".to_owned()),
            ("KURZ_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("KURZ_PUBLIC_BASE_URL", "http://kurz.test".to_owned()),
            // Debug builds on a loaded two-core machine can miss the 50 ms production budget;
            // a missed cache write would make cache assertions flaky, not prove anything.
            ("KURZ_REDIS_COMMAND_TIMEOUT_MS", "500".to_owned()),
            // Likewise, a starved worker can first look at a new connection after actix's 5 s
            // head timer fired, and answer 408 to a request that arrived in time.
            ("KURZ_CLIENT_REQUEST_TIMEOUT_MS", "60000".to_owned()),
        ]))
    }

    /// Kurz's own repository on this test's database, for arranging links as the services
    /// store them.
    pub fn repository(&self) -> kurz_repository::PgRepository {
        let source = Source::from_vars(self.database_vars());
        let settings = kurz_settings::DatabaseSettings::from_source(&source)
            .expect("the test database settings are valid");
        kurz_repository::PgRepository::new(&settings, "kurz-test").expect("a pool")
    }

    /// A direct client on this test's database, for arranging and asserting.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.postgres.client(&self.database).await
    }

    /// The first column of the first row of `sql`, a bigint (`SELECT count(*) ...`), for
    /// asserting on what the services stored.
    pub async fn count(&self, sql: &str) -> i64 {
        self.sql()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// A client of this env's Redis Cluster (it follows the cluster's redirections), for
    /// arranging and asserting. Panics unless started with [`Self::start_with_cluster`].
    pub async fn cluster_conn(&self) -> deadpool_redis::redis::cluster_async::ClusterConnection {
        let cluster = self
            .cluster
            .as_ref()
            .expect("an env started with a cluster");
        deadpool_redis::redis::cluster::ClusterClient::new(cluster.urls())
            .expect("a cluster client")
            .get_async_connection()
            .await
            .expect("a connection to the cluster")
    }

    /// A direct Redis connection, for arranging and asserting.
    pub async fn redis_conn(&self) -> deadpool_redis::redis::aio::MultiplexedConnection {
        self.redis.connection().await
    }
}

impl Drop for TestEnv {
    /// The check of every passing test: no Kurz application sent a named statement.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let named = self.postgres.named_statements();
        assert!(
            named.is_empty(),
            "Kurz sent named prepared statements, which a transaction pooler cannot carry \
             (use query_typed and its relatives):\n{}",
            named.join("\n")
        );
    }
}

/// Creates `name` on `postgres` and applies every migration to it.
pub async fn create_migrated_template(postgres: &PostgresServer, name: &str) {
    let admin = postgres.client("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating the template database");
    let source = Source::from_vars([("KURZ_DATABASE_URL", postgres.url(name))]);
    let settings = kurz_settings::DatabaseSettings::from_source(&source).expect("valid settings");
    kurz_repository::postgres::migrate(&settings)
        .await
        .expect("migrating the template database");
}

/// Creates `name` on `postgres` as a copy of `template`.
pub async fn create_database_from(postgres: &PostgresServer, name: &str, template: &str) {
    let admin = postgres.client("postgres").await;
    let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
    // The migration's connection to the template may take a moment to close, and a template
    // with sessions cannot be copied.
    for attempt in 0.. {
        match admin.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e) if attempt < 50 => {
                tracing::debug!(error = %e, "template busy, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("creating {name} from {template}: {e}"),
        }
    }
}

/// An API key made for a test, with its account.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub account_id: i64,
    pub key_id: i64,
    /// The key itself, as a client sends it.
    pub key: String,
}

impl TestEnv {
    /// A key holding `scopes` for the account `account` (made if missing), as the operator
    /// tool makes them. `rate_limit` overrides the per-minute limit (tests that create many
    /// links pass a high one).
    pub async fn api_key(
        &self,
        account: &str,
        scopes: &[kurz_repository::Scope],
        rate_limit: Option<u32>,
    ) -> TestKey {
        let repo = self.repository();
        let account = match repo.account_by_name(account).await.expect("account lookup") {
            Some(found) => found,
            None => repo.create_account(account).await.expect("create account"),
        };
        let new = kurz_repository::NewApiKey {
            account_id: account.id,
            name: "test",
            scopes,
            expires_at: None,
            rate_limit_per_minute: rate_limit,
        };
        let (key, minted) = repo
            .create_api_key(&new)
            .await
            .expect("create key")
            .expect("the account exists");
        TestKey {
            account_id: account.id,
            key_id: key.id,
            key: minted.expose().to_owned(),
        }
    }
}

/// An HTTP client that does not follow redirects (tests assert on the 3xx itself).
pub fn http_client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("building the test HTTP client")
}

/// Like [`http_client`], sending `key` as `Authorization: Bearer` on every request.
pub fn http_client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        .expect("a key is a valid header value");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    client_builder()
        .default_headers(headers)
        .build()
        .expect("building the test HTTP client")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
}

/// Polls `check` every 20 ms until it holds, for at most 10 s: for effects that land a moment
/// after the action (a reconnect, pub/sub delivery, a background write). Not a timing
/// assertion: the bound only keeps a broken test from hanging.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// Polls `check` every 20 ms and fails the test unless it holds within `bound`: for the
/// propagation bounds Kurz promises ("every instance follows within a second"). The bound is
/// what is asserted, never how fast it went.
pub async fn within<F, Fut>(bound: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + bound;
    loop {
        if check().await {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("not within {bound:?}: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Logs from the code under test, shown when `TEST_LOG` is set (`TEST_LOG=debug`).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
