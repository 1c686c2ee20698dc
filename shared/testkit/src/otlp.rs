//! An in-process OTLP/gRPC trace receiver: what a collector would get, kept for assertions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// One exported span, its ids as lowercase hex (the form of `traceparent` and B3 headers).
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// String attributes (others are rendered with `{:?}`).
    pub attributes: Vec<(String, String)>,
}

impl ExportedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Receives OTLP trace exports on a free loopback port until dropped.
#[derive(Debug)]
pub struct OtlpSink {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = lock(&self.spans);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| render(v.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| convert(&service, s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl OtlpSink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP sink");
        let addr = listener.local_addr().expect("sink address");
        let receiver = Receiver::default();
        let spans = receiver.spans.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = Server::builder()
                .serve_with_incoming_shutdown(
                    TraceServiceServer::new(receiver),
                    TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            spans,
            addr,
            _stop: stop,
        }
    }

    /// The value for `KURZ_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        lock(&self.spans).clone()
    }

    /// The spans of one trace, once `done` holds for them; panics after 10 s.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Vec<ExportedSpan> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let trace: Vec<ExportedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&trace) {
                return trace;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id} incomplete after 10 s: {trace:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl OtlpSink {
    /// The spans of the HTTP request of trace `trace_id`, once its server span and a client
    /// span of each of `systems` (`db.system`: `redis`, `postgresql`) have arrived.
    pub async fn wait_for_request(&self, trace_id: &str, systems: &[&str]) -> Vec<ExportedSpan> {
        self.wait_for_trace(trace_id, |spans| {
            server_span(spans).is_some()
                && systems
                    .iter()
                    .all(|system| client_span(spans, system).is_some())
        })
        .await
    }
}

/// The HTTP server span tracing-actix-web opens for each request.
pub fn server_span(spans: &[ExportedSpan]) -> Option<&ExportedSpan> {
    spans.iter().find(|s| s.attribute("http.method").is_some())
}

/// A client span of `system` (its `db.system` attribute).
pub fn client_span<'a>(spans: &'a [ExportedSpan], system: &str) -> Option<&'a ExportedSpan> {
    spans
        .iter()
        .find(|s| s.attribute("db.system") == Some(system))
}

/// Whether `span` lies under `ancestor`, following parent ids within `trace`.
pub fn descends_from(span: &ExportedSpan, ancestor: &ExportedSpan, trace: &[ExportedSpan]) -> bool {
    let mut current = span;
    for _ in 0..trace.len() {
        if current.parent_span_id == ancestor.span_id {
            return true;
        }
        match trace.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

fn lock(spans: &Mutex<Vec<ExportedSpan>>) -> MutexGuard<'_, Vec<ExportedSpan>> {
    spans
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn convert(service: &str, span: ProtoSpan) -> ExportedSpan {
    ExportedSpan {
        service: service.to_owned(),
        name: span.name,
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        attributes: span
            .attributes
            .into_iter()
            .map(|kv| {
                let value = render(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                (kv.key, value)
            })
            .collect(),
    }
}

fn render(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
