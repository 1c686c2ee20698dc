//! HTTP routes of the redirect service.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue, LOCATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use kurz_repository::{LinkCache, LinkRepository, PgRepository, RedisCache, Visit};

use crate::behaviour::{CacheControl, LinkBehaviour, no_store};
use crate::clicks::Capture;
use crate::error::RedirectError;
use crate::pages::Page;
use crate::query::{Merge, merge};
use crate::resolve::{Resolution, Resolver};
use crate::scan::ScanGuard;
use crate::visits::VisitGate;

/// Everything a request needs, shared by all workers.
#[derive(Debug)]
pub struct State {
    pub resolver: Resolver<PgRepository, RedisCache>,
    /// `KURZ_REDIRECT_STATUS`: links without a status of their own.
    pub status: StatusCode,
    pub caching: CacheControl,
    pub scan: ScanGuard,
    pub visits: VisitGate,
    /// Click capture; `None` with `KURZ_CLICK_CAPTURE=off`.
    pub clicks: Option<Capture>,
    /// `KURZ_HOME_URL` as a `Location`, for `/`.
    pub home: Option<HeaderValue>,
}

impl State {
    /// Records a click on `code` (see `clicks`): for every `GET` answered with a redirect or
    /// an expired link's answer, never for a `HEAD`. Never waits.
    fn click(&self, request: &HttpRequest, code: &str, now: DateTime<Utc>) {
        if let Some(clicks) = &self.clicks {
            clicks.click(request, code, now);
        }
    }
}

/// `GET` or `HEAD /`: a 302 to `KURZ_HOME_URL`, never stored (the setting may change), or
/// the 404 of any path that is not a code when it is unset. No click, and no scan budget
/// spent: `/` is no code.
pub async fn home(request: HttpRequest, state: web::Data<State>) -> HttpResponse {
    match &state.home {
        Some(location) => found(StatusCode::FOUND, location.clone(), no_store()),
        None => Page::NotFound.respond(&request),
    }
}

/// 200 when PostgreSQL answers, `degraded` without Redis or without PostgreSQL (cached links
/// still redirect), 503 without both.
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(
        state.resolver.repository().ping(),
        state.resolver.cache().ping()
    );
    let breaker = state.resolver.repository().breaker().state().as_str();
    kurz_http::readiness(
        kurz_http::Serves::CacheFirst,
        postgres.is_ok(),
        redis.is_ok(),
        breaker,
    )
}

/// `GET /metrics`, for Prometheus.
pub async fn metrics(state: web::Data<State>) -> HttpResponse {
    kurz_http::metrics(|| {
        state.resolver.repository().record_gauges();
        state.resolver.cache().record_gauges();
        if let Some(clicks) = &state.clicks {
            clicks.record_gauges();
        }
    })
}

/// `GET` and `HEAD /{code}`; anything else is an unknown link.
///
/// This is the app's default service rather than a `/{code}` route: a dynamic route is
/// matched with a regex on every request, which the profile showed at 8% of the hot path.
/// A code never contains `/` or `%` (see `codes::is_well_formed`), so the raw path is the code.
pub async fn redirect(
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, RedirectError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(Page::NotFound.respond(&request));
    }
    if let Some(retry) = state.scan.blocked(&request) {
        return Ok(too_many_requests(&request, retry));
    }
    let code = request.path().strip_prefix('/').unwrap_or_default();
    let now = Utc::now();
    Ok(match state.resolver.resolve(code, now).await? {
        // Most links: the service's status and a header built at start; nothing else.
        Resolution::Found {
            location,
            expires_at,
            behaviour: None,
        } => {
            state.click(&request, code, now);
            found(
                state.status,
                location,
                state.caching.for_redirect(state.status, expires_at, now),
            )
        }
        // Boxed: its state machine (a PostgreSQL call for limited links) would otherwise
        // be part of every request's future, copied around on hits that never run it.
        Resolution::Found {
            location,
            expires_at,
            behaviour: Some(behaviour),
        } => {
            let own = OwnBehaviour {
                code,
                location,
                expires_at,
                behaviour,
                now,
            };
            Box::pin(own.respond(&request, &state)).await?
        }
        Resolution::Expired { expired_url } => {
            state.click(&request, code, now);
            expired(&request, expired_url)
        }
        Resolution::Disabled => Page::Disabled.respond(&request),
        Resolution::Missing => match state.scan.missed(&request, code).await {
            Some(retry) => too_many_requests(&request, retry),
            None => Page::NotFound.respond(&request),
        },
    })
}

/// A found link with a behaviour of its own.
struct OwnBehaviour<'a> {
    code: &'a str,
    location: HeaderValue,
    expires_at: Option<DateTime<Utc>>,
    behaviour: Arc<LinkBehaviour>,
    now: DateTime<Utc>,
}

impl OwnBehaviour<'_> {
    /// In this order: the query merge (a 414 must not use up a visit), then the visit limit,
    /// then the redirect.
    async fn respond(
        self,
        request: &HttpRequest,
        state: &State,
    ) -> Result<HttpResponse, RedirectError> {
        let behaviour = &self.behaviour;
        let status = behaviour.status.unwrap_or(state.status);
        let location = if behaviour.forward_query {
            match merge(self.location.as_bytes(), request.query_string().as_bytes()) {
                Merge::Unchanged => self.location,
                Merge::Merged(location) => location,
                Merge::TooLong => return Ok(Page::QueryTooLong.respond(request)),
            }
        } else {
            self.location
        };
        if !behaviour.limited {
            state.click(request, self.code, self.now);
            let cache_control = state
                .caching
                .for_redirect(status, self.expires_at, self.now);
            return Ok(found(status, location, cache_control));
        }
        let repo = state.resolver.repository();
        let visit = state.visits.check(repo, self.code, request).await?;
        if matches!(visit, Visit::Granted | Visit::Unlimited | Visit::UsedUp) {
            state.click(request, self.code, self.now);
        }
        Ok(match visit {
            // Never stored, whatever the status: a redirect a browser replays from its cache
            // is a visit we never count, and one it keeps replaying after the last visit.
            Visit::Granted | Visit::Unlimited => found(status, location, no_store()),
            Visit::UsedUp => expired(request, behaviour.expired_url.clone()),
            Visit::Disabled => Page::Disabled.respond(request),
            Visit::Missing => Page::NotFound.respond(request),
        })
    }
}

fn found(status: StatusCode, location: HeaderValue, cache_control: HeaderValue) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((LOCATION, location))
        .insert_header((CACHE_CONTROL, cache_control))
        .finish()
}

/// An expired link, by date or by visits: a 302 to its `expired_url` when it has one (302
/// whatever the link's own status, and never stored: the link may be edited back to life),
/// else the 410 page. The link and its data stay; only unknown codes are 404.
fn expired(request: &HttpRequest, expired_url: Option<HeaderValue>) -> HttpResponse {
    match expired_url {
        Some(url) => found(StatusCode::FOUND, url, no_store()),
        None => Page::Expired.respond(request),
    }
}

/// A client past its scan budget (see `scan`): the same answer for every code, live or not.
fn too_many_requests(request: &HttpRequest, retry: Duration) -> HttpResponse {
    let mut response = Page::TooManyRequests.respond(request);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry.as_secs().max(1)));
    response
}
