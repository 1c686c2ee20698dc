//! Click capture: every redirect (and expired answer) to a `GET` becomes a click event on a
//! Redis stream, for the analytics worker (`kurz-analytics`) to roll up.
//!
//! The request path only copies: [`Capture::click`] takes the code, the time, the client IP
//! and the two headers, and `try_send`s them into a bounded in-process queue. It never
//! waits: a full queue drops the click and counts it
//! (`kurz_click_events_dropped_total{reason="queue_full"}`), so Redis being slow or down
//! can never slow a redirect. Nor does it wake anything: the queue is a crossbeam array
//! channel, whose send is a slot write and an atomic load, and the background task,
//! [`Shipper`], takes what is queued every [`LINGER`] on its own timer. (A tokio channel's
//! send touches the receiver's waker state every time, a cache line shared with the
//! shipper's thread: measurable at 60,000 clicks a second.) The shipper does everything
//! else: truncating the IP, the visitor hash, encoding, and sending batches.
//!
//! A batch (up to `KURZ_CLICK_BATCH` clicks) is one stream entry: one `XADD key MAXLEN ~ N *
//! n <count> e1 <clicks>` on the next of the `KURZ_CLICK_STREAMS` shards, the clicks encoded
//! together ([`kurz_repository::clicks`]). One command per batch, not one per click, is what
//! keeps capture cheap for Redis and for this process; and one command is all-or-nothing by
//! itself. Taking the queue every [`LINGER`] means a steady trickle of clicks does not become
//! one command per click either. What happens on
//! failure depends on what is known to have reached Redis (see [`Outcome`]):
//! - nothing (the `PING` that opens every batch failed, so the connection is down or being
//!   re-established): the batch is held and retried with backoff (100 ms doubling to 2 s)
//!   while new clicks wait in the queue, and past its capacity are dropped and counted;
//! - maybe (a timeout, or the connection lost after the batch was written): the batch is
//!   dropped and counted under `reason="unconfirmed"`. The `XADD` may have run with only its
//!   reply lost, and sending it again would count those clicks twice; analytics prefers a
//!   missing click, which is visible in that counter, to an invented one, which is not.
//! - Redis answered with an error (out of memory, a key of the wrong type): dropped, as
//!   `reason="rejected"`; sending the same commands again would get the same answer.
//!
//! Privacy: the full IP is used for the visitor hash and then dropped; it never leaves the
//! process and is never logged. The hash is SipHash-2-4 (128 bits) of the IP and the whole
//! User-Agent under a key that changes every UTC day ([`Visitors`]), so a visitor can be
//! counted once per day and never followed across days. With `DNT: 1` or `Sec-GPC: 1` the
//! click is still counted, without a visitor hash.

use std::borrow::Cow;
use std::hash::Hasher as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::Method;
use actix_web::http::header::{DNT, HeaderMap, HeaderName, REFERER, USER_AGENT};
use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use kurz_http::backoff::Backoff;
use kurz_repository::clicks::{
    ClickEvent, ClickSource, MAX_REFERRER_BYTES, MAX_USER_AGENT_BYTES, entry_fields, stream_key,
    truncate_ip,
};
use kurz_repository::redis_conn::{RedisConn, Tuning};
use kurz_settings::{RedisSettings, TrustedProxies};
use kurz_telemetry::metrics::names;
use metrics::{Counter, Histogram};
use redis::streams::StreamMaxlen;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use siphasher::sip128::{Hasher128 as _, SipHasher24};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::settings::ClickSettings;

/// How long a batch may wait for Redis's answer. Far above the cache's budget: no request
/// waits for it, and a timeout costs a whole batch (`unconfirmed`).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the shipper takes what is queued: at most 50 sends a second however clicks
/// trickle in (more only when batches fill sooner), for a delay no reader of hourly counts
/// can see. Each send has a fixed cost (a timer wake-up, a `PING` and an `XADD` round trip):
/// at 5 ms the shipper's thread took 5% of the service's CPU under redirect-hot, at 20 ms
/// 3.7%.
pub const LINGER: Duration = Duration::from_millis(20);

/// How long a graceful stop waits for the queue to reach Redis.
pub const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// The `Sec-GPC` header (Global Privacy Control), which `http` has no constant for.
const SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");

/// The queue and the shipper, or `None` with `KURZ_CLICK_CAPTURE=off`.
pub fn start(
    settings: &ClickSettings,
    redis: &RedisSettings,
    trusted: TrustedProxies,
) -> anyhow::Result<Option<(Capture, Shipping)>> {
    if !settings.capture {
        return Ok(None);
    }
    let (queue, receiver) = crossbeam_channel::bounded(settings.queue_capacity);
    let capture = Capture {
        queue,
        trusted,
        queue_full: dropped("queue_full"),
    };
    let secret = match &settings.visitor_secret {
        Some(secret) => secret.clone(),
        None => {
            tracing::warn!(
                "KURZ_VISITOR_HASH_SECRET is not set: this process hashes visitors with a \
                 random secret of its own, so a visitor who reaches two instances (or this one \
                 after a restart) counts as two unique visitors"
            );
            random_secret()
        }
    };
    let shipper = Shipper::new(redis, settings, Visitors::new(secret))?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(shipper.run(receiver, settings.batch, stopped));
    let shipping = Shipping {
        stop,
        task,
        capture: capture.clone(),
    };
    Ok(Some((capture, shipping)))
}

/// The request side: copies a click into the queue. Cheap to clone (a channel handle).
#[derive(Clone)]
pub struct Capture {
    queue: Sender<Captured>,
    trusted: TrustedProxies,
    /// Registered once: looking a labelled series up per click would hash its labels.
    queue_full: Counter,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Records a click on `code` at `at`, unless `request` is not a `GET` (a `HEAD` follows
    /// nothing, so nobody clicked). Never waits; a full queue drops the click and counts it.
    pub fn click(&self, request: &HttpRequest, code: &str, at: DateTime<Utc>) {
        if request.method() != Method::GET {
            return;
        }
        let headers = request.headers();
        let ip = request
            .peer_addr()
            .map(|peer| kurz_http::client_ip::client_ip(peer.ip(), headers, &self.trusted));
        let scan = crate::query::is_scan(request.query_string().as_bytes());
        match self
            .queue
            .try_send(Captured::new(code, at, ip, headers, scan))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.queue_full.increment(1),
            // Only after the shipper stopped, which is after the server drained.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Clicks waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sets `kurz_click_queue_depth`; called when `/metrics` is scraped.
    pub fn record_gauges(&self) {
        metrics::gauge!(names::CLICK_QUEUE_DEPTH).set(self.queued() as f64);
    }
}

/// A click as the request path leaves it: raw, bounded copies, so the handler does no more
/// than copy and the queue's memory is bounded (about 1.1 KB a click at most).
#[derive(Debug)]
struct Captured {
    at: DateTime<Utc>,
    /// The full client IP. Stays in this process: the shipper hashes and truncates it.
    ip: Option<IpAddr>,
    /// `DNT: 1` or `Sec-GPC: 1`: no visitor hash.
    private: bool,
    /// The request came from the link's QR code (`qr=1`).
    scan: bool,
    /// The code, then the kept `Referer`, then the kept `User-Agent`: one allocation a click.
    text: Box<[u8]>,
    code_len: usize,
    referrer_len: Option<usize>,
    agent_len: Option<usize>,
    /// A digest of the User-Agent's bytes past what is kept, so the visitor hash still covers
    /// the whole header without the queue holding kilobytes of it. Only overlong agents
    /// (rarely browsers) pay for it.
    agent_rest: Option<u64>,
}

impl Captured {
    fn new(
        code: &str,
        at: DateTime<Utc>,
        ip: Option<IpAddr>,
        headers: &HeaderMap,
        scan: bool,
    ) -> Self {
        let referrer = headers
            .get(REFERER)
            .map(|v| cut(v.as_bytes(), MAX_REFERRER_BYTES));
        let agent = headers.get(USER_AGENT).map(|v| v.as_bytes());
        let kept_agent = agent.map(|a| cut(a, MAX_USER_AGENT_BYTES));
        let agent_rest = agent.and_then(overflow_digest);
        let lengths = [referrer, kept_agent].map(|part| part.map_or(0, <[u8]>::len));
        let mut text = Vec::with_capacity(code.len() + lengths[0] + lengths[1]);
        for part in [Some(code.as_bytes()), referrer, kept_agent]
            .into_iter()
            .flatten()
        {
            text.extend_from_slice(part);
        }
        Self {
            at,
            ip,
            private: says_one(headers, &DNT) || says_one(headers, &SEC_GPC),
            scan,
            text: text.into_boxed_slice(),
            code_len: code.len(),
            referrer_len: referrer.map(<[u8]>::len),
            agent_len: kept_agent.map(<[u8]>::len),
            agent_rest,
        }
    }

    fn code(&self) -> &[u8] {
        &self.text[..self.code_len]
    }

    fn referrer(&self) -> Option<&[u8]> {
        let start = self.code_len;
        self.referrer_len.map(|len| &self.text[start..start + len])
    }

    fn agent(&self) -> Option<&[u8]> {
        let start = self.code_len + self.referrer_len.unwrap_or(0);
        self.agent_len.map(|len| &self.text[start..start + len])
    }
}

/// A digest of `agent`'s bytes past the [`MAX_USER_AGENT_BYTES`] that are kept, if it is
/// longer. Fixed keys: every instance must digest the same agent alike. It never leaves the
/// process; only the keyed visitor hash of it does.
fn overflow_digest(agent: &[u8]) -> Option<u64> {
    let rest = agent
        .get(MAX_USER_AGENT_BYTES..)
        .filter(|rest| !rest.is_empty())?;
    let mut digest = siphasher::sip::SipHasher13::new();
    digest.write(rest);
    Some(digest.finish())
}

/// At most `max` bytes of `bytes` (characters are respected later, in [`text`]).
fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// Whether the header `name` is `1` (as `DNT` and `Sec-GPC` say "do not track me").
fn says_one(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get(name)
        .is_some_and(|value| value.as_bytes().trim_ascii() == b"1")
}

/// A header's bytes as text, borrowed unless they need mending: a character that [`cut`]
/// split is left out whole, and bytes that are not UTF-8 (rare, but a client can send them)
/// become U+FFFD.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        // Only an incomplete character at the very end: the cut went through it.
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A random visitor secret for a process started without `KURZ_VISITOR_HASH_SECRET`.
fn random_secret() -> SecretString {
    use rand::distr::{Alphanumeric, SampleString as _};
    // 43 alphanumerics are 256 bits.
    SecretString::from(Alphanumeric.sample_string(&mut rand::rng(), 43))
}

/// The visitor hash: SipHash-2-4, 128 bits, of the full IP and the full User-Agent, keyed
/// with the day's key, the first 16 bytes of SHA-256(secret || "kurz-visitor-v1" ||
/// "YYYY-MM-DD") for the click's UTC day. A new key each day means yesterday's hashes can
/// never match today's, so nobody can be followed from one day to the next, and deleting
/// the secret makes every past hash meaningless.
///
/// Only the shipper task hashes, so the day's key is cached in a plain field: one date
/// comparison a click, and one SHA-256 a day.
pub struct Visitors {
    secret: SecretString,
    day: Option<NaiveDate>,
    key: [u8; 16],
}

impl std::fmt::Debug for Visitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visitors")
            .field("day", &self.day)
            .finish_non_exhaustive()
    }
}

impl Visitors {
    pub fn new(secret: SecretString) -> Self {
        Self {
            secret,
            day: None,
            key: [0; 16],
        }
    }

    /// The visitor hash of a click at `at` from `ip` with the User-Agent `agent` (`rest`: the
    /// digest of its bytes past the kept ones, if any).
    fn hash(
        &mut self,
        at: DateTime<Utc>,
        ip: IpAddr,
        agent: Option<&[u8]>,
        rest: Option<u64>,
    ) -> [u8; 16] {
        let key = self.key_for(at.date_naive());
        let mut hasher = SipHasher24::new_with_key(&key);
        // Lengths and tags first, so that no two different inputs run together alike.
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                hasher.write_u8(4);
                hasher.write(&v4.octets());
            }
            IpAddr::V6(v6) => {
                hasher.write_u8(6);
                hasher.write(&v6.octets());
            }
        }
        match agent {
            Some(agent) => {
                hasher.write_u8(1);
                hasher.write_usize(agent.len());
                hasher.write(agent);
            }
            None => hasher.write_u8(0),
        }
        if let Some(rest) = rest {
            hasher.write_u64(rest);
        }
        hasher.finish128().as_bytes()
    }

    fn key_for(&mut self, day: NaiveDate) -> [u8; 16] {
        if self.day != Some(day) {
            self.key = daily_key(&self.secret, day);
            self.day = Some(day);
        }
        self.key
    }
}

/// The first 16 bytes of SHA-256(secret || "kurz-visitor-v1" || "YYYY-MM-DD").
fn daily_key(secret: &SecretString, day: NaiveDate) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(secret.expose_secret().as_bytes())
        .chain_update(b"kurz-visitor-v1")
        .chain_update(day.format("%Y-%m-%d").to_string().as_bytes())
        .finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What became of one batch.
#[derive(Debug)]
pub enum Outcome {
    /// In Redis, every click of it.
    Shipped(usize),
    /// Nothing reached Redis (its connection is down): hold the batch and try again.
    NotSent(RedisError),
    /// Written to Redis, but whether the `XADD` ran is unknown (a timeout, or the connection lost
    /// before the reply): dropped rather than risk counting its clicks twice.
    Unconfirmed(RedisError),
    /// Redis refused it with an error reply: dropped, since the same commands would be
    /// refused again.
    Rejected(RedisError),
}

/// The background side: turns raw clicks into events and sends them to Redis in batches.
pub struct Shipper {
    /// Its own connection, never the cache's: a batch of 512 clicks must not queue in front
    /// of a redirect's cache lookup.
    conn: RedisConn,
    streams: u16,
    next_shard: u16,
    maxlen: usize,
    visitors: Visitors,
    /// Whether the last batch reached Redis, so a long outage logs once, not per batch.
    healthy: bool,
    shipped: Counter,
    unconfirmed: Counter,
    rejected: Counter,
    duration: Histogram,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("streams", &self.streams)
            .field("next_shard", &self.next_shard)
            .field("maxlen", &self.maxlen)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Opens no connection yet: Redis may be down at start, like for the cache.
    pub fn new(
        redis: &RedisSettings,
        settings: &ClickSettings,
        visitors: Visitors,
    ) -> anyhow::Result<Self> {
        // One attempt per call: the held batch's backoff paces reconnecting, and a retried
        // XADD after a lost answer would add the batch twice.
        let tuning = Tuning {
            response_timeout: RESPONSE_TIMEOUT,
            retries: 0,
        };
        let conn = RedisConn::lazy(redis, tuning)
            .context("building the click capture's Redis connection")?;
        Ok(Self {
            conn,
            streams: settings.streams,
            next_shard: 0,
            maxlen: settings.stream_maxlen,
            visitors,
            healthy: true,
            shipped: metrics::counter!(names::CLICK_EVENTS_SHIPPED),
            unconfirmed: dropped("unconfirmed"),
            rejected: dropped("rejected"),
            duration: metrics::histogram!(names::CLICK_BATCH_DURATION),
        })
    }

    /// Sends `events` to the next stream as one entry; counts and logs the outcome.
    pub async fn ship<S: Serialize>(&mut self, events: &[ClickEvent<S>]) -> Outcome {
        let started = Instant::now();
        let outcome = self.send(events).await;
        match &outcome {
            Outcome::Shipped(n) => {
                self.duration.record(started.elapsed());
                self.shipped.increment(*n as u64);
                if !self.healthy {
                    tracing::info!("click capture reaches Redis again");
                }
            }
            Outcome::NotSent(_) => {}
            Outcome::Unconfirmed(_) => self.unconfirmed.increment(events.len() as u64),
            Outcome::Rejected(_) => self.rejected.increment(events.len() as u64),
        }
        let healthy = matches!(outcome, Outcome::Shipped(_));
        if self.healthy && !healthy {
            tracing::warn!(outcome = ?outcome, "click capture cannot reach Redis; clicks queue, then are dropped and counted");
        }
        self.healthy = healthy;
        outcome
    }

    async fn send<S: Serialize>(&mut self, events: &[ClickEvent<S>]) -> Outcome {
        let key = stream_key(self.next_shard);
        // Proves the connection is up before anything of the batch is written, so that a
        // failure here is known to have sent nothing (a failed reconnect and a refused one
        // give the same errors as a connection lost mid-batch; only their timing tells). On
        // a cluster PING would go to every master and prove nothing about the stream's: the
        // probe is a read of the stream's own key there.
        let probe = if self.conn.is_cluster() {
            redis::cmd("XLEN").arg(&key).clone()
        } else {
            redis::cmd("PING")
        };
        if let Err(e) = probe.query_async::<()>(&mut self.conn).await {
            return Outcome::NotSent(e);
        }
        self.next_shard = (self.next_shard + 1) % self.streams;
        // KURZ_CLICK_STREAM_MAXLEN counts clicks and Redis trims entries: as many entries of
        // this batch's size as make that many clicks.
        let entries = (self.maxlen / events.len().max(1)).max(1);
        let added = redis::cmd("XADD")
            .arg(&key)
            .arg(StreamMaxlen::Approx(entries))
            .arg("*")
            .arg(&entry_fields(events)[..])
            .query_async::<()>(&mut self.conn)
            .await;
        match added {
            Ok(()) => {
                tracing::trace!(key, clicks = events.len(), "click batch shipped");
                Outcome::Shipped(events.len())
            }
            Err(e) if not_run(&e) => Outcome::NotSent(e),
            Err(e) if answered(&e) => Outcome::Rejected(e),
            Err(e) => Outcome::Unconfirmed(e),
        }
    }

    /// The event of a raw click: the IP truncated, the visitor hash computed, the headers
    /// as text (borrowed from the click).
    fn event<'a>(&mut self, click: &'a Captured) -> ClickEvent<Cow<'a, str>> {
        let visitor = match click.ip {
            Some(ip) if !click.private => {
                Some(
                    self.visitors
                        .hash(click.at, ip, click.agent(), click.agent_rest),
                )
            }
            _ => None,
        };
        ClickEvent {
            code: text(click.code()),
            at: click.at,
            referrer: click.referrer().map(text),
            user_agent: click.agent().map(text),
            ip_prefix: click.ip.map(truncate_ip),
            visitor,
            source: if click.scan {
                ClickSource::Qr
            } else {
                ClickSource::Link
            },
        }
    }

    /// Every [`LINGER`], ships what is queued, in batches of up to `batch`; once `stop` fires,
    /// ships what is still queued and returns.
    async fn run(
        mut self,
        queue: Receiver<Captured>,
        batch: usize,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut ticks = tokio::time::interval(LINGER);
        // A slow send delays the next round rather than bunching rounds up after it.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut raw = Vec::with_capacity(batch);
        loop {
            // After `stop` no more clicks can come (the server has drained).
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stop => true,
            };
            loop {
                raw.clear();
                raw.extend(queue.try_iter().take(batch));
                if raw.is_empty() {
                    break;
                }
                let events: Vec<_> = raw.iter().map(|click| self.event(click)).collect();
                self.deliver(&events).await;
                if raw.len() < batch {
                    break;
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Ships `events`, holding them through failures that sent nothing.
    async fn deliver<S: Serialize>(&mut self, events: &[ClickEvent<S>]) {
        let mut backoff = backoff();
        while let Outcome::NotSent(e) = self.ship(events).await {
            let wait = backoff.after_failure();
            tracing::debug!(error = %e, ?wait, "click batch not sent; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether Redis itself answered with an error, so the batch reached it.
fn answered(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
    )
}

/// Whether the answer says the command was not run: a cluster's redirections and failover
/// answers (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, LOADING), or no
/// connection to the slot's node. The batch is held and sent again, once the client has
/// followed the cluster to the slot's new master.
fn not_run(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
        ),
        ErrorKind::ClusterConnectionNotFound => true,
        _ => false,
    }
}

fn dropped(reason: &'static str) -> Counter {
    metrics::counter!(names::CLICK_EVENTS_DROPPED, "reason" => reason)
}

/// Waits between attempts to send a held batch: 100 ms, doubling, at most 2 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
}

/// The running shipper, for a graceful stop.
#[derive(Debug)]
pub struct Shipping {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    capture: Capture,
}

impl Shipping {
    /// Ships what is queued, for at most [`FLUSH_BOUND`]; called once the server has drained.
    pub async fn flush(self) {
        let Self {
            stop,
            mut task,
            capture,
        } = self;
        let _ = stop.send(());
        if tokio::time::timeout(FLUSH_BOUND, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                lost = capture.queued(),
                "click capture could not flush its queue to Redis before stopping"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use actix_web::test::TestRequest;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn backoff_doubles_from_100_ms_to_at_most_2_s() {
        let mut backoff = backoff();
        let waits: Vec<u64> = (0..7)
            .map(|_| backoff.after_failure().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_600, 2_000, 2_000]);
    }

    #[test]
    fn the_daily_key_is_sha256_of_secret_label_and_day() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("valid");
        let digest = Sha256::digest(b"0123456789abcdef0123456789abcdefkurz-visitor-v12026-12-01");
        let key = daily_key(&secret("0123456789abcdef0123456789abcdef"), day);
        assert_eq!(key[..], digest[..16]);
    }

    #[test]
    fn a_visitor_keeps_its_hash_through_a_day_and_gets_a_new_one_the_next() {
        let mut visitors = Visitors::new(secret("a secret that is long enough for this"));
        let ip: IpAddr = "198.51.100.7".parse().expect("valid");
        let agent = Some(&b"Firefox"[..]);
        let morning = visitors.hash(at("2026-12-01T00:00:01Z"), ip, agent, None);
        let night = visitors.hash(at("2026-12-01T23:59:59Z"), ip, agent, None);
        let next_day = visitors.hash(at("2026-12-02T00:00:00Z"), ip, agent, None);
        assert_eq!(morning, night);
        assert_ne!(morning, next_day);
        let other_ip = "198.51.100.8".parse().expect("valid");
        assert_ne!(
            morning,
            visitors.hash(at("2026-12-01T12:00:00Z"), other_ip, agent, None)
        );
        let other_agent = Some(&b"Chrome"[..]);
        assert_ne!(
            morning,
            visitors.hash(at("2026-12-01T12:00:00Z"), ip, other_agent, None)
        );
        let mut other_secret = Visitors::new(secret("another secret, just as long as that"));
        assert_ne!(
            morning,
            other_secret.hash(at("2026-12-01T12:00:00Z"), ip, agent, None)
        );
    }

    #[test]
    fn agents_that_differ_past_the_kept_bytes_are_different_visitors() {
        let mut visitors = Visitors::new(secret("a secret that is long enough for this"));
        let ip: IpAddr = "2001:db8::1".parse().expect("valid");
        let base = "x".repeat(MAX_USER_AGENT_BYTES);
        let day = at("2026-12-01T12:00:00Z");
        let mut hash = |agent: String| {
            let kept = cut(agent.as_bytes(), MAX_USER_AGENT_BYTES);
            assert_eq!(kept, base.as_bytes(), "the same kept bytes");
            visitors.hash(day, ip, Some(kept), overflow_digest(agent.as_bytes()))
        };
        let one = hash(format!("{base}one"));
        let two = hash(format!("{base}two"));
        assert_ne!(one, two);
        assert_eq!(one, hash(format!("{base}one")));
        assert_eq!(
            overflow_digest(base.as_bytes()),
            None,
            "nothing past the kept bytes"
        );
    }

    #[test]
    fn a_capture_keeps_bounded_headers_and_the_privacy_signals() {
        let long_referrer = format!("https://news.example/{}", "r".repeat(600));
        let request = TestRequest::get()
            .insert_header((REFERER, long_referrer.as_str()))
            .insert_header((USER_AGENT, "Firefox"))
            .insert_header((SEC_GPC, "1"))
            .to_http_request();
        let now = at("2026-12-01T12:00:00Z");
        let click = Captured::new("abc123", now, None, request.headers(), false);
        assert_eq!(click.code(), b"abc123");
        assert_eq!(
            click.referrer(),
            Some(&long_referrer.as_bytes()[..MAX_REFERRER_BYTES])
        );
        assert_eq!(click.agent(), Some(&b"Firefox"[..]));
        assert!(click.private);
        let plain = TestRequest::get()
            .insert_header((DNT, "0"))
            .to_http_request();
        let click = Captured::new("abc123", now, None, plain.headers(), false);
        assert!(!click.private, "DNT: 0 asks for nothing");
        assert_eq!((click.referrer(), click.agent()), (None, None));
    }

    #[test]
    fn a_queue_slot_is_small_enough_to_allocate_every_slot_at_start() {
        // The array channel allocates all KURZ_CLICK_QUEUE_CAPACITY slots up front: at the
        // default 65,536, 128 bytes a slot are 8 MB (README, settings).
        let slot = std::mem::size_of::<Captured>();
        assert!(slot <= 120, "{slot} bytes");
    }

    #[test]
    fn header_text_drops_a_character_the_cut_split_and_replaces_invalid_bytes() {
        let accented = "é".repeat(3); // 6 bytes
        assert_eq!(text(cut(accented.as_bytes(), 5)), "éé");
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(text(b"plain"), "plain");
    }
}
