//! Settings of `kurz-analytics`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kurz_repository::clicks::{DEFAULT_STREAMS, MAX_STREAMS};
use kurz_settings::{
    DatabaseSettings, RedisSettings, SettingsError, Source, TelemetrySettings, in_range,
    positive_millis, socket_addr,
};
use serde::Deserialize;

/// Clicks one read may take per stream: beyond 10,000 a batch's transaction holds its row
/// locks for long and a failed commit repeats a lot of work.
const BATCH_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    /// `KURZ_METRICS_LISTEN`: `address:port` of `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
    pub streams: StreamSettings,
    /// `KURZ_GEOIP_DB`: a country database in MaxMind DB format, or none.
    pub geoip_db: Option<PathBuf>,
}

/// How the click streams are read.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `KURZ_CLICK_STREAMS`: the shards `kurz:clicks:{0}` .. `{N-1}`.
    pub shards: u16,
    /// `KURZ_ANALYTICS_CONSUMER`: this worker's name in the consumer group.
    pub consumer: String,
    /// `KURZ_ANALYTICS_BATCH`: about how many clicks a read takes per stream. An entry is a
    /// batch of clicks, so the worker asks for as many entries as make this many clicks at
    /// the size entries have had lately.
    pub batch: usize,
    /// `KURZ_ANALYTICS_BLOCK_MS`: how long a read waits for new entries.
    pub block: Duration,
    /// `KURZ_ANALYTICS_CLAIM_IDLE_MS`: pending entries idle this long are claimed.
    pub claim_idle: Duration,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    metrics_listen: Option<String>,
    click_streams: Option<u16>,
    analytics_consumer: Option<String>,
    analytics_batch: Option<usize>,
    analytics_block_ms: Option<u64>,
    analytics_claim_idle_ms: Option<u64>,
    geoip_db: Option<String>,
}

impl Settings {
    /// Every `KURZ_*` variable `kurz-analytics` reads: its own and the shared groups'.
    pub fn variables() -> BTreeSet<String> {
        kurz_settings::variables::of_binary::<Vars>(&[
            DatabaseSettings::variables,
            RedisSettings::variables,
            TelemetrySettings::variables,
        ])
    }

    /// Reads the worker's variables, and the shared groups (database, Redis, telemetry):
    ///
    /// | Variable | Default | Meaning |
    /// | --- | --- | --- |
    /// | `KURZ_METRICS_LISTEN` | `127.0.0.1:9465` | `address:port` of `/metrics` and `/healthz` (the key-pool worker has 9464); port 0 picks a free one |
    /// | `KURZ_CLICK_STREAMS` | 8 (`clicks::DEFAULT_STREAMS`) | stream shards, 1 to 256; must equal the redirect service's, or the shards above the smaller count are never read |
    /// | `KURZ_ANALYTICS_CONSUMER` | `{hostname}-{pid}` | this worker's consumer name in the group `kurz-analytics`; give a stable name (a pod name) to have a restarted worker finish its own pending entries at once |
    /// | `KURZ_ANALYTICS_BATCH` | 1,000 clicks | about how many clicks a read takes per stream, 1 to 10,000 (in whole entries, at least one); one transaction per read |
    /// | `KURZ_ANALYTICS_BLOCK_MS` | 1,000 ms | how long a read waits for new entries when the streams are drained |
    /// | `KURZ_ANALYTICS_CLAIM_IDLE_MS` | 30,000 ms | pending entries idle this long (their worker died or is stuck) are claimed with `XAUTOCLAIM` |
    /// | `KURZ_GEOIP_DB` | unset | path of a country database (MaxMind DB format); unset: every country is `(unknown)`; unreadable: the worker refuses to start |
    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let metrics_listen = socket_addr(
            "KURZ_METRICS_LISTEN",
            vars.metrics_listen.as_deref().unwrap_or("127.0.0.1:9465"),
        )?;
        let consumer = match vars.analytics_consumer {
            Some(name) => valid_consumer(name)?,
            None => default_consumer(),
        };
        let streams = StreamSettings {
            shards: in_range(
                "KURZ_CLICK_STREAMS",
                vars.click_streams.unwrap_or(DEFAULT_STREAMS),
                1..=MAX_STREAMS,
            )?,
            consumer,
            batch: in_range(
                "KURZ_ANALYTICS_BATCH",
                vars.analytics_batch.unwrap_or(1_000),
                BATCH_RANGE,
            )?,
            block: positive_millis(
                "KURZ_ANALYTICS_BLOCK_MS",
                vars.analytics_block_ms.unwrap_or(1_000),
            )?,
            claim_idle: positive_millis(
                "KURZ_ANALYTICS_CLAIM_IDLE_MS",
                vars.analytics_claim_idle_ms.unwrap_or(30_000),
            )?,
        };
        Ok(Self {
            database: DatabaseSettings::from_source(source)?,
            redis: RedisSettings::from_source(source)?,
            telemetry: TelemetrySettings::from_source(source)?,
            metrics_listen,
            streams,
            geoip_db: vars.geoip_db.map(PathBuf::from),
        })
    }
}

/// A consumer name goes into Redis commands and logs: printable, without spaces, bounded.
fn valid_consumer(name: String) -> Result<String, SettingsError> {
    let name = name.trim().to_owned();
    if name.len() > 200 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SettingsError::invalid(
            "KURZ_ANALYTICS_CONSUMER",
            "must be 1 to 200 printable ASCII characters without spaces",
        ));
    }
    Ok(name)
}

/// `{hostname}-{pid}`: unique among running workers, so no two share a consumer's pending
/// entries. A restart gets a new name; its predecessor's entries are claimed after
/// `KURZ_ANALYTICS_CLAIM_IDLE_MS`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "kurz-analytics".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(var: &'static str, value: &str) {
        let err = Settings::from_source(&Source::from_vars([(var, value)])).expect_err(value);
        assert!(err.to_string().contains(var), "{err}");
    }

    #[test]
    fn defaults_follow_the_redirect_service_and_the_brief() {
        let s = Settings::from_source(&Source::default()).expect("valid");
        assert_eq!(s.streams.shards, DEFAULT_STREAMS);
        assert_eq!(s.streams.batch, 1_000);
        assert_eq!(s.streams.block, Duration::from_secs(1));
        assert_eq!(s.streams.claim_idle, Duration::from_secs(30));
        assert_eq!(s.geoip_db, None);
        assert_eq!(s.metrics_listen.port(), 9465);
        let pid = std::process::id().to_string();
        assert!(
            s.streams.consumer.ends_with(&format!("-{pid}")),
            "{}",
            s.streams.consumer
        );
    }

    #[test]
    fn every_variable_is_read() {
        let source = Source::from_vars([
            ("KURZ_CLICK_STREAMS", "3"),
            ("KURZ_ANALYTICS_CONSUMER", "pod-7"),
            ("KURZ_ANALYTICS_BATCH", "50"),
            ("KURZ_ANALYTICS_BLOCK_MS", "20"),
            ("KURZ_ANALYTICS_CLAIM_IDLE_MS", "100"),
            ("KURZ_GEOIP_DB", "/data/country.mmdb"),
        ]);
        let s = Settings::from_source(&source).expect("valid");
        assert_eq!(s.streams.shards, 3);
        assert_eq!(s.streams.consumer, "pod-7");
        assert_eq!(s.streams.batch, 50);
        assert_eq!(s.streams.block, Duration::from_millis(20));
        assert_eq!(s.streams.claim_idle, Duration::from_millis(100));
        assert_eq!(s.geoip_db, Some(PathBuf::from("/data/country.mmdb")));
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_variable() {
        refused("KURZ_CLICK_STREAMS", "0");
        refused("KURZ_CLICK_STREAMS", "257");
        refused("KURZ_ANALYTICS_BATCH", "0");
        refused("KURZ_ANALYTICS_BATCH", "10001");
        refused("KURZ_ANALYTICS_BLOCK_MS", "0");
        refused("KURZ_ANALYTICS_CLAIM_IDLE_MS", "0");
        refused("KURZ_ANALYTICS_CONSUMER", "two words");
    }
}
