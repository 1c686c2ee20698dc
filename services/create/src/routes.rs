//! HTTP routes of the create API.

use kurz_telemetry::metrics::names;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, route, web};
use chrono::{DateTime, Utc};
use kurz_repository::{
    CachedLink, CodeSource, IdempotentCreate, Link, LinkCache, LinkRepository, NewLink, Owner,
    PgRepository, RedisCache, RepoError,
};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use crate::auth::{Authorized, Creator, LinksRead, LinksWrite, Verifier};
use crate::error::ApiError;
use crate::guard::Guard;
use crate::keys::KeyBuffer;
use crate::openapi::{Liveness, Readiness, errors};
use crate::request::{CreateLink, ValidCreate};
use crate::validate::UrlPolicy;
use kurz_repository::batch::InsertBatcher;

/// A change (delete, disable, edit) reaches the caches twice: at once, and again after this
/// delay, which closes the race with a redirect instance that read the link just before the
/// change and writes it back to the cache just after.
const SECOND_INVALIDATION_DELAY: Duration = Duration::from_secs(2);

/// Everything a request needs, shared by all workers.
#[derive(Debug)]
pub struct State {
    pub repo: PgRepository,
    pub cache: RedisCache,
    pub keys: Arc<KeyBuffer<PgRepository>>,
    /// Group commit of pool-key inserts.
    pub inserter: InsertBatcher,
    pub url_policy: UrlPolicy,
    pub public_base_url: Url,
    pub verifier: Verifier,
    /// Authentication and rate limits of every /api request.
    pub guard: Guard,
}

/// A link as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct LinkView {
    #[schema(example = "aB3xK9q")]
    pub code: String,
    /// `KURZ_PUBLIC_BASE_URL` plus the code.
    #[schema(example = "http://127.0.0.1:8080/aB3xK9q")]
    pub short_url: String,
    /// The target, normalized.
    pub url: String,
    pub created_at: DateTime<Utc>,
    /// The last edit; `created_at` until the first.
    pub updated_at: DateTime<Utc>,
    /// `null` when the link never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// `active`, `expired` (by date or by visits) or `disabled`.
    pub status: LinkStatus,
    /// Whether an admin disabled the link (it then answers 410).
    pub disabled: bool,
    /// The link's own redirect status; `null`: the service default.
    pub redirect_status: Option<u16>,
    pub forward_query: bool,
    pub expired_url: Option<String>,
    pub max_visits: Option<i64>,
    /// Redirects counted so far; `null` for a link without a visit limit, which counts none.
    pub visits: Option<i64>,
    /// Human clicks of all time (bots excluded), as `GET /api/v1/links/{code}/stats` counts
    /// them by default; a few seconds behind the redirects.
    pub clicks: i64,
}

/// Where a link stands, as listed and filtered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    Active,
    Expired,
    Disabled,
}

impl LinkStatus {
    pub fn of(link: &Link, now: DateTime<Utc>) -> Self {
        if link.disabled_at.is_some() {
            Self::Disabled
        } else if link.is_expired(now) {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

impl State {
    /// The link `code` if `owner` may see it. Malformed, unknown and deleted codes and other
    /// accounts' links are all 404, so a link's existence is never confirmed to a stranger.
    pub(crate) async fn own_link(&self, code: &str, owner: Owner) -> Result<Link, ApiError> {
        if !kurz_repository::codes::is_well_formed(code) {
            return Err(ApiError::NotFound);
        }
        self.repo
            .find(code)
            .await?
            .filter(|link| owner.covers(link.owner_id))
            .ok_or(ApiError::NotFound)
    }

    /// The short URL of `code`: the public base URL (which ends in `/`) and the code.
    pub(crate) fn short_url(&self, code: &str) -> String {
        format!("{}{code}", self.public_base_url)
    }

    pub(crate) fn view(&self, link: Link) -> LinkView {
        self.view_at(link, Utc::now())
    }

    /// [`Self::view`] with the status judged at `now` (a listing judges all its links, and
    /// filters them, at one instant).
    pub(crate) fn view_at(&self, link: Link, now: DateTime<Utc>) -> LinkView {
        let status = LinkStatus::of(&link, now);
        let limited = link.behaviour.is_limited();
        LinkView {
            short_url: self.short_url(&link.code),
            status,
            disabled: link.disabled_at.is_some(),
            updated_at: link.updated_at.unwrap_or(link.created_at),
            visits: limited.then_some(link.visits),
            clicks: link.clicks,
            redirect_status: link.behaviour.redirect_status,
            forward_query: link.behaviour.forward_query,
            expired_url: link.behaviour.expired_url,
            max_visits: link.behaviour.max_visits,
            code: link.code,
            url: link.target_url,
            created_at: link.created_at,
            expires_at: link.expires_at,
        }
    }
}

/// Longest accepted `Idempotency-Key` (clients usually send a UUID).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// `POST /api/v1/links`: validate, store (committed before we answer), cache best-effort.
/// With an `Idempotency-Key` header, a retry of the same request returns the same link.
#[utoipa::path(
    tag = "links",
    summary = "Create a short link",
    description = "Validates and normalizes `url`, commits the link, and answers 201 with it. \
        The link belongs to the key's account. With `KURZ_ANONYMOUS_CREATE=true` a request \
        without a key may create links too (they belong to no account). Rules are checked in \
        order and the first failure answers: the body, `url`, `expires_at`, `alias`.",
    security(("bearer" = ["links:write"])),
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the same key with the same request returns the \
            same link again (201, `Idempotent-Replayed: true`); with another request it is 422 \
            `idempotency_key_reused`. Kept 24 hours. 1 to 255 visible ASCII characters.",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$",
    )),
    request_body = CreateLink,
    responses(
        (status = 201, description = "The link, created now or, for a retry, before.",
            body = LinkView, headers(
                ("Location" = String, description = "`/api/v1/links/{code}`"),
                ("Idempotent-Replayed" = String, description = "`true` on a replay"),
            )),
        (status = 400, response = inline(errors::BadIdempotencyKey)),
        (status = 404, response = inline(errors::NotFound)),
        (status = 409, response = inline(errors::AliasTaken)),
        (status = 422, response = inline(errors::InvalidLink)),
        (status = 503, response = inline(errors::KeyPoolEmpty)),
    ),
)]
#[post("/v1/links")]
pub async fn create(
    Creator(caller): Creator,
    request: HttpRequest,
    body: web::Json<CreateLink>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let idempotency_key = idempotency_key(&request)?;
    let valid = body.validate(&state.url_policy, caller.account_id(), Utc::now())?;
    let alias = valid.alias.as_deref();
    let (link, replayed) = match idempotency_key {
        None => (store(&state, alias, valid.link.clone()).await?, false),
        Some(key) => store_idempotent(&state, key, &valid).await?,
    };
    if !replayed {
        announce(&state, &link, alias.is_some()).await;
    }
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, format!("/api/v1/links/{}", link.code)));
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(state.view(link)))
}

/// After a commit: warm Redis, and for an alias tell the redirect instances. Both are
/// best-effort: the link is already safe, so failures are only logged.
async fn announce(state: &State, link: &Link, is_alias: bool) {
    // Saves the first redirect a database lookup, and replaces a negative entry left by
    // someone probing an alias before it existed.
    if let Err(e) = state.cache.put(&link.code, &CachedLink::from(link)).await {
        tracing::debug!(error = %e, "cache write after create failed");
    }
    // Redirect instances may hold that probe's 404 in memory. (Pool keys are random: nobody
    // probed them to speak of.)
    if is_alias && let Err(e) = state.cache.publish_invalidation(&link.code).await {
        tracing::debug!(error = %e, "publishing the invalidation failed");
    }
}

/// The `Idempotency-Key` header, if sent, checked.
pub(crate) fn idempotency_key(request: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key))
}

async fn store(state: &State, alias: Option<&str>, new_link: NewLink) -> Result<Link, ApiError> {
    match alias {
        Some(alias) => Ok(state.repo.insert_with_alias(alias, &new_link).await?),
        None => {
            let key = state.keys.take().await?;
            state
                .inserter
                .insert(key, new_link)
                .await
                .map_err(pool_key_error)
        }
    }
}

/// Creates or replays; `true` for a replay.
async fn store_idempotent(
    state: &State,
    key: &str,
    valid: &ValidCreate,
) -> Result<(Link, bool), ApiError> {
    let request = valid.canonical().to_string();
    let (alias, new_link) = (valid.alias.as_deref(), &valid.link);
    // A replay leaves this pool key unused; it stays issued, so it is simply never handed out.
    let pool_key;
    let code = match alias {
        Some(alias) => CodeSource::Alias(alias),
        None => {
            pool_key = state.keys.take().await?;
            CodeSource::PoolKey(&pool_key)
        }
    };
    let outcome = state
        .repo
        .create_idempotent(key, &request, code, new_link)
        .await;
    match outcome {
        Ok(IdempotentCreate::Created(link)) => Ok((link, false)),
        Ok(IdempotentCreate::Replayed(link)) => Ok((link, true)),
        Ok(IdempotentCreate::Mismatch) => Err(ApiError::IdempotencyKeyReused),
        // Another account's key: as if there were nothing, so its link stays unseen.
        Ok(IdempotentCreate::HeldByOther) => Err(ApiError::NotFound),
        Err(e) if alias.is_none() => Err(pool_key_error(e)),
        Err(e) => Err(e.into()),
    }
}

/// A pool key is unique by construction; a conflict on one is a broken invariant, not the
/// client's 409.
pub(crate) fn pool_key_error(e: RepoError) -> ApiError {
    match e {
        RepoError::CodeTaken => ApiError::Internal(e),
        other => other.into(),
    }
}

/// `GET /api/v1/links/{code}`: the link's metadata, from PostgreSQL. Another account's link
/// is 404, exactly as an unknown code, so its existence is never confirmed.
#[utoipa::path(
    tag = "links",
    summary = "Show a link",
    description = "Read from PostgreSQL. Expired and disabled links are shown too; deleted and \
        unknown codes, and other accounts' links, are 404.",
    security(("bearer" = ["links:read"])),
    params(("code" = String, Path, description = "The link's code or alias.")),
    responses(
        (status = 200, description = "The link.", body = LinkView),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[get("/v1/links/{code}")]
pub async fn get(
    caller: Authorized<LinksRead>,
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let link = state.own_link(&code, caller.owner()).await?;
    Ok(HttpResponse::Ok().json(state.view(link)))
}

/// `DELETE /api/v1/links/{code}`: the redirect stops serving it, and its code is never reused.
#[utoipa::path(
    tag = "links",
    summary = "Delete a link",
    description = "The link stops redirecting, and its code is never handed out again. Only \
        the link's own account (or an admin) may delete it; deleting it again is 404.",
    security(("bearer" = ["links:write"])),
    params(("code" = String, Path, description = "The link's code or alias.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[delete("/v1/links/{code}")]
pub async fn delete(
    caller: Authorized<LinksWrite>,
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let well_formed = kurz_repository::codes::is_well_formed(&code);
    if !well_formed || !state.repo.delete(&code, caller.owner()).await? {
        return Err(ApiError::NotFound);
    }
    forget_everywhere(&state, code.into_inner()).await;
    Ok(HttpResponse::NoContent().finish())
}

/// After a link changed (deleted, disabled, enabled): drop its Redis entry and tell every
/// redirect instance to drop its in-process copy. Best-effort: failures are logged, and the
/// caches' TTLs bound what a failure costs.
async fn forget_everywhere(state: &State, code: String) {
    if let Err(e) = state.cache.remove(&code).await {
        tracing::warn!(error = %e, "cache invalidation failed; the entry expires with its TTL");
    }
    publish_then_forget_again(state, code).await;
}

/// After an edit: overwrite the Redis entry with the link as committed (so redirects need no
/// database lookup for it), then as [`forget_everywhere`].
pub(crate) async fn replace_everywhere(state: &State, link: &Link) {
    if let Err(e) = state.cache.put(&link.code, &CachedLink::from(link)).await {
        tracing::warn!(error = %e, "cache write after an edit failed; removed again shortly");
    }
    publish_then_forget_again(state, link.code.clone()).await;
}

/// Publishes the invalidation now, and after [`SECOND_INVALIDATION_DELAY`] removes the Redis
/// entry and publishes again. That second round closes the race with a redirect instance
/// that read the old link just before the change and stored it (in Redis and in its own
/// memory) just after the first round. It removes rather than writes the new value: a write
/// this late could overwrite the entry of a later edit with this one's older value; a
/// removal is never wrong, and costs one lookup.
async fn publish_then_forget_again(state: &State, code: String) {
    if let Err(e) = state.cache.publish_invalidation(&code).await {
        tracing::warn!(error = %e, "publishing the invalidation failed; in-process caches expire it with their TTL");
    }
    let cache = state.cache.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SECOND_INVALIDATION_DELAY).await;
        let _ = cache.remove(&code).await;
        let _ = cache.publish_invalidation(&code).await;
    });
}

/// `POST /api/v1/links/{code}/disable` (admin): the redirect answers 410 with a page saying
/// the link was disabled, within a second on every instance. The code stays reserved.
#[utoipa::path(
    tag = "links",
    summary = "Disable a link (abuse)",
    description = "Within a second every redirect instance answers the code 410 with a page \
        saying the link was disabled. The code stays reserved; disabling twice keeps the \
        first time.",
    security(("bearer" = ["admin"])),
    params(("code" = String, Path, description = "The link's code or alias.")),
    responses(
        (status = 200, description = "The link, `disabled: true`.", body = LinkView),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[post("/v1/links/{code}/disable")]
pub async fn disable(
    _admin: Authorized<crate::auth::Admin>,
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, code.into_inner(), true).await
}

/// `POST /api/v1/links/{code}/enable` (admin): undoes a disable.
#[utoipa::path(
    tag = "links",
    summary = "Enable a disabled link",
    security(("bearer" = ["admin"])),
    params(("code" = String, Path, description = "The link's code or alias.")),
    responses(
        (status = 200, description = "The link, `disabled: false`.", body = LinkView),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[post("/v1/links/{code}/enable")]
pub async fn enable(
    _admin: Authorized<crate::auth::Admin>,
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    set_disabled(&state, code.into_inner(), false).await
}

async fn set_disabled(
    state: &State,
    code: String,
    disabled: bool,
) -> Result<HttpResponse, ApiError> {
    if !kurz_repository::codes::is_well_formed(&code) {
        return Err(ApiError::NotFound);
    }
    let link = state
        .repo
        .set_disabled(&code, disabled)
        .await?
        .ok_or(ApiError::NotFound)?;
    forget_everywhere(state, code).await;
    Ok(HttpResponse::Ok().json(state.view(link)))
}

/// `GET /metrics`, for Prometheus.
#[utoipa::path(
    tag = "operations",
    summary = "Prometheus metrics",
    description = "In the Prometheus text format. No key: keep it off the internet.",
    responses((status = 200, description = "The metrics.", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<State>) -> HttpResponse {
    kurz_http::metrics(|| {
        state.repo.record_gauges();
        state.cache.record_gauges();
        // `::`: the route macro made `metrics` this handler's name.
        ::metrics::gauge!(names::KEY_BUFFER_DEPTH).set(state.keys.depth() as f64);
    })
}

/// `GET /healthz`: 200 while the process serves HTTP; checks nothing else.
#[utoipa::path(
    tag = "operations",
    summary = "Liveness probe",
    responses((status = 200, description = "The process serves HTTP.", body = Liveness)),
)]
#[route("/healthz", method = "GET", method = "HEAD")]
pub async fn healthz() -> HttpResponse {
    kurz_http::healthz().await
}

/// 200 with PostgreSQL up (`degraded` without Redis), 503 without PostgreSQL.
#[utoipa::path(
    tag = "operations",
    summary = "Readiness probe",
    description = "Pings PostgreSQL and Redis. `degraded` (200): Redis is down (everything \
        works, without the cache) or the circuit breaker is half-open.",
    responses(
        (status = 200, description = "`ready` or `degraded`.", body = Readiness),
        (status = 503, description = "`unavailable`: PostgreSQL does not answer or the \
            breaker is open.", body = Readiness),
    ),
)]
#[route("/readyz", method = "GET", method = "HEAD")]
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(state.repo.ping(), state.cache.ping());
    kurz_http::readiness(
        kurz_http::Serves::FromPostgres,
        postgres.is_ok(),
        redis.is_ok(),
        state.repo.breaker().state().as_str(),
    )
}
