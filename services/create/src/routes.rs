//! HTTP routes of the create API.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use kurz_repository::{
    CachedLink, Link, LinkCache, LinkRepository, NewLink, PgRepository, RedisCache, RepoError,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::ApiError;
use crate::keys::KeyBuffer;
use crate::validate::{UrlPolicy, check_alias, parse_expires_at};

/// A delete removes the cached entry twice: at once, and again after this delay, which
/// closes the race with a redirect instance that read the link just before the delete and
/// writes it back to the cache just after.
const SECOND_INVALIDATION_DELAY: Duration = Duration::from_secs(2);

/// Everything a request needs, shared by all workers.
#[derive(Debug)]
pub struct State {
    pub repo: PgRepository,
    pub cache: RedisCache,
    pub keys: Arc<KeyBuffer<PgRepository>>,
    pub url_policy: UrlPolicy,
    pub public_base_url: Url,
}

/// `POST /api/v1/links` body. Unknown fields are refused rather than ignored, so a client
/// sending a field this version does not support learns it at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    pub url: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A link as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkView {
    pub code: String,
    pub short_url: String,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl State {
    fn view(&self, link: Link) -> LinkView {
        LinkView {
            short_url: format!("{}{}", self.public_base_url, link.code),
            code: link.code,
            url: link.target_url,
            created_at: link.created_at,
            expires_at: link.expires_at,
        }
    }
}

/// `POST /api/v1/links`: validate, store (committed before we answer), cache best-effort.
pub async fn create(
    body: web::Json<CreateLink>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new_link = NewLink {
        target_url: state.url_policy.normalize(&body.url)?,
        expires_at: body
            .expires_at
            .as_deref()
            .map(|raw| parse_expires_at(raw, Utc::now()))
            .transpose()?,
    };
    let link = match body.alias.as_deref() {
        Some(alias) => {
            check_alias(alias)?;
            state.repo.insert_with_alias(alias, &new_link).await?
        }
        None => {
            let key = state.keys.take().await?;
            // A pool key is unique by construction; a conflict here is a broken invariant,
            // not the client's 409.
            state
                .repo
                .insert_with_key(&key, &new_link)
                .await
                .map_err(|e| match e {
                    RepoError::CodeTaken => ApiError::Internal(e),
                    other => other.into(),
                })?
        }
    };
    // The link is committed; the cache write only saves the first redirect a database
    // lookup (and replaces a negative entry for a probed alias), so its failure is logged.
    if let Err(e) = state.cache.put(&link.code, &CachedLink::from(&link)).await {
        tracing::debug!(error = %e, "cache write after create failed");
    }
    let location = format!("/api/v1/links/{}", link.code);
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, location))
        .json(state.view(link)))
}

/// `GET /api/v1/links/{code}`: the link's metadata, from PostgreSQL.
pub async fn get(
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    if !kurz_repository::codes::is_well_formed(&code) {
        return Err(ApiError::NotFound);
    }
    let link = state.repo.find(&code).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(state.view(link)))
}

/// `DELETE /api/v1/links/{code}`: the redirect stops serving it, and its code is never reused.
pub async fn delete(
    code: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    if !kurz_repository::codes::is_well_formed(&code) || !state.repo.delete(&code).await? {
        return Err(ApiError::NotFound);
    }
    if let Err(e) = state.cache.remove(&code).await {
        tracing::warn!(error = %e, "cache invalidation after delete failed; the entry expires with its TTL");
    }
    let cache = state.cache.clone();
    let code = code.into_inner();
    tokio::spawn(async move {
        tokio::time::sleep(SECOND_INVALIDATION_DELAY).await;
        let _ = cache.remove(&code).await;
    });
    Ok(HttpResponse::NoContent().finish())
}

/// 200 with PostgreSQL up (`degraded` without Redis), 503 without PostgreSQL.
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(state.repo.ping(), state.cache.ping());
    kurz_http::readiness(
        postgres.is_ok(),
        redis.is_ok(),
        state.repo.breaker().state().as_str(),
    )
}

pub async fn no_route() -> HttpResponse {
    ApiError::NoRoute.error_response()
}

pub async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}
