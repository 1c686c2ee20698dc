//! `GET /api/v1/links` and `/count`: keyset pagination, filters, ownership, and what a page
//! costs at a million links.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use kurz_create::manage::{LinkList, encode_cursor};
use kurz_repository::Scope;
use kurz_repository::listing::{Keyset, LinkFilter, ListOwner, StatusFilter};
use kurz_testkit::RunningApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Stack, UNLIMITED, error_code, get, post_link};

const LIST: &str = "/api/v1/links";
const COUNT: &str = "/api/v1/links/count";

/// Query string parameters, in order.
type Query<'a> = Vec<(&'a str, &'a str)>;

async fn page(client: &reqwest::Client, app: &RunningApp, query: &[(&str, &str)]) -> LinkList {
    let response = get(client, app, LIST, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query:?}");
    response.json().await.expect("a page")
}

async fn count(client: &reqwest::Client, app: &RunningApp, query: &[(&str, &str)]) -> i64 {
    let response = get(client, app, COUNT, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query:?}");
    response.json::<Value>().await.expect("json")["count"]
        .as_i64()
        .expect("count")
}

/// Every page of a listing, `limit` at a time: the codes and creation times in order.
async fn every_page(
    client: &reqwest::Client,
    app: &RunningApp,
    limit: &str,
) -> Vec<(String, DateTime<Utc>)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", limit)];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = page(client, app, &query).await;
        assert!(page.data.len() <= limit.parse::<usize>().expect("a number"));
        seen.extend(page.data.into_iter().map(|l| (l.code, l.created_at)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

/// Creates `n` links for `client`, `parallel` at a time (so group commit gives many of them
/// the same `created_at`), and returns their codes.
async fn create_many(
    client: &reqwest::Client,
    app: &RunningApp,
    n: usize,
    parallel: usize,
) -> Vec<String> {
    let mut codes = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(parallel) {
        let creates = chunk.iter().map(|i| async move {
            let body = json!({ "url": format!("https://example.com/paged/{i}") });
            let response = post_link(client, app, &body).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.expect("json")["code"]
                .as_str()
                .expect("code")
                .to_owned()
        });
        codes.extend(join_all(creates).await);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_sees_each_link_once_newest_first_while_links_are_created_concurrently() {
    let stack = Stack::start(1, 2_000).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, client) = stack.client_for("pager", &scopes, Some(UNLIMITED)).await;
    let app = stack.create();
    let originals = create_many(&client, app, 250, 25).await;
    let ties = stack
        .count("SELECT count(*) - count(DISTINCT created_at) FROM links")
        .await;
    assert!(
        ties > 0,
        "some links share created_at, so the id must break ties"
    );
    // New links keep arriving, in the same account, for as long as the paging runs.
    let stop = Arc::new(AtomicBool::new(false));
    let created_meanwhile = Arc::new(AtomicUsize::new(0));
    let background = tokio::spawn({
        let (client, url) = (client.clone(), app.url("/api/v1/links"));
        let (stop, created) = (Arc::clone(&stop), Arc::clone(&created_meanwhile));
        async move {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({ "url": "https://example.com/meanwhile" });
                let response = client.post(&url).json(&body).send().await.expect("post");
                assert_eq!(response.status(), StatusCode::CREATED);
                created.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let seen = every_page(&client, app, "7").await;

    stop.store(true, Ordering::Relaxed);
    background.await.expect("the background creates");
    assert!(
        created_meanwhile.load(Ordering::Relaxed) > 0,
        "links were created during the paging"
    );
    let codes: Vec<&str> = seen.iter().map(|(code, _)| code.as_str()).collect();
    let unique: HashSet<&str> = codes.iter().copied().collect();
    assert_eq!(unique.len(), codes.len(), "no link is listed twice");
    for code in &originals {
        assert!(unique.contains(code.as_str()), "{code} was skipped");
    }
    assert!(seen.windows(2).all(|w| w[0].1 >= w[1].1), "newest first");
    // The same order, ties included, at another page size.
    let again = every_page(&client, app, "100").await;
    let of_originals = |list: &[(String, DateTime<Utc>)]| -> Vec<String> {
        list.iter()
            .filter(|(code, _)| originals.contains(code))
            .map(|(code, _)| code.clone())
            .collect()
    };
    assert_eq!(of_originals(&seen), of_originals(&again));
}

#[tokio::test]
async fn each_filter_keeps_the_links_it_names_and_count_agrees() {
    let stack = Stack::start(1, 100).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, client) = stack.client_for("filters", &scopes, None).await;
    let (_, other) = stack.client_for("other", &scopes, None).await;
    let app = stack.create();
    let mut code_of = std::collections::HashMap::new();
    for (name, body) in [
        ("alpha", json!({ "url": "https://example.com/Alpha-Page" })),
        ("percent", json!({ "url": "https://example.com/50%25_off" })),
        (
            "aliased",
            json!({ "url": "https://example.org/", "alias": "Spring-Sale" }),
        ),
        ("by_date", json!({ "url": "https://example.com/old" })),
        (
            "by_visits",
            json!({ "url": "https://example.com/used", "max_visits": 2 }),
        ),
        ("disabled", json!({ "url": "https://example.com/abuse" })),
        (
            "deleted",
            json!({ "url": "https://example.com/alpha-deleted" }),
        ),
    ] {
        let response = post_link(&client, app, &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{name}");
        let body: Value = response.json().await.expect("json");
        code_of.insert(name, body["code"].as_str().expect("code").to_owned());
    }
    post_link(
        &other,
        app,
        &json!({ "url": "https://example.com/alpha-other" }),
    )
    .await;
    // Creation times a day apart, in the order above, for the date filters.
    for (day, name) in [
        "alpha",
        "percent",
        "aliased",
        "by_date",
        "by_visits",
        "disabled",
        "deleted",
    ]
    .iter()
    .enumerate()
    {
        let at = format!("created_at = '2026-01-{:02}T00:00:00Z'", day + 1);
        stack.arrange(&code_of[name], &at).await;
    }
    stack
        .arrange(
            &code_of["by_date"],
            "expires_at = now() - interval '1 hour'",
        )
        .await;
    stack.arrange(&code_of["by_visits"], "visits = 2").await;
    // Disabled and expired at once counts as disabled.
    stack
        .arrange(
            &code_of["disabled"],
            "disabled_at = now(), expires_at = now() - interval '1 s'",
        )
        .await;
    stack
        .arrange(&code_of["deleted"], "deleted_at = now()")
        .await;
    let alpha_code_upper = code_of["alpha"].to_uppercase();
    // Newest first; the deleted link never shows.
    let everything = vec![
        "disabled",
        "by_visits",
        "by_date",
        "aliased",
        "percent",
        "alpha",
    ];
    let cases: Vec<(Query, Vec<&str>)> = vec![
        (vec![], everything.clone()),
        (vec![("status", "all")], everything.clone()),
        (
            vec![("status", "active")],
            vec!["aliased", "percent", "alpha"],
        ),
        (vec![("status", "expired")], vec!["by_visits", "by_date"]),
        (vec![("status", "disabled")], vec!["disabled"]),
        // Case-insensitive, in the URL or the code; % and _ are literal characters.
        (vec![("q", "ALPHA-page")], vec!["alpha"]),
        (vec![("q", "spring-SALE")], vec!["aliased"]),
        (vec![("q", &alpha_code_upper)], vec!["alpha"]),
        (vec![("q", "%")], vec!["percent"]),
        (vec![("q", "0%25_o")], vec!["percent"]),
        (vec![("q", "_")], vec!["percent"]),
        (vec![("q", "nowhere")], vec![]),
        (
            vec![("created_after", "2026-01-04T00:00:00Z")],
            vec!["disabled", "by_visits"],
        ),
        (
            vec![("created_before", "2026-01-03T00:00:00Z")],
            vec!["percent", "alpha"],
        ),
        (
            vec![
                ("created_after", "2026-01-01T00:00:00Z"),
                ("created_before", "2026-01-04T00:00:00+00:00"),
            ],
            vec!["aliased", "percent"],
        ),
        (
            vec![("status", "active"), ("q", "example.com")],
            vec!["percent", "alpha"],
        ),
    ];

    for (query, expected) in cases {
        let listed = page(&client, app, &query).await;
        let counted = count(&client, app, &query).await;

        let codes: Vec<&str> = listed.data.iter().map(|l| l.code.as_str()).collect();
        let wanted: Vec<&str> = expected.iter().map(|name| code_of[name].as_str()).collect();
        assert_eq!(codes, wanted, "{query:?}");
        assert_eq!(counted, wanted.len() as i64, "count with {query:?}");
        assert!(listed.next_cursor.is_none());
    }
    let statuses = page(&client, app, &[]).await.data;
    assert!(statuses.iter().all(|l| match l.code.as_str() {
        c if c == code_of["disabled"] => l.status == kurz_create::routes::LinkStatus::Disabled,
        c if c == code_of["by_date"] || c == code_of["by_visits"] => {
            l.status == kurz_create::routes::LinkStatus::Expired
        }
        _ => l.status == kurz_create::routes::LinkStatus::Active,
    }));
}

#[tokio::test]
async fn bad_query_values_are_400_with_their_codes() {
    let stack = Stack::start(1, 10).await;
    let app = stack.create();
    let long = "x".repeat(201);
    let cases: Vec<(&str, Query, &str)> = vec![
        (LIST, vec![("limit", "0")], "invalid_query"),
        (LIST, vec![("limit", "101")], "invalid_query"),
        (LIST, vec![("limit", "ten")], "invalid_query"),
        (LIST, vec![("limit", "-1")], "invalid_query"),
        (LIST, vec![("cursor", "not-a-cursor")], "invalid_cursor"),
        (LIST, vec![("cursor", "")], "invalid_cursor"),
        (LIST, vec![("status", "deleted")], "invalid_query"),
        (LIST, vec![("created_after", "yesterday")], "invalid_query"),
        (
            LIST,
            vec![("created_before", "2026-01-01")],
            "invalid_query",
        ),
        (LIST, vec![("q", "")], "invalid_query"),
        (LIST, vec![("q", "a\u{0}b")], "invalid_query"),
        (COUNT, vec![("q", "tab\there")], "invalid_query"),
        (LIST, vec![("q", &long)], "invalid_query"),
        (LIST, vec![("sort", "url")], "invalid_query"),
        (LIST, vec![("account", "acme")], "invalid_query"),
        (COUNT, vec![("limit", "5")], "invalid_query"),
        (COUNT, vec![("cursor", "abc")], "invalid_query"),
        (COUNT, vec![("status", "gone")], "invalid_query"),
        (COUNT, vec![("created_after", "soon")], "invalid_query"),
    ];

    for (path, query, expected) in cases {
        let response = get(&stack.client, app, path, &query).await;

        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{path} {query:?}"
        );
        assert_eq!(error_code(response).await, expected, "{path} {query:?}");
    }
    let longest = "x".repeat(200);
    assert_eq!(
        page(&stack.client, app, &[("q", &longest), ("limit", "100")])
            .await
            .data
            .len(),
        0
    );
}

#[tokio::test]
async fn other_accounts_links_never_appear_and_only_an_admin_names_an_account() {
    let stack = Stack::start(1, 20).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (alice_key, alice) = stack.client_for("alice", &scopes, None).await;
    let (_, bob) = stack.client_for("bob", &scopes, None).await;
    let (_, writer) = stack.client_for("bob", &[Scope::LinksWrite], None).await;
    let app = stack.create();
    let alices = create_many(&alice, app, 3, 3).await;
    let bobs = create_many(&bob, app, 2, 2).await;
    let orphan = create_many(&bob, app, 1, 1).await.remove(0);
    stack.arrange(&orphan, "owner_id = NULL").await;
    let codes =
        |list: LinkList| -> HashSet<String> { list.data.into_iter().map(|l| l.code).collect() };
    let set = |codes: &[String]| -> HashSet<String> { codes.iter().cloned().collect() };
    let alice_id = alice_key.account_id.to_string();

    assert_eq!(codes(page(&alice, app, &[]).await), set(&alices));
    assert_eq!(codes(page(&bob, app, &[]).await), set(&bobs));
    assert_eq!(count(&bob, app, &[]).await, 2);
    // An admin lists its own account's links unless it names another.
    assert!(page(&stack.client, app, &[]).await.data.is_empty());
    assert_eq!(
        codes(page(&stack.client, app, &[("account", &alice_id)]).await),
        set(&alices)
    );
    assert_eq!(
        count(&stack.client, app, &[("account", &alice_id)]).await,
        3
    );
    assert_eq!(
        codes(page(&stack.client, app, &[("account", "anonymous")]).await),
        set(std::slice::from_ref(&orphan))
    );
    for path in [LIST, COUNT] {
        let named = get(&bob, app, path, &[("account", &alice_id)]).await;
        assert_eq!(named.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = named.json().await.expect("json");
        assert_eq!(body["error"]["code"], "insufficient_scope");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("admin")
        );
        let unscoped = get(&writer, app, path, &[]).await;
        assert_eq!(
            unscoped.status(),
            StatusCode::FORBIDDEN,
            "{path} needs links:read"
        );
    }
}

/// Walks an `EXPLAIN (FORMAT JSON)` plan tree.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut all = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        all.extend(children.iter().flat_map(nodes));
    }
    all
}

/// The plan of a page, and the buffers it touched (hits and reads, the whole tree).
async fn plan_of(stack: &Stack, filter: &LinkFilter, after: Option<Keyset>) -> (Value, i64) {
    let explained = stack
        .env
        .repository()
        .explain_list_links(filter, after, 20)
        .await
        .expect("EXPLAIN");
    let parsed: Value = serde_json::from_str(&explained).expect("JSON");
    let plan = parsed[0]["Plan"].clone();
    let buffers = plan["Shared Hit Blocks"].as_i64().expect("hits")
        + plan["Shared Read Blocks"].as_i64().expect("reads");
    (plan, buffers)
}

const MILLION: i64 = 1_000_000;

#[tokio::test]
async fn a_page_at_the_millionth_link_reads_as_few_index_entries_as_the_first_and_never_sorts() {
    let stack = Stack::start(1, 10).await;
    let (key, client) = stack.client_for("million", &[Scope::LinksRead], None).await;
    let (other, _) = stack
        .client_for("neighbour", &[Scope::LinksRead], None)
        .await;
    let sql = stack.env.sql().await;
    // In bulk, as a long-lived account would have them: four links per millisecond share a
    // created_at (as a group commit gives them), and a neighbour's links interleave.
    sql.batch_execute("SET synchronous_commit = off")
        .await
        .expect("set");
    sql.execute(
        "INSERT INTO links (code, target_url, owner_id, created_at) \
         SELECT 'm' || lpad(i::text, 7, '0'), 'https://example.com/m/' || i, \
                CASE WHEN i % 100 = 0 THEN $2::int8 ELSE $1::int8 END, \
                timestamptz '2025-01-01T00:00:00Z' + (i / 4) * interval '1 ms' \
         FROM generate_series(1, $3::int8) AS i",
        &[
            &key.account_id,
            &other.account_id,
            &(MILLION + MILLION / 99),
        ],
    )
    .await
    .expect("insert links");
    sql.batch_execute("INSERT INTO issued_codes (code) SELECT code FROM links")
        .await
        .expect("issue codes");
    sql.batch_execute("VACUUM ANALYZE links")
        .await
        .expect("vacuum");
    let filter = LinkFilter {
        owner: ListOwner::Account(key.account_id),
        status: StatusFilter::All,
        search: None,
        created_after: None,
        created_before: None,
        now: Utc::now(),
    };
    assert_eq!(stack.repo_count(&filter).await, MILLION);
    let deep = sql
        .query_one(
            "SELECT created_at, id FROM links WHERE owner_id = $1 \
             ORDER BY created_at DESC, id DESC OFFSET 899999 LIMIT 1",
            &[&key.account_id],
        )
        .await
        .expect("the 900,000th link");
    let deep = Keyset {
        created_at: deep.get(0),
        id: deep.get(1),
    };

    for (name, after) in [
        ("first page", None),
        ("page after 900,000 links", Some(deep)),
    ] {
        let (plan, buffers) = plan_of(&stack, &filter, after).await;

        // Shown with --no-capture; never asserted on (BENCHMARKS.md has the measurement).
        eprintln!(
            "{name}: {buffers} buffers, {} ms in PostgreSQL",
            plan["Actual Total Time"]
        );
        let all = nodes(&plan);
        assert!(
            all.iter().all(|n| n["Node Type"] != "Sort"),
            "{name}: {plan:#}"
        );
        let scan = all
            .iter()
            .find(|n| n["Index Name"] == "links_owner_created")
            .unwrap_or_else(|| panic!("{name} does not use the index: {plan:#}"));
        assert!(scan["Actual Rows"].as_i64() <= Some(21), "{name}: {scan:#}");
        assert!(buffers <= 40, "{name} touched {buffers} buffers: {plan:#}");
    }
    // And over HTTP, the deep page is the next twenty links after the cursor.
    let listed = page(
        &client,
        stack.create(),
        &[("cursor", &encode_cursor(&deep))],
    )
    .await;
    assert_eq!(listed.data.len(), 20);
    assert!(listed.data.iter().all(|l| l.created_at <= deep.created_at));
    assert!(listed.next_cursor.is_some());
}

impl Stack {
    async fn repo_count(&self, filter: &LinkFilter) -> i64 {
        self.env
            .repository()
            .count_links(filter)
            .await
            .expect("count")
    }
}

#[tokio::test]
async fn a_search_that_runs_out_of_time_is_422_and_never_opens_the_breaker() {
    let stack = Stack::start_with(1, 10, &[("KURZ_BREAKER_FAILURES", "2")]).await;
    stack.create_link("https://example.com/needle").await;
    // A lock wait is cut by statement_timeout exactly like a long scan, and takes no million
    // rows to set up.
    let locker = stack.env.sql().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE links IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock links");

    let searches = (0..3).map(|_| get(&stack.client, stack.create(), LIST, &[("q", "needle")]));
    let counts = (0..2).map(|_| get(&stack.client, stack.create(), COUNT, &[]));
    let answers = join_all(searches.chain(counts)).await;
    locker.batch_execute("COMMIT").await.expect("unlock");

    for response in answers {
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(response).await, "search_too_broad");
    }
    // Five timeouts against a threshold of two: had they counted, the breaker would now
    // refuse every PostgreSQL call of this instance for a second.
    let listed = page(&stack.client, stack.create(), &[]).await;
    assert_eq!(listed.data.len(), 1);
}
