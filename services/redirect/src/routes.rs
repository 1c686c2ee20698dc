//! HTTP routes of the redirect service.

use actix_web::http::Method;
use actix_web::http::StatusCode;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use kurz_repository::{LinkCache, LinkRepository, PgRepository, RedisCache};

use crate::error::RedirectError;
use crate::resolve::{Resolution, Resolver};
use crate::scan::ScanGuard;

/// Everything a request needs, shared by all workers.
#[derive(Debug)]
pub struct State {
    pub resolver: Resolver<PgRepository, RedisCache>,
    pub status: StatusCode,
    pub scan: ScanGuard,
}

/// How long a browser may reuse a temporary redirect: 90 s, as the largest shorteners do, so
/// a deleted link stops working within a minute and a half for people who followed it.
const TEMPORARY_MAX_AGE: i64 = 90;
/// Permanent redirects are cached by browsers whatever we say; a day keeps CDNs honest.
const PERMANENT_MAX_AGE: i64 = 86_400;
/// The two headers as constants, so the usual redirect builds no string (kept equal to the
/// ages above by a test).
const TEMPORARY_CACHE_CONTROL: &str = "private, max-age=90";
const PERMANENT_CACHE_CONTROL: &str = "public, max-age=86400";

/// 200 when PostgreSQL answers, `degraded` without Redis, 503 without PostgreSQL.
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(
        state.resolver.repository().ping(),
        state.resolver.cache().ping()
    );
    let breaker = state.resolver.repository().breaker().state().as_str();
    kurz_http::readiness(postgres.is_ok(), redis.is_ok(), breaker)
}

/// `GET /metrics`, for Prometheus.
pub async fn metrics(state: web::Data<State>) -> HttpResponse {
    kurz_http::metrics(|| {
        state.resolver.repository().record_gauges();
        state.resolver.cache().record_gauges();
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
        return Ok(not_found());
    }
    if let Some(retry) = state.scan.blocked(&request) {
        return Ok(too_many_requests(retry));
    }
    let code = request.path().strip_prefix('/').unwrap_or_default();
    let now = Utc::now();
    Ok(match state.resolver.resolve(code, now).await? {
        Resolution::Found {
            location,
            expires_at,
        } => HttpResponse::build(state.status)
            .insert_header((LOCATION, location))
            .insert_header((CACHE_CONTROL, cache_control(state.status, expires_at, now)))
            .finish(),
        Resolution::Expired => small_page(StatusCode::GONE, "This link has expired.\n"),
        Resolution::Disabled => small_page(
            StatusCode::GONE,
            "This link has been disabled by the operators of this service.\n",
        ),
        Resolution::Missing => match state.scan.missed(&request, code).await {
            Some(retry) => too_many_requests(retry),
            None => not_found(),
        },
    })
}

/// Unknown routes (`/a/b`, `/`) are just unknown links to a browser.
fn not_found() -> HttpResponse {
    small_page(StatusCode::NOT_FOUND, "No link has this code.\n")
}

/// A client past its scan budget (see `scan`): the same answer for every code, live or not.
fn too_many_requests(retry: Duration) -> HttpResponse {
    let mut response = small_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests for unknown links; please retry later.\n",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry.as_secs().max(1)));
    response
}

fn small_page(status: StatusCode, text: &'static str) -> HttpResponse {
    // no-store: the code may come to exist (404) and a browser must ask again.
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(text)
}

/// Short for temporary redirects so deletes take effect, long for permanent ones, and never
/// past the link's expiry. The common case is a constant, so the hot path builds nothing.
fn cache_control(
    status: StatusCode,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> HeaderValue {
    let permanent = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
    );
    let (scope, max_age, constant) = if permanent {
        ("public", PERMANENT_MAX_AGE, PERMANENT_CACHE_CONTROL)
    } else {
        ("private", TEMPORARY_MAX_AGE, TEMPORARY_CACHE_CONTROL)
    };
    match expires_at.map(|at| (at - now).num_seconds().max(0)) {
        Some(left) if left < max_age => HeaderValue::from_str(&format!("{scope}, max-age={left}"))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store")),
        _ => HeaderValue::from_static(constant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_headers_say_the_configured_ages() {
        assert_eq!(
            TEMPORARY_CACHE_CONTROL,
            format!("private, max-age={TEMPORARY_MAX_AGE}")
        );
        assert_eq!(
            PERMANENT_CACHE_CONTROL,
            format!("public, max-age={PERMANENT_MAX_AGE}")
        );
    }

    #[test]
    fn temporary_redirects_are_cached_briefly_and_privately() {
        let now = Utc::now();
        assert_eq!(
            cache_control(StatusCode::FOUND, None, now),
            "private, max-age=90"
        );
        assert_eq!(
            cache_control(StatusCode::TEMPORARY_REDIRECT, None, now),
            "private, max-age=90"
        );
    }

    #[test]
    fn permanent_redirects_are_cached_for_a_day() {
        let now = Utc::now();
        assert_eq!(
            cache_control(StatusCode::MOVED_PERMANENTLY, None, now),
            "public, max-age=86400"
        );
    }

    #[test]
    fn caching_never_outlives_the_link() {
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(30);
        assert_eq!(
            cache_control(StatusCode::MOVED_PERMANENTLY, Some(soon), now),
            "public, max-age=30"
        );
    }
}
