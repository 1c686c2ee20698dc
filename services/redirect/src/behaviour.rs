//! Per-link redirect behaviour as the redirect path uses it, and the `Cache-Control` of a
//! redirect.
//!
//! Most links have no behaviour of their own; they carry `None` and take the plain path
//! (the service's status, a constant header, nothing built). A link with any of
//! `redirect_status`, `forward_query`, `expired_url` or `max_visits` carries an
//! [`Arc<LinkBehaviour>`], ready to use: the status parsed, the expired URL already a header.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use kurz_repository::Behaviour;

/// What a link does differently from the service's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkBehaviour {
    /// `None`: `KURZ_REDIRECT_STATUS`.
    pub status: Option<StatusCode>,
    pub forward_query: bool,
    /// Where the link sends people once expired, by date or by visits; `None`: a 410 page.
    pub expired_url: Option<HeaderValue>,
    /// Every redirect is counted in PostgreSQL (`max_visits`).
    pub limited: bool,
}

impl LinkBehaviour {
    /// `None` for the default behaviour, so those links keep the plain path.
    pub fn of(behaviour: &Behaviour) -> Option<Arc<Self>> {
        if *behaviour == Behaviour::default() {
            return None;
        }
        let status = behaviour.redirect_status.and_then(|s| {
            // The column's CHECK admits only these; anything else is the service default.
            let status = StatusCode::from_u16(s).ok().filter(|s| is_redirect(*s));
            if status.is_none() {
                tracing::error!(
                    status = s,
                    "a stored redirect status is not 301, 302, 307 or 308"
                );
            }
            status
        });
        let expired_url = behaviour.expired_url.as_ref().and_then(|url| {
            let header = HeaderValue::from_maybe_shared(Bytes::from(url.clone())).ok();
            if header.is_none() {
                // As for targets: only the create API writes these, from URLs it serialized.
                tracing::error!("a stored expired_url is not a valid Location header");
            }
            header
        });
        Some(Arc::new(Self {
            status,
            forward_query: behaviour.forward_query,
            expired_url,
            limited: behaviour.is_limited(),
        }))
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 307 | 308)
}

fn is_permanent(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
    )
}

/// `no-store`: no cache, private or shared, may keep the answer. `private` beside it would
/// add nothing, and `no-cache` would still let a browser write the target to disk.
/// A function rather than a constant: a `HeaderValue` holds atomics (clippy's
/// `declare_interior_mutable_const`); a static one is built without allocating.
pub fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// The `Cache-Control` of redirects:
/// - temporary (302, 307): `no-store`, so every click reaches us (an edit is seen at once, and
///   a click is a request we see);
/// - permanent (301, 308): `private, max-age=N` (`KURZ_PERMANENT_REDIRECT_MAX_AGE_SECS`,
///   5 minutes by default; 0 means `no-store`), never past the link's expiry. Private because
///   a shared cache would answer other people's clicks for the whole period, where a browser
///   only repeats its own; short because a cached 301 hides edits and clicks (yourls #1832,
///   #1964; chhoto-url #18) and browsers otherwise keep a 301 for good;
/// - links with a visit limit: `no-store` whatever the status (see the handler).
///
/// The usual headers are built once, at start, so a redirect clones a reference count.
#[derive(Debug, Clone)]
pub struct CacheControl {
    permanent: HeaderValue,
    permanent_max_age: i64,
}

impl CacheControl {
    pub fn new(permanent_max_age: Duration) -> Self {
        let secs = i64::try_from(permanent_max_age.as_secs()).unwrap_or(i64::MAX);
        let permanent = if secs == 0 {
            no_store()
        } else {
            private_max_age(secs)
        };
        Self {
            permanent,
            permanent_max_age: secs,
        }
    }

    /// The header for a redirect with `status` to a link expiring at `expires_at`.
    pub fn for_redirect(
        &self,
        status: StatusCode,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> HeaderValue {
        if !is_permanent(status) {
            return no_store();
        }
        match expires_at.map(|at| (at - now).num_seconds().max(0)) {
            Some(left) if left < self.permanent_max_age => private_max_age(left),
            _ => self.permanent.clone(),
        }
    }
}

fn private_max_age(secs: i64) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(format!("private, max-age={secs}")))
        .unwrap_or_else(|_| no_store())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn temporary_redirects_are_never_stored() {
        let caching = CacheControl::new(FIVE_MINUTES);
        let now = Utc::now();
        for status in [StatusCode::FOUND, StatusCode::TEMPORARY_REDIRECT] {
            assert_eq!(caching.for_redirect(status, None, now), "no-store");
        }
    }

    #[test]
    fn permanent_redirects_are_kept_privately_for_the_configured_age() {
        let now = Utc::now();
        for status in [
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            let header = CacheControl::new(FIVE_MINUTES).for_redirect(status, None, now);
            assert_eq!(header, "private, max-age=300");
            let header = CacheControl::new(Duration::from_secs(60)).for_redirect(status, None, now);
            assert_eq!(header, "private, max-age=60");
        }
    }

    #[test]
    fn a_zero_age_stores_permanent_redirects_nowhere() {
        let caching = CacheControl::new(Duration::ZERO);
        let header = caching.for_redirect(StatusCode::MOVED_PERMANENTLY, None, Utc::now());
        assert_eq!(header, "no-store");
    }

    #[test]
    fn caching_never_outlives_the_link() {
        let caching = CacheControl::new(FIVE_MINUTES);
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(30);
        let later = now + chrono::Duration::days(1);
        let permanent = StatusCode::PERMANENT_REDIRECT;
        assert_eq!(
            caching.for_redirect(permanent, Some(soon), now),
            "private, max-age=30"
        );
        assert_eq!(
            caching.for_redirect(permanent, Some(later), now),
            "private, max-age=300"
        );
        assert_eq!(
            caching.for_redirect(StatusCode::FOUND, Some(soon), now),
            "no-store"
        );
    }

    #[test]
    fn default_links_carry_no_behaviour() {
        assert_eq!(LinkBehaviour::of(&Behaviour::default()), None);
        let own = Behaviour {
            redirect_status: Some(308),
            forward_query: true,
            expired_url: Some("https://example.com/gone".into()),
            max_visits: Some(3),
        };
        let behaviour = LinkBehaviour::of(&own).expect("a behaviour");
        assert_eq!(behaviour.status, Some(StatusCode::PERMANENT_REDIRECT));
        assert!(behaviour.forward_query && behaviour.limited);
        assert_eq!(
            behaviour.expired_url.as_ref().map(|u| u.as_bytes()),
            Some(&b"https://example.com/gone"[..])
        );
    }
}
