//! PostgreSQL: the pool, migrations, the schema check, and the SQL of links and keys.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::SinkExt;
use kurz_settings::DatabaseSettings;
use kurz_telemetry::metrics::names;
use secrecy::ExposeSecret;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Row};

use crate::breaker::Breaker;
use crate::codes::generate_keys_into;
use crate::error::RepoError;
use crate::model::{CodeSource, IdempotentCreate, Link, NewLink, Owner, RefillReport};
use crate::{KeyRepository, LinkRepository};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary but fixed key of the advisory lock that serializes concurrent `migrate` runs.
const MIGRATION_LOCK_KEY: i64 = 0x6b75_727a_6d69_6772; // "kurzmigr"

/// Keys sent to PostgreSQL per COPY chunk: large enough to amortize the round trip, small enough
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
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await
        .map_err(|e| RepoError::Migration(Box::new(e)));
    // The lock dies with the session anyway; unlocking just lets the next runner go sooner.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
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

/// A single connection outside any pool, for migrations and tools.
pub async fn connect_direct(
    settings: &DatabaseSettings,
) -> Result<tokio_postgres::Client, RepoError> {
    let (client, connection) = pg_config(settings, "kurz-migrate")?.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}

fn pg_config(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<tokio_postgres::Config, RepoError> {
    let mut config: tokio_postgres::Config = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|e| RepoError::Unavailable(Box::new(e)))?;
    config
        .application_name(application_name)
        .connect_timeout(settings.connect_timeout)
        // Keepalives find connections whose peer vanished without a FIN (a dead host, a
        // dropped NAT entry), which would otherwise hang until the statement timeout.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .options(format!(
            "-c statement_timeout={}",
            settings.statement_timeout.as_millis()
        ));
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
    /// Client-side bound of one request-path call: pool wait, connect and statement timeout
    /// together. The server's statement_timeout does not fire when the delay is on the wire
    /// (a slow network, a half-dead host), so the client needs its own.
    deadline: Duration,
}

impl PgRepository {
    /// Builds the pool. No connection is opened yet: call [`Self::check_schema`] at start.
    pub fn new(settings: &DatabaseSettings, application_name: &str) -> Result<Self, RepoError> {
        let manager = Manager::from_config(
            pg_config(settings, application_name)?,
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
                .query_one(
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
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, RepoError> {
        let client = self.connection().await?;
        let history_exists: bool = client
            .query_one(
                "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let found: i64 = if history_exists {
            client
                .query_one(
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
        let client = self.connection().await?;
        // VACUUM cannot run in a transaction, so SET LOCAL is not available: raise the
        // request-path bound for this session and put it back before the connection returns
        // to the pool.
        client
            .batch_execute("SET statement_timeout = '300s'")
            .await?;
        let vacuumed = client.batch_execute("VACUUM (ANALYZE) key_pool").await;
        client.batch_execute("RESET statement_timeout").await?;
        vacuumed?;
        Ok(())
    }

    /// Inserts links under pool keys in one statement; all or none. Not retried, like every
    /// insert.
    #[tracing::instrument(
        name = "postgres insert_many",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", rows = rows.len())
    )]
    pub async fn insert_many(&self, rows: &[(&str, &NewLink)]) -> Result<Vec<Link>, RepoError> {
        let codes: Vec<&str> = rows.iter().map(|(code, _)| *code).collect();
        let urls: Vec<&str> = rows.iter().map(|(_, l)| l.target_url.as_str()).collect();
        let expiries: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, l)| l.expires_at).collect();
        let owners: Vec<Option<i64>> = rows.iter().map(|(_, l)| l.owner_id).collect();
        self.guarded(async {
            let client = self.connection().await?;
            let stmt = client.prepare_cached(INSERT_MANY).await?;
            let rows = client
                .query(&stmt, &[&codes, &urls, &expiries, &owners])
                .await?;
            Ok(rows.iter().map(link_from_row).collect())
        })
        .await
    }

    /// Deletes idempotency keys older than `age`; returns how many.
    pub async fn delete_idempotency_keys_older_than(
        &self,
        age: Duration,
    ) -> Result<u64, RepoError> {
        let secs = age.as_secs_f64();
        self.idempotent(|| async {
            let client = self.connection().await?;
            Ok(client
                .execute(DELETE_OLD_IDEMPOTENCY_KEYS, &[&secs])
                .await?)
        })
        .await
    }

    /// Adds candidate keys to the pool, skipping those already pooled or issued; each chunk is
    /// newline-separated keys (COPY text format). One transaction: all new keys or none.
    /// Every key goes through a staging table; see [`PgRepository::add_fresh_keys`] for the
    /// fast path random keys take.
    pub async fn add_candidates(
        &self,
        chunks: impl Iterator<Item = String> + Send,
    ) -> Result<RefillReport, RepoError> {
        // Not retried: the chunks are consumed by the first attempt. The worker's loop retries
        // the whole step.
        self.breaker
            .call(self.copy_keys(chunks, CopyPath::Staged))
            .await
    }

    /// Adds freshly generated random keys: each chunk is copied straight into `key_pool`
    /// (as fast as a raw `COPY`), and only a chunk that collides with a pooled key, or repeats
    /// one of its own, is rolled back to its savepoint and goes through the staging table.
    ///
    /// Unlike [`PgRepository::add_candidates`] this does not look for keys already issued:
    /// with random keys that is as rare as any other collision, and a claim drops a pooled
    /// key that is already issued (its `issued_codes` insert does nothing), so such a key is
    /// never handed out; it only sits in the pool until a claim discards it.
    pub async fn add_fresh_keys(
        &self,
        chunks: impl Iterator<Item = String> + Send,
    ) -> Result<RefillReport, RepoError> {
        self.breaker
            .call(self.copy_keys(chunks, CopyPath::Direct))
            .await
    }

    async fn copy_keys(
        &self,
        chunks: impl Iterator<Item = String> + Send,
        path: CopyPath,
    ) -> Result<RefillReport, RepoError> {
        let started = Instant::now();
        let mut client = self.connection().await?;
        let mut tx = client.transaction().await?;
        tx.batch_execute(REFILL_TIMEOUT).await?;
        let (mut generated, mut inserted) = (0, 0);
        let mut staged: Vec<Bytes> = Vec::new();
        for chunk in chunks {
            let keys = chunk.bytes().filter(|&b| b == b'\n').count() as u64;
            generated += keys;
            let chunk = Bytes::from(chunk);
            if path == CopyPath::Staged {
                staged.push(chunk);
                continue;
            }
            let savepoint = tx.savepoint("chunk").await?;
            match copy_in(&savepoint, REFILL_COPY_DIRECT, [chunk.clone()]).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    inserted += keys;
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    savepoint.rollback().await?;
                    staged.push(chunk);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !staged.is_empty() {
            tx.batch_execute(REFILL_STAGE).await?;
            copy_in(&tx, REFILL_COPY_STAGED, staged).await?;
            inserted += tx.execute(REFILL_INSERT, &[]).await?;
        }
        tx.commit().await?;
        Ok(RefillReport {
            generated,
            inserted,
            elapsed: started.elapsed(),
        })
    }
}

/// Which way [`PgRepository::copy_keys`] sends keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyPath {
    /// Straight into `key_pool`, chunk by chunk, staging only the chunks that collide.
    Direct,
    /// Every chunk through the staging table, which skips pooled and issued keys.
    Staged,
}

/// Runs one `COPY ... FROM STDIN` with `chunks` as its data.
async fn copy_in(
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &str,
    chunks: impl IntoIterator<Item = Bytes>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    for chunk in chunks {
        sink.send(chunk).await?;
    }
    sink.as_mut().finish().await?;
    Ok(())
}

fn link_from_row(row: &Row) -> Link {
    Link {
        code: row.get("code"),
        target_url: row.get("target_url"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        owner_id: row.get("owner_id"),
        disabled_at: row.get("disabled_at"),
    }
}

const INSERT_WITH_KEY: &str = "\
    INSERT INTO links (code, target_url, expires_at, owner_id) \
    VALUES ($1, $2, $3, $4) \
    RETURNING code, target_url, created_at, expires_at, owner_id, disabled_at";

const POOL_DEPTH: &str = "SELECT count(*) FROM (SELECT 1 FROM key_pool LIMIT $1) AS head";

// Many links in one statement and one commit (group commit); unnest keeps it one prepared
// statement whatever the batch size.
const INSERT_MANY: &str = "\
    INSERT INTO links (code, target_url, expires_at, owner_id) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int8[]) \
    RETURNING code, target_url, created_at, expires_at, owner_id, disabled_at";

// One statement, so one round trip and one transaction:
// - reserve the alias in issued_codes; ON CONFLICT DO NOTHING returns no row when anything
//   (a link, a claimed pool key, a concurrent alias) has it, and then nothing else happens;
// - take it out of the pool if a refill had generated it, so no instance can claim it later
//   (a claim that raced us anyway loses at issued_codes);
// - insert the link.
const INSERT_WITH_ALIAS: &str = "\
    WITH reserved AS ( \
        INSERT INTO issued_codes (code) VALUES ($1) \
        ON CONFLICT (code) DO NOTHING \
        RETURNING code \
    ), unpooled AS ( \
        DELETE FROM key_pool WHERE code IN (SELECT code FROM reserved) \
    ) \
    INSERT INTO links (code, target_url, expires_at, owner_id) \
    SELECT code, $2, $3, $4 FROM reserved \
    RETURNING code, target_url, created_at, expires_at, owner_id, disabled_at";

// ON CONFLICT DO NOTHING waits for a concurrent transaction holding the same key, so exactly
// one request of a burst of duplicates gets a row back and creates the link.
const CLAIM_IDEMPOTENCY_KEY: &str = "\
    INSERT INTO idempotency_keys (key, request, account_id) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO NOTHING";
const RECORD_IDEMPOTENT_LINK: &str = "UPDATE idempotency_keys SET code = $2 WHERE key = $1";
const FIND_IDEMPOTENT: &str = "\
    SELECT k.request, k.account_id, \
           l.code, l.target_url, l.created_at, l.expires_at, l.owner_id, l.disabled_at \
    FROM idempotency_keys k JOIN links l ON l.code = k.code \
    WHERE k.key = $1";
const DELETE_OLD_IDEMPOTENCY_KEYS: &str = "\
    DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)";

const FIND_LIVE: &str = "\
    SELECT code, target_url, created_at, expires_at, owner_id, disabled_at \
    FROM links WHERE code = $1 AND deleted_at IS NULL";

// $2 is the owner to match, NULL for any owner (an admin). An anonymous link (owner_id NULL)
// never equals an account, so only an admin deletes it.
const SOFT_DELETE: &str = "\
    UPDATE links SET deleted_at = now() \
    WHERE code = $1 AND deleted_at IS NULL AND ($2::int8 IS NULL OR owner_id = $2)";

// Disabling twice keeps the first time; enabling clears it.
const SET_DISABLED: &str = "\
    UPDATE links \
    SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END \
    WHERE code = $1 AND deleted_at IS NULL \
    RETURNING code, target_url, created_at, expires_at, owner_id, disabled_at";

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

// Candidates are staged in a temporary table first, because a plain COPY into key_pool would
// abort the whole batch on the first duplicate. The NOT EXISTS skips codes already issued;
// ON CONFLICT skips codes already pooled and duplicates within the batch.
// A bulk refill is background work that legitimately runs longer than any request may, so it
// gets its own bound instead of the request-path statement_timeout.
const REFILL_TIMEOUT: &str = "SET LOCAL statement_timeout = '300s'";
const REFILL_STAGE: &str =
    "CREATE TEMPORARY TABLE key_candidates (code text COLLATE \"C\" NOT NULL) ON COMMIT DROP";
const REFILL_COPY_STAGED: &str = "COPY key_candidates (code) FROM STDIN";
// The fast path of a refill: random keys rarely collide, so most chunks need no staging.
const REFILL_COPY_DIRECT: &str = "COPY key_pool (code) FROM STDIN";
const REFILL_INSERT: &str = "\
    INSERT INTO key_pool (code) \
    SELECT c.code FROM key_candidates c \
    WHERE NOT EXISTS (SELECT 1 FROM issued_codes i WHERE i.code = c.code) \
    ON CONFLICT (code) DO NOTHING";

impl LinkRepository for PgRepository {
    #[tracing::instrument(
        name = "postgres insert_with_key",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn insert_with_key(&self, code: &str, link: &NewLink) -> Result<Link, RepoError> {
        // Not retried: if the commit landed but its answer was lost, a retry would fail on the
        // unique code; the client's Idempotency-Key is the safe way to retry a create.
        self.guarded(async {
            let client = self.connection().await?;
            let stmt = client.prepare_cached(INSERT_WITH_KEY).await?;
            let row = client
                .query_one(
                    &stmt,
                    &[&code, &link.target_url, &link.expires_at, &link.owner_id],
                )
                .await?;
            Ok(link_from_row(&row))
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres insert_with_alias",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn insert_with_alias(&self, alias: &str, link: &NewLink) -> Result<Link, RepoError> {
        self.guarded(async {
            let client = self.connection().await?;
            let stmt = client.prepare_cached(INSERT_WITH_ALIAS).await?;
            let row = client
                .query_opt(
                    &stmt,
                    &[&alias, &link.target_url, &link.expires_at, &link.owner_id],
                )
                .await?;
            row.as_ref().map(link_from_row).ok_or(RepoError::CodeTaken)
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres create_idempotent",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn create_idempotent(
        &self,
        key: &str,
        request: &str,
        code: CodeSource<'_>,
        link: &NewLink,
    ) -> Result<IdempotentCreate, RepoError> {
        // Not retried, like the other inserts: a lost answer is what the key itself is for.
        self.guarded(async {
            let mut client = self.connection().await?;
            let tx = client.transaction().await?;
            let claimed = tx
                .execute(CLAIM_IDEMPOTENCY_KEY, &[&key, &request, &link.owner_id])
                .await?;
            if claimed == 0 {
                let row = tx.query_one(FIND_IDEMPOTENT, &[&key]).await?;
                let holder: Option<i64> = row.get("account_id");
                if holder != link.owner_id {
                    return Ok(IdempotentCreate::HeldByOther);
                }
                let stored: String = row.get("request");
                return Ok(if stored == request {
                    IdempotentCreate::Replayed(link_from_row(&row))
                } else {
                    IdempotentCreate::Mismatch
                });
            }
            let (sql, code) = match code {
                CodeSource::PoolKey(c) => (INSERT_WITH_KEY, c),
                CodeSource::Alias(c) => (INSERT_WITH_ALIAS, c),
            };
            // Dropping the transaction on an error rolls the key's row back too.
            let row = tx
                .query_opt(
                    sql,
                    &[&code, &link.target_url, &link.expires_at, &link.owner_id],
                )
                .await?
                .ok_or(RepoError::CodeTaken)?;
            let created = link_from_row(&row);
            tx.execute(RECORD_IDEMPOTENT_LINK, &[&key, &created.code])
                .await?;
            tx.commit().await?;
            Ok(IdempotentCreate::Created(created))
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres find",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn find(&self, code: &str) -> Result<Option<Link>, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            let stmt = client.prepare_cached(FIND_LIVE).await?;
            let row = client.query_opt(&stmt, &[&code]).await?;
            Ok(row.as_ref().map(link_from_row))
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres delete",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn delete(&self, code: &str, owner: Owner) -> Result<bool, RepoError> {
        let owner = owner.account();
        // Not retried: a retry after a lost answer would find nothing to delete and say 404.
        self.guarded(async {
            let client = self.connection().await?;
            Ok(client
                .execute_typed(SOFT_DELETE, &[(&code, Type::TEXT), (&owner, Type::INT8)])
                .await?
                == 1)
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres set_disabled",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    async fn set_disabled(&self, code: &str, disabled: bool) -> Result<Option<Link>, RepoError> {
        self.guarded(async {
            let client = self.connection().await?;
            let row = client
                .query_typed_opt(
                    SET_DISABLED,
                    &[(&code, Type::TEXT), (&disabled, Type::BOOL)],
                )
                .await?;
            Ok(row.as_ref().map(link_from_row))
        })
        .await
    }

    #[tracing::instrument(
        name = "postgres ping",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql")
    )]
    async fn ping(&self) -> Result<(), RepoError> {
        // Not retried: readiness should show what a request would meet.
        self.guarded(async {
            let client = self.connection().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }
}

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
            let stmt = client.prepare_cached(CLAIM_KEYS).await?;
            let rows = client.query(&stmt, &[&limit]).await?;
            let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            metrics::counter!(names::KEYS_CLAIMED).increment(keys.len() as u64);
            Ok(keys)
        })
        .await
    }

    async fn return_keys(&self, keys: &[String]) -> Result<u64, RepoError> {
        self.guarded(async {
            let client = self.connection().await?;
            Ok(client.execute(RETURN_KEYS, &[&keys]).await?)
        })
        .await
    }

    async fn pool_depth(&self, cap: u64) -> Result<u64, RepoError> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.idempotent(|| async {
            let client = self.connection().await?;
            let stmt = client.prepare_cached(POOL_DEPTH).await?;
            let n: i64 = client.query_one(&stmt, &[&cap]).await?.get(0);
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
