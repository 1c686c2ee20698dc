#![doc = include_str!("../README.md")]
//! # Layout
//! - [`healthz`] and [`readiness`]: the probe answers both HTTP services give.
//! - [`get_or_head`]: a route for both methods, as probes and redirects need.
//! - [`request_tracing`]: the middleware that opens one span per request.
//! - [`run_until_stopped`]: serve until a shutdown future resolves, then drain.

use std::future::Future;

use actix_web::dev::Server;
use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, Route, guard, web};
use serde_json::json;

/// Seconds in-flight requests get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;

/// `/healthz`: the process is alive and serving HTTP; says nothing about dependencies.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "alive" }))
}

/// `/readyz`: 200 `ready` when PostgreSQL answers and its circuit breaker is closed; 200
/// `degraded` when Redis is down (a cache: both services work without it) or the breaker is
/// half-open (PostgreSQL is being probed); 503 `unavailable` when PostgreSQL does not answer
/// or the breaker refuses calls. `breaker` is the breaker's state name.
pub fn readiness(postgres_up: bool, redis_up: bool, breaker: &'static str) -> HttpResponse {
    let up = |ok: bool| if ok { "up" } else { "down" };
    let (mut response, status) = match (postgres_up, redis_up && breaker == "closed") {
        (true, true) => (HttpResponse::Ok(), "ready"),
        (true, false) => (HttpResponse::Ok(), "degraded"),
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

/// One span per HTTP request, with method, route, status and latency.
pub fn request_tracing()
-> tracing_actix_web::TracingLogger<tracing_actix_web::DefaultRootSpanBuilder> {
    tracing_actix_web::TracingLogger::default()
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
