//! Links: their SQL, the [`LinkRepository`] implementation on PostgreSQL, and the group-commit
//! insert that [`crate::batch`] drives.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::LinkRepository;
use crate::error::RepoError;
use crate::model::{Behaviour, CodeSource, IdempotentCreate, Link, NewLink, Owner};
use crate::postgres::PgRepository;

/// Every column a [`Link`] is read from, in one place so that every statement returns the
/// same shape.
macro_rules! link_columns {
    () => {
        "code, target_url, created_at, updated_at, expires_at, owner_id, disabled_at, \
         redirect_status, forward_query, expired_url, max_visits, visits, clicks"
    };
}
pub(crate) use link_columns;

pub(crate) fn link_from_row(row: &Row) -> Link {
    let status: Option<i16> = row.get("redirect_status");
    Link {
        code: row.get("code"),
        target_url: row.get("target_url"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        expires_at: row.get("expires_at"),
        owner_id: row.get("owner_id"),
        disabled_at: row.get("disabled_at"),
        behaviour: Behaviour {
            // The column's CHECK admits 301, 302, 307 and 308 only.
            redirect_status: status.and_then(|s| u16::try_from(s).ok()),
            forward_query: row.get("forward_query"),
            expired_url: row.get("expired_url"),
            max_visits: row.get("max_visits"),
        },
        visits: row.get("visits"),
        clicks: row.get("clicks"),
    }
}

/// A [`NewLink`]'s columns after the code, as statement parameters `$2` to `$8`.
struct Columns<'a> {
    target_url: &'a str,
    expires_at: Option<DateTime<Utc>>,
    owner_id: Option<i64>,
    redirect_status: Option<i16>,
    forward_query: bool,
    expired_url: Option<&'a str>,
    max_visits: Option<i64>,
}

impl<'a> Columns<'a> {
    fn of(link: &'a NewLink) -> Self {
        Self {
            target_url: &link.target_url,
            expires_at: link.expires_at,
            owner_id: link.owner_id,
            redirect_status: link
                .behaviour
                .redirect_status
                .and_then(|s| i16::try_from(s).ok()),
            forward_query: link.behaviour.forward_query,
            expired_url: link.behaviour.expired_url.as_deref(),
            max_visits: link.behaviour.max_visits,
        }
    }

    /// `$1` (the code) and these, in statement order, with their types: every statement is
    /// unnamed (`query_typed`), so it works through a transaction pooler such as PgBouncer.
    fn params<'b>(&'b self, code: &'b &'b str) -> [(&'b (dyn ToSql + Sync), Type); 8] {
        [
            (code, Type::TEXT),
            (&self.target_url, Type::TEXT),
            (&self.expires_at, Type::TIMESTAMPTZ),
            (&self.owner_id, Type::INT8),
            (&self.redirect_status, Type::INT2),
            (&self.forward_query, Type::BOOL),
            (&self.expired_url, Type::TEXT),
            (&self.max_visits, Type::INT8),
        ]
    }
}

const INSERT_WITH_KEY: &str = concat!(
    "INSERT INTO links (code, target_url, expires_at, owner_id, redirect_status, forward_query, \
     expired_url, max_visits) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
    link_columns!()
);

// Many links in one statement and one commit (group commit); unnest keeps it one statement
// text whatever the batch size.
pub(crate) const INSERT_MANY: &str = concat!(
    "INSERT INTO links (code, target_url, expires_at, owner_id, redirect_status, forward_query, \
     expired_url, max_visits) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int8[], $5::int2[], \
     $6::bool[], $7::text[], $8::int8[]) RETURNING ",
    link_columns!()
);

// One statement, so one round trip and one transaction:
// - reserve the alias in issued_codes; ON CONFLICT DO NOTHING returns no row when anything
//   (a link, a claimed pool key, a concurrent alias) has it, and then nothing else happens;
// - take it out of the pool if a refill had generated it, so no instance can claim it later
//   (a claim that raced us anyway loses at issued_codes);
// - insert the link.
const INSERT_WITH_ALIAS: &str = concat!(
    "WITH reserved AS ( \
        INSERT INTO issued_codes (code) VALUES ($1) \
        ON CONFLICT (code) DO NOTHING \
        RETURNING code \
    ), unpooled AS ( \
        DELETE FROM key_pool WHERE code IN (SELECT code FROM reserved) \
    ) \
    INSERT INTO links (code, target_url, expires_at, owner_id, redirect_status, forward_query, \
     expired_url, max_visits) \
    SELECT code, $2, $3, $4, $5, $6, $7, $8 FROM reserved RETURNING ",
    link_columns!()
);

// ON CONFLICT DO NOTHING waits for a concurrent transaction holding the same key, so exactly
// one request of a burst of duplicates gets a row back and creates the link. The LEFT JOIN
// finds keys of bulk creates too, which hold a response instead of one code.
pub(crate) const CLAIM_IDEMPOTENCY_KEY: &str = "\
    INSERT INTO idempotency_keys (key, request, account_id) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO NOTHING";
const RECORD_IDEMPOTENT_LINK: &str = "UPDATE idempotency_keys SET code = $2 WHERE key = $1";

/// Stores what the request under idempotency key `key` produced (`record`: an UPDATE of the
/// key's row taking the key and the outcome) and commits: the key's claim, the links and the
/// outcome become visible together, so a replay never finds a claimed key without its answer.
pub(crate) async fn record_outcome_and_commit(
    tx: deadpool_postgres::Transaction<'_>,
    record: &str,
    key: &str,
    outcome: &str,
) -> Result<(), RepoError> {
    tx.execute_typed(record, &[(&key, Type::TEXT), (&outcome, Type::TEXT)])
        .await?;
    tx.commit().await?;
    Ok(())
}
const FIND_IDEMPOTENT: &str = "\
    SELECT k.request, k.account_id, \
           l.code, l.target_url, l.created_at, l.updated_at, l.expires_at, l.owner_id, \
           l.disabled_at, l.redirect_status, l.forward_query, l.expired_url, l.max_visits, \
           l.visits, l.clicks \
    FROM idempotency_keys k LEFT JOIN links l ON l.code = k.code \
    WHERE k.key = $1";
const DELETE_OLD_IDEMPOTENCY_KEYS: &str = "\
    DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)";

const FIND_LIVE: &str = concat!(
    "SELECT ",
    link_columns!(),
    " FROM links WHERE code = $1 AND deleted_at IS NULL"
);

// $2 is the owner to match, NULL for any owner (an admin). An anonymous link (owner_id NULL)
// never equals an account, so only an admin deletes it.
const SOFT_DELETE: &str = "\
    UPDATE links SET deleted_at = now() \
    WHERE code = $1 AND deleted_at IS NULL AND ($2::int8 IS NULL OR owner_id = $2)";

// Disabling twice keeps the first time; enabling clears it.
const SET_DISABLED: &str = concat!(
    "UPDATE links \
     SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END \
     WHERE code = $1 AND deleted_at IS NULL RETURNING ",
    link_columns!()
);

impl PgRepository {
    /// Inserts links under pool keys in one statement; all or none. Not retried, like every
    /// insert.
    #[tracing::instrument(
        name = "postgres insert_many",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", rows = rows.len())
    )]
    pub async fn insert_many(&self, rows: &[(&str, &NewLink)]) -> Result<Vec<Link>, RepoError> {
        let columns = ManyColumns::of(rows);
        self.guarded(async {
            let client = self.connection().await?;
            let rows = client.query_typed(INSERT_MANY, &columns.params()).await?;
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
                .execute_typed(DELETE_OLD_IDEMPOTENCY_KEYS, &[(&secs, Type::FLOAT8)])
                .await?)
        })
        .await
    }
}

/// Rows of [`INSERT_MANY`] as one array per column.
pub(crate) struct ManyColumns<'a> {
    codes: Vec<&'a str>,
    urls: Vec<&'a str>,
    expiries: Vec<Option<DateTime<Utc>>>,
    owners: Vec<Option<i64>>,
    statuses: Vec<Option<i16>>,
    forwards: Vec<bool>,
    expired_urls: Vec<Option<&'a str>>,
    max_visits: Vec<Option<i64>>,
}

impl<'a> ManyColumns<'a> {
    pub(crate) fn of(rows: &[(&'a str, &'a NewLink)]) -> Self {
        let mut columns = Self {
            codes: Vec::with_capacity(rows.len()),
            urls: Vec::with_capacity(rows.len()),
            expiries: Vec::with_capacity(rows.len()),
            owners: Vec::with_capacity(rows.len()),
            statuses: Vec::with_capacity(rows.len()),
            forwards: Vec::with_capacity(rows.len()),
            expired_urls: Vec::with_capacity(rows.len()),
            max_visits: Vec::with_capacity(rows.len()),
        };
        for (code, link) in rows {
            let c = Columns::of(link);
            columns.codes.push(code);
            columns.urls.push(c.target_url);
            columns.expiries.push(c.expires_at);
            columns.owners.push(c.owner_id);
            columns.statuses.push(c.redirect_status);
            columns.forwards.push(c.forward_query);
            columns.expired_urls.push(c.expired_url);
            columns.max_visits.push(c.max_visits);
        }
        columns
    }

    /// The columns as the parameters of [`INSERT_MANY`] (and bulk's alias insert), typed.
    pub(crate) fn params(&self) -> [(&(dyn ToSql + Sync), Type); 8] {
        [
            (&self.codes, Type::TEXT_ARRAY),
            (&self.urls, Type::TEXT_ARRAY),
            (&self.expiries, Type::TIMESTAMPTZ_ARRAY),
            (&self.owners, Type::INT8_ARRAY),
            (&self.statuses, Type::INT2_ARRAY),
            (&self.forwards, Type::BOOL_ARRAY),
            (&self.expired_urls, Type::TEXT_ARRAY),
            (&self.max_visits, Type::INT8_ARRAY),
        ]
    }
}

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
            let columns = Columns::of(link);
            let row = client
                .query_typed_one(INSERT_WITH_KEY, &columns.params(&code))
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
            let columns = Columns::of(link);
            let row = client
                .query_typed_opt(INSERT_WITH_ALIAS, &columns.params(&alias))
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
                .execute_typed(
                    CLAIM_IDEMPOTENCY_KEY,
                    &[
                        (&key, Type::TEXT),
                        (&request, Type::TEXT),
                        (&link.owner_id, Type::INT8),
                    ],
                )
                .await?;
            if claimed == 0 {
                let row = tx
                    .query_typed(FIND_IDEMPOTENT, &[(&key, Type::TEXT)])
                    .await?
                    .pop()
                    .ok_or_else(|| RepoError::Unavailable("idempotency key vanished".into()))?;
                let holder: Option<i64> = row.get("account_id");
                if holder != link.owner_id {
                    return Ok(IdempotentCreate::HeldByOther);
                }
                let stored: String = row.get("request");
                // A bulk create's key has no single link: never this request.
                let bulk = row.get::<_, Option<String>>("code").is_none();
                return Ok(if stored == request && !bulk {
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
            let columns = Columns::of(link);
            let row = tx
                .query_typed_opt(sql, &columns.params(&code))
                .await?
                .ok_or(RepoError::CodeTaken)?;
            let created = link_from_row(&row);
            record_outcome_and_commit(tx, RECORD_IDEMPOTENT_LINK, key, &created.code).await?;
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
            let row = client
                .query_typed_opt(FIND_LIVE, &[(&code, Type::TEXT)])
                .await?;
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
