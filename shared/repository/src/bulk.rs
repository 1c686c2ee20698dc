//! Many links in one transaction: the SQL of bulk creates (`POST /api/v1/links/bulk`) and of
//! imports (`kurz-create import`), which share it.
//!
//! A call inserts its pool-key rows with one multi-row statement and its aliased rows with
//! another, and an alias that is already taken only drops that row: the others commit. Every
//! statement is unnamed (`query_typed`, `execute_typed`), so it works through PgBouncer in
//! transaction mode.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;

use crate::error::RepoError;
// The key is claimed as for a single create (`CLAIM_IDEMPOTENCY_KEY`): a concurrent duplicate
// waits for this transaction, then finds its committed row.
use crate::links::{
    CLAIM_IDEMPOTENCY_KEY, INSERT_MANY, ManyColumns, link_columns, link_from_row,
    record_outcome_and_commit,
};
use crate::model::{Link, NewLink};
use crate::postgres::PgRepository;

/// The rows of one bulk insert: codes already claimed from the pool, and custom aliases. Each
/// alias must appear once (callers decide about repeats before the database).
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkRows<'a> {
    pub pooled: &'a [(&'a str, &'a NewLink)],
    pub aliased: &'a [(&'a str, &'a NewLink)],
}

impl BulkRows<'_> {
    pub fn is_empty(&self) -> bool {
        self.pooled.is_empty() && self.aliased.is_empty()
    }
}

/// What one bulk insert stored, in the order of its rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inserted {
    /// One link per pool-key row.
    pub pooled: Vec<Link>,
    /// One per aliased row: `None` when the alias was already taken.
    pub aliased: Vec<Option<Link>>,
}

impl Inserted {
    /// Rows that became links.
    pub fn created(&self) -> usize {
        self.pooled.len() + self.aliased.iter().flatten().count()
    }

    /// Aliased rows refused because the alias was taken.
    pub fn taken(&self) -> usize {
        self.aliased.iter().filter(|l| l.is_none()).count()
    }
}

/// The idempotency key a bulk create runs under.
#[derive(Debug, Clone, Copy)]
pub struct BulkKey<'a> {
    pub key: &'a str,
    /// The validated request in canonical form.
    pub request: &'a str,
    /// The caller's account; `None` for an anonymous caller.
    pub account_id: Option<i64>,
}

/// The outcome of a bulk create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkCreate {
    /// The rows were inserted (those whose alias was free) and committed.
    Created(Inserted),
    /// The key was used before with the same request: the response stored then.
    Replayed(String),
    /// The key was used before with another request (or by a single create).
    Mismatch,
    /// Another account holds the key.
    HeldByOther,
}

/// One import, as its row in `imports` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    pub id: i64,
    /// Data rows (after the header) processed and committed, accepted or rejected.
    pub rows_done: i64,
    pub imported: i64,
    pub rejected: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where one import batch starts, and what it already knows about its rows.
#[derive(Debug, Clone, Copy)]
pub struct ImportBatch {
    pub import_id: i64,
    /// `rows_done` as this run last committed it: if the row says otherwise, another run of
    /// the same import moved on, and this batch must not commit.
    pub rows_done: i64,
    /// Data rows in the batch, accepted or not.
    pub rows: i64,
    /// Rows refused before the database (validation, a repeated alias).
    pub rejected: i64,
}

/// Why an import batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ImportBatchError<E> {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// `rows_done` is not what this run committed: another run of the same import is going on.
    #[error("another run of this import committed rows meanwhile")]
    Superseded,
    /// The hook run before the commit failed (writing the report); nothing was committed.
    #[error("the step before the commit failed")]
    Hook(#[source] E),
}

// Reserves every alias in issued_codes in one statement; ON CONFLICT DO NOTHING skips an alias
// that anything (a link, a claimed pool key, a concurrent create) already has, and only the
// reserved ones get a link. Aliases are reserved in code order, so two bulk calls that share
// aliases lock them in the same order and wait for each other instead of deadlocking. The
// pool loses the reserved aliases a refill may have generated, as for a single alias.
const INSERT_ALIASES: &str = concat!(
    "WITH input AS ( \
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int8[], \
            $5::int2[], $6::bool[], $7::text[], $8::int8[]) \
        AS i(code, target_url, expires_at, owner_id, redirect_status, forward_query, \
            expired_url, max_visits) \
    ), reserved AS ( \
        INSERT INTO issued_codes (code) SELECT code FROM input ORDER BY code \
        ON CONFLICT (code) DO NOTHING \
        RETURNING code \
    ), unpooled AS ( \
        DELETE FROM key_pool WHERE code IN (SELECT code FROM reserved) \
    ) \
    INSERT INTO links (code, target_url, expires_at, owner_id, redirect_status, forward_query, \
     expired_url, max_visits) \
    SELECT i.code, i.target_url, i.expires_at, i.owner_id, i.redirect_status, i.forward_query, \
        i.expired_url, i.max_visits \
    FROM input i JOIN reserved r ON r.code = i.code RETURNING ",
    link_columns!()
);

const FIND_KEY: &str = "SELECT request, account_id, response FROM idempotency_keys WHERE key = $1";
const RECORD_RESPONSE: &str = "UPDATE idempotency_keys SET response = $2 WHERE key = $1";

// An import is its account and its file: a second run finds the first one's row. The no-op
// update makes RETURNING give the existing row too.
const START_IMPORT: &str = "\
    INSERT INTO imports (account_id, file_digest) VALUES ($1, $2) \
    ON CONFLICT ON CONSTRAINT imports_file_key DO UPDATE SET updated_at = now() \
    RETURNING id, rows_done, imported, rejected, started_at, finished_at";
// Conditional on rows_done, so a second run of the same import racing this one cannot make
// both commit the same rows: the loser updates nothing and rolls back.
const ADVANCE_IMPORT: &str = "\
    UPDATE imports SET rows_done = rows_done + $3, imported = imported + $4, \
        rejected = rejected + $5, updated_at = now() \
    WHERE id = $1 AND rows_done = $2";
const FINISH_IMPORT: &str = "\
    UPDATE imports SET finished_at = coalesce(finished_at, now()), updated_at = now() \
    WHERE id = $1 \
    RETURNING id, rows_done, imported, rejected, started_at, finished_at";

fn import_from_row(row: &tokio_postgres::Row) -> ImportRecord {
    ImportRecord {
        id: row.get("id"),
        rows_done: row.get("rows_done"),
        imported: row.get("imported"),
        rejected: row.get("rejected"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    }
}

/// What the key's row says about a request, once the key is found.
fn judge(row: &tokio_postgres::Row, key: &BulkKey<'_>) -> BulkCreate {
    let holder: Option<i64> = row.get("account_id");
    if holder != key.account_id {
        return BulkCreate::HeldByOther;
    }
    let request: String = row.get("request");
    let response: Option<String> = row.get("response");
    match response {
        Some(response) if request == key.request => BulkCreate::Replayed(response),
        // A single create's key has no stored response, and its request is never a bulk one.
        _ => BulkCreate::Mismatch,
    }
}

/// Inserts the rows on `tx`: pool keys, then aliases.
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: BulkRows<'_>,
) -> Result<Inserted, RepoError> {
    let mut inserted = Inserted::default();
    if !rows.pooled.is_empty() {
        let links = query_rows(tx, INSERT_MANY, rows.pooled).await?;
        let mut by_code: HashMap<String, Link> =
            links.into_iter().map(|l| (l.code.clone(), l)).collect();
        for (code, _) in rows.pooled {
            let link = by_code
                .remove(*code)
                .ok_or_else(|| RepoError::Unavailable("a bulk insert lost a row".into()))?;
            inserted.pooled.push(link);
        }
    }
    if !rows.aliased.is_empty() {
        let links = query_rows(tx, INSERT_ALIASES, rows.aliased).await?;
        let mut by_code: HashMap<String, Link> =
            links.into_iter().map(|l| (l.code.clone(), l)).collect();
        inserted.aliased = rows
            .aliased
            .iter()
            .map(|(code, _)| by_code.remove(*code))
            .collect();
    }
    Ok(inserted)
}

async fn query_rows(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    rows: &[(&str, &NewLink)],
) -> Result<Vec<Link>, RepoError> {
    let columns = ManyColumns::of(rows);
    let found = tx.query_typed(statement, &columns.params()).await?;
    Ok(found.iter().map(link_from_row).collect())
}

impl PgRepository {
    /// What an idempotency key already says about a bulk request, without creating anything:
    /// `None` if the key is unused. Safe to retry. A caller that gets `None` goes on to
    /// [`Self::create_bulk`], which checks again in its transaction.
    #[tracing::instrument(
        name = "postgres bulk_replay",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn bulk_replay(&self, key: BulkKey<'_>) -> Result<Option<BulkCreate>, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            let row = client
                .query_typed_opt(FIND_KEY, &[(&key.key, Type::TEXT)])
                .await?;
            Ok(row.map(|row| judge(&row, &key)))
        })
        .await
    }

    /// Inserts `rows` in one transaction (one statement for the pool keys, one for the
    /// aliases). Under `key`, the key's row is claimed first in the same transaction, and
    /// `render(&inserted)`, the whole response, is stored with it for replays. Not retried:
    /// a lost answer is what the key is for.
    #[tracing::instrument(
        name = "postgres create_bulk",
        skip_all,
        fields(
            otel.kind = "client",
            db.system = "postgresql",
            pooled = rows.pooled.len(),
            aliased = rows.aliased.len()
        ),
        err(level = "warn")
    )]
    pub async fn create_bulk(
        &self,
        key: Option<BulkKey<'_>>,
        rows: BulkRows<'_>,
        render: impl FnOnce(&Inserted) -> String + Send,
    ) -> Result<BulkCreate, RepoError> {
        self.guarded(async {
            let mut client = self.connection().await?;
            let tx = client.transaction().await?;
            if let Some(key) = &key {
                let claimed = tx
                    .execute_typed(
                        CLAIM_IDEMPOTENCY_KEY,
                        &[
                            (&key.key, Type::TEXT),
                            (&key.request, Type::TEXT),
                            (&key.account_id, Type::INT8),
                        ],
                    )
                    .await?;
                if claimed == 0 {
                    let row = tx
                        .query_typed_one(FIND_KEY, &[(&key.key, Type::TEXT)])
                        .await?;
                    return Ok(judge(&row, key));
                }
            }
            let inserted = insert_rows(&tx, rows).await?;
            match &key {
                Some(key) => {
                    let response = render(&inserted);
                    record_outcome_and_commit(tx, RECORD_RESPONSE, key.key, &response).await?;
                }
                None => tx.commit().await?,
            }
            Ok(BulkCreate::Created(inserted))
        })
        .await
    }

    /// The import of the file with SHA-256 `digest` for `account_id`: a new one, or the one a
    /// previous run started (to resume, or to see that it finished).
    #[tracing::instrument(
        name = "postgres start_import",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err
    )]
    pub async fn start_import(
        &self,
        account_id: i64,
        digest: &[u8; 32],
    ) -> Result<ImportRecord, RepoError> {
        let digest = digest.as_slice();
        // Safe to repeat: the second attempt finds the row the first one made.
        self.idempotent(|| async {
            let client = self.connection().await?;
            let row = client
                .query_typed_one(
                    START_IMPORT,
                    &[(&account_id, Type::INT8), (&digest, Type::BYTEA)],
                )
                .await?;
            Ok(import_from_row(&row))
        })
        .await
    }

    /// Inserts one batch of an import and advances its `rows_done`, `imported` and `rejected`
    /// in the same transaction, so a run that dies resumes after the last committed batch and
    /// never imports a row twice. `before_commit` runs after the inserts, when the batch's
    /// every outcome is known, and before the commit (the import writes its report there): if
    /// it fails, nothing is committed.
    #[tracing::instrument(
        name = "postgres import_batch",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", rows = batch.rows),
        err
    )]
    pub async fn import_batch<E>(
        &self,
        batch: ImportBatch,
        rows: BulkRows<'_>,
        before_commit: impl FnOnce(&Inserted) -> Result<(), E> + Send,
    ) -> Result<Inserted, ImportBatchError<E>>
    where
        E: Send,
    {
        self.guarded(async {
            let mut client = self.connection().await?;
            let tx = client.transaction().await?;
            let inserted = insert_rows(&tx, rows).await?;
            let imported = inserted.created() as i64;
            let rejected = batch.rejected + inserted.taken() as i64;
            let advanced = tx
                .execute_typed(
                    ADVANCE_IMPORT,
                    &[
                        (&batch.import_id, Type::INT8),
                        (&batch.rows_done, Type::INT8),
                        (&batch.rows, Type::INT8),
                        (&imported, Type::INT8),
                        (&rejected, Type::INT8),
                    ],
                )
                .await?;
            if advanced == 0 {
                return Ok(Err(ImportBatchError::Superseded));
            }
            if let Err(e) = before_commit(&inserted) {
                return Ok(Err(ImportBatchError::Hook(e)));
            }
            tx.commit().await?;
            Ok(Ok(inserted))
        })
        .await?
    }

    /// Marks an import finished (once: a second call keeps the first time).
    pub async fn finish_import(&self, import_id: i64) -> Result<ImportRecord, RepoError> {
        self.idempotent(|| async {
            let client = self.connection().await?;
            let row = client
                .query_typed_one(FINISH_IMPORT, &[(&import_id, Type::INT8)])
                .await?;
            Ok(import_from_row(&row))
        })
        .await
    }
}
