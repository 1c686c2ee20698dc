-- Accounts and API keys: every write needs a key, and a link belongs to the key's account.
--
-- Accounts and keys are never deleted, only disabled or revoked: links and keys keep pointing
-- at a row that says who made them, and a revoked key's digest stays taken.

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A disabled account's keys stop working (403 account_disabled); its links keep
    -- redirecting, since people who follow them did nothing wrong.
    disabled_at timestamptz,
    CONSTRAINT accounts_name_key UNIQUE (name),
    CONSTRAINT accounts_name_shape CHECK (char_length(name) BETWEEN 1 AND 100)
);

CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts (id),
    name         text NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    -- Written at most once a minute per key and instance, off the request path.
    last_used_at timestamptz,
    revoked_at   timestamptz,
    -- SHA-256 of the whole key. The key itself is shown once, at creation, and never stored:
    -- a copy of this table lets nobody in. A plain hash rather than a password hash, because
    -- the key is 256 random bits (nothing to guess) and it is checked on every request.
    digest       bytea NOT NULL,
    -- The first characters of the key (`kurz_AbC1`), so people can tell their keys apart.
    hint         text NOT NULL,
    -- Requests a minute; NULL means the service default (KURZ_RATE_LIMIT_PER_MINUTE).
    rate_limit_per_minute integer,
    CONSTRAINT api_keys_digest_key UNIQUE (digest),
    CONSTRAINT api_keys_digest_length CHECK (octet_length(digest) = 32),
    CONSTRAINT api_keys_name_shape CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT api_keys_scopes_known CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['links:read', 'links:write', 'stats:read', 'admin']::text[]
    ),
    CONSTRAINT api_keys_rate_limit_positive CHECK (rate_limit_per_minute > 0)
);

CREATE INDEX api_keys_account_id ON api_keys (account_id);

-- links.owner_id (reserved in V1) references accounts.id; NULL is an anonymous link. The
-- reference is kept by the write path rather than by a FOREIGN KEY constraint, on purpose:
-- the constraint's check (a trigger per row taking a KEY SHARE lock on the one account row
-- that every concurrent batch of that account shares) cost 20 to 40% of multi-row insert
-- throughput when measured with pgbench, and group commit inserts every link. It would guard
-- nothing here: an owner id only ever comes from a verified API key's account, and accounts
-- are never deleted (they are disabled). api_keys and idempotency_keys, written rarely, keep
-- real foreign keys.
COMMENT ON COLUMN links.owner_id IS
    'accounts.id of the creator (NULL: anonymous); kept by the write path, see V3';

-- A disabled link answers 410 with a page saying so; its code stays reserved, and an admin
-- can enable it again.
ALTER TABLE links ADD COLUMN disabled_at timestamptz;

-- An idempotency key belongs to the account that first used it (NULL: anonymous). The primary
-- key stays the key alone, so concurrent duplicates still serialize on it; another account
-- presenting the same key is answered as if the link did not exist.
ALTER TABLE idempotency_keys ADD COLUMN account_id bigint REFERENCES accounts (id);
