use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use kurz_redirect::{Application, Settings};
use kurz_repository::{Link, LinkRepository, NewLink, PgRepository};
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
    let link = NewLink {
        target_url: url.to_owned(),
        expires_at,
        owner_id: None,
        behaviour: Default::default(),
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
