//! `PATCH /api/v1/links/{code}`: tri-state fields, the create rules, ownership, and how soon
//! redirect instances follow an edit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use kurz_repository::Scope;
use kurz_testkit::{RunningApp, http_client};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fastpath::{LONG_LOCAL_TTL, location};
use crate::helpers::{Stack, error_code, post_link, spawn_redirect_with, within};

/// Every editable field set to something other than its default.
fn full_link() -> Value {
    json!({
        "url": "https://example.com/original",
        "expires_at": "2030-01-31T12:00:00Z",
        "redirect_status": 301,
        "forward_query": true,
        "expired_url": "https://example.com/expired",
        "max_visits": 10,
    })
}

async fn patch(
    client: &reqwest::Client,
    stack: &Stack,
    code: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .patch(stack.create().url(&format!("/api/v1/links/{code}")))
        .json(body)
        .send()
        .await
        .expect("patch")
}

/// A patch that must succeed: the link as answered.
async fn patched(client: &reqwest::Client, stack: &Stack, code: &str, body: &Value) -> Value {
    let response = patch(client, stack, code, body).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    response.json().await.expect("json")
}

async fn shown(stack: &Stack, code: &str) -> Value {
    stack
        .client
        .get(stack.create().url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn create(stack: &Stack, body: &Value) -> Value {
    let response = stack.post(body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("json")
}

fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("a date-time")
        .parse()
        .expect("RFC 3339")
}

/// `after` is `before` with only `field` (and what follows from it) changed.
fn assert_only_changed(before: &Value, after: &Value, field: &str, expected: &Value) {
    assert_eq!(&after[field], expected, "{field}");
    let derived = ["updated_at", "status", "visits", field];
    for (name, value) in before.as_object().expect("an object") {
        if !derived.contains(&name.as_str()) {
            assert_eq!(&after[name], value, "{name} changed with {field}");
        }
    }
}

#[tokio::test]
async fn each_field_is_kept_when_left_out_cleared_by_null_and_set_by_a_value() {
    let stack = Stack::start(1, 10).await;
    let original = create(&stack, &full_link()).await;
    let code = original["code"].as_str().expect("code");
    assert_eq!(original["updated_at"], original["created_at"]);

    // Left out: an empty edit changes nothing, not even updated_at.
    let empty = patch(&stack.client, &stack, code, &json!({})).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(empty.json::<Value>().await.expect("json"), original);

    // A value, then null, for every field that can be cleared; each edit leaves the others.
    let cases = [
        ("expires_at", json!("2031-06-30T08:00:00Z"), Value::Null),
        ("redirect_status", json!(308), Value::Null),
        (
            "expired_url",
            json!("HTTPS://Example.COM/later"),
            Value::Null,
        ),
        ("max_visits", json!(99), Value::Null),
    ];
    let normalized = |field: &str, value: &Value| match field {
        "expired_url" if !value.is_null() => json!("https://example.com/later"),
        _ => value.clone(),
    };
    let mut before = original.clone();
    for (field, value, null) in cases {
        for sent in [value, null] {
            let response = patch(&stack.client, &stack, code, &json!({ field: sent })).await;
            assert_eq!(response.status(), StatusCode::OK, "{field}: {sent}");
            let after: Value = response.json().await.expect("json");
            assert_only_changed(&before, &after, field, &normalized(field, &sent));
            assert_eq!(
                after,
                shown(&stack, code).await,
                "what is stored is what was answered"
            );
            assert!(
                instant(&after["updated_at"]) > instant(&before["updated_at"]),
                "updated_at moves with {field}"
            );
            before = after;
        }
    }
    assert_eq!(before["visits"], Value::Null, "no limit, no count shown");

    // url and forward_query take a value but never null.
    for (field, value, expected) in [
        (
            "url",
            json!("HTTPS://Example.COM/new"),
            json!("https://example.com/new"),
        ),
        ("forward_query", json!(false), json!(false)),
    ] {
        let refused = patch(&stack.client, &stack, code, &json!({ field: null })).await;
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: null"
        );
        assert_eq!(error_code(refused).await, "invalid_body");
        assert_eq!(
            shown(&stack, code).await,
            before,
            "a refused null changes nothing"
        );
        let after = patched(&stack.client, &stack, code, &json!({ field: value })).await;
        assert_only_changed(&before, &after, field, &expected);
        before = after;
    }

    // Sending the stored values again is no change either.
    let same = json!({ "url": before["url"], "forward_query": before["forward_query"] });
    assert_eq!(patched(&stack.client, &stack, code, &same).await, before);
}

#[tokio::test]
async fn each_bad_value_is_refused_with_the_create_code_and_changes_nothing() {
    let stack = Stack::start(1, 10).await;
    let original = create(&stack, &full_link()).await;
    let code = original["code"].as_str().expect("code");
    let cases = [
        (json!({ "url": "ftp://example.com/" }), "unsupported_scheme"),
        (json!({ "url": "http://10.0.0.1/" }), "url_private_target"),
        (json!({ "url": "https://bit.ly/x" }), "url_blocked"),
        (json!({ "url": 7 }), "invalid_body"),
        (json!({ "expires_at": "next week" }), "invalid_expires_at"),
        (
            json!({ "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at_in_past",
        ),
        (json!({ "redirect_status": 303 }), "invalid_redirect_status"),
        (json!({ "forward_query": "yes" }), "invalid_body"),
        (
            json!({ "expired_url": "javascript:alert(1)" }),
            "invalid_expired_url",
        ),
        (json!({ "max_visits": 0 }), "invalid_max_visits"),
        (
            json!({ "max_visits": 1_000_000_000_001_i64 }),
            "invalid_max_visits",
        ),
        // A good field next to a bad one is not applied either.
        (
            json!({ "url": "https://example.com/fine", "max_visits": -1 }),
            "invalid_max_visits",
        ),
        // The code never changes, under either name.
        (json!({ "code": "renamed" }), "invalid_body"),
        (json!({ "alias": "renamed" }), "invalid_body"),
        (json!({ "visits": 0 }), "invalid_body"),
    ];

    for (body, expected) in cases {
        let response = patch(&stack.client, &stack, code, &body).await;

        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        assert_eq!(error_code(response).await, expected, "{body}");
        assert_eq!(
            shown(&stack, code).await,
            original,
            "{body} changed the link"
        );
    }
}

#[tokio::test]
async fn only_the_owner_or_an_admin_edits_a_link_and_a_read_only_key_cannot() {
    let stack = Stack::start(1, 10).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, alice) = stack.client_for("alice", &scopes, None).await;
    let (_, alice_reader) = stack.client_for("alice", &[Scope::LinksRead], None).await;
    let (_, bob) = stack.client_for("bob", &scopes, None).await;
    let created: Value = post_link(
        &alice,
        stack.create(),
        &json!({ "url": "https://example.com/alice" }),
    )
    .await
    .json()
    .await
    .expect("json");
    let code = created["code"].as_str().expect("code");
    let edit = json!({ "url": "https://example.com/edited" });

    let by_bob = patch(&bob, &stack, code, &edit).await;
    let by_reader = patch(&alice_reader, &stack, code, &edit).await;
    let unknown = patch(&alice, &stack, "nothere", &edit).await;
    let malformed = patch(&alice, &stack, "a.b", &edit).await;

    for response in [by_bob, unknown, malformed] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(response).await, "not_found");
    }
    assert_eq!(by_reader.status(), StatusCode::FORBIDDEN);
    let body: Value = by_reader.json().await.expect("json");
    assert_eq!(body["error"]["code"], "insufficient_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("links:write")
    );
    assert_eq!(
        shown(&stack, code).await["url"],
        "https://example.com/alice"
    );

    let by_owner = patch(&alice, &stack, code, &edit).await;
    assert_eq!(by_owner.status(), StatusCode::OK);
    let after = patched(&stack.client, &stack, code, &json!({ "max_visits": 3 })).await;
    assert_eq!(
        (&after["url"], &after["max_visits"]),
        (&json!("https://example.com/edited"), &json!(3))
    );
}

#[tokio::test]
async fn lowering_max_visits_below_the_visits_counted_uses_the_link_up_and_keeps_the_count() {
    let stack = Stack::start(1, 10).await;
    let created = create(
        &stack,
        &json!({ "url": "https://example.com/v", "max_visits": 10 }),
    )
    .await;
    let code = created["code"].as_str().expect("code");
    stack.arrange(code, "visits = 5").await;

    let lowered = patched(&stack.client, &stack, code, &json!({ "max_visits": 3 })).await;
    let raised = patched(&stack.client, &stack, code, &json!({ "max_visits": 6 })).await;

    assert_eq!(
        (&lowered["status"], &lowered["visits"]),
        (&json!("expired"), &json!(5))
    );
    assert_eq!(
        (&raised["status"], &raised["visits"]),
        (&json!("active"), &json!(5))
    );
}

const BEFORE: &str = "https://example.com/before";
const AFTER: &str = "https://example.com/after";

/// Two redirect instances with `local_ttl`, both holding a new link to [`BEFORE`] in memory.
async fn two_instances_holding_a_link(
    stack: &Stack,
    local_ttl: &[(&str, &str)],
) -> ([RunningApp; 2], String) {
    let instances = [
        spawn_redirect_with(&stack.env, local_ttl).await,
        spawn_redirect_with(&stack.env, local_ttl).await,
    ];
    let created = create(stack, &json!({ "url": BEFORE })).await;
    let code = created["code"].as_str().expect("code").to_owned();
    for app in &instances {
        let answer = location(&http_client(), app, &code).await;
        assert_eq!(answer.1.as_deref(), Some(BEFORE));
    }
    (instances, code)
}

/// Waits, at most `bound` per instance, until every instance redirects to [`AFTER`].
async fn each_follows_within(instances: &[RunningApp], code: &str, bound: Duration) {
    let client = http_client();
    for app in instances {
        within(bound, "the edit reached this instance", || async {
            location(&client, app, code).await.1.as_deref() == Some(AFTER)
        })
        .await;
    }
}

#[tokio::test]
async fn an_edited_url_reaches_both_redirect_instances_within_a_second() {
    let stack = Stack::start(1, 10).await;
    // Both hold the old answer in memory, for ten minutes.
    let (instances, code) = two_instances_holding_a_link(&stack, &LONG_LOCAL_TTL).await;

    let edited = patch(&stack.client, &stack, &code, &json!({ "url": AFTER })).await;

    assert_eq!(edited.status(), StatusCode::OK);
    each_follows_within(&instances, &code, Duration::from_secs(1)).await;
    // And it stays: the delayed second round (a removal) brings nothing older back.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for app in &instances {
        let answer = location(&http_client(), app, &code).await;
        assert_eq!(answer.1.as_deref(), Some(AFTER));
    }
}

#[tokio::test]
async fn with_pub_sub_cut_an_edit_reaches_both_redirect_instances_within_the_local_ttl() {
    let stack = Stack::start(1, 10).await;
    let ttl = Duration::from_millis(1_500);
    let (instances, code) =
        two_instances_holding_a_link(&stack, &[("KURZ_LOCAL_CACHE_TTL_MS", "1500")]).await;
    // Redis refuses the create service's PUBLISH from now on, so every invalidation is lost
    // while each subscriber stays connected and suspects nothing: the worst case for the
    // in-process caches, which only their TTL then bounds. (Cutting a redirect instance off
    // Redis altogether would also cut its cache reads, and a reconnect flushes its memory.)
    let mut redis = stack.env.redis_conn().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-publish")
        .query_async::<()>(&mut redis)
        .await
        .expect("ACL SETUSER");

    let edited = patch(&stack.client, &stack, &code, &json!({ "url": AFTER })).await;

    assert_eq!(
        edited.status(),
        StatusCode::OK,
        "a lost invalidation does not fail the edit"
    );
    let refused: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut redis)
        .await
        .expect("ACL LOG");
    assert!(!refused.is_empty(), "the invalidation was really refused");
    each_follows_within(&instances, &code, ttl + Duration::from_millis(500)).await;
}
