use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use kurz_redirect::{Application, Settings};
use kurz_repository::{Behaviour, Link, LinkRepository, NewLink, PgRepository};
use kurz_settings::Source;
use kurz_testkit::{RunningApp, TestEnv};

/// Starts the redirect service on this env's servers, with extra `KURZ_*` variables.
pub async fn spawn_redirect(env: &TestEnv, extra: &[(&str, &str)]) -> RunningApp {
    let mut source: Source = env.source();
    for (k, v) in extra {
        source = source.with(k, *v);
    }
    let settings = Settings::from_source(&source).expect("valid settings");
    let app = Application::build(settings).await.expect("redirect starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// The repository, to arrange links directly in PostgreSQL.
pub fn repo(env: &TestEnv) -> PgRepository {
    env.repository()
}

pub async fn insert(
    env: &TestEnv,
    code: &str,
    url: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Link {
    insert_with(env, code, url, expires_at, Behaviour::default()).await
}

/// A link with a behaviour of its own (status, forward_query, expired_url, max_visits).
pub async fn insert_with(
    env: &TestEnv,
    code: &str,
    url: &str,
    expires_at: Option<DateTime<Utc>>,
    behaviour: Behaviour,
) -> Link {
    let link = NewLink {
        target_url: url.to_owned(),
        expires_at,
        owner_id: None,
        behaviour,
    };
    repo(env)
        .insert_with_alias(code, &link)
        .await
        .expect("insert link")
}

/// The raw Redis entry of a code.
pub async fn cached(env: &TestEnv, code: &str) -> Option<String> {
    let mut conn = env.redis_conn().await;
    redis::cmd("GET")
        .arg(format!("kurz:link:{code}"))
        .query_async(&mut conn)
        .await
        .expect("GET")
}

/// Waits (bounded) for the background cache fill of `code` to land.
pub async fn wait_cached(env: &TestEnv, code: &str) -> String {
    for _ in 0..200 {
        if let Some(v) = cached(env, code).await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{code} was never cached");
}

/// A desktop browser's User-Agent: what uses up a visit of a limited link (a client without
/// one is a bot).
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A test client (no redirects followed) that says it is a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(BROWSER)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the browser client")
}

/// `links.visits` of `code`, read in PostgreSQL.
pub async fn visits(env: &TestEnv, code: &str) -> i64 {
    env.sql()
        .await
        .query_one("SELECT visits FROM links WHERE code = $1", &[&code])
        .await
        .expect("the link's row")
        .get(0)
}
