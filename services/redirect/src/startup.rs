//! Building and running the redirect service.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::http::header::HeaderValue;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use kurz_ratelimit::Store;
use kurz_repository::{PgRepository, RedisCache};

use crate::behaviour::CacheControl;
use crate::clicks::{self, Shipping};
use crate::resolve::Resolver;
use crate::routes::{self, State};
use crate::scan::ScanGuard;
use crate::settings::Settings;
use crate::visits::VisitGate;

/// The redirect service, bound to its port and ready to run.
#[allow(missing_debug_implementations)] // actix's `Server` is not `Debug`
pub struct Application {
    port: u16,
    server: Server,
    /// The invalidation subscriber; stopped with the server.
    invalidations: tokio::task::JoinHandle<()>,
    /// The click shipper; flushed after the server has drained.
    clicks: Option<Shipping>,
}

impl Application {
    /// Checks the schema, builds the pools and binds the listener. Fails (and the binary
    /// exits) if PostgreSQL is unreachable or behind this build's schema; Redis may be down.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Usually done by telemetry's init already; here for embedders and tests.
        kurz_telemetry::metrics::handle();
        let repo = PgRepository::new(&settings.database, "kurz-redirect")?;
        repo.check_schema()
            .await
            .context("checking the database schema")?;
        let cache = RedisCache::new(&settings.redis, settings.redirect.cache_ttl())?;
        // The rate limits share the cache's connection and budget: one hot-path connection.
        let limits = Store::new(cache.connection(), cache.command_timeout());
        let scan = ScanGuard::new(
            &limits,
            settings.redirect.scan_budget,
            settings.redirect.scan_window,
            settings.http.trusted_proxies.clone(),
        );
        let resolver = Resolver::new(
            repo,
            cache,
            settings.redirect.local_cache_ttl,
            settings.redirect.local_cache_capacity,
        );
        let invalidations = {
            let resolver = resolver.clone();
            let channel = kurz_repository::invalidation::CHANNEL;
            kurz_repository::invalidation::spawn_follower(&settings.redis, channel, move |event| {
                let resolver = resolver.clone();
                async move { resolver.invalidate(event).await }
            })
        };
        let (capture, clicks) = clicks::start(
            &settings.clicks,
            &settings.redis,
            settings.http.trusted_proxies.clone(),
        )?
        .unzip();
        let state = web::Data::new(State {
            resolver,
            status: settings.redirect.status,
            caching: CacheControl::new(settings.redirect.permanent_max_age),
            scan,
            visits: VisitGate::new(),
            clicks: capture,
            home: settings
                .redirect
                .home_url
                .as_ref()
                .map(|url| HeaderValue::from_str(url.as_str()))
                .transpose()
                .context("KURZ_HOME_URL as a Location header")?,
        });
        let listener = TcpListener::bind(settings.http.listen)
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(kurz_http::request_metrics))
                .wrap(kurz_http::request_tracing())
                .app_data(state.clone())
                .app_data(kurz_http::DefaultRoute("/{code}"))
                .route("/healthz", kurz_http::get_or_head().to(kurz_http::healthz))
                .route("/readyz", kurz_http::get_or_head().to(routes::readyz))
                .route("/metrics", web::get().to(routes::metrics))
                .route("/", kurz_http::get_or_head().to(routes::home))
                // Every other path is a code (see `routes::redirect`).
                .default_service(web::to(routes::redirect))
        })
        .listen(listener)?
        .client_request_timeout(settings.http.client_request_timeout)
        // actix keeps the OS default (Nagle on); a response held back for a delayed ACK costs
        // up to 40 ms, which showed as p99 spikes under load. nginx turns it off too.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(kurz_http::SHUTDOWN_GRACE_SECS)
        .run();
        Ok(Self {
            port,
            server,
            invalidations,
            clicks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests, sends the queued
    /// clicks to Redis (for at most `clicks::FLUSH_BOUND`) and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let served = kurz_http::run_until_stopped(self.server, shutdown).await;
        self.invalidations.abort();
        if let Some(clicks) = self.clicks {
            clicks.flush().await;
        }
        served
    }
}
