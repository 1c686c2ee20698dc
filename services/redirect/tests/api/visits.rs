//! Visit limits: exact across instances and restarts, not spent by bots or HEAD, and fail
//! closed without PostgreSQL.

use std::time::{Duration, Instant};

use deadpool_redis::redis;
use kurz_repository::{Behaviour, LinkRepository, Owner, Visit};
use kurz_testkit::{Fault, RunningApp, TestEnv, eventually};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER, USER_AGENT};
use tokio::task::JoinSet;

use crate::helpers::{browser, insert, insert_with, spawn_redirect, visits};

const TARGET: &str = "https://example.com/limited";
const SOLD_OUT: &str = "https://example.com/sold-out";

fn limited(max_visits: i64) -> Behaviour {
    Behaviour {
        max_visits: Some(max_visits),
        ..Behaviour::default()
    }
}

/// `clients` browsers at once, each sending `each` GETs of `path`, alternating between
/// `apps`. Every client's answers in its order: status and `Location`.
async fn crowd(
    apps: &[&RunningApp],
    path: &str,
    clients: usize,
    each: usize,
) -> Vec<Vec<(u16, Option<String>)>> {
    let client = browser();
    let mut set = JoinSet::new();
    for i in 0..clients {
        let urls: Vec<String> = (0..each)
            .map(|j| apps[(i + j) % apps.len()].url(path))
            .collect();
        let client = client.clone();
        set.spawn(async move {
            let mut answers = Vec::with_capacity(urls.len());
            for url in urls {
                let response = client.get(url).send().await.expect("request");
                let location = response.headers().get(LOCATION);
                let location = location.map(|l| l.to_str().expect("ascii").to_owned());
                answers.push((response.status().as_u16(), location));
            }
            answers
        });
    }
    set.join_all().await
}

/// How many answers were the redirect to the target, and whether each client, once it saw
/// something else, never saw the target again.
fn granted(answers: &[Vec<(u16, Option<String>)>]) -> usize {
    for client in answers {
        let first_refusal = client
            .iter()
            .position(|(_, location)| location.as_deref() != Some(TARGET));
        let after = &client[first_refusal.unwrap_or(client.len())..];
        assert!(
            after.iter().all(|(_, l)| l.as_deref() != Some(TARGET)),
            "a used-up link redirected again: {client:?}"
        );
    }
    answers
        .iter()
        .flatten()
        .filter(|(_, location)| location.as_deref() == Some(TARGET))
        .count()
}

/// A link with `behaviour` (a limit of 100) under 50 concurrent clients sending 4 GETs each
/// to two instances: asserts that exactly 100 were redirected to the target and counted, and
/// returns the other answers.
async fn exhaust_on_two_instances(code: &str, behaviour: Behaviour) -> Vec<(u16, Option<String>)> {
    let env = TestEnv::start().await;
    insert_with(&env, code, TARGET, None, behaviour).await;
    let (a, b) = (
        spawn_redirect(&env, &[]).await,
        spawn_redirect(&env, &[]).await,
    );

    let answers = crowd(&[&a, &b], &format!("/{code}"), 50, 4).await;

    assert_eq!(granted(&answers), 100);
    assert_eq!(visits(&env, code).await, 100);
    answers
        .into_iter()
        .flatten()
        .filter(|(_, location)| location.as_deref() != Some(TARGET))
        .collect()
}

#[tokio::test]
async fn a_limit_of_100_holds_exactly_across_two_instances_and_50_concurrent_clients() {
    let refused = exhaust_on_two_instances("limit100", limited(100)).await;

    assert_eq!(refused.len(), 100);
    assert!(
        refused.iter().all(|(status, _)| *status == 410),
        "{refused:?}"
    );
}

#[tokio::test]
async fn once_used_up_a_limited_link_with_an_expired_url_sends_everyone_there() {
    let behaviour = Behaviour {
        expired_url: Some(SOLD_OUT.into()),
        ..limited(100)
    };

    let rest = exhaust_on_two_instances("limitexp", behaviour).await;

    assert_eq!(rest.len(), 100);
    assert!(
        rest.iter()
            .all(|(status, location)| *status == 302 && location.as_deref() == Some(SOLD_OUT)),
        "{rest:?}"
    );
}

#[tokio::test]
async fn bots_link_previews_and_head_requests_do_not_use_up_visits() {
    let env = TestEnv::start().await;
    let behaviour = Behaviour {
        // Permanent, yet never cacheable: every visit must reach us to be counted.
        redirect_status: Some(301),
        ..limited(2)
    };
    insert_with(&env, "limit2", TARGET, None, behaviour).await;
    let app = spawn_redirect(&env, &[]).await;
    let client = browser();
    let url = app.url("/limit2");
    let previews = [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "",
    ];
    let uncounted = || async {
        let mut statuses = vec![client.head(&url).send().await.expect("HEAD").status()];
        for agent in previews {
            let request = client.get(&url).header(USER_AGENT, agent);
            statuses.push(request.send().await.expect("GET").status());
        }
        statuses
    };

    for _ in 0..3 {
        let statuses = uncounted().await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::MOVED_PERMANENTLY),
            "{statuses:?}"
        );
    }
    assert_eq!(visits(&env, "limit2").await, 0);
    for _ in 0..2 {
        let visit = client.get(&url).send().await.expect("GET");
        assert_eq!(visit.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(visit.headers()[LOCATION], TARGET);
        assert_eq!(visit.headers()[CACHE_CONTROL], "no-store");
    }
    assert_eq!(visits(&env, "limit2").await, 2);

    // Used up: people, previews and HEAD all get the expired answer, and nothing counts.
    assert_eq!(
        client.get(&url).send().await.expect("GET").status(),
        StatusCode::GONE
    );
    let statuses = uncounted().await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::GONE),
        "{statuses:?}"
    );
    assert_eq!(visits(&env, "limit2").await, 2);
}

#[tokio::test]
async fn restarting_an_instance_or_flushing_redis_resets_nothing() {
    let env = TestEnv::start().await;
    insert_with(&env, "limit3", TARGET, None, limited(3)).await;
    let client = browser();
    let first = spawn_redirect(&env, &[]).await;
    for _ in 0..2 {
        let response = client.get(first.url("/limit3")).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::FOUND);
    }
    first.stop().await.expect("clean stop");
    let mut redis = env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis)
        .await
        .expect("FLUSHALL");

    let second = spawn_redirect(&env, &[]).await;
    let last = client.get(second.url("/limit3")).send().await.expect("GET");
    let over = client.get(second.url("/limit3")).send().await.expect("GET");

    assert_eq!(last.status(), StatusCode::FOUND);
    assert_eq!(over.status(), StatusCode::GONE);
    assert_eq!(visits(&env, "limit3").await, 3);
}

#[tokio::test]
async fn without_postgres_a_limited_link_is_503_at_once_and_other_links_still_redirect() {
    let env = TestEnv::start().await;
    insert_with(&env, "limitpg", TARGET, None, limited(100)).await;
    insert(&env, "plainpg", "https://example.com/plain", None).await;
    let proxy = env.postgres_proxy().await;
    let db_url = env.database_url_via(&proxy);
    let app = spawn_redirect(
        &env,
        &[
            ("KURZ_DATABASE_URL", db_url.as_str()),
            ("KURZ_DATABASE_POOL_TIMEOUT_MS", "300"),
            ("KURZ_DATABASE_CONNECT_TIMEOUT_MS", "300"),
            ("KURZ_DATABASE_STATEMENT_TIMEOUT_MS", "500"),
            ("KURZ_BREAKER_FAILURES", "3"),
        ],
    )
    .await;
    let client = browser();
    for path in ["/limitpg", "/plainpg"] {
        let warm = client.get(app.url(path)).send().await.expect("GET");
        assert_eq!(warm.status(), StatusCode::FOUND, "{path}");
    }

    for fault in [Fault::Blackhole, Fault::Reset] {
        proxy.set(fault);
        for agent in [crate::helpers::BROWSER, "Slackbot-LinkExpanding 1.0"] {
            let started = Instant::now();
            let request = client.get(app.url("/limitpg")).header(USER_AGENT, agent);
            let response = request.send().await.expect("answered");

            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{fault:?}"
            );
            assert!(response.headers().contains_key(RETRY_AFTER));
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "bounded: {fault:?}"
            );
        }
        let plain = client.get(app.url("/plainpg")).send().await.expect("GET");
        assert_eq!(
            plain.status(),
            StatusCode::FOUND,
            "from the caches: {fault:?}"
        );
    }

    proxy.restore();
    eventually("the limited link redirects again", || async {
        let response = client.get(app.url("/limitpg")).send().await;
        response.is_ok_and(|r| r.status() == StatusCode::FOUND)
    })
    .await;
    let counted = visits(&env, "limitpg").await;
    assert!((2..=100).contains(&counted), "{counted}");
}

#[tokio::test]
async fn the_repository_grants_exactly_max_visits_and_peeking_counts_nothing() {
    let env = TestEnv::start().await;
    insert_with(&env, "repo10", TARGET, None, limited(10)).await;
    insert(&env, "repofree", TARGET, None).await;
    insert_with(&env, "repogone", TARGET, None, limited(10)).await;
    insert_with(&env, "repooff", TARGET, None, limited(10)).await;
    let repo = env.repository();
    repo.delete("repogone", Owner::Any).await.expect("delete");
    repo.set_disabled("repooff", true).await.expect("disable");

    let mut set = JoinSet::new();
    for _ in 0..30 {
        let repo = repo.clone();
        set.spawn(async move { repo.count_visit("repo10").await.expect("counted") });
    }
    let outcomes = set.join_all().await;

    let granted = outcomes.iter().filter(|v| **v == Visit::Granted).count();
    assert_eq!(granted, 10);
    assert!(
        outcomes
            .iter()
            .all(|v| matches!(v, Visit::Granted | Visit::UsedUp))
    );
    assert_eq!(
        repo.peek_visits("repo10").await.expect("read"),
        Visit::UsedUp
    );
    assert_eq!(visits(&env, "repo10").await, 10);
    for (code, expected) in [
        ("repofree", Visit::Unlimited),
        ("repogone", Visit::Missing),
        ("repooff", Visit::Disabled),
        ("nosuchcode", Visit::Missing),
    ] {
        assert_eq!(
            repo.count_visit(code).await.expect("answer"),
            expected,
            "{code}"
        );
        assert_eq!(
            repo.peek_visits(code).await.expect("answer"),
            expected,
            "{code}"
        );
    }
    assert_eq!(visits(&env, "repofree").await, 0);
    insert_with(&env, "repo1", TARGET, None, limited(1)).await;
    assert_eq!(
        repo.peek_visits("repo1").await.expect("read"),
        Visit::Granted
    );
    assert_eq!(visits(&env, "repo1").await, 0);
}
