//! PostgreSQL: the pool, migrations, the schema check, the breaker wiring, and the SQL of the
//! key pool. Links have their own module, [`crate::links`].
//!
//! Every statement on a pooled connection is unnamed (`query_typed` and its relatives, or the
//! simple protocol) and leaves no session state behind, so the pool works through a
//! transaction pooler such as PgBouncer in `pool_mode = transaction`: there each transaction
//! may run on another server connection, and a named prepared statement would be missing
//! there, or already taken by another client. What needs a session of its own (migrations,
//! VACUUM) opens a direct connection ([`DatabaseSettings::direct_url`]).

use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use kurz_settings::{DatabaseSettings, Pooler};
use kurz_telemetry::metrics::names;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::KeyRepository;
use crate::breaker::Breaker;
use crate::codes::generate_keys_into;
use crate::error::RepoError;
use crate::model::RefillReport;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary but fixed key of the advisory lock that serializes concurrent `migrate` runs.
const MIGRATION_LOCK_KEY: i64 = 0x6b75_727a_6d69_6772; // "kurzmigr"

/// Keys sent to PostgreSQL per insert: large enough to amortize the round trip, small enough
/// to keep the generation buffer around a megabyte.
const REFILL_CHUNK: usize = 100_000;

/// The schema version this build needs: the newest embedded migration.
pub fn required_schema_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Applies every pending migration. Safe to run from several processes at once: they queue on
/// an advisory lock, and the later ones find nothing to do.
#[tracing::instrument(
        name = "postgres migrate",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err
    )]
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), RepoError> {
    let mut client = connect_direct(settings).await?;
    // Migrations may build indexes on big tables: no request-path statement timeout here.
    client.batch_execute("SET statement_timeout = 0").await?;
    client
        .execute_typed(
            "SELECT pg_advisory_lock($1)",
            &[(&MIGRATION_LOCK_KEY, Type::INT8)],
        )
        .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .map_err(|e| RepoError::Migration(Box::new(e)));
    // The lock dies with the session anyway; unlocking just lets the next runner go sooner.
    let _ = client
        .execute_typed(
            "SELECT pg_advisory_unlock($1)",
            &[(&MIGRATION_LOCK_KEY, Type::INT8)],
        )
        .await;
    for migration in report?.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "migration applied"
        );
    }
    Ok(())
}

/// A single connection outside any pool, to PostgreSQL itself (never through a transaction
/// pooler), for migrations and tools.
pub async fn connect_direct(
    settings: &DatabaseSettings,
) -> Result<tokio_postgres::Client, RepoError> {
    connect(&direct_config(settings, "kurz-migrate")?).await
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, RepoError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}

fn direct_config(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<tokio_postgres::Config, RepoError> {
    let url = settings
        .direct_url()
        .map_err(|e| RepoError::Unavailable(Box::new(e)))?;
    pg_config(url, Pooler::None, settings, application_name)
}

fn pg_config(
    url: &SecretString,
    pooler: Pooler,
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<tokio_postgres::Config, RepoError> {
    let mut config: tokio_postgres::Config = url
        .expose_secret()
        .parse()
        .map_err(|e| RepoError::Unavailable(Box::new(e)))?;
    config
        .application_name(application_name)
        .connect_timeout(settings.connect_timeout)
        // Keepalives find connections whose peer vanished without a FIN (a dead host, a
        // dropped NAT entry), which would otherwise hang until the statement timeout.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    // A transaction pooler refuses startup options (PgBouncer: "unsupported startup
    // parameter"), and could not carry them to the server connections it shares anyway; the
    // server-side bound then comes from the role or database (see `Pooler::Transaction`).
    if pooler == Pooler::None {
        config.options(format!(
            "-c statement_timeout={}",
            settings.statement_timeout.as_millis()
        ));
    }
    Ok(config)
}

/// Attempts of an idempotent call: the first and two retries, after 10 and 20 ms (each plus
/// up to as much jitter). Enough to step over the dead pooled connections a server restart
/// leaves, and at most ~60 ms, well inside any request deadline.
const RETRY_ATTEMPTS: u32 = 3;
const RETRY_BASE_DELAY: Duration = Duration::from_millis(10);

/// Links and keys in PostgreSQL, behind a deadpool connection pool and a circuit breaker that
/// every call goes through. Clones share both.
#[derive(Clone, Debug)]
pub struct PgRepository {
    pool: Pool,
    breaker: Breaker,
    /// PostgreSQL itself, for VACUUM; `None` when the settings give no direct URL, which only
    /// the binaries that never vacuum may do (see `DatabaseSettings::direct_url`).
    direct: Option<tokio_postgres::Config>,
    pooler: Pooler,
    /// Client-side bound of one request-path call: pool wait, connect and statement timeout
    /// together. The server's statement_timeout does not fire when the delay is on the wire
    /// (a slow network, a half-dead host), so the client needs its own.
    deadline: Duration,
}

impl PgRepository {
    /// Builds the pool. No connection is opened yet: call [`Self::check_schema`] at start.
    pub fn new(settings: &DatabaseSettings, application_name: &str) -> Result<Self, RepoError> {
        let manager = Manager::from_config(
            pg_config(&settings.url, settings.pooler, settings, application_name)?,
            NoTls,
            // `Fast` only checks whether the client noticed its connection closing; a
            // connection the server killed is then found on its first query, which fails as
            // `Unavailable`, and the pool replaces it.
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            // deadpool waits forever by default; a request must never.
            .wait_timeout(Some(settings.pool_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| RepoError::Unavailable(Box::new(e)))?;
        Ok(Self {
            pool,
            breaker: Breaker::new("postgres", &settings.breaker),
            direct: direct_config(settings, application_name).ok(),
            pooler: settings.pooler,
            deadline: settings.pool_timeout + settings.connect_timeout + settings.statement_timeout,
        })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// A pooled connection; the wait is measured (a wait timeout is counted where pool errors
    /// are classified, `RepoError::from`).
    pub(crate) async fn connection(&self) -> Result<deadpool_postgres::Object, RepoError> {
        let started = Instant::now();
        let connection = self.pool.get().await;
        metrics::histogram!(names::DB_POOL_WAIT).record(started.elapsed());
        Ok(connection?)
    }

    /// Samples the gauges that are read rather than counted: pool use and breaker state.
    /// Called when metrics are scraped.
    pub fn record_gauges(&self) {
        let status = self.pool.status();
        let in_use = status.size.saturating_sub(status.available);
        metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set(in_use as f64);
        metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(status.available as f64);
        metrics::gauge!(names::DB_POOL_MAX).set(status.max_size as f64);
        metrics::gauge!(names::DB_POOL_WAITING).set(status.waiting as f64);
        self.breaker.record_state();
    }

    /// PostgreSQL's own estimate of the key pool's size (live rows, kept by its statistics
    /// collector): no scan, good enough for a gauge; refills decide on an exact count.
    pub async fn pool_depth_estimate(&self) -> Result<u64, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            let n: i64 = client
                .query_typed_one(
                    "SELECT coalesce(n_live_tup, 0) FROM pg_stat_user_tables \
                     WHERE relname = 'key_pool'",
                    &[],
                )
                .await?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// One request-path call: through the breaker, within the deadline.
    pub(crate) async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, RepoError>>,
    ) -> Result<T, RepoError> {
        self.breaker
            .call(async {
                tokio::time::timeout(self.deadline, call)
                    .await
                    .map_err(|_| {
                        metrics::counter!(names::DB_TIMEOUTS, "kind" => "deadline").increment(1);
                        RepoError::Timeout(format!("no answer within {:?}", self.deadline).into())
                    })?
            })
            .await
    }

    /// A call that is safe to repeat: through the breaker and within the deadline, retried with exponential backoff
    /// and jitter when the connection broke, never when the breaker refused or time ran out.
    pub(crate) async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, RepoError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RepoError>>,
    {
        let mut delay = RETRY_BASE_DELAY;
        let mut attempt = 1;
        loop {
            match self.guarded(call()).await {
                Err(e) if e.is_retryable() && attempt < RETRY_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "retrying an idempotent PostgreSQL call");
                    let jitter = rand::random_range(0..=delay.as_micros() as u64);
                    tokio::time::sleep(delay + Duration::from_micros(jitter)).await;
                    delay *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Fails with [`RepoError::SchemaOutdated`] if the database is behind this build. A newer
    /// schema is accepted: migrations are written to be compatible with the previous release,
    /// so a rolling deploy can migrate first.
    #[tracing::instrument(
        name = "postgres check_schema",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err
    )]
    pub async fn check_schema(&self) -> Result<(), RepoError> {
        let found = self.idempotent(|| self.schema_version()).await?;
        let needed = required_schema_version();
        if found < needed {
            return Err(RepoError::SchemaOutdated { found, needed });
        }
        if self.pooler == Pooler::Transaction {
            self.warn_if_unbounded().await?;
        }
        Ok(())
    }

    /// Behind a transaction pooler the server-side statement timeout is the role's or the
    /// database's (Kurz cannot send its own): say so at start when there is none, since the
    /// client-side deadline then is the only bound and a runaway statement holds a server
    /// connection of the pooler until it ends.
    async fn warn_if_unbounded(&self) -> Result<(), RepoError> {
        let timeout: String = self
            .idempotent(|| async {
                let client = self.connection().await?;
                let row = client
                    .query_typed_one("SELECT current_setting('statement_timeout')", &[])
                    .await?;
                Ok(row.get(0))
            })
            .await?;
        if timeout == "0" {
            tracing::warn!(
                "no statement_timeout on PostgreSQL behind the transaction pooler; set one for \
                 Kurz's role (ALTER ROLE ... SET statement_timeout = '5s') or in the pooler \
                 (PgBouncer: connect_query)"
            );
        } else {
            tracing::info!(statement_timeout = %timeout, "behind a transaction pooler");
        }
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, RepoError> {
        let client = self.connection().await?;
        let history_exists: bool = client
            .query_typed_one(
                "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let found: i64 = if history_exists {
            client
                .query_typed_one(
                    "SELECT COALESCE(MAX(version), 0)::int8 FROM refinery_schema_history",
                    &[],
                )
                .await?
                .get(0)
        } else {
            0
        };
        Ok(found)
    }

    /// Removes dead rows left by claims, so claims keep reading a clean head of the index.
    #[tracing::instrument(
        name = "postgres vacuum_key_pool",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err
    )]
    pub async fn vacuum_key_pool(&self) -> Result<(), RepoError> {
        self.breaker.call(self.vacuum()).await
    }

    async fn vacuum(&self) -> Result<(), RepoError> {
        // VACUUM cannot run in a transaction, so SET LOCAL is not available and the longer
        // bound is session state: a connection of its own, to PostgreSQL itself, gone after.
        // Behind a transaction pooler a pooled session's SET would stay on a server
        // connection that other clients then share.
        let config = self.direct.as_ref().ok_or_else(|| {
            RepoError::Unavailable("VACUUM needs KURZ_DATABASE_DIRECT_URL behind a pooler".into())
        })?;
        let client = connect(config).await?;
        client
            .batch_execute("SET statement_timeout = '300s'")
            .await?;
        client.batch_execute("VACUUM (ANALYZE) key_pool").await?;
        Ok(())
    }

    /// Adds freshly generated random keys; each chunk is newline-separated keys. One
    /// transaction: all new keys or none.
    ///
    /// Each chunk is inserted as is (one array parameter, `unnest`ed), the fast path, and
    /// only a chunk that collides with a pooled key, or repeats one of its own, is rolled back
    /// to its savepoint and inserted again skipping duplicates and issued codes (`ON
    /// CONFLICT` on every row costs a speculative insertion each, about half the speed).
    ///
    /// The fast path does not look for keys already issued: with random keys that is as rare
    /// as any other collision, and a claim drops a pooled key that is already issued (its
    /// `issued_codes` insert does nothing), so such a key is never handed out; it only sits in
    /// the pool until a claim discards it.
    ///
    /// Not `COPY`: tokio-postgres sends a `COPY` as a named prepared statement, and every
    /// statement here is unnamed (see the module documentation).
    pub async fn add_fresh_keys(
        &self,
        chunks: impl Iterator<Item = String> + Send,
    ) -> Result<RefillReport, RepoError> {
        // Not retried: the chunks are consumed by the first attempt. The worker's loop retries
        // the whole step.
        self.breaker.call(self.insert_keys(chunks)).await
    }

    async fn insert_keys(
        &self,
        chunks: impl Iterator<Item = String> + Send,
    ) -> Result<RefillReport, RepoError> {
        let started = Instant::now();
        let mut client = self.connection().await?;
        let mut tx = client.transaction().await?;
        tx.batch_execute(REFILL_TIMEOUT).await?;
        let (mut generated, mut inserted) = (0, 0);
        for chunk in chunks {
            let keys: Vec<&str> = chunk.lines().collect();
            generated += keys.len() as u64;
            let param = [(&keys as &(dyn ToSql + Sync), Type::TEXT_ARRAY)];
            let savepoint = tx.savepoint("chunk").await?;
            match savepoint.execute_typed(REFILL_INSERT, &param).await {
                Ok(n) => {
                    savepoint.commit().await?;
                    inserted += n;
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    savepoint.rollback().await?;
                    inserted += tx.execute_typed(REFILL_INSERT_SKIPPING, &param).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(RefillReport {
            generated,
            inserted,
            elapsed: started.elapsed(),
        })
    }
}

const POOL_DEPTH: &str = "SELECT count(*) FROM (SELECT 1 FROM key_pool LIMIT $1) AS head";

// Claims a batch in one round trip:
// - FOR UPDATE SKIP LOCKED lets any number of instances claim at once without waiting on, or
//   double-claiming, each other's rows; = ANY(ARRAY(..)) pins the LIMIT to the locked subset;
// - the claimed keys move to issued_codes in the same statement, so once this commits they
//   are never handed out again, whatever happens to the claimer. ON CONFLICT DO NOTHING drops
//   a key that an alias reserved meanwhile: only keys whose insert succeeded come back.
const CLAIM_KEYS: &str = "\
    WITH claimed AS ( \
        DELETE FROM key_pool \
        WHERE id = ANY(ARRAY( \
            SELECT id FROM key_pool ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED \
        )) \
        RETURNING code \
    ) \
    INSERT INTO issued_codes (code) SELECT code FROM claimed \
    ON CONFLICT (code) DO NOTHING \
    RETURNING code";

// Un-issues keys a stopping instance never used and pools them again. The NOT EXISTS is a
// guard, not the mechanism: the caller only returns keys no request took.
const RETURN_KEYS: &str = "\
    WITH returned AS ( \
        DELETE FROM issued_codes i \
        WHERE i.code = ANY($1) AND NOT EXISTS (SELECT 1 FROM links l WHERE l.code = i.code) \
        RETURNING code \
    ) \
    INSERT INTO key_pool (code) SELECT code FROM returned \
    ON CONFLICT (code) DO NOTHING";

// A bulk refill is background work that legitimately runs longer than any request may, so it
// gets its own bound instead of the request-path statement_timeout. SET LOCAL ends with the
// transaction, so it is no session state.
const REFILL_TIMEOUT: &str = "SET LOCAL statement_timeout = '300s'";
// The fast path of a refill: random keys rarely collide, so most chunks go in as they are.
const REFILL_INSERT: &str = "INSERT INTO key_pool (code) SELECT unnest($1::text[])";
// A chunk that collided: skip codes already issued (NOT EXISTS), and codes already pooled or
// repeated within the chunk (ON CONFLICT).
const REFILL_INSERT_SKIPPING: &str = "\
    INSERT INTO key_pool (code) \
    SELECT c.code FROM unnest($1::text[]) AS c (code) \
    WHERE NOT EXISTS (SELECT 1 FROM issued_codes i WHERE i.code = c.code) \
    ON CONFLICT (code) DO NOTHING";

impl KeyRepository for PgRepository {
    #[tracing::instrument(
        name = "postgres claim_keys",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", count),
        err(level = "warn")
    )]
    async fn claim_keys(&self, count: usize) -> Result<Vec<String>, RepoError> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        // Safe to repeat: a claim whose answer was lost only strands its keys, which are
        // issued and so never handed out again.
        self.idempotent(|| async {
            let client = self.connection().await?;
            let rows = client
                .query_typed(CLAIM_KEYS, &[(&limit, Type::INT8)])
                .await?;
            let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            metrics::counter!(names::KEYS_CLAIMED).increment(keys.len() as u64);
            Ok(keys)
        })
        .await
    }

    async fn return_keys(&self, keys: &[String]) -> Result<u64, RepoError> {
        self.guarded(async {
            let client = self.connection().await?;
            Ok(client
                .execute_typed(RETURN_KEYS, &[(&keys, Type::TEXT_ARRAY)])
                .await?)
        })
        .await
    }

    async fn pool_depth(&self, cap: u64) -> Result<u64, RepoError> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.idempotent(|| async {
            let client = self.connection().await?;
            let n: i64 = client
                .query_typed_one(POOL_DEPTH, &[(&cap, Type::INT8)])
                .await?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres refill",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", count, length),
        err
    )]
    async fn refill(&self, count: u64, length: usize) -> Result<RefillReport, RepoError> {
        let mut remaining = count;
        let chunks = std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            let n = remaining.min(REFILL_CHUNK as u64);
            remaining -= n;
            // Generation is CPU work between awaits; a chunk takes milliseconds, short
            // enough not to starve other tasks on the runtime.
            let mut chunk = String::new();
            generate_keys_into(&mut chunk, n as usize, length);
            Some(chunk)
        });
        self.add_fresh_keys(chunks).await
    }
}
