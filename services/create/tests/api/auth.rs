//! API keys, scopes, ownership and the admin endpoints.

use std::time::{Duration, Instant};

use kurz_repository::Scope;
use kurz_testkit::{http_client, http_client_with_key};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Stack, error_code, eventually, spawn_create};

/// Every endpoint of the API with the scope it needs; `{code}` and `{id}` are filled in.
const ENDPOINTS: &[(&str, &str, Scope)] = &[
    ("POST", "/api/v1/links", Scope::LinksWrite),
    ("POST", "/api/v1/links/bulk", Scope::LinksWrite),
    ("GET", "/api/v1/links/{code}", Scope::LinksRead),
    ("DELETE", "/api/v1/links/{code}", Scope::LinksWrite),
    ("PATCH", "/api/v1/links/{code}", Scope::LinksWrite),
    ("GET", "/api/v1/links", Scope::LinksRead),
    ("GET", "/api/v1/links/count", Scope::LinksRead),
    ("POST", "/api/v1/links/{code}/disable", Scope::Admin),
    ("POST", "/api/v1/links/{code}/enable", Scope::Admin),
    ("POST", "/api/v1/accounts", Scope::Admin),
    ("GET", "/api/v1/accounts", Scope::Admin),
    ("POST", "/api/v1/accounts/{id}/disable", Scope::Admin),
    ("POST", "/api/v1/accounts/{id}/keys", Scope::Admin),
    ("GET", "/api/v1/keys", Scope::Admin),
    ("DELETE", "/api/v1/keys/{id}", Scope::Admin),
];

async fn call(
    client: &reqwest::Client,
    stack: &Stack,
    method: &str,
    path: &str,
) -> reqwest::Response {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method.clone(), stack.create().url(path));
    if method == Method::POST {
        request = request.json(&json!({ "url": "https://example.com/scoped" }));
    }
    request.send().await.expect("request")
}

fn fill(path: &str, code: &str, id: i64) -> String {
    path.replace("{code}", code)
        .replace("{id}", &id.to_string())
}

#[tokio::test]
async fn without_a_key_every_endpoint_is_401_with_a_bearer_challenge() {
    let stack = Stack::start(1, 10).await;
    let anonymous = http_client();
    for (method, path, _) in ENDPOINTS {
        let response = call(&anonymous, &stack, method, &fill(path, "abcdef1", 1)).await;

        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(
            error_code(response).await,
            "unauthorized",
            "{method} {path}"
        );
    }
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 0);
}

#[tokio::test]
async fn bad_revoked_expired_and_mistyped_keys_are_401_invalid_api_key() {
    let stack = Stack::start(1, 10).await;
    let revoked = stack.env.api_key("a", &[Scope::LinksWrite], None).await;
    let expired = stack.env.api_key("a", &[Scope::LinksWrite], None).await;
    let sql = stack.env.sql().await;
    sql.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        &[&revoked.key_id],
    )
    .await
    .expect("revoke");
    sql.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        &[&expired.key_id],
    )
    .await
    .expect("expire");
    let valid = stack.env.api_key("a", &[Scope::LinksWrite], None).await.key;
    // One character changed: the checksum no longer matches.
    let mistyped = format!(
        "{}{}",
        &valid[..20],
        if &valid[20..21] == "a" { "b" } else { "a" }
    ) + &valid[21..];
    let unknown = kurz_repository::token::MintedKey::generate()
        .expose()
        .to_owned();

    for (what, key) in [
        ("revoked", revoked.key.as_str()),
        ("expired", expired.key.as_str()),
        ("mistyped", mistyped.as_str()),
        ("unknown", unknown.as_str()),
        ("not a kurz key", "ghp_0123456789abcdef"),
    ] {
        let response = call(&http_client_with_key(key), &stack, "POST", "/api/v1/links").await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body = response.text().await.expect("body");
        assert!(body.contains("invalid_api_key"), "{what}: {body}");
        assert!(!body.contains(key), "{what}: the body repeats the key");
    }
    assert_eq!(stack.count("SELECT count(*) FROM links").await, 0);
}

#[tokio::test]
async fn the_key_is_read_from_x_api_key_too_but_never_from_the_query_string() {
    let stack = Stack::start(1, 10).await;
    let key = stack.env.api_key("a", &[Scope::LinksWrite], None).await.key;
    let body = json!({ "url": "https://example.com/header" });

    let by_header = http_client()
        .post(stack.create().url("/api/v1/links"))
        .header("X-Api-Key", &key)
        .json(&body)
        .send()
        .await
        .expect("post");
    let by_query = http_client()
        .post(
            stack
                .create()
                .url(&format!("/api/v1/links?api_key={key}&key={key}")),
        )
        .json(&body)
        .send()
        .await
        .expect("post");

    assert_eq!(by_header.status(), StatusCode::CREATED);
    assert_eq!(by_query.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(by_query).await, "unauthorized");
}

#[tokio::test]
async fn a_key_without_the_needed_scope_is_403_naming_it_on_every_endpoint() {
    let stack = Stack::start(1, 10).await;
    let code = stack.create_link("https://example.com/target").await["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let single = [Scope::LinksRead, Scope::LinksWrite, Scope::StatsRead];
    let mut clients = Vec::new();
    for scope in single {
        clients.push((scope, stack.client_for("b", &[scope], None).await.1));
    }

    for (method, path, needed) in ENDPOINTS {
        for (scope, client) in &clients {
            let response = call(client, &stack, method, &fill(path, &code, 999_999)).await;
            let status = response.status();
            if scope == needed {
                assert_ne!(status, StatusCode::FORBIDDEN, "{scope} on {method} {path}");
                continue;
            }
            assert_eq!(status, StatusCode::FORBIDDEN, "{scope} on {method} {path}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "insufficient_scope");
            let message = body["error"]["message"].as_str().expect("message");
            assert!(message.contains(needed.as_str()), "{message}");
        }
    }
}

#[tokio::test]
async fn another_accounts_link_is_404_to_show_delete_or_replay_and_an_admin_sees_both() {
    let stack = Stack::start(1, 20).await;
    let scopes = [Scope::LinksRead, Scope::LinksWrite];
    let (_, alice) = stack.client_for("alice", &scopes, None).await;
    let (_, bob) = stack.client_for("bob", &scopes, None).await;
    let post = |client: &reqwest::Client, url: &str| {
        client
            .post(stack.create().url("/api/v1/links"))
            .header("Idempotency-Key", "shared-key-1")
            .json(&json!({ "url": url }))
            .send()
    };
    let created: Value = post(&alice, "https://example.com/alice")
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let code = created["code"].as_str().expect("code");
    let api = stack.create().url(&format!("/api/v1/links/{code}"));
    let bobs: Value = bob
        .post(stack.create().url("/api/v1/links"))
        .json(&json!({ "url": "https://example.com/bob" }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let bobs_api = stack.create().url(&format!(
        "/api/v1/links/{}",
        bobs["code"].as_str().expect("code")
    ));

    let shown = bob.get(&api).send().await.expect("get");
    let deleted = bob.delete(&api).send().await.expect("delete");
    let replayed = post(&bob, "https://example.com/alice").await.expect("post");
    let unknown = bob
        .get(stack.create().url("/api/v1/links/nothere"))
        .send()
        .await
        .expect("get");

    for response in [shown, deleted, replayed] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found");
        assert!(!body.to_string().contains("alice"), "{body}");
    }
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        alice.get(&api).send().await.expect("get").status(),
        StatusCode::OK
    );
    for link in [&api, &bobs_api] {
        let seen = stack.client.get(link).send().await.expect("admin get");
        assert_eq!(seen.status(), StatusCode::OK, "the admin sees {link}");
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM links WHERE deleted_at IS NULL")
            .await,
        2
    );
}

#[tokio::test]
async fn a_disabled_accounts_key_is_403_account_disabled_within_a_second() {
    let stack = Stack::start(1, 10).await;
    let (key, client) = stack.client_for("gone", &[Scope::LinksWrite], None).await;
    assert_eq!(
        call(&client, &stack, "POST", "/api/v1/links")
            .await
            .status(),
        StatusCode::CREATED
    );

    let disabled = stack
        .client
        .post(
            stack
                .create()
                .url(&format!("/api/v1/accounts/{}/disable", key.account_id)),
        )
        .send()
        .await
        .expect("disable");

    assert_eq!(disabled.status(), StatusCode::OK);
    let response = call(&client, &stack, "POST", "/api/v1/links").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "account_disabled");
}

#[tokio::test]
async fn admins_make_accounts_and_keys_and_the_key_is_shown_only_once() {
    let stack = Stack::start(1, 10).await;
    let api = |path: &str| stack.create().url(path);

    let account = stack
        .client
        .post(api("/api/v1/accounts"))
        .json(&json!({ "name": "acme" }))
        .send()
        .await
        .expect("post");
    assert_eq!(account.status(), StatusCode::CREATED);
    let account: Value = account.json().await.expect("json");
    let id = account["id"].as_i64().expect("id");
    assert_eq!(account["name"], "acme");
    assert!(account["created_at"].is_string());
    let again = stack
        .client
        .post(api("/api/v1/accounts"))
        .json(&json!({ "name": "acme" }))
        .send()
        .await
        .expect("post");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(again).await, "account_name_taken");

    let minted = stack
        .client
        .post(api(&format!("/api/v1/accounts/{id}/keys")))
        .json(&json!({ "name": "deploys", "scopes": ["links:write", "links:read"], "expires_at": "2999-01-01T00:00:00Z" }))
        .send()
        .await
        .expect("post");
    assert_eq!(minted.status(), StatusCode::CREATED);
    let minted: Value = minted.json().await.expect("json");
    let key = minted["key"].as_str().expect("the key, this once");
    assert!(key.starts_with("kurz_"));
    assert!(key.starts_with(minted["hint"].as_str().expect("hint").trim_end_matches('…')));
    assert_eq!(minted["scopes"], json!(["links:read", "links:write"]));
    assert_eq!(minted["expires_at"], "2999-01-01T00:00:00Z");
    let works = call(&http_client_with_key(key), &stack, "POST", "/api/v1/links").await;
    assert_eq!(works.status(), StatusCode::CREATED);

    let listed = stack
        .client
        .get(api("/api/v1/keys"))
        .send()
        .await
        .expect("get");
    let listed = listed.text().await.expect("body");
    assert!(
        listed.contains("deploys") && !listed.contains(key),
        "{listed}"
    );
    let accounts: Value = stack
        .client
        .get(api("/api/v1/accounts"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = accounts["accounts"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["ops", "acme"]);
    let digests = stack
        .count("SELECT count(*) FROM api_keys WHERE octet_length(digest) = 32")
        .await;
    assert_eq!(digests, 2, "only digests are stored");
}

#[tokio::test]
async fn admin_bodies_are_checked_and_unknown_ids_are_404() {
    let stack = Stack::start(1, 10).await;
    let post = |path: String, body: Value| {
        stack
            .client
            .post(stack.create().url(&path))
            .json(&body)
            .send()
    };
    let id = stack.admin.account_id;
    for (path, body, code) in [
        (
            "/api/v1/accounts".to_owned(),
            json!({ "name": "" }),
            "invalid_name",
        ),
        (
            "/api/v1/accounts".to_owned(),
            json!({ "name": "a\nb" }),
            "invalid_name",
        ),
        (
            "/api/v1/accounts".to_owned(),
            json!({ "nme": "x" }),
            "invalid_body",
        ),
        (
            format!("/api/v1/accounts/{id}/keys"),
            json!({ "name": "k", "scopes": [] }),
            "invalid_scopes",
        ),
        (
            format!("/api/v1/accounts/{id}/keys"),
            json!({ "name": "k", "scopes": ["links:delete"] }),
            "invalid_scopes",
        ),
        (
            format!("/api/v1/accounts/{id}/keys"),
            json!({ "name": "k", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at_in_past",
        ),
        (
            format!("/api/v1/accounts/{id}/keys"),
            json!({ "name": "k", "scopes": ["admin"], "rate_limit_per_minute": 0 }),
            "invalid_rate_limit",
        ),
        (
            "/api/v1/accounts/999999/keys".to_owned(),
            json!({ "name": "k", "scopes": ["admin"] }),
            "not_found",
        ),
        (
            "/api/v1/accounts/999999/disable".to_owned(),
            json!({}),
            "not_found",
        ),
        (
            "/api/v1/accounts/abc/disable".to_owned(),
            json!({}),
            "not_found",
        ),
    ] {
        let response = post(path.clone(), body).await.expect("post");
        assert_eq!(error_code(response).await, code, "{path}");
    }
    let bad_query = stack
        .client
        .get(stack.create().url("/api/v1/keys?account_id=abc"))
        .send()
        .await
        .expect("get");
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(bad_query).await, "invalid_query");
    let revoke = stack
        .client
        .delete(stack.create().url("/api/v1/keys/999999"))
        .send()
        .await
        .expect("delete");
    assert_eq!(revoke.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.count("SELECT count(*) FROM accounts").await, 1);
    assert_eq!(stack.count("SELECT count(*) FROM api_keys").await, 1);
}

#[tokio::test]
async fn a_key_revoked_through_the_api_fails_on_two_instances_within_a_second() {
    let stack = Stack::start(2, 10).await;
    let (key, client) = stack.client_for("c", &[Scope::LinksRead], None).await;
    let probe = |i: usize| {
        client
            .get(stack.creates[i].url("/api/v1/links/nothere"))
            .send()
    };
    // Both instances have verified (and cached) the key.
    for i in 0..2 {
        assert_eq!(probe(i).await.expect("get").status(), StatusCode::NOT_FOUND);
    }

    let revoked = stack
        .client
        .delete(stack.creates[0].url(&format!("/api/v1/keys/{}", key.key_id)))
        .send()
        .await
        .expect("revoke");
    let at = Instant::now();

    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    for i in 0..2 {
        eventually("the revoked key fails", || async {
            probe(i).await.expect("get").status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        at.elapsed()
    );
}

#[tokio::test]
async fn with_pub_sub_cut_a_revoked_key_fails_within_the_cache_ttl() {
    let stack = Stack::start(0, 10).await;
    let proxy = stack.env.redis_proxy().await;
    let redis_url = stack.env.redis_url_via(&proxy);
    let ttl_ms = "1500";
    let create = spawn_create(
        &stack.env,
        &stack.redirect,
        &[
            ("KURZ_REDIS_URL", &redis_url),
            ("KURZ_API_KEY_CACHE_TTL_MS", ttl_ms),
            // A blackholed Redis costs a request its whole budget now and then (the rate
            // limiter tries it again each second): keep that small next to the TTL.
            ("KURZ_REDIS_COMMAND_TIMEOUT_MS", "100"),
        ],
    )
    .await;
    let (key, client) = stack.client_for("d", &[Scope::LinksRead], None).await;
    let probe = || client.get(create.url("/api/v1/links/nothere")).send();
    assert_eq!(probe().await.expect("get").status(), StatusCode::NOT_FOUND);

    // Messages to this instance are lost from now on; the subscription hangs without a FIN.
    proxy.set(kurz_testkit::Fault::Blackhole);
    stack
        .env
        .sql()
        .await
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
            &[&key.key_id],
        )
        .await
        .expect("revoke");
    let at = Instant::now();

    // Still cached: nothing told the instance.
    assert_eq!(probe().await.expect("get").status(), StatusCode::NOT_FOUND);
    eventually("the cache entry expires", || async {
        probe().await.expect("get").status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let limit = Duration::from_millis(1500 + 500);
    assert!(at.elapsed() < limit, "took {:?}", at.elapsed());
}

#[tokio::test]
async fn last_used_at_is_written_in_the_background_once_a_minute_at_most() {
    let stack = Stack::start(1, 10).await;
    let (key, client) = stack.client_for("e", &[Scope::LinksRead], None).await;
    let used = || async {
        let sql = stack.env.sql().await;
        let row = sql
            .query_one(
                "SELECT last_used_at FROM api_keys WHERE id = $1",
                &[&key.key_id],
            )
            .await
            .expect("query");
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
    };
    assert_eq!(used().await, None);

    client
        .get(stack.create().url("/api/v1/links/nothere"))
        .send()
        .await
        .expect("get");
    eventually("last_used_at is set", || async { used().await.is_some() }).await;
    let first = used().await;
    for _ in 0..5 {
        client
            .get(stack.create().url("/api/v1/links/nothere"))
            .send()
            .await
            .expect("get");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(used().await, first, "not written again within the minute");
}

#[tokio::test]
async fn anonymous_creation_is_off_by_default_and_makes_ownerless_links_when_on() {
    let stack = Stack::start(1, 10).await;
    let body = json!({ "url": "https://example.com/anon" });
    let off = http_client()
        .post(stack.create().url("/api/v1/links"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(off.status(), StatusCode::UNAUTHORIZED);
    let open = spawn_create(
        &stack.env,
        &stack.redirect,
        &[("KURZ_ANONYMOUS_CREATE", "true")],
    )
    .await;

    let created = http_client()
        .post(open.url("/api/v1/links"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let bad_key = http_client_with_key("kurz_not-a-key")
        .post(open.url("/api/v1/links"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let read = http_client()
        .get(open.url("/api/v1/links/nothere"))
        .send()
        .await
        .expect("get");

    assert_eq!(created.status(), StatusCode::CREATED);
    let code = created.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(
        bad_key.status(),
        StatusCode::UNAUTHORIZED,
        "a bad key is never anonymous"
    );
    assert_eq!(
        read.status(),
        StatusCode::UNAUTHORIZED,
        "anonymous callers only create"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM links WHERE owner_id IS NULL")
            .await,
        1
    );
    let (_, reader) = stack.client_for("f", &[Scope::LinksRead], None).await;
    let path = format!("/api/v1/links/{code}");
    assert_eq!(
        reader
            .get(open.url(&path))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        stack
            .client
            .get(open.url(&path))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::OK
    );
}
