//! Criterion benchmarks of the CPU-bound hot paths (see the crate README).

use std::hint::black_box;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web;
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use kurz_create::request::CreateLink;
use kurz_create::validate::UrlPolicy;
use kurz_ratelimit::Store;
use kurz_redirect::behaviour::CacheControl;
use kurz_redirect::query::merge;
use kurz_redirect::resolve::Resolver;
use kurz_redirect::routes::{State, redirect};
use kurz_redirect::scan::ScanGuard;
use kurz_redirect::visits::VisitGate;
use kurz_repository::codes::is_well_formed;
use kurz_repository::{Behaviour, CachedLink, PgRepository, RedisCache};
use kurz_settings::{DatabaseSettings, RedisSettings, Source, TrustedProxies};

const TARGET: &str =
    "https://www.example.com/articles/2026/11/a-long-article-title?utm_source=kurz&utm_medium=link";

fn codes(c: &mut Criterion) {
    let mut group = c.benchmark_group("codes");
    group.bench_function("well_formed_key", |b| {
        b.iter(|| is_well_formed(black_box("aB3xK9q")))
    });
    group.bench_function("malformed", |b| {
        b.iter(|| is_well_formed(black_box("has.dot")))
    });
    group.finish();
}

fn url(c: &mut Criterion) {
    let base = url::Url::parse("https://kurz.example/").expect("valid");
    let policy = UrlPolicy::new(8_192, &base);
    let mut group = c.benchmark_group("url");
    group.bench_function("normalize_typical", |b| {
        b.iter(|| policy.normalize(black_box(TARGET)))
    });
    group.bench_function("normalize_idn_and_dot_segments", |b| {
        b.iter(|| policy.normalize(black_box("HTTPS://Bücher.Example:443/a/./b/../c?q=1#frag")))
    });
    group.bench_function("refuse_control_characters", |b| {
        b.iter(|| policy.normalize(black_box("https://exa\tmple.com/")))
    });
    group.finish();
}

fn create_request(c: &mut Criterion) {
    let base = url::Url::parse("https://kurz.example/").expect("valid");
    let policy = UrlPolicy::new(8_192, &base);
    let body = serde_json::to_vec(&serde_json::json!({
        "url": TARGET,
        "alias": "launch-2030",
        "expires_at": "2030-01-31T12:00:00Z",
    }))
    .expect("json");
    c.bench_function("create_request/parse_and_validate", |b| {
        b.iter(|| {
            let request: CreateLink = serde_json::from_slice(black_box(&body)).expect("valid body");
            request
                .validate(&policy, None, Utc::now())
                .expect("valid request")
        })
    });
}

/// The whole redirect handler, answered from the in-process cache. The pools are built but
/// never used: a cache hit does no I/O, which is the point being measured.
fn redirect_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let source = Source::default();
    let state = runtime.block_on(async {
        let repo = PgRepository::new(
            &DatabaseSettings::from_source(&source).expect("settings"),
            "bench",
        )
        .expect("pool");
        let ttl = kurz_repository::cache::CacheTtl {
            found: Duration::from_secs(3_600),
            missing: Duration::from_secs(10),
        };
        let cache = RedisCache::new(&RedisSettings::from_source(&source).expect("settings"), ttl)
            .expect("pool");
        // Scan resistance on, as in production; nobody is blocked, so a hit pays its fast path.
        let limits = Store::new(cache.connection(), cache.command_timeout());
        let scan = ScanGuard::new(
            &limits,
            100,
            Duration::from_secs(60),
            TrustedProxies::default(),
        );
        let resolver = Resolver::new(repo, cache, Duration::from_secs(3_600), 100_000);
        let entry = CachedLink::Found {
            target_url: TARGET.to_owned(),
            expires_at: None,
            behaviour: Default::default(),
        };
        resolver.warm("aB3xK9q", entry).await;
        // The same target with forward_query: the request's query is merged in.
        let forwarding = CachedLink::Found {
            target_url: TARGET.to_owned(),
            expires_at: None,
            behaviour: Behaviour {
                forward_query: true,
                ..Behaviour::default()
            },
        };
        resolver.warm("fwdQry1", forwarding).await;
        web::Data::new(State {
            resolver,
            status: StatusCode::FOUND,
            caching: CacheControl::new(Duration::from_secs(300)),
            scan,
            visits: VisitGate::new(),
            clicks: None,
            home: None,
        })
    });
    // The requests are built once: what is measured is the handler, not the test helper.
    let plain = actix_web::test::TestRequest::get()
        .uri("/aB3xK9q")
        .to_http_request();
    let with_query = actix_web::test::TestRequest::get()
        .uri("/fwdQry1?utm_source=newsletter&utm_campaign=2026-12&ref=a%20b+c")
        .to_http_request();
    let mut group = c.benchmark_group("redirect_hit");
    for (name, request) in [("handler", plain), ("forward_query", with_query)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let response = redirect(request.clone(), state.clone()).await;
                let response = response.expect("a cached link");
                assert_eq!(response.status(), StatusCode::FOUND);
                response
            })
        });
    }
    group.finish();
}

/// The forward_query merge alone: a target with two parameters, a request replacing one.
fn query_merge(c: &mut Criterion) {
    let query = "utm_source=newsletter&utm_campaign=2026-12&ref=a%20b+c";
    c.bench_function("query/merge", |b| {
        b.iter(|| merge(black_box(TARGET.as_bytes()), black_box(query.as_bytes())))
    });
}

criterion_group!(
    benches,
    codes,
    url,
    create_request,
    redirect_hit,
    query_merge
);
criterion_main!(benches);
