//! Click capture: what a redirect leaves on the Redis click streams, and what it does not.
//!
//! "Makes no click" is checked after a graceful stop, which flushes the queue: whatever the
//! service captured is in Redis by then, so an empty stream proves nothing was captured
//! (no waiting for something not to happen).

use std::collections::HashMap;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use deadpool_redis::redis;
use kurz_redirect::Settings;
use kurz_redirect::clicks::{Outcome, Shipper, Visitors};
use kurz_repository::clicks::{
    ClickEvent, DEFAULT_STREAMS, MAX_REFERRER_BYTES, MAX_USER_AGENT_BYTES, stream_key,
};
use kurz_repository::{Behaviour, LinkRepository};
use kurz_telemetry::metrics::names;
use kurz_testkit::metrics::scrape;
use kurz_testkit::{Fault, RunningApp, TestEnv, eventually};
use redis::streams::{StreamId, StreamRangeReply};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, REFERER, USER_AGENT};

use crate::helpers::{BROWSER, browser, insert, insert_with, spawn_redirect};

/// The fields of one stream entry.
type Entry = HashMap<String, String>;

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

/// Every entry of every click stream (the default shard count), as text fields.
async fn entries(env: &TestEnv) -> Vec<Entry> {
    let mut all = Vec::new();
    for shard in 0..DEFAULT_STREAMS {
        for entry in stream(env, shard).await {
            let fields = entry
                .map
                .keys()
                .map(|k| {
                    let v: String = entry.get(k).expect("a text field");
                    (k.clone(), v)
                })
                .collect();
            all.push(fields);
        }
    }
    all
}

/// Waits (bounded) until the streams hold at least `n` entries, and returns them.
async fn wait_entries(env: &TestEnv, n: usize) -> Vec<Entry> {
    eventually(&format!("{n} click entries"), || async {
        entries(env).await.len() >= n
    })
    .await;
    entries(env).await
}

/// The entry whose referrer is `referrer` (tests tag each request with one).
fn tagged<'a>(entries: &'a [Entry], referrer: &str) -> &'a Entry {
    let found: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.get("r").map(String::as_str) == Some(referrer))
        .collect();
    assert_eq!(found.len(), 1, "one entry tagged {referrer}: {entries:?}");
    found[0]
}

/// `GET path` from the client `ip` (through the trusted loopback proxy), tagged `referrer`.
async fn click_from(app: &RunningApp, path: &str, ip: &str, referrer: &str) -> StatusCode {
    browser()
        .get(app.url(path))
        .header("X-Forwarded-For", ip)
        .header(REFERER, referrer)
        .send()
        .await
        .expect("GET")
        .status()
}

#[tokio::test]
async fn a_redirect_becomes_one_entry_with_code_time_headers_truncated_ip_and_visitor() {
    let env = TestEnv::start().await;
    insert(&env, "clicked", "https://example.com/c", None).await;
    let app = spawn_redirect(&env, &[TRUST_LOOPBACK]).await;
    let before = Utc::now().timestamp_millis();

    let status = click_from(&app, "/clicked", "203.0.113.77", "https://news.example/a").await;
    let after = Utc::now().timestamp_millis();

    assert_eq!(status, StatusCode::FOUND);
    let entry = wait_entries(&env, 1).await.remove(0);
    assert_eq!(entry["c"], "clicked");
    let at: i64 = entry["t"].parse().expect("milliseconds");
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    assert_eq!(entry["r"], "https://news.example/a");
    assert_eq!(entry["u"], BROWSER);
    assert_eq!(entry["i"], "203.0.113.0");
    let visitor = &entry["v"];
    assert_eq!(visitor.len(), 32, "{visitor}");
    assert!(visitor.bytes().all(|b| b.is_ascii_hexdigit()), "{visitor}");
    assert!(
        entry.values().all(|v| !v.contains("203.0.113.77")),
        "the full IP is nowhere: {entry:?}"
    );
    // Stopped (and so flushed): still exactly one.
    app.stop().await.expect("clean stop");
    assert_eq!(entries(&env).await.len(), 1);
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
    let entry = wait_entries(&env, 1).await.remove(0);
    assert_eq!(entry["i"], "2001:db8:abcd::");
    assert!(
        entry.values().all(|v| !v.contains("2001:db8:abcd:1234")),
        "{entry:?}"
    );
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
    let mut codes: Vec<String> = entries(&env)
        .await
        .into_iter()
        .map(|e| e["c"].clone())
        .collect();
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

    let all = entries(&env).await;
    assert_eq!(all.len(), 6, "{all:?}");
    let visitor = |tag| tagged(&all, tag).get("v").cloned();
    let first = visitor("r:first").expect("a visitor hash");
    assert_eq!(visitor("r:again"), Some(first.clone()), "same IP and agent");
    let neighbour = visitor("r:neighbour").expect("a visitor hash");
    assert_ne!(neighbour, first, "another IP of the same /24");
    let other_agent = visitor("r:other-agent").expect("a visitor hash");
    assert_ne!(other_agent, first, "another agent");
    for tag in ["r:dnt", "r:gpc"] {
        let entry = tagged(&all, tag);
        assert_eq!(entry.get("v"), None, "{tag}: {entry:?}");
        assert_eq!(
            entry["i"], "203.0.113.0",
            "{tag}: still counted, by network"
        );
    }
    for entry in &all {
        assert!(
            entry.values().all(|v| !v.contains("203.0.113.7")),
            "{entry:?}"
        );
    }
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
    let entry = wait_entries(&env, 1).await.remove(0);
    assert_eq!(entry["r"], referrer[..MAX_REFERRER_BYTES]);
    assert_eq!(entry["u"], agent[..MAX_USER_AGENT_BYTES]);
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

    assert!(entries(&env).await.is_empty());
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
    wait_entries(&env, 1).await;

    proxy.set(Fault::Reset);
    const DOWN: usize = 20;
    for i in 0..DOWN {
        let (status, location) = redirect(format!("r:down-{i}")).await;
        assert_eq!(status, StatusCode::FOUND, "redirect {i} with Redis down");
        assert_eq!(location.expect("Location"), "https://example.com/o");
    }
    let down = scrape(base).await;
    let queue_full = down.sum(names::CLICK_EVENTS_DROPPED, &dropped("queue_full"))
        - start.sum(names::CLICK_EVENTS_DROPPED, &dropped("queue_full"));
    // At most one batch (4) is held and the queue (2) is full; the rest were dropped.
    assert!(queue_full >= (DOWN - 4 - 2) as f64, "{queue_full} dropped");
    assert_eq!(
        down.sum(names::CLICK_QUEUE_DEPTH, &[]),
        2.0,
        "the queue is full"
    );

    proxy.set(Fault::None);
    // The held batch and the queue go out first (a click sent now could find it still full).
    let kept = 1 + DOWN - queue_full as usize;
    wait_entries(&env, kept).await;
    assert_eq!(redirect("r:back".to_owned()).await.0, StatusCode::FOUND);
    eventually("the click after the outage lands", || async {
        entries(&env).await.iter().any(|e| e["r"] == "r:back")
    })
    .await;
    // Every click is accounted for: in a stream, or dropped and counted, none twice.
    let end = scrape(base).await;
    let dropped_total =
        end.sum(names::CLICK_EVENTS_DROPPED, &[]) - start.sum(names::CLICK_EVENTS_DROPPED, &[]);
    let landed = entries(&env).await.len();
    assert_eq!(
        landed as f64 + dropped_total,
        (DOWN + 2) as f64,
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
async fn batches_go_round_robin_over_the_streams_in_the_shared_format() {
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
        (5, 1)
    );
    let decoded: Vec<ClickEvent> = stream(&env, 0)
        .await
        .iter()
        .map(|entry| {
            let fields: Vec<(String, Vec<u8>)> = entry
                .map
                .keys()
                .map(|k| (k.clone(), entry.get(k).expect("bytes")))
                .collect();
            ClickEvent::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("an event")
        })
        .collect();
    let expected: Vec<ClickEvent> = events.iter().chain(&events[1..]).cloned().collect();
    assert_eq!(
        decoded, expected,
        "in order, as encoded by the shared format"
    );
}

#[tokio::test]
async fn each_stream_is_trimmed_to_about_its_maxlen() {
    let env = TestEnv::start().await;
    let mut shipper = shipper(
        &env,
        &[
            ("KURZ_CLICK_STREAMS", "1"),
            ("KURZ_CLICK_STREAM_MAXLEN", "1000"),
        ],
    );
    let events: Vec<ClickEvent> = (0..1_000).map(event).collect();

    for _ in 0..3 {
        let outcome = shipper.ship(&events).await;
        assert!(matches!(outcome, Outcome::Shipped(1_000)), "{outcome:?}");
    }

    // `MAXLEN ~` trims whole nodes only (100 entries each by default), never below the bound.
    let len = stream_len(&env, 0).await;
    assert!((1_000..1_200).contains(&len), "{len} entries");
}

#[tokio::test]
async fn a_batch_redis_cannot_be_reached_for_is_not_sent_and_one_it_refuses_is_rejected() {
    let env = TestEnv::start().await;
    let mut shipper = shipper(&env, &[("KURZ_CLICK_STREAMS", "1")]);
    let events: Vec<ClickEvent> = (0..2).map(event).collect();
    let mut conn = env.redis_conn().await;
    // A key of the wrong type: every XADD to it fails inside the transaction.
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
