use chrono::{Duration, Utc};
use deadpool_redis::redis;
use kurz_testkit::{ShutdownMode, TestEnv, http_client};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER};

use crate::helpers::{cached, insert, spawn_redirect, wait_cached};

#[tokio::test]
async fn a_known_code_redirects_with_302_to_its_target() {
    let env = TestEnv::start().await;
    insert(&env, "abc1234", "https://example.com/landing?x=1", None).await;
    let app = spawn_redirect(&env, &[]).await;

    let response = http_client()
        .get(app.url("/abc1234"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()[LOCATION],
        "https://example.com/landing?x=1"
    );
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn the_root_redirects_to_the_home_url_when_one_is_set_and_is_404_otherwise() {
    let env = TestEnv::start().await;
    let home = ("KURZ_HOME_URL", "https://kurz.example/app/");
    let with_home = spawn_redirect(&env, &[home]).await;
    let without = spawn_redirect(&env, &[]).await;
    let client = http_client();

    let get = client.get(with_home.url("/")).send().await.expect("GET");
    let head = client.head(with_home.url("/")).send().await.expect("HEAD");
    let post = client.post(with_home.url("/")).send().await.expect("POST");
    let unset = client.get(without.url("/")).send().await.expect("GET");

    for response in [&get, &head] {
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()[LOCATION], "https://kurz.example/app/");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
    assert_eq!(
        post.status(),
        StatusCode::NOT_FOUND,
        "as for any path, a POST is 404"
    );
    assert_eq!(unset.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let env = TestEnv::start().await;
    insert(&env, "headme1", "https://example.com/", None).await;
    let app = spawn_redirect(&env, &[]).await;

    let response = http_client()
        .head(app.url("/headme1"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[LOCATION], "https://example.com/");
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn the_redirect_status_is_configurable() {
    let env = TestEnv::start().await;
    insert(&env, "status1", "https://example.com/", None).await;
    for (status, cache_control) in [
        ("301", "private, max-age=300"),
        ("307", "no-store"),
        ("308", "private, max-age=300"),
    ] {
        let app = spawn_redirect(&env, &[("KURZ_REDIRECT_STATUS", status)]).await;

        let response = http_client()
            .get(app.url("/status1"))
            .send()
            .await
            .expect("request");

        assert_eq!(response.status().as_str(), status);
        assert_eq!(response.headers()[CACHE_CONTROL], cache_control);
        app.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn an_unknown_code_is_404_and_cached_negatively() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[]).await;

    let response = http_client()
        .get(app.url("/nosuch1"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    assert!(
        !response.text().await.expect("body").is_empty(),
        "a small body"
    );
    assert_eq!(wait_cached(&env, "nosuch1").await, "-");
    let mut conn = env.redis_conn().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("kurz:link:nosuch1")
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(
        (1..=10).contains(&ttl),
        "negative entries are short-lived, got {ttl} s"
    );
}

#[tokio::test]
async fn an_expired_link_is_410() {
    let env = TestEnv::start().await;
    env.sql()
        .await
        .batch_execute(
            "INSERT INTO issued_codes (code) VALUES ('expired');
             INSERT INTO links (code, target_url, created_at, expires_at)
             VALUES ('expired', 'https://example.com/', now() - interval '2 days', now() - interval '1 day');",
        )
        .await
        .expect("arrange");
    let app = spawn_redirect(&env, &[]).await;

    for _ in 0..2 {
        // Once from PostgreSQL, once from the cache.
        let response = http_client()
            .get(app.url("/expired"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::GONE);
        assert!(response.headers().get(LOCATION).is_none());
        wait_cached(&env, "expired").await;
    }
}

#[tokio::test]
async fn a_link_expiring_later_still_redirects_and_is_cached_no_longer_than_it_lives() {
    let env = TestEnv::start().await;
    insert(
        &env,
        "soon123",
        "https://example.com/",
        Some(Utc::now() + Duration::seconds(60)),
    )
    .await;
    // Permanent redirects are the ones browsers keep; temporary ones are never stored.
    let app = spawn_redirect(&env, &[("KURZ_REDIRECT_STATUS", "301")]).await;

    let response = http_client()
        .get(app.url("/soon123"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    let max_age: i64 = response.headers()[CACHE_CONTROL].to_str().expect("ascii")
        ["private, max-age=".len()..]
        .parse()
        .expect("number");
    assert!(max_age <= 60, "{max_age}");
}

#[tokio::test]
async fn a_deleted_link_is_404() {
    let env = TestEnv::start().await;
    insert(&env, "deleted", "https://example.com/", None).await;
    env.sql()
        .await
        .batch_execute("UPDATE links SET deleted_at = now() WHERE code = 'deleted'")
        .await
        .expect("delete");
    let app = spawn_redirect(&env, &[]).await;

    let response = http_client()
        .get(app.url("/deleted"))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_codes_are_404_without_touching_redis_or_postgres() {
    let env = TestEnv::start().await;
    let app = spawn_redirect(&env, &[]).await;
    env.redis.stop().await;
    env.postgres.stop(ShutdownMode::Immediate).await;
    let client = http_client();

    // With both servers gone, a well-formed unknown code cannot be answered...
    let wellformed = client
        .get(app.url("/unknown"))
        .send()
        .await
        .expect("request");
    assert_eq!(wellformed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(wellformed.headers().contains_key(RETRY_AFTER));

    // ...but malformed ones are, so they never reached either server.
    let too_long = "a".repeat(65);
    for path in [
        "/ab",
        "/has.dot",
        "/with%20space",
        "/%C3%A9t%C3%A9",
        &format!("/{too_long}"),
        "/a/b",
    ] {
        let response = client.get(app.url(path)).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_miss_fills_the_cache_and_later_hits_need_no_postgres() {
    let env = TestEnv::start().await;
    insert(&env, "cached1", "https://example.com/c", None).await;
    let app = spawn_redirect(&env, &[]).await;
    let client = http_client();

    let first = client
        .get(app.url("/cached1"))
        .send()
        .await
        .expect("request");
    assert_eq!(first.status(), StatusCode::FOUND);
    assert_eq!(wait_cached(&env, "cached1").await, "|https://example.com/c");
    env.postgres.stop(ShutdownMode::Immediate).await;

    let second = client
        .get(app.url("/cached1"))
        .send()
        .await
        .expect("request");

    assert_eq!(second.status(), StatusCode::FOUND);
    assert_eq!(second.headers()[LOCATION], "https://example.com/c");
}

#[tokio::test]
async fn after_flushall_every_link_resolves_from_postgres_and_the_cache_refills() {
    let env = TestEnv::start().await;
    let codes: Vec<String> = (0..50).map(|i| format!("flush{i:02}")).collect();
    for code in &codes {
        insert(&env, code, &format!("https://example.com/{code}"), None).await;
    }
    // The in-process cache would answer from memory; this test is about the Redis tier.
    let app = spawn_redirect(&env, &[("KURZ_LOCAL_CACHE_TTL_MS", "1")]).await;
    let client = http_client();
    for code in &codes {
        client
            .get(app.url(&format!("/{code}")))
            .send()
            .await
            .expect("request");
        wait_cached(&env, code).await;
    }

    let mut conn = env.redis_conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHALL");
    assert_eq!(cached(&env, &codes[0]).await, None);

    for code in &codes {
        let response = client
            .get(app.url(&format!("/{code}")))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::FOUND, "{code}");
        assert_eq!(
            response.headers()[LOCATION],
            format!("https://example.com/{code}").as_str()
        );
    }
    for code in &codes {
        assert_eq!(
            wait_cached(&env, code).await,
            format!("|https://example.com/{code}")
        );
    }
}

#[tokio::test]
async fn the_service_refuses_to_start_on_an_older_schema() {
    let env = TestEnv::start().await;
    env.postgres
        .client("postgres")
        .await
        .batch_execute("CREATE DATABASE unmigrated")
        .await
        .expect("create");
    let source = env
        .source()
        .with("KURZ_DATABASE_URL", env.postgres.url("unmigrated"));
    let settings = kurz_redirect::Settings::from_source(&source).expect("valid settings");

    let err = kurz_redirect::Application::build(settings)
        .await
        .err()
        .expect("must refuse");

    assert!(
        format!("{err:#}").contains("kurz-keypool migrate"),
        "{err:#}"
    );
}
