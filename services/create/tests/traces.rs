//! Trace export of the create service: a create carrying a W3C or B3 context is continued, and
//! its PostgreSQL insert and Redis write are spans of that trace.
//!
//! Its own test binary: it installs the process-wide subscriber.

use kurz_create::{Application, Settings};
use kurz_keypool::Worker;
use kurz_repository::Scope;
use kurz_settings::Source;
use kurz_testkit::otlp::{client_span, server_span};
use kurz_testkit::{OtlpSink, RunningApp, TestEnv, http_client_with_key};
use serde_json::json;

#[tokio::test]
async fn a_create_continues_the_callers_trace_down_to_postgres_and_redis() {
    let env = TestEnv::start().await;
    let sink = OtlpSink::start().await;
    let pool = env
        .source()
        .with("KURZ_POOL_LOW_WATERMARK", "10")
        .with("KURZ_POOL_HIGH_WATERMARK", "100");
    Worker::build(&kurz_keypool::Settings::from_source(&pool).expect("settings"))
        .await
        .expect("worker")
        .add_keys(100)
        .await
        .expect("keys");
    let source: Source = env
        .source()
        .with("KURZ_OTLP_ENDPOINT", sink.endpoint())
        .with("KURZ_LOG", "warn");
    let settings = Settings::from_source(&source).expect("valid settings");
    let telemetry = kurz_telemetry::init("kurz-create", &settings.telemetry).expect("telemetry");
    let app = Application::build(settings).await.expect("create starts");
    let app = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));

    // A pool-key create (group commit) with traceparent, an alias create with B3.
    let cases = [
        (
            json!({ "url": "https://example.com/traced" }),
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ),
        (
            json!({ "url": "https://example.com/traced-alias", "alias": "traced-alias" }),
            "a3ce929d0e0e47364bf92f3577b34da6",
            "53995c3f42cd8ad8",
            ("b3", "a3ce929d0e0e47364bf92f3577b34da6-53995c3f42cd8ad8-1"),
        ),
    ];
    let key = env.api_key("traced", &[Scope::LinksWrite], None).await;
    let client = http_client_with_key(&key.key);
    for (body, trace_id, parent_id, (header, value)) in cases {
        let response = client
            .post(app.url("/api/v1/links"))
            .header(header, value)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201, "{body}");
        response.bytes().await.expect("body");
        telemetry.flush().await;

        let trace = sink
            .wait_for_request(trace_id, &["redis", "postgresql"])
            .await;
        let root = server_span(&trace).expect("the request's span");
        assert_eq!(root.service, "kurz-create");
        assert_eq!(root.parent_span_id, parent_id, "{body}");
        for system in ["redis", "postgresql"] {
            let child = client_span(&trace, system).expect("a client span");
            assert_eq!(
                child.parent_span_id, root.span_id,
                "{body}: the {system} span is a child of the request span"
            );
        }
    }

    // No span carries the key, its random part, or the header it came in.
    let secret = &key.key["kurz_".len()..];
    for span in sink.spans() {
        for (name, value) in &span.attributes {
            assert!(
                !value.contains(secret) && !name.contains("authorization"),
                "span {} has {name}={value}",
                span.name
            );
        }
    }

    app.stop().await.expect("stops");
    telemetry.shutdown().await;
}
