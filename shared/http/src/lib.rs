#![doc = include_str!("../README.md")]
//! # Layout
//! - [`healthz`] and [`readiness`]: the probe answers both HTTP services give.
//! - [`get_or_head`]: a route for both methods, as probes and redirects need.
//! - [`request_tracing`]: the middleware that opens one span per request, continuing the
//!   caller's trace (W3C `traceparent` or B3).
//! - [`request_metrics`] and [`metrics`]: request counts and latencies, and `/metrics`.
//! - [`run_until_stopped`]: serve until a shutdown future resolves, then drain.
//! - [`worker_server`] and [`run_worker_until_stopped`]: a background worker's `/healthz` and
//!   `/metrics`, and its loop run beside them.
//! - [`client_ip`]: the client's address behind trusted proxies (`X-Forwarded-For`,
//!   `Forwarded`), and the subject per-IP rate limits count under.

pub mod backoff;
pub mod client_ip;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CACHE_CONTROL, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{Condition, Next};
use actix_web::{App, Error, HttpResponse, HttpServer, Route, guard, web};
use kurz_telemetry::metrics::names;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::json;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Seconds in-flight requests get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;

/// `/healthz`: the process is alive and serving HTTP; says nothing about dependencies.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "alive" }))
}

/// What a service can do without PostgreSQL, which decides its readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Nothing: every answer needs PostgreSQL (the create API).
    FromPostgres,
    /// Answers from its caches while PostgreSQL is down (the redirect service): taking it out
    /// of a load balancer then would stop the links it could still serve.
    CacheFirst,
}

/// `/readyz`: 200 `ready` when PostgreSQL answers and its circuit breaker is closed; 200
/// `degraded` when Redis is down (a cache: both services work without it) or the breaker is
/// half-open (PostgreSQL is being probed), and for a [`Serves::CacheFirst`] service also when
/// PostgreSQL is down but Redis answers; otherwise 503 `unavailable` when PostgreSQL does not
/// answer or the breaker refuses calls. `breaker` is the breaker's state name.
pub fn readiness(
    serves: Serves,
    postgres_up: bool,
    redis_up: bool,
    breaker: &'static str,
) -> HttpResponse {
    let up = |ok: bool| if ok { "up" } else { "down" };
    let (mut response, status) = match (postgres_up, redis_up && breaker == "closed") {
        (true, true) => (HttpResponse::Ok(), "ready"),
        (true, false) => (HttpResponse::Ok(), "degraded"),
        (false, _) if serves == Serves::CacheFirst && redis_up => (HttpResponse::Ok(), "degraded"),
        (false, _) => (HttpResponse::ServiceUnavailable(), "unavailable"),
    };
    response
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({
            "status": status,
            "postgres": up(postgres_up),
            "redis": up(redis_up),
            "breaker": breaker,
        }))
}

/// A route for `GET` and `HEAD` alike: monitors and browsers send both.
pub fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// One span per HTTP request, with method, route, status and latency, whose parent is the
/// caller's span when the request carries a W3C or B3 trace context.
///
/// Left out when nothing could record that span: no span export (the log layer records no
/// spans, see `kurz_telemetry`; the check below still asks the installed subscriber, for an
/// embedder's own). tracing-actix-web pays for a request before it knows its
/// span is disabled: a request id drawn from `getrandom` (a system call), the connection info
/// with the peer address formatted, the route looked up; about a tenth of the CPU of a
/// redirect answered from memory. Nothing reads the request id it would store. Decided when a
/// worker builds its app, after the binary installed its subscriber; the filter does not
/// change at run time.
pub fn request_tracing() -> Condition<TracingLogger<ContinueTrace>> {
    let recorded = kurz_telemetry::exports_traces() || tracing::span_enabled!(tracing::Level::INFO);
    Condition::new(recorded, TracingLogger::new())
}

/// tracing-actix-web's root span, made a child of the incoming trace context. (Its own
/// OpenTelemetry integration stops at an older opentelemetry than ours.)
#[derive(Debug)]
pub struct ContinueTrace;

impl RootSpanBuilder for ContinueTrace {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let span = tracing_actix_web::root_span!(request);
        // Nothing to continue when spans are not exported (the log layer alone records the
        // span): skip the header parsing then, it is on every request.
        if span.is_disabled() || !kurz_telemetry::exports_traces() {
            return span;
        }
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract_with_context(
                &opentelemetry::Context::new(),
                &HeaderExtractor(request.headers()),
            )
        });
        // Fails only when no OpenTelemetry layer is installed, and then there is no parent
        // to record anyway.
        let _ = span.set_parent(parent);
        let context = span.context();
        let otel_span = context.span();
        let ids = otel_span.span_context();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
        }
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Reads trace-context headers (`traceparent`, `b3`, `x-b3-*`) from an actix request.
#[derive(Debug)]
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The `route` label of requests no route matched (a service's default service). The
/// redirect service, whose codes are served by its default service, names it `/{code}`.
#[derive(Debug, Clone, Copy)]
pub struct DefaultRoute(pub &'static str);

/// Middleware (`App::wrap(from_fn(request_metrics))`) that counts requests and records their
/// latency by route pattern (never the raw path: one series per link would be unbounded),
/// method and status.
pub async fn request_metrics(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = method_label(request.method());
    let route: Cow<'static, str> = match request.match_pattern() {
        Some(pattern) => Cow::Owned(pattern),
        None => Cow::Borrowed(
            request
                .app_data::<DefaultRoute>()
                .map_or("unmatched", |d| d.0),
        ),
    };
    let response = next.call(request).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    let (requests, latency) = SERIES.with_borrow_mut(|series| {
        let key = (method, status.as_u16());
        if let Some(handles) = series.get(route.as_ref()).and_then(|r| r.get(&key)) {
            return handles.clone();
        }
        let handles = register(&route, method, status);
        series
            .entry(route)
            .or_default()
            .insert(key, handles.clone());
        handles
    });
    requests.increment(1);
    latency.record(elapsed);
    response
}

/// The request counter and latency histogram of one route, method and status.
type Series = (metrics::Counter, metrics::Histogram);
/// Route pattern, then (method, status).
type SeriesByRoute = HashMap<Cow<'static, str>, HashMap<(&'static str, u16), Series>>;

thread_local! {
    /// The handles of each route, method and status seen by this worker thread. Looking a
    /// series up in the recorder hashes its labels and allocates them on every call, which
    /// is a real share of a request that is answered from memory; these maps are small and
    /// bounded (routes are patterns, methods and statuses few). The recorder is installed
    /// before any server starts, so no handle here is a no-op one.
    static SERIES: RefCell<SeriesByRoute> = RefCell::new(HashMap::new());
}

fn register(route: &str, method: &'static str, status: StatusCode) -> Series {
    let labels = [
        metrics::Label::new("route", route.to_owned()),
        metrics::Label::from_static_parts("method", method),
        metrics::Label::new("status", status.as_str().to_owned()),
    ];
    (
        metrics::counter!(names::HTTP_REQUESTS, labels.iter()),
        metrics::histogram!(names::HTTP_REQUEST_DURATION, labels.iter()),
    )
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        // Anything else is one bucket: a client inventing methods must not invent series.
        _ => "other",
    }
}

/// `GET /metrics`: the Prometheus text exposition of everything this process records.
/// `refresh` runs first, to sample the gauges that are read rather than counted (pool sizes,
/// breaker state).
pub fn metrics(refresh: impl Fn()) -> HttpResponse {
    refresh();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(kurz_telemetry::metrics::render())
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// (up to [`SHUTDOWN_GRACE_SECS`]) and returns. Build the server with `disable_signals()`:
/// signals are the binary's business, so tests can stop one server without signalling the
/// whole test process.
pub async fn run_until_stopped(
    server: Server,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handle = server.handle();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            // The stop command is carried out by the server future itself, so both must be
            // polled together: awaiting the handle alone would wait forever.
            let ((), result) = tokio::join!(handle.stop(true), &mut server);
            result
        }
    }
}

/// The HTTP side of a background worker: `/healthz`, and `/metrics` answered by `metrics`
/// (which samples its gauges, then calls [`metrics`]), on `listener`. One actix worker: it
/// serves scrapes and probes only, and the worker's batches keep the CPU.
pub fn worker_server<F, Fut>(listener: TcpListener, metrics: F) -> std::io::Result<Server>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let server = HttpServer::new(move || {
        App::new()
            .route("/healthz", get_or_head().to(healthz))
            .route("/metrics", web::get().to(metrics.clone()))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(5)
    .run();
    Ok(server)
}

/// A future that resolves when a worker's loop is asked to stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a worker's loop, `run_worker(stop)`, beside its [`worker_server`] until `shutdown`
/// resolves; then the loop finishes the step in progress (it watches `stop`) and the server
/// drains. Returns the server's result once both are done.
pub async fn run_worker_until_stopped<F, Fut>(
    run_worker: F,
    server: Server,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    F: FnOnce(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| -> StopSignal {
        Box::pin(async move {
            // An error means the sender is gone, which is a stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };
    let trigger = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let ((), (), served) = tokio::join!(
        trigger,
        run_worker(wait(stopped.clone())),
        run_until_stopped(server, wait(stopped)),
    );
    served
}
