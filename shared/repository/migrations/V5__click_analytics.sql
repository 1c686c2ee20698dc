-- Click analytics: rollups that the analytics worker (services/analytics) writes from the
-- click streams, and what it needs to apply each stream entry exactly once.
--
-- No raw clicks are kept here. The recent raw events live in the Redis streams (bounded with
-- MAXLEN ~), which is where a debugging operator looks; PostgreSQL keeps only rollups, whose
-- size grows with links x hours that had clicks, not with clicks. Rollups are kept forever.
--
-- owner_id is copied from links.owner_id (a link never changes owner) so that an account's
-- stats read one index range instead of joining every link of the account.

-- Per link per UTC hour. clicks = humans + bots, so it is not stored. A visitor counts as
-- unique in the hour of its first click of the (UTC) day: the visitor hash's key rotates
-- daily, so nobody can be followed from one day to the next, and a range's unique visitors
-- are the sum of its days' (as Plausible counts them).
CREATE TABLE click_hourly (
    link_id       bigint NOT NULL REFERENCES links (id),
    hour          timestamptz NOT NULL,
    owner_id      bigint,
    humans        bigint NOT NULL DEFAULT 0,
    bots          bigint NOT NULL DEFAULT 0,
    unique_humans bigint NOT NULL DEFAULT 0,
    unique_bots   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (link_id, hour),
    CONSTRAINT click_hourly_on_the_hour CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

CREATE INDEX click_hourly_owner ON click_hourly (owner_id, hour);

-- Per link per UTC day, every value of each dimension with its count; the stats API sums a
-- range's days and keeps the ten largest. Values are bounded in length by the worker.
CREATE TABLE click_daily (
    link_id   bigint NOT NULL REFERENCES links (id),
    day       date NOT NULL,
    owner_id  bigint,
    dimension text COLLATE "C" NOT NULL,
    value     text NOT NULL,
    humans    bigint NOT NULL DEFAULT 0,
    bots      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (link_id, day, dimension, value),
    CONSTRAINT click_daily_dimension_known CHECK (
        dimension IN ('referrer', 'country', 'browser', 'os', 'device', 'source')
    ),
    CONSTRAINT click_daily_value_length CHECK (octet_length(value) BETWEEN 1 AND 255)
);

CREATE INDEX click_daily_owner ON click_daily (owner_id, day);

-- Visitor hashes seen per link per UTC day, only to tell a first click from a repeat one.
-- Rows older than yesterday are deleted by the worker: the hash's key has rotated, so they can
-- never match again.
CREATE TABLE click_visitors (
    link_id bigint NOT NULL,
    day     date NOT NULL,
    visitor bytea NOT NULL,
    PRIMARY KEY (link_id, day, visitor),
    CONSTRAINT click_visitors_hash_length CHECK (octet_length(visitor) = 16)
);

-- Stream entries already applied, as ranges of entry ids per stream shard, written in the
-- same transaction as the counts they produced. A batch read with XREADGROUP ... > is a
-- contiguous run of its stream that no other consumer gets, so one row covers it. An entry
-- that comes back (a worker died between COMMIT and XACK, and another claimed it with
-- XAUTOCLAIM) is looked up here and only acknowledged. Rows whose range ends before every
-- entry still pending in the consumer group can never be asked about again and are deleted.
CREATE TABLE click_applied (
    shard     smallint NOT NULL,
    first_ms  bigint NOT NULL,
    first_seq bigint NOT NULL,
    last_ms   bigint NOT NULL,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (shard, last_ms, last_seq),
    CONSTRAINT click_applied_ordered CHECK ((first_ms, first_seq) <= (last_ms, last_seq))
);

-- Human clicks of all time, as the stats API counts them by default (bots excluded), so a
-- link's view and the list show them without summing its rollups.
ALTER TABLE links ADD COLUMN clicks bigint NOT NULL DEFAULT 0;
