//! [`ApiError`]: the one place where failures of the create API become HTTP responses.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`. Codes are stable and
//! listed in the workspace README; messages are for people. Internal detail never reaches the
//! body: it goes to the log with its whole cause chain.

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use kurz_repository::{RepoError, Scope};
use serde_json::json;

use crate::auth::AuthError;

use crate::keys::KeyError;
use crate::validate::ValidationError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";
/// Refilling an empty pool takes the worker a few seconds.
const POOL_EMPTY_RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: a field broke a rule; the code names the rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// 400 `invalid_json`: the body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// 422 `invalid_body`: JSON, but not the expected fields and types.
    #[error("the body does not match the expected fields: {0}")]
    InvalidBody(String),
    /// 413 `payload_too_large`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`: not `Content-Type: application/json`.
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422 `too_many_items`: a bulk call with more links than it may carry (the setting, or
    /// the key's rate-limit burst if lower).
    #[error("a bulk call may carry at most {0} links")]
    TooManyItems(usize),
    /// 422 `no_items`: a bulk call with no links.
    #[error("a bulk call must carry at least one link")]
    NoItems,
    /// 400 `invalid_idempotency_key`: not 1 to 255 visible ASCII characters.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// 422 `idempotency_key_reused`: the key was used with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`: no credentials, or unusable
    /// ones (another scheme, an empty token).
    #[error("this endpoint needs an API key: send Authorization: Bearer <key>")]
    Unauthorized,
    /// 401 `invalid_api_key`: unknown, revoked, expired, malformed or with a bad checksum.
    /// The message never repeats the key.
    #[error("the API key is not valid (unknown, revoked, expired or mistyped)")]
    InvalidApiKey,
    /// 403 `insufficient_scope`, naming the scope needed.
    #[error("this API key lacks the `{0}` scope this endpoint needs")]
    InsufficientScope(Scope),
    /// 403 `account_disabled`.
    #[error("the account of this API key is disabled")]
    AccountDisabled,
    /// 429 `rate_limited`, with `Retry-After` in whole seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// 404 `not_found`.
    #[error("no link has this code")]
    NotFound,
    /// 404 `not_found`, for an account id that does not exist.
    #[error("no account has this id")]
    NoSuchAccount,
    /// 404 `not_found`, for an API key id that does not exist.
    #[error("no API key has this id")]
    NoSuchKey,
    /// 409 `account_name_taken`.
    #[error("an account with this name exists already")]
    AccountNameTaken,
    /// 422 `invalid_name`: an account or key name that is empty, too long or has control
    /// characters.
    #[error("the name must be 1 to 100 characters, without control characters")]
    InvalidName,
    /// 422 `invalid_scopes`: no scopes, or one that does not exist.
    #[error("scopes must be one or more of links:read, links:write, stats:read, admin")]
    InvalidScopes,
    /// 400 `invalid_query`: the query string has unknown parameters or values of the wrong
    /// type.
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    /// 400 `invalid_cursor`: a listing's `cursor` is not one this API handed out.
    #[error("the cursor is not valid: pass next_cursor from a listing unchanged")]
    InvalidCursor,
    /// 400 `invalid_range`: a stats range whose `from` is not before its `to`, or that the
    /// calendar cannot cut into buckets.
    #[error("the range is not valid: {0}")]
    InvalidRange(String),
    /// 400 `too_many_buckets`: a stats series would have more than 1,000 buckets.
    #[error(
        "the range has more than 1,000 {0} buckets (the most a series may have); choose a \
         coarser granularity or a shorter range"
    )]
    TooManyBuckets(&'static str),
    /// 400 `invalid_timezone`: `tz` is not an IANA time zone name.
    #[error("tz must be an IANA time zone name, such as Europe/Berlin or UTC")]
    InvalidTimezone,
    /// 422 `invalid_rate_limit`.
    #[error("rate_limit_per_minute must be 1 to 1,000,000")]
    InvalidRateLimit,
    /// 404 `not_found` for unknown paths.
    #[error("no such endpoint")]
    NoRoute,
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 409 `alias_taken`.
    #[error("the alias is already taken")]
    AliasTaken,
    /// 422 `search_too_broad`: a `q=` search, a count or a stats range read more of the
    /// account's rows than its time allows.
    #[error(
        "the search read more rows than its time allows; narrow it with created_after, \
         created_before or a longer q (stats: a shorter range)"
    )]
    SearchTooBroad,
    /// 503 `key_pool_empty`, with `Retry-After`.
    #[error("no short codes are available right now; retry shortly")]
    KeyPoolEmpty,
    /// 503 `unavailable`, with `Retry-After`: PostgreSQL unreachable, slow or restarting.
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable(#[source] RepoError),
    /// 500 `internal_error`.
    #[error("internal error")]
    Internal(#[source] RepoError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(e) => e.code(),
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::TooManyItems(_) => "too_many_items",
            Self::NoItems => "no_items",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::AccountDisabled => "account_disabled",
            Self::RateLimited(_) => "rate_limited",
            Self::AccountNameTaken => "account_name_taken",
            Self::InvalidName => "invalid_name",
            Self::InvalidScopes => "invalid_scopes",
            Self::InvalidRateLimit => "invalid_rate_limit",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidCursor => "invalid_cursor",
            Self::InvalidRange(_) => "invalid_range",
            Self::TooManyBuckets(_) => "too_many_buckets",
            Self::InvalidTimezone => "invalid_timezone",
            Self::NotFound | Self::NoRoute | Self::NoSuchAccount | Self::NoSuchKey => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AliasTaken => "alias_taken",
            Self::KeyPoolEmpty => "key_pool_empty",
            Self::SearchTooBroad => "search_too_broad",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Maps the JSON extractor's failures, given the body limit for the message.
    pub fn from_json_error(e: &JsonPayloadError, limit: usize) -> Self {
        match e {
            JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
                Self::PayloadTooLarge(limit)
            }
            JsonPayloadError::ContentType => Self::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) if e.is_data() => Self::InvalidBody(e.to_string()),
            JsonPayloadError::Deserialize(e) => Self::InvalidJson(e.to_string()),
            other => Self::InvalidJson(other.to_string()),
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::CodeTaken => Self::AliasTaken,
            RepoError::NameTaken => Self::AccountNameTaken,
            RepoError::ScanTimeout(_) => Self::SearchTooBroad,
            e if e.is_unavailable() => Self::Unavailable(e),
            e => Self::Internal(e),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::PoolEmpty => Self::KeyPoolEmpty,
            KeyError::ClaimFailed => {
                Self::Unavailable(RepoError::Unavailable("key claim failed".into()))
            }
            KeyError::Repo(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidKey => Self::InvalidApiKey,
            AuthError::AccountDisabled => Self::AccountDisabled,
            // The cache's single-flight shares one error among waiters; the cause is logged
            // where it happened (the repository's span), so a summary is enough here.
            AuthError::Repo(e) if e.is_unavailable() => {
                Self::Unavailable(RepoError::Unavailable(e.to_string().into()))
            }
            AuthError::Repo(e) => Self::Internal(RepoError::Unavailable(e.to_string().into())),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_)
            | Self::InvalidBody(_)
            | Self::TooManyItems(_)
            | Self::NoItems
            | Self::IdempotencyKeyReused
            | Self::InvalidName
            | Self::InvalidScopes
            | Self::InvalidRateLimit
            | Self::SearchTooBroad => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized | Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) | Self::AccountDisabled => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::AccountNameTaken => StatusCode::CONFLICT,
            Self::NoSuchAccount | Self::NoSuchKey => StatusCode::NOT_FOUND,
            Self::InvalidJson(_)
            | Self::InvalidIdempotencyKey
            | Self::InvalidQuery(_)
            | Self::InvalidCursor
            | Self::InvalidRange(_)
            | Self::TooManyBuckets(_)
            | Self::InvalidTimezone => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AliasTaken => StatusCode::CONFLICT,
            Self::KeyPoolEmpty | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, code = self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request refused");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((CACHE_CONTROL, "no-store"));
        match self {
            Self::KeyPoolEmpty => {
                response.insert_header((RETRY_AFTER, POOL_EMPTY_RETRY_AFTER_SECS));
            }
            Self::Unavailable(_) => {
                response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
            }
            // RFC 6750: a bearer-token challenge, with the error code for a bad token and
            // the needed scope for a missing one.
            Self::Unauthorized => {
                response.insert_header((WWW_AUTHENTICATE, r#"Bearer realm="kurz""#));
            }
            Self::InvalidApiKey => {
                response.insert_header((
                    WWW_AUTHENTICATE,
                    r#"Bearer realm="kurz", error="invalid_token""#,
                ));
            }
            Self::InsufficientScope(scope) => {
                response.insert_header((
                    WWW_AUTHENTICATE,
                    format!(r#"Bearer realm="kurz", error="insufficient_scope", scope="{scope}""#),
                ));
            }
            Self::RateLimited(secs) => {
                response.insert_header((RETRY_AFTER, secs.to_string()));
            }
            _ => {}
        }
        response.json(json!({ "error": { "code": self.code(), "message": self.to_string() } }))
    }
}
