//! Who is calling: API keys in request headers, checked against PostgreSQL through an
//! in-process cache, and the scopes each endpoint needs.
//!
//! - A key is sent as `Authorization: Bearer <key>` or `X-Api-Key: <key>`; never read from a
//!   query string (it would end up in access logs and browser history).
//! - Checking a key costs no PostgreSQL round trip in steady state: verified digests are kept
//!   in memory for `KURZ_API_KEY_CACHE_TTL_MS`. A revoked key or disabled account is dropped
//!   from every instance's cache at once over Redis pub/sub; the TTL bounds a lost message.
//! - `last_used_at` is written at most once a minute per key and instance, by a background
//!   task, never on the request path.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use chrono::Utc;
use kurz_repository::invalidation::Invalidation;
use kurz_repository::token::{self, KeyDigest};
use kurz_repository::{Credential, Owner, PgRepository, RepoError, Scope};
use moka::future::Cache;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Credentials as a request presents them, before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No `Authorization` or `X-Api-Key` header.
    Nothing,
    /// A header is there but unusable: another scheme, an empty token, two different keys.
    Malformed,
    Key(&'a str),
}

/// Reads the credentials of a request. `Authorization: Bearer` (scheme in any case) or
/// `X-Api-Key`; both at once must carry the same key.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let bearer = headers.get(AUTHORIZATION).map(|value| {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    let header = headers
        .get("x-api-key")
        .map(|value| value.to_str().ok().map(str::trim).filter(|t| !t.is_empty()));
    match (bearer, header) {
        (None, None) => Presented::Nothing,
        (Some(None), _) | (_, Some(None)) => Presented::Malformed,
        (Some(Some(a)), Some(Some(b))) if a != b => Presented::Malformed,
        (Some(Some(key)), _) | (None, Some(Some(key))) => Presented::Key(key),
    }
}

/// The caller of a request, as the guard middleware established it. Handlers get it through
/// the [`Authorized`] and [`Creator`] extractors.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials, and anonymous creation is on (`KURZ_ANONYMOUS_CREATE`).
    Anonymous,
    Key(Arc<Credential>),
}

impl Caller {
    /// The account new links belong to.
    pub fn account_id(&self) -> Option<i64> {
        match self {
            Self::Anonymous => None,
            Self::Key(c) => Some(c.account.id),
        }
    }

    /// 401 for an anonymous caller, 403 unless the key has `scope`. `admin` carries every
    /// scope.
    fn require(self, scope: Scope) -> Result<Arc<Credential>, ApiError> {
        match self {
            Self::Anonymous => Err(ApiError::Unauthorized),
            Self::Key(c) if c.key.has_scope(scope) || c.key.has_scope(Scope::Admin) => Ok(c),
            Self::Key(_) => Err(ApiError::InsufficientScope(scope)),
        }
    }
}

/// A scope an endpoint needs, as a type, so the check runs as the first extractor: before the
/// body is parsed, a caller without the scope learns nothing about what it sent.
pub trait NeedsScope {
    const SCOPE: Scope;
}

#[derive(Debug)]
pub struct LinksRead;
impl NeedsScope for LinksRead {
    const SCOPE: Scope = Scope::LinksRead;
}

/// Click analytics: `GET /api/v1/links/{code}/stats` and `GET /api/v1/stats`.
#[derive(Debug)]
pub struct StatsRead;
impl NeedsScope for StatsRead {
    const SCOPE: Scope = Scope::StatsRead;
}

#[derive(Debug)]
pub struct LinksWrite;
impl NeedsScope for LinksWrite {
    const SCOPE: Scope = Scope::LinksWrite;
}

#[derive(Debug)]
pub struct Admin;
impl NeedsScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// A key holding scope `S`.
#[derive(Debug)]
pub struct Authorized<S> {
    pub credential: Arc<Credential>,
    scope: PhantomData<S>,
}

impl<S> Authorized<S> {
    /// Whose links this key may see and change: an admin's every account's (and anonymous
    /// ones), anyone else's their own account's.
    pub fn owner(&self) -> Owner {
        if self.credential.key.has_scope(Scope::Admin) {
            Owner::Any
        } else {
            Owner::Account(self.credential.account.id)
        }
    }
}

impl<S: NeedsScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(caller_of(request).and_then(|caller| {
            Ok(Self {
                credential: caller.require(S::SCOPE)?,
                scope: PhantomData,
            })
        }))
    }
}

/// Who may create a link: a key with `links:write`, or anyone when anonymous creation is on.
#[derive(Debug)]
pub struct Creator(pub Caller);

impl FromRequest for Creator {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(caller_of(request).and_then(|caller| match caller {
            Caller::Anonymous => Ok(Self(caller)),
            key => Ok(Self(Caller::Key(key.require(Scope::LinksWrite)?))),
        }))
    }
}

/// A key holding scope `S`, or, where anonymous creation is on, a caller without one, who
/// reaches only the links that belong to no account (the ones anonymous callers created).
/// For reads that reveal nothing beyond what the short URL itself does: the web page shows
/// the QR code of a link it just created anonymously.
#[derive(Debug)]
pub enum KeyOrAnonymous<S> {
    Key(Authorized<S>),
    Anonymous,
}

impl<S> KeyOrAnonymous<S> {
    /// Whether a link owned by `owner_id` is within this caller's reach.
    pub fn reaches(&self, owner_id: Option<i64>) -> bool {
        match self {
            Self::Key(key) => key.owner().covers(owner_id),
            Self::Anonymous => owner_id.is_none(),
        }
    }
}

impl<S: NeedsScope> FromRequest for KeyOrAnonymous<S> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The guard admits a caller without credentials only while anonymous creation is on.
        std::future::ready(caller_of(request).and_then(|caller| match caller {
            Caller::Anonymous => Ok(Self::Anonymous),
            key => Ok(Self::Key(Authorized {
                credential: key.require(S::SCOPE)?,
                scope: PhantomData,
            })),
        }))
    }
}

fn caller_of(request: &HttpRequest) -> Result<Caller, ApiError> {
    // The guard middleware wraps every /api route; a missing caller means the request got
    // here without it, which must not become an open door.
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(ApiError::Unauthorized)
}

/// Why a presented key does not authenticate anyone.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked, expired, malformed or checksum-broken: 401 `invalid_api_key`.
    #[error("invalid API key")]
    InvalidKey,
    /// 403 `account_disabled`.
    #[error("the account is disabled")]
    AccountDisabled,
    /// PostgreSQL could not be asked (and the key was not cached).
    #[error(transparent)]
    Repo(Arc<RepoError>),
}

/// Checks keys, with an in-process cache of what PostgreSQL said about each digest (including
/// "no such key", so a repeated bad key costs one lookup per TTL).
#[derive(Debug, Clone)]
pub struct Verifier {
    repo: PgRepository,
    cache: Cache<KeyDigest, Option<Arc<Credential>>>,
    usage: UsageRecorder,
}

impl Verifier {
    /// Starts the `last_used_at` writer on the current runtime.
    pub fn new(repo: PgRepository, ttl: Duration) -> Self {
        let cache = Cache::builder()
            // Each entry is a few hundred bytes; active keys are far fewer.
            .max_capacity(100_000)
            .time_to_live(ttl)
            .support_invalidation_closures()
            .build();
        Self {
            usage: UsageRecorder::spawn(repo.clone()),
            repo,
            cache,
        }
    }

    /// The credential behind `key`, if it is valid now.
    pub async fn verify(&self, key: &str) -> Result<Arc<Credential>, AuthError> {
        let digest = token::verify_format(key).map_err(|_| AuthError::InvalidKey)?;
        let found = self
            .cache
            .try_get_with(digest, async {
                self.repo.credential(&digest).await.map(|c| c.map(Arc::new))
            })
            .await
            .map_err(AuthError::Repo)?;
        let credential = found.ok_or(AuthError::InvalidKey)?;
        let now = Utc::now();
        let key = &credential.key;
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidKey);
        }
        if credential.account.disabled_at.is_some() {
            return Err(AuthError::AccountDisabled);
        }
        self.usage.record(key.id);
        Ok(credential)
    }

    /// Applies a message from the auth invalidation channel.
    pub async fn invalidate(&self, event: Invalidation) {
        let target = match event {
            Invalidation::Resubscribed => return self.cache.invalidate_all(),
            Invalidation::Code(payload) => Target::parse(&payload),
        };
        let Some(target) = target else {
            tracing::warn!("unreadable auth invalidation message");
            return;
        };
        let dropped = self
            .cache
            .invalidate_entries_if(move |_, entry| entry.as_ref().is_some_and(|c| target.hits(c)));
        if let Err(e) = dropped {
            // Only if the builder lacked closure support; drop everything rather than serve
            // a revoked key.
            tracing::error!(error = %e, "targeted invalidation failed; dropping every key");
            self.cache.invalidate_all();
        }
    }
}

/// What an auth invalidation message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Key(i64),
    Account(i64),
}

impl Target {
    /// The message for this target.
    pub fn payload(self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Account(id) => format!("account:{id}"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = id.parse().ok()?;
        match kind {
            "key" => Some(Self::Key(id)),
            "account" => Some(Self::Account(id)),
            _ => None,
        }
    }

    fn hits(self, credential: &Credential) -> bool {
        match self {
            Self::Key(id) => credential.key.id == id,
            Self::Account(id) => credential.account.id == id,
        }
    }
}

/// How often `last_used_at` is written per key, at most.
const USAGE_PERIOD: Duration = Duration::from_secs(60);
/// Keys waiting to be written; a full queue drops the update (it is only a hint).
const USAGE_QUEUE: usize = 1_024;

/// Notes key use and writes `last_used_at` in the background, at most once per
/// [`USAGE_PERIOD`] per key.
#[derive(Debug, Clone)]
struct UsageRecorder {
    written: Arc<Mutex<HashMap<i64, Instant>>>,
    queue: mpsc::Sender<i64>,
}

impl UsageRecorder {
    fn spawn(repo: PgRepository) -> Self {
        let (queue, mut receiver) = mpsc::channel(USAGE_QUEUE);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while receiver.recv_many(&mut ids, USAGE_QUEUE).await > 0 {
                if let Err(e) = repo.touch_api_keys(&ids).await {
                    tracing::debug!(error = %e, "writing last_used_at failed");
                }
                ids.clear();
            }
        });
        Self {
            written: Arc::default(),
            queue,
        }
    }

    fn record(&self, key_id: i64) {
        let now = Instant::now();
        {
            // A plain mutex: held for one map lookup, never across an await.
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            match written.get(&key_id) {
                Some(at) if now.duration_since(*at) < USAGE_PERIOD => return,
                _ => written.insert(key_id, now),
            };
        }
        let _ = self.queue.try_send(key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                actix_web::http::header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        assert_eq!(presented(&headers(&[])), Presented::Nothing);
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer kurz_x")])),
            Presented::Key("kurz_x")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "bearer  kurz_x ")])),
            Presented::Key("kurz_x")
        );
        assert_eq!(
            presented(&headers(&[("x-api-key", "kurz_y")])),
            Presented::Key("kurz_y")
        );
        assert_eq!(
            presented(&headers(&[
                ("authorization", "Bearer kurz_x"),
                ("x-api-key", "kurz_x")
            ])),
            Presented::Key("kurz_x")
        );
    }

    #[test]
    fn unusable_headers_are_malformed() {
        for bad in [
            headers(&[("authorization", "Basic dXNlcjpwdw==")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer   ")]),
            headers(&[("x-api-key", "")]),
            headers(&[("authorization", "Bearer kurz_x"), ("x-api-key", "kurz_y")]),
        ] {
            assert_eq!(presented(&bad), Presented::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn invalidation_targets_round_trip() {
        for target in [Target::Key(7), Target::Account(12)] {
            assert_eq!(Target::parse(&target.payload()), Some(target));
        }
        assert_eq!(Target::parse("link:3"), None);
        assert_eq!(Target::parse("key:x"), None);
    }
}
