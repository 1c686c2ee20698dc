-- Link management: edits, per-link redirect behaviour, visit limits, listing, bulk creates
-- and imports.
--
-- Every new column is either nullable or has a constant default, so on a table of millions of
-- links this migration rewrites nothing and holds its lock for milliseconds.

-- NULL until the first edit; the API shows created_at then. Not back-filled: that would
-- rewrite every row of a large table for a value the API can derive.
ALTER TABLE links ADD COLUMN updated_at timestamptz;
-- Merge the request's query string into the target's (see the redirect service's README).
ALTER TABLE links ADD COLUMN forward_query boolean NOT NULL DEFAULT false;
-- Where an expired link (by date or by visits) sends people; NULL: a 410 page.
ALTER TABLE links ADD COLUMN expired_url text;
-- Redirects counted so far. Only links with max_visits (reserved in V1) count them: for them,
-- every counted redirect is one atomic UPDATE ... WHERE visits < max_visits, which is what
-- makes the limit exact across any number of redirect instances and restarts.
-- No CHECK that visits <= max_visits: an edit may lower the limit below what was counted,
-- and the link is then simply used up.
ALTER TABLE links ADD COLUMN visits bigint NOT NULL DEFAULT 0;

-- Listing an account's links, newest first, with keyset pagination on (created_at, id): the
-- first page and the thousandth read the same few index entries. Partial, because deleted
-- links are never listed. owner_id IS NULL (anonymous links) is in the index too, so an admin
-- can list those the same way.
--
-- Not CONCURRENTLY: refinery runs each migration in a transaction. On a large existing table,
-- create the index by hand with CONCURRENTLY under this name before migrating; IF NOT EXISTS
-- then skips it here.
CREATE INDEX IF NOT EXISTS links_owner_created
    ON links (owner_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- A bulk create under an Idempotency-Key makes many links, so its replay is the whole answer,
-- stored as it was sent. A single create keeps using `code`.
ALTER TABLE idempotency_keys ADD COLUMN response text;

-- Operator imports (`kurz-create import`). An import is identified by its account and the
-- SHA-256 of its file, and `rows_done` advances in the same transaction as each batch of
-- links, so an import that crashes resumes after the last committed batch: no row is imported
-- twice and none is skipped.
CREATE TABLE imports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    file_digest bytea NOT NULL,
    -- Data rows (after the header) processed and committed, accepted or rejected.
    rows_done   bigint NOT NULL DEFAULT 0,
    imported    bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT imports_file_key UNIQUE (account_id, file_digest),
    CONSTRAINT imports_digest_length CHECK (octet_length(file_digest) = 32)
);
