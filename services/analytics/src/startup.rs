//! The worker as `kurz-analytics` starts it: the step loop, plus a small HTTP server for
//! Prometheus (`/metrics`) and liveness (`/healthz`) on its own port.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use anyhow::Context;

use crate::{Settings, Worker};

/// The worker and its metrics endpoint, bound and ready to run.
#[allow(missing_debug_implementations)] // actix's `Server` is not `Debug`
pub struct Application {
    worker: Worker,
    server: Server,
    port: u16,
}

impl Application {
    /// Opens the country database, connects, checks the schema, creates the consumer groups
    /// and binds the metrics listener.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // Usually done by telemetry's init already; here for embedders and tests.
        kurz_telemetry::metrics::handle();
        let worker = Worker::build(settings)
            .await
            .context("starting the worker")?;
        let listener = TcpListener::bind(settings.metrics_listen)
            .with_context(|| format!("binding {}", settings.metrics_listen))?;
        let port = listener.local_addr()?.port();
        let repo = worker.repository().clone();
        // The stream gauges are sampled by the worker loop (every few seconds), so a scrape
        // costs Redis nothing.
        let metrics = move || {
            let repo = repo.clone();
            async move { kurz_http::metrics(|| repo.record_gauges()) }
        };
        let server = kurz_http::worker_server(listener, metrics)?;
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

    /// Processes batches until `shutdown` resolves; then finishes the step in progress and
    /// stops the metrics server.
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
