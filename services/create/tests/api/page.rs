//! The web page as HTTP sees it: served at `/` under a self-only Content-Security-Policy,
//! its assets under content-hashed names cached for a year, `ETag`s answering 304, and the
//! anonymous QR code it shows after an anonymous create. The page at work is tested in a real
//! browser (`tests/browser`).

use kurz_repository::Scope;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::helpers::{Stack, error_code, post_link};

/// The `/assets/...` paths `html` links to.
fn asset_paths(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_page_is_served_at_the_root_under_a_policy_that_allows_only_its_own_origin() {
    let stack = Stack::start(1, 0).await;
    let client = kurz_testkit::http_client();

    let response = client
        .get(stack.create().url("/"))
        .send()
        .await
        .expect("GET /");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
    let policy = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(
            policy.contains(&format!("{directive};")),
            "{directive} in {policy}"
        );
    }
    assert!(
        !policy.contains("unsafe"),
        "no inline script or style: {policy}"
    );
    assert!(!policy.contains("http"), "no other origin: {policy}");
    let html = response.text().await.expect("HTML");
    assert!(html.contains(r#"<meta name="kurz-anonymous-create" content="false">"#));
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "nothing inline"
    );
    assert_eq!(
        asset_paths(&html).len(),
        3,
        "script, style sheet and icon: {html}"
    );
}

#[tokio::test]
async fn assets_have_content_hashed_names_cached_for_a_year_and_etags_that_answer_304() {
    let stack = Stack::start(1, 0).await;
    let client = kurz_testkit::http_client();
    let html = client
        .get(stack.create().url("/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("HTML");

    for path in asset_paths(&html) {
        let response = client
            .get(stack.create().url(&path))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "{path}"
        );
        let tag = response.headers()[ETAG].clone();
        let body = response.bytes().await.expect("a body");
        assert!(!body.is_empty(), "{path}");
        // The plain name serves the same bytes, revalidated each time.
        let (stem, rest) = path.split_once('.').expect("a hashed name");
        let extension = rest.rsplit('.').next().expect("an extension");
        let plain = format!("{stem}.{extension}");
        let response = client
            .get(stack.create().url(&plain))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-cache", "{plain}");
        assert_eq!(response.bytes().await.expect("a body"), body, "{plain}");

        let again = client
            .get(stack.create().url(&path))
            .header(IF_NONE_MATCH, tag)
            .send()
            .await
            .expect("GET");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    let missing = client
        .get(stack.create().url("/assets/app.0000000000.js"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(missing).await, "not_found");
}

#[tokio::test]
async fn without_a_key_the_qr_code_of_an_anonymous_link_is_served_and_an_accounts_is_not() {
    let stack = Stack::start_with(1, 10, &[("KURZ_ANONYMOUS_CREATE", "true")]).await;
    let anonymous = kurz_testkit::http_client();
    let created = post_link(
        &anonymous,
        stack.create(),
        &serde_json::json!({ "url": "https://example.com/anonymous" }),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let code = created.json::<serde_json::Value>().await.expect("a link")["code"]
        .as_str()
        .expect("a code")
        .to_owned();
    let (_, owner) = stack.client_for("acme", &[Scope::LinksWrite], None).await;
    let owned = post_link(
        &owner,
        stack.create(),
        &serde_json::json!({ "url": "https://example.com/owned" }),
    )
    .await;
    let owned_code = owned.json::<serde_json::Value>().await.expect("a link")["code"]
        .as_str()
        .expect("a code")
        .to_owned();

    let qr = |code: &str| {
        anonymous
            .get(stack.create().url(&format!("/api/v1/links/{code}/qr")))
            .send()
    };
    let response = qr(&code).await.expect("GET qr");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "image/svg+xml");
    let response = qr(&owned_code).await.expect("GET qr");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "not_found");
}

#[tokio::test]
async fn without_anonymous_creation_the_qr_code_needs_a_key() {
    let stack = Stack::start(1, 10).await;
    let link = stack.create_link("https://example.com/keyed").await;
    let code = link["code"].as_str().expect("a code");

    let response = kurz_testkit::http_client()
        .get(stack.create().url(&format!("/api/v1/links/{code}/qr")))
        .send()
        .await
        .expect("GET qr");

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "unauthorized");
}
