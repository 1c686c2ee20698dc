//! The OpenAPI document against the running app. Routes are registered and documented by the
//! same call (`startup::routes`), so these tests check what that cannot: that every documented
//! operation is really served where the document says, that no other method is served on a
//! documented path, that the key requirement each operation states is the one the guard
//! applies, and that every route pattern the app matched is a documented path.

use std::collections::BTreeSet;

use kurz_testkit::http_client;
use kurz_testkit::metrics::scrape;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Stack, error_code};

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The document as served, without a key.
async fn document(stack: &Stack) -> Value {
    let response = http_client()
        .get(stack.create().url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("GET /api/v1/openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("ratelimit").is_none(),
        "the document is outside the rate limits"
    );
    response.json().await.expect("the document is JSON")
}

/// A concrete path for a documented template: parameters get values that name nothing, so
/// no request changes anything (`{id}` a number, as its handlers take).
fn concrete(template: &str) -> String {
    template
        .replace("{code}", "no-such-code")
        .replace("{id}", "987654321")
}

/// The documented methods of each path, uppercase.
fn operations(
    document: &Value,
) -> Vec<(String, BTreeSet<String>, &serde_json::Map<String, Value>)> {
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "too few paths: {:?}", paths.keys());
    paths
        .iter()
        .map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            let methods = item.keys().map(|m| m.to_uppercase()).collect();
            (path.clone(), methods, item)
        })
        .collect()
}

#[tokio::test]
async fn every_documented_operation_is_served_and_every_other_method_is_405() {
    let stack = Stack::start(1, 50).await;
    let document = document(&stack).await;

    for (template, documented, _) in operations(&document) {
        let url = stack.create().url(&concrete(&template));
        for method in METHODS {
            let response = stack
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let name = format!("{method} {template}");
            if documented.contains(method.as_str()) {
                // An unserved documented operation would reach the default service, which
                // answers 405 for every documented path.
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is documented, not served"
                );
                if !template.contains('{') {
                    assert_ne!(
                        status,
                        StatusCode::NOT_FOUND,
                        "{name} is documented, not served"
                    );
                }
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is served, not documented"
                );
                let allow = response.headers()["allow"]
                    .to_str()
                    .expect("Allow")
                    .to_owned();
                let allowed: BTreeSet<String> = allow.split(", ").map(str::to_owned).collect();
                assert_eq!(allowed, documented, "{name}: Allow");
                if method != Method::HEAD {
                    assert_eq!(error_code(response).await, "method_not_allowed", "{name}");
                }
            }
        }
    }

    // What the app matched, from its own routing table: every pattern a request above hit
    // must be a documented path.
    let base = stack.create().url("");
    let exposition = scrape(base.trim_end_matches('/')).await;
    let documented: BTreeSet<String> = operations(&document).into_iter().map(|(p, ..)| p).collect();
    let matched: BTreeSet<String> = exposition
        .0
        .lines()
        .filter(|line| line.starts_with("kurz_http_requests_total{"))
        .filter_map(|line| {
            line.split("route=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert!(matched.len() >= 10, "{matched:?}");
    for route in matched {
        assert!(
            documented.contains(&route),
            "the app serves `{route}`, which is not documented"
        );
    }
}

#[tokio::test]
async fn the_key_requirement_of_each_operation_is_the_one_the_app_applies() {
    let stack = Stack::start(1, 50).await;
    let document = document(&stack).await;
    let anonymous = http_client();

    for (template, _, item) in operations(&document) {
        for (method, operation) in item {
            let needs_key = operation["security"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r.get("bearer").is_some()));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = anonymous
                .request(method.clone(), stack.create().url(&concrete(&template)))
                .send()
                .await
                .expect("request");
            let name = format!("{method} {template}");
            if needs_key {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{name} needs a key"
                );
                assert_eq!(error_code(response).await, "unauthorized", "{name}");
            } else {
                assert!(
                    response.status().is_success(),
                    "{name} needs no key: {}",
                    response.status()
                );
            }
        }
    }
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs_and_loads_nothing_from_elsewhere() {
    let stack = Stack::start(1, 0).await;
    let client = http_client();
    let get = |path: &str| client.get(stack.create().url(path)).send();

    let bare = get("/docs").await.expect("GET /docs");
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()["location"], "/docs/");
    let index = get("/docs/").await.expect("GET /docs/");
    assert_eq!(index.status(), StatusCode::OK);
    let index = index.text().await.expect("index");
    let initializer = get("/docs/swagger-initializer.js")
        .await
        .expect("initializer");
    assert_eq!(initializer.status(), StatusCode::OK);
    let initializer = initializer.text().await.expect("initializer");

    assert!(
        initializer.contains("/api/v1/openapi.json"),
        "{initializer}"
    );
    let compact: String = initializer.split_whitespace().collect();
    assert!(
        compact.contains(r#""validatorUrl":"none""#),
        "{initializer}"
    );
    for (name, text) in [
        ("index.html", &index),
        ("swagger-initializer.js", &initializer),
    ] {
        for word in text.split(|c: char| c.is_whitespace() || "\"'()<>,".contains(c)) {
            // `//host/...` is protocol-relative: off-origin too. (`//` alone opens a comment.)
            let protocol_relative = word
                .strip_prefix("//")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphanumeric()));
            let absolute = word.starts_with("http://") || word.starts_with("https://");
            assert!(
                !absolute && !protocol_relative,
                "{name} refers to `{word}`, off this origin"
            );
        }
    }
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    ] {
        let response = get(&format!("/docs/{asset}")).await.expect("asset");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
}
