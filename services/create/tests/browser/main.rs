//! The web page in a real browser: Debian's Chromium, driven over WebDriver (chromedriver)
//! by fantoccini, against the real create, redirect and analytics services, PostgreSQL and
//! Redis. Each test is a journey a person takes; each saves screenshots of the pages it
//! passes as test artifacts (`target/test-artifacts/browser/`).

mod journeys;
mod network;

use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use kurz_repository::Scope;
use kurz_settings::Source;
use kurz_testkit::{Browser, RunningApp, TestEnv, TestKey, http_client_with_key};
use serde_json::Value;

/// A per-minute limit no journey reaches.
const UNLIMITED: u32 = 1_000_000;

/// Everything a person reaches through the page: the create service that serves it, the
/// redirect service its short URLs point at, the analytics worker behind the stats, a target
/// site to land on, and a key with the scopes the page uses.
#[allow(missing_debug_implementations)] // the analytics worker is not `Debug`
pub struct Stack {
    pub env: TestEnv,
    pub create: RunningApp,
    pub redirect: RunningApp,
    /// Where the links point: `http://localhost:{port}/...`, answering 200 with a page.
    pub landing: RunningApp,
    pub worker: kurz_analytics::Worker,
    pub key: TestKey,
}

impl Stack {
    /// The stack, with anonymous creation on or off.
    pub async fn start(anonymous_create: bool) -> Self {
        let env = TestEnv::start().await;
        let landing = spawn_landing();
        let redirect = spawn_redirect(&env).await;
        keypool(&env)
            .await
            .add_keys(200)
            .await
            .expect("fill the pool");
        let create = spawn_create(&env, &redirect, anonymous_create).await;
        let worker = analytics(&env).await;
        let key = env
            .api_key(
                "browser",
                &[Scope::LinksRead, Scope::LinksWrite, Scope::StatsRead],
                Some(UNLIMITED),
            )
            .await;
        Self {
            env,
            create,
            redirect,
            landing,
            worker,
            key,
        }
    }

    /// The page's address.
    pub fn page(&self) -> String {
        self.create.url("/")
    }

    /// A target on the landing site. `localhost`, not `127.0.0.1`: the short URLs live on
    /// `127.0.0.1`, and a target on the shortener's own host is refused as a loop.
    pub fn target(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.landing.port())
    }

    /// A client sending the stack's key.
    pub fn api(&self) -> reqwest::Client {
        http_client_with_key(&self.key.key)
    }

    /// Creates a link through the API, as the key's account; returns its body.
    pub async fn link(&self, url: &str) -> Value {
        let response = self
            .api()
            .post(self.create.url("/api/v1/links"))
            .json(&serde_json::json!({ "url": url }))
            .send()
            .await
            .expect("create request");
        assert_eq!(response.status(), 201);
        response.json().await.expect("a link")
    }

    /// `GET /api/v1/links/{code}` with the key: its status and body.
    pub async fn get_link(&self, code: &str) -> (u16, Value) {
        let response = self
            .api()
            .get(self.create.url(&format!("/api/v1/links/{code}")))
            .send()
            .await
            .expect("GET link");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Runs the analytics worker until it has applied `clicks` clicks (the redirect ships
    /// them every 20 ms), bounded so a click that never arrives fails the test.
    pub async fn apply_clicks(&mut self, clicks: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut applied = 0;
        while applied < clicks {
            assert!(
                Instant::now() < deadline,
                "only {applied} of {clicks} clicks reached the worker"
            );
            applied += self
                .worker
                .process_once()
                .await
                .expect("a worker step")
                .applied;
        }
    }

    /// Links of the key's account in PostgreSQL, deleted ones included.
    pub async fn stored_links(&self) -> i64 {
        self.env
            .count(&format!(
                "SELECT count(*) FROM links WHERE owner_id = {}",
                self.key.account_id
            ))
            .await
    }
}

/// A browser with the stack's key in the page's storage, as signing in leaves it, at `route`.
/// For journeys about something else than signing in (which has its own).
pub async fn signed_in_at(stack: &Stack, route: &str) -> Browser {
    let browser = Browser::start().await;
    browser.open(&stack.page()).await;
    browser
        .client()
        .execute(
            "localStorage.setItem('kurz.apiKey', arguments[0]); return true;",
            vec![Value::String(stack.key.key.clone())],
        )
        .await
        .expect("storing the key");
    browser.open(&format!("{}{route}", stack.page())).await;
    // Only the hash changed, which does not load the page again: reload, so it starts with
    // the key in storage.
    browser
        .client()
        .refresh()
        .await
        .expect("reloading the page");
    browser.find("#whoami").await;
    browser
}

/// Waits until the view `id` has loaded its data (`data-state="ready"`).
pub async fn ready(browser: &Browser, view: &str) {
    browser
        .until(
            &format!("{view} is ready"),
            &format!(
                "const v = document.getElementById('{view}'); \
                 return !!v && !v.hidden && v.dataset.state === 'ready';"
            ),
        )
        .await;
}

/// Whether the element `css` exists and is shown.
pub async fn shown(browser: &Browser, css: &str) -> bool {
    match browser.client().find(fantoccini::Locator::Css(css)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn spawn_redirect(env: &TestEnv) -> RunningApp {
    let source = env.source().with(
        "KURZ_VISITOR_HASH_SECRET",
        "a browser-test secret of at least 32 bytes",
    );
    let settings = kurz_redirect::Settings::from_source(&source).expect("valid settings");
    let app = kurz_redirect::Application::build(settings)
        .await
        .expect("redirect starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

async fn spawn_create(env: &TestEnv, redirect: &RunningApp, anonymous: bool) -> RunningApp {
    let source = env
        .source()
        .with("KURZ_PUBLIC_BASE_URL", redirect.url("/"))
        // The landing site is on loopback.
        .with("KURZ_ALLOW_PRIVATE_TARGETS", "true")
        .with("KURZ_ANONYMOUS_CREATE", anonymous.to_string());
    let settings = kurz_create::Settings::from_source(&source).expect("valid settings");
    let app = kurz_create::Application::build(settings)
        .await
        .expect("create starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

async fn keypool(env: &TestEnv) -> kurz_keypool::Worker {
    let settings = kurz_keypool::Settings::from_source(&env.source()).expect("valid settings");
    kurz_keypool::Worker::build(&settings)
        .await
        .expect("the key-pool worker starts")
}

async fn analytics(env: &TestEnv) -> kurz_analytics::Worker {
    let source: Source = env
        .source()
        .with("KURZ_ANALYTICS_CONSUMER", "browser")
        .with("KURZ_ANALYTICS_BLOCK_MS", "50");
    let settings = kurz_analytics::Settings::from_source(&source).expect("valid settings");
    kurz_analytics::Worker::build(&settings)
        .await
        .expect("the analytics worker starts")
}

/// The site links point at: any path answers 200 with a small page titled "Landed".
fn spawn_landing() -> RunningApp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a landing port");
    let port = listener.local_addr().expect("an address").port();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body("<!doctype html><title>Landed</title><h1>Landed</h1>")
        }))
    })
    .workers(1)
    .listen(listener)
    .expect("listening")
    .disable_signals()
    .run();
    RunningApp::spawn(port, |shutdown| async move {
        let handle = server.handle();
        let serving = tokio::spawn(server);
        shutdown.await;
        handle.stop(true).await;
        serving.await.expect("the landing server task")
    })
}
