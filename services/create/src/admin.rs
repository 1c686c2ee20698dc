//! Admin endpoints: accounts and API keys. Every one needs a key with the `admin` scope.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use kurz_repository::accounts::{is_valid_name, parse_scopes};
use kurz_repository::invalidation::AUTH_CHANNEL;
use kurz_repository::{Account, ApiKey, NewApiKey, Scope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Authorized, Target};
use crate::error::ApiError;
use crate::openapi::{ScopeName, errors};
use crate::routes::State;
use crate::validate::parse_expires_at;

/// Highest per-key rate limit an admin may set, in requests a minute.
const MAX_RATE_LIMIT: u32 = 1_000_000;

/// An account as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    #[schema(example = "acme")]
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// `null` while the account is enabled.
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
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    /// The key's first nine characters, to recognize it by.
    #[schema(example = "kurz_3mPq")]
    pub hint: String,
    #[schema(value_type = Vec<ScopeName>)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct MintedKeyView {
    /// The key itself. Shown here only; Kurz keeps its digest.
    pub key: String,
    #[serde(flatten)]
    pub meta: KeyView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// 1 to 100 characters, not blank, no control characters; unique.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "acme",
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 100 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "ci deploys",
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    pub scopes: Vec<String>,
    /// RFC 3339 date-time with an offset, in the future; the key stops working then.
    #[serde(default)]
    #[schema(format = DateTime, example = "2030-06-30T00:00:00Z")]
    pub expires_at: Option<String>,
    /// Requests a minute for this key; the service default when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyFilter {
    /// Only this account's keys.
    pub account_id: Option<i64>,
}

/// `POST /api/v1/accounts`: 201 with the account.
#[utoipa::path(
    tag = "accounts",
    summary = "Create an account",
    security(("bearer" = ["admin"])),
    request_body = CreateAccount,
    responses(
        (status = 201, description = "The account.", body = AccountView),
        (status = 409, response = inline(errors::AccountNameTaken)),
        (status = 422, response = inline(errors::InvalidAccount)),
    ),
)]
#[post("/v1/accounts")]
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
#[utoipa::path(
    tag = "accounts",
    summary = "List accounts",
    description = "Every account, oldest first.",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The accounts.", body = crate::openapi::AccountList)),
)]
#[get("/v1/accounts")]
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
#[utoipa::path(
    tag = "accounts",
    summary = "Disable an account",
    description = "Its keys stop working on every instance within a second (403 \
        `account_disabled`); its links keep redirecting.",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "The account's id.")),
    responses(
        (status = 200, description = "The account, with `disabled_at`.", body = AccountView),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[post("/v1/accounts/{id}/disable")]
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
#[utoipa::path(
    tag = "keys",
    summary = "Make an API key",
    description = "The key itself is in this answer only: Kurz keeps its SHA-256 digest.",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "The account the key belongs to.")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key and its metadata.", body = MintedKeyView),
        (status = 404, response = inline(errors::NotFound)),
        (status = 422, response = inline(errors::InvalidKey)),
    ),
)]
#[post("/v1/accounts/{id}/keys")]
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
#[utoipa::path(
    tag = "keys",
    summary = "List API keys",
    description = "Keys, oldest first, revoked ones included; never the keys themselves.",
    security(("bearer" = ["admin"])),
    params(KeyFilter),
    responses((status = 200, description = "The keys.", body = crate::openapi::KeyList)),
)]
#[get("/v1/keys")]
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
#[utoipa::path(
    tag = "keys",
    summary = "Revoke an API key",
    description = "The key stops working on every instance within a second. Revoking it \
        again is 204 too.",
    security(("bearer" = ["admin"])),
    params(("id" = i64, Path, description = "The key's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, response = inline(errors::NotFound)),
    ),
)]
#[delete("/v1/keys/{id}")]
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
