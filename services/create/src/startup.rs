//! Building and running the create API.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use std::sync::Arc;

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
use crate::routes::{self, State};
use crate::settings::Settings;
use crate::validate::UrlPolicy;

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
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let json = web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(move |e, _req| ApiError::from_json_error(&e, body_limit).into());
            App::new()
                .wrap(from_fn(kurz_http::request_metrics))
                .wrap(kurz_http::request_tracing())
                .app_data(app_state.clone())
                .app_data(json)
                // A path segment of the wrong type (`/api/v1/keys/abc`) names nothing.
                .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NoRoute.into()))
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|e, _| ApiError::InvalidQuery(e.to_string()).into()),
                )
                .route("/healthz", kurz_http::get_or_head().to(kurz_http::healthz))
                .route("/readyz", kurz_http::get_or_head().to(routes::readyz))
                .route("/metrics", web::get().to(routes::metrics))
                .service(api())
                .default_service(web::to(routes::no_route))
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

/// Everything under `/api`, behind the guard (credentials, scopes, rate limits). Unknown
/// paths there are answered by the guard too, so they reveal nothing to a caller without a key.
fn api() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let resource = |path: &str| {
        web::resource(path.to_owned()).default_service(web::to(routes::method_not_allowed))
    };
    web::scope("/api")
        .wrap(from_fn(crate::guard::guard))
        .service(
            resource("/v1/links")
                .route(web::post().to(routes::create))
                .route(web::get().to(manage::list)),
        )
        // Before `{code}`, which would otherwise take it (and `count` is a reserved alias).
        .service(resource("/v1/links/count").route(web::get().to(manage::count)))
        .service(
            resource("/v1/links/{code}")
                .route(web::get().to(routes::get))
                .route(web::delete().to(routes::delete))
                .route(web::patch().to(manage::patch)),
        )
        .service(resource("/v1/links/{code}/disable").route(web::post().to(routes::disable)))
        .service(resource("/v1/links/{code}/enable").route(web::post().to(routes::enable)))
        .service(
            resource("/v1/accounts")
                .route(web::post().to(admin::create_account))
                .route(web::get().to(admin::list_accounts)),
        )
        .service(
            resource("/v1/accounts/{id}/disable").route(web::post().to(admin::disable_account)),
        )
        .service(resource("/v1/accounts/{id}/keys").route(web::post().to(admin::create_key)))
        .service(resource("/v1/keys").route(web::get().to(admin::list_keys)))
        .service(resource("/v1/keys/{id}").route(web::delete().to(admin::revoke_key)))
        .default_service(web::to(routes::no_route))
}

/// The list in `KURZ_BLOCKLIST_FILE` and its watcher, or the built-in list of shorteners.
fn load_blocklist(
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

fn url_policy(settings: &Settings, blocklist: SharedBlocklist) -> UrlPolicy {
    UrlPolicy {
        allow_private_targets: settings.url_safety.allow_private_targets,
        blocklist,
        ..UrlPolicy::new(
            settings.links.max_url_length,
            &settings.http.public_base_url,
        )
    }
}
