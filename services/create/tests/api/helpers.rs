use kurz_keypool::Worker;
use kurz_repository::Scope;
use kurz_settings::Source;
use kurz_testkit::{RunningApp, TestEnv, TestKey, http_client_with_key};
use reqwest::Response;
use serde_json::Value;

/// PostgreSQL and Redis, a redirect service, and create instances pointing at it.
pub struct Stack {
    pub env: TestEnv,
    pub redirect: RunningApp,
    pub creates: Vec<RunningApp>,
    /// Sends [`Stack::admin`] on every request.
    pub client: reqwest::Client,
    /// An admin key of the account `ops`, with no practical rate limit, so tests about other
    /// things are not throttled.
    pub admin: TestKey,
}

impl Stack {
    /// A stack with `creates` create instances and `keys` keys in the pool.
    pub async fn start(creates: usize, keys: u64) -> Self {
        Self::start_with(creates, keys, &[]).await
    }

    pub async fn start_with(creates: usize, keys: u64, extra: &[(&str, &str)]) -> Self {
        let env = TestEnv::start().await;
        let redirect = spawn_redirect(&env).await;
        if keys > 0 {
            worker(&env)
                .await
                .add_keys(keys)
                .await
                .expect("fill the pool");
        }
        let mut apps = Vec::new();
        for _ in 0..creates {
            apps.push(spawn_create(&env, &redirect, extra).await);
        }
        let admin = env.api_key("ops", &[Scope::Admin], Some(UNLIMITED)).await;
        Self {
            env,
            redirect,
            creates: apps,
            client: http_client_with_key(&admin.key),
            admin,
        }
    }

    /// A client of a new key for `account`, with `scopes` and the default rate limit unless
    /// `rate_limit` says otherwise.
    pub async fn client_for(
        &self,
        account: &str,
        scopes: &[Scope],
        rate_limit: Option<u32>,
    ) -> (TestKey, reqwest::Client) {
        let key = self.env.api_key(account, scopes, rate_limit).await;
        let client = http_client_with_key(&key.key);
        (key, client)
    }

    pub fn create(&self) -> &RunningApp {
        &self.creates[0]
    }

    pub async fn post(&self, body: &Value) -> Response {
        post_link(&self.client, self.create(), body).await
    }

    /// Creates a link to `url` and returns the response body.
    pub async fn create_link(&self, url: &str) -> Value {
        self.post(&serde_json::json!({ "url": url }))
            .await
            .json()
            .await
            .expect("json")
    }

    /// Follows a short URL one hop, through the redirect service.
    pub async fn follow(&self, short_url: &str) -> Response {
        self.client
            .get(short_url)
            .send()
            .await
            .expect("redirect request")
    }

    /// Sets columns of the link `code` behind the API's back (`set` is an SQL `SET` list),
    /// for states the API cannot make: a past expiry, counted visits, another owner.
    pub async fn arrange(&self, code: &str, set: &str) {
        self.env
            .sql()
            .await
            .execute(&format!("UPDATE links SET {set} WHERE code = $1"), &[&code])
            .await
            .expect("arranging a link");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.env.count(sql).await
    }
}

pub async fn spawn_redirect(env: &TestEnv) -> RunningApp {
    spawn_redirect_with(env, &[]).await
}

pub async fn spawn_redirect_with(env: &TestEnv, extra: &[(&str, &str)]) -> RunningApp {
    let mut source: Source = env.source();
    for (k, v) in extra {
        source = source.with(k, *v);
    }
    let settings = kurz_redirect::Settings::from_source(&source).expect("valid settings");
    let app = kurz_redirect::Application::build(settings)
        .await
        .expect("redirect starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// A create instance whose short URLs point at `redirect`.
pub async fn spawn_create(
    env: &TestEnv,
    redirect: &RunningApp,
    extra: &[(&str, &str)],
) -> RunningApp {
    let mut source: Source = env.source().with("KURZ_PUBLIC_BASE_URL", redirect.url("/"));
    for (k, v) in extra {
        source = source.with(k, *v);
    }
    let settings = kurz_create::Settings::from_source(&source).expect("valid settings");
    let app = kurz_create::Application::build(settings)
        .await
        .expect("create starts");
    RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// A per-minute limit no test reaches.
pub const UNLIMITED: u32 = 1_000_000;

pub async fn worker(env: &TestEnv) -> Worker {
    let source = env
        .source()
        .with("KURZ_POOL_LOW_WATERMARK", "100")
        .with("KURZ_POOL_HIGH_WATERMARK", "1000");
    let settings = kurz_keypool::Settings::from_source(&source).expect("valid settings");
    Worker::build(&settings).await.expect("worker starts")
}

pub async fn post_link(client: &reqwest::Client, app: &RunningApp, body: &Value) -> Response {
    client
        .post(app.url("/api/v1/links"))
        .json(body)
        .send()
        .await
        .expect("create request")
}

/// `GET path?query` (the parameters URL-encoded, in order).
pub async fn get(
    client: &reqwest::Client,
    app: &RunningApp,
    path: &str,
    query: &[(&str, &str)],
) -> Response {
    let url = url::Url::parse_with_params(&app.url(path), query).expect("a URL");
    client.get(url).send().await.expect("GET request")
}

/// The `error.code` of a JSON error body.
pub async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

pub use kurz_testkit::{eventually, within};
