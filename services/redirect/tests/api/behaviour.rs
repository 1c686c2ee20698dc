//! Per-link redirect behaviour: status and Cache-Control, forward_query, expired answers.

use chrono::{Duration, Utc};
use kurz_repository::{Behaviour, LinkRepository};
use kurz_testkit::{TestEnv, http_client};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION};

use crate::helpers::{insert, insert_with, spawn_redirect};

const FIREFOX_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn with_status(status: u16) -> Behaviour {
    Behaviour {
        redirect_status: Some(status),
        ..Behaviour::default()
    }
}

fn forwarding() -> Behaviour {
    Behaviour {
        forward_query: true,
        ..Behaviour::default()
    }
}

async fn get(app: &kurz_testkit::RunningApp, path: &str) -> reqwest::Response {
    http_client()
        .get(app.url(path))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn each_link_status_is_answered_with_its_cache_control() {
    let env = TestEnv::start().await;
    for status in [301, 302, 307, 308] {
        let code = format!("status{status}");
        insert_with(
            &env,
            &code,
            "https://example.com/s",
            None,
            with_status(status),
        )
        .await;
    }
    insert(&env, "statusdefault", "https://example.com/s", None).await;
    let app = spawn_redirect(&env, &[]).await;

    for (path, status, cache_control) in [
        ("/status301", 301, "private, max-age=300"),
        ("/status302", 302, "no-store"),
        ("/status307", 307, "no-store"),
        ("/status308", 308, "private, max-age=300"),
        ("/statusdefault", 302, "no-store"),
    ] {
        let response = get(&app, path).await;

        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(response.headers()[LOCATION], "https://example.com/s");
        assert_eq!(response.headers()[CACHE_CONTROL], cache_control, "{path}");
    }
}

#[tokio::test]
async fn an_unset_status_is_the_service_default_and_the_permanent_age_is_a_setting() {
    let env = TestEnv::start().await;
    insert(&env, "default1", "https://example.com/d", None).await;
    insert_with(
        &env,
        "own302",
        "https://example.com/d",
        None,
        with_status(302),
    )
    .await;
    let app = spawn_redirect(
        &env,
        &[
            ("KURZ_REDIRECT_STATUS", "308"),
            ("KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS", "60"),
        ],
    )
    .await;

    let default = get(&app, "/default1").await;
    let own = get(&app, "/own302").await;

    assert_eq!(default.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(default.headers()[CACHE_CONTROL], "private, max-age=60");
    assert_eq!(
        own.status(),
        StatusCode::FOUND,
        "the link's own status wins"
    );
    assert_eq!(own.headers()[CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn a_permanent_redirect_is_never_cached_past_the_links_expiry() {
    let env = TestEnv::start().await;
    let soon = Some(Utc::now() + Duration::seconds(60));
    insert_with(
        &env,
        "perm301",
        "https://example.com/",
        soon,
        with_status(301),
    )
    .await;
    let app = spawn_redirect(&env, &[]).await;

    let response = get(&app, "/perm301").await;

    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    let header = response.headers()[CACHE_CONTROL].to_str().expect("ascii");
    let max_age: i64 = header
        .strip_prefix("private, max-age=")
        .expect("private with an age")
        .parse()
        .expect("number");
    assert!((50..=60).contains(&max_age), "{header}");
}

#[tokio::test]
async fn forward_query_merges_the_request_query_into_the_targets() {
    let env = TestEnv::start().await;
    let target = "https://example.com/p?a=1&utm_source=kurz&b=x+y#top";
    insert_with(&env, "fwd-both", target, None, forwarding()).await;
    insert_with(
        &env,
        "fwd-bare",
        "https://example.com/p",
        None,
        forwarding(),
    )
    .await;
    let app = spawn_redirect(&env, &[]).await;

    for (path, location) in [
        // No query in the request: the target as it is.
        ("/fwd-both", target),
        ("/fwd-bare", "https://example.com/p"),
        // Only the request has one.
        ("/fwd-bare?x=1&y=2", "https://example.com/p?x=1&y=2"),
        // Both: the target's first, then the request's; the fragment stays last.
        (
            "/fwd-both?c=3",
            "https://example.com/p?a=1&utm_source=kurz&b=x+y&c=3#top",
        ),
        // The same name (compared decoded): the request's value, in the request's position.
        (
            "/fwd-both?utm%5Fsource=news&d=4",
            "https://example.com/p?a=1&b=x+y&utm%5Fsource=news&d=4#top",
        ),
        // Encoded characters are copied as they came: + and %20 and %2B stay apart.
        (
            "/fwd-bare?q=a+b&r=a%20b&s=%2B&t=caf%C3%A9",
            "https://example.com/p?q=a+b&r=a%20b&s=%2B&t=caf%C3%A9",
        ),
    ] {
        let response = get(&app, path).await;

        assert_eq!(response.status(), StatusCode::FOUND, "{path}");
        assert_eq!(response.headers()[LOCATION], location, "{path}");
    }
}

#[tokio::test]
async fn forward_query_is_off_by_default() {
    let env = TestEnv::start().await;
    insert(&env, "nofwd01", "https://example.com/p?a=1", None).await;
    let app = spawn_redirect(&env, &[]).await;

    let response = get(&app, "/nofwd01?a=2&b=3").await;

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[LOCATION], "https://example.com/p?a=1");
}

#[tokio::test]
async fn a_forwarded_query_that_would_make_the_location_too_long_is_414() {
    let env = TestEnv::start().await;
    insert_with(&env, "fwdlong", "https://example.com/p", None, forwarding()).await;
    let app = spawn_redirect(&env, &[]).await;

    let long = get(&app, &format!("/fwdlong?q={}", "x".repeat(9_000))).await;
    let fits = get(&app, &format!("/fwdlong?q={}", "x".repeat(8_000))).await;

    assert_eq!(long.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(long.headers()[CACHE_CONTROL], "no-store");
    assert_eq!(fits.status(), StatusCode::FOUND);
}

/// `GET path` as a browser navigating (`Accept: text/html`) and as a script (`*/*`).
async fn as_browser_and_script(
    app: &kurz_testkit::RunningApp,
    path: &str,
) -> [reqwest::Response; 2] {
    let client = http_client();
    let mut answers = Vec::new();
    for accept in [FIREFOX_ACCEPT, "*/*"] {
        let request = client.get(app.url(path)).header(ACCEPT, accept);
        answers.push(request.send().await.expect("request"));
    }
    answers.try_into().expect("two answers")
}

#[tokio::test]
async fn an_expired_link_is_a_410_page_in_html_for_browsers_and_text_for_others() {
    let env = TestEnv::start().await;
    let yesterday = Some(Utc::now() - Duration::days(1));
    insert(&env, "expired1", "https://example.com/", yesterday).await;
    let app = spawn_redirect(&env, &[]).await;

    for _ in 0..2 {
        // Once from PostgreSQL, once from memory.
        let [html, text] = as_browser_and_script(&app, "/expired1").await;

        assert_eq!(html.status(), StatusCode::GONE);
        assert_eq!(html.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(html.headers()[CACHE_CONTROL], "no-store");
        assert!(html.headers().get(LOCATION).is_none());
        let page = html.text().await.expect("body");
        assert!(page.starts_with("<!doctype html>"), "{page}");
        assert!(page.contains("This link has expired."), "{page}");
        assert!(!page.contains("src=") && !page.contains("href="), "{page}");
        assert_eq!(text.status(), StatusCode::GONE);
        assert_eq!(text.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(text.text().await.expect("body"), "This link has expired.\n");
    }
}

#[tokio::test]
async fn an_expired_link_with_an_expired_url_redirects_there_uncached() {
    let env = TestEnv::start().await;
    let yesterday = Some(Utc::now() - Duration::days(1));
    let behaviour = Behaviour {
        // Its own status is for the target; the expired answer is always a 302.
        redirect_status: Some(301),
        expired_url: Some("https://example.com/sold-out".into()),
        ..Behaviour::default()
    };
    insert_with(
        &env,
        "expired2",
        "https://example.com/",
        yesterday,
        behaviour,
    )
    .await;
    let app = spawn_redirect(&env, &[]).await;

    for _ in 0..2 {
        for response in as_browser_and_script(&app, "/expired2").await {
            assert_eq!(response.status(), StatusCode::FOUND);
            assert_eq!(response.headers()[LOCATION], "https://example.com/sold-out");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        }
    }
}

#[tokio::test]
async fn unknown_and_disabled_links_answer_browsers_in_html_too() {
    let env = TestEnv::start().await;
    insert(&env, "disabled1", "https://example.com/", None).await;
    let disabled = env.repository().set_disabled("disabled1", true).await;
    assert!(disabled.expect("disable").is_some());
    let app = spawn_redirect(&env, &[]).await;

    for (path, status, text) in [
        ("/disabled1", StatusCode::GONE, "disabled"),
        ("/nosuch12", StatusCode::NOT_FOUND, "No link has this code."),
        ("/<script>", StatusCode::NOT_FOUND, "No link has this code."),
    ] {
        let [html, plain] = as_browser_and_script(&app, path).await;

        assert_eq!(html.status(), status, "{path}");
        assert_eq!(html.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let page = html.text().await.expect("body");
        assert!(page.contains(text), "{page}");
        assert!(!page.contains("<script"), "nothing is echoed: {page}");
        assert_eq!(plain.status(), status);
        assert_eq!(plain.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }
}
