//! Click capture: what a redirect leaves on the Redis click streams, and what it does not.
//!
//! "Makes no click" is checked after a graceful stop, which flushes the queue: whatever the
//! service captured is in Redis by then, so an empty stream proves nothing was captured
//! (no waiting for something not to happen).

use chrono::{DateTime, Duration as TimeDelta, Utc};
use deadpool_redis::redis;
use kurz_redirect::Settings;
use kurz_redirect::clicks::{Outcome, Shipper, Visitors};
use kurz_repository::clicks::{
    ClickEvent, ClickSource, DEFAULT_STREAMS, MAX_REFERRER_BYTES, MAX_USER_AGENT_BYTES,
    events_from_fields, stream_key,
};
use kurz_repository::{Behaviour, LinkRepository};
use kurz_telemetry::metrics::names;
use kurz_testkit::metrics::scrape;
use kurz_testkit::{Fault, RunningApp, TestEnv, eventually};
use redis::streams::{StreamId, StreamRangeReply};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, REFERER, USER_AGENT};

use crate::helpers::{BROWSER, browser, insert, insert_with, spawn_redirect};

/// The loopback peer is a trusted proxy, so `X-Forwarded-For` says who the client is.
const TRUST_LOOPBACK: (&str, &str) = ("KURZ_TRUSTED_PROXIES", "127.0.0.1/32");

/// The entries of stream `shard`, oldest first.
async fn stream(env: &TestEnv, shard: u16) -> Vec<StreamId> {
    let mut conn = env.redis_conn().await;
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream_key(shard))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    reply.ids
}

/// An entry's fields, as bytes.
fn fields(entry: &StreamId) -> Vec<(String, Vec<u8>)> {
    entry
        .map
        .keys()
        .map(|k| (k.clone(), entry.get(k).expect("bytes")))
        .collect()
}

/// The clicks of one entry, decoded as the analytics worker does.
fn decode(entry: &StreamId) -> Vec<ClickEvent> {
    let fields = fields(entry);
    events_from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).expect("clicks")
}

/// Every click on every click stream (the default shard count).
async fn events(env: &TestEnv) -> Vec<ClickEvent> {
    let mut all = Vec::new();
    for shard in 0..DEFAULT_STREAMS {
        all.extend(stream(env, shard).await.iter().flat_map(decode));
    }
    all
}

/// Every byte of every entry on the click streams, field names and values, for checking
/// what is nowhere in them.
async fn raw(env: &TestEnv) -> Vec<u8> {
    let mut all = Vec::new();
    for shard in 0..DEFAULT_STREAMS {
        for entry in stream(env, shard).await {
            for (name, value) in fields(&entry) {
                all.extend_from_slice(name.as_bytes());
                all.extend_from_slice(&value);
            }
        }
    }
    all
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that the full address `ip` is on no stream, as text or as bytes.
async fn assert_nowhere(env: &TestEnv, ip: &str) {
    let bytes = raw(env).await;
    let octets = match ip.parse::<std::net::IpAddr>().expect("an IP") {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    assert!(
        !contains(&bytes, ip.as_bytes()),
        "{ip} is on a stream as text"
    );
    assert!(!contains(&bytes, &octets), "{ip} is on a stream as bytes");
}

/// Waits (bounded) until the streams hold at least `n` clicks, and returns them.
async fn wait_events(env: &TestEnv, n: usize) -> Vec<ClickEvent> {
    eventually(&format!("{n} clicks"), || async {
        events(env).await.len() >= n
    })
    .await;
    events(env).await
}

/// The click whose referrer is `referrer` (tests tag each request with one).
fn tagged<'a>(events: &'a [ClickEvent], referrer: &str) -> &'a ClickEvent {
    let found: Vec<&ClickEvent> = events
        .iter()
        .filter(|e| e.referrer.as_deref() == Some(referrer))
        .collect();
    assert_eq!(found.len(), 1, "one click tagged {referrer}: {events:?}");
    found[0]
}

/// `GET path` from the client `ip` (through the trusted loopback proxy), tagged `referrer`.
async fn click_from(app: &RunningApp, path: &str, ip: &str, referrer: &str) -> StatusCode {
    tagged_get(app, path, Some(ip), referrer).await.status()
}

/// `GET path` tagged `referrer`, from the client `ip` if given.
async fn tagged_get(
    app: &RunningApp,
    path: &str,
    ip: Option<&str>,
    referrer: &str,
) -> reqwest::Response {
    let mut request = browser().get(app.url(path)).header(REFERER, referrer);
    if let Some(ip) = ip {
        request = request.header("X-Forwarded-For", ip);
    }
    request.send().await.expect("GET")
}

#[tokio::test]
async fn a_redirect_becomes_one_click_with_code_time_headers_truncated_ip_and_visitor() {
    let env = TestEnv::start().await;
    insert(&env, "clicked", "https://example.com/c", None).await;
    let app = spawn_redirect(&env, &[TRUST_LOOPBACK]).await;
    let before = Utc::now().timestamp_millis();

    let status = click_from(&app, "/clicked", "203.0.113.77", "https://news.example/a").await;
    let after = Utc::now().timestamp_millis();

    assert_eq!(status, StatusCode::FOUND);
    let event = wait_events(&env, 1).await.remove(0);
    assert_eq!(event.code, "clicked");
    let at = event.at.timestamp_millis();
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    assert_eq!(event.referrer.as_deref(), Some("https://news.example/a"));
    assert_eq!(event.user_agent.as_deref(), Some(BROWSER));
    assert_eq!(event.ip_prefix, Some("203.0.113.0".parse().expect("an IP")));
    assert!(event.visitor.is_some());
    assert_nowhere(&env, "203.0.113.77").await;
    // Stopped (and so flushed): still exactly one.
    app.stop().await.expect("clean stop");
    assert_eq!(events(&env).await.len(), 1);
}

#[tokio::test]
async fn a_qr_scan_is_a_click_from_qr_and_its_marker_is_not_forwarded() {
    let env = TestEnv::start().await;
    let forwarding = Behaviour {
        forward_query: true,
        ..Behaviour::default()
    };
    insert_with(
        &env,
        "scanned",
        "https://example.com/s?a=1",
        None,
        forwarding,
    )
    .await;
    let app = spawn_redirect(&env, &[]).await;

    let scan = tagged_get(&app, "/scanned?qr=1&utm_source=poster", None, "r:scan").await;
    let click = tagged_get(&app, "/scanned", None, "r:click").await;
    app.stop().await.expect("clean stop");

    assert_eq!(scan.status(), StatusCode::FOUND);
    assert_eq!(
        scan.headers()[LOCATION],
        "https://example.com/s?a=1&utm_source=poster"
    );
    assert_eq!(click.headers()[LOCATION], "https://example.com/s?a=1");
    let all = events(&env).await;
    assert_eq!(tagged(&all, "r:scan").source, ClickSource::Qr);
    assert_eq!(tagged(&all, "r:click").source, ClickSource::Link);
}

#[tokio::test]
async fn an_ipv6_client_is_kept_as_its_48() {
    let env = TestEnv::start().await;
    insert(&env, "six", "https://example.com/6", None).await;
    let app = spawn_redirect(&env, &[TRUST_LOOPBACK]).await;

    let status = click_from(
        &app,
        "/six",
        "2001:db8:abcd:1234::1",
        "https://six.example/",
    )
    .await;

    assert_eq!(status, StatusCode::FOUND);
    let event = wait_events(&env, 1).await.remove(0);
    assert_eq!(
        event.ip_prefix,
        Some("2001:db8:abcd::".parse().expect("an IP"))
    );
    assert_nowhere(&env, "2001:db8:abcd:1234::1").await;
}

#[tokio::test]
async fn only_get_redirects_and_expired_answers_make_clicks() {
    let env = TestEnv::start().await;
    insert(&env, "live", "https://example.com/live", None).await;
    let past = Some(Utc::now() - TimeDelta::hours(1));
    insert(&env, "expired", "https://example.com/old", past).await;
    insert(&env, "disabled", "https://example.com/off", None).await;
    let disabled = env.repository().set_disabled("disabled", true).await;
    assert!(disabled.expect("disable").is_some());
    let once = Behaviour {
        max_visits: Some(1),
        ..Behaviour::default()
    };
    insert_with(&env, "once", "https://example.com/once", None, once).await;
    let app = spawn_redirect(&env, &[]).await;
    let client = browser();
    let get = |path: &str| client.get(app.url(path)).send();

    let head = client.head(app.url("/live")).send().await.expect("HEAD");
    let unknown = get("/no-such-code").await.expect("GET");
    let off = get("/disabled").await.expect("GET");
    let gone = get("/expired").await.expect("GET");
    let first = get("/once").await.expect("GET");
    let used_up = get("/once").await.expect("GET");
    app.stop().await.expect("clean stop");

    assert_eq!(head.status(), StatusCode::FOUND);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(off.status(), StatusCode::GONE);
    assert_eq!(gone.status(), StatusCode::GONE);
    assert_eq!(first.status(), StatusCode::FOUND);
    assert_eq!(used_up.status(), StatusCode::GONE);
    let mut codes: Vec<String> = events(&env).await.into_iter().map(|e| e.code).collect();
    codes.sort();
    assert_eq!(codes, ["expired", "once", "once"]);
}

#[tokio::test]
async fn privacy_signals_drop_the_visitor_and_hashes_follow_the_full_ip_and_agent() {
    let env = TestEnv::start().await;
    insert(&env, "private", "https://example.com/p", None).await;
    let secret = (
        "KURZ_VISITOR_HASH_SECRET",
        "a visitor secret of thirty-two bytes or more",
    );
    let app = spawn_redirect(&env, &[TRUST_LOOPBACK, secret]).await;
    let client = browser();

    let plain = ["r:first", "r:again", "r:neighbour"];
    for (tag, ip) in plain
        .iter()
        .zip(["203.0.113.77", "203.0.113.77", "203.0.113.78"])
    {
        assert_eq!(
            click_from(&app, "/private", ip, tag).await,
            StatusCode::FOUND
        );
    }
    let other_agent = client
        .get(app.url("/private"))
        .header("X-Forwarded-For", "203.0.113.77")
        .header(REFERER, "r:other-agent")
        .header(USER_AGENT, "Mozilla/5.0 (Macintosh) Safari/605.1.15")
        .send();
    assert_eq!(other_agent.await.expect("GET").status(), StatusCode::FOUND);
    for (tag, header) in [("r:dnt", "DNT"), ("r:gpc", "Sec-GPC")] {
        let response = client
            .get(app.url("/private"))
            .header("X-Forwarded-For", "203.0.113.77")
            .header(REFERER, tag)
            .header(header, "1")
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::FOUND);
    }
    app.stop().await.expect("clean stop");

    let all = events(&env).await;
    assert_eq!(all.len(), 6, "{all:?}");
    let visitor = |tag| tagged(&all, tag).visitor;
    let first = visitor("r:first").expect("a visitor hash");
    assert_eq!(visitor("r:again"), Some(first), "same IP and agent");
    let neighbour = visitor("r:neighbour").expect("a visitor hash");
    assert_ne!(neighbour, first, "another IP of the same /24");
    let other_agent = visitor("r:other-agent").expect("a visitor hash");
    assert_ne!(other_agent, first, "another agent");
    for tag in ["r:dnt", "r:gpc"] {
        let event = tagged(&all, tag);
        assert_eq!(event.visitor, None, "{tag}: {event:?}");
        assert_eq!(
            event.ip_prefix,
            Some("203.0.113.0".parse().expect("an IP")),
            "{tag}: still counted, by network"
        );
    }
    assert_nowhere(&env, "203.0.113.77").await;
    assert_nowhere(&env, "203.0.113.78").await;
}

#[tokio::test]
async fn long_referrers_and_user_agents_are_cut_to_their_bound() {
    let env = TestEnv::start().await;
    insert(&env, "longhdr", "https://example.com/l", None).await;
    let app = spawn_redirect(&env, &[]).await;
    let referrer = format!(
        "https://long.example/{}",
        "r".repeat(2 * MAX_REFERRER_BYTES)
    );
    let agent = format!("Mozilla/5.0 {}", "u".repeat(2 * MAX_USER_AGENT_BYTES));

    let response = browser()
        .get(app.url("/longhdr"))
        .header(REFERER, referrer.as_str())
        .header(USER_AGENT, agent.as_str())
        .send()
        .await
        .expect("GET");

    assert_eq!(response.status(), StatusCode::FOUND);
    let event = wait_events(&env, 1).await.remove(0);
    assert_eq!(
        event.referrer.as_deref(),
        Some(&referrer[..MAX_REFERRER_BYTES])
    );
    assert_eq!(
        event.user_agent.as_deref(),
        Some(&agent[..MAX_USER_AGENT_BYTES])
    );
}

#[tokio::test]
async fn with_capture_off_redirects_leave_no_entries() {
    let env = TestEnv::start().await;
    insert(&env, "quiet", "https://example.com/q", None).await;
    let app = spawn_redirect(&env, &[("KURZ_CLICK_CAPTURE", "off")]).await;

    for _ in 0..3 {
        let response = browser().get(app.url("/quiet")).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::FOUND);
    }
    app.stop().await.expect("clean stop");

    assert!(raw(&env).await.is_empty());
}

#[tokio::test]
async fn with_redis_down_redirects_work_clicks_queue_then_drop_and_capture_resumes() {
    let env = TestEnv::start().await;
    insert(&env, "outage", "https://example.com/o", None).await;
    let proxy = env.redis_proxy().await;
    let via_proxy = env.redis_url_via(&proxy);
    let app = spawn_redirect(
        &env,
        &[
            ("KURZ_REDIS_URL", via_proxy.as_str()),
            ("KURZ_CLICK_QUEUE_CAPACITY", "2"),
            ("KURZ_CLICK_BATCH", "4"),
        ],
    )
    .await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let client = browser();
    let redirect = |tag: String| {
        let request = client.get(app.url("/outage")).header(REFERER, tag);
        async move {
            let response = request.send().await.expect("GET");
            let location = response.headers().get(LOCATION).cloned();
            (response.status(), location)
        }
    };
    let dropped = |reason| [("reason", reason)];
    let start = scrape(base).await;
    assert_eq!(redirect("r:up".to_owned()).await.0, StatusCode::FOUND);
    wait_events(&env, 1).await;

    proxy.set(Fault::Reset);
    let down = std::sync::atomic::AtomicUsize::new(0);
    let redirect_down = || async {
        let i = down.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (status, location) = redirect(format!("r:down-{i}")).await;
        assert_eq!(status, StatusCode::FOUND, "redirect {i} with Redis down");
        assert_eq!(location.expect("Location"), "https://example.com/o");
    };
    for _ in 0..20 {
        redirect_down().await;
    }
    // The shipper takes what is queued every 20 ms and holds the batch it cannot send, so
    // the queue fills behind it: a click at a time until it is seen full.
    eventually("the queue is full behind the held batch", || async {
        redirect_down().await;
        scrape(base).await.sum(names::CLICK_QUEUE_DEPTH, &[]) == 2.0
    })
    .await;
    let down = down.into_inner();
    let queue_full = scrape(base)
        .await
        .sum(names::CLICK_EVENTS_DROPPED, &dropped("queue_full"))
        - start.sum(names::CLICK_EVENTS_DROPPED, &dropped("queue_full"));
    // At most the queue (2) and one batch taken from it (2) are kept; the rest were dropped.
    assert!(
        queue_full >= (down - 2 - 2) as f64,
        "{queue_full} of {down} dropped"
    );

    proxy.set(Fault::None);
    // The held batch and the queue go out first (a click sent now could find it still full).
    let kept = 1 + down - queue_full as usize;
    wait_events(&env, kept).await;
    assert_eq!(redirect("r:back".to_owned()).await.0, StatusCode::FOUND);
    eventually("the click after the outage lands", || async {
        events(&env)
            .await
            .iter()
            .any(|e| e.referrer.as_deref() == Some("r:back"))
    })
    .await;
    // Every click is accounted for: in a stream, or dropped and counted, none twice.
    let end = scrape(base).await;
    let dropped_total =
        end.sum(names::CLICK_EVENTS_DROPPED, &[]) - start.sum(names::CLICK_EVENTS_DROPPED, &[]);
    let landed = events(&env).await.len();
    assert_eq!(
        landed as f64 + dropped_total,
        (down + 2) as f64,
        "{}",
        end.0
    );
    assert_eq!(
        end.sum(names::CLICK_EVENTS_DROPPED, &dropped("unconfirmed"))
            - start.sum(names::CLICK_EVENTS_DROPPED, &dropped("unconfirmed")),
        0.0,
        "nothing was in flight when Redis went away"
    );
    assert!(end.sum(names::CLICK_EVENTS_SHIPPED, &[]) >= landed as f64);
    end.assert_has_all(&[names::CLICK_BATCH_DURATION]);
}

/// A shipper on this env's Redis, as the service builds it, with extra `KURZ_*` variables.
fn shipper(env: &TestEnv, extra: &[(&str, &str)]) -> Shipper {
    let mut source = env.source();
    for (k, v) in extra {
        source = source.with(k, *v);
    }
    let settings = Settings::from_source(&source).expect("valid settings");
    let secret = "a visitor secret of thirty-two bytes or more".to_owned();
    Shipper::new(
        &settings.redis,
        &settings.clicks,
        Visitors::new(secret.into()),
    )
    .expect("a shipper")
}

fn event(i: usize) -> ClickEvent {
    ClickEvent {
        code: format!("code{i}"),
        at: DateTime::from_timestamp_millis(1_764_600_000_000 + i as i64).expect("valid"),
        referrer: Some("https://news.example/".to_owned()),
        user_agent: Some(BROWSER.to_owned()),
        ip_prefix: Some("198.51.100.0".parse().expect("valid")),
        visitor: Some([7; 16]),
        source: ClickSource::Link,
    }
}

async fn stream_len(env: &TestEnv, shard: u16) -> usize {
    let mut conn = env.redis_conn().await;
    redis::cmd("XLEN")
        .arg(stream_key(shard))
        .query_async(&mut conn)
        .await
        .expect("XLEN")
}

#[tokio::test]
async fn each_batch_is_one_entry_round_robin_over_the_streams_in_the_shared_format() {
    let env = TestEnv::start().await;
    let mut shipper = shipper(&env, &[("KURZ_CLICK_STREAMS", "2")]);
    let events: Vec<ClickEvent> = (0..3).map(event).collect();

    let first = shipper.ship(&events).await;
    let second = shipper.ship(&events[..1]).await;
    let third = shipper.ship(&events[1..]).await;

    assert!(matches!(first, Outcome::Shipped(3)), "{first:?}");
    assert!(matches!(second, Outcome::Shipped(1)), "{second:?}");
    assert!(matches!(third, Outcome::Shipped(2)), "{third:?}");
    assert_eq!(
        (stream_len(&env, 0).await, stream_len(&env, 1).await),
        (2, 1)
    );
    let decoded: Vec<ClickEvent> = stream(&env, 0).await.iter().flat_map(decode).collect();
    let expected: Vec<ClickEvent> = events.iter().chain(&events[1..]).cloned().collect();
    assert_eq!(
        decoded, expected,
        "in order, as encoded by the shared format"
    );
}

#[tokio::test]
async fn each_stream_keeps_about_its_maxlen_of_clicks() {
    let env = TestEnv::start().await;
    let mut shipper = shipper(
        &env,
        &[
            ("KURZ_CLICK_STREAMS", "1"),
            ("KURZ_CLICK_STREAM_MAXLEN", "1000"),
        ],
    );
    let events: Vec<ClickEvent> = (0..100).map(event).collect();

    for _ in 0..30 {
        let outcome = shipper.ship(&events).await;
        assert!(matches!(outcome, Outcome::Shipped(100)), "{outcome:?}");
    }

    // 3,000 clicks shipped, in entries of 100: trimmed to 10 entries. `MAXLEN ~` trims whole
    // nodes only, and never below the bound.
    let kept: usize = stream(&env, 0).await.iter().map(|e| decode(e).len()).sum();
    assert!((1_000..1_200).contains(&kept), "{kept} clicks");
}

#[tokio::test]
async fn a_batch_redis_cannot_be_reached_for_is_not_sent_and_one_it_refuses_is_rejected() {
    let env = TestEnv::start().await;
    let mut shipper = shipper(&env, &[("KURZ_CLICK_STREAMS", "1")]);
    let events: Vec<ClickEvent> = (0..2).map(event).collect();
    let mut conn = env.redis_conn().await;
    // A key of the wrong type: an XADD to it fails.
    let () = redis::cmd("SET")
        .arg(stream_key(0))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .expect("SET");

    let refused = shipper.ship(&events).await;
    env.redis.stop().await;
    let unreachable = shipper.ship(&events).await;

    assert!(matches!(refused, Outcome::Rejected(_)), "{refused:?}");
    assert!(
        matches!(unreachable, Outcome::NotSent(_)),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn a_stop_with_redis_down_gives_up_on_the_queue_instead_of_hanging() {
    let env = TestEnv::start().await;
    insert(&env, "stopping", "https://example.com/s", None).await;
    let proxy = env.redis_proxy().await;
    let via_proxy = env.redis_url_via(&proxy);
    let app = spawn_redirect(&env, &[("KURZ_REDIS_URL", via_proxy.as_str())]).await;
    proxy.set(Fault::Reset);
    let response = browser().get(app.url("/stopping")).send().await;
    assert_eq!(response.expect("GET").status(), StatusCode::FOUND);

    // The flush is bounded (2 s); the outer bound only turns a hang into a failure.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), app.stop()).await;

    stopped.expect("the stop returns").expect("clean stop");
}
