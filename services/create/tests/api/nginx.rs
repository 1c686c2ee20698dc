//! Kurz behind a real nginx configured by `infra/nginx/kurz.conf`, the production routing: one
//! public entry takes the API, the page and the documents to the create service and codes to
//! the redirect service; the client's address passes through and cannot be forged; nginx's own
//! refusals look like Kurz's; reads and unsent writes move to another instance, a DELETE never.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kurz_testkit::nginx::kurz_conf;
use kurz_testkit::process::free_port;
use kurz_testkit::{NginxServer, RunningApp, TestEnv, Upstream};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use serde_json::json;

use crate::helpers::{Stack, error_code, spawn_redirect_with};

fn addr(app: &RunningApp) -> SocketAddr {
    ([127, 0, 0, 1], app.port()).into()
}

/// An address where nothing listens: an instance that is gone.
fn dead() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

async fn nginx(creates: &[SocketAddr], redirects: &[SocketAddr]) -> NginxServer {
    NginxServer::start(
        &kurz_conf(),
        &[
            Upstream::new("kurz_create", creates.iter().copied()),
            Upstream::new("kurz_redirect", redirects.iter().copied()),
        ],
    )
    .await
}

#[tokio::test]
async fn one_entry_routes_the_api_the_page_and_the_docs_to_create_and_codes_to_redirect() {
    let stack = Stack::start(1, 10).await;
    let nginx = nginx(&[addr(stack.create())], &[addr(&stack.redirect)]).await;
    let target = "https://example.com/through-nginx";

    let created = stack
        .client
        .post(nginx.url("/api/v1/links"))
        .json(&json!({ "url": target }))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), StatusCode::CREATED);
    let code = created.json::<serde_json::Value>().await.expect("a link")["code"]
        .as_str()
        .expect("a code")
        .to_owned();

    let followed = stack
        .client
        .get(nginx.url(&format!("/{code}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(followed.status(), StatusCode::FOUND);
    assert_eq!(followed.headers()[LOCATION], target);
    let direct = stack.follow(&stack.redirect.url(&format!("/{code}"))).await;
    assert_eq!(
        followed.headers()[CACHE_CONTROL],
        direct.headers()[CACHE_CONTROL],
        "Cache-Control passes through unchanged"
    );
    let page = stack
        .client
        .get(nginx.url("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let docs = stack
        .client
        .get(nginx.url("/docs/"))
        .send()
        .await
        .expect("GET /docs/");
    assert_eq!(docs.status(), StatusCode::OK);
    // A code that merely starts like a create path is still a code.
    let lookalike = stack
        .client
        .get(nginx.url("/docsA1b"))
        .send()
        .await
        .expect("GET");
    assert_eq!(lookalike.status(), StatusCode::NOT_FOUND);
    assert_ne!(
        lookalike.headers()[CONTENT_TYPE],
        "application/json",
        "the redirect's 404"
    );
    let metrics = stack
        .client
        .get(nginx.url("/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        metrics.status(),
        StatusCode::NOT_FOUND,
        "metrics are not public"
    );
    let document = stack
        .client
        .get(nginx.url("/api/v1/openapi.json"))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("GET");
    assert_eq!(document.status(), StatusCode::OK);
    assert_eq!(
        document.headers()[CONTENT_ENCODING],
        "gzip",
        "API JSON is gzipped"
    );
}

#[tokio::test]
async fn the_client_address_passes_through_nginx_and_a_client_cannot_choose_its_own() {
    let env = TestEnv::start().await;
    // Kurz trusts nginx (127.0.0.1) only; the client connects from 127.0.0.2.
    let redirect = spawn_redirect_with(
        &env,
        &[
            ("KURZ_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("KURZ_SCAN_BUDGET", "3"),
        ],
    )
    .await;
    let nginx = nginx(&[dead()], &[addr(&redirect)]).await;
    let client_at = |last: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client")
    };
    let client = client_at(2);

    for n in 0..3 {
        let miss = client
            .get(nginx.url(&format!("/nosuch{n}")))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(miss.status(), StatusCode::NOT_FOUND);
    }
    let throttled = client
        .get(nginx.url("/nosuch9"))
        .header("x-forwarded-for", "198.51.100.99")
        .send()
        .await
        .expect("GET");

    assert_eq!(
        throttled.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "three misses from one client, whatever addresses it claimed, spend its budget of three"
    );
    assert!(throttled.headers().contains_key(RETRY_AFTER));
    // Another client behind the same nginx has its own budget: nginx passed each one's address.
    let other = client_at(3)
        .get(nginx.url("/nosuch10"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        other.status(),
        StatusCode::NOT_FOUND,
        "127.0.0.3 is not throttled"
    );
}

#[tokio::test]
async fn a_body_larger_than_kurz_accepts_is_refused_at_nginx_as_kurz_would() {
    let stack = Stack::start(1, 10).await;
    let nginx = nginx(&[addr(stack.create())], &[addr(&stack.redirect)]).await;
    let long = format!("https://example.com/{}", "a".repeat(13_000));

    let refused = stack
        .client
        .post(nginx.url("/api/v1/links"))
        .json(&json!({ "url": long }))
        .send()
        .await
        .expect("POST");

    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(refused).await, "payload_too_large");
    // A bulk call may carry a hundred such bodies: nginx lets one of 100 kB through.
    let items: Vec<_> = (0..8)
        .map(|n| json!({ "url": format!("https://example.com/{n}/{}", "b".repeat(12_000)) }))
        .collect();
    let bulk = stack
        .client
        .post(nginx.url("/api/v1/links/bulk"))
        .json(&json!({ "links": items }))
        .send()
        .await
        .expect("POST bulk");
    assert_ne!(
        bulk.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "Kurz judged it, not nginx"
    );
}

#[tokio::test]
async fn with_no_instance_reachable_nginx_answers_503_json_with_retry_after() {
    let nginx = nginx(&[dead()], &[dead()]).await;
    let client = kurz_testkit::http_client();

    for path in ["/api/v1/links", "/aB3xK9q"] {
        let response = client.get(nginx.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(response.headers()[RETRY_AFTER], "1", "{path}");
        assert_eq!(error_code(response).await, "unavailable", "{path}");
    }
}

#[tokio::test]
async fn reads_and_creates_move_to_another_instance_when_one_is_gone_and_a_delete_does_not() {
    let stack = Stack::start(1, 50).await;
    let link = stack.create_link("https://example.com/survives").await;
    let code = link["code"].as_str().expect("a code").to_owned();
    // The gone instances come first: nginx's first pick in each worker.
    let creates = [dead(), addr(stack.create())];
    let redirects = [dead(), addr(&stack.redirect)];

    let nginx_for_reads = nginx(&creates, &redirects).await;
    for n in 0..4 {
        let created = stack
            .client
            .post(nginx_for_reads.url("/api/v1/links"))
            .json(&json!({ "url": format!("https://example.com/moved/{n}") }))
            .send()
            .await
            .expect("POST");
        assert_eq!(created.status(), StatusCode::CREATED, "create {n}");
        let listed = stack
            .client
            .get(nginx_for_reads.url("/api/v1/links"))
            .send()
            .await
            .expect("GET");
        assert_eq!(listed.status(), StatusCode::OK, "list {n}");
        let followed = stack
            .client
            .get(nginx_for_reads.url(&format!("/{code}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(followed.status(), StatusCode::FOUND, "redirect {n}");
    }

    let nginx_for_delete = nginx(&creates, &redirects).await;
    let deleted = stack
        .client
        .delete(nginx_for_delete.url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(
        deleted.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a DELETE is never sent again: its client retries"
    );
    let still = stack
        .client
        .get(stack.create().url(&format!("/api/v1/links/{code}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(still.status(), StatusCode::OK, "nothing was deleted");
}

/// What the load saw.
#[derive(Debug, Default)]
struct Seen {
    /// Links the API acknowledged (201): code and target.
    acknowledged: Vec<(String, String)>,
    /// Creates that failed before a retry with the same Idempotency-Key succeeded.
    create_errors: Vec<String>,
    /// Redirect answers that were not a 302 to the link's target.
    wrong_redirects: Vec<String>,
    redirects: usize,
}

/// Creates until `stop`, each with its own Idempotency-Key, retrying a failed one with the same
/// key until it is acknowledged.
async fn create_until(
    client: reqwest::Client,
    entry: String,
    worker: usize,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let url = format!("https://example.com/load/{worker}/{n}");
        let key = format!("kill-{worker}-{n}");
        for attempt in 0.. {
            assert!(attempt < 200, "{key} was never acknowledged");
            let sent = client
                .post(format!("{entry}/api/v1/links"))
                .header("idempotency-key", &key)
                .json(&json!({ "url": url }))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    let link: serde_json::Value = r.json().await.expect("a link");
                    let code = link["code"].as_str().expect("a code").to_owned();
                    seen.lock()
                        .expect("lock")
                        .acknowledged
                        .push((code, url.clone()));
                    break;
                }
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    seen.lock()
                        .expect("lock")
                        .create_errors
                        .push(format!("{key}: 503"));
                }
                Ok(r) => panic!("{key}: unexpected {}", r.status()),
                Err(e) => seen
                    .lock()
                    .expect("lock")
                    .create_errors
                    .push(format!("{key}: {e}")),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Follows acknowledged links until `stop`, checking each answer.
async fn redirect_until(
    client: reqwest::Client,
    entry: String,
    worker: usize,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n: usize = worker;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n = n.wrapping_mul(31).wrapping_add(7);
        let pick = {
            let seen = seen.lock().expect("lock");
            (!seen.acknowledged.is_empty())
                .then(|| seen.acknowledged[n % seen.acknowledged.len()].clone())
        };
        let Some((code, url)) = pick else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let answer = client.get(format!("{entry}/{code}")).send().await;
        let mut seen = seen.lock().expect("lock");
        seen.redirects += 1;
        match answer {
            Ok(r) if r.status() == StatusCode::FOUND && r.headers()[LOCATION] == url.as_str() => {}
            Ok(r) => seen.wrong_redirects.push(format!(
                "{code}: {} {:?}",
                r.status(),
                r.headers().get(LOCATION)
            )),
            Err(e) => seen.wrong_redirects.push(format!("{code}: {e}")),
        }
    }
}

#[tokio::test]
async fn killing_an_instance_of_each_service_under_load_loses_no_link_and_misroutes_no_redirect() {
    use kurz_testkit::service::binary;
    use kurz_testkit::{ServiceProcess, http_client_with_key};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let env = TestEnv::start().await;
    crate::helpers::worker(&env)
        .await
        .add_keys(20_000)
        .await
        .expect("fill the pool");
    let source = env.source().with("KURZ_KEY_BATCH_SIZE", "200");
    // A slower database under the create instances (each create then takes about 100 ms), so
    // the killed one surely has creates in flight, which is what the test is about.
    let slow = env.postgres_proxy().await;
    slow.set(kurz_testkit::Fault::Latency(Duration::from_millis(25)));
    let create_source = source
        .clone()
        .with("KURZ_DATABASE_URL", env.database_url_via(&slow));
    let mut redirects = [
        ServiceProcess::start(binary("kurz-redirect"), source.clone()).await,
        ServiceProcess::start(binary("kurz-redirect"), source.clone()).await,
    ];
    let mut creates = [
        ServiceProcess::start(binary("kurz-create"), create_source.clone()).await,
        ServiceProcess::start(binary("kurz-create"), create_source).await,
    ];
    let at = |s: &ServiceProcess| SocketAddr::from(([127, 0, 0, 1], s.port()));
    let nginx = nginx(
        &[at(&creates[0]), at(&creates[1])],
        &[at(&redirects[0]), at(&redirects[1])],
    )
    .await;
    let key = env
        .api_key(
            "load",
            &[kurz_repository::Scope::LinksWrite],
            Some(1_000_000),
        )
        .await;
    let client = http_client_with_key(&key.key);
    let entry = nginx.url("");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    const CREATORS: usize = 4;
    let mut load = Vec::new();
    for worker in 0..CREATORS {
        load.push(tokio::spawn(create_until(
            client.clone(),
            entry.clone(),
            worker,
            seen.clone(),
            stop.clone(),
        )));
        load.push(tokio::spawn(redirect_until(
            client.clone(),
            entry.clone(),
            worker,
            seen.clone(),
            stop.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    redirects[0].kill();
    creates[0].kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redirects[0].restart().await;
    creates[0].restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load task");
    }

    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    eprintln!(
        "{} links acknowledged, {} redirects, create errors retried: {:?}",
        seen.acknowledged.len(),
        seen.redirects,
        seen.create_errors
    );
    assert!(seen.acknowledged.len() > 20, "the load ran: {seen:?}");
    assert!(seen.redirects > 40, "the redirects ran: {}", seen.redirects);
    assert!(
        seen.wrong_redirects.is_empty(),
        "every redirect answered with its link's target: {:?}",
        seen.wrong_redirects
    );
    // Each creator has one request in flight: only those on the killed instance can fail,
    // and they did (so their retries with the same Idempotency-Key were put to the test).
    assert!(
        !seen.create_errors.is_empty() && seen.create_errors.len() <= CREATORS,
        "errors only for the killed instance's in-flight creates: {:?}",
        seen.create_errors
    );
    let sql = env.sql().await;
    for (code, url) in &seen.acknowledged {
        let row = sql
            .query_opt(
                "SELECT target_url FROM links WHERE code = $1 AND deleted_at IS NULL",
                &[code],
            )
            .await
            .expect("a query");
        let stored: Option<String> = row.map(|r| r.get(0));
        assert_eq!(
            stored.as_deref(),
            Some(url.as_str()),
            "acknowledged {code} is stored"
        );
    }
    let duplicated = env
        .count(
            "SELECT count(*) FROM (SELECT target_url FROM links GROUP BY target_url \
             HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(duplicated, 0, "a retried create made one link, not two");
}
