//! One test per rule: the status, the error code, and that nothing was written.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code, eventually};

/// Sends `body` as JSON and checks the refusal and that no link, issued code or pool key
/// changed.
async fn assert_refused(body: Value, status: StatusCode, code: &str) {
    let stack = Stack::start(1, 20).await;
    let response = stack.post(&body).await;
    assert_refusal(&stack, response, status, code).await;
}

async fn assert_refusal(
    stack: &Stack,
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) {
    assert_eq!(response.status(), status, "status for {code}");
    assert_eq!(error_code(response).await, code);
    assert_eq!(
        stack.count("SELECT count(*) FROM links").await,
        0,
        "no link written"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM issued_codes").await,
        0,
        "no code issued"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM key_pool").await,
        20,
        "no key claimed"
    );
}

async fn send_raw(
    content_type: &str,
    body: impl Into<reqwest::Body>,
    status: StatusCode,
    code: &str,
) {
    let stack = Stack::start(1, 20).await;
    let response = stack
        .client
        .post(stack.create().url("/api/v1/links"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_refusal(&stack, response, status, code).await;
}

const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

#[tokio::test]
async fn only_http_and_https_are_accepted() {
    assert_refused(
        json!({ "url": "ftp://example.com/f" }),
        UNPROCESSABLE,
        "unsupported_scheme",
    )
    .await;
}

#[tokio::test]
async fn javascript_urls_are_refused() {
    assert_refused(
        json!({ "url": "javascript:alert(1)" }),
        UNPROCESSABLE,
        "unsupported_scheme",
    )
    .await;
}

#[tokio::test]
async fn a_relative_url_is_invalid() {
    assert_refused(
        json!({ "url": "example.com/page" }),
        UNPROCESSABLE,
        "invalid_url",
    )
    .await;
}

/// Posts each `(url, code)` on one stack: each is refused with its code, and nothing is
/// written by any of them.
async fn assert_all_refused(stack: &Stack, cases: &[(&str, &str)]) {
    for (url, code) in cases {
        let response = stack.post(&json!({ "url": url })).await;
        assert_refusal(stack, response, UNPROCESSABLE, code).await;
    }
}

/// Creates a link to `url` and checks the 201 body and the stored row both hold `expected`.
async fn assert_created(stack: &Stack, url: &str, expected: &str) {
    let response = stack.post(&json!({ "url": url })).await;
    assert_eq!(response.status(), StatusCode::CREATED, "status for {url:?}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["url"], expected, "{url:?}");
    let stored: String = stack
        .env
        .sql()
        .await
        .query_one(
            "SELECT target_url FROM links WHERE code = $1",
            &[&body["code"].as_str().expect("code")],
        )
        .await
        .expect("committed row")
        .get(0);
    assert_eq!(stored, expected, "{url:?}");
}

#[tokio::test]
async fn spaces_inside_a_url_are_stored_percent_encoded_and_spaces_around_it_trimmed() {
    let stack = Stack::start(1, 20).await;

    assert_created(
        &stack,
        "  https://example.com/my file.pdf?q=a b  ",
        "https://example.com/my%20file.pdf?q=a%20b",
    )
    .await;
}

#[tokio::test]
async fn tabs_newlines_other_spaces_and_a_space_in_the_host_are_refused() {
    let stack = Stack::start(1, 20).await;

    assert_all_refused(
        &stack,
        &[
            ("\thttps://example.com/", "url_invalid_characters"),
            ("https://example.com/a\nb", "url_invalid_characters"),
            ("https://example.com/\r", "url_invalid_characters"),
            ("https://example.com/a\u{A0}b", "url_invalid_characters"),
            ("https://exa mple.com/", "invalid_url"),
        ],
    )
    .await;
}

#[tokio::test]
async fn control_characters_in_a_url_are_refused() {
    assert_refused(
        json!({ "url": "https://exa\tmple.com/\u{0}" }),
        UNPROCESSABLE,
        "url_invalid_characters",
    )
    .await;
}

#[tokio::test]
async fn invisible_characters_in_a_url_are_refused() {
    assert_refused(
        json!({ "url": "https://example.com/\u{202E}fdp.exe" }),
        UNPROCESSABLE,
        "url_invalid_characters",
    )
    .await;
}

#[tokio::test]
async fn credentials_in_a_url_are_refused() {
    assert_refused(
        json!({ "url": "https://user:secret@example.com/" }),
        UNPROCESSABLE,
        "url_has_credentials",
    )
    .await;
}

#[tokio::test]
async fn an_empty_host_is_refused() {
    assert_refused(
        json!({ "url": "https://" }),
        UNPROCESSABLE,
        "url_missing_host",
    )
    .await;
}

#[tokio::test]
async fn a_target_on_the_shorteners_own_host_is_refused() {
    // The test stack's public base URL is the redirect service on 127.0.0.1.
    assert_refused(
        json!({ "url": "http://127.0.0.1:1/abc1234" }),
        UNPROCESSABLE,
        "url_self_reference",
    )
    .await;
}

#[tokio::test]
async fn a_url_over_the_length_limit_is_refused() {
    let url = format!("https://example.com/{}", "a".repeat(8_192));
    assert_refused(json!({ "url": url }), UNPROCESSABLE, "url_too_long").await;
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_413() {
    let url = format!("https://example.com/{}", "a".repeat(20_000));
    assert_refused(
        json!({ "url": url }),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    send_raw(
        "text/plain",
        "url=https://example.com/",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    send_raw(
        "application/json",
        "{\"url\": ",
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
}

#[tokio::test]
async fn a_missing_url_field_is_422() {
    assert_refused(json!({ "alias": "nourl" }), UNPROCESSABLE, "invalid_body").await;
}

#[tokio::test]
async fn a_url_of_the_wrong_type_is_422() {
    assert_refused(json!({ "url": 42 }), UNPROCESSABLE, "invalid_body").await;
}

#[tokio::test]
async fn an_unknown_field_is_422() {
    assert_refused(
        json!({ "url": "https://example.com/", "redirect_code": 301 }),
        UNPROCESSABLE,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn a_too_short_alias_is_refused() {
    assert_refused(
        json!({ "url": "https://example.com/", "alias": "ab" }),
        UNPROCESSABLE,
        "invalid_alias",
    )
    .await;
}

#[tokio::test]
async fn a_too_long_alias_is_refused() {
    let alias = "a".repeat(65);
    assert_refused(
        json!({ "url": "https://example.com/", "alias": alias }),
        UNPROCESSABLE,
        "invalid_alias",
    )
    .await;
}

#[tokio::test]
async fn an_alias_with_other_characters_is_refused() {
    assert_refused(
        json!({ "url": "https://example.com/", "alias": "my.link" }),
        UNPROCESSABLE,
        "invalid_alias",
    )
    .await;
}

#[tokio::test]
async fn a_reserved_alias_is_refused_in_any_case() {
    for alias in ["api", "Healthz", "READYZ", "metrics", "docs"] {
        let stack = Stack::start(1, 20).await;
        let response = stack
            .post(&json!({ "url": "https://example.com/", "alias": alias }))
            .await;
        assert_refusal(&stack, response, UNPROCESSABLE, "alias_reserved").await;
    }
}

#[tokio::test]
async fn an_expiry_that_is_not_rfc3339_is_refused() {
    assert_refused(
        json!({ "url": "https://example.com/", "expires_at": "next week" }),
        UNPROCESSABLE,
        "invalid_expires_at",
    )
    .await;
}

#[tokio::test]
async fn an_expiry_in_the_past_is_refused() {
    assert_refused(
        json!({ "url": "https://example.com/", "expires_at": "2001-01-01T00:00:00Z" }),
        UNPROCESSABLE,
        "expires_at_in_past",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let stack = Stack::start(1, 20).await;

    let put = stack
        .client
        .put(stack.create().url("/api/v1/links"))
        .send()
        .await
        .expect("request");
    let nowhere = stack
        .client
        .get(stack.create().url("/api/v2/things"))
        .send()
        .await
        .expect("request");

    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(put).await, "method_not_allowed");
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(nowhere).await, "not_found");
}

const PRIVATE_TARGETS: &[&str] = &[
    "http://localhost/",
    "http://foo.localhost/",
    "http://LOCALHOST./",
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://127.1/",
    "http://0x7f.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/",
    "http://100.64.0.1/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[fd00::1]/",
    "http://[ff02::1]/",
];

/// The test stack's public base URL is the redirect service on 127.0.0.1, and a target on the
/// shortener's own host is refused as `url_self_reference` first; these tests put the
/// shortener on a public name, as in production.
const PUBLIC_BASE_URL: (&str, &str) = ("KURZ_PUBLIC_BASE_URL", "https://kurz.test/");

#[tokio::test]
async fn private_targets_are_refused_in_every_form() {
    let stack = Stack::start_with(1, 20, &[PUBLIC_BASE_URL]).await;

    let cases: Vec<_> = PRIVATE_TARGETS
        .iter()
        .map(|url| (*url, "url_private_target"))
        .collect();
    assert_all_refused(&stack, &cases).await;
}

#[tokio::test]
async fn a_public_ip_address_is_accepted() {
    let stack = Stack::start(1, 20).await;

    assert_created(&stack, "http://93.184.216.34/", "http://93.184.216.34/").await;
    assert_created(
        &stack,
        "http://[2606:2800:220:1:248:1893:25c8:1946]/",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/",
    )
    .await;
}

#[tokio::test]
async fn private_targets_are_accepted_when_allowed() {
    let stack = Stack::start_with(
        1,
        20,
        &[PUBLIC_BASE_URL, ("KURZ_ALLOW_PRIVATE_TARGETS", "true")],
    )
    .await;

    assert_created(&stack, "http://10.0.0.1/wiki", "http://10.0.0.1/wiki").await;
    assert_created(&stack, "http://2130706433/", "http://127.0.0.1/").await;
    assert_created(
        &stack,
        "http://intranet.localhost/",
        "http://intranet.localhost/",
    )
    .await;
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 3);
}

#[tokio::test]
async fn other_shorteners_are_refused_by_the_default_blocklist() {
    let stack = Stack::start(1, 20).await;

    assert_all_refused(
        &stack,
        &[
            ("https://bit.ly/x", "url_blocked"),
            ("https://www.bit.ly/x", "url_blocked"),
            ("https://BIT.LY./x", "url_blocked"),
            ("https://tinyurl.com/abc", "url_blocked"),
        ],
    )
    .await;
    assert_created(&stack, "https://notbit.ly/", "https://notbit.ly/").await;
}

/// Whether a create to `url` is refused as blocked; an accepted one writes a link.
async fn is_blocked(stack: &Stack, url: &str) -> bool {
    let response = stack.post(&json!({ "url": url })).await;
    response.status() == UNPROCESSABLE && error_code(response).await == "url_blocked"
}

#[tokio::test]
async fn the_blocklist_file_is_reloaded_when_it_changes() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "blocked.example\n").expect("write the list");
    let path = file.path().to_str().expect("a UTF-8 path");
    // Enough keys for the creates that succeed while polling for the reload below.
    let stack = Stack::start_with(1, 1_000, &[("KURZ_BLOCKLIST_FILE", path)]).await;
    assert_blocked_writing_nothing(&stack, "https://blocked.example/").await;
    assert_created(&stack, "https://later.example/", "https://later.example/").await;
    assert_blocked_writing_nothing(&stack, "https://www.blocked.example/").await;
    // The file replaces the built-in list rather than adding to it.
    assert_created(&stack, "https://bit.ly/x", "https://bit.ly/x").await;

    std::fs::write(file.path(), "# now this one\nlater.example\n").expect("rewrite the list");

    eventually("later.example is refused", || {
        is_blocked(&stack, "https://later.example/")
    })
    .await;
    assert_created(
        &stack,
        "https://blocked.example/",
        "https://blocked.example/",
    )
    .await;
    assert_blocked_writing_nothing(&stack, "https://www.later.example/").await;
}

/// Refused as blocked, with as many links stored after as before.
async fn assert_blocked_writing_nothing(stack: &Stack, url: &str) {
    let before = stack.count("SELECT count(*) FROM links").await;
    let response = stack.post(&json!({ "url": url })).await;
    assert_eq!(response.status(), UNPROCESSABLE);
    assert_eq!(error_code(response).await, "url_blocked");
    assert_eq!(stack.count("SELECT count(*) FROM links").await, before);
}

#[tokio::test]
async fn a_missing_blocklist_file_stops_the_service_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.txt");
    let source = kurz_settings::Source::default().with(
        "KURZ_BLOCKLIST_FILE",
        missing.to_str().expect("a UTF-8 path"),
    );
    let settings = kurz_create::Settings::from_source(&source).expect("valid settings");

    // Read before anything else: no PostgreSQL is needed to fail.
    let Err(error) = kurz_create::Application::build(settings).await else {
        panic!("the service started without its blocklist");
    };

    let message = format!("{error:#}");
    assert!(message.contains("KURZ_BLOCKLIST_FILE"), "{message}");
    assert!(message.contains("missing.txt"), "{message}");
}

#[tokio::test]
async fn a_redirect_status_other_than_301_302_307_308_is_refused() {
    for status in [200, 303, 304, 399] {
        assert_refused(
            json!({ "url": "https://example.com/", "redirect_status": status }),
            UNPROCESSABLE,
            "invalid_redirect_status",
        )
        .await;
    }
}

#[tokio::test]
async fn a_visit_limit_below_one_or_above_a_trillion_is_refused() {
    for max in [0_i64, -5, 1_000_000_000_001] {
        assert_refused(
            json!({ "url": "https://example.com/", "max_visits": max }),
            UNPROCESSABLE,
            "invalid_max_visits",
        )
        .await;
    }
}

#[tokio::test]
async fn an_expired_url_breaking_a_url_rule_is_refused_under_its_own_code() {
    for expired_url in ["javascript:alert(1)", "https://127.0.0.1/", "not a url"] {
        assert_refused(
            json!({ "url": "https://example.com/", "expired_url": expired_url }),
            UNPROCESSABLE,
            "invalid_expired_url",
        )
        .await;
    }
}
