//! The whole pipeline, as in production: browsers follow a link through two redirect
//! instances, the analytics worker applies their click streams, and the create API's stats
//! show each click exactly once, split by what the requests carried.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::America::New_York;
use kurz_repository::Scope;
use kurz_testkit::geoip::CountryDb;
use kurz_testkit::{RunningApp, TestEnv, http_client, http_client_with_key};
use serde_json::Value;

use crate::{CHROME_WINDOWS, GOOGLEBOT, SAFARI_IPHONE, SHARDS, drain, link, source};

const FIREFOX_MAC: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:132.0) Gecko/20100101 Firefox/132.0";

/// Who clicks, from where, and how often. Each profile is one visitor (one IP and agent).
struct Profile {
    agent: &'static str,
    referrer: Option<&'static str>,
    ip: &'static str,
    clicks: usize,
    /// Scans of the link's QR code (its URL carries `qr=1`), not clicks on the link.
    scans: bool,
}

const PROFILES: [Profile; 4] = [
    Profile {
        agent: CHROME_WINDOWS,
        referrer: Some("https://news.example/story/1"),
        ip: "203.0.113.7",
        clicks: 5,
        scans: false,
    },
    Profile {
        agent: SAFARI_IPHONE,
        referrer: Some("https://Social.Example/p/42"),
        ip: "198.51.100.9",
        clicks: 3,
        scans: true,
    },
    Profile {
        agent: FIREFOX_MAC,
        referrer: Some("https://news.example/story/2"),
        ip: "203.0.113.200",
        clicks: 4,
        scans: false,
    },
    Profile {
        agent: GOOGLEBOT,
        referrer: None,
        ip: "2001:db8::5",
        clicks: 2,
        scans: false,
    },
];

async fn spawn_redirect(env: &TestEnv) -> RunningApp {
    let source = env
        .source()
        .with("KURZ_CLICK_STREAMS", SHARDS.to_string())
        .with("KURZ_TRUSTED_PROXIES", "127.0.0.1/32")
        .with(
            "KURZ_VISITOR_HASH_SECRET",
            "an end-to-end secret of at least 32 bytes",
        );
    let settings = kurz_redirect::Settings::from_source(&source).expect("valid settings");
    let app = kurz_redirect::Application::build(settings)
        .await
        .expect("redirect starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

async fn spawn_create(env: &TestEnv) -> RunningApp {
    let settings = kurz_create::Settings::from_source(&env.source()).expect("valid settings");
    let app = kurz_create::Application::build(settings)
        .await
        .expect("create starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// Sends every profile's clicks, alternating between the two instances; returns the UTC
/// hour of each click as the client saw it (before, after), for the bucket check.
async fn click_through(
    redirects: &[RunningApp; 2],
    code: &str,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let client = http_client();
    let mut times = Vec::new();
    let mut n = 0;
    for profile in &PROFILES {
        for _ in 0..profile.clicks {
            let path = if profile.scans {
                format!("/{code}?qr=1")
            } else {
                format!("/{code}")
            };
            let mut request = client
                .get(redirects[n % 2].url(&path))
                .header("user-agent", profile.agent)
                .header("x-forwarded-for", profile.ip);
            if let Some(referrer) = profile.referrer {
                request = request.header("referer", referrer);
            }
            let before = Utc::now();
            let response = request.send().await.expect("the redirect answers");
            times.push((before, Utc::now()));
            assert_eq!(response.status(), 302);
            n += 1;
        }
    }
    times
}

async fn stats(create: &RunningApp, key: &str, code: &str, query: &[(&str, &str)]) -> Value {
    let mut url =
        url::Url::parse(&create.url(&format!("/api/v1/links/{code}/stats"))).expect("a valid URL");
    url.query_pairs_mut().extend_pairs(query);
    let response = http_client_with_key(key)
        .get(url)
        .send()
        .await
        .expect("the stats answer");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

/// `top.<dimension>` as value → clicks.
fn top(report: &Value, dimension: &str) -> BTreeMap<String, i64> {
    report["top"][dimension]
        .as_array()
        .unwrap_or_else(|| panic!("top.{dimension} in {report}"))
        .iter()
        .map(|e| {
            let value = e["value"].as_str().expect("a value").to_owned();
            (value, e["clicks"].as_i64().expect("clicks"))
        })
        .collect()
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn clicks_through_two_redirect_instances_show_exactly_once_in_the_stats_split_by_what_they_carried()
 {
    let env = TestEnv::start().await;
    let key = env
        .api_key(
            "acme",
            &[Scope::StatsRead, Scope::LinksRead],
            Some(1_000_000),
        )
        .await;
    let code = "e2e-clicks";
    link(&env, code, Some(key.account_id)).await;
    let geo = CountryDb::new(&[
        ("203.0.113.0/24", "DE"),
        ("198.51.100.0/24", "US"),
        ("2001:db8::/32", "JP"),
    ]);
    let redirects = [spawn_redirect(&env).await, spawn_redirect(&env).await];
    let create = spawn_create(&env).await;
    let total: usize = PROFILES.iter().map(|p| p.clicks).sum();

    let times = click_through(&redirects, code).await;
    // A graceful stop flushes each instance's queue to the streams.
    for redirect in redirects {
        redirect.stop().await.expect("a clean stop");
    }
    let worker_source = source(&env, "e2e").with("KURZ_GEOIP_DB", geo.path().display().to_string());
    let mut worker = crate::worker_from(worker_source).await;
    let outcome = drain(&mut worker).await;

    assert_eq!(outcome.applied, total, "{outcome:?}");
    let from = (times[0].0 - Duration::hours(2)).to_rfc3339();
    let to = (times[total - 1].1 + Duration::hours(1)).to_rfc3339();
    let range = [("from", from.as_str()), ("to", to.as_str())];
    let all = stats(
        &create,
        &key.key,
        code,
        &[
            range[0],
            range[1],
            ("bots", "include"),
            ("tz", "America/New_York"),
            ("granularity", "hour"),
        ],
    )
    .await;
    let totals = &all["totals"];
    assert_eq!(totals["clicks"], 14, "{all}");
    assert_eq!(totals["humans"], 12, "{all}");
    assert_eq!(totals["bots"], 2, "{all}");
    // One visitor per profile: three people and one crawler.
    assert_eq!(totals["unique_visitors"], 4, "{all}");
    assert_eq!(
        top(&all, "referrers"),
        counts(&[("news.example", 9), ("social.example", 3), ("(direct)", 2)])
    );
    assert_eq!(
        top(&all, "countries"),
        counts(&[("DE", 9), ("US", 3), ("JP", 2)])
    );
    assert_eq!(top(&all, "sources"), counts(&[("link", 11), ("qr", 3)]));
    assert_eq!(
        top(&all, "browsers"),
        counts(&[
            ("Chrome", 5),
            ("Safari", 3),
            ("Firefox", 4),
            ("Googlebot", 2)
        ])
    );
    assert_eq!(
        top(&all, "os"),
        counts(&[("Windows", 5), ("iOS", 3), ("macOS", 4), ("(unknown)", 2)])
    );
    assert_eq!(
        top(&all, "devices"),
        counts(&[("desktop", 9), ("mobile", 3), ("bot", 2)])
    );
    assert_hour_buckets_in_new_york(&all, &times);

    // The default leaves the bots out, and so does the link's own total.
    let humans = stats(&create, &key.key, code, &range).await;
    assert_eq!(humans["totals"]["clicks"], 12, "{humans}");
    assert_eq!(humans["totals"]["bots"], 0, "{humans}");
    assert_eq!(humans["totals"]["unique_visitors"], 3, "{humans}");
    let view: Value = http_client_with_key(&key.key)
        .get(create.url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("the link answers")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(view["clicks"], 12, "{view}");
}

/// Every click is in the New York hour bucket that contains it, shown with New York's offset;
/// the other buckets are there with zeros.
fn assert_hour_buckets_in_new_york(report: &Value, times: &[(DateTime<Utc>, DateTime<Utc>)]) {
    let series = report["series"].as_array().expect("a series");
    assert!(series.len() >= 3, "hour buckets over three hours: {report}");
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (before, after) in times {
        let hour = |t: &DateTime<Utc>| {
            let local = t.with_timezone(&New_York);
            local
                .with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .expect("a whole hour")
                .to_rfc3339()
        };
        // A click sent across an hour boundary could land on either side; none of this
        // test's requests takes long enough for that to matter but once in a great while.
        if hour(before) != hour(after) {
            return;
        }
        *expected.entry(hour(before)).or_default() += 1;
    }
    let found: BTreeMap<String, i64> = series
        .iter()
        .filter(|point| point["clicks"].as_i64() != Some(0))
        .map(|point| {
            let start = point["start"].as_str().expect("a start").to_owned();
            (start, point["clicks"].as_i64().expect("clicks"))
        })
        .collect();
    assert_eq!(found, expected, "{report}");
    for point in series {
        let start = point["start"].as_str().expect("a start");
        assert!(
            start.ends_with("-05:00") || start.ends_with("-04:00"),
            "New York's offset: {start}"
        );
    }
}
