//! The guard in front of every `/api` request: who is calling, and whether they may call
//! now.
//!
//! In order:
//! 1. The client IP (the TCP peer, or what trusted proxies say; see `kurz_http::client_ip`).
//! 2. The credentials the request presents, checked (see [`crate::auth`]). A request that
//!    sends a key is never treated as anonymous, even with a bad key.
//! 3. Whether the IP has spent its failed-authentication budget: from memory, with no I/O.
//!    The instance that counts the failure past the budget announces the block on the auth
//!    channel (`block:{ip}:{ms}`), and every instance remembers it until its window ends. A
//!    lost message lets the IP through on that instance only until its next failure there,
//!    which the shared counter refuses (and announces again).
//! 4. The caller's rate limit (the key, or the IP for requests without one): one script call
//!    in Redis. A failed authentication is counted against the IP instead.
//! 5. The caller goes into the request's extensions for the handlers' extractors, and every
//!    response gets the rate-limit headers of the limit that applied.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use kurz_ratelimit::{Budget, Limit, Limiter, Quota, Store, Verdict as Counted, WindowCounter};
use kurz_repository::invalidation::{AUTH_CHANNEL, Invalidation};
use kurz_repository::{Credential, RedisCache};
use kurz_settings::RedisSettings;
use kurz_settings::TrustedProxies;

use crate::auth::{AuthError, Caller, Presented, Verifier, presented};
use crate::error::ApiError;
use crate::routes::State;
use crate::settings::AccessSettings;

/// Authentication and rate limits, shared by the workers of one instance.
#[derive(Debug, Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    verifier: Verifier,
    /// For announcing blocks to the other instances.
    cache: RedisCache,
    keys: Limiter,
    anonymous: Limiter,
    failures: WindowCounter,
    access: AccessSettings,
    trusted: TrustedProxies,
}

/// The response headers of the limit that applied.
pub(crate) type Headers = Vec<(&'static str, String)>;

/// Rate-limit headers a handler decided on after the guard's own check (a bulk call that took
/// its other items from the limit): put into the request's extensions, the guard sends them
/// instead of its own, so the response shows the final decision.
#[derive(Debug, Clone)]
pub(crate) struct FinalLimit(pub Headers);

/// What the guard decided for one request.
enum Verdict {
    /// Go on, as this caller.
    Admit(Caller, Headers),
    /// Answer this error.
    Refuse(ApiError, Headers),
}

impl Guard {
    pub fn new(
        verifier: Verifier,
        cache: &RedisCache,
        redis: &RedisSettings,
        access: AccessSettings,
        trusted: TrustedProxies,
    ) -> Self {
        // The cache's multiplexed connection: one connection per process on the request path.
        let store = Store::new(cache.connection(), redis.command_timeout);
        Self {
            inner: Arc::new(Inner {
                verifier,
                cache: cache.clone(),
                keys: Limiter::new(&store, Limit::ApiKey),
                anonymous: Limiter::new(&store, Limit::Anonymous),
                failures: WindowCounter::new(&store, Limit::AuthFailures),
                access,
                trusted,
            }),
        }
    }

    /// Applies a message of the auth channel: a block found by another instance, or a key or
    /// account that changed (for the verifier).
    pub async fn on_auth_event(&self, event: Invalidation) {
        if let Invalidation::Code(payload) = &event
            && let Some(block) = payload.strip_prefix("block:")
        {
            match block
                .rsplit_once(':')
                .and_then(|(ip, ms)| Some((ip, ms.parse().ok()?)))
            {
                Some((ip, ms)) => self
                    .inner
                    .failures
                    .remember_block(ip, Duration::from_millis(ms)),
                None => tracing::warn!("unreadable block announcement"),
            }
            return;
        }
        self.inner.verifier.invalidate(event).await;
    }

    /// The most requests `credential`'s key may make at once: its quota's burst. A bulk call
    /// with more items could never be allowed.
    pub fn key_burst(&self, credential: &Credential) -> u32 {
        Quota::per_minute(self.inner.key_limit(credential)).burst()
    }

    /// Takes `count` more requests from the key's limit, all or none: a bulk call's items
    /// beyond the one the guard took for the call itself. `Ok` with the headers of this
    /// decision, or the 429 with them.
    pub(crate) async fn charge(
        &self,
        credential: &Credential,
        count: u32,
    ) -> Result<Headers, (ApiError, Headers)> {
        let this = &*self.inner;
        let quota = Quota::per_minute(this.key_limit(credential));
        let subject = credential.key.id.to_string();
        this.limited(&this.keys, &subject, quota, count).await
    }

    async fn decide(&self, request: &ServiceRequest) -> Verdict {
        let this = &*self.inner;
        let ip = kurz_http::client_ip::request_subject(request.request(), &this.trusted);
        // A blocked IP is refused before anything else is looked at: no lookup for its key,
        // and no Redis call.
        if let Some(left) = this.failures.blocked_here(&ip) {
            return blocked_verdict(this.failure_budget(), left);
        }
        match presented(request.headers()) {
            // Requests without credentials are anonymous ones, limited per IP whether or not
            // anonymous creation is on; without it they are then refused. They are not
            // guesses at a key, so they are not failures.
            Presented::Nothing => {
                let quota = Quota::per_minute(this.access.anonymous_rate_limit);
                match this.limited(&this.anonymous, &ip, quota, 1).await {
                    Ok(headers) if this.access.anonymous_create => {
                        Verdict::Admit(Caller::Anonymous, headers)
                    }
                    Ok(headers) => Verdict::Refuse(ApiError::Unauthorized, headers),
                    Err((error, headers)) => Verdict::Refuse(error, headers),
                }
            }
            Presented::Malformed => this.failed(&ip, ApiError::Unauthorized).await,
            Presented::Key(key) => match this.verifier.verify(key).await {
                Ok(credential) => {
                    let quota = Quota::per_minute(this.key_limit(&credential));
                    let subject = credential.key.id.to_string();
                    match this.limited(&this.keys, &subject, quota, 1).await {
                        Ok(headers) => Verdict::Admit(Caller::Key(credential), headers),
                        Err((error, headers)) => Verdict::Refuse(error, headers),
                    }
                }
                // PostgreSQL could not say: 503, and not the client's failure.
                Err(e @ AuthError::Repo(_)) => Verdict::Refuse(e.into(), Vec::new()),
                Err(e) => this.failed(&ip, e.into()).await,
            },
        }
    }
}

impl Inner {
    fn key_limit(&self, credential: &Credential) -> u32 {
        credential
            .key
            .rate_limit_per_minute
            .unwrap_or(self.access.key_rate_limit)
    }

    fn failure_budget(&self) -> Budget {
        Budget::per_minute(self.access.auth_failure_limit)
    }

    /// Takes `count` requests from `subject`'s limit, all or none. `Ok` with the limit's
    /// headers, or the refusal with them.
    async fn limited(
        &self,
        limiter: &Limiter,
        subject: &str,
        quota: Quota,
        count: u32,
    ) -> Result<Headers, (ApiError, Headers)> {
        let decision = limiter.check_n(subject, quota, count).await;
        let headers = decision.headers();
        match decision.retry_after {
            Some(wait) => Err((ApiError::RateLimited(wait.as_secs()), headers)),
            None => Ok(headers),
        }
    }

    /// Counts a failed authentication against the IP: `error`, or 429 once past the budget.
    async fn failed(&self, ip: &str, error: ApiError) -> Verdict {
        let counted = self.failures.record(ip, self.failure_budget()).await;
        if counted.blocked {
            self.announce_block(ip, counted.reset).await;
        }
        let headers = counted.headers();
        match counted.retry_after {
            Some(wait) => Verdict::Refuse(ApiError::RateLimited(wait.as_secs()), headers),
            None => Verdict::Refuse(error, headers),
        }
    }

    /// Tells the other instances that `ip` is blocked for `left`. Best-effort: an instance that
    /// misses it learns the block from the shared counter at the IP's next failure there.
    async fn announce_block(&self, ip: &str, left: Duration) {
        let payload = format!("block:{ip}:{}", left.as_millis());
        if let Err(e) = self.cache.publish(AUTH_CHANNEL, &payload).await {
            tracing::debug!(error = %e, "announcing a failed-authentication block failed");
        }
    }
}

/// The refusal of an IP past its failed-authentication budget, with that budget's headers.
/// (Every wait kurz-ratelimit gives is already whole seconds, at least one.)
fn blocked_verdict(budget: Budget, left: Duration) -> Verdict {
    let spent = Counted {
        blocked: true,
        count: u64::from(budget.events()) + 1,
        budget: budget.events(),
        window: budget.window(),
        reset: left,
        retry_after: Some(left),
        policy: Limit::AuthFailures,
        fallback: false,
    };
    Verdict::Refuse(ApiError::RateLimited(left.as_secs()), spent.headers())
}

/// The middleware (`from_fn(guard)`) on the `/api` scope.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = request.app_data::<web::Data<State>>().cloned() else {
        // A wiring mistake, not a client's: refuse rather than let the request through.
        let response = request.into_response(ApiError::Unauthorized.error_response());
        return Ok(response.map_into_right_body());
    };
    let (mut response, headers) = match state.guard.decide(&request).await {
        Verdict::Admit(caller, headers) => {
            request.extensions_mut().insert(caller);
            let response = next.call(request).await?;
            let last = response.request().extensions_mut().remove::<FinalLimit>();
            let headers = last.map_or(headers, |last| last.0);
            (response.map_into_left_body(), headers)
        }
        Verdict::Refuse(error, headers) => {
            let response = request.into_response(error.error_response());
            (response.map_into_right_body(), headers)
        }
    };
    let map = response.headers_mut();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}
