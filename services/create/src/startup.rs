//! Building and running the create API.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use std::sync::Arc;
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::scope::{Scope, scope};
use utoipa_actix_web::service_config::ServiceConfig;

use kurz_repository::batch::{BatchStats, InsertBatcher};
use kurz_repository::cache::CacheTtl;
use kurz_repository::{PgRepository, RedisCache};

use crate::admin;
use crate::auth::Verifier;
use crate::blocklist::{BlocklistWatcher, SharedBlocklist};
use crate::error::ApiError;
use crate::guard::Guard;
use crate::keys::KeyBuffer;
use crate::manage;
use crate::openapi::{self, Document};
use crate::routes::{self, State};
use crate::settings::Settings;
use crate::validate::UrlPolicy;
use crate::web::Page;

/// The create API, bound to its port and ready to run.
#[allow(missing_debug_implementations)] // actix's `Server` is not `Debug`
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<State>,
    /// The auth invalidation subscriber; stopped with the server.
    invalidations: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Reads the blocklist, checks the schema, builds the pools and binds the listener. Fails
    /// (and the binary exits) if `KURZ_BLOCKLIST_FILE` cannot be read or parsed, or if
    /// PostgreSQL is unreachable or behind this build's schema; Redis may be down.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Usually done by telemetry's init already; here for embedders and tests.
        kurz_telemetry::metrics::handle();
        let (blocklist, watcher) = load_blocklist(settings.url_safety.blocklist_file.as_deref())?;
        let url_policy = url_policy(&settings, blocklist);
        let repo = PgRepository::new(&settings.database, "kurz-create")?;
        repo.check_schema()
            .await
            .context("checking the database schema")?;
        let cache = RedisCache::new(
            &settings.redis,
            CacheTtl {
                found: settings.links.cache_ttl,
                // The create service never writes negative entries.
                missing: settings.links.cache_ttl,
            },
        )?;
        let verifier = Verifier::new(repo.clone(), settings.access.key_cache_ttl);
        let guard = Guard::new(
            verifier.clone(),
            &cache,
            &settings.redis,
            settings.access,
            settings.http.trusted_proxies.clone(),
        );
        let invalidations = {
            let guard = guard.clone();
            let channel = kurz_repository::invalidation::AUTH_CHANNEL;
            kurz_repository::invalidation::spawn_follower(&settings.redis, channel, move |event| {
                let guard = guard.clone();
                async move { guard.on_auth_event(event).await }
            })
        };
        let state = web::Data::new(State {
            verifier,
            guard,
            keys: KeyBuffer::new(repo.clone(), settings.links.key_batch_size),
            inserter: InsertBatcher::spawn(repo.clone(), settings.links.insert_batch_max),
            repo,
            cache,
            url_policy,
            public_base_url: settings.http.public_base_url.clone(),
        });
        let listener = TcpListener::bind(settings.http.listen)
            .with_context(|| format!("binding {}", settings.http.listen))?;
        let port = listener.local_addr()?.port();
        let body_limit = settings.links.body_limit();
        let bulk_limits = web::Data::new(crate::bulk::Limits::of(&settings.links));
        let app_state = state.clone();
        let document = web::Data::new(Document::build(routes));
        let page = web::Data::new(Page::new(settings.access.anonymous_create));
        let server = HttpServer::new(move || {
            let json = web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(move |e, _req| ApiError::from_json_error(&e, body_limit).into());
            App::new()
                .wrap(from_fn(kurz_http::request_metrics))
                .wrap(kurz_http::request_tracing())
                .app_data(app_state.clone())
                .app_data(document.clone())
                .app_data(page.clone())
                .app_data(bulk_limits.clone())
                .app_data(json)
                // A path segment of the wrong type (`/api/v1/keys/abc`) names nothing.
                .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NoRoute.into()))
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|e, _| ApiError::InvalidQuery(e.to_string()).into()),
                )
                .into_utoipa_app()
                .configure(routes)
                .into_app()
                .configure(openapi::docs)
                .configure(crate::web::configure)
                .default_service(web::to(openapi::unrouted))
        })
        .listen(listener)?
        .client_request_timeout(settings.http.client_request_timeout)
        // actix keeps the OS default (Nagle on); a response held back for a delayed ACK costs
        // up to 40 ms, which showed as p99 spikes under load. nginx turns it off too.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(kurz_http::SHUTDOWN_GRACE_SECS)
        .run();
        // Ends on its own once the application (which holds the list) is dropped.
        if let Some(watcher) = watcher {
            watcher.spawn();
        }
        Ok(Self {
            port,
            server,
            state,
            invalidations,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What group commit did so far (tests and metrics).
    pub fn insert_stats(&self) -> Arc<BatchStats> {
        Arc::clone(self.state.inserter.stats())
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests, returns the unused
    /// buffered keys to the pool, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let served = kurz_http::run_until_stopped(self.server, shutdown).await;
        self.invalidations.abort();
        self.state.keys.return_unused().await;
        served
    }
}

/// Every route of the service except the Swagger UI (`openapi::docs`). Registering a handler
/// here with `.service(handler)` both serves it and puts it in the OpenAPI document, so the
/// two cannot drift apart: add routes nowhere else. A request no route takes gets 404, or 405
/// with `Allow` when the document has its path with other methods (`openapi::unrouted`).
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(routes::healthz)
        .service(routes::readyz)
        .service(routes::metrics)
        // Before the `/api` scope, which would take it otherwise: the document needs no key.
        .service(openapi::openapi_json)
        .service(api());
}

/// Everything under `/api`, behind the guard (credentials, scopes, rate limits). Unknown
/// paths there are answered by the guard too, so they reveal nothing to a caller without a key.
/// Handlers' paths are relative to `/api` (`#[post("/v1/links")]`). Order matters where
/// patterns overlap: a literal segment (`/v1/links/count`) must come before `{code}`.
fn api() -> Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    scope("/api")
        .wrap(from_fn(crate::guard::guard))
        .service(routes::create)
        // Before `/v1/links/{code}`, which would match `bulk` too.
        .service(crate::bulk::create_many)
        // Other methods on it are 405, not `/v1/links/{code}` with the code `bulk`.
        .route("/v1/links/bulk", web::route().to(openapi::unrouted))
        .service(manage::list)
        // Before `{code}`, which would otherwise take it (and `count` is a reserved alias);
        // its other methods are 405 here rather than `{code}` routes below.
        .service(manage::count)
        .route("/v1/links/count", web::route().to(openapi::unrouted))
        .service(routes::get)
        .service(manage::patch)
        .service(routes::delete)
        .service(routes::disable)
        .service(routes::enable)
        .service(crate::qr::link_qr)
        .service(crate::stats::link_stats)
        .service(crate::stats::account_stats)
        .service(admin::create_account)
        .service(admin::list_accounts)
        .service(admin::disable_account)
        .service(admin::create_key)
        .service(admin::list_keys)
        .service(admin::revoke_key)
        .default_service(web::to(openapi::unrouted))
}

/// The list in `KURZ_BLOCKLIST_FILE` and its watcher, or the built-in list of shorteners.
pub(crate) fn load_blocklist(
    file: Option<&Path>,
) -> anyhow::Result<(SharedBlocklist, Option<BlocklistWatcher>)> {
    let Some(path) = file else {
        return Ok((SharedBlocklist::default(), None));
    };
    let (list, watcher) = BlocklistWatcher::start(path)
        .with_context(|| format!("reading KURZ_BLOCKLIST_FILE `{}`", path.display()))?;
    tracing::info!(path = %path.display(), domains = list.current().len(), "blocklist loaded");
    Ok((list, Some(watcher)))
}

pub(crate) fn url_policy(settings: &Settings, blocklist: SharedBlocklist) -> UrlPolicy {
    UrlPolicy {
        allow_private_targets: settings.url_safety.allow_private_targets,
        blocklist,
        ..UrlPolicy::new(
            settings.links.max_url_length,
            &settings.http.public_base_url,
        )
    }
}
