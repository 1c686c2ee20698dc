//! Admin endpoints: accounts and API keys. Every one needs a key with the `admin` scope.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use kurz_repository::accounts::{is_valid_name, parse_scopes};
use kurz_repository::invalidation::AUTH_CHANNEL;
use kurz_repository::{Account, ApiKey, NewApiKey, Scope};
use serde::{Deserialize, Serialize};

use crate::auth::{Admin, Authorized, Target};
use crate::error::ApiError;
use crate::routes::State;
use crate::validate::parse_expires_at;

/// Highest per-key rate limit an admin may set, in requests a minute.
const MAX_RATE_LIMIT: u32 = 1_000_000;

/// An account as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountView {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            created_at: a.created_at,
            disabled_at: a.disabled_at,
        }
    }
}

/// A key as the API shows it: never the key itself, only its hint.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: Option<u32>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            account_id: k.account_id,
            name: k.name,
            hint: k.hint,
            scopes: k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            rate_limit_per_minute: k.rate_limit_per_minute,
        }
    }
}

/// A new key as its creator sees it, once: the key and its metadata.
#[derive(Debug, Serialize)]
pub struct MintedKeyView {
    /// The key itself. Shown here only; Kurz keeps its digest.
    pub key: String,
    #[serde(flatten)]
    pub meta: KeyView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Requests a minute for this key; the service default when absent.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFilter {
    pub account_id: Option<i64>,
}

/// `POST /api/v1/accounts`: 201 with the account.
pub async fn create_account(
    _admin: Authorized<Admin>,
    body: web::Json<CreateAccount>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    if !is_valid_name(&body.name) {
        return Err(ApiError::InvalidName);
    }
    let account = state.repo.create_account(&body.name).await?;
    Ok(HttpResponse::Created().json(AccountView::from(account)))
}

/// `GET /api/v1/accounts`: every account, oldest first.
pub async fn list_accounts(
    _admin: Authorized<Admin>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let accounts: Vec<AccountView> = state
        .repo
        .accounts()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "accounts": accounts })))
}

/// `POST /api/v1/accounts/{id}/disable`: its keys stop working on every instance within a
/// second; its links keep redirecting.
pub async fn disable_account(
    _admin: Authorized<Admin>,
    id: web::Path<i64>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let account = state
        .repo
        .disable_account(*id)
        .await?
        .ok_or(ApiError::NoSuchAccount)?;
    announce(&state, Target::Account(account.id)).await;
    Ok(HttpResponse::Ok().json(AccountView::from(account)))
}

/// `POST /api/v1/accounts/{id}/keys`: 201 with the key, shown this once.
pub async fn create_key(
    _admin: Authorized<Admin>,
    id: web::Path<i64>,
    body: web::Json<CreateKey>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if !is_valid_name(&body.name) {
        return Err(ApiError::InvalidName);
    }
    let scopes = parse_scopes(&body.scopes).ok_or(ApiError::InvalidScopes)?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|raw| parse_expires_at(raw, Utc::now()))
        .transpose()?;
    if body
        .rate_limit_per_minute
        .is_some_and(|n| !(1..=MAX_RATE_LIMIT).contains(&n))
    {
        return Err(ApiError::InvalidRateLimit);
    }
    let new = NewApiKey {
        account_id: *id,
        name: &body.name,
        scopes: &scopes,
        expires_at,
        rate_limit_per_minute: body.rate_limit_per_minute,
    };
    let (key, minted) = state
        .repo
        .create_api_key(&new)
        .await?
        .ok_or(ApiError::NoSuchAccount)?;
    Ok(HttpResponse::Created().json(MintedKeyView {
        key: minted.expose().to_owned(),
        meta: key.into(),
    }))
}

/// `GET /api/v1/keys[?account_id=N]`: keys, oldest first, without the keys themselves.
pub async fn list_keys(
    _admin: Authorized<Admin>,
    filter: web::Query<KeyFilter>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let keys: Vec<KeyView> = state
        .repo
        .api_keys(filter.account_id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

/// `DELETE /api/v1/keys/{id}`: revokes the key; 204. It stops working on every create
/// instance within a second (pub/sub), or within the key cache's TTL if that message is lost.
pub async fn revoke_key(
    _admin: Authorized<Admin>,
    id: web::Path<i64>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .repo
        .revoke_api_key(*id)
        .await?
        .ok_or(ApiError::NoSuchKey)?;
    announce(&state, Target::Key(key.id)).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Tells every create instance (this one included, through the same channel) to forget
/// what it cached about `target`. This instance also drops it at once, so the answer to the
/// next request here does not wait for the round trip through Redis.
async fn announce(state: &State, target: Target) {
    state
        .verifier
        .invalidate(kurz_repository::invalidation::Invalidation::Code(
            target.payload(),
        ))
        .await;
    if let Err(e) = state.cache.publish(AUTH_CHANNEL, &target.payload()).await {
        tracing::warn!(error = %e, "publishing the key invalidation failed; other instances drop it within the key cache TTL");
    }
}
