-- Kurz schema, version 1: links, the registry of issued codes, and the key pool.
--
-- Codes are case-sensitive ASCII, so they use the "C" collation: byte order, no locale rules,
-- and the cheapest comparisons PostgreSQL has.

-- Every link ever created. A deleted link keeps its row (deleted_at is set) so that its code
-- can never be handed out again and start pointing somewhere else.
CREATE TABLE links (
    -- Surrogate key: compact for the click, visit and ownership tables that will reference
    -- links, and stable if codes ever become editable.
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text COLLATE "C" NOT NULL,
    target_url  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    deleted_at  timestamptz,
    -- Reserved for features that are coming; NULL means "the service default" or "none", so
    -- adding the features needs no data migration. Nothing reads them yet.
    redirect_status smallint CHECK (redirect_status IN (301, 302, 307, 308)),
    max_visits      bigint CHECK (max_visits > 0),
    owner_id        bigint,
    CONSTRAINT links_code_key UNIQUE (code),
    -- No CHECK that expires_at follows created_at: the API checks it against its own clock,
    -- and a skewed database clock must not turn a valid request into an error.
    CONSTRAINT links_code_shape CHECK (code ~ '^[A-Za-z0-9_-]{3,64}$')
);

-- Every code that ever left the key pool or was taken as a custom alias. A row is never
-- deleted. Its primary key is what makes "a code is handed out at most once" hold across any
-- number of create instances, crashes and restarts: a claim or an alias counts only if its
-- insert here succeeds.
CREATE TABLE issued_codes (
    code      text COLLATE "C" PRIMARY KEY,
    issued_at timestamptz NOT NULL DEFAULT now()
);

-- Unused random keys, waiting to be claimed in batches by create instances. Claims take the
-- lowest ids first: ids follow generation order and the codes are random, so what a client
-- sees reveals nothing about its neighbours (the lexicographic code order would).
CREATE TABLE key_pool (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text COLLATE "C" NOT NULL,
    CONSTRAINT key_pool_code_key UNIQUE (code)
) WITH (
    -- Claims delete rows from the head of the id index all day long. Vacuum after a fixed
    -- number of dead rows instead of a fraction of the table, so the head stays clean and a
    -- claim costs the same with 1,000 keys left as with 1,000,000 (the worker also vacuums
    -- after each refill).
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000
);
