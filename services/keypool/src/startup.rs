//! The worker as `kurz-keypool run` starts it: the refill loop, plus a small HTTP server for
//! Prometheus (`/metrics`) and liveness (`/healthz`) on its own port.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
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
        let repo = web::Data::new(worker.repository().clone());
        let listener = TcpListener::bind(settings.metrics_listen)
            .with_context(|| format!("binding {}", settings.metrics_listen))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(repo.clone())
                .route("/healthz", kurz_http::get_or_head().to(kurz_http::healthz))
                .route("/metrics", web::get().to(metrics))
        })
        // Scrapes and probes only: one worker is plenty, and the refills keep the CPU.
        .workers(1)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(5)
        .run();
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
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone, which is a stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let trigger = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let ((), (), served) = tokio::join!(
            trigger,
            self.worker.run_until_stopped(wait(stopped.clone())),
            kurz_http::run_until_stopped(self.server, wait(stopped)),
        );
        served
    }
}

/// `GET /metrics`. The pool depth is PostgreSQL's live-row estimate: an exact count of a
/// million-row table on every scrape would cost more than the gauge is worth.
async fn metrics(repo: web::Data<PgRepository>) -> HttpResponse {
    match repo.pool_depth_estimate().await {
        Ok(depth) => metrics::gauge!(names::KEYPOOL_DEPTH).set(depth as f64),
        Err(e) => tracing::debug!(error = %e, "pool depth estimate failed"),
    }
    kurz_http::metrics(|| repo.record_gauges())
}
