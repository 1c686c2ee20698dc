-- Idempotency keys for POST /api/v1/links: a client that lost a response retries with the
-- same Idempotency-Key and gets the same link back instead of a second one.
--
-- The primary key serializes concurrent duplicates: the first request's row is inserted in the
-- same transaction as its link, so a duplicate's INSERT ... ON CONFLICT waits for that
-- transaction, then finds the committed row and replays its link.
--
-- Keys are global for now; when API keys arrive, the key becomes (owner_id, key).
CREATE TABLE idempotency_keys (
    key        text NOT NULL PRIMARY KEY,
    -- The validated request in canonical form; the same key with another request is refused.
    request    text NOT NULL,
    -- Set in the same transaction as the row; NULL is never visible to other sessions.
    code       text COLLATE "C" REFERENCES links (code),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The key-pool worker deletes rows older than 24 hours.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
