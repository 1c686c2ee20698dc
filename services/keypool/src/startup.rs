//! The worker as `kurz-keypool run` starts it: the refill loop, plus a small HTTP server for
//! Prometheus (`/metrics`) and liveness (`/healthz`) on its own port.

use std::future::Future;
use std::net::TcpListener;

use actix_web::HttpResponse;
use actix_web::dev::Server;
use anyhow::Context;
use kurz_repository::PgRepository;
use kurz_telemetry::metrics::names;

use crate::{Settings, Worker};

/// The worker and its metrics endpoint, bound and ready to run.
#[allow(missing_debug_implementations)] // actix's `Server` is not `Debug`
pub struct Application {
    worker: Worker,
    server: Server,
    port: u16,
}

impl Application {
    /// Connects, checks the schema and binds the metrics listener.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // Usually done by telemetry's init already; here for embedders and tests.
        kurz_telemetry::metrics::handle();
        let worker = Worker::build(settings)
            .await
            .context("starting the worker")?;
        let repo = worker.repository().clone();
        let listener = TcpListener::bind(settings.metrics_listen)
            .with_context(|| format!("binding {}", settings.metrics_listen))?;
        let port = listener.local_addr()?.port();
        let server = kurz_http::worker_server(listener, move || metrics(repo.clone()))?;
        Ok(Self {
            worker,
            server,
            port,
        })
    }

    /// The port of `/metrics`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Refills until `shutdown` resolves; then finishes the step in progress and stops the
    /// metrics server.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let worker = self.worker;
        kurz_http::run_worker_until_stopped(
            |stop| worker.run_until_stopped(stop),
            self.server,
            shutdown,
        )
        .await
    }
}

/// `GET /metrics`. The pool depth is PostgreSQL's live-row estimate: an exact count of a
/// million-row table on every scrape would cost more than the gauge is worth.
async fn metrics(repo: PgRepository) -> HttpResponse {
    match repo.pool_depth_estimate().await {
        Ok(depth) => metrics::gauge!(names::KEYPOOL_DEPTH).set(depth as f64),
        Err(e) => tracing::debug!(error = %e, "pool depth estimate failed"),
    }
    kurz_http::metrics(|| repo.record_gauges())
}
