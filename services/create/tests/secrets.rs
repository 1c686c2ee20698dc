//! No log line ever contains an API key: not for a good key, a bad one, a mistyped one, or
//! one that is refused for its scope.
//!
//! Its own test binary: it installs the process-wide subscriber, at TRACE for the server side
//! (Kurz, actix, the request tracing), in the JSON format the services log in.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kurz_create::{Application, Settings};
use kurz_repository::Scope;
use kurz_testkit::{RunningApp, TestEnv, http_client_with_key};
use serde_json::json;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_log_line_contains_a_key_whatever_happens_to_it() {
    let logs = Captured::default();
    let filter = "kurz_create=trace,kurz_repository=trace,kurz_ratelimit=trace,kurz_http=trace,\
                  tracing_actix_web=trace,actix_web=trace,actix_http=trace,actix_server=trace";
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(logs.clone())
        .init();
    let env = TestEnv::start().await;
    let settings = Settings::from_source(&env.source()).expect("valid settings");
    let app = Application::build(settings).await.expect("create starts");
    let app = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));
    let good = env.api_key("logged", &[Scope::LinksRead], None).await.key;
    let mut typo = good.clone();
    typo.replace_range(10..11, if &good[10..11] == "x" { "y" } else { "x" });
    let unknown = kurz_repository::token::MintedKey::generate()
        .expose()
        .to_owned();

    for key in [&good, &typo, &unknown] {
        let client = http_client_with_key(key);
        // A read (allowed for the good key), a write (403 for it: wrong scope), a bad path.
        client
            .get(app.url("/api/v1/links/nothere"))
            .send()
            .await
            .expect("get");
        client
            .post(app.url("/api/v1/links"))
            .json(&json!({ "url": "https://example.com/" }))
            .send()
            .await
            .expect("post");
        client
            .get(app.url("/api/v1/nowhere"))
            .header("X-Api-Key", key.as_str())
            .send()
            .await
            .expect("get");
    }
    app.stop().await.expect("stops");

    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.lines().count() > 10, "the capture works: {logs}");
    for key in [&good, &typo, &unknown] {
        assert!(!logs.contains(&key["kurz_".len()..]), "a key in the logs");
    }
    let lower = logs.to_ascii_lowercase();
    assert!(
        !lower.contains("authorization"),
        "the Authorization header was logged"
    );
    assert!(
        !lower.contains("x-api-key"),
        "the X-Api-Key header was logged"
    );
}
