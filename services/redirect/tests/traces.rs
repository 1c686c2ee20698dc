//! Trace export of the redirect service: an incoming W3C or B3 context is continued, and the
//! spans of a request that goes down to Redis and PostgreSQL reach an OTLP receiver.
//!
//! Its own test binary: it installs the process-wide subscriber.

use kurz_redirect::{Application, Settings};
use kurz_repository::{LinkRepository, NewLink};
use kurz_settings::Source;
use kurz_testkit::otlp::{client_span, descends_from, server_span};
use kurz_testkit::{OtlpSink, RunningApp, TestEnv, http_client};

/// A code, the caller's trace and span ids, and the headers that carry them.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// A caller's context in each of the three accepted header forms.
const CASES: [Case; 3] = [
    (
        "w3cTrace",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    ),
    (
        "b3Single",
        "80f198ee56343ba864fe8b2a57d3eff7",
        "e457b5a2e4d86bd1",
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    ),
    (
        "b3Multi",
        "463ac35c9f6413ad48485a3953bb6124",
        "0020000000000001",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ],
    ),
];

#[tokio::test]
async fn a_redirect_continues_the_callers_trace_down_to_redis_and_postgres() {
    let env = TestEnv::start().await;
    let sink = OtlpSink::start().await;
    let source: Source = env
        .source()
        .with("KURZ_OTLP_ENDPOINT", sink.endpoint())
        .with("KURZ_LOG", "warn");
    let settings = Settings::from_source(&source).expect("valid settings");
    let telemetry = kurz_telemetry::init("kurz-redirect", &settings.telemetry).expect("telemetry");
    let app = Application::build(settings).await.expect("redirect starts");
    let app = RunningApp::spawn(app.port(), |shutdown| app.run_until_stopped(shutdown));
    let repo = env.repository();

    for (code, trace_id, parent_id, headers) in CASES {
        // Straight into PostgreSQL: no cache holds it, so the request goes through every tier.
        let link = NewLink {
            target_url: format!("https://example.com/{code}"),
            expires_at: None,
            owner_id: None,
            behaviour: Default::default(),
        };
        repo.insert_with_alias(code, &link).await.expect("insert");
        let mut request = http_client().get(app.url(&format!("/{code}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("GET");
        assert_eq!(response.status(), 302, "{code}");
        response.bytes().await.expect("body");
        telemetry.flush().await;

        let trace = sink
            .wait_for_request(trace_id, &["redis", "postgresql"])
            .await;
        let root = server_span(&trace).expect("the request's span");
        assert_eq!(root.service, "kurz-redirect");
        assert_eq!(
            root.parent_span_id, parent_id,
            "{code}: the request span's parent is the caller's span"
        );
        for system in ["redis", "postgresql"] {
            let child = client_span(&trace, system).expect("a client span");
            assert!(
                descends_from(child, root, &trace),
                "{code}: the {system} span {child:?} is inside the request span"
            );
        }
        let resolve = trace.iter().find(|s| s.name == "resolve").expect("resolve");
        assert_eq!(resolve.attribute("cache.local"), Some("miss"), "{code}");
        assert_eq!(resolve.attribute("cache.redis"), Some("miss"), "{code}");
    }

    app.stop().await.expect("stops");
    telemetry.shutdown().await;
}
