use std::time::Duration;

use kurz_ratelimit::Store;
use kurz_repository::RedisCache;
use kurz_repository::cache::CacheTtl;
use kurz_settings::{RedisSettings, Source};
use kurz_testkit::metrics::Exposition;

/// How long a store leaves Redis alone after a failure, in these tests: short, so a test
/// that restores Redis does not wait a second for it to be tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A store on its own connection to `url`, built as a service builds it (the cache's shared
/// connection and budget). Installs the metrics recorder first, so the limiters' handles are
/// live ones.
pub fn store(url: &str) -> Store {
    kurz_telemetry::metrics::handle();
    let source = Source::from_vars([
        ("KURZ_REDIS_URL", url),
        // A loaded debug build can miss 50 ms; the tests are about decisions, not speed.
        ("KURZ_REDIS_COMMAND_TIMEOUT_MS", "500"),
    ]);
    let settings = RedisSettings::from_source(&source).expect("valid settings");
    let ttl = CacheTtl {
        found: Duration::from_secs(60),
        missing: Duration::from_secs(10),
    };
    let cache = RedisCache::new(&settings, ttl).expect("a cache");
    Store::new(cache.connection(), cache.command_timeout()).with_retry_interval(RETRY_INTERVAL)
}

/// This process's metrics as `/metrics` would show them.
pub fn metrics() -> Exposition {
    Exposition(kurz_telemetry::metrics::render())
}
