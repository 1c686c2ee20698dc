//! `GET /api/v1/links/{code}/stats` and `GET /api/v1/stats`: exact sums of arranged rollup
//! rows, buckets in time zones, the bot filter, top lists, ownership, scopes and bad
//! parameters; and `clicks` in link views.

use kurz_repository::Scope;
use kurz_testkit::RunningApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Stack, UNLIMITED, error_code, get};

/// Rollup rows written as the analytics worker would, for states the API only reads.
struct Rollups<'a> {
    stack: &'a Stack,
}

impl Rollups<'_> {
    /// One `click_hourly` row of `code` (humans, bots, unique humans, unique bots).
    async fn hour(&self, code: &str, hour: &str, counts: [i64; 4]) {
        let [humans, bots, unique_humans, unique_bots] = counts;
        self.stack
            .env
            .sql()
            .await
            .execute(
                "INSERT INTO click_hourly \
                     (link_id, hour, owner_id, humans, bots, unique_humans, unique_bots) \
                 SELECT id, $2::text::timestamptz, owner_id, $3, $4, $5, $6 \
                 FROM links WHERE code = $1",
                &[&code, &hour, &humans, &bots, &unique_humans, &unique_bots],
            )
            .await
            .expect("arranging an hourly row");
    }

    /// One `click_daily` row of `code`: `dimension` = `value` on `day` (humans, bots).
    async fn day(&self, code: &str, day: &str, dimension: &str, value: &str, counts: [i64; 2]) {
        let [humans, bots] = counts;
        self.stack
            .env
            .sql()
            .await
            .execute(
                "INSERT INTO click_daily (link_id, day, owner_id, dimension, value, humans, bots) \
                 SELECT id, $2::text::date, owner_id, $3, $4, $5, $6 FROM links WHERE code = $1",
                &[&code, &day, &dimension, &value, &humans, &bots],
            )
            .await
            .expect("arranging a daily row");
    }
}

/// A stack with one link of the admin's account, to `url`.
async fn with_link(url: &str) -> (Stack, String) {
    let stack = Stack::start(1, 10).await;
    let code = link_for(&stack.client, stack.create(), url).await;
    (stack, code)
}

async fn link_for(client: &reqwest::Client, app: &RunningApp, url: &str) -> String {
    let response = client
        .post(app.url("/api/v1/links"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned()
}

/// A stats answer that must be 200.
async fn stats(
    client: &reqwest::Client,
    app: &RunningApp,
    path: &str,
    query: &[(&str, &str)],
) -> Value {
    let response = get(client, app, path, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{path} {query:?}");
    response.json().await.expect("json")
}

/// Bucket starts and their clicks.
type Starts<'a> = &'a [(&'a str, i64)];

/// Query string parameters, in order.
type Query<'a> = &'a [(&'a str, &'a str)];

fn link_path(code: &str) -> String {
    format!("/api/v1/links/{code}/stats")
}

/// `(start, clicks)` of each bucket.
fn series(answer: &Value) -> Vec<(String, i64)> {
    answer["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|b| {
            let start = b["start"].as_str().expect("start").to_owned();
            (start, b["clicks"].as_i64().expect("clicks"))
        })
        .collect()
}

fn pairs(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

/// `(value, clicks)` of a top list.
fn top(answer: &Value, list: &str) -> Vec<(String, i64)> {
    answer["top"][list]
        .as_array()
        .expect("a top list")
        .iter()
        .map(|e| {
            let value = e["value"].as_str().expect("value").to_owned();
            (value, e["clicks"].as_i64().expect("clicks"))
        })
        .collect()
}

const UTC_3_DAYS: [(&str, &str); 3] = [
    ("from", "2026-03-01T00:00:00Z"),
    ("to", "2026-03-04T00:00:00Z"),
    ("granularity", "day"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_totals_series_and_top_lists_are_the_exact_sums_of_its_rows_with_zeros_between() {
    let stack = Stack::start(1, 50).await;
    let app = stack.create();
    let code = link_for(&stack.client, app, "https://example.com/counted").await;
    let other = link_for(&stack.client, app, "https://example.com/other").await;
    let rows = Rollups { stack: &stack };
    rows.hour(&code, "2026-03-01T09:00:00Z", [3, 1, 2, 1]).await;
    rows.hour(&code, "2026-03-01T17:00:00Z", [4, 0, 3, 0]).await;
    rows.hour(&code, "2026-03-03T23:00:00Z", [5, 2, 5, 1]).await;
    // Outside the range on both sides, and another link's: none of it counts.
    rows.hour(&code, "2026-02-28T23:00:00Z", [100, 100, 100, 100])
        .await;
    rows.hour(&code, "2026-03-04T00:00:00Z", [100, 100, 100, 100])
        .await;
    rows.hour(&other, "2026-03-02T12:00:00Z", [100, 100, 100, 100])
        .await;
    rows.day(&code, "2026-03-01", "referrer", "news.example", [3, 1])
        .await;
    rows.day(&code, "2026-03-03", "referrer", "news.example", [2, 0])
        .await;
    rows.day(&code, "2026-03-03", "referrer", "blog.example", [4, 0])
        .await;
    rows.day(&code, "2026-03-01", "country", "DE", [7, 1]).await;
    rows.day(&code, "2026-03-01", "source", "link", [5, 1])
        .await;
    rows.day(&code, "2026-03-03", "source", "qr", [2, 0]).await;
    rows.day(&code, "2026-03-03", "source", "link", [1, 0])
        .await;
    rows.day(&code, "2026-03-04", "country", "FR", [50, 0])
        .await;
    rows.day(&other, "2026-03-02", "browser", "Firefox", [50, 0])
        .await;

    let answer = stats(&stack.client, app, &link_path(&code), &UTC_3_DAYS).await;

    assert_eq!(answer["code"], json!(code));
    assert_eq!(answer["from"], json!("2026-03-01T00:00:00+00:00"));
    assert_eq!(answer["to"], json!("2026-03-04T00:00:00+00:00"));
    assert_eq!(answer["granularity"], json!("day"));
    assert_eq!(answer["tz"], json!("UTC"));
    assert_eq!(answer["bots"], json!("exclude"));
    assert_eq!(
        answer["totals"],
        json!({ "clicks": 12, "humans": 12, "bots": 0, "unique_visitors": 10 })
    );
    assert_eq!(
        answer["series"],
        json!([
            { "start": "2026-03-01T00:00:00+00:00", "clicks": 7, "humans": 7, "bots": 0, "unique_visitors": 5 },
            { "start": "2026-03-02T00:00:00+00:00", "clicks": 0, "humans": 0, "bots": 0, "unique_visitors": 0 },
            { "start": "2026-03-03T00:00:00+00:00", "clicks": 5, "humans": 5, "bots": 0, "unique_visitors": 5 },
        ])
    );
    assert_eq!(
        answer["top"],
        json!({
            "referrers": [
                { "value": "news.example", "clicks": 5 },
                { "value": "blog.example", "clicks": 4 },
            ],
            "countries": [{ "value": "DE", "clicks": 7 }],
            "browsers": [],
            "os": [],
            "devices": [],
            "sources": [{ "value": "link", "clicks": 6 }, { "value": "qr", "clicks": 2 }],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_granularity_the_length_of_the_range_chooses_it_and_from_defaults_to_a_week_before()
 {
    let (stack, code) = with_link("https://example.com/defaults").await;
    let app = stack.create();
    let cases = [
        ("2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z", "hour", 72),
        ("2026-03-01T00:00:00Z", "2026-03-04T00:00:01Z", "day", 4),
        ("2026-03-01T00:00:00Z", "2026-06-02T00:00:00Z", "day", 93),
        ("2026-03-02T00:00:00Z", "2027-03-01T00:00:00Z", "week", 52),
        ("2026-03-01T00:00:00Z", "2029-03-01T00:00:00Z", "month", 36),
    ];
    for (from, to, granularity, buckets) in cases {
        let query = [("from", from), ("to", to)];
        let answer = stats(&stack.client, app, &link_path(&code), &query).await;
        assert_eq!(answer["granularity"], json!(granularity), "{from} {to}");
        assert_eq!(series(&answer).len(), buckets, "{from} {to}");
    }
    let week = stats(
        &stack.client,
        app,
        &link_path(&code),
        &[("to", "2026-03-08T12:00:00Z")],
    )
    .await;
    assert_eq!(week["from"], json!("2026-03-01T12:00:00+00:00"));
    assert_eq!(week["granularity"], json!("day"));
    let now = stats(&stack.client, app, &link_path(&code), &[]).await;
    let (from, to) = (now["from"].as_str(), now["to"].as_str());
    let parse =
        |s: Option<&str>| chrono::DateTime::parse_from_rfc3339(s.expect("set")).expect("a time");
    assert_eq!(parse(to) - parse(from), chrono::TimeDelta::days(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_week_and_month_buckets_put_each_row_where_it_belongs() {
    let (stack, code) = with_link("https://example.com/granular").await;
    let app = stack.create();
    let rows = Rollups { stack: &stack };
    rows.hour(&code, "2026-03-01T10:00:00Z", [1, 0, 1, 0]).await;
    rows.hour(&code, "2026-03-01T12:00:00Z", [2, 0, 1, 0]).await;
    // Sunday 8 March (still the week of Monday 2 March) and Monday 9 March.
    rows.hour(&code, "2026-03-08T23:00:00Z", [4, 0, 1, 0]).await;
    rows.hour(&code, "2026-03-09T00:00:00Z", [8, 0, 1, 0]).await;
    rows.hour(&code, "2026-04-30T23:00:00Z", [16, 0, 1, 0])
        .await;
    let path = link_path(&code);
    let cases: [(&str, &str, &str, Starts<'_>); 3] = [
        (
            "2026-03-01T10:30:00Z",
            "2026-03-01T13:00:00Z",
            "hour",
            &[
                ("2026-03-01T10:00:00+00:00", 1),
                ("2026-03-01T11:00:00+00:00", 0),
                ("2026-03-01T12:00:00+00:00", 2),
            ],
        ),
        (
            "2026-03-01T00:00:00Z",
            "2026-03-16T00:00:00Z",
            "week",
            &[
                ("2026-02-23T00:00:00+00:00", 3),
                ("2026-03-02T00:00:00+00:00", 4),
                ("2026-03-09T00:00:00+00:00", 8),
            ],
        ),
        (
            "2026-03-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "month",
            &[
                ("2026-03-01T00:00:00+00:00", 15),
                ("2026-04-01T00:00:00+00:00", 16),
            ],
        ),
    ];
    for (from, to, granularity, expected) in cases {
        let query = [("from", from), ("to", to), ("granularity", granularity)];
        let answer = stats(&stack.client, app, &path, &query).await;
        assert_eq!(series(&answer), pairs(expected), "{granularity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_buckets_follow_the_zones_clocks_across_dst_and_half_hour_offsets() {
    let (stack, code) = with_link("https://example.com/zoned").await;
    let app = stack.create();
    let rows = Rollups { stack: &stack };
    // 31 October 23:00 EDT: the last hour of that New York day, though 1 November in UTC.
    rows.hour(&code, "2026-11-01T03:00:00Z", [1, 0, 1, 0]).await;
    // 1 November 23:00 EST, and 2 November 00:00 EST.
    rows.hour(&code, "2026-11-02T04:00:00Z", [2, 0, 1, 0]).await;
    rows.hour(&code, "2026-11-02T05:00:00Z", [4, 0, 1, 0]).await;
    let new_york = [
        ("from", "2026-10-30T00:00:00-04:00"),
        ("to", "2026-11-03T00:00:00-05:00"),
        ("granularity", "day"),
        ("tz", "America/New_York"),
    ];
    let answer = stats(&stack.client, app, &link_path(&code), &new_york).await;
    assert_eq!(answer["tz"], json!("America/New_York"));
    assert_eq!(answer["from"], json!("2026-10-30T00:00:00-04:00"));
    assert_eq!(answer["to"], json!("2026-11-03T00:00:00-05:00"));
    assert_eq!(
        series(&answer),
        pairs(&[
            ("2026-10-30T00:00:00-04:00", 0),
            ("2026-10-31T00:00:00-04:00", 1),
            ("2026-11-01T00:00:00-04:00", 2),
            ("2026-11-02T00:00:00-05:00", 4),
        ])
    );

    // Kolkata's days start at 18:30 UTC; the UTC hour 18:00 starts at 23:30 on the 1st there,
    // so it counts on the 1st whole, though half of it is the 2nd.
    rows.hour(&code, "2026-03-01T18:00:00Z", [8, 0, 1, 0]).await;
    rows.hour(&code, "2026-03-01T19:00:00Z", [16, 0, 1, 0])
        .await;
    let kolkata = [
        ("from", "2026-03-01T00:00:00+05:30"),
        ("to", "2026-03-03T00:00:00+05:30"),
        ("granularity", "day"),
        ("tz", "Asia/Kolkata"),
    ];
    let answer = stats(&stack.client, app, &link_path(&code), &kolkata).await;
    assert_eq!(
        series(&answer),
        pairs(&[
            ("2026-03-01T00:00:00+05:30", 8),
            ("2026-03-02T00:00:00+05:30", 16),
        ])
    );
    assert_eq!(answer["totals"]["clicks"], json!(24));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_filter_excludes_includes_or_keeps_only_bots_in_every_count() {
    let (stack, code) = with_link("https://example.com/bots").await;
    let app = stack.create();
    let rows = Rollups { stack: &stack };
    rows.hour(&code, "2026-03-02T08:00:00Z", [5, 3, 4, 2]).await;
    rows.day(&code, "2026-03-02", "device", "desktop", [5, 0])
        .await;
    rows.day(&code, "2026-03-02", "device", "bot", [0, 3]).await;
    rows.day(&code, "2026-03-02", "referrer", "a.example", [1, 2])
        .await;
    rows.day(&code, "2026-03-02", "referrer", "b.example", [2, 0])
        .await;
    let path = link_path(&code);
    let cases = [
        (
            "exclude",
            json!({ "clicks": 5, "humans": 5, "bots": 0, "unique_visitors": 4 }),
            pairs(&[("desktop", 5)]),
            pairs(&[("b.example", 2), ("a.example", 1)]),
        ),
        (
            "include",
            json!({ "clicks": 8, "humans": 5, "bots": 3, "unique_visitors": 6 }),
            pairs(&[("desktop", 5), ("bot", 3)]),
            pairs(&[("a.example", 3), ("b.example", 2)]),
        ),
        (
            "only",
            json!({ "clicks": 3, "humans": 0, "bots": 3, "unique_visitors": 2 }),
            pairs(&[("bot", 3)]),
            pairs(&[("a.example", 2)]),
        ),
    ];
    for (bots, totals, devices, referrers) in cases {
        let mut query = UTC_3_DAYS.to_vec();
        query.push(("bots", bots));
        let answer = stats(&stack.client, app, &path, &query).await;
        assert_eq!(answer["bots"], json!(bots));
        assert_eq!(answer["totals"], totals, "{bots}");
        assert_eq!(answer["series"][1]["clicks"], totals["clicks"], "{bots}");
        assert_eq!(answer["series"][1]["bots"], totals["bots"], "{bots}");
        assert_eq!(top(&answer, "devices"), devices, "{bots}");
        assert_eq!(top(&answer, "referrers"), referrers, "{bots}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_list_keeps_the_ten_largest_values_most_first_and_ties_by_value() {
    let (stack, code) = with_link("https://example.com/top").await;
    let app = stack.create();
    let rows = Rollups { stack: &stack };
    // 12 browsers; two days of the same value add up.
    let counts = [
        ("Zeta", 9),
        ("Alpha", 9),
        ("Beta", 12),
        ("Gamma", 1),
        ("Delta", 7),
        ("Eta", 7),
        ("Theta", 6),
        ("Iota", 5),
        ("Kappa", 4),
        ("Lambda", 3),
        ("Mu", 2),
        ("Nu", 2),
    ];
    for (browser, n) in counts {
        rows.day(&code, "2026-03-01", "browser", browser, [n - 1, 0])
            .await;
        rows.day(&code, "2026-03-02", "browser", browser, [1, 5])
            .await;
    }
    let answer = stats(&stack.client, app, &link_path(&code), &UTC_3_DAYS).await;
    assert_eq!(
        top(&answer, "browsers"),
        pairs(&[
            ("Beta", 12),
            ("Alpha", 9),
            ("Zeta", 9),
            ("Delta", 7),
            ("Eta", 7),
            ("Theta", 6),
            ("Iota", 5),
            ("Kappa", 4),
            ("Lambda", 3),
            ("Mu", 2),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_link_is_404_like_an_unknown_code_and_an_admin_sees_any() {
    let stack = Stack::start(1, 10).await;
    let app = stack.create();
    let scopes = [Scope::LinksWrite, Scope::StatsRead];
    let (_, alice) = stack.client_for("alice", &scopes, Some(UNLIMITED)).await;
    let (_, bob) = stack.client_for("bob", &scopes, Some(UNLIMITED)).await;
    let code = link_for(&alice, app, "https://example.com/alices").await;
    Rollups { stack: &stack }
        .hour(&code, "2026-03-01T10:00:00Z", [2, 0, 1, 0])
        .await;

    let own = stats(&alice, app, &link_path(&code), &UTC_3_DAYS).await;
    assert_eq!(own["totals"]["clicks"], json!(2));
    for path in [link_path(&code), link_path("nosuchlink")] {
        let response = get(&bob, app, &path, &UTC_3_DAYS).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(response).await, "not_found");
    }
    let by_admin = stats(&stack.client, app, &link_path(&code), &UTC_3_DAYS).await;
    assert_eq!(by_admin["totals"]["clicks"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_stats_read_is_403_naming_the_scope() {
    let stack = Stack::start(1, 10).await;
    let app = stack.create();
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, reader) = stack.client_for("reader", &scopes, Some(UNLIMITED)).await;
    let code = link_for(&reader, app, "https://example.com/unreadable").await;
    for path in [link_path(&code), "/api/v1/stats".to_owned()] {
        let response = get(&reader, app, &path, &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(challenge.contains(r#"scope="stats:read""#), "{challenge}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], json!("insufficient_scope"));
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("stats:read"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_parameter_is_a_400_naming_what_is_wrong() {
    let (stack, code) = with_link("https://example.com/strict").await;
    let app = stack.create();
    let path = link_path(&code);
    // The query, the error code, and what the message must mention.
    let cases: [(Query<'_>, &str, &str); 10] = [
        (&[("from", "yesterday")], "invalid_query", "from"),
        (&[("to", "2026-03-01 10:00")], "invalid_query", "to"),
        (
            &[
                ("from", "2026-03-02T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
            ],
            "invalid_range",
            "before",
        ),
        (
            &[
                ("from", "2026-03-01T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
            ],
            "invalid_range",
            "before",
        ),
        (
            &[
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
                ("granularity", "hour"),
            ],
            "too_many_buckets",
            "1,000",
        ),
        (
            &[
                ("from", "1900-01-01T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
            ],
            "too_many_buckets",
            "1,000",
        ),
        (&[("tz", "Mars/Olympus_Mons")], "invalid_timezone", "IANA"),
        (
            &[("granularity", "fortnight")],
            "invalid_query",
            "`hour`, `day`, `week`, `month`",
        ),
        (
            &[("bots", "some")],
            "invalid_query",
            "`exclude`, `include`, `only`",
        ),
        (&[("account", "1")], "invalid_query", "account"),
    ];
    for (query, code, mentions) in cases {
        let response = get(&stack.client, app, &path, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{query:?}"
        );
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], json!(code), "{query:?}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(mentions), "{query:?}: {message}");
    }
    let unknown = get(&stack.client, app, "/api/v1/stats", &[("cde", "1")]).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(unknown).await, "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_stats_sum_the_accounts_links_and_rank_its_top_ten() {
    let stack = Stack::start(1, 50).await;
    let app = stack.create();
    let scopes = [Scope::LinksWrite, Scope::StatsRead];
    let (carol_key, carol) = stack.client_for("carol", &scopes, Some(UNLIMITED)).await;
    let (_, dave) = stack.client_for("dave", &scopes, Some(UNLIMITED)).await;
    let rows = Rollups { stack: &stack };
    let mut codes = Vec::new();
    // Twelve links with 1 to 12 human clicks, the 12 also with 100 bot clicks.
    for n in 1..=12_i64 {
        let code = link_for(&carol, app, &format!("https://example.com/carol/{n}")).await;
        let bots = if n == 1 { 100 } else { 0 };
        rows.hour(&code, "2026-03-02T10:00:00Z", [n, bots, n, 0])
            .await;
        rows.day(&code, "2026-03-02", "country", "NL", [n, bots])
            .await;
        codes.push(code);
    }
    let daves = link_for(&dave, app, "https://example.com/dave").await;
    rows.hour(&daves, "2026-03-02T10:00:00Z", [1_000, 0, 1, 0])
        .await;
    // A deleted link's clicks count in the totals; it is not a top link.
    stack.arrange(&codes[11], "deleted_at = now()").await;

    let answer = stats(&carol, app, "/api/v1/stats", &UTC_3_DAYS).await;

    assert_eq!(answer["account"], json!(carol_key.account_id));
    assert_eq!(
        answer["totals"],
        json!({ "clicks": 78, "humans": 78, "bots": 0, "unique_visitors": 78 })
    );
    assert_eq!(series(&answer)[1].1, 78);
    assert_eq!(top(&answer, "countries"), pairs(&[("NL", 78)]));
    let expected: Vec<Value> = (2..=11)
        .rev()
        .map(|n| json!({ "code": codes[n - 1], "clicks": n }))
        .collect();
    assert_eq!(answer["top_links"], json!(expected));

    let mut only_bots = UTC_3_DAYS.to_vec();
    only_bots.push(("bots", "only"));
    let bots = stats(&carol, app, "/api/v1/stats", &only_bots).await;
    assert_eq!(
        bots["top_links"],
        json!([{ "code": codes[0], "clicks": 100 }])
    );

    // An admin names the account; anyone else may not.
    let account = carol_key.account_id.to_string();
    let mut named = UTC_3_DAYS.to_vec();
    named.push(("account", &account));
    let by_admin = stats(&stack.client, app, "/api/v1/stats", &named).await;
    assert_eq!(by_admin["totals"], answer["totals"]);
    assert_eq!(by_admin["top_links"], answer["top_links"]);
    let refused = get(&dave, app, "/api/v1/stats", &named).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(refused).await, "insufficient_scope");
    let admins_own = stats(&stack.client, app, "/api/v1/stats", &UTC_3_DAYS).await;
    assert_eq!(admins_own["account"], json!(stack.admin.account_id));
    assert_eq!(admins_own["totals"]["clicks"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_all_time_human_clicks_show_in_its_view_and_in_the_list() {
    let stack = Stack::start(1, 10).await;
    let app = stack.create();
    let created: Value = stack.create_link("https://example.com/popular").await;
    assert_eq!(created["clicks"], json!(0));
    let code = created["code"].as_str().expect("code");
    stack.arrange(code, "clicks = 42").await;

    let shown: Value = stack
        .client
        .get(app.url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["clicks"], json!(42));
    let list = stats(&stack.client, app, "/api/v1/links", &[]).await;
    assert_eq!(list["data"][0]["code"], json!(code));
    assert_eq!(list["data"][0]["clicks"], json!(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_stats_read_the_owner_indexes_not_every_rollup_row() {
    use kurz_repository::listing::ListOwner;
    use kurz_repository::stats::{BotFilter, StatsRange, StatsScope};

    let (stack, code) = with_link("https://example.com/planned").await;
    // 100 owners' rows (owner_id is a copy, so one link can carry them all): an owner's
    // range is 1 % of each table, which only its index reaches without reading the rest.
    stack
        .env
        .sql()
        .await
        .batch_execute(&format!(
            "INSERT INTO click_hourly (link_id, hour, owner_id, humans) \
             SELECT l.id, timestamptz '2020-01-01 00:00+00' + make_interval(hours => i), \
                    1000 + i % 100, 1 \
             FROM links l, generate_series(0, 49999) i WHERE l.code = '{code}'; \
             INSERT INTO click_daily (link_id, day, owner_id, dimension, value, humans) \
             SELECT l.id, date '2000-01-01' + i / 10, 1000 + (i / 10) % 100, 'country', \
                    'C' || i % 10, 1 \
             FROM links l, generate_series(0, 49999) i WHERE l.code = '{code}'; \
             ANALYZE click_hourly; ANALYZE click_daily;"
        ))
        .await
        .expect("arranging many owners' rows");
    let from = chrono::DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z")
        .expect("a time")
        .to_utc();
    let range = StatsRange {
        from,
        to: from + chrono::TimeDelta::days(30),
        bucket_starts: vec![from],
        bots: BotFilter::Exclude,
    };

    let plan = stack
        .env
        .repository()
        .explain_click_stats(StatsScope::Owner(ListOwner::Account(1_042)), &range)
        .await
        .expect("a plan");

    for index in ["click_hourly_owner", "click_daily_owner"] {
        assert!(
            plan.contains(&format!("\"Index Name\": \"{index}\"")),
            "{index}: {plan}"
        );
    }
    let plan: Value = serde_json::from_str(&plan).expect("a JSON plan");
    let mut nodes = vec![&plan[0]["Plan"]];
    while let Some(node) = nodes.pop() {
        let relation = node["Relation Name"].as_str().unwrap_or("");
        let scanned = node["Node Type"] == "Seq Scan" && relation.starts_with("click_");
        assert!(!scanned, "a sequential scan of {relation}: {plan}");
        nodes.extend(node["Plans"].as_array().into_iter().flatten());
    }
}
